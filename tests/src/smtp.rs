//! A real SMTP server (Debian's aiosmtpd, Maildir delivery) on the seed network's upstream router,
//! and reading what it received.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant, SystemTime},
};

use crate::{Lab, seed::UPSTREAM};

/// The address the server listens on.
pub const LISTEN: &str = "192.0.2.254:2525";

/// The running server; killed on drop.
pub struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on the upstream router, delivering into `maildir`.
pub fn smtp(lab: &Lab, maildir: &Path) -> anyhow::Result<Smtp> {
    let child = lab
        .command(UPSTREAM, "/usr/bin/python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            LISTEN,
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(700));
    Ok(Smtp(child))
}

/// One received message.
pub struct Mail {
    pub subject: String,
    pub date: SystemTime,
    pub body: String,
}

/// The messages received so far, oldest first.
pub fn mails(maildir: &Path) -> Vec<Mail> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let date = httpdate_parse(&header("Date"));
            let body = text
                .split_once("\n\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            Mail {
                subject: header("Subject"),
                date,
                body,
            }
        })
        .collect()
}

/// RFC 2822 dates as lettre writes them (`Tue, 25 Nov 2026 03:50:15 +0000`).
fn httpdate_parse(date: &str) -> SystemTime {
    let gmt = date.replace("+0000", "GMT");
    humantime::parse_rfc3339_weak(&to_rfc3339(&gmt).unwrap_or_default())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn to_rfc3339(date: &str) -> Option<String> {
    let parts: Vec<&str> = date.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let name = *parts.get(2)?;
    let month = months.iter().position(|m| *m == name)? + 1;
    Some(format!(
        "{}-{:02}-{:02}T{}",
        parts.get(3)?,
        month,
        parts.get(1)?.parse::<u32>().ok()?,
        parts.get(4)?
    ))
}

/// Waits until at least `count` messages arrived (at most `timeout`); returns them all.
pub fn wait_mails(maildir: &Path, count: usize, timeout: Duration) -> Vec<Mail> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = mails(maildir);
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
