//! `fwcluster-docs DIR`: writes the man pages and shell completions of the fwcluster commands
//! (`cargo xtask docs` puts them in target/docs).

fn main() -> std::process::ExitCode {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/docs".into());
    cluster_ctl::cli::run("fwcluster-docs", || {
        for path in cluster_ctl::cli::docs::generate(std::path::Path::new(&dir))? {
            println!("{}", path.display());
        }
        Ok(())
    })
}
