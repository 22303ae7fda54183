//! One connection's load loop: open-loop (requests at their scheduled instants) or closed-loop (the
//! next request as soon as the previous one completes).
//!
//! The loop is generic over [`Client`] so the timing logic is tested with a fake server and a
//! paused clock. Invariants:
//! - a request never starts before its intended instant, and its latency is measured from that
//!   instant even when it starts late (coordinated-omission correction);
//! - at most `Client::max_in_flight` requests are outstanding on the connection; while the limit is
//!   reached, due requests queue (and their wait counts as latency);
//! - nothing is sent after `hard_stop`: requests still due then are counted as unsent;
//! - every request is bounded by `timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::pacer::Pacer;
use crate::record::{Outcome, Recorder, Timing};
use crate::schedule::Schedule;

/// The future of one request's response.
pub type PendingResponse = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One connection to a target, able to start requests.
pub trait Client: Send + 'static {
    /// Starts one request: waits until the connection can carry it (connecting first if needed)
    /// and returns the future of its complete response. Failures resolve to `Outcome::Error`.
    fn dispatch(&mut self) -> impl Future<Output = PendingResponse> + Send;

    /// Requests this connection carries at once (1 for HTTP/1.1, the stream limit for HTTP/2).
    fn max_in_flight(&self) -> usize;

    /// Called after a request failed; an HTTP/1.1 connection is unusable afterwards and is closed.
    fn failed(&mut self);
}

/// The open-loop plan of one connection.
#[derive(Debug, Clone)]
pub struct OpenLoopPlan {
    /// The shared schedule.
    pub schedule: Arc<Schedule>,
    /// Which connection of the schedule this is.
    pub connection: usize,
    /// The instant offset zero of the schedule maps to.
    pub start: Instant,
    /// No request is sent after this instant.
    pub hard_stop: Instant,
    /// Per-request bound.
    pub timeout: Duration,
}

struct Done {
    /// Whether the request is measured (not warm-up).
    measured: bool,
    timing: Timing,
    outcome: Outcome,
    failed: bool,
}

fn spawn_request(
    set: &mut JoinSet<Done>,
    pending: PendingResponse,
    measured: bool,
    origin: Instant,
    intended: Instant,
    sent: Instant,
    timeout: Duration,
) {
    set.spawn(async move {
        let outcome = match tokio::time::timeout(timeout, pending).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Error("timeout".to_owned()),
        };
        let done = Instant::now();
        let failed = matches!(outcome, Outcome::Error(_));
        Done {
            measured,
            timing: Timing {
                intended: intended.saturating_duration_since(origin),
                sent: sent.saturating_duration_since(origin),
                done: done.saturating_duration_since(origin),
            },
            outcome,
            failed,
        }
    });
}

/// Runs one connection's share of an open-loop schedule and returns what it recorded (warm-up
/// requests are sent but not recorded).
pub async fn open_loop<C: Client>(
    client: &mut C,
    pacer: &mut Pacer,
    plan: &OpenLoopPlan,
) -> Recorder {
    let mut recorder = Recorder::new();
    let schedule = &plan.schedule;
    let mut due = schedule.for_connection(plan.connection).peekable();
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let max = client.max_in_flight().max(1);
    loop {
        let next = due.peek().copied();
        if next.is_none() && in_flight.is_empty() {
            break;
        }
        let can_send = next.is_some() && in_flight.len() < max;
        let deadline = plan.start + next.map_or(Duration::ZERO, |i| schedule.offset(i));
        tokio::select! {
            biased;
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok(done) = joined {
                    if done.failed {
                        client.failed();
                    }
                    if done.measured {
                        recorder.record(&done.outcome, done.timing);
                    }
                }
            }
            waited = pacer.wait_until(deadline), if can_send => {
                let Some(index) = due.next() else { continue };
                if waited.is_err() || Instant::now() > plan.hard_stop {
                    // Past the deadline (or the clock failed): count this and every later request
                    // of this connection as unsent.
                    let left = 1 + due.by_ref().filter(|i| !schedule.is_warmup(*i)).count() as u64;
                    let left = if schedule.is_warmup(index) { left - 1 } else { left };
                    recorder.record_unsent(left);
                    continue;
                }
                let pending = client.dispatch().await;
                let sent = Instant::now();
                let measured = !schedule.is_warmup(index);
                let (origin, timeout) = (plan.start, plan.timeout);
                spawn_request(&mut in_flight, pending, measured, origin, deadline, sent, timeout);
            }
        }
    }
    recorder
}

/// The closed-loop plan of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoopPlan {
    /// Requests sent before this instant are warm-up (sent, not recorded).
    pub measure_from: Instant,
    /// No request is sent from this instant on.
    pub stop: Instant,
    /// Per-request bound.
    pub timeout: Duration,
}

/// Sends requests back to back (keeping `max_in_flight` outstanding) until `plan.stop`, then waits
/// for the outstanding ones. Latency is measured from the actual send: a closed loop has no
/// intended start.
pub async fn closed_loop<C: Client>(client: &mut C, plan: ClosedLoopPlan) -> Recorder {
    let mut recorder = Recorder::new();
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let max = client.max_in_flight().max(1);
    let mut index: u64 = 0;
    loop {
        let open = Instant::now() < plan.stop;
        if !open && in_flight.is_empty() {
            break;
        }
        if open && in_flight.len() < max {
            let pending = client.dispatch().await;
            let sent = Instant::now();
            let measured = sent >= plan.measure_from;
            spawn_request(
                &mut in_flight,
                pending,
                measured,
                plan.measure_from,
                sent,
                sent,
                plan.timeout,
            );
            index += 1;
            continue;
        }
        if let Some(Ok(done)) = in_flight.join_next().await {
            if done.failed {
                client.failed();
            }
            if done.measured {
                recorder.record(&done.outcome, done.timing);
            }
        }
    }
    tracing::debug!(requests = index, "closed loop finished");
    recorder
}

#[cfg(test)]
mod tests;
