//! The priority queue of one cluster: request slots with a share reserved for critical and
//! emergency traffic, and a bounded queue with a bounded wait for requests that find no slot.
//!
//! Invariants:
//! - standard traffic never takes one of the last `reserved` free slots;
//! - the reservation never takes the last slot standard traffic has: `reserved < capacity`, so a
//!   limit of 1 reserves nothing and a limit of 2 reserves at most one. Under overload a small
//!   cluster still serves emergency traffic first, through the queue's order;
//! - a freed slot goes to the most urgent waiter (critical, then emergency, then standard; FIFO
//!   within a class) whose deadline has not passed;
//! - the queue never holds more than `max_len` waiters: a full queue evicts its newest
//!   least-urgent waiter for a more urgent arrival, otherwise refuses the arrival — so standard
//!   traffic is shed first;
//! - no waiter stays past `now + max_wait`: [`PriorityQueue::expire`] returns them, and
//!   [`PriorityQueue::next_deadline`] tells the caller when to call it.
//!
//! Sans-I/O: the caller keeps a map from [`Ticket`] to whatever wakes the waiting request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use jalin_xds::model::route::PriorityClass;
use jalin_xds::model::traffic::PriorityPolicy;

/// Identifies a queued request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Why a request was refused or dropped from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Shed {
    /// The queue was full of requests at least as urgent.
    #[error("priority queue full")]
    QueueFull,
    /// A more urgent request took this one's place in a full queue.
    #[error("evicted from the priority queue by more urgent traffic")]
    Evicted,
    /// The request waited `max_wait` without getting a slot.
    #[error("waited too long in the priority queue")]
    Timeout,
}

impl Shed {
    /// Stable label for `x-jalin-overflow` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "priorityQueueFull",
            Self::Evicted => "priorityQueueEvicted",
            Self::Timeout => "priorityQueueTimeout",
        }
    }
}

/// The answer to an arriving request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// A slot is held; call [`PriorityQueue::release`] when the request ends.
    Granted,
    /// Wait for `ticket` to be granted, at most until `deadline`. `evicted` is a waiter that was
    /// dropped to make room and must be answered with 503.
    Queued {
        ticket: Ticket,
        deadline: Instant,
        evicted: Option<Ticket>,
    },
    /// Refused at once.
    Rejected(Shed),
}

/// What a released slot (or an expiry sweep) decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Waiters that now hold a slot.
    pub granted: Vec<Ticket>,
    /// Waiters whose deadline passed: answer 503 [`Shed::Timeout`].
    pub expired: Vec<Ticket>,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    ticket: Ticket,
    deadline: Instant,
}

/// Slots and waiters of one cluster.
#[derive(Debug)]
pub struct PriorityQueue {
    capacity: u32,
    reserved: u32,
    in_use: u32,
    max_len: usize,
    max_wait: Duration,
    queues: [VecDeque<Waiter>; 3],
    next_ticket: u64,
}

fn class_index(c: PriorityClass) -> usize {
    match c {
        PriorityClass::Critical => 0,
        PriorityClass::Emergency => 1,
        PriorityClass::Standard => 2,
    }
}

const CLASSES: [PriorityClass; 3] = [
    PriorityClass::Critical,
    PriorityClass::Emergency,
    PriorityClass::Standard,
];

impl PriorityQueue {
    /// `capacity` request slots (e.g. `http2MaxRequests`), `reserved` of them for critical and
    /// emergency traffic — at most `capacity - 1`, so standard traffic always keeps one slot.
    ///
    /// A reservation of every slot would make the cluster refuse standard traffic for good, which
    /// no percentage means: Envoy's priority thresholds (and Istio, which sets only the default
    /// priority's) are limits a class may reach, never a share that locks another class out.
    pub fn new(capacity: u32, reserved: u32, max_len: u32, max_wait: Duration) -> Self {
        Self {
            capacity,
            reserved: reserved.min(capacity.saturating_sub(1)),
            in_use: 0,
            max_len: usize::try_from(max_len).unwrap_or(usize::MAX),
            max_wait,
            queues: Default::default(),
            next_ticket: 0,
        }
    }

    /// From the cluster's priority policy: `reserved_percent` of `capacity`, rounded up so any
    /// non-zero share reserves at least one slot, and capped by [`PriorityQueue::new`] so
    /// standard traffic keeps at least one (a limit of 1 reserves nothing).
    pub fn from_policy(capacity: u32, policy: &PriorityPolicy) -> Self {
        let reserved =
            (u64::from(capacity) * u64::from(policy.reserved_percent.min(100))).div_ceil(100);
        Self::new(
            capacity,
            u32::try_from(reserved).unwrap_or(capacity),
            policy.max_queue_len,
            Duration::from_millis(policy.max_queue_wait_ms),
        )
    }

    /// Slots held.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Waiters queued, all classes.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    fn can_take(&self, class: PriorityClass) -> bool {
        let free = self.capacity.saturating_sub(self.in_use);
        if class.is_priority() {
            free > 0
        } else {
            free > self.reserved
        }
    }

    /// A request of `class` arrives at `now`.
    pub fn offer(&mut self, class: PriorityClass, now: Instant) -> Offer {
        // Waiters of this class or a more urgent one keep their place in line.
        let ahead = self.queues[..=class_index(class)]
            .iter()
            .any(|q| !q.is_empty());
        if !ahead && self.can_take(class) {
            self.in_use += 1;
            return Offer::Granted;
        }
        let mut evicted = None;
        if self.queued() >= self.max_len {
            // Evict the newest waiter of the least urgent class below this one.
            let victim = (class_index(class) + 1..CLASSES.len())
                .rev()
                .find(|&i| !self.queues[i].is_empty());
            match victim.and_then(|i| self.queues[i].pop_back()) {
                Some(w) => evicted = Some(w.ticket),
                None => return Offer::Rejected(Shed::QueueFull),
            }
        }
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        let deadline = now + self.max_wait;
        self.queues[class_index(class)].push_back(Waiter { ticket, deadline });
        Offer::Queued {
            ticket,
            deadline,
            evicted,
        }
    }

    /// A request holding a slot ended at `now`: the slot goes to the most urgent live waiter.
    pub fn release(&mut self, now: Instant) -> Released {
        self.in_use = self.in_use.saturating_sub(1);
        let mut out = Released {
            granted: Vec::new(),
            expired: self.drain_expired(now),
        };
        self.grant(&mut out.granted);
        out
    }

    /// Drops every waiter whose deadline has passed at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Ticket> {
        self.drain_expired(now)
    }

    /// A waiter gave up (client went away); true when it was still queued.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        for q in &mut self.queues {
            if let Some(i) = q.iter().position(|w| w.ticket == ticket) {
                q.remove(i);
                return true;
            }
        }
        false
    }

    /// The earliest waiter deadline, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|w| w.deadline))
            .min()
    }

    fn drain_expired(&mut self, now: Instant) -> Vec<Ticket> {
        let mut expired = Vec::new();
        for q in &mut self.queues {
            // FIFO with one max_wait: deadlines are ordered within a class.
            while q.front().is_some_and(|w| w.deadline <= now) {
                if let Some(w) = q.pop_front() {
                    expired.push(w.ticket);
                }
            }
        }
        expired
    }

    fn grant(&mut self, granted: &mut Vec<Ticket>) {
        'slots: loop {
            for class in CLASSES {
                let i = class_index(class);
                if self.can_take(class)
                    && let Some(w) = self.queues[i].pop_front()
                {
                    self.in_use += 1;
                    granted.push(w.ticket);
                    continue 'slots;
                }
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PriorityClass::{Critical, Emergency, Standard};
    use jalin_xds::model::traffic::UNLIMITED;

    fn queued(o: Offer) -> Ticket {
        match o {
            Offer::Queued { ticket, .. } => ticket,
            other => panic!("expected queued, got {other:?}"),
        }
    }

    #[test]
    fn standard_cannot_take_reserved_slots() {
        let t0 = Instant::now();
        let mut q = PriorityQueue::new(4, 1, 10, Duration::from_secs(1));
        for _ in 0..3 {
            assert_eq!(q.offer(Standard, t0), Offer::Granted);
        }
        assert!(
            matches!(q.offer(Standard, t0), Offer::Queued { .. }),
            "last slot is reserved"
        );
        assert_eq!(
            q.offer(Emergency, t0),
            Offer::Granted,
            "emergency takes the reserved slot"
        );
        assert_eq!(q.in_use(), 4);
    }

    #[test]
    fn emergency_served_before_standard_under_overload() {
        let t0 = Instant::now();
        let mut q = PriorityQueue::new(2, 0, 10, Duration::from_secs(5));
        assert_eq!(q.offer(Standard, t0), Offer::Granted);
        assert_eq!(q.offer(Standard, t0), Offer::Granted);
        let s1 = queued(q.offer(Standard, t0));
        let s2 = queued(q.offer(Standard, t0));
        let e1 = queued(q.offer(Emergency, t0));
        let c1 = queued(q.offer(Critical, t0));
        let later = t0 + Duration::from_millis(10);
        assert_eq!(q.release(later).granted, vec![c1], "critical first");
        assert_eq!(q.release(later).granted, vec![e1], "then emergency");
        assert_eq!(q.release(later).granted, vec![s1], "then standard, FIFO");
        assert_eq!(q.release(later).granted, vec![s2]);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn standard_is_shed_first_when_the_queue_is_full() {
        let t0 = Instant::now();
        let mut q = PriorityQueue::new(1, 0, 2, Duration::from_secs(5));
        assert_eq!(q.offer(Standard, t0), Offer::Granted);
        let s1 = queued(q.offer(Standard, t0));
        let s2 = queued(q.offer(Standard, t0));
        assert_eq!(
            q.offer(Standard, t0),
            Offer::Rejected(Shed::QueueFull),
            "standard never evicts standard"
        );
        let Offer::Queued {
            ticket: e1,
            evicted,
            ..
        } = q.offer(Emergency, t0)
        else {
            panic!()
        };
        assert_eq!(evicted, Some(s2), "newest standard evicted for emergency");
        let Offer::Queued {
            ticket: e2,
            evicted,
            ..
        } = q.offer(Emergency, t0)
        else {
            panic!()
        };
        assert_eq!(evicted, Some(s1));
        assert_eq!(
            q.offer(Emergency, t0),
            Offer::Rejected(Shed::QueueFull),
            "queue of emergencies is full"
        );
        let Offer::Queued {
            ticket: c1,
            evicted,
            ..
        } = q.offer(Critical, t0)
        else {
            panic!()
        };
        assert_eq!(evicted, Some(e2), "critical evicts the newest emergency");
        assert_eq!(q.release(t0).granted, vec![c1], "critical granted first");
        assert_eq!(q.release(t0).granted, vec![e1]);
    }

    #[test]
    fn bounded_wait() {
        let t0 = Instant::now();
        let mut q = PriorityQueue::new(1, 0, 10, Duration::from_millis(100));
        assert_eq!(q.offer(Standard, t0), Offer::Granted);
        let Offer::Queued {
            ticket: a,
            deadline,
            ..
        } = q.offer(Standard, t0)
        else {
            panic!()
        };
        assert_eq!(deadline, t0 + Duration::from_millis(100));
        let b = queued(q.offer(Emergency, t0 + Duration::from_millis(50)));
        assert_eq!(q.next_deadline(), Some(deadline));
        assert!(q.expire(t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(q.expire(t0 + Duration::from_millis(100)), vec![a]);
        let r = q.release(t0 + Duration::from_millis(200));
        assert_eq!(r.expired, vec![b], "expired waiters are never granted");
        assert!(r.granted.is_empty());
        assert_eq!(q.in_use(), 0);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn arrivals_do_not_jump_the_line_and_cancel_works() {
        let t0 = Instant::now();
        let mut q = PriorityQueue::new(1, 0, 10, Duration::from_secs(1));
        assert_eq!(q.offer(Emergency, t0), Offer::Granted);
        let e = queued(q.offer(Emergency, t0));
        assert!(q.cancel(e));
        assert!(!q.cancel(e));
        let r = q.release(t0);
        assert!(r.granted.is_empty());
        assert_eq!(q.offer(Standard, t0), Offer::Granted);
        let s = queued(q.offer(Standard, t0));
        let r = q.release(t0);
        assert_eq!(r.granted, vec![s]);
        assert_eq!(q.in_use(), 1);
    }

    #[test]
    fn from_policy_reserves_a_share() {
        let q = PriorityQueue::from_policy(100, &PriorityPolicy::default());
        assert_eq!(q.reserved, 10);
        let q = PriorityQueue::from_policy(5, &PriorityPolicy::default());
        assert_eq!(q.reserved, 1, "rounded up");
    }

    /// Under the default policy (10 %, rounded up), a cluster limited to `capacity` slots admits
    /// `capacity - reserved` standard requests at once, gives the reserved slots to emergency
    /// traffic, serves queued emergency requests before standard ones that queued earlier, and
    /// still admits the queued standard requests once enough slots are free.
    fn small_limits_admit_standard_and_serve_emergency_first(capacity: u32, reserved: u32) {
        let t0 = Instant::now();
        let mut q = PriorityQueue::from_policy(capacity, &PriorityPolicy::default());
        assert_eq!(q.reserved, reserved, "capacity {capacity}");
        for i in 0..capacity - reserved {
            assert_eq!(
                q.offer(Standard, t0),
                Offer::Granted,
                "capacity {capacity}: standard request {i} admitted"
            );
        }
        let s1 = queued(q.offer(Standard, t0));
        for i in 0..reserved {
            assert_eq!(
                q.offer(Emergency, t0),
                Offer::Granted,
                "capacity {capacity}: emergency takes reserved slot {i}"
            );
        }
        assert_eq!(q.in_use(), capacity);
        let s2 = queued(q.offer(Standard, t0));
        let e1 = queued(q.offer(Emergency, t0));
        let later = t0 + Duration::from_millis(10);
        assert_eq!(
            q.release(later).granted,
            vec![e1],
            "capacity {capacity}: the queued emergency request goes first"
        );
        // Standard traffic needs more than `reserved` free slots.
        for _ in 0..reserved {
            assert_eq!(q.release(later), Released::default());
        }
        assert_eq!(q.release(later).granted, vec![s1], "capacity {capacity}");
        assert_eq!(q.release(later).granted, vec![s2], "capacity {capacity}");
        assert_eq!(q.queued(), 0);
        assert_eq!(q.in_use(), capacity - reserved);
    }

    #[test]
    fn limit_1_reserves_nothing() {
        small_limits_admit_standard_and_serve_emergency_first(1, 0);
    }

    #[test]
    fn limit_2_keeps_one_slot_for_standard() {
        small_limits_admit_standard_and_serve_emergency_first(2, 1);
    }

    #[test]
    fn limit_3_reserves_one() {
        small_limits_admit_standard_and_serve_emergency_first(3, 1);
    }

    #[test]
    fn limit_10_reserves_one() {
        small_limits_admit_standard_and_serve_emergency_first(10, 1);
    }

    #[test]
    fn limit_1024_reserves_a_rounded_up_tenth() {
        small_limits_admit_standard_and_serve_emergency_first(1024, 103);
    }

    #[test]
    fn the_reservation_never_takes_every_slot() {
        for capacity in [0, 1, 2, 3, 10, 1024, UNLIMITED] {
            let q = PriorityQueue::from_policy(capacity, &reserving(100));
            assert_eq!(
                q.reserved,
                capacity.saturating_sub(1),
                "capacity {capacity}"
            );
            let q = PriorityQueue::new(capacity, u32::MAX, 1, Duration::from_secs(1));
            assert_eq!(
                q.reserved,
                capacity.saturating_sub(1),
                "capacity {capacity}"
            );
        }
        let mut q = PriorityQueue::from_policy(2, &reserving(100));
        assert_eq!(q.offer(Standard, Instant::now()), Offer::Granted);
        assert_eq!(q.offer(Emergency, Instant::now()), Offer::Granted);
    }

    #[test]
    fn zero_capacity_admits_nothing() {
        let t0 = Instant::now();
        let mut q = PriorityQueue::from_policy(0, &PriorityPolicy::default());
        assert!(matches!(q.offer(Emergency, t0), Offer::Queued { .. }));
        assert!(matches!(q.offer(Standard, t0), Offer::Queued { .. }));
    }

    #[test]
    fn default_limit_is_effectively_unlimited() {
        let t0 = Instant::now();
        let mut q = PriorityQueue::from_policy(UNLIMITED, &PriorityPolicy::default());
        assert_eq!(
            q.reserved,
            UNLIMITED / 10 + 1,
            "10 % rounded up, no overflow"
        );
        for _ in 0..10_000 {
            assert_eq!(q.offer(Standard, t0), Offer::Granted);
        }
        assert_eq!(q.offer(Emergency, t0), Offer::Granted);
        assert_eq!(q.in_use(), 10_001);
        assert_eq!(q.queued(), 0);
    }

    fn reserving(percent: u32) -> PriorityPolicy {
        PriorityPolicy {
            reserved_percent: percent,
            ..PriorityPolicy::default()
        }
    }
}
