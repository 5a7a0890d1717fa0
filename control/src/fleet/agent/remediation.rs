//! The agent's half of a fleet remediation: it takes its host's order once
//! (fetching the image's depot content from etcd, which its own trusted
//! keys check again), runs the host's sequence with its own engine,
//! journaled in its own store (an agent killed mid-step resumes it when it
//! opens, and redoes that step), and answers with each step it finished.

use super::Agent;
use crate::fleet::depot;
use crate::fleet::etcd::{Etcd, FleetError};
use crate::fleet::remediation::{Ack, Order, ack_key, order_key};
use crate::lifecycle::remediation::{HostResult, HostRun, Remediation};
use std::sync::Arc;

impl Agent {
    /// Reads the host's order (none: not under remediation) and keeps it.
    pub(super) async fn read_order(&self, etcd: &Etcd) -> Result<Option<Order>, FleetError> {
        let key = order_key(etcd.prefix(), &self.config.host);
        let r = etcd.get(&key).await?;
        let order = match r.kvs().first() {
            None => None,
            Some(kv) => Some(serde_json::from_slice::<Order>(kv.value()).map_err(|e| {
                FleetError::Damaged {
                    what: key.clone(),
                    reason: format!("it does not read: {e}"),
                }
            })?),
        };
        self.order
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone_from(&order);
        Ok(order)
    }

    /// The order it holds now.
    pub(super) fn order(&self) -> Option<Order> {
        self.order.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its own remediation that carries out `order`, if it started one.
    fn local_run(&self, order: &Order) -> Option<Remediation> {
        let tag = order.tag();
        self.daemon
            .remediations()
            .ok()?
            .into_iter()
            .rev()
            .find(|r| r.who == tag)
    }

    /// Takes the order it holds, if it has not yet: brings the image's
    /// manifests from the fleet's depot into its own, sets the image and
    /// starts its own remediation of the host. An order it cannot start is
    /// answered as an error.
    pub(super) async fn take_order(&self, etcd: &Etcd) -> Result<(), FleetError> {
        let Some(order) = self.order() else {
            return Ok(());
        };
        if self.local_run(&order).is_some() || self.daemon.remediation_running() {
            // Taken; or an earlier attempt still finishing, after which
            // the next look takes this one.
            return Ok(());
        }
        let key = ack_key(etcd.prefix(), &self.config.host);
        let answered = etcd.get(&key).await?;
        if let Some(kv) = answered.kvs().first()
            && let Ok(a) = serde_json::from_slice::<Ack>(kv.value())
            && a.id == order.id
            && a.attempt == order.attempt
        {
            return Ok(());
        }
        if let Err(e) = self.start(etcd, &order).await {
            let now = crate::store::now_ms();
            let run = HostRun {
                result: HostResult::Error,
                attempts: 1,
                message: Some(e),
                started_ms: Some(now),
                finished_ms: Some(now),
                ..HostRun::pending(&self.config.host)
            };
            self.put_ack(etcd, &order, run, None).await?;
        }
        Ok(())
    }

    /// Starts its own remediation of `order`; the error says why not.
    async fn start(&self, etcd: &Etcd, order: &Order) -> Result<(), String> {
        self.fetch_depot(etcd, &format!("fleet-depot-{}", order.id), &order.tag())
            .await?;
        let daemon = Arc::clone(&self.daemon);
        let order = order.clone();
        tokio::task::spawn_blocking(move || {
            let tag = order.tag();
            daemon
                .set_image(&order.cluster, order.image.clone(), &tag)
                .map_err(|e| e.to_string())?;
            let mut options = order.options.clone();
            options.parallel = 1;
            daemon
                .remediate(&order.cluster, options, false, &tag)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .expect("the agent's daemon work does not panic")
    }

    /// Brings what the fleet's depot holds and its own does not into its
    /// own, by `who`, through work directory `work` beside its store; its
    /// own trusted keys check each manifest again. The error names the
    /// manifest refused.
    pub(super) async fn fetch_depot(
        &self,
        etcd: &Etcd,
        work: &str,
        who: &str,
    ) -> Result<(), String> {
        let have: std::collections::BTreeSet<String> = self
            .daemon
            .depot()
            .map_err(|e| e.to_string())?
            .iter()
            .map(crate::lifecycle::depot::Imported::key)
            .collect();
        let fleet = depot::list(etcd).await.map_err(|e| e.to_string())?;
        let work = self.config.daemon.db.with_file_name(work);
        for m in fleet.iter().filter(|m| !have.contains(&m.key())) {
            let _ = std::fs::remove_dir_all(&work);
            depot::fetch_manifest(etcd, m, &work)
                .await
                .map_err(|e| e.to_string())?;
            let daemon = Arc::clone(&self.daemon);
            let (from, who) = (work.clone(), who.to_string());
            let imported =
                tokio::task::spawn_blocking(move || daemon.depot_import(&from, &who)).await;
            let _ = std::fs::remove_dir_all(&work);
            imported
                .expect("the agent's daemon work does not panic")
                .map_err(|e| format!("the depot's {}: {e}", m.key()))?;
        }
        Ok(())
    }

    /// Answers the order it holds with its own run as it stands, if that
    /// moved since its last answer.
    pub(super) async fn answer_order(&self, etcd: &Etcd) -> Result<(), FleetError> {
        let Some(order) = self.order() else {
            return Ok(());
        };
        let Some(local) = self.local_run(&order) else {
            return self.take_order(etcd).await;
        };
        let Some(run) = local
            .hosts
            .iter()
            .find(|h| h.host == self.config.host)
            .cloned()
        else {
            return Ok(());
        };
        // A final answer carries the versions the host now runs, which its
        // run records before it finishes.
        if run.result.is_final() && !local.is_finished() {
            return Ok(());
        }
        let host = local
            .is_finished()
            .then(|| self.daemon.cluster_host(&order.cluster, &self.config.host))
            .flatten();
        self.put_ack(etcd, &order, run, host).await
    }

    /// Answers `order` with `run` (and the host's versions, once final),
    /// unless that is what it answered last.
    async fn put_ack(
        &self,
        etcd: &Etcd,
        order: &Order,
        run: HostRun,
        host: Option<crate::lifecycle::Host>,
    ) -> Result<(), FleetError> {
        let ack = Ack {
            id: order.id,
            attempt: order.attempt,
            run,
            host,
        };
        let mut last = self
            .answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if last.as_ref() == Some(&ack) {
            return Ok(());
        }
        let key = ack_key(etcd.prefix(), &self.config.host);
        let value = serde_json::to_vec(&ack).expect("an answer serializes");
        etcd.put(&key, value).await?;
        last = Some(ack);
        *self.answered.lock().unwrap_or_else(|p| p.into_inner()) = last;
        Ok(())
    }
}
