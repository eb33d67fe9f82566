//! The `tenantry` binary: parses the command line, runs it, prints the result or the error and exits with its code.

use std::io::Write;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = tenantry_cli::Cli::parse();
    match tenantry_cli::run(&cli).await {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.stdout.as_bytes());
            let _ = std::io::stderr().write_all(out.stderr.as_bytes());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
