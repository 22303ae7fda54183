//! The Kubernetes source's store and the I/O-free state machine that folds watcher events
//! (`Init`/`InitApply`/`InitDone`/`Apply`/`Delete`, per kind) into it and decides what to emit.
//!
//! Invariants:
//! - between a kind's `Init` and `InitDone` the store keeps that kind's previous contents; the
//!   listed objects replace them at `InitDone` in one step, so a relist never shows a half list;
//! - an object in the store but absent from a completed relist is reported deleted (it was deleted
//!   while the watch was down);
//! - an `Upsert` is emitted only when an object is new or its `resourceVersion` changed, so a
//!   relist of an unchanged cluster emits nothing but `Relisted`;
//! - `Ready` is emitted exactly once, after every expected kind completed its first list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::runtime::watcher::Event;

use super::kinds::{KubeObject, ObjectKey, ResourceKind, SharedObject};

/// What the Kubernetes source tells its consumer.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    /// An object was added or changed.
    Upsert(SharedObject),
    /// An object was deleted; `last` is its last known state.
    Delete {
        /// The deleted object's key.
        key: ObjectKey,
        /// The object as last seen.
        last: SharedObject,
    },
    /// Every watched kind completed its initial list: the store now holds a whole snapshot and the
    /// control plane may push. Emitted once.
    Ready,
    /// A kind was listed again after its watch restarted (after `Ready`); any difference from
    /// before was emitted as `Upsert`/`Delete` just before this event.
    Relisted {
        /// The relisted kind.
        kind: ResourceKind,
    },
    /// A watch failed; the watcher retries with backoff. Operators see why (e.g. missing RBAC).
    WatchError {
        /// The kind whose watch failed.
        kind: ResourceKind,
        /// What went wrong, with a hint.
        message: String,
    },
}

/// All objects the source has seen, by kind, namespace and name.
#[derive(Clone, Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, SharedObject>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The object with `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&SharedObject> {
        self.objects.get(key)
    }

    /// The object of `kind` named `namespace/name`.
    pub fn get_named(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Option<&SharedObject> {
        self.objects.get(&ObjectKey::new(kind, namespace, name))
    }

    /// All objects of `kind`, ordered by namespace and name.
    pub fn of_kind(&self, kind: ResourceKind) -> impl Iterator<Item = &SharedObject> + '_ {
        let start = ObjectKey::new(kind, "", "");
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, v)| v)
    }

    /// The keys of all objects of `kind`.
    pub fn keys_of_kind(&self, kind: ResourceKind) -> Vec<ObjectKey> {
        self.of_kind(kind).map(|o| o.key()).collect()
    }

    /// All objects, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &SharedObject)> + '_ {
        self.objects.iter()
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Inserts or replaces an object; returns the previous one.
    pub fn insert(&mut self, object: SharedObject) -> Option<SharedObject> {
        self.objects.insert(object.key(), object)
    }

    /// Removes an object; returns it.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<SharedObject> {
        self.objects.remove(key)
    }
}

/// Where one kind is in its list/watch cycle.
#[derive(Debug)]
enum KindSync {
    /// Not listed yet, and no list under way.
    Pending,
    /// A list is under way: the objects listed so far.
    Listing(BTreeMap<ObjectKey, SharedObject>),
    /// Listed; incremental events apply directly.
    Watching,
}

/// Folds per-kind watcher events into a [`Store`] and returns the events to emit. Free of I/O.
#[derive(Debug)]
pub struct Reconciler {
    kinds: BTreeMap<ResourceKind, KindSync>,
    listed_once: BTreeSet<ResourceKind>,
    ready: bool,
}

impl Reconciler {
    /// A reconciler that emits `Ready` once every kind in `expected` has been listed.
    pub fn new(expected: impl IntoIterator<Item = ResourceKind>) -> Self {
        Self {
            kinds: expected
                .into_iter()
                .map(|k| (k, KindSync::Pending))
                .collect(),
            listed_once: BTreeSet::new(),
            ready: false,
        }
    }

    /// Whether `Ready` has been emitted.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Emits `Ready` at once when no kind is expected (nothing to list); call once at start.
    pub fn start(&mut self, out: &mut Vec<SourceEvent>) {
        if self.kinds.is_empty() && !self.ready {
            self.ready = true;
            out.push(SourceEvent::Ready);
        }
    }

    /// Applies one watcher event for `kind` to `store`, pushing what to emit onto `out`.
    pub fn handle(
        &mut self,
        store: &mut Store,
        kind: ResourceKind,
        event: Event<KubeObject>,
        out: &mut Vec<SourceEvent>,
    ) {
        let sync = self.kinds.entry(kind).or_insert(KindSync::Pending);
        match event {
            Event::Init => *sync = KindSync::Listing(BTreeMap::new()),
            Event::InitApply(object) => {
                let object = Arc::new(object);
                match sync {
                    KindSync::Listing(buffer) => {
                        buffer.insert(object.key(), object);
                    }
                    // The watcher always sends Init first; treat a stray InitApply as a list start.
                    KindSync::Pending | KindSync::Watching => {
                        let mut buffer = BTreeMap::new();
                        buffer.insert(object.key(), object);
                        *sync = KindSync::Listing(buffer);
                    }
                }
            }
            Event::InitDone => {
                let listed = match std::mem::replace(sync, KindSync::Watching) {
                    KindSync::Listing(buffer) => buffer,
                    KindSync::Pending | KindSync::Watching => BTreeMap::new(),
                };
                replace_kind(store, kind, listed, out);
                let first = self.listed_once.insert(kind);
                if !first && self.ready {
                    out.push(SourceEvent::Relisted { kind });
                }
                if !self.ready && self.kinds.keys().all(|k| self.listed_once.contains(k)) {
                    self.ready = true;
                    out.push(SourceEvent::Ready);
                }
            }
            Event::Apply(object) => upsert(store, Arc::new(object), out),
            Event::Delete(object) => {
                let key = object.key();
                if let Some(last) = store.remove(&key) {
                    out.push(SourceEvent::Delete { key, last });
                }
            }
        }
    }
}

fn upsert(store: &mut Store, object: SharedObject, out: &mut Vec<SourceEvent>) {
    let unchanged = store
        .get(&object.key())
        .is_some_and(|old| same_version(old, &object));
    if !unchanged {
        store.insert(Arc::clone(&object));
        out.push(SourceEvent::Upsert(object));
    }
}

fn same_version(old: &KubeObject, new: &KubeObject) -> bool {
    let (a, b) = (old.resource_version(), new.resource_version());
    if a.is_empty() || b.is_empty() {
        old == new
    } else {
        a == b
    }
}

/// Replaces every object of `kind` in `store` by `listed`, emitting the difference.
fn replace_kind(
    store: &mut Store,
    kind: ResourceKind,
    mut listed: BTreeMap<ObjectKey, SharedObject>,
    out: &mut Vec<SourceEvent>,
) {
    for key in store.keys_of_kind(kind) {
        if !listed.contains_key(&key)
            && let Some(last) = store.remove(&key)
        {
            out.push(SourceEvent::Delete { key, last });
        }
    }
    for (_, object) in std::mem::take(&mut listed) {
        upsert(store, object, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, rv: &str) -> KubeObject {
        KubeObject::Service(Box::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }))
    }

    fn ns(name: &str, rv: &str) -> KubeObject {
        KubeObject::Namespace(Box::new(k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..Default::default()
        }))
    }

    fn names(out: &[SourceEvent]) -> Vec<String> {
        out.iter()
            .map(|e| match e {
                SourceEvent::Upsert(o) => format!("+{}@{}", o.key(), o.resource_version()),
                SourceEvent::Delete { key, .. } => format!("-{key}"),
                SourceEvent::Ready => "ready".into(),
                SourceEvent::Relisted { kind } => format!("relisted {kind}"),
                SourceEvent::WatchError { kind, .. } => format!("error {kind}"),
            })
            .collect()
    }

    #[test]
    fn ready_only_after_every_kind_listed() {
        let mut r = Reconciler::new([ResourceKind::Service, ResourceKind::Namespace]);
        let mut store = Store::new();
        let mut out = vec![];
        r.handle(&mut store, ResourceKind::Service, Event::Init, &mut out);
        r.handle(
            &mut store,
            ResourceKind::Service,
            Event::InitApply(svc("a", "1")),
            &mut out,
        );
        assert!(out.is_empty(), "nothing before InitDone");
        assert!(store.is_empty(), "a half list is not visible");
        r.handle(&mut store, ResourceKind::Service, Event::InitDone, &mut out);
        assert_eq!(names(&out), ["+Service/ns/a@1"]);
        assert!(!r.is_ready());
        out.clear();
        r.handle(&mut store, ResourceKind::Namespace, Event::Init, &mut out);
        r.handle(
            &mut store,
            ResourceKind::Namespace,
            Event::InitApply(ns("ns", "2")),
            &mut out,
        );
        r.handle(
            &mut store,
            ResourceKind::Namespace,
            Event::InitDone,
            &mut out,
        );
        assert_eq!(names(&out), ["+Namespace/ns@2", "ready"]);
        assert!(r.is_ready());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn relist_reports_deletions_changes_and_nothing_for_unchanged() {
        let mut r = Reconciler::new([ResourceKind::Service]);
        let mut store = Store::new();
        let mut out = vec![];
        for e in [
            Event::Init,
            Event::InitApply(svc("a", "1")),
            Event::InitApply(svc("b", "2")),
            Event::InitApply(svc("c", "3")),
            Event::InitDone,
        ] {
            r.handle(&mut store, ResourceKind::Service, e, &mut out);
        }
        out.clear();
        // Watch restarts: b was deleted, c changed, d added while disconnected.
        for e in [
            Event::Init,
            Event::InitApply(svc("a", "1")),
            Event::InitApply(svc("c", "7")),
            Event::InitApply(svc("d", "8")),
        ] {
            r.handle(&mut store, ResourceKind::Service, e, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(store.len(), 3, "old contents stay until InitDone");
        r.handle(&mut store, ResourceKind::Service, Event::InitDone, &mut out);
        assert_eq!(
            names(&out),
            [
                "-Service/ns/b",
                "+Service/ns/c@7",
                "+Service/ns/d@8",
                "relisted Service"
            ]
        );
        let keys: Vec<String> = store.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["Service/ns/a", "Service/ns/c", "Service/ns/d"]);
    }

    #[test]
    fn incremental_events_apply_directly_and_dedupe() {
        let mut r = Reconciler::new([ResourceKind::Service]);
        let mut store = Store::new();
        let mut out = vec![];
        r.handle(&mut store, ResourceKind::Service, Event::Init, &mut out);
        r.handle(&mut store, ResourceKind::Service, Event::InitDone, &mut out);
        assert_eq!(names(&out), ["ready"]);
        out.clear();
        r.handle(
            &mut store,
            ResourceKind::Service,
            Event::Apply(svc("a", "5")),
            &mut out,
        );
        r.handle(
            &mut store,
            ResourceKind::Service,
            Event::Apply(svc("a", "5")),
            &mut out,
        );
        r.handle(
            &mut store,
            ResourceKind::Service,
            Event::Apply(svc("a", "6")),
            &mut out,
        );
        r.handle(
            &mut store,
            ResourceKind::Service,
            Event::Delete(svc("a", "7")),
            &mut out,
        );
        r.handle(
            &mut store,
            ResourceKind::Service,
            Event::Delete(svc("zz", "8")),
            &mut out,
        );
        assert_eq!(
            names(&out),
            ["+Service/ns/a@5", "+Service/ns/a@6", "-Service/ns/a"]
        );
        assert!(store.is_empty());
    }

    #[test]
    fn nothing_to_watch_is_ready_at_once() {
        let mut out = vec![];
        let mut r = Reconciler::new([]);
        r.start(&mut out);
        r.start(&mut out);
        assert_eq!(names(&out), ["ready"]);
        let mut out = vec![];
        Reconciler::new([ResourceKind::Pod]).start(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn of_kind_is_bounded_to_the_kind() {
        let mut store = Store::new();
        store.insert(Arc::new(svc("a", "1")));
        store.insert(Arc::new(ns("x", "1")));
        assert_eq!(store.of_kind(ResourceKind::Service).count(), 1);
        assert_eq!(store.of_kind(ResourceKind::Namespace).count(), 1);
        assert_eq!(store.of_kind(ResourceKind::Pod).count(), 0);
    }
}
