//! The agent's answer to a controller's request for its per-rule counters
//! (see [`crate::fleet::counters`]).

use super::Agent;
use crate::fleet::etcd::{Etcd, FleetError};
use std::sync::Arc;

impl Agent {
    /// Answers the counters request in its host's keys, if there is one.
    pub(super) async fn answer_counters(&self, etcd: &Etcd) -> Result<(), FleetError> {
        use crate::fleet::counters::{Answer, Request, answer_key, request_key};
        let r = etcd
            .get(&request_key(etcd.prefix(), &self.config.host))
            .await?;
        let Some(request) = r
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<Request>(kv.value()).ok())
        else {
            return Ok(());
        };
        let daemon = Arc::clone(&self.daemon);
        let datapath = request.datapath.clone();
        let got = tokio::task::spawn_blocking(move || {
            daemon.counters(datapath.as_deref()).map_err(|e| {
                let not_found = matches!(e, crate::ControlError::NotFound { .. });
                (e.to_string(), not_found)
            })
        })
        .await
        .expect("the agent's daemon work does not panic");
        let answer = Answer::of(&request, got);
        let key = answer_key(etcd.prefix(), &self.config.host);
        let value = serde_json::to_vec(&answer).expect("an answer serializes");
        etcd.retry(&format!("writing {key}"), |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await
        .map(|_| ())
    }
}
