//! The Kubernetes configuration source: discovers which Istio API versions the cluster serves,
//! runs one `kube::runtime::watcher` per kind (list, then watch; relist on `410 Gone`), folds the
//! events into one [`Store`] and emits [`SourceEvent`]s into one bounded channel.

use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::kinds::{IstioObject, KubeObject, ObjectKey, ResourceKind, origin};
use super::registry::{RegistrySettings, ServiceRegistry};
use super::store::{Reconciler, SourceEvent, Store};

/// Default bound of the event channel: enough for a burst of a relist of a mid-sized cluster
/// without stalling the watchers, small enough to bound memory when the consumer is slow.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;
/// Default page size of list calls; client-go's pager uses 500.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Default server-side watch timeout in seconds; kube and client-go use about 5 minutes.
pub const DEFAULT_WATCH_TIMEOUT_SECS: u32 = 290;

/// A source of configuration: started once, it reports changes into one channel.
pub trait ConfigSource: Send {
    /// What the source reports.
    type Event: Send;
    /// Keeps the source running and gives access to its state; dropping it stops the source.
    type Handle: Send;
    /// Why the source could not start.
    type Error: std::error::Error + Send;

    /// Starts the source.
    fn start(
        self,
    ) -> impl Future<Output = Result<(Self::Handle, mpsc::Receiver<Self::Event>), Self::Error>> + Send;
}

/// Settings of the Kubernetes source.
#[derive(Clone, Debug)]
pub struct KubeSourceConfig {
    /// The kinds to watch (default: all of [`ResourceKind::ALL`]).
    pub kinds: Vec<ResourceKind>,
    /// Fail to start when an Istio CRD is not installed (default: skip it with a warning).
    pub require_istio_crds: bool,
    /// Bound of the event channel.
    pub event_buffer: usize,
    /// Page size of list calls.
    pub page_size: u32,
    /// Server-side timeout of each watch call, in seconds.
    pub watch_timeout_secs: u32,
}

impl Default for KubeSourceConfig {
    fn default() -> Self {
        Self {
            kinds: ResourceKind::ALL.to_vec(),
            require_istio_crds: false,
            event_buffer: DEFAULT_EVENT_BUFFER,
            page_size: DEFAULT_PAGE_SIZE,
            watch_timeout_secs: DEFAULT_WATCH_TIMEOUT_SECS,
        }
    }
}

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The API server could not be asked which API versions it serves.
    #[error(
        "cannot discover the API group `{group}` on the Kubernetes API server: {source}; check that \
         the API server is reachable and that jalin's ServiceAccount may read /apis"
    )]
    Discovery {
        /// The group being discovered.
        group: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An Istio CRD is required but not installed.
    #[error(
        "the Istio CRD for {kind} ({group}) is not installed; install Istio's CRDs \
         (`kubectl apply -f deploy/crds/`) or leave `require_istio_crds` off"
    )]
    MissingCrd {
        /// The missing kind.
        kind: ResourceKind,
        /// Its API group.
        group: &'static str,
    },
}

/// One kind being watched, at the API version chosen by discovery.
#[derive(Clone, Debug)]
pub struct WatchedKind {
    /// The kind.
    pub kind: ResourceKind,
    /// Its API coordinates (group, version, plural).
    pub resource: ApiResource,
}

/// The Kubernetes configuration source.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    config: KubeSourceConfig,
}

impl Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Shared read access to a source's store, for request handlers (e.g. the injection webhook).
#[derive(Clone, Debug, Default)]
pub struct StoreReader {
    store: Arc<RwLock<Store>>,
}

impl StoreReader {
    /// A reader over a fixed store (tests, or a source that is not Kubernetes).
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(RwLock::new(store)),
        }
    }

    /// Runs `f` on the current store contents.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        f(&store)
    }

    /// A reader of the live store that outlives borrows of the handle (the watches still stop
    /// when the handle is dropped).
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            store: Arc::clone(&self.store),
        }
    }
}

/// A running Kubernetes source. Dropping it stops every watch.
#[derive(Debug)]
pub struct KubeSourceHandle {
    store: Arc<RwLock<Store>>,
    watched: Vec<WatchedKind>,
    skipped: Vec<ResourceKind>,
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the aggregator (and so the event channel) alive while the handle lives, even when
    /// no kind is watched.
    _keepalive: mpsc::Sender<Internal>,
}

impl Drop for KubeSourceHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl KubeSourceHandle {
    /// Runs `f` on the current store contents.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        f(&store)
    }

    /// A reader of the live store that outlives borrows of the handle (the watches still stop
    /// when the handle is dropped).
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            store: Arc::clone(&self.store),
        }
    }

    /// A copy of the current store (objects are shared, so this copies only the index).
    pub fn snapshot(&self) -> Store {
        self.read(Store::clone)
    }

    /// The service registry derived from the current Services, EndpointSlices and Pods.
    pub fn registry(&self, settings: &RegistrySettings) -> ServiceRegistry {
        self.read(|store| ServiceRegistry::from_store(store, settings))
    }

    /// The kinds being watched and the API versions chosen for them.
    pub fn watched(&self) -> &[WatchedKind] {
        &self.watched
    }

    /// The kinds skipped because their CRD is not installed.
    pub fn skipped(&self) -> &[ResourceKind] {
        &self.skipped
    }
}

/// What a watch task hands the aggregator.
#[derive(Debug)]
enum Internal {
    Event(ResourceKind, Event<KubeObject>),
    Error(ResourceKind, String),
}

impl KubeSource {
    /// A source reading from `client` (see [`kube::Client::try_default`] for in-cluster use).
    pub fn new(client: Client, config: KubeSourceConfig) -> Self {
        Self { client, config }
    }

    /// Discovers the served API versions, then starts one watcher per kind and the aggregator.
    pub async fn start(
        self,
    ) -> Result<(KubeSourceHandle, mpsc::Receiver<SourceEvent>), SourceError> {
        let (watched, skipped) = discover(&self.client, &self.config).await?;
        let buffer = self.config.event_buffer.max(1);
        let (out_tx, out_rx) = mpsc::channel(buffer);
        let (in_tx, in_rx) = mpsc::channel(buffer);
        let store = Arc::new(RwLock::new(Store::new()));
        let reconciler = Reconciler::new(watched.iter().map(|w| w.kind));
        let mut tasks = vec![tokio::spawn(aggregate(
            in_rx,
            Arc::clone(&store),
            reconciler,
            out_tx,
        ))];
        let wc = watcher::Config::default()
            .page_size(self.config.page_size.max(1))
            .timeout(self.config.watch_timeout_secs);
        for w in &watched {
            tasks.push(spawn_watch(&self.client, w, wc.clone(), in_tx.clone()));
        }
        let handle = KubeSourceHandle {
            store,
            watched,
            skipped,
            tasks,
            _keepalive: in_tx,
        };
        Ok((handle, out_rx))
    }
}

impl ConfigSource for KubeSource {
    type Event = SourceEvent;
    type Handle = KubeSourceHandle;
    type Error = SourceError;

    fn start(
        self,
    ) -> impl Future<Output = Result<(Self::Handle, mpsc::Receiver<Self::Event>), Self::Error>> + Send
    {
        KubeSource::start(self)
    }
}

/// Chooses the API version of every kind: fixed for the core kinds, the group's preferred
/// version (or else any served version) for the Istio kinds.
async fn discover(
    client: &Client,
    config: &KubeSourceConfig,
) -> Result<(Vec<WatchedKind>, Vec<ResourceKind>), SourceError> {
    let mut watched = Vec::new();
    let mut skipped = Vec::new();
    let mut groups: Vec<(&'static str, Option<kube::discovery::ApiGroup>)> = Vec::new();
    for &kind in &config.kinds {
        if watched.iter().any(|w: &WatchedKind| w.kind == kind) || skipped.contains(&kind) {
            continue;
        }
        let resource = match kind {
            ResourceKind::Service => Some(ApiResource::erase::<Service>(&())),
            ResourceKind::EndpointSlice => Some(ApiResource::erase::<EndpointSlice>(&())),
            ResourceKind::Pod => Some(ApiResource::erase::<Pod>(&())),
            ResourceKind::Namespace => Some(ApiResource::erase::<Namespace>(&())),
            _ => {
                let group = kind.group();
                if !groups.iter().any(|(g, _)| *g == group) {
                    groups.push((group, discover_group(client, group).await?));
                }
                groups
                    .iter()
                    .find(|(g, _)| *g == group)
                    .and_then(|(_, api_group)| api_group.as_ref())
                    .and_then(|api_group| istio_resource(api_group, kind))
            }
        };
        match resource {
            Some(resource) => watched.push(WatchedKind { kind, resource }),
            None if config.require_istio_crds => {
                return Err(SourceError::MissingCrd {
                    kind,
                    group: kind.group(),
                });
            }
            None => {
                tracing::warn!(
                    %kind,
                    group = kind.group(),
                    "the Istio CRD is not installed; {kind} resources are not watched. Install \
                     Istio's CRDs and restart the control plane to use them"
                );
                skipped.push(kind);
            }
        }
    }
    Ok((watched, skipped))
}

async fn discover_group(
    client: &Client,
    group: &'static str,
) -> Result<Option<kube::discovery::ApiGroup>, SourceError> {
    match kube::discovery::group(client, group).await {
        Ok(api_group) => Ok(Some(api_group)),
        Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => Ok(None),
        Err(source) => Err(SourceError::Discovery {
            group: group.to_string(),
            source,
        }),
    }
}

/// The preferred served version of `kind`, or else the most stable one that serves it.
fn istio_resource(
    api_group: &kube::discovery::ApiGroup,
    kind: ResourceKind,
) -> Option<ApiResource> {
    if let Some((resource, _)) = api_group.recommended_kind(kind.kind_name()) {
        return Some(resource);
    }
    api_group
        .resources_by_stability()
        .into_iter()
        .find(|(resource, _)| resource.kind == kind.kind_name())
        .map(|(resource, _)| resource)
}

fn spawn_watch(
    client: &Client,
    watched: &WatchedKind,
    wc: watcher::Config,
    tx: mpsc::Sender<Internal>,
) -> JoinHandle<()> {
    let kind = watched.kind;
    match kind {
        ResourceKind::Service => spawn_typed(client, wc, kind, tx, KubeObject::Service),
        ResourceKind::EndpointSlice => spawn_typed(client, wc, kind, tx, KubeObject::EndpointSlice),
        ResourceKind::Pod => spawn_typed(client, wc, kind, tx, KubeObject::Pod),
        ResourceKind::Namespace => spawn_typed(client, wc, kind, tx, KubeObject::Namespace),
        _ => {
            let resource = watched.resource.clone();
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
            tokio::spawn(watch_kind(
                api,
                wc,
                kind,
                move |o: DynamicObject| istio_object(kind, &resource, o),
                tx,
            ))
        }
    }
}

/// Drops fields no consumer reads and that can be large.
/// Watches one typed Kubernetes kind cluster-wide; objects are stripped of server bookkeeping
/// (see [`strip`]) and wrapped with `wrap`.
fn spawn_typed<K>(
    client: &Client,
    wc: watcher::Config,
    kind: ResourceKind,
    tx: mpsc::Sender<Internal>,
    wrap: fn(Box<K>) -> KubeObject,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(watch_kind(
        Api::<K>::all(client.clone()),
        wc,
        kind,
        move |mut o: K| {
            strip(o.meta_mut());
            Ok(wrap(Box::new(o)))
        },
        tx,
    ))
}

fn strip(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Turns a served Istio object into the raw form the Istio parser reads.
pub fn istio_object(
    kind: ResourceKind,
    resource: &ApiResource,
    mut object: DynamicObject,
) -> Result<KubeObject, String> {
    strip(&mut object.metadata);
    // Items of a LIST response carry no apiVersion/kind: fill them from the resource listed.
    if object.types.as_ref().is_none_or(|t| t.kind.is_empty()) {
        object.types = Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
    }
    let api_version = object
        .types
        .as_ref()
        .map(|t| t.api_version.clone())
        .unwrap_or_default();
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let resource_version = object.metadata.resource_version.clone().unwrap_or_default();
    let key = ObjectKey::new(kind, namespace.clone(), name.clone());
    let value = serde_json::to_value(&object)
        .map_err(|e| format!("cannot re-encode {key} as JSON: {e}"))?;
    Ok(KubeObject::Istio(IstioObject {
        kind,
        api_version,
        origin: origin(&key, &resource_version),
        namespace,
        name,
        resource_version,
        value,
    }))
}

async fn watch_kind<K, F>(
    api: Api<K>,
    wc: watcher::Config,
    kind: ResourceKind,
    convert: F,
    tx: mpsc::Sender<Internal>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(K) -> Result<KubeObject, String> + Send,
{
    let mut stream = pin!(watcher::watcher(api, wc).default_backoff());
    while let Some(item) = stream.next().await {
        let message = match item {
            Ok(event) => match convert_event(event, &convert) {
                Ok(event) => Internal::Event(kind, event),
                Err(message) => Internal::Error(kind, message),
            },
            Err(error) => {
                let message = describe(kind, &error);
                tracing::warn!(%kind, "{message}");
                Internal::Error(kind, message)
            }
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}

fn convert_event<K>(
    event: Event<K>,
    convert: &impl Fn(K) -> Result<KubeObject, String>,
) -> Result<Event<KubeObject>, String> {
    Ok(match event {
        Event::Apply(o) => Event::Apply(convert(o)?),
        Event::Delete(o) => Event::Delete(convert(o)?),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(convert(o)?),
        Event::InitDone => Event::InitDone,
    })
}

/// An operator-facing description of a watch failure, with what to check.
fn describe(kind: ResourceKind, error: &watcher::Error) -> String {
    let resource = if kind.group().is_empty() {
        kind.plural().to_string()
    } else {
        format!("{}.{}", kind.plural(), kind.group())
    };
    let status = match error {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    };
    let hint = match status {
        Some(401) => "the API server rejected jalin's credentials; check the ServiceAccount token",
        Some(403) => {
            "forbidden: grant jalin's ServiceAccount `list` and `watch` on this resource in its \
             ClusterRole"
        }
        Some(404) => "the API server does not serve this resource; is the CRD installed?",
        Some(410) => "the watch's resourceVersion expired (410 Gone); relisting",
        _ => "retrying with backoff; check that the API server is reachable",
    };
    format!("watch of {resource} failed: {error}; {hint}")
}

async fn aggregate(
    mut rx: mpsc::Receiver<Internal>,
    store: Arc<RwLock<Store>>,
    mut reconciler: Reconciler,
    tx: mpsc::Sender<SourceEvent>,
) {
    let mut out = Vec::new();
    reconciler.start(&mut out);
    for event in out.drain(..) {
        if tx.send(event).await.is_err() {
            return;
        }
    }
    while let Some(message) = rx.recv().await {
        match message {
            Internal::Event(kind, event) => {
                let mut store = store.write().unwrap_or_else(PoisonError::into_inner);
                reconciler.handle(&mut store, kind, event, &mut out);
            }
            Internal::Error(kind, message) => out.push(SourceEvent::WatchError { kind, message }),
        }
        for event in out.drain(..) {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}
