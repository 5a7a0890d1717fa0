//! The agent's answers to what a controller asks only its host can do
//! (see [`crate::fleet::on_host`]): each a single machine's operation on
//! the agent's own daemon.

use super::Agent;
use crate::ControlError;
use crate::daemon::Daemon;
use crate::fleet::ask;
use crate::fleet::etcd::{Etcd, FleetError};
use crate::fleet::liveness::Registration;
use crate::fleet::on_host::{EMULATION, INSTALL, ImageWork, STAGE, SetEmulation};
use serde::Serialize;
use std::sync::Arc;

impl Agent {
    /// Answers each request in its host's keys not yet answered.
    pub(super) async fn answer_pending(
        &self,
        etcd: &Etcd,
        registration: &Registration,
    ) -> Result<(), FleetError> {
        self.answer_counters(etcd).await?;
        self.answer_stage(etcd, registration).await?;
        self.answer_emulation(etcd, registration).await?;
        self.answer_install(etcd, registration).await
    }

    /// Answers the stage request in its host's keys, if there is one not
    /// yet answered: the image set on its cluster, and the payloads copied
    /// to its DPUs.
    pub(super) async fn answer_stage(
        &self,
        etcd: &Etcd,
        registration: &Registration,
    ) -> Result<(), FleetError> {
        self.answer_image_work(etcd, registration, STAGE, |d, work, _, who| {
            d.stage(&work.cluster, who)
        })
        .await
    }

    /// Answers the fresh install request in its host's keys, if there is
    /// one not yet answered: the image set on its cluster, and installed on the host and
    /// its DPUs.
    pub(super) async fn answer_install(
        &self,
        etcd: &Etcd,
        registration: &Registration,
    ) -> Result<(), FleetError> {
        self.answer_image_work(etcd, registration, INSTALL, |d, work, host, who| {
            d.fresh_install(&work.cluster, host, who)
        })
        .await
    }

    /// Answers the emulation request in its host's keys, if there is one
    /// not yet answered.
    pub(super) async fn answer_emulation(
        &self,
        etcd: &Etcd,
        registration: &Registration,
    ) -> Result<(), FleetError> {
        let host = self.config.host.clone();
        let Some(request) = ask::pending::<SetEmulation>(etcd, &host, EMULATION).await? else {
            return Ok(());
        };
        let who = format!("dse agent {host}");
        let set = request.body;
        let answer = self
            .on_daemon(move |d| d.emulate(&set.serial, set.emulation, &who))
            .await;
        self.report_then_answer(etcd, registration, EMULATION, request.nonce, answer)
            .await
    }

    /// Answers the request of `kind` for work with a cluster image, if
    /// there is one not yet answered: the image's depot content brought into its own depot,
    /// the image set on its cluster, then `work` on its daemon.
    async fn answer_image_work<T: Serialize + Send + 'static>(
        &self,
        etcd: &Etcd,
        registration: &Registration,
        kind: &'static str,
        work: fn(&Daemon, &ImageWork, &str, &str) -> Result<T, ControlError>,
    ) -> Result<(), FleetError> {
        let host = self.config.host.clone();
        let Some(request) = ask::pending::<ImageWork>(etcd, &host, kind).await? else {
            return Ok(());
        };
        let who = format!("dse agent {host}: {kind}");
        let answer = match self
            .fetch_depot(etcd, &format!("fleet-depot-{kind}"), &who)
            .await
        {
            Err(e) => Err(e),
            Ok(()) => {
                let (body, on) = (request.body, host.clone());
                self.on_daemon(move |d| {
                    d.set_image(&body.cluster, body.image.clone(), &who)
                        .and_then(|()| work(d, &body, &on, &who))
                })
                .await
            }
        };
        self.report_then_answer(etcd, registration, kind, request.nonce, answer)
            .await
    }

    /// Reports the host's state if the work changed it, then answers the
    /// request of `kind`: whoever asked and is answered then reads, in the
    /// host's report, the DPUs the work left, not those before it.
    async fn report_then_answer<T: Serialize>(
        &self,
        etcd: &Etcd,
        registration: &Registration,
        kind: &str,
        nonce: String,
        answer: Result<T, String>,
    ) -> Result<(), FleetError> {
        self.report_if_changed(registration).await?;
        ask::answer(etcd, &self.config.host, kind, nonce, answer).await
    }

    /// `f` on the agent's daemon, off the async threads; its error as
    /// text, as an answer carries it.
    async fn on_daemon<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Daemon) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<T, String> {
        let daemon = Arc::clone(&self.daemon);
        tokio::task::spawn_blocking(move || f(&daemon).map_err(|e| e.to_string()))
            .await
            .expect("the agent's daemon work does not panic")
    }
}
