//! The fleet's shared state in etcd: the key layout, a client that names
//! its endpoints and user in every error, rule sets written in chunks and
//! made current by one transaction, watches that resume after a
//! compaction, and the users and roles through which etcd itself keeps an
//! agent to its own host's keys.
//!
//! We write no distributed store: etcd (Debian's `etcd-server`) is the
//! store, as it is for Kubernetes, Cilium and Calico.

pub mod agent;
pub mod ask;
pub mod audit;
mod auth;
pub mod controller;
pub mod counters;
pub mod depot;
mod etcd;
pub mod inventory;
pub mod keys;
mod leader;
mod liveness;
pub mod on_host;
pub mod remediation;
mod rulesets;
mod watch;

pub use auth::{AGENT_ROLE_PREFIX, CONTROLLER_ROLE, Credentials, bootstrap_auth, grant_agent};
pub use etcd::{Etcd, EtcdConfig, FleetError};
pub use leader::{
    ControllerInfo, Fence, Leadership, campaign, controllers, describe_leader, leader, leader_key,
};
pub use liveness::{Registration, live_hosts, register, report_key, status_key};
pub use rulesets::{
    CHUNK_BYTES, Published, RuleSetText, fetch_rule_set, publish_rule_set, publish_rule_set_as,
};
pub use watch::{Resumed, Watch, WatchEvent, watch_from};
