//! `sandbox [--host IP] [PROVIDER=PORT ...]`: serves all seven provider sandboxes and prints one
//! `TENANTRY_<PROVIDER>_URL=...` line per provider on stdout (logs go to stderr). Providers without a port get a
//! free one. Runs until Ctrl-C or SIGTERM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context as _, bail};
use sandbox::Provider;

const USAGE: &str = "usage: sandbox [--host IP] [PROVIDER=PORT ...]
  PROVIDER is one of oura, google_health, withings, whoop, polar, strava, garmin; PORT 0 or absent picks a free port.
  Prints TENANTRY_<PROVIDER>_URL=http://HOST:PORT lines on stdout; runs until Ctrl-C.";

fn parse_args(args: &[String]) -> anyhow::Result<(IpAddr, Vec<(Provider, u16)>)> {
    let mut host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut ports: Vec<(Provider, u16)> = Provider::ALL.iter().map(|p| (*p, 0)).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        } else if arg == "--host" {
            let value = it.next().context("--host needs an IP address")?;
            host = value.parse().with_context(|| format!("--host {value:?} is not an IP address"))?;
        } else if let Some((name, port)) = arg.split_once('=') {
            let provider: Provider = name.parse()?;
            let port: u16 = port.parse().with_context(|| format!("{port:?} is not a port number"))?;
            for entry in ports.iter_mut().filter(|(p, _)| *p == provider) {
                entry.1 = port;
            }
        } else {
            bail!("unexpected argument {arg:?}\n{USAGE}");
        }
    }
    Ok((host, ports))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (host, ports) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("sandbox: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match serve(host, ports).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(host: IpAddr, ports: Vec<(Provider, u16)>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut running = Vec::new();
    for (provider, port) in ports {
        running.push(sandbox::start(provider, SocketAddr::new(host, port)).await?);
    }
    for r in &running {
        println!("{}={}", r.provider.env_var(), r.url);
    }
    shutdown_signal().await;
    tracing::info!("stopping the sandboxes");
    for r in running {
        r.stop().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
