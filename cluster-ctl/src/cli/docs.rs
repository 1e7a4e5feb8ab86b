//! Man pages and shell completions, generated from the clap definitions of the commands.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn commands() -> Vec<(clap::Command, &'static str)> {
    vec![
        (super::fwclusterd::Args::command(), "8"),
        (super::clpstat::Args::command(), "8"),
        (super::clpgrp::Args::command(), "8"),
        (super::clpcfg::Args::command(), "8"),
    ]
}

/// Writes `man/<name>.<section>` and `completions/<shell>/<name>` under `dir`.
pub fn generate(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    for (command, section) in commands() {
        let name = command.get_name().to_owned();
        let path = man.join(format!("{name}.{section}"));
        let mut out = Vec::new();
        clap_mangen::Man::new(command.clone())
            .section(section)
            .render(&mut out)
            .context("rendering a man page")?;
        std::fs::write(&path, out)?;
        written.push(path);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let shell_dir = dir.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&shell_dir)?;
            let path = clap_complete::generate_to(shell, &mut command.clone(), &name, &shell_dir)?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #[test]
    fn man_pages_and_completions_describe_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let written = super::generate(dir.path()).unwrap();
        assert_eq!(written.len(), 4 * 4);
        // Each page and completion is named after its binary.
        for binary in ["fwclusterd", "clpstat", "clpgrp", "clpcfg"] {
            assert!(
                dir.path().join(format!("man/{binary}.8")).exists(),
                "{binary}"
            );
        }
        let clpgrp = std::fs::read_to_string(dir.path().join("man/clpgrp.8")).unwrap();
        assert!(
            clpgrp.contains("clpgrp") && clpgrp.contains("\\-m"),
            "{clpgrp}"
        );
        let bash =
            std::fs::read_to_string(dir.path().join("completions/bash/clpstat.bash")).unwrap();
        assert!(bash.contains("--json"), "{bash}");
    }
}
