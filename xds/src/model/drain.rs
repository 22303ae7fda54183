//! The proxy's shutdown drain bounds: one definition for the proxy, which takes the drain as
//! `--drain-duration`, and the control plane's injector, which renders that flag, so the injector
//! never renders a drain the proxy refuses.

use std::time::Duration;

/// The drain when neither the mesh, the pod nor `--drain-duration` sets one: under Kubernetes'
/// default 30 s termination grace period, so a pod's defaults fit.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(25);

/// The longest drain: a drain is a bounded wait like every other, and a pod that needs more than
/// ten minutes to finish its requests needs a different shutdown, not a longer one (Istio caps
/// its drain at one hour; Kubernetes must also grant the time as `terminationGracePeriodSeconds`).
pub const MAX_DRAIN: Duration = Duration::from_secs(600);
