//! The worker loop, and the in-memory queues it runs on by default.

use super::Egress;
use super::control::{IDLE, LOADING, PARKED, Shared};
use crate::frame::Frame;
use crate::pipeline::{Installed, Pipeline, Verdict};
use crossbeam::utils::Backoff;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::time::Duration;

/// The first and the longest park of an idle worker.
const IDLE_PARK_MIN: Duration = Duration::from_micros(200);
const IDLE_PARK_MAX: Duration = Duration::from_millis(100);

/// Where a worker's frames come from and where they go: the in-memory
/// queues ([`QueueIo`]), or a host path's AF_XDP sockets, whose frames are
/// processed in place. The worker loop calls `take`, then `process` under
/// one generation, then `emit`, so that a transaction or a pause is seen
/// between batches only.
pub(crate) trait WorkerIo: Send + 'static {
    /// Takes up to `max` frames that arrived; how many it took.
    fn take(&mut self, max: usize) -> usize;
    /// Runs the frames taken through `pipeline` under `installed`.
    fn process(&mut self, pipeline: &mut Pipeline, installed: &Installed, now_ns: u64);
    /// Sends the processed frames on their way, or drops them.
    fn emit(&mut self);
    /// Waits up to `wait` for frames, with nothing to do: whatever brings
    /// this worker work (a frame, a pause lifted, the stop) may end it early
    /// by unparking the thread.
    fn idle(&mut self, wait: Duration) {
        std::thread::park_timeout(wait);
    }
}

/// Runs worker `index` with `io` until the datapath stops.
pub(super) fn run(shared: &Shared, index: usize, mut pipeline: Pipeline, mut io: impl WorkerIo) {
    let active = &shared.active[index];
    let backoff = Backoff::new();
    let mut idle = IDLE_PARK_MIN;
    // The last reading of the flow cache this worker answered.
    let mut peeked = 0;
    while !shared.stop.load(Acquire) {
        // Announce a load before looking at the pause flag: a controller that
        // sees this worker IDLE knows it will see the flag (both SeqCst).
        active.store(LOADING, SeqCst);
        if shared.pause.load(SeqCst) {
            active.store(PARKED, SeqCst);
            while shared.pause.load(SeqCst) && !shared.stop.load(Acquire) {
                let seq = shared.peek_seq.load(SeqCst);
                if seq != peeked {
                    peeked = seq;
                    let installed = shared.current.load();
                    let mut ask = shared
                        .peek
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let key = ask.key;
                    ask.answers[index] = Some(pipeline.peek(&installed, &key));
                }
                std::thread::yield_now();
            }
            active.store(IDLE, SeqCst);
            continue;
        }
        if io.take(shared.config.batch) == 0 {
            active.store(IDLE, SeqCst);
            if backoff.is_completed() {
                // The wait grows while nothing comes, so an idle datapath
                // costs next to no CPU (a host may run hundreds of them).
                io.idle(idle);
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
        io.process(&mut pipeline, &installed, shared.now_ns());
        drop(installed);
        active.store(IDLE, SeqCst);
        io.emit();
    }
    active.store(IDLE, SeqCst);
}

/// A worker's in-memory queues: frames injected into its input queue,
/// out onto per-port output queues and the host queue.
pub(super) struct QueueIo {
    shared: Arc<Shared>,
    index: usize,
    ports: Vec<u16>,
    frames: Vec<Frame>,
    verdicts: Vec<Verdict>,
}

impl QueueIo {
    pub(super) fn new(shared: Arc<Shared>, index: usize) -> QueueIo {
        let batch = shared.config.batch;
        QueueIo {
            shared,
            index,
            ports: Vec::with_capacity(batch),
            frames: Vec::with_capacity(batch),
            verdicts: Vec::with_capacity(batch),
        }
    }
}

impl WorkerIo for QueueIo {
    fn take(&mut self, max: usize) -> usize {
        let queue = &self.shared.rx[self.index];
        while self.frames.len() < max {
            match queue.pop() {
                Some((port, frame)) => {
                    self.ports.push(port);
                    self.frames.push(frame);
                }
                None => break,
            }
        }
        self.frames.len()
    }

    fn process(&mut self, pipeline: &mut Pipeline, installed: &Installed, now_ns: u64) {
        self.verdicts.clear();
        let mut start = 0;
        while start < self.frames.len() {
            let port = self.ports[start];
            let end = start
                + self.ports[start..]
                    .iter()
                    .take_while(|&&p| p == port)
                    .count();
            pipeline.process_batch(
                installed,
                &mut self.frames[start..end],
                port,
                now_ns,
                &mut self.verdicts,
            );
            start = end;
        }
    }

    fn emit(&mut self) {
        let (shared, index) = (&self.shared, self.index);
        for ((frame, port), verdict) in self
            .frames
            .drain(..)
            .zip(self.ports.drain(..))
            .zip(self.verdicts.iter())
        {
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
}
