//! Admission stage: the circuit breaker (connection-pool limits as RAII permits), the priority
//! queue that serves critical and emergency traffic first and sheds standard traffic first, and
//! the bounded, audited breaker bypass for emergency classes.
//!
//! Nothing here waits: every call answers at once with a permit, a queue ticket or a typed
//! refusal whose label goes in `x-jalin-overflow` and the overflow metric.

mod breaker;
mod bypass;
mod priority;

pub use breaker::{Breaker, Limits, OVERFLOW_HEADER, OVERFLOW_METRIC, Overflow, Permit};
pub use bypass::{BYPASS_METRIC, BypassAudit, BypassDenied, BypassKind, BypassLimiter};
pub use priority::{Offer, PriorityQueue, Released, Shed, Ticket};
