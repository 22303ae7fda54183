//! Admission of one request to a cluster, in order: a request slot from the priority queue
//! (when `http2MaxRequests` is limited: reserved capacity for critical/emergency, bounded queue,
//! bounded wait), the breaker's active-request count, and for HTTP/1.1 a connection slot
//! (`maxConnections`), waiting as one of at most `http1MaxPendingRequests` for at most the
//! connect timeout. Every refusal is immediate or bounded, names its limit for
//! `x-jalin-overflow`, and is counted in `jalin_upstream_overflow_total`. Critical and emergency
//! requests refused by a limit may pass through the cluster's audited bypass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jalin_xds::model::route::PriorityClass;
use jalin_xds::model::traffic::{TrafficPolicy, UNLIMITED};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::ClusterState;
use crate::admission::{
    BypassKind, OVERFLOW_METRIC, Offer, Overflow, Permit, PriorityQueue, Shed, Ticket,
};

/// Why a request was not admitted: the limit's label (an Istio field name or a priority-queue
/// outcome), for `x-jalin-overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cluster overflow: {label}")]
pub struct Refusal {
    pub label: &'static str,
}

/// The slots a request holds while it is sent; dropping it gives them back.
#[derive(Debug, Default)]
pub struct Admission {
    _slot: Option<QueueSlot>,
    _request: Option<Permit>,
    _connection: Option<OwnedSemaphorePermit>,
    /// True when a limit was passed through the audited bypass.
    pub bypassed: bool,
}

struct QueueState {
    queue: PriorityQueue,
    waiters: HashMap<Ticket, oneshot::Sender<()>>,
}

impl QueueState {
    /// Gives a slot back and hands freed slots to the most urgent live waiters; a slot granted
    /// to a waiter that went away is given back again.
    fn release(&mut self, now: Instant) {
        let mut released = self.queue.release(now);
        loop {
            for t in released.expired.drain(..) {
                self.waiters.remove(&t);
            }
            let mut lost = 0;
            for t in released.granted.drain(..) {
                let delivered = self
                    .waiters
                    .remove(&t)
                    .is_some_and(|tx| tx.send(()).is_ok());
                if !delivered {
                    lost += 1;
                }
            }
            if lost == 0 {
                return;
            }
            for _ in 0..lost {
                let next = self.queue.release(now);
                released.granted.extend(next.granted);
                released.expired.extend(next.expired);
            }
        }
    }
}

struct QueueSlot(Arc<Mutex<QueueState>>);

impl std::fmt::Debug for QueueSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueSlot")
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        lock(&self.0).release(Instant::now());
    }
}

fn lock(m: &Mutex<QueueState>) -> std::sync::MutexGuard<'_, QueueState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A queued request; dropping it (the client went away) leaves the queue, or gives back a slot
/// granted in the meantime.
struct Waiting {
    queue: Arc<Mutex<QueueState>>,
    ticket: Ticket,
    rx: oneshot::Receiver<()>,
    settled: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut q = lock(&self.queue);
        if !q.queue.cancel(self.ticket) && self.rx.try_recv().is_ok() {
            q.release(Instant::now());
        }
        q.waiters.remove(&self.ticket);
    }
}

/// The admission limits of one cluster.
pub(super) struct Admitter {
    queue: Option<Arc<Mutex<QueueState>>>,
    queue_len: u32,
    connections: Option<Arc<Semaphore>>,
    pending_wait: Duration,
}

impl Admitter {
    pub(super) fn new(policy: &TrafficPolicy) -> Self {
        let pool = &policy.connection_pool;
        let queue = (pool.http2_max_requests != UNLIMITED).then(|| {
            Arc::new(Mutex::new(QueueState {
                queue: PriorityQueue::from_policy(pool.http2_max_requests, &policy.priority),
                waiters: HashMap::new(),
            }))
        });
        let connections = (pool.max_connections != UNLIMITED).then(|| {
            Arc::new(Semaphore::new(
                usize::try_from(pool.max_connections)
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .min(Semaphore::MAX_PERMITS),
            ))
        });
        Self {
            queue,
            queue_len: policy.priority.max_queue_len,
            connections,
            pending_wait: Duration::from_millis(pool.connect_timeout_ms),
        }
    }

    /// Requests waiting in the priority queue.
    pub(super) fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| lock(q).queue.queued())
    }

    pub(super) async fn admit(
        &self,
        cluster: &ClusterState,
        class: PriorityClass,
        http1: bool,
    ) -> Result<Admission, Refusal> {
        let mut admission = Admission::default();
        let refuse = |label: &'static str| {
            metrics::counter!(OVERFLOW_METRIC, "cluster" => cluster.name.to_string(), "limit" => label)
                .increment(1);
            Refusal { label }
        };
        // 1. A request slot from the priority queue.
        if let Some(queue) = &self.queue {
            let now = Instant::now();
            let offer = lock(queue).queue.offer(class, now);
            match offer {
                Offer::Granted => admission._slot = Some(QueueSlot(queue.clone())),
                Offer::Queued {
                    ticket,
                    deadline,
                    evicted,
                } => {
                    let (tx, rx) = oneshot::channel();
                    {
                        let mut q = lock(queue);
                        if let Some(e) = evicted {
                            // Dropping its sender answers the evicted waiter.
                            q.waiters.remove(&e);
                        }
                        q.waiters.insert(ticket, tx);
                    }
                    let granted = wait(queue.clone(), ticket, rx, deadline).await;
                    match granted {
                        Ok(()) => admission._slot = Some(QueueSlot(queue.clone())),
                        Err(shed) => {
                            if cluster.try_bypass(
                                class,
                                BypassKind::Breaker(Overflow::Requests),
                                Instant::now(),
                            ) {
                                admission.bypassed = true;
                            } else {
                                return Err(refuse(shed.as_str()));
                            }
                        }
                    }
                }
                Offer::Rejected(shed) => {
                    if cluster.try_bypass(class, BypassKind::Breaker(Overflow::Requests), now) {
                        admission.bypassed = true;
                    } else if self.queue_len == 0 {
                        // No queue configured: the plain limit overflowed.
                        return Err(refuse(Overflow::Requests.as_str()));
                    } else {
                        return Err(refuse(shed.as_str()));
                    }
                }
            }
        }
        // 2. The breaker's active-request count (the retry budget's base).
        match cluster.breaker.try_request(Instant::now()) {
            Ok(p) => admission._request = Some(p),
            Err(o) => {
                if !admission.bypassed
                    && !cluster.try_bypass(class, BypassKind::Breaker(o), Instant::now())
                {
                    return Err(refuse(o.as_str()));
                }
                admission.bypassed = true;
            }
        }
        // 3. HTTP/1.1: one connection per request in flight; wait as a pending request.
        if let (true, Some(sem)) = (http1, &self.connections) {
            match sem.clone().try_acquire_owned() {
                Ok(p) => admission._connection = Some(p),
                Err(_) => {
                    let pending = match cluster.breaker.try_pending() {
                        Ok(p) => p,
                        Err(o) => {
                            if cluster.try_bypass(class, BypassKind::Breaker(o), Instant::now()) {
                                admission.bypassed = true;
                                return Ok(admission);
                            }
                            return Err(refuse(o.as_str()));
                        }
                    };
                    let got =
                        tokio::time::timeout(self.pending_wait, sem.clone().acquire_owned()).await;
                    drop(pending);
                    match got {
                        Ok(Ok(p)) => admission._connection = Some(p),
                        _ => return Err(refuse(Overflow::Connections.as_str())),
                    }
                }
            }
        }
        Ok(admission)
    }
}

/// Waits for `ticket` until `deadline`.
async fn wait(
    queue: Arc<Mutex<QueueState>>,
    ticket: Ticket,
    rx: oneshot::Receiver<()>,
    deadline: Instant,
) -> Result<(), Shed> {
    let mut w = Waiting {
        queue,
        ticket,
        rx,
        settled: false,
    };
    let r = tokio::time::timeout_at(deadline.into(), &mut w.rx).await;
    match r {
        Ok(Ok(())) => {
            w.settled = true;
            Ok(())
        }
        // Sender dropped: evicted by a more urgent request, or expired by a release.
        Ok(Err(_)) => {
            w.settled = true;
            Err(Shed::Evicted)
        }
        Err(_) => {
            let mut q = lock(&w.queue);
            w.settled = true;
            if q.queue.cancel(ticket) {
                q.waiters.remove(&ticket);
                return Err(Shed::Timeout);
            }
            q.waiters.remove(&ticket);
            // Granted just as the deadline passed: keep the slot.
            if w.rx.try_recv().is_ok() {
                Ok(())
            } else {
                Err(Shed::Timeout)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jalin_xds::model::route::PriorityClass;
    use jalin_xds::model::traffic::{ConnectionPool, PriorityPolicy, TrafficPolicy};

    use crate::cluster::ClusterState;

    fn cluster(capacity: u32, queue: u32) -> Arc<ClusterState> {
        let policy = TrafficPolicy {
            connection_pool: ConnectionPool {
                http2_max_requests: capacity,
                ..ConnectionPool::default()
            },
            priority: PriorityPolicy {
                reserved_percent: 0,
                max_queue_len: queue,
                max_queue_wait_ms: 60_000,
                bypass: None,
            },
            ..TrafficPolicy::default()
        };
        ClusterState::build("t", &policy, Vec::new(), None)
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_emergency_waiter_before_the_standard_one() {
        let c = cluster(1, 8);
        let held = c.admit(PriorityClass::Standard, false).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for class in [PriorityClass::Standard, PriorityClass::Emergency] {
            let (c2, tx) = (c.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let a = c2.admit(class, false).await.unwrap();
                tx.send(class).unwrap();
                drop(a);
            }));
            // Both are queued before the slot frees: wait until the queue holds this one.
            while c.queued() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        assert_eq!(rx.recv().await, Some(PriorityClass::Emergency));
        assert_eq!(rx.recv().await, Some(PriorityClass::Standard));
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_with_its_label() {
        let c = cluster(1, 0);
        let _held = c.admit(PriorityClass::Standard, false).await.unwrap();
        let r = c.admit(PriorityClass::Standard, false).await.unwrap_err();
        assert_eq!(r.label, "http2MaxRequests");
    }

    #[tokio::test]
    async fn an_abandoned_waiter_leaves_the_queue_and_loses_no_slot() {
        let c = cluster(1, 8);
        let held = c.admit(PriorityClass::Standard, false).await.unwrap();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.admit(PriorityClass::Standard, false).await });
        while c.queued() < 1 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(c.queued(), 0);
        drop(held);
        // The slot came back: a new request is granted at once.
        let _again = c.admit(PriorityClass::Standard, false).await.unwrap();
    }
}
