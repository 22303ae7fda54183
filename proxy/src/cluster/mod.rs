//! Runtime state of one cluster or subset: its endpoints, the balancer and outlier detector
//! (under one small lock, the only state here that needs `&mut`), the circuit breaker, the retry
//! budget, the priority queue and the audited bypass. Built per (re)load; kept across reloads when
//! the policy is unchanged, with endpoints updated by address, so latency estimates, in-flight
//! counts, ejections and breaker counters survive a reload.
//!
//! Outlier sweeps run on a task per cluster driven by `next_sweep`, and inline on the request
//! path when a sweep is overdue; every ejection and re-admission is logged and counted by the
//! detector and published on [`events`].

mod admit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use jalin_xds::model::route::PriorityClass;
use jalin_xds::model::traffic::{LoadBalancer, TrafficPolicy, UNLIMITED};
use tokio::sync::broadcast;

use crate::admission::{Breaker, BypassKind, BypassLimiter, Limits};
use crate::balance::{Balancer, PickContext};
use crate::endpoint::Endpoint;
use crate::outlier::{HostResult, LocalOrigin, OutlierDetector, OutlierEvent};
use crate::retry::{RetryBudget, TriedHosts};

pub use admit::{Admission, Refusal};

/// Capacity of the process-wide event channel; slow subscribers lose the oldest events.
const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// An outlier event of a named cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// `service` or `service|subset`.
    pub cluster: Arc<str>,
    pub event: OutlierEvent,
}

fn channel() -> &'static broadcast::Sender<ClusterEvent> {
    static TX: OnceLock<broadcast::Sender<ClusterEvent>> = OnceLock::new();
    TX.get_or_init(|| broadcast::channel(EVENT_CHANNEL_CAPACITY).0)
}

/// Subscribes to every cluster's outlier events (ejections, skipped ejections, re-admissions)
/// in this process: for tests and embedders that must act on them without polling.
pub fn events() -> broadcast::Receiver<ClusterEvent> {
    channel().subscribe()
}

struct Core {
    balancer: Balancer,
    outlier: Option<OutlierDetector>,
    endpoints: HashMap<SocketAddr, Arc<Endpoint>>,
}

/// One cluster (a service, or one subset of it) at run time.
pub struct ClusterState {
    /// `service` or `service|subset`: metric and log label.
    pub name: Arc<str>,
    pub policy: TrafficPolicy,
    pub breaker: Breaker,
    core: Mutex<Core>,
    retry_budget: Option<RetryBudget>,
    admit: admit::Admitter,
    bypass: Option<Mutex<BypassLimiter>>,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A request's hold on an endpoint, from the pick to the response headers. Dropping it without
/// [`InFlight::finish`] (the request was cancelled) only ends the in-flight count.
#[must_use = "report the outcome with finish()"]
pub struct InFlight {
    cluster: Arc<ClusterState>,
    pub endpoint: Arc<Endpoint>,
    started: Instant,
    done: bool,
}

impl InFlight {
    /// Reports the try's result: latency to the balancer (when there was a response) and the
    /// result to the outlier detector.
    pub fn finish(mut self, result: HostResult) {
        self.done = true;
        let now = Instant::now();
        let rtt = matches!(result, HostResult::Http(_)).then(|| now - self.started);
        self.cluster
            .finish(self.endpoint.addr(), rtt, Some(result), now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.cluster
                .finish(self.endpoint.addr(), None, None, Instant::now());
        }
    }
}

impl ClusterState {
    /// The state for `name` with `policy` over `endpoints` (address, weight), reusing `previous`
    /// when its policy is the same.
    pub fn build(
        name: &str,
        policy: &TrafficPolicy,
        endpoints: Vec<(Arc<Endpoint>, u32)>,
        previous: Option<&Arc<ClusterState>>,
    ) -> Arc<Self> {
        let now = Instant::now();
        if let Some(prev) = previous.filter(|p| &p.policy == policy) {
            prev.set_endpoints(endpoints, now);
            return prev.clone();
        }
        let limits = Limits::from_pool(
            &policy.connection_pool,
            policy.retry_concurrency_budget.as_ref(),
        );
        let state = Arc::new(Self {
            name: Arc::from(name),
            breaker: Breaker::new(name, limits, now),
            core: Mutex::new(Core {
                balancer: Balancer::new(policy.load_balancer.clone()),
                outlier: policy
                    .outlier_detection
                    .clone()
                    .map(|cfg| OutlierDetector::new(name, cfg, now)),
                endpoints: HashMap::new(),
            }),
            retry_budget: policy
                .retry_budget
                .as_ref()
                .map(|b| RetryBudget::new(b, now)),
            admit: admit::Admitter::new(policy),
            bypass: policy
                .priority
                .bypass
                .as_ref()
                .map(|b| Mutex::new(BypassLimiter::new(name, b))),
            policy: policy.clone(),
        });
        state.set_endpoints(endpoints, now);
        if state.policy.outlier_detection.is_some()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(sweep_task(Arc::downgrade(&state)));
        }
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave the balancer inconsistent in a way that
        // matters more than stopping traffic would; keep serving.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_endpoints(&self, endpoints: Vec<(Arc<Endpoint>, u32)>, now: Instant) {
        let breaker = (self.policy.connection_pool.max_connections != UNLIMITED)
            .then(|| self.breaker.clone());
        for (ep, _) in &endpoints {
            ep.set_connection_breaker(breaker.clone());
        }
        let mut core = self.lock();
        core.balancer
            .set_endpoints(endpoints.iter().map(|(e, w)| (e.addr(), *w)), now);
        if let Some(o) = core.outlier.as_mut() {
            o.set_hosts(endpoints.iter().map(|(e, _)| e.addr()));
        }
        core.endpoints = endpoints.into_iter().map(|(e, _)| (e.addr(), e)).collect();
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.lock().endpoints.len()
    }

    /// True when the cluster has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoint at `addr`, if it is one of this cluster's.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<Arc<Endpoint>> {
        self.lock().endpoints.get(&addr).cloned()
    }

    /// Picks an endpoint among the available (not ejected, unless in panic) ones, preferring
    /// those not in `tried`, and counts the request in flight. A critical or emergency request
    /// that finds every endpoint ejected may take an ejected one through the audited bypass.
    pub fn pick(
        self: &Arc<Self>,
        ctx: &PickContext,
        tried: &TriedHosts,
        class: PriorityClass,
    ) -> Option<InFlight> {
        let mut core = self.lock();
        let mut events = Vec::new();
        let core = &mut *core;
        if let Some(o) = core.outlier.as_mut()
            && ctx.now >= o.next_sweep()
        {
            events = o.sweep(ctx.now);
        }
        let outlier = core.outlier.as_ref();
        let available = |id| outlier.is_none_or(|o| o.is_available(id));
        let mut rng = rand::rng();
        let mut id = if tried.is_empty() {
            core.balancer.pick(ctx, &mut rng, available)
        } else {
            core.balancer
                .pick_for_retry(ctx, &mut rng, available, tried)
        };
        if id.is_none()
            && class.is_priority()
            && !core.endpoints.is_empty()
            && !matches!(self.policy.load_balancer, LoadBalancer::Passthrough)
            && self.try_bypass(class, BypassKind::Outlier, ctx.now)
        {
            id = core.balancer.pick(ctx, &mut rng, |_| true);
        }
        let endpoint = id.and_then(|id| core.endpoints.get(&id).cloned());
        if let Some(ep) = &endpoint {
            core.balancer.on_start(ep.addr());
        }
        drop(rng);
        publish(&self.name, events);
        endpoint.map(|endpoint| InFlight {
            cluster: self.clone(),
            endpoint,
            started: Instant::now(),
            done: false,
        })
    }

    fn finish(
        &self,
        addr: SocketAddr,
        rtt: Option<Duration>,
        result: Option<HostResult>,
        now: Instant,
    ) {
        let event = {
            let mut core = self.lock();
            core.balancer.on_end(addr, rtt, now);
            match (core.outlier.as_mut(), result) {
                (Some(o), Some(r)) => {
                    if matches!(r, HostResult::Http(_)) {
                        // The connection worked: with split local-origin errors this resets
                        // the host's consecutive local failures (no-op without the split).
                        o.record(addr, HostResult::Local(LocalOrigin::Success), now);
                    }
                    o.record(addr, r, now)
                }
                _ => None,
            }
        };
        publish(&self.name, event);
    }

    /// Asks the audited bypass; false when bypassing is off, the class may not, or the
    /// window's allowance is spent.
    pub fn try_bypass(&self, class: PriorityClass, kind: BypassKind, now: Instant) -> bool {
        self.bypass.as_ref().is_some_and(|b| {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_bypass(class, kind, now)
                .is_ok()
        })
    }

    /// Records an original request in the retry budget.
    pub fn deposit(&self, now: Instant) {
        if let Some(b) = &self.retry_budget {
            b.deposit(now);
        }
    }

    /// Takes one retry from the time-windowed budget, if the cluster has one.
    pub fn withdraw_retry(&self, now: Instant) -> bool {
        self.retry_budget
            .as_ref()
            .is_none_or(|b| b.try_withdraw(now))
    }

    /// Whether outlier detection currently ejects `addr`.
    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        self.lock()
            .outlier
            .as_ref()
            .is_some_and(|o| o.is_ejected(addr))
    }

    fn sweep_due(&self) -> Option<Instant> {
        self.lock()
            .outlier
            .as_ref()
            .map(OutlierDetector::next_sweep)
    }

    fn sweep(&self, now: Instant) {
        let events = {
            let mut core = self.lock();
            match core.outlier.as_mut() {
                Some(o) if now >= o.next_sweep() => o.sweep(now),
                _ => Vec::new(),
            }
        };
        publish(&self.name, events);
    }

    /// Requests waiting in the priority queue for a request slot.
    pub fn queued(&self) -> usize {
        self.admit.queued()
    }

    /// Admission for one request of `class`; see [`admit`].
    pub async fn admit(&self, class: PriorityClass, http1: bool) -> Result<Admission, Refusal> {
        self.admit.admit(self, class, http1).await
    }
}

fn publish(cluster: &Arc<str>, events: impl IntoIterator<Item = OutlierEvent>) {
    for event in events {
        // No subscriber is not an error: the detector already logged and counted the event.
        let _ = channel().send(ClusterEvent {
            cluster: cluster.clone(),
            event,
        });
    }
}

/// Sweeps the detector of one cluster at each `next_sweep` until the cluster is dropped
/// (replaced by a reload with a different policy, or removed).
async fn sweep_task(state: Weak<ClusterState>) {
    loop {
        let Some(due) = state.upgrade().and_then(|s| s.sweep_due()) else {
            return;
        };
        tokio::time::sleep_until(due.into()).await;
        let Some(s) = state.upgrade() else { return };
        s.sweep(Instant::now());
    }
}
