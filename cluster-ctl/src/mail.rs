//! Alert mail (R-MAIL-1): on group down and on takeover, with the seed's subjects and bodies.
//!
//! Every message is first written to an on-disk outbox (one file per message, written to a
//! temporary name and renamed, so a crash never leaves half a message), then a sender thread
//! delivers the files in order and deletes each one only after the SMTP server accepted it,
//! retrying with backoff. Messages survive daemon restarts, and their Date header and body carry
//! the time of the event, not of the delivery (the seed warns operators to check it).

use std::{
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use lettre::{
    Message, SmtpTransport, Transport as _,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use serde::{Deserialize, Serialize};

use crate::{catalog, config::MailConfig};

/// One queued alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Event time, seconds and nanoseconds since the Unix epoch.
    pub time: (u64, u32),
    pub subject: String,
    pub body: String,
}

impl Alert {
    fn system_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(self.time.0, self.time.1)
    }

    fn now(subject: String, body: String) -> Self {
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            time: (since.as_secs(), since.subsec_nanos()),
            subject,
            body,
        }
    }
}

fn stamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// "WARNING: [group0] is downed" (seed wording), for a group that went down on `host`.
pub fn group_down(group: &str, host: &str, address: &str, cause: &str) -> Alert {
    let mut alert = Alert::now(format!("WARNING: [{group}] is downed"), String::new());
    alert.body = format!(
        "!!WARNING!!\n\
         [{group}] is not active on Firewall({host}[{address}]).\n\
         Urgently check it.\n\
         If you received a previous message \"NOTICE: [{group}] changes\n\
         to the active firewall\" from {host}[{address}],\n\
         both groups are downed.\n\
         Urgently check both groups!!\n\
         \n\
         Cause: {cause}\n\
         Time of the event: {}\n",
        stamp(alert.system_time())
    );
    alert
}

/// "NOTICE: [group0] changes to the active firewall" (seed wording), for a takeover by `host`.
pub fn takeover(group: &str, host: &str, address: &str, cause: &str) -> Alert {
    let mut alert = Alert::now(
        format!("NOTICE: [{group}] changes to the active firewall"),
        String::new(),
    );
    alert.body = format!(
        "!!NOTICE!!\n\
         [{group}] changes to the active\n\
         firewall({host}[{address}]).\n\
         Urgently check another failed firewall.\n\
         \n\
         Cause: {cause}\n\
         Time of the event: {}\n",
        stamp(alert.system_time())
    );
    alert
}

/// "WARNING: session sync from fws2 to fws1 is lost", mailed by `host` (fws1): connections
/// opened through `from` are not copied to `to` any more (a takeover by `to` would reset
/// them), while the cluster itself is fine.
pub fn sync_lost(host: &str, address: &str, from: &str, to: &str, why: &str) -> Alert {
    let mut alert = Alert::now(
        format!("WARNING: session sync from {from} to {to} is lost"),
        String::new(),
    );
    alert.body = format!(
        "!!WARNING!!\n\
         Firewall({host}[{address}]) reports: connections opened through {from}\n\
         from this time on are not copied to {to}; if {to} took over now,\n\
         they would be reset. No failover was made.\n\
         Check the sync interconnect and conntrackd on both firewalls.\n\
         \n\
         Cause: {why}\n\
         Time of the event: {}\n",
        stamp(alert.system_time())
    );
    alert
}

/// "NOTICE: session sync between fws1 and fws2 works again", mailed by `host`.
pub fn sync_restored(host: &str, address: &str, peer: &str) -> Alert {
    let mut alert = Alert::now(
        format!("NOTICE: session sync between {host} and {peer} works again"),
        String::new(),
    );
    alert.body = format!(
        "!!NOTICE!!\n\
         Firewall({host}[{address}]) reports: its sync link to {peer} works\n\
         again, and what was queued meanwhile has been resent.\n\
         \n\
         Time of the event: {}\n",
        stamp(alert.system_time())
    );
    alert
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The outbox of one node: `<outbox>/<node>/`.
#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn open(config: &MailConfig, node: &str) -> Result<Self> {
        crate::private::private_dir(&config.outbox, "mail outbox")?;
        let dir = config.outbox.join(node);
        crate::private::private_dir(&dir, "mail outbox")?;
        Ok(Self { dir })
    }

    /// Writes an alert to the outbox (durable before this returns).
    pub fn queue(&self, alert: &Alert) -> Result<PathBuf> {
        let name = format!(
            "{:020}-{:09}-{:06}.json",
            alert.time.0,
            alert.time.1,
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)
                .with_context(|| format!("creating {}", temporary.display()))?;
            serde_json::to_writer(&mut file, alert)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &path)?;
        tracing::info!(id = catalog::MAIL_QUEUED.id, subject = alert.subject, file = %path.display(), "alert queued");
        Ok(path)
    }

    /// Queued messages, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        Ok(files)
    }
}

fn transport(config: &MailConfig) -> Result<SmtpTransport> {
    let url = url_parts(&config.smtp)?;
    let mut builder = match url.0.as_str() {
        // Implicit TLS.
        "smtps" => SmtpTransport::relay(&url.1)?.port(url.2.unwrap_or(465)),
        // STARTTLS when the server offers it, plain otherwise.
        "smtp" => SmtpTransport::builder_dangerous(&url.1)
            .port(url.2.unwrap_or(25))
            .tls(lettre::transport::smtp::client::Tls::Opportunistic(
                lettre::transport::smtp::client::TlsParameters::new(url.1.clone())?,
            )),
        other => anyhow::bail!("mail.smtp: unknown scheme {other:?} (smtp:// or smtps://)"),
    };
    if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
        crate::private::check_secret_file(file, "SMTP password file")?;
        let password =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        builder = builder.credentials(Credentials::new(user.clone(), password.trim().to_owned()));
    }
    Ok(builder.timeout(Some(Duration::from_secs(10))).build())
}

/// `scheme://host[:port]`.
fn url_parts(url: &str) -> Result<(String, String, Option<u16>)> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("mail.smtp: {url:?} is not scheme://host[:port]"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse()
                    .with_context(|| format!("mail.smtp port in {url:?}"))?,
            ),
        ),
        None => (rest, None),
    };
    Ok((scheme.to_owned(), host.to_owned(), port))
}

fn message(config: &MailConfig, alert: &Alert) -> Result<Message> {
    let mut builder = Message::builder()
        .from(config.from.parse::<Mailbox>().context("mail.from")?)
        .subject(alert.subject.clone())
        .date(alert.system_time())
        .header(ContentType::TEXT_PLAIN);
    for to in &config.to {
        builder = builder.to(to
            .parse::<Mailbox>()
            .with_context(|| format!("mail.to {to:?}"))?);
    }
    Ok(builder.body(alert.body.clone())?)
}

/// What the daemon hands the mail thread.
enum MailInput {
    Alert(Alert),
    /// New settings from a configuration reload.
    Settings(MailConfig),
}

/// The daemon's end of the mail thread. Dropping it ends the thread; what is queued stays in
/// the outbox for the next start.
pub struct MailSender {
    inputs: std::sync::mpsc::Sender<MailInput>,
}

impl MailSender {
    /// Hands an alert to the mail thread; fails only when the thread is gone.
    pub fn send(&self, alert: Alert) -> Result<()> {
        self.inputs
            .send(MailInput::Alert(alert))
            .map_err(|_| anyhow::anyhow!("the mail thread is gone"))
    }

    /// Applies new settings (server, sender, recipients, outbox) from the next delivery on.
    pub fn reconfigure(&self, config: MailConfig) -> Result<()> {
        self.inputs
            .send(MailInput::Settings(config))
            .map_err(|_| anyhow::anyhow!("the mail thread is gone"))
    }
}

/// Starts the mail thread of `node`: it writes each alert it is given to the outbox (durably,
/// off the daemon's loop: an fsync can take long on a busy disk) and delivers the outbox, oldest
/// first, retrying with backoff.
pub fn start_sender(config: MailConfig, node: &str) -> Result<MailSender> {
    let mut outbox = Outbox::open(&config, node)?;
    let node = node.to_owned();
    let mut config = config;
    let (inputs, incoming) = std::sync::mpsc::channel::<MailInput>();
    std::thread::Builder::new()
        .name("mail".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(500);
            let mut retry_at = std::time::Instant::now();
            loop {
                match incoming.recv_timeout(Duration::from_millis(200)) {
                    Ok(MailInput::Alert(alert)) => {
                        if let Err(e) = outbox.queue(&alert) {
                            tracing::error!(
                                id = catalog::MAIL_RETRY.id,
                                error = format!("{e:#}"),
                                "cannot queue an alert"
                            );
                        }
                        // Deliver what just arrived at once, unless the server is known down.
                        if std::time::Instant::now() < retry_at {
                            continue;
                        }
                    }
                    Ok(MailInput::Settings(new)) => {
                        if new.outbox != config.outbox {
                            match Outbox::open(&new, &node) {
                                Ok(opened) => outbox = opened,
                                Err(e) => {
                                    tracing::error!(
                                        id = catalog::RELOAD_REFUSED.id,
                                        error = format!("{e:#}"),
                                        "new mail outbox unusable; mail keeps its old settings"
                                    );
                                    continue;
                                }
                            }
                        }
                        config = new;
                        // The new server is tried at once.
                        backoff = Duration::from_millis(500);
                        retry_at = std::time::Instant::now();
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if std::time::Instant::now() < retry_at {
                            continue;
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
                match deliver_all(&config, &outbox) {
                    Ok(()) => backoff = Duration::from_millis(500),
                    Err(e) => {
                        tracing::warn!(
                            id = catalog::MAIL_RETRY.id,
                            error = format!("{e:#}"),
                            retry_in = %humantime::format_duration(backoff),
                            "alert mail not delivered; it stays queued"
                        );
                        retry_at = std::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        })?;
    Ok(MailSender { inputs })
}

fn deliver_all(config: &MailConfig, outbox: &Outbox) -> Result<()> {
    let pending = outbox.pending()?;
    if pending.is_empty() {
        return Ok(());
    }
    let transport = transport(config)?;
    for path in pending {
        deliver(config, &transport, &path)?;
    }
    Ok(())
}

fn deliver(config: &MailConfig, transport: &SmtpTransport, path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    let alert: Alert = match serde_json::from_str(&text) {
        Ok(a) => a,
        Err(e) => {
            // A damaged file would block the queue for ever: set it aside, loudly.
            let aside = path.with_extension("damaged");
            std::fs::rename(path, &aside)?;
            tracing::error!(id = catalog::MAIL_RETRY.id, file = %aside.display(), error = %e, "damaged outbox file set aside");
            return Ok(());
        }
    };
    transport
        .send(&message(config, &alert)?)
        .with_context(|| format!("sending {:?} via {}", alert.subject, config.smtp))?;
    // Deleted only once accepted: a crash in between sends it again rather than losing it.
    std::fs::remove_file(path)?;
    tracing::info!(id = catalog::MAIL_SENT.id, subject = alert.subject, to = ?config.to, "alert mail sent");
    Ok(())
}
