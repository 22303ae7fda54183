//! A fake Kubernetes API server for tests: a real HTTP/1.1 server on loopback that serves enough
//! of the Kubernetes REST API for kube's client and `watcher` — discovery, paginated LIST with a
//! `resourceVersion`, streaming WATCH with replay from a resourceVersion and `410 Gone` once it is
//! compacted — for core/v1 Services, Pods and Namespaces, discovery.k8s.io/v1 EndpointSlices and
//! the Istio custom resources. Tests change objects through [`FakeApiServer`]'s methods and force
//! watch restarts with [`FakeApiServer::close_watches`], [`FakeApiServer::expire_watches`],
//! [`FakeApiServer::compact`] and [`FakeApiServer::pause_watches`].
//!
//! Invariants: every change bumps one cluster-wide resourceVersion (as etcd does) and is recorded
//! in the history; a WATCH from resourceVersion `rv` replays every change after `rv`, unless `rv`
//! is older than the compaction point, in which case it gets one `ERROR` event with code 410.

mod serve;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::kinds::{NETWORKING_GROUP, ResourceKind, SECURITY_GROUP, TELEMETRY_GROUP};

/// Bound of the live change fan-out; a watch that falls further behind is closed and resumes.
const CHANGE_FANOUT: usize = 4096;

/// Why the fake refused a test's request.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The object cannot be stored.
    #[error("fake API server: {0}")]
    Invalid(String),
    /// The server could not bind its listener.
    #[error("fake API server: cannot listen on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
}

/// One API group the fake serves, with its versions.
#[derive(Clone, Debug)]
pub struct GroupDef {
    /// The group name (empty for core).
    pub name: &'static str,
    /// Served versions, preferred first.
    pub versions: Vec<&'static str>,
}

/// A resource type the fake serves.
#[derive(Clone, Debug)]
pub(crate) struct ResourceDef {
    pub group: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

/// A recorded change.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub group: &'static str,
    pub plural: &'static str,
    pub namespace: String,
    pub event_type: &'static str,
    pub object: Value,
}

/// A command to the open watch streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CloseCommand {
    /// Bumped on every close.
    pub generation: u64,
    /// Send a `410 Gone` ERROR event before closing.
    pub gone: bool,
}

pub(crate) type ObjectId = (&'static str, &'static str, String, String);

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub objects: BTreeMap<ObjectId, Value>,
    pub history: Vec<Change>,
    pub rv: u64,
    pub compacted: u64,
    pub next_uid: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub groups: Vec<GroupDef>,
    pub resources: Vec<ResourceDef>,
    pub inner: Mutex<Inner>,
    pub changes: broadcast::Sender<Arc<Change>>,
    pub close: watch::Sender<CloseCommand>,
    pub paused: watch::Sender<bool>,
    pub watches_served: watch::Sender<u64>,
    pub lists_served: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn group(&self, name: &str) -> Option<&GroupDef> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub(crate) fn resource(&self, group: &str, plural: &str) -> Option<&ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .filter(|_| self.group(group).is_some())
    }
}

/// Builds a [`FakeApiServer`] with a chosen set of Istio groups and versions.
#[derive(Clone, Debug)]
pub struct FakeApiServerBuilder {
    groups: Vec<GroupDef>,
}

impl Default for FakeApiServerBuilder {
    fn default() -> Self {
        Self {
            groups: vec![
                GroupDef {
                    name: "",
                    versions: vec!["v1"],
                },
                GroupDef {
                    name: "discovery.k8s.io",
                    versions: vec!["v1"],
                },
                GroupDef {
                    name: SECURITY_GROUP,
                    versions: vec!["v1", "v1beta1"],
                },
                GroupDef {
                    name: NETWORKING_GROUP,
                    versions: vec!["v1", "v1beta1", "v1alpha3"],
                },
                GroupDef {
                    name: TELEMETRY_GROUP,
                    versions: vec!["v1", "v1alpha1"],
                },
            ],
        }
    }
}

impl FakeApiServerBuilder {
    /// Serves `group` at `versions` (preferred first) instead of the default versions.
    pub fn group_versions(mut self, group: &'static str, versions: &[&'static str]) -> Self {
        self.groups.retain(|g| g.name != group);
        self.groups.push(GroupDef {
            name: group,
            versions: versions.to_vec(),
        });
        self
    }

    /// Does not serve `group` at all, as when its CRDs are not installed.
    pub fn without_group(mut self, group: &str) -> Self {
        self.groups.retain(|g| g.name != group);
        self
    }

    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(self) -> Result<FakeApiServer, FakeError> {
        let resources = ResourceKind::ALL
            .into_iter()
            .map(|k| ResourceDef {
                group: k.group(),
                plural: k.plural(),
                kind: k.kind_name(),
                namespaced: k.namespaced(),
            })
            .collect();
        let shared = Arc::new(Shared {
            groups: self.groups,
            resources,
            inner: Mutex::new(Inner::default()),
            changes: broadcast::channel(CHANGE_FANOUT).0,
            close: watch::channel(CloseCommand::default()).0,
            paused: watch::channel(false).0,
            watches_served: watch::channel(0).0,
            lists_served: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve::accept(listener, Arc::clone(&shared)));
        Ok(FakeApiServer { addr, shared, task })
    }
}

/// A running fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.close_watches();
    }
}

impl FakeApiServer {
    /// A builder with the default groups (Istio groups at v1 preferred, plus older versions).
    pub fn builder() -> FakeApiServerBuilder {
        FakeApiServerBuilder::default()
    }

    /// Starts a server with the default groups.
    pub async fn start() -> Result<Self, FakeError> {
        Self::builder().start().await
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client pointed at this server.
    pub fn client(&self) -> Result<kube::Client, FakeError> {
        let uri = self
            .url()
            .parse::<http::Uri>()
            .map_err(|e| FakeError::Invalid(e.to_string()))?;
        kube::Client::try_from(kube::Config::new(uri))
            .map_err(|e| FakeError::Invalid(e.to_string()))
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Creates or replaces an object (any serializable Kubernetes object with `apiVersion`,
    /// `kind` and `metadata.name`); returns its new resourceVersion.
    pub fn apply<T: Serialize>(&self, object: &T) -> Result<String, FakeError> {
        let value = serde_json::to_value(object).map_err(|e| FakeError::Invalid(e.to_string()))?;
        self.apply_value(value)
    }

    fn apply_value(&self, mut value: Value) -> Result<String, FakeError> {
        let (def, namespace, name) = self.identify(&value)?;
        let mut inner = self.shared.lock();
        let id = (def.group, def.plural, namespace.clone(), name);
        let existing = inner.objects.get(&id).cloned();
        inner.rv += 1;
        let rv = inner.rv;
        let uid = match existing
            .as_ref()
            .and_then(|e| e.pointer("/metadata/uid"))
            .and_then(Value::as_str)
        {
            Some(uid) => uid.to_string(),
            None => {
                inner.next_uid += 1;
                format!("00000000-0000-0000-0000-{:012}", inner.next_uid)
            }
        };
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.insert("uid".into(), json!(uid));
        }
        inner.objects.insert(id, value.clone());
        let event_type = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(&mut inner, def, namespace, event_type, value);
        Ok(rv.to_string())
    }

    /// Deletes `kind` `namespace/name` (namespace empty for a Namespace); returns the deletion's
    /// resourceVersion, or None when there was no such object.
    pub fn delete(&self, kind: ResourceKind, namespace: &str, name: &str) -> Option<String> {
        let def = self.shared.resource(kind.group(), kind.plural())?.clone();
        let namespace = if def.namespaced { namespace } else { "" };
        let mut inner = self.shared.lock();
        let mut value = inner.objects.remove(&(
            def.group,
            def.plural,
            namespace.to_string(),
            name.to_string(),
        ))?;
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        self.record(&mut inner, &def, namespace.to_string(), "DELETED", value);
        Some(rv.to_string())
    }

    /// The stored object `kind` `namespace/name`.
    pub fn get(&self, kind: ResourceKind, namespace: &str, name: &str) -> Option<Value> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        self.shared
            .lock()
            .objects
            .get(&(
                kind.group(),
                kind.plural(),
                namespace.to_string(),
                name.to_string(),
            ))
            .cloned()
    }

    /// `namespace/name` of every stored object of `kind`, sorted.
    pub fn names(&self, kind: ResourceKind) -> Vec<String> {
        self.shared
            .lock()
            .objects
            .keys()
            .filter(|(g, p, _, _)| *g == kind.group() && *p == kind.plural())
            .map(|(_, _, ns, name)| {
                if ns.is_empty() {
                    name.clone()
                } else {
                    format!("{ns}/{name}")
                }
            })
            .collect()
    }

    /// Ends every open watch stream (clients resume from their last resourceVersion).
    pub fn close_watches(&self) {
        self.shared.close.send_modify(|c| {
            c.generation += 1;
            c.gone = false;
        });
    }

    /// Forgets the history up to now: a watch resuming from an older resourceVersion gets
    /// `410 Gone` and must relist.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.compacted = inner.rv;
        inner.history.clear();
    }

    /// Compacts, sends every open watch an ERROR event with code 410 and closes it, as an API
    /// server does when a watcher falls too far behind.
    pub fn expire_watches(&self) {
        self.compact();
        self.shared.close.send_modify(|c| {
            c.generation += 1;
            c.gone = true;
        });
    }

    /// Holds new watch requests until the returned guard is dropped: the watch is "down" while
    /// the test changes objects.
    pub fn pause_watches(&self) -> WatchPause {
        self.shared.paused.send_replace(true);
        WatchPause {
            paused: self.shared.paused.clone(),
        }
    }

    /// Waits until at least `n` watch requests have been answered since start.
    pub async fn wait_watches_served(&self, n: u64) {
        let mut rx = self.shared.watches_served.subscribe();
        let _ = rx.wait_for(|served| *served >= n).await;
    }

    /// Number of watch requests answered since start.
    pub fn watches_served(&self) -> u64 {
        *self.shared.watches_served.borrow()
    }

    /// Number of list requests answered since start.
    pub fn lists_served(&self) -> u64 {
        *self.shared.lists_served.borrow()
    }

    fn identify(&self, value: &Value) -> Result<(&ResourceDef, String, String), FakeError> {
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| FakeError::Invalid("object has no apiVersion".into()))?;
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| FakeError::Invalid("object has no kind".into()))?;
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let def = self
            .shared
            .resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .filter(|_| self.shared.group(group).is_some())
            .ok_or_else(|| FakeError::Invalid(format!("{api_version} {kind} is not served")))?;
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| FakeError::Invalid("object has no metadata.name".into()))?;
        let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str);
        let namespace = match (def.namespaced, namespace) {
            (true, Some(ns)) => ns.to_string(),
            (true, None) => {
                return Err(FakeError::Invalid(format!(
                    "{kind} {name} has no metadata.namespace"
                )));
            }
            (false, _) => String::new(),
        };
        Ok((def, namespace, name.to_string()))
    }

    fn record(
        &self,
        inner: &mut Inner,
        def: &ResourceDef,
        namespace: String,
        event_type: &'static str,
        object: Value,
    ) {
        let change = Change {
            rv: inner.rv,
            group: def.group,
            plural: def.plural,
            namespace,
            event_type,
            object,
        };
        inner.history.push(change.clone());
        // Sent under the lock, so a watch that snapshots the history under the lock and then
        // subscribes sees every change exactly once.
        let _ = self.shared.changes.send(Arc::new(change));
    }
}

/// Keeps watch requests held while alive; see [`FakeApiServer::pause_watches`].
#[derive(Debug)]
pub struct WatchPause {
    paused: watch::Sender<bool>,
}

impl Drop for WatchPause {
    fn drop(&mut self) {
        self.paused.send_replace(false);
    }
}
