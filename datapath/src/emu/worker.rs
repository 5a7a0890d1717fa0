//! The worker loop.

use super::Egress;
use super::control::{IDLE, LOADING, PARKED, Shared};
use crate::frame::Frame;
use crate::pipeline::{Pipeline, Verdict};
use crossbeam::utils::Backoff;
use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::time::Duration;

/// The first and the longest park of an idle worker.
const IDLE_PARK_MIN: Duration = Duration::from_micros(200);
const IDLE_PARK_MAX: Duration = Duration::from_millis(100);

pub(super) fn run(shared: &Shared, index: usize, mut pipeline: Pipeline) {
    let queue = &shared.rx[index];
    let active = &shared.active[index];
    let mut ports: Vec<u16> = Vec::with_capacity(shared.config.batch);
    let mut frames: Vec<Frame> = Vec::with_capacity(shared.config.batch);
    let mut verdicts = Vec::with_capacity(shared.config.batch);
    let backoff = Backoff::new();
    let mut idle = IDLE_PARK_MIN;
    while !shared.stop.load(Acquire) {
        // Announce a load before looking at the pause flag: a controller that
        // sees this worker IDLE knows it will see the flag (both SeqCst).
        active.store(LOADING, SeqCst);
        if shared.pause.load(SeqCst) {
            active.store(PARKED, SeqCst);
            while shared.pause.load(SeqCst) && !shared.stop.load(Acquire) {
                std::thread::yield_now();
            }
            active.store(IDLE, SeqCst);
            continue;
        }
        while frames.len() < shared.config.batch {
            match queue.pop() {
                Some((port, frame)) => {
                    ports.push(port);
                    frames.push(frame);
                }
                None => break,
            }
        }
        if frames.is_empty() {
            active.store(IDLE, SeqCst);
            if backoff.is_completed() {
                // Whatever gives a worker work unparks it (a frame queued,
                // a pause lifted, the stop): the timeout is a safety net,
                // and it grows while nothing comes, so an idle datapath
                // costs next to no CPU (a host may run hundreds of them).
                std::thread::park_timeout(idle);
                idle = (idle * 2).min(IDLE_PARK_MAX);
            } else {
                backoff.snooze();
            }
            continue;
        }
        backoff.reset();
        idle = IDLE_PARK_MIN;
        // One generation for the whole batch: the atomicity of transactions.
        let installed = shared.current.load_full();
        active.store(installed.generation, SeqCst);
        let now = shared.now_ns();
        verdicts.clear();
        let mut start = 0;
        while start < frames.len() {
            let port = ports[start];
            let end = start + ports[start..].iter().take_while(|&&p| p == port).count();
            pipeline.process_batch(
                &installed,
                &mut frames[start..end],
                port,
                now,
                &mut verdicts,
            );
            start = end;
        }
        drop(installed);
        active.store(IDLE, SeqCst);
        for ((frame, port), verdict) in frames.drain(..).zip(ports.drain(..)).zip(verdicts.iter()) {
            let out = match *verdict {
                Verdict::Output(p) => shared.out_queue(index, p),
                Verdict::Tx => shared.out_queue(index, port),
                Verdict::Pass => &shared.host[index],
                Verdict::Drop(_) => continue,
            };
            if out
                .push(Egress {
                    in_port: port,
                    frame,
                })
                .is_err()
            {
                shared.overflow[index].add(1);
            }
        }
    }
    active.store(IDLE, SeqCst);
}
