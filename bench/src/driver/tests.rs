//! The connection loop against a fake server on a paused clock: arrival times and the correction
//! for coordinated omission.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::*;
use crate::schedule::{Rate, Schedule};

const MS: u64 = 1_000_000;
/// The request whose response the fake server holds back.
const STALL_AT: u64 = 10;
/// How long the server holds it (virtual time).
const STALL: Duration = Duration::from_millis(50);

type Reply = oneshot::Sender<Outcome>;

/// A connection whose requests go to a fake server task; every dispatch is announced on `seen`.
struct FakeClient {
    server: mpsc::UnboundedSender<(u64, Reply)>,
    seen: mpsc::UnboundedSender<(u64, Instant)>,
    next: u64,
    max: usize,
}

impl Client for FakeClient {
    async fn dispatch(&mut self) -> PendingResponse {
        let (reply, response) = oneshot::channel();
        let index = self.next;
        self.next += 1;
        self.seen.send((index, Instant::now())).unwrap();
        self.server.send((index, reply)).unwrap();
        Box::pin(async move { response.await.unwrap_or(Outcome::Error("dropped".into())) })
    }

    fn max_in_flight(&self) -> usize {
        self.max
    }

    fn failed(&mut self) {}
}

/// Answers in order, at once, except that it stalls at `STALL_AT`: it announces the stall on
/// `stalled`, then holds that response and every later one until `release` fires.
fn fake_server(
    mut requests: mpsc::UnboundedReceiver<(u64, Reply)>,
    stalled: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        let mut stalled = Some(stalled);
        let mut release = Some(release);
        while let Some((index, reply)) = requests.recv().await {
            if index == STALL_AT {
                stalled.take().unwrap().send(()).unwrap();
                release.take().unwrap().await.unwrap();
            }
            let _ = reply.send(Outcome::Response {
                status: 200,
                body_bytes: 1,
            });
        }
    });
}

struct Run {
    recorder: tokio::task::JoinHandle<Recorder>,
    seen: mpsc::UnboundedReceiver<(u64, Instant)>,
    stalled: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
    start: Instant,
    schedule: Arc<Schedule>,
}

/// 100 requests at 1,000 req/s (one every 1 ms) on one connection, all measured.
fn start(max_in_flight: usize) -> Run {
    let (server_tx, server_rx) = mpsc::unbounded_channel();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (stalled_tx, stalled) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    fake_server(server_rx, stalled_tx, release_rx);
    let rate = Rate::per_second(1000.0).unwrap();
    let schedule =
        Arc::new(Schedule::new(rate, Duration::ZERO, Duration::from_millis(100), 1).unwrap());
    let start = Instant::now();
    let plan = OpenLoopPlan {
        schedule: schedule.clone(),
        connection: 0,
        start,
        hard_stop: start + Duration::from_secs(60),
        timeout: Duration::from_secs(30),
    };
    let mut client = FakeClient {
        server: server_tx,
        seen: seen_tx,
        next: 0,
        max: max_in_flight,
    };
    let recorder = tokio::spawn(async move {
        let mut pacer = Pacer::coarse();
        open_loop(&mut client, &mut pacer, &plan).await
    });
    Run {
        recorder,
        seen,
        stalled,
        release,
        start,
        schedule,
    }
}

/// Checks the latency histogram of a run whose request 10 (due at 10 ms) was held until 60 ms.
/// Requests 10..=59 were all *intended* during the stall, so each must show 60 ms minus its
/// intended start (50 ms down to 1 ms); the other 50 completed on time with zero latency.
fn assert_stall_is_visible_to_every_request_intended_during_it(recorder: &Recorder) {
    assert_eq!(recorder.ok(), 100);
    assert_eq!(recorder.accounted(), 100);
    let latency = recorder.latency();
    assert_eq!(latency.count_between(0, MS / 2), 50);
    assert_eq!(latency.count_between(MS / 2, 100 * MS), 50);
    let p = crate::record::Percentiles::of(latency);
    // The 90th of 100 sorted values is the 40th stalled one: 40 ms (within 0.1 % resolution).
    assert!((p.p90 - 40_000.0).abs() < 100.0, "p90 {} µs", p.p90);
    assert!((p.p99 - 49_000.0).abs() < 100.0, "p99 {} µs", p.p99);
    assert!((p.max - 50_000.0).abs() < 100.0, "max {} µs", p.max);
    assert!(p.p50 < 1.0, "p50 {} µs", p.p50);
}

#[tokio::test(start_paused = true)]
async fn http1_stall_delays_the_requests_queued_behind_it() {
    let mut run = start(1);
    run.stalled.await.unwrap();
    // The connection is stuck on request 10; move the clock on by the stall and release it.
    tokio::time::advance(STALL).await;
    run.release.send(()).unwrap();
    let recorder = run.recorder.await.unwrap();
    assert_stall_is_visible_to_every_request_intended_during_it(&recorder);

    // Service time (from the actual send) sees only the one stalled request: this is the number
    // coordinated omission would report.
    assert_eq!(recorder.service().count_between(MS / 2, 100 * MS), 1);
    // Requests 11..=59 left late, each by the rest of the stall.
    assert_eq!(recorder.send_delay().count_between(MS / 2, 100 * MS), 49);

    // No request left before its slot; the ones queued behind the stall left at 60 ms.
    while let Ok((index, at)) = run.seen.try_recv() {
        let intended = run.start + run.schedule.offset(index);
        assert!(at >= intended, "request {index} sent early");
        if (STALL_AT + 1..60).contains(&index) {
            assert_eq!(at - run.start, Duration::from_millis(60), "request {index}");
        } else {
            assert_eq!(at, intended, "request {index}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn http2_stall_holds_every_request_sent_during_it() {
    let mut run = start(100);
    run.stalled.await.unwrap();
    // Requests keep leaving on schedule while the server holds them: step the clock 1 ms at a
    // time and wait for each dispatch to be announced.
    loop {
        let (index, _) = run.seen.recv().await.unwrap();
        if index == STALL_AT {
            break;
        }
    }
    for expected in STALL_AT + 1..=60 {
        tokio::time::advance(Duration::from_millis(1)).await;
        let (index, at) = run.seen.recv().await.unwrap();
        assert_eq!(index, expected);
        assert_eq!(at, run.start + run.schedule.offset(index));
    }
    run.release.send(()).unwrap();
    let recorder = run.recorder.await.unwrap();
    assert_stall_is_visible_to_every_request_intended_during_it(&recorder);
    // Here they were all in flight during the stall, so service time sees it too.
    assert_eq!(recorder.service().count_between(MS / 2, 100 * MS), 50);
    // And every one of them left on time.
    assert_eq!(recorder.send_delay().max(), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_due_after_the_hard_stop_are_counted_unsent() {
    let (server_tx, server_rx) = mpsc::unbounded_channel();
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let (stalled_tx, stalled) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    fake_server(server_rx, stalled_tx, release_rx);
    let rate = Rate::per_second(1000.0).unwrap();
    let schedule =
        Arc::new(Schedule::new(rate, Duration::ZERO, Duration::from_millis(100), 1).unwrap());
    let start = Instant::now();
    let plan = OpenLoopPlan {
        schedule,
        connection: 0,
        start,
        hard_stop: start + Duration::from_millis(30),
        timeout: Duration::from_secs(30),
    };
    let mut client = FakeClient {
        server: server_tx,
        seen: seen_tx,
        next: 0,
        max: 1,
    };
    let task =
        tokio::spawn(async move { open_loop(&mut client, &mut Pacer::coarse(), &plan).await });
    stalled.await.unwrap();
    tokio::time::advance(Duration::from_millis(40)).await;
    release.send(()).unwrap();
    let recorder = task.await.unwrap();
    // Requests 0..=10 completed; 11..=99 were due but the stall outlasted the hard stop.
    assert_eq!(recorder.ok(), 11);
    assert_eq!(recorder.unsent(), 89);
    assert_eq!(recorder.accounted(), 100);
}
