//! etcd's users and roles for a fleet, so that etcd itself keeps each
//! agent to its own host's keys:
//!
//! - `root`: what etcd needs before authentication goes on; used only to
//!   set the others up;
//! - [`CONTROLLER_ROLE`]: read and write under the whole prefix;
//! - `dse-agent-<host>` ([`AGENT_ROLE_PREFIX`]): read of the rule sets,
//!   read and write of `<prefix>/hosts/<host>/`, nothing else.

use super::etcd::{Etcd, FleetError};
use super::keys;
use etcd_client::Permission;

/// The controllers' role.
pub const CONTROLLER_ROLE: &str = "dse-controller";

/// The prefix of each agent's role and user: `dse-agent-<host>`.
pub const AGENT_ROLE_PREFIX: &str = "dse-agent-";

/// An etcd user and its password.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// Tolerates "already exists": setting up twice changes nothing.
fn created<T>(etcd: &Etcd, what: &str, r: Result<T, etcd_client::Error>) -> Result<(), FleetError> {
    match r {
        Ok(_) => Ok(()),
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("already exists") => Ok(()),
        Err(e) => Err(etcd.error(what, e)),
    }
}

/// Creates `root` (with `root_password`) and the controllers' role and
/// user `controller` (with `controller_password`), then turns
/// authentication on. `etcd` is a connection without a user, made before
/// authentication is on.
///
/// # Errors
/// The first request etcd refuses.
pub async fn bootstrap_auth(
    etcd: &Etcd,
    root_password: &str,
    controller: &Credentials,
) -> Result<(), FleetError> {
    let mut c = etcd.client();
    created(
        etcd,
        "adding user root",
        c.user_add("root", root_password, None).await,
    )?;
    created(
        etcd,
        "granting root",
        c.user_grant_role("root", "root").await,
    )?;
    created(
        etcd,
        "adding the controller role",
        c.role_add(CONTROLLER_ROLE).await,
    )?;
    let everything = Permission::read_write(format!("{}/", etcd.prefix())).with_prefix();
    created(
        etcd,
        "granting the controller role",
        c.role_grant_permission(CONTROLLER_ROLE, everything).await,
    )?;
    created(
        etcd,
        "adding the controller user",
        c.user_add(controller.user.as_str(), controller.password.as_str(), None)
            .await,
    )?;
    created(
        etcd,
        "granting the controller user",
        c.user_grant_role(controller.user.as_str(), CONTROLLER_ROLE)
            .await,
    )?;
    created(etcd, "turning authentication on", c.auth_enable().await)
}

/// Creates host `host`'s agent user (`dse-agent-<host>`, with `password`)
/// and its role: read of the rule sets and the depot, read and write of
/// its own host's keys. `etcd` is a connection as root or another user that may manage
/// users.
///
/// # Errors
/// The first request etcd refuses.
pub async fn grant_agent(
    etcd: &Etcd,
    host: &str,
    password: &str,
) -> Result<Credentials, FleetError> {
    let name = format!("{AGENT_ROLE_PREFIX}{host}");
    let mut c = etcd.client();
    created(
        etcd,
        "adding an agent role",
        c.role_add(name.as_str()).await,
    )?;
    for permission in [
        Permission::read(keys::rule_sets(etcd.prefix())).with_prefix(),
        Permission::read(super::depot::depot_dir(etcd.prefix())).with_prefix(),
        Permission::read_write(keys::host(etcd.prefix(), host)).with_prefix(),
    ] {
        created(
            etcd,
            "granting an agent role",
            c.role_grant_permission(name.as_str(), permission).await,
        )?;
    }
    created(
        etcd,
        "adding an agent user",
        c.user_add(name.as_str(), password, None).await,
    )?;
    created(
        etcd,
        "granting an agent user",
        c.user_grant_role(name.as_str(), name.as_str()).await,
    )?;
    Ok(Credentials {
        user: name,
        password: password.to_string(),
    })
}
