//! One sandbox served in the background on its own port, stopped when dropped.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    /// `http://HOST:PORT`.
    pub url: String,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves the app `app(url)` makes on `addr` (port 0 picks a free port; the app learns its own URL, for
    /// pages that link to themselves); `name` names it in logs and errors.
    pub async fn start(app: impl FnOnce(&str) -> axum::Router, addr: SocketAddr, name: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {name} sandbox to {addr}"))?;
        let addr = listener.local_addr().with_context(|| format!("reading the {name} sandbox's bound address"))?;
        let app = app(&format!("http://{addr}"));
        let (tx, rx) = oneshot::channel::<()>();
        let owned = name.to_owned();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = served.await {
                tracing::error!(sandbox = %owned, error = %e, "sandbox server stopped");
            }
        });
        tracing::info!(sandbox = %name, %addr, "sandbox listening");
        Ok(Self { url: format!("http://{addr}"), addr, shutdown: Some(tx), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits (a few seconds at most) for requests in flight.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
