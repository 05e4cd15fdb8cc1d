//! Sources of Kubernetes objects: the API server and the cluster file.
//!
//! This module owns *reading* the cluster: it turns either a watched YAML file or the
//! API server's list+watch streams into successive [`ClusterState`] snapshots, published
//! through a [`tokio::sync::watch`] channel. It does not interpret the objects (that is
//! the model's job) and writes back exactly one thing: the controller's allocation
//! annotation on a pod ([`Source::annotate_pod`]).
//!
//! Both implementations publish only when the state actually changed, so a subscriber
//! can treat every wake-up of [`tokio::sync::watch::Receiver::changed`] as real work.
//!
//! The controller itself does not read snapshots: it takes the source's [`Delta`]s
//! ([`Source::take_deltas`]) — the objects added, changed or removed — so the work it does
//! per event is proportional to what the event changed. The API server source forwards its
//! reflectors' events (a re-list becomes the deletions of what the new list lacks); the
//! cluster file is diffed against its last good state. Snapshots are built only for a
//! caller that [`Source::subscribe`]s.

mod cluster_file;
mod kubernetes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use cluster_file::{Problem, parse_cluster_file};
pub use kubernetes::{
    ApiCall, CONTROLLER_API_CALLS, DEFAULT_CA_NAME, NODE_SETUP_API_CALLS, node_pod_cidr,
};
pub(crate) use kubernetes::{
    assert_lease_calls_listed, assert_node_certificate_calls_listed, assert_signer_calls_listed,
};

/// The `kube` crate this module is built on, re-exported so callers (and tests) build a
/// [`kube::Client`] with exactly the version [`Source::kubernetes`] expects.
pub use kube;

/// The Kubernetes object types ([`ClusterState`]'s values), re-exported for the same reason.
pub use k8s_openapi;

/// The pod annotation under which the controller records a pod's network allocation.
pub const POD_NETWORK_ANNOTATION: &str = "switchyard.io/pod-network";

/// Identifies a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// A key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Every object the controller reads, as the source last saw it.
///
/// Cluster-scoped objects are keyed by name, namespaced ones by [`ObjectKey`]. Namespaced
/// objects always carry `metadata.namespace` (the cluster file fills in `default` where
/// the user left it out, as `kubectl apply` would).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods.
    pub pods: BTreeMap<ObjectKey, Pod>,
    /// Services.
    pub services: BTreeMap<ObjectKey, Service>,
    /// EndpointSlices (`discovery.k8s.io/v1`).
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// NetworkPolicies (`networking.k8s.io/v1`).
    pub network_policies: BTreeMap<ObjectKey, NetworkPolicy>,
}

/// The kinds of object the controller reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Node (cluster-scoped).
    Node,
    /// `v1` Namespace (cluster-scoped).
    Namespace,
    /// `v1` Pod.
    Pod,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
}

impl Kind {
    /// Every kind, in the order the source lists them.
    pub const ALL: [Kind; 6] = [
        Kind::Node,
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
    ];

    /// Whether the controller can do nothing without this kind: without Nodes there is no
    /// switch to program, without Pods no pod to attach. The source waits for these at
    /// start; any other kind that cannot be listed makes only the features that need it
    /// wait ([`Kind::needed_by`]).
    pub fn required(self) -> bool {
        matches!(self, Kind::Node | Kind::Pod)
    }

    /// What needs objects of this kind, for the operator reading why something waits.
    pub fn needed_by(self) -> &'static str {
        match self {
            Kind::Node => "every node's pipeline and tunnels",
            Kind::Pod => "pod attachment and connectivity",
            Kind::Namespace => "NetworkPolicy namespaceSelector peers",
            Kind::Service | Kind::EndpointSlice => "Services (ClusterIP, NodePort, LoadBalancer)",
            Kind::NetworkPolicy => "NetworkPolicy enforcement (until listed, no pod is isolated)",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::NetworkPolicy => "NetworkPolicy",
        })
    }
}

/// How far a source has one kind: listed completely at least once, and whether its list or
/// watch is failing now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindSync {
    /// The kind has been listed completely at least once: its objects are in the state (and
    /// stay there, as last seen, while a later watch fails).
    pub synced: bool,
    /// The list or watch's last failure while it lasts (e.g. the API server's 403 for a
    /// missing RBAC permission); `None` once a list or event succeeds again.
    pub error: Option<String>,
}

impl KindSync {
    /// Synced and not failing.
    pub fn in_sync(&self) -> bool {
        self.synced && self.error.is_none()
    }
}

/// One object as a source delivers it: shared, with `metadata.managedFields` removed (the
/// controller never reads them, and they are most of a large object's size).
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Node.
    Node(Arc<Node>),
    /// A Namespace.
    Namespace(Arc<Namespace>),
    /// A Pod.
    Pod(Arc<Pod>),
    /// A Service.
    Service(Arc<Service>),
    /// An EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// A NetworkPolicy.
    NetworkPolicy(Arc<NetworkPolicy>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Node(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
        }
    }

    /// Namespace (empty for cluster-scoped kinds) and name.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// Strips what the controller never reads from an object's metadata.
fn trimmed<K: Resource<DynamicType = ()>>(mut object: K) -> Arc<K> {
    object.meta_mut().managed_fields = None;
    Arc::new(object)
}

impl From<Node> for Object {
    fn from(o: Node) -> Object {
        Object::Node(trimmed(o))
    }
}
impl From<Namespace> for Object {
    fn from(o: Namespace) -> Object {
        Object::Namespace(trimmed(o))
    }
}
impl From<Pod> for Object {
    fn from(o: Pod) -> Object {
        Object::Pod(trimmed(o))
    }
}
impl From<Service> for Object {
    fn from(o: Service) -> Object {
        Object::Service(trimmed(o))
    }
}
impl From<EndpointSlice> for Object {
    fn from(o: EndpointSlice) -> Object {
        Object::EndpointSlice(trimmed(o))
    }
}
impl From<NetworkPolicy> for Object {
    fn from(o: NetworkPolicy) -> Object {
        Object::NetworkPolicy(trimmed(o))
    }
}

/// One change a source saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// The object was added or changed; this is its new version.
    Apply(Object),
    /// The object is gone.
    Delete(Kind, ObjectKey),
}

/// The deltas that turn `old` into `new`: applies for objects added or changed, deletes for
/// objects gone. Cost: one pass over both (the cluster file's diff against its last good
/// state).
pub fn diff_states(old: &ClusterState, new: &ClusterState) -> Vec<Delta> {
    fn kind_diff<K: Ord + Clone, V: PartialEq + Clone + Into<Object>>(
        kind: Kind,
        key: impl Fn(&K) -> ObjectKey,
        old: &BTreeMap<K, V>,
        new: &BTreeMap<K, V>,
        out: &mut Vec<Delta>,
    ) {
        for (k, v) in new {
            if old.get(k) != Some(v) {
                out.push(Delta::Apply(v.clone().into()));
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                out.push(Delta::Delete(kind, key(k)));
            }
        }
    }
    let cluster = |name: &String| ObjectKey::new("", name.clone());
    let namespaced = |k: &ObjectKey| k.clone();
    let mut out = Vec::new();
    kind_diff(Kind::Node, cluster, &old.nodes, &new.nodes, &mut out);
    kind_diff(
        Kind::Namespace,
        cluster,
        &old.namespaces,
        &new.namespaces,
        &mut out,
    );
    kind_diff(Kind::Pod, namespaced, &old.pods, &new.pods, &mut out);
    kind_diff(
        Kind::Service,
        namespaced,
        &old.services,
        &new.services,
        &mut out,
    );
    kind_diff(
        Kind::EndpointSlice,
        namespaced,
        &old.endpoint_slices,
        &new.endpoint_slices,
        &mut out,
    );
    kind_diff(
        Kind::NetworkPolicy,
        namespaced,
        &old.network_policies,
        &new.network_policies,
        &mut out,
    );
    out
}

/// Why a source could not start or could not write back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster file could not be read (missing, permissions, not UTF-8).
    #[error("cannot read cluster file {path}: {source}")]
    ReadClusterFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The cluster file is not YAML at all, so not a single object could be taken from it.
    /// (Individual bad objects are not errors: they are logged and skipped.)
    #[error("cluster file {path} is not valid YAML: {message}")]
    ParseClusterFile {
        /// The file.
        path: PathBuf,
        /// The YAML parser's message, with line and column.
        message: String,
    },
    /// A request to the Kubernetes API server failed.
    #[error("kubernetes API: {action}: {source}")]
    Kube {
        /// What was being done, naming the object (e.g. `patch pod backend/api-1`).
        action: String,
        /// The client's error (HTTP status and the server's message for API errors).
        #[source]
        source: kube::Error,
    },
    /// The kubeconfig file given with `--kubeconfig` could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What was wrong: unreadable, not YAML, no current context, bad credentials.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Without `--kubeconfig`, neither `$KUBECONFIG`/`~/.kube/config` nor the in-cluster
    /// service account gave a usable configuration.
    #[error(
        "no Kubernetes configuration found (tried $KUBECONFIG, ~/.kube/config, in-cluster): {source}"
    )]
    InferConfig {
        /// Both attempts' errors.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The Node has no IPv4 `spec.podCIDR` (yet): the kube-controller-manager allocates it
    /// when started with `--allocate-node-cidrs` (kubeadm: `--pod-network-cidr`).
    #[error(
        "node {node}: spec.podCIDR {value:?} is not an IPv4 CIDR (is the kube-controller-manager allocating node CIDRs, i.e. kubeadm init --pod-network-cidr?)"
    )]
    NodePodCidr {
        /// The node.
        node: String,
        /// What the Node holds (empty when unset).
        value: String,
    },
    /// The annotation value to record is not JSON; the controller only writes JSON there.
    #[error("annotation {key} on pod {pod}: value is not JSON: {source}")]
    AnnotationNotJson {
        /// The pod.
        pod: ObjectKey,
        /// The annotation key.
        key: String,
        /// Where the JSON parser stopped.
        #[source]
        source: serde_json::Error,
    },
}

/// Builds the client for [`Source::kubernetes`]: from `kubeconfig` (its current
/// context) if given, otherwise as `kubectl` and in-cluster controllers do: `$KUBECONFIG`
/// or `~/.kube/config`, else the pod's service account.
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| Error::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => kube::Config::infer()
            .await
            .map_err(|source| Error::InferConfig { source })?,
    };
    let url = config.cluster_url.clone();
    kube::Client::try_from(config).map_err(|source| Error::Kube {
        action: format!("create client for {url}"),
        source,
    })
}

/// Which backend a [`Source`] reads from.
enum Backend {
    ClusterFile(PathBuf),
    Kubernetes(kube::Client),
}

/// Background tasks that end when this is dropped: a `Source`'s, or, while
/// [`Source::kubernetes`] is still waiting for its initial lists, that future's (so a
/// caller that gives up on the wait stops the reflectors too).
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A running source of [`ClusterState`] snapshots.
///
/// Dropping the `Source` stops its background tasks; receivers obtained from
/// [`Source::subscribe`] then keep the last state and `changed()` returns an error.
pub struct Source {
    backend: Backend,
    state: watch::Receiver<Arc<ClusterState>>,
    deltas: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Vec<Delta>>>>,
    /// Per kind: listed yet, failing now.
    sync: watch::Receiver<BTreeMap<Kind, KindSync>>,
    /// Held only to stop the tasks when the `Source` is dropped.
    _tasks: Tasks,
}

impl Source {
    /// Reads the cluster file now, then watches it and publishes a new [`ClusterState`] on
    /// every change of its content.
    ///
    /// Fails if the file cannot be read or is not YAML at all. Objects that are invalid
    /// are logged with `tracing::warn!` and skipped, now and on every later change. A later
    /// edit that makes the whole file unreadable keeps the last good state (with a warning)
    /// rather than wiping the cluster.
    pub async fn cluster_file(path: PathBuf) -> Result<Source, Error> {
        let (state, deltas, task) = cluster_file::start(path.clone()).await?;
        // The file was read whole: every kind is in it (or has no objects).
        let synced = Kind::ALL
            .iter()
            .map(|kind| {
                let sync = KindSync {
                    synced: true,
                    error: None,
                };
                (*kind, sync)
            })
            .collect();
        Ok(Source {
            backend: Backend::ClusterFile(path),
            state,
            deltas: std::sync::Mutex::new(Some(deltas)),
            sync: watch::channel(synced).1,
            _tasks: Tasks(vec![task]),
        })
    }

    /// Lists and watches Nodes, Namespaces, Pods, Services, EndpointSlices and
    /// NetworkPolicies through `kube` reflectors, and publishes a new [`ClusterState`]
    /// whenever one of them changes (bursts are coalesced into one publication).
    ///
    /// Returns once the [required](Kind::required) kinds (Nodes, Pods) have been listed
    /// completely and every other kind has been listed or has failed once, so the first
    /// state a subscriber sees is the whole cluster as far as it can be read. Failures
    /// (API server unreachable, a 403 for a permission the ClusterRole lacks) are logged at
    /// warn with the kind, shown by [`Source::sync_status`], and retried with backoff; a
    /// kind listed later arrives as its own batch of deltas, so only the features that
    /// need it wait ([`Kind::needed_by`]). Bound the wait for the required kinds with
    /// [`tokio::time::timeout`] if the caller wants to give up.
    pub async fn kubernetes(client: kube::Client) -> Result<Source, Error> {
        let (state, deltas, sync, tasks) = kubernetes::start(client.clone()).await;
        Ok(Source {
            backend: Backend::Kubernetes(client),
            state,
            deltas: std::sync::Mutex::new(Some(deltas)),
            sync,
            _tasks: tasks,
        })
    }

    /// Per kind: listed completely yet, and the list or watch's current failure.
    pub fn sync_status(&self) -> BTreeMap<Kind, KindSync> {
        self.sync.borrow().clone()
    }

    /// Where the objects come from, as the admin API names it: `kubernetes` or
    /// `cluster-file`.
    pub fn kind_name(&self) -> &'static str {
        match self.backend {
            Backend::ClusterFile(_) => "cluster-file",
            Backend::Kubernetes(_) => "kubernetes",
        }
    }

    /// The latest state; `changed().await` on the receiver wakes on each new publication.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// The stream of changes, for the one consumer that owns the network state. The first
    /// batch holds every object the source has (the initial list); every later batch what
    /// changed since. `None` after the first call.
    pub fn take_deltas(&self) -> Option<mpsc::UnboundedReceiver<Vec<Delta>>> {
        self.deltas.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Whether the source has the pod at all right now, valid or not: the cluster file read
    /// now, or the API server asked directly (its watch may not have delivered a pod
    /// the kubelet already runs). CNI ADD fails at once for a pod the source lacks.
    pub async fn has_pod(&self, key: &ObjectKey) -> Result<bool, Error> {
        match &self.backend {
            Backend::ClusterFile(path) => {
                // The file as it is now: the watcher may not have seen the latest edit.
                if self.state.borrow().pods.contains_key(key) {
                    return Ok(true);
                }
                match tokio::fs::read_to_string(path).await {
                    Ok(text) => Ok(cluster_file::parse_cluster_file(&text)
                        .0
                        .pods
                        .contains_key(key)),
                    // Unreadable now: do not claim the pod is absent.
                    Err(_) => Ok(true),
                }
            }
            Backend::Kubernetes(client) => kubernetes::has_pod(client.clone(), key).await,
        }
    }

    /// Records the controller's allocation on the pod, so a restarted controller finds it.
    ///
    /// `value` must be JSON. Through the API server this is a JSON merge patch of
    /// `metadata.annotations[annotation_key]`; the change then also comes back through the
    /// pod watch. For the cluster file it is a no-op returning `Ok`: the file belongs to
    /// the user, and the OVSDB `external_ids` hold the record there.
    pub async fn annotate_pod(
        &self,
        key: &ObjectKey,
        annotation_key: &str,
        value: &str,
    ) -> Result<(), Error> {
        if let Err(source) = serde_json::from_str::<serde_json::Value>(value) {
            return Err(Error::AnnotationNotJson {
                pod: key.clone(),
                key: annotation_key.to_owned(),
                source,
            });
        }
        match &self.backend {
            Backend::ClusterFile(_) => Ok(()),
            Backend::Kubernetes(client) => {
                kubernetes::annotate_pod(client.clone(), key, annotation_key, value).await
            }
        }
    }
}
