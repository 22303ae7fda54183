//! Snapshots: the set of resources a control plane serves, encoded once and shared by every stream.
//!
//! Invariant: an [`Entry`] is immutable and holds its resource already encoded both as a
//! state-of-the-world `DiscoveryResponse.resources` field and as a delta
//! `DeltaDiscoveryResponse.resources` field, so a push to N streams costs N reference-count bumps
//! and N buffer copies, never N protobuf encodings.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::Any;

use super::resource::{EncodedResource, content_version};

/// Field number of `resources` in both `DiscoveryResponse` and `DeltaDiscoveryResponse`.
const RESOURCES_FIELD: u32 = 2;

/// One resource, encoded once.
#[derive(Debug)]
pub struct Entry {
    /// Type URL of the resource.
    pub type_url: Arc<str>,
    /// Resource name, unique per type URL.
    pub name: Arc<str>,
    /// Content version.
    pub version: Arc<str>,
    /// The protobuf message bytes (`Any.value`).
    pub value: Bytes,
    sotw_field: Bytes,
    delta_field: Bytes,
}

impl Entry {
    /// Encodes `res` once for both protocol variants.
    pub fn new(res: EncodedResource) -> Self {
        let any = Any {
            type_url: res.type_url.clone(),
            value: res.value.to_vec(),
        };
        let mut sotw = Vec::with_capacity(any.value.len() + any.type_url.len() + 16);
        prost::encoding::message::encode(RESOURCES_FIELD, &any, &mut sotw);
        let delta_res = Resource {
            name: res.name.clone(),
            version: res.version.clone(),
            resource: Some(any),
            ..Resource::default()
        };
        let mut delta = Vec::with_capacity(sotw.len() + res.name.len() + res.version.len() + 16);
        prost::encoding::message::encode(RESOURCES_FIELD, &delta_res, &mut delta);
        Entry {
            type_url: Arc::from(res.type_url),
            name: Arc::from(res.name),
            version: Arc::from(res.version),
            value: res.value,
            sotw_field: Bytes::from(sotw),
            delta_field: Bytes::from(delta),
        }
    }

    /// The encoded `DiscoveryResponse.resources` field (tag, length and `Any`).
    pub fn sotw_field(&self) -> &Bytes {
        &self.sotw_field
    }

    /// The encoded `DeltaDiscoveryResponse.resources` field (tag, length and `Resource`).
    pub fn delta_field(&self) -> &Bytes {
        &self.delta_field
    }
}

/// The resources of one type URL, by name, with a version over the whole set.
#[derive(Debug, Clone, Default)]
pub struct TypeSet {
    /// Content hash over every (name, version) of the set.
    pub version: Arc<str>,
    /// Resources by name.
    pub resources: BTreeMap<Arc<str>, Arc<Entry>>,
    /// What changed since the set this one replaced, when the server linked them on push.
    changes: Option<Arc<TypeChanges>>,
}

/// The difference between two sets of one type, computed once per push and shared by every
/// stream, so a stream in sync with `from` sends the change without walking the whole set.
#[derive(Debug, Default)]
pub struct TypeChanges {
    /// Version of the set these changes apply to.
    pub from: Arc<str>,
    /// Resources added or changed since `from`.
    pub changed: Vec<Arc<Entry>>,
    /// Names of resources gone since `from`, sorted.
    pub removed: Vec<Arc<str>>,
}

impl TypeSet {
    fn from_resources(resources: BTreeMap<Arc<str>, Arc<Entry>>) -> Self {
        TypeSet {
            version: Arc::from(set_version(resources.values())),
            resources,
            changes: None,
        }
    }

    /// The changes from the set this one replaced, if the server linked them.
    pub fn changes(&self) -> Option<&TypeChanges> {
        self.changes.as_deref()
    }

    /// The changes from `old` to this set: from the link when it starts at `old`'s version,
    /// otherwise by one ordered walk of both sets (entries compare by pointer, then version).
    pub fn changes_since(&self, old: &TypeSet) -> (Vec<Arc<Entry>>, Vec<Arc<str>>) {
        if let Some(c) = &self.changes
            && c.from == old.version
        {
            return (c.changed.clone(), c.removed.clone());
        }
        diff_sets(&old.resources, &self.resources)
    }
}

/// Resources of `new` not in `old` at the same version, and names of `old` not in `new` (sorted).
fn diff_sets(
    old: &BTreeMap<Arc<str>, Arc<Entry>>,
    new: &BTreeMap<Arc<str>, Arc<Entry>>,
) -> (Vec<Arc<Entry>>, Vec<Arc<str>>) {
    use std::cmp::Ordering;
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((n, _)), None) => {
                removed.push((*n).clone());
                a.next();
            }
            (None, Some((_, e))) => {
                changed.push((*e).clone());
                b.next();
            }
            (Some((na, ea)), Some((nb, eb))) => match na.cmp(nb) {
                Ordering::Less => {
                    removed.push((*na).clone());
                    a.next();
                }
                Ordering::Greater => {
                    changed.push((*eb).clone());
                    b.next();
                }
                Ordering::Equal => {
                    if !Arc::ptr_eq(ea, eb) && ea.version != eb.version {
                        changed.push((*eb).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    (changed, removed)
}

/// The version of a set of resources: a content hash over their names and versions.
pub fn set_version<'a>(entries: impl Iterator<Item = &'a Arc<Entry>>) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    for e in entries {
        parts.push(e.name.as_bytes());
        parts.push(e.version.as_bytes());
    }
    content_version(&parts)
}

/// An immutable set of resources of every type, as served to one proxy or to all.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    types: BTreeMap<Arc<str>, Arc<TypeSet>>,
}

impl Snapshot {
    /// A snapshot of `resources`; a later resource with the same type URL and name replaces an
    /// earlier one.
    pub fn new(resources: impl IntoIterator<Item = EncodedResource>) -> Self {
        let mut by_type: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Arc<Entry>>> = BTreeMap::new();
        let mut url_cache: BTreeMap<String, Arc<str>> = BTreeMap::new();
        for res in resources {
            let mut entry = Entry::new(res);
            let url = url_cache
                .entry(entry.type_url.to_string())
                .or_insert_with(|| entry.type_url.clone())
                .clone();
            entry.type_url = url.clone();
            by_type
                .entry(url)
                .or_default()
                .insert(entry.name.clone(), Arc::new(entry));
        }
        Self::from_entries(by_type)
    }

    /// A snapshot of already-encoded entries (shared with other snapshots).
    pub fn from_entries(by_type: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Arc<Entry>>>) -> Self {
        Snapshot {
            types: by_type
                .into_iter()
                .map(|(url, set)| (url, Arc::new(TypeSet::from_resources(set))))
                .collect(),
        }
    }

    /// A new snapshot with `resources` added or replaced, sharing every other entry.
    pub fn with(&self, resources: impl IntoIterator<Item = EncodedResource>) -> Self {
        let mut by_type = self.entries_by_type();
        for res in resources {
            let entry = Arc::new(Entry::new(res));
            by_type
                .entry(entry.type_url.clone())
                .or_default()
                .insert(entry.name.clone(), entry);
        }
        Self::from_entries(by_type)
    }

    /// A new snapshot without the named resources, sharing every other entry.
    pub fn without<'a>(&self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut by_type = self.entries_by_type();
        for (type_url, name) in keys {
            if let Some(set) = by_type.get_mut(type_url) {
                set.remove(name);
            }
        }
        Self::from_entries(by_type)
    }

    /// The subset of resources `keep` accepts, sharing the entries (for per-proxy scoping).
    pub fn filter(&self, mut keep: impl FnMut(&Entry) -> bool) -> Self {
        let by_type = self
            .types
            .iter()
            .map(|(url, set)| {
                let kept = set
                    .resources
                    .iter()
                    .filter(|(_, e)| keep(e))
                    .map(|(n, e)| (n.clone(), e.clone()))
                    .collect();
                (url.clone(), kept)
            })
            .collect();
        Self::from_entries(by_type)
    }

    fn entries_by_type(&self) -> BTreeMap<Arc<str>, BTreeMap<Arc<str>, Arc<Entry>>> {
        self.types
            .iter()
            .map(|(url, set)| (url.clone(), set.resources.clone()))
            .collect()
    }

    /// The resources of `type_url`, if any.
    pub fn type_set(&self, type_url: &str) -> Option<&TypeSet> {
        self.types.get(type_url).map(|s| &**s)
    }

    /// The resources of `type_url`, shared (a stream in sync keeps this instead of a copy).
    pub fn shared_type_set(&self, type_url: &str) -> Option<&Arc<TypeSet>> {
        self.types.get(type_url)
    }

    /// Records, per type, what changed since `prev` (the snapshot this one replaces), so every
    /// stream in sync with `prev` sends the change in time proportional to its size.
    pub fn link_from(&mut self, prev: &Snapshot) {
        for (url, set) in &mut self.types {
            let Some(old) = prev.types.get(url) else {
                continue;
            };
            if old.version == set.version {
                continue;
            }
            let (changed, removed) = diff_sets(&old.resources, &set.resources);
            Arc::make_mut(set).changes = Some(Arc::new(TypeChanges {
                from: old.version.clone(),
                changed,
                removed,
            }));
        }
    }

    /// One resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<Entry>> {
        self.types.get(type_url)?.resources.get(name)
    }

    /// Every type URL with at least one resource.
    pub fn type_urls(&self) -> impl Iterator<Item = &Arc<str>> {
        self.types.keys()
    }

    /// Total number of resources.
    pub fn len(&self) -> usize {
        self.types.values().map(|s| s.resources.len()).sum()
    }

    /// True when the snapshot holds no resource.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::transport::resource::{Kind, encode};
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };

    #[test]
    fn pre_encoded_fields_decode_as_envoy_messages() {
        let res = encode(Kind::Cluster, "payments", &"body").unwrap();
        let entry = Entry::new(res.clone());
        let sotw = DiscoveryResponse::decode(entry.sotw_field().clone()).unwrap();
        assert_eq!(sotw.resources.len(), 1);
        assert_eq!(sotw.resources[0].type_url, res.type_url);
        assert_eq!(sotw.resources[0].value, res.value.to_vec());
        let delta = DeltaDiscoveryResponse::decode(entry.delta_field().clone()).unwrap();
        assert_eq!(delta.resources[0].name, "payments");
        assert_eq!(delta.resources[0].version, res.version);
    }

    #[test]
    fn set_version_changes_with_content_only() {
        let a = Snapshot::new([encode(Kind::Cluster, "a", &1).unwrap()]);
        let b = Snapshot::new([encode(Kind::Cluster, "a", &1).unwrap()]);
        let c = a.with([encode(Kind::Cluster, "a", &2).unwrap()]);
        let url = Kind::Cluster.type_url();
        assert_eq!(
            a.type_set(url).unwrap().version,
            b.type_set(url).unwrap().version
        );
        assert_ne!(
            a.type_set(url).unwrap().version,
            c.type_set(url).unwrap().version
        );
        let mut d = c.with([encode(Kind::Cluster, "b", &1).unwrap()]);
        d.link_from(&c);
        let (set_c, set_d) = (c.type_set(url).unwrap(), d.type_set(url).unwrap());
        let changes = set_d.changes().unwrap();
        assert_eq!(changes.from, set_c.version);
        assert_eq!(changes.changed.len(), 1);
        assert_eq!(&*changes.changed[0].name, "b");
        let (changed, removed) = set_c.changes_since(set_d);
        assert!(changed.is_empty());
        assert_eq!(removed, vec![Arc::<str>::from("b")]);
        assert!(
            c.without([(url, "a")])
                .type_set(url)
                .unwrap()
                .resources
                .is_empty()
        );
    }
}
