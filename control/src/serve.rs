//! `dse serve`: the daemon behind its listeners.
//!
//! The API listens on a Unix socket (mode 0600: only its owner may drive
//! the datapaths) and, if asked, on TCP, where every request must carry
//! the bearer token read from a file. A second daemon on the same socket
//! or the same database is refused by name.

use crate::api::{self, ApiState, Metrics, TokenDigest};
use crate::daemon::{ControlError, Daemon, DaemonConfig};
use crate::fleet::controller::{Controller, ControllerConfig};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where and how `dse serve` listens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The daemon's own settings.
    pub daemon: DaemonConfig,
    /// The Unix socket to listen on.
    pub socket: PathBuf,
    /// Also listen on TCP here (needs `token_file`).
    pub tcp: Option<SocketAddr>,
    /// The file holding the bearer token TCP clients must send.
    pub token_file: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    /// Header timeout and connection cap of each listener.
    pub limits: crate::api::conn::ConnLimits,
    /// Run as a fleet controller on etcd instead of a single-machine
    /// daemon.
    pub fleet: Option<FleetServe>,
}

/// How a fleet controller runs (`dse serve --etcd`).
#[derive(Debug, Clone)]
pub struct FleetServe {
    /// How to reach etcd.
    pub etcd: crate::fleet::EtcdConfig,
    /// This controller's id, unique in the fleet.
    pub id: String,
    /// The lease TTL of its leadership.
    pub ttl: std::time::Duration,
}

/// Why `dse serve` could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another daemon answers on the socket.
    #[error("another dse serve is listening on {0}: stop it, or give this one another --socket")]
    SocketInUse(PathBuf),
    /// TCP was asked for without a token.
    #[error("--listen needs --token-file: TCP clients must present a bearer token")]
    NoToken,
    /// The token file is missing, unreadable or empty.
    #[error("token file {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listener could not be opened.
    #[error("listening on {what}: {source}")]
    Listen {
        /// The address or path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon could not start.
    #[error(transparent)]
    Daemon(#[from] ControlError),
    /// The fleet controller could not start.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

fn listen_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.to_string();
    move |source| ServeError::Listen { what, source }
}

/// Refuses `path` if a daemon answers on it; removes a stale socket file
/// that nothing answers on.
fn claim_socket(path: &PathBuf) -> Result<(), ServeError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::SocketInUse(path.clone()));
        }
        std::fs::remove_file(path).map_err(listen_err(path.display()))?;
    }
    Ok(())
}

/// Binds `path` with mode 0600 (its directory created if missing).
fn bind_unix(path: &PathBuf) -> Result<tokio::net::UnixListener, ServeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(listen_err(dir.display()))?;
    }
    // Created 0600 from the start: no window in which others may connect.
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(listen_err(path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(listen_err(path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(listen_err(path.display()))?;
    tokio::net::UnixListener::from_std(listener).map_err(listen_err(path.display()))
}

fn read_token(path: &PathBuf) -> Result<TokenDigest, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Token {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if text.trim().is_empty() {
        return Err(ServeError::Token {
            path: path.clone(),
            reason: "it is empty".into(),
        });
    }
    Ok(TokenDigest::of(&text))
}

/// Raises the soft limit on open files to the hard one: each listener may
/// hold its full connection cap beside the datapaths' and the store's
/// descriptors.
fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "raising the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Runs the daemon until `shutdown` completes. XDP datapaths stay pinned
/// and forwarding after it returns; the next `dse serve` adopts them.
///
/// # Errors
/// [`ServeError`] naming what could not be opened.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let token = match (&config.tcp, &config.token_file) {
        (Some(_), None) => return Err(ServeError::NoToken),
        (_, Some(path)) => Some(read_token(path)?),
        (None, None) => None,
    };
    // The socket is claimed first, so that a second daemon on it brings up
    // nothing; it is bound only once the daemon holds the store, so that a
    // client that connects is answered by a daemon that can serve it.
    raise_file_limit();
    claim_socket(&config.socket)?;
    let mut controller = None;
    let app = match &config.fleet {
        None => {
            let daemon_config = config.daemon.clone();
            let daemon = tokio::task::spawn_blocking(move || Daemon::open(daemon_config))
                .await
                .expect("opening the daemon does not panic");
            let daemon = Arc::new(daemon?);
            daemon.resume_remediations();
            api::router(Arc::new(ApiState {
                daemon,
                max_body: config.max_body,
                metrics: Metrics::default(),
                large_bodies: tokio::sync::Semaphore::new(1),
            }))
        }
        Some(fleet) => {
            let api = match config.tcp {
                Some(addr) => format!("http://{addr}"),
                None => format!("unix:{}", config.socket.display()),
            };
            let started = Arc::new(
                Controller::start(ControllerConfig {
                    etcd: fleet.etcd.clone(),
                    id: fleet.id.clone(),
                    api,
                    ttl: fleet.ttl,
                    depot: config.daemon.depot.clone(),
                })
                .await?,
            );
            controller = Some(Arc::clone(&started));
            api::fleet::fleet_router(Arc::new(api::fleet::FleetApi {
                controller: started,
                max_body: config.max_body,
                large_bodies: tokio::sync::Semaphore::new(1),
                metrics: api::Metrics::default(),
            }))
        }
    };
    let unix = bind_unix(&config.socket)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut servers = tokio::task::JoinSet::new();
    if let (Some(addr), Some(token)) = (config.tcp, token) {
        // A deep accept queue: a burst of connections waits to be
        // accepted (or closed, over the cap) rather than retrying its SYN.
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(listen_err(addr))?;
        socket.set_reuseaddr(true).map_err(listen_err(addr))?;
        socket.bind(addr).map_err(listen_err(addr))?;
        let tcp = socket.listen(4096).map_err(listen_err(addr))?;
        let app = app.clone().layer(axum::middleware::from_fn_with_state(
            token,
            api::require_token,
        ));
        servers.spawn(api::conn::serve(tcp, app, config.limits, stop_rx.clone()));
        tracing::info!("API on tcp {addr} (bearer token required)");
    }
    tracing::info!("API on unix socket {}", config.socket.display());
    servers.spawn(api::conn::serve(unix, app, config.limits, stop_rx));
    while servers.join_next().await.is_some() {}
    if let Some(c) = controller {
        c.stop().await;
    }
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}
