//! Waiting for a request's intended start with sub-millisecond precision.
//!
//! tokio's timer wheel has 1 ms granularity, so a request due at t would leave up to 1 ms late and
//! the schedule's own jitter would swamp the ~100 µs latencies this harness measures. The precise
//! pacer arms a Linux `timerfd` (nanosecond resolution, no timer slack) and waits for it through
//! tokio's reactor. The coarse pacer uses tokio's timer; tests use it with a paused clock.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// A `TimerFd` that tokio's `AsyncFd` can register.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Waits until an instant: precisely (timerfd) or coarsely (tokio's timer).
pub struct Pacer {
    inner: Inner,
}

enum Inner {
    /// tokio's timer: 1 ms granularity; follows a paused test clock.
    Coarse,
    /// A timerfd, and the deadline it is armed for (re-arming is skipped for the same deadline).
    Precise {
        /// The registered timer.
        fd: Box<AsyncFd<Fd>>,
        /// The deadline the timer is armed for.
        armed: Option<Instant>,
    },
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Coarse => f.write_str("Pacer::Coarse"),
            Inner::Precise { armed, .. } => write!(f, "Pacer::Precise({armed:?})"),
        }
    }
}

impl Pacer {
    /// A pacer on tokio's timer: 1 ms granularity, follows a paused test clock.
    pub fn coarse() -> Self {
        Self {
            inner: Inner::Coarse,
        }
    }

    /// A precise pacer. Must be called inside a tokio runtime with I/O enabled.
    pub fn precise() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // SAFETY: `Fd` owns the timer's file descriptor (an `OwnedFd` inside `TimerFd`), so the
        // descriptor stays open, and `as_raw_fd` returns the same one, for as long as the
        // `AsyncFd` owns the `Fd`.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            inner: Inner::Precise {
                fd: Box::new(fd),
                armed: None,
            },
        })
    }

    /// Resolves at `deadline` (immediately if it has passed). Cancel-safe: dropping the future
    /// leaves the timer armed for the same deadline, and a stale expiry is re-checked against
    /// the clock.
    pub async fn wait_until(&mut self, deadline: Instant) -> io::Result<()> {
        match &mut self.inner {
            Inner::Coarse => {
                tokio::time::sleep_until(deadline).await;
                Ok(())
            }
            Inner::Precise { fd, armed } => loop {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(());
                }
                if *armed != Some(deadline) {
                    let wait = deadline - now;
                    fd.get_ref()
                        .0
                        .set(
                            Expiration::OneShot(TimeSpec::from_duration(wait)),
                            TimerSetTimeFlags::empty(),
                        )
                        .map_err(io::Error::from)?;
                    *armed = Some(deadline);
                }
                let mut guard = fd.readable().await?;
                match guard.try_io(|inner| inner.get_ref().0.wait().map_err(io::Error::from)) {
                    Ok(Ok(())) => *armed = None,
                    Ok(Err(e)) => return Err(e),
                    // Spurious readiness: cleared by try_io; loop and wait again.
                    Err(_would_block) => {}
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn precise_pacer_never_returns_before_the_deadline() {
        let mut pacer = Pacer::precise().unwrap();
        let start = Instant::now();
        for i in 1..=20u64 {
            let deadline = start + Duration::from_micros(250 * i);
            pacer.wait_until(deadline).await.unwrap();
            assert!(Instant::now() >= deadline);
        }
        // A deadline in the past returns at once, even with a timer armed elsewhere.
        pacer.wait_until(start).await.unwrap();
    }

    #[tokio::test]
    async fn precise_pacer_survives_a_cancelled_wait() {
        let mut pacer = Pacer::precise().unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        // Cancel a wait for a far deadline; then a near one must still fire.
        let cancelled = tokio::time::timeout(Duration::ZERO, pacer.wait_until(far)).await;
        assert!(cancelled.is_err());
        let near = Instant::now() + Duration::from_micros(100);
        pacer.wait_until(near).await.unwrap();
        assert!(Instant::now() >= near);
    }

    #[tokio::test(start_paused = true)]
    async fn coarse_pacer_follows_the_paused_clock() {
        let mut pacer = Pacer::coarse();
        let start = Instant::now();
        pacer
            .wait_until(start + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }
}
