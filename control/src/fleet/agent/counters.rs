//! The agent's answer to a controller's request for its per-rule counters
//! (see [`crate::fleet::counters`]).

use super::Agent;
use crate::fleet::ask;
use crate::fleet::etcd::{Etcd, FleetError};
use std::sync::Arc;

impl Agent {
    /// Answers the counters request in its host's keys, if there is one
    /// not yet answered.
    pub(super) async fn answer_counters(&self, etcd: &Etcd) -> Result<(), FleetError> {
        use crate::fleet::counters::{Answer, KIND, Request};
        let host = &self.config.host;
        let Some(request) = ask::pending::<Request>(etcd, host, KIND).await? else {
            return Ok(());
        };
        let daemon = Arc::clone(&self.daemon);
        let datapath = request.body.datapath;
        let got = tokio::task::spawn_blocking(move || {
            daemon.counters(datapath.as_deref()).map_err(|e| {
                let not_found = matches!(e, crate::ControlError::NotFound { .. });
                (e.to_string(), not_found)
            })
        })
        .await
        .expect("the agent's daemon work does not panic");
        ask::answer(etcd, host, KIND, request.nonce, Answer::of(got)).await
    }
}
