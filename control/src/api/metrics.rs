//! Prometheus metrics: the API's requests, counted and timed as they are
//! served, and the datapaths' state, read at each scrape: a single
//! machine's own, or on a fleet controller each host's, from its agent's
//! last report (labelled `host`). Per-rule counters are not exported (a
//! million rules would be a million series); they are at `GET /v1/counters`.

use crate::daemon::Daemon;
use crate::fleet::controller::HostView;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use dse_datapath::pipeline::Stats;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;
use std::time::Instant;

/// The API's own metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("dse_api_requests_total", "API requests by route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new("dse_api_request_seconds", "API request latency by route")
                .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 16).expect("valid")),
            &["method", "route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registers once");
        registry
            .register(Box::new(seconds.clone()))
            .expect("registers once");
        Metrics {
            registry,
            requests,
            seconds,
        }
    }
}

/// The state of a router whose requests [`record`] counts.
pub trait Measured: Send + Sync + 'static {
    /// Its metrics.
    fn metrics(&self) -> &Metrics;
}

/// Middleware: counts and times each request by its route.
pub async fn record<S: Measured>(State(s): State<Arc<S>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics()
        .seconds
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    s.metrics()
        .requests
        .with_label_values(&[&method, &route, resp.status().as_str()])
        .inc();
    resp
}

/// A counter family for one scrape: it starts at zero and is raised to the
/// datapath's own count, so Prometheus sees a counter.
fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registers once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registers once");
    g
}

/// Each datapath's packets by outcome and bytes received, labelled with
/// `labels` (the datapath's, and on a fleet its host's first).
struct Traffic {
    packets: IntCounterVec,
    rx_bytes: IntCounterVec,
}

impl Traffic {
    fn new(r: &Registry, labels: &[&str]) -> Traffic {
        Traffic {
            packets: counter_vec(
                r,
                "dse_datapath_packets_total",
                "Packets by what the datapath did with them",
                &[labels, &["outcome"]].concat(),
            ),
            rx_bytes: counter_vec(r, "dse_datapath_rx_bytes_total", "Bytes received", labels),
        }
    }

    fn add(&self, labels: &[&str], s: &Stats) {
        let outcomes = [
            ("rx", s.rx_packets),
            ("output", s.output),
            ("pass", s.pass),
            ("tx", s.tx),
            ("cache_hit", s.cache_hits),
            ("cache_miss", s.cache_misses),
        ];
        let count = |outcome: &str, v: u64| {
            let mut all = labels.to_vec();
            all.push(outcome);
            self.packets.with_label_values(&all).inc_by(v);
        };
        for (outcome, v) in outcomes {
            count(outcome, v);
        }
        for (reason, v) in &s.drops {
            count(&format!("drop_{reason}"), *v);
        }
        self.rx_bytes.with_label_values(labels).inc_by(s.rx_bytes);
    }
}

impl Metrics {
    /// The metrics in Prometheus' text format.
    ///
    /// # Errors
    /// If encoding fails.
    pub fn render(&self, daemon: &Daemon) -> Result<String, prometheus::Error> {
        let now = Registry::new();
        let generation = IntGauge::new("dse_desired_generation", "The desired rules' generation")?;
        generation.set(daemon.generation() as i64);
        now.register(Box::new(generation))?;
        let up = gauge_vec(
            &now,
            "dse_datapath_up",
            "1 if the datapath instance runs, 0 if it failed",
            &["datapath", "backend"],
        );
        let dp_gen = gauge_vec(
            &now,
            "dse_datapath_generation",
            "The datapath's own generation",
            &["datapath"],
        );
        for d in daemon.datapaths() {
            let backend = format!("{:?}", d.backend).to_lowercase();
            up.with_label_values(&[&d.name, &backend])
                .set(i64::from(d.state == "running"));
            if let Some(g) = d.generation {
                dp_gen.with_label_values(&[&d.name]).set(g as i64);
            }
        }
        let traffic = Traffic::new(&now, &["datapath"]);
        for (name, s) in daemon.stats() {
            traffic.add(&[&name], &s);
        }
        self.encode(now)
    }

    /// A fleet controller's metrics: whether it leads, and each host's
    /// liveness, applied generation and datapaths, from `hosts`' reports.
    ///
    /// # Errors
    /// If encoding fails.
    pub fn render_fleet(
        &self,
        leads: bool,
        hosts: &[HostView],
    ) -> Result<String, prometheus::Error> {
        let now = Registry::new();
        let leader = IntGauge::new("dse_controller_leader", "1 if this controller leads")?;
        leader.set(i64::from(leads));
        now.register(Box::new(leader))?;
        let host_up = gauge_vec(
            &now,
            "dse_host_up",
            "1 while the host's agent holds its lease",
            &["host"],
        );
        let applied = gauge_vec(
            &now,
            "dse_host_applied_generation",
            "The generation of its rule set the host's agent last applied",
            &["host", "rule_set"],
        );
        let up = gauge_vec(
            &now,
            "dse_datapath_up",
            "1 if the datapath instance runs, 0 if it failed",
            &["host", "datapath"],
        );
        let in_sync = gauge_vec(
            &now,
            "dse_datapath_in_sync",
            "1 if the datapath runs what its agent applied",
            &["host", "datapath"],
        );
        let traffic = Traffic::new(&now, &["host", "datapath"]);
        for h in hosts {
            host_up
                .with_label_values(&[&h.host])
                .set(i64::from(h.state == "available"));
            let Some(report) = &h.report else {
                continue;
            };
            applied
                .with_label_values(&[&h.host, &report.applied.rule_set])
                .set(report.applied.generation as i64);
            for d in &report.datapaths {
                let labels = [h.host.as_str(), d.name.as_str()];
                up.with_label_values(&labels)
                    .set(i64::from(d.state == "running"));
                in_sync.with_label_values(&labels).set(i64::from(d.in_sync));
                traffic.add(&labels, &d.stats);
            }
        }
        self.encode(now)
    }

    /// This API's request metrics and `now`'s, in the text format.
    fn encode(&self, now: Registry) -> Result<String, prometheus::Error> {
        let mut families = self.registry.gather();
        families.extend(now.gather());
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(String::from_utf8(out).expect("the text format is UTF-8"))
    }
}
