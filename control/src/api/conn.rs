//! The API's listeners: every connection under a header-read timeout (which
//! also closes a kept-alive connection that sends nothing more), and at
//! most [`ConnLimits::max_connections`] open per listener. A listener at
//! its cap accepts and closes at once, so that a flood of idle TCP
//! connections neither fills the daemon's file table nor keeps the Unix
//! socket from answering.

use super::Peer;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Limits on the API's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// How long a client has to send a request's headers, from the
    /// connection's start or the end of the previous answer.
    pub header_timeout: Duration,
    /// Connections open at once on one listener.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// A listener the API serves: it yields streams and who is at the other
/// end.
pub trait Listen: Send + 'static {
    /// The stream of one connection.
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Peer)>> + Send;
}

impl Listen for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Peer)> {
        let (s, _) = tokio::net::UnixListener::accept(self).await?;
        let peer = Peer(match s.peer_cred() {
            Ok(c) => match c.pid() {
                Some(pid) => format!("uid {} (pid {pid})", c.uid()),
                None => format!("uid {}", c.uid()),
            },
            Err(_) => "unix socket".into(),
        });
        Ok((s, peer))
    }
}

impl Listen for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Peer)> {
        let (s, addr) = tokio::net::TcpListener::accept(self).await?;
        Ok((s, Peer(format!("token holder at {addr}"))))
    }
}

/// Serves `app` on `listener` under `limits` until `stop` turns true, then
/// lets each open connection finish its request and returns.
pub async fn serve<L: Listen>(
    listener: L,
    app: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    let (mut refused, mut last_warned) = (0u64, std::time::Instant::now() - Duration::from_secs(1));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
            // Reap finished connections as they go.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (io, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was
                // accepted: wait a little rather than spin.
                tracing::warn!("accepting an API connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            drop(io);
            refused += 1;
            // Once a second at most: a flood must not become a flood of
            // log lines, which would slow the accepting down.
            if last_warned.elapsed() >= Duration::from_secs(1) {
                tracing::warn!(
                    max = limits.max_connections,
                    refused,
                    "API connections closed as they came: too many open (the last from {})",
                    peer.0
                );
                (refused, last_warned) = (0, std::time::Instant::now());
            }
            continue;
        };
        let app = app.clone();
        let mut stop = stop.clone();
        let http = http.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                app.clone().oneshot(req)
            });
            let conn = http.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
