//! Sandbox providers: local servers that speak each device provider's real OAuth 2 paths and wire formats, so the
//! platform's OAuth and sync code runs unchanged against them (`TENANTRY_<PROVIDER>_URL` points it here).
//!
//! Each provider is its own axum app on its own port. Every sandbox serves `GET /sandbox/state` (counters the
//! platform's tests assert on) and `GET|POST /sandbox/faults` (switches for 500s, slowness, malformed JSON,
//! timeouts, 429s and short-lived tokens). See the crate README for the endpoint table.

mod app;
mod auth;
mod consent;
mod control;
mod data;
mod data_garmin;
mod data_google;
mod data_oura;
mod data_polar;
mod data_strava;
mod data_whoop;
mod data_withings;
mod days;
mod hooks;
mod ids;
pub mod llm;
mod pages;
mod people;
mod provider;
pub mod server;
mod store;
pub mod stripe;
mod token;

use std::net::{IpAddr, SocketAddr};

pub use consent::DEFAULT_USER;
pub use provider::{Provider, UnknownProvider};

/// The axum app of one provider sandbox, with fresh in-memory state.
pub fn router(provider: Provider) -> axum::Router {
    app::router(provider)
}

/// A sandbox server running in the background. Dropping it stops the server.
pub struct Running {
    pub provider: Provider,
    /// `http://HOST:PORT`, the value for [`Provider::env_var`].
    pub url: String,
    server: server::Server,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops accepting connections and waits (a few seconds at most) for requests in flight.
    pub async fn stop(self) {
        self.server.stop().await
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("provider", &self.provider).field("url", &self.url).finish_non_exhaustive()
    }
}

/// Serves one provider sandbox on `addr` (port 0 picks a free port).
pub async fn start(provider: Provider, addr: SocketAddr) -> anyhow::Result<Running> {
    let server = server::Server::start(|_| router(provider), addr, provider.id()).await?;
    Ok(Running { provider, url: server.url.clone(), server })
}

/// Serves every provider sandbox on `host`, each on its own free port.
pub async fn start_all(host: IpAddr) -> anyhow::Result<Vec<Running>> {
    let mut all = Vec::with_capacity(Provider::ALL.len());
    for provider in Provider::ALL {
        all.push(start(provider, SocketAddr::new(host, 0)).await?);
    }
    Ok(all)
}
