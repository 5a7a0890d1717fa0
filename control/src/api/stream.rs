//! Answers written while they are read: a body fed through a bounded
//! channel by a blocking producer, so that the memory an answer takes is
//! a few chunks whatever its size, and a client that goes away stops the
//! producer at its next chunk.

use crate::daemon::{Daemon, RulesPage};
use axum::body::Bytes;
use hyper::body::Frame;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Chunks in flight between the producer and the connection.
const DEPTH: usize = 4;

/// Rules serialised per chunk.
const RULES_PER_CHUNK: usize = 4096;

/// A body whose chunks come from a channel; an `Err` chunk aborts it.
pub struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data)))
    }
}

/// The desired rules as `{"generation": G, "rules": {ports, meters,
/// rules}}`, serialised a chunk of rules at a time. If the desired rules
/// change before the last chunk, the body ends with an error (the client
/// sees a truncated answer) rather than mix two generations.
pub fn all_rules(daemon: Arc<Daemon>) -> ChannelBody {
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::task::spawn_blocking(move || {
        let send = |chunk: Result<Vec<u8>, std::io::Error>| {
            tx.blocking_send(chunk.map(Bytes::from)).is_ok()
        };
        let (generation, frame) = daemon.rules_page(&RulesPage::default());
        let mut head = format!("{{\"generation\":{generation},\"rules\":{{\"ports\":");
        head.push_str(&serde_json::to_string(&frame.ports).expect("ports serialise"));
        if !frame.meters.is_empty() {
            head.push_str(",\"meters\":");
            head.push_str(&serde_json::to_string(&frame.meters).expect("meters serialise"));
        }
        head.push_str(",\"rules\":[");
        if !send(Ok(head.into_bytes())) {
            return;
        }
        let mut after = None;
        let mut first = true;
        loop {
            let page = RulesPage {
                after,
                limit: RULES_PER_CHUNK,
                ids: None,
            };
            let (now, set) = daemon.rules_page(&page);
            if now != generation {
                send(Err(std::io::Error::other(format!(
                    "the desired rules moved from generation {generation} to {now} while they were read: read them again"
                ))));
                return;
            }
            let Some(last) = set.rules.last() else {
                break;
            };
            after = Some(last.id);
            let mut chunk = Vec::with_capacity(set.rules.len() * 160);
            for r in &set.rules {
                if !first {
                    chunk.push(b',');
                }
                first = false;
                serde_json::to_writer(&mut chunk, r).expect("a rule serialises");
            }
            if !send(Ok(chunk)) {
                return; // the client went away
            }
        }
        send(Ok(b"]}}".to_vec()));
    });
    ChannelBody(rx)
}
