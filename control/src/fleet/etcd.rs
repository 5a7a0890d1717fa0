//! A connection to etcd, with errors that say which endpoints and which
//! user, and what to do.

use super::auth::Credentials;
use etcd_client::{Client, ConnectOptions};
use std::time::Duration;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs, such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix everything lives under ([`super::keys::DEFAULT_PREFIX`]).
    pub prefix: String,
    /// The etcd user, when etcd has authentication on.
    pub credentials: Option<Credentials>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl EtcdConfig {
    /// `endpoints` (comma-separated, as `--etcd` takes them) under the
    /// default prefix, without a user, with 5 s requests.
    pub fn new(endpoints: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect(),
            prefix: super::keys::DEFAULT_PREFIX.to_string(),
            credentials: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// The same, as `user`.
    pub fn with_credentials(mut self, credentials: Credentials) -> EtcdConfig {
        self.credentials = Some(credentials);
        self
    }
}

/// Why a fleet operation on etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No endpoint answered.
    #[error(
        "etcd at {endpoints} does not answer: {reason}; check that etcd runs there (and the --etcd list)"
    )]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the client said.
        reason: String,
    },
    /// etcd refused the user or password.
    #[error(
        "etcd at {endpoints} refused user {user}: {reason}; check the user and its password file"
    )]
    Credentials {
        /// The endpoints.
        endpoints: String,
        /// The user.
        user: String,
        /// What etcd said.
        reason: String,
    },
    /// etcd has authentication on and no user was given.
    #[error("etcd at {endpoints} needs a user: {reason}; give one (--etcd-user and its password)")]
    NoCredentials {
        /// The endpoints.
        endpoints: String,
        /// What etcd said.
        reason: String,
    },
    /// The user may not touch that key: etcd's roles refused it.
    #[error("etcd refused {what} to user {user}: permission denied by its roles")]
    PermissionDenied {
        /// What was asked, such as `writing /dse/hosts/h2/status`.
        what: String,
        /// The user.
        user: String,
    },
    /// Another live agent holds the host.
    #[error(
        "host {host} is registered by another live agent: one agent a host; stop that one, or give this one another --host"
    )]
    HostClaimed {
        /// The host.
        host: String,
    },
    /// A host's agent did not answer a request in time.
    #[error(
        "host {host}'s agent did not answer within {within:?}: is it available (dse host list)?"
    )]
    AgentSilent {
        /// The host.
        host: String,
        /// How long it was given.
        within: std::time::Duration,
    },
    /// The change was based on another generation than the current one.
    #[error(
        "generation conflict on rule set {rule_set}: the change expected generation {expected}, but it is at {current}; read it again and retry"
    )]
    Conflict {
        /// The rule set.
        rule_set: String,
        /// What the change expected.
        expected: u64,
        /// What is current.
        current: u64,
    },
    /// A write that only the leading controller may make, asked of one
    /// that does not lead (or no longer does).
    #[error("this controller does not lead, so it makes no changes: {leader}")]
    NotLeader {
        /// Which controller leads and where its API answers, or that none
        /// leads yet.
        leader: String,
    },
    /// What etcd holds is not what dse wrote (a chunk missing, a digest
    /// that does not match).
    #[error("etcd holds a damaged {what}: {reason}")]
    Damaged {
        /// What was read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other error of the client, with what was being done.
    #[error("etcd: {what}: {source}")]
    Etcd {
        /// What was being done.
        what: String,
        /// The client's error.
        source: etcd_client::Error,
    },
}

/// A connection to etcd; cheap to clone (the clones share the channel).
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    config: EtcdConfig,
}

impl Etcd {
    /// Connects, authenticates when `config` has credentials, and checks
    /// that a member answers.
    ///
    /// # Errors
    /// [`FleetError::Unreachable`] naming the endpoints,
    /// [`FleetError::Credentials`] naming the user,
    /// [`FleetError::NoCredentials`] when etcd wants a user.
    pub async fn connect(config: EtcdConfig) -> Result<Etcd, FleetError> {
        let endpoints = config.endpoints.join(",");
        if config.endpoints.is_empty() {
            return Err(FleetError::Unreachable {
                endpoints: "(none)".into(),
                reason: "no endpoint given".into(),
            });
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(2), config.timeout);
        if let Some(c) = &config.credentials {
            options = options.with_user(&c.user, &c.password);
        }
        let client = tokio::time::timeout(
            config.timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| FleetError::Unreachable {
            endpoints: endpoints.clone(),
            reason: format!("no answer within {:?}", config.timeout),
        })?
        .map_err(|e| classify(&config, "connecting", e))?;
        let etcd = Etcd { client, config };
        // A request that every user may make: does anyone answer, and does
        // etcd take this user?
        // Retried like any request: a member that just died (an election
        // under way) is no reason to give up on the others.
        let probe = format!("{}/", etcd.config.prefix);
        etcd.retry("reading", |mut c| {
            let probe = probe.clone();
            async move {
                c.get(
                    probe.as_str(),
                    Some(etcd_client::GetOptions::new().with_count_only()),
                )
                .await
            }
        })
        .await
        .map(|_| ())
        .or_else(|e| match e {
            // A user without read on the whole prefix is still a user.
            FleetError::PermissionDenied { .. } => Ok(()),
            other => Err(other),
        })?;
        Ok(etcd)
    }

    /// The client, for requests this module does not wrap.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// How long one request may take.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// Runs the request `attempt` makes, again while it fails for want of a
    /// member (one died and the client has not yet moved to another, or a
    /// request timed out on it), for up to the request timeout and at least
    /// twice. Only for requests that may run twice.
    ///
    /// # Errors
    /// The last error, classified.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, FleetError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let e = self.error(what, e);
                    // A request that waited out the timeout on a dead
                    // member still gets another try, on another.
                    if !matches!(e, FleetError::Unreachable { .. })
                        || (tries > 1 && tokio::time::Instant::now() > deadline)
                    {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The keys under `prefix`, without their values, in key order
    /// (retried as [`Etcd::retry`] does).
    ///
    /// # Errors
    /// etcd's error, classified.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, FleetError> {
        let r = self
            .retry(&format!("reading {prefix}"), |mut c| async move {
                c.get(
                    prefix,
                    Some(
                        etcd_client::GetOptions::new()
                            .with_prefix()
                            .with_keys_only(),
                    ),
                )
                .await
            })
            .await?;
        Ok(r.kvs()
            .iter()
            .filter_map(|kv| String::from_utf8(kv.key().to_vec()).ok())
            .collect())
    }

    /// Reads `key` (retried as [`Etcd::retry`] does).
    ///
    /// # Errors
    /// etcd's error, classified.
    pub async fn get(&self, key: &str) -> Result<etcd_client::GetResponse, FleetError> {
        self.retry(&format!("reading {key}"), |mut c| async move {
            c.get(key, None).await
        })
        .await
    }

    /// Writes `value` at `key` (retried as [`Etcd::retry`] does: a put may
    /// run twice).
    ///
    /// # Errors
    /// etcd's error, classified.
    pub async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> Result<etcd_client::PutResponse, FleetError> {
        self.retry(&format!("writing {key}"), |mut c| {
            let value = value.clone();
            async move { c.put(key, value, None).await }
        })
        .await
    }

    /// The error for `e`, which came of `what`.
    pub fn error(&self, what: impl Into<String>, e: etcd_client::Error) -> FleetError {
        classify(&self.config, what, e)
    }
}

/// Sorts a client error into what a user can act on.
fn classify(config: &EtcdConfig, what: impl Into<String>, e: etcd_client::Error) -> FleetError {
    let what = what.into();
    let endpoints = config.endpoints.join(",");
    let user = config
        .credentials
        .as_ref()
        .map_or_else(|| "(none)".to_string(), |c| c.user.clone());
    match &e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            FleetError::Unreachable {
                endpoints,
                reason: e.to_string(),
            }
        }
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("authentication failed") || message.contains("invalid auth token") {
                FleetError::Credentials {
                    endpoints,
                    user,
                    reason: message.to_string(),
                }
            } else if message.contains("user name is empty") {
                FleetError::NoCredentials {
                    endpoints,
                    reason: message.to_string(),
                }
            } else if message.contains("permission denied") {
                FleetError::PermissionDenied { what, user }
            } else if i32::from(status.code()) == GRPC_UNAVAILABLE
                // No request of ours is cancelled on purpose: a cancelled
                // one lost its connection (a member died under it).
                || i32::from(status.code()) == GRPC_CANCELLED
                || message.contains("transport error")
                || message.contains("h2 protocol error")
                || message.contains("tcp connect error")
                || message.contains("leader changed")
                || message.contains("no leader")
                || message.contains("Timeout expired")
            {
                FleetError::Unreachable {
                    endpoints,
                    reason: message.to_string(),
                }
            } else {
                FleetError::Etcd { what, source: e }
            }
        }
        _ => FleetError::Etcd { what, source: e },
    }
}

/// gRPC's status code `Unavailable` (tonic, which names it, is the
/// client's dependency, not ours).
const GRPC_UNAVAILABLE: i32 = 14;

/// gRPC's status code `Cancelled`: what the client answers when the
/// connection a request was on closes.
const GRPC_CANCELLED: i32 = 1;
