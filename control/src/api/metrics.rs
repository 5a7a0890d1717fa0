//! Prometheus metrics: the API's requests, counted and timed as they are
//! served, and the datapaths' state, read at each scrape. Per-rule counters
//! are not exported (a million rules would be a million series); they are
//! at `GET /v1/counters`.

use super::ApiState;
use crate::daemon::Daemon;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
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

/// Middleware: counts and times each request by its route.
pub async fn record(State(s): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .seconds
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    s.metrics
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
        let packets = counter_vec(
            &now,
            "dse_datapath_packets_total",
            "Packets by what the datapath did with them",
            &["datapath", "outcome"],
        );
        let rx_bytes = counter_vec(
            &now,
            "dse_datapath_rx_bytes_total",
            "Bytes received",
            &["datapath"],
        );
        for (name, s) in daemon.stats() {
            let outcomes = [
                ("rx", s.rx_packets),
                ("output", s.output),
                ("pass", s.pass),
                ("tx", s.tx),
                ("cache_hit", s.cache_hits),
                ("cache_miss", s.cache_misses),
            ];
            for (outcome, v) in outcomes {
                packets.with_label_values(&[&name, outcome]).inc_by(v);
            }
            for (reason, v) in &s.drops {
                packets
                    .with_label_values(&[&name, &format!("drop_{reason}")])
                    .inc_by(*v);
            }
            rx_bytes.with_label_values(&[&name]).inc_by(s.rx_bytes);
        }
        let mut families = self.registry.gather();
        families.extend(now.gather());
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(String::from_utf8(out).expect("the text format is UTF-8"))
    }
}
