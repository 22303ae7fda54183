//! Shared harness of the Kubernetes source tests: a fake API server, a started source, and
//! bounded waits on the source's event channel.
#![allow(dead_code)]

use std::time::Duration;

use jalin_control::k8s::fake::FakeApiServer;
use jalin_control::k8s::{
    KubeSource, KubeSourceConfig, KubeSourceHandle, ObjectKey, ResourceKind, SourceEvent,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Safety net for one awaited event; generous because the machine is shared and the watcher
/// backs off (about 1 s) after a `410 Gone`.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Harness {
    pub fake: FakeApiServer,
    pub handle: KubeSourceHandle,
    pub events: mpsc::Receiver<SourceEvent>,
}

impl Harness {
    /// Starts a source against `fake` and waits for `Ready`, returning the events before it.
    pub async fn start(fake: FakeApiServer, config: KubeSourceConfig) -> (Self, Vec<SourceEvent>) {
        let source = KubeSource::new(fake.client().unwrap(), config);
        let (handle, events) = source.start().await.unwrap();
        let mut harness = Self {
            fake,
            handle,
            events,
        };
        let before = harness
            .until(|e| matches!(e, SourceEvent::Ready), "Ready")
            .await;
        (harness, before)
    }

    /// The next event, within [`EVENT_TIMEOUT`].
    pub async fn next(&mut self, what: &str) -> SourceEvent {
        match tokio::time::timeout(EVENT_TIMEOUT, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("source stopped while waiting for {what}"),
            Err(_) => panic!("no event within {EVENT_TIMEOUT:?} while waiting for {what}"),
        }
    }

    /// Events up to and excluding the first one that satisfies `done`.
    pub async fn until(
        &mut self,
        mut done: impl FnMut(&SourceEvent) -> bool,
        what: &str,
    ) -> Vec<SourceEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self.next(what).await;
            if done(&event) {
                return seen;
            }
            seen.push(event);
        }
    }

    /// The next event that is not a `WatchError`.
    pub async fn next_change(&mut self, what: &str) -> SourceEvent {
        loop {
            match self.next(what).await {
                SourceEvent::WatchError { .. } => {}
                event => return event,
            }
        }
    }

    /// Keys in the source's store for `kind`, as `ns/name` (or `name`), sorted.
    pub fn store_names(&self, kind: ResourceKind) -> Vec<String> {
        self.handle.read(|s| {
            s.of_kind(kind)
                .map(|o| {
                    let k = o.key();
                    if k.namespace.is_empty() {
                        k.name
                    } else {
                        format!("{}/{}", k.namespace, k.name)
                    }
                })
                .collect()
        })
    }
}

/// A short description of an event for assertions.
pub fn describe(event: &SourceEvent) -> String {
    match event {
        SourceEvent::Upsert(o) => format!("+{}", o.key()),
        SourceEvent::Delete { key, .. } => format!("-{key}"),
        SourceEvent::Ready => "ready".into(),
        SourceEvent::Relisted { kind } => format!("relisted {kind}"),
        SourceEvent::WatchError { kind, .. } => format!("error {kind}"),
    }
}

pub fn key(kind: ResourceKind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"istio-injection": "enabled"}}})
}

pub fn service(ns: &str, name: &str, ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "targetPort": 8080, "protocol": "TCP"}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": "10.96.0.20", "ports": ports, "selector": {"app": name}}})
}

pub fn pod(ns: &str, name: &str, app: &str, sa: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": app, "version": "v1"}},
           "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]},
           "status": {"podIP": ip}})
}

/// An EndpointSlice of `service` with one endpoint per `(pod, ip, ready)`, on port `http` 8080.
pub fn slice(ns: &str, name: &str, service: &str, endpoints: &[(&str, &str, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(pod, ip, ready)| {
            json!({"addresses": [ip], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}, "zone": "zone-a"})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": endpoints})
}

pub fn authorization_policy(ns: &str, name: &str, principals: &[&str]) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"selector": {"matchLabels": {"app": "case-api"}}, "action": "ALLOW",
                    "rules": [{"from": [{"source": {"principals": principals}}]}]}})
}
