//! The Kubernetes API server as a source: one `kube` reflector per kind, their stores
//! combined into [`ClusterState`] snapshots.
//!
//! Owns list+watch (through `kube::runtime`, which handles resourceVersions, bookmarks,
//! re-lists after `410 Gone` and backoff) and the one write the controller makes: the
//! pod allocation annotation. It does not interpret the objects.
//!
//! Every call it makes is listed in [`CONTROLLER_API_CALLS`] (and `node-setup`'s in
//! [`NODE_SETUP_API_CALLS`]); the install manifests' RBAC (deploy/kubernetes/rbac.yaml) grants
//! exactly those, which tests/tests/manifests.rs checks. Each call site asserts (in debug
//! builds, so every test) that its call is listed.
//!
//! A kind that cannot be listed or watched (a permission missing, a failing watch) does not
//! hold the others back: see [`super::Source::kubernetes`].

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use tokio::sync::{Notify, mpsc, watch};

use super::{ClusterState, Delta, Error, Kind, KindSync, Object, ObjectKey, Tasks};
use std::collections::BTreeMap;

/// One Kubernetes API call: what an RBAC rule must grant for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, as RBAC names it (`pods`, `networkpolicies`).
    pub resource: &'static str,
    /// The verb (`list`, `watch`, `get`, `patch`).
    pub verb: &'static str,
    /// The one object's name when the call is on a name known in advance (an RBAC rule's
    /// `resourceNames` then grants it); `None`: any name.
    pub name: Option<&'static str>,
}

const fn call<K: k8s_openapi::Resource>(verb: &'static str) -> ApiCall {
    ApiCall {
        group: K::GROUP,
        resource: K::URL_PATH_SEGMENT,
        verb,
        name: None,
    }
}

const fn named<K: k8s_openapi::Resource>(verb: &'static str, name: &'static str) -> ApiCall {
    ApiCall {
        group: K::GROUP,
        resource: K::URL_PATH_SEGMENT,
        verb,
        name: Some(name),
    }
}

/// A call on a subresource (`certificatesigningrequests/approval`) or on a resource that is
/// only authorized, never served (`signers`).
const fn other(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    name: Option<&'static str>,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        name,
    }
}

/// The CA Secret's and ConfigMap's default name (`--ca-secret`): the RBAC grants these by
/// name.
pub const DEFAULT_CA_NAME: &str = "switchyard-ca";

/// Every API call `switchyard controller` makes: cluster-wide list and watch of the six
/// kinds it reads, get of one pod (CNI ADD asks whether the pod exists) and patch of one
/// pod (the allocation annotation); in its own namespace only (a Role), get, create and
/// update of its leader-election Lease (`crate::leader`), and its CA (`crate::signer`):
/// get and create of the Secret, get, create and update of the ConfigMap. The signer
/// (`crate::signer`, cluster-wide): list and watch of CertificateSigningRequests, update of
/// their `/approval` and `/status`, for which kube-apiserver also asks `approve` and `sign`
/// on the signer `switchyard.io/node`.
pub const CONTROLLER_API_CALLS: &[ApiCall] = &[
    call::<Node>("list"),
    call::<Node>("watch"),
    call::<Namespace>("list"),
    call::<Namespace>("watch"),
    call::<Pod>("list"),
    call::<Pod>("watch"),
    call::<Pod>("get"),
    call::<Pod>("patch"),
    call::<Service>("list"),
    call::<Service>("watch"),
    call::<EndpointSlice>("list"),
    call::<EndpointSlice>("watch"),
    call::<NetworkPolicy>("list"),
    call::<NetworkPolicy>("watch"),
    call::<Lease>("get"),
    call::<Lease>("create"),
    call::<Lease>("update"),
    named::<Secret>("get", DEFAULT_CA_NAME),
    call::<Secret>("create"),
    named::<ConfigMap>("get", DEFAULT_CA_NAME),
    call::<ConfigMap>("create"),
    named::<ConfigMap>("update", DEFAULT_CA_NAME),
    call::<CertificateSigningRequest>("list"),
    call::<CertificateSigningRequest>("watch"),
    other(
        CSR_GROUP,
        "certificatesigningrequests/approval",
        "update",
        None,
    ),
    other(
        CSR_GROUP,
        "certificatesigningrequests/status",
        "update",
        None,
    ),
    other(
        CSR_GROUP,
        "signers",
        "approve",
        Some(crate::signer::SIGNER_NAME),
    ),
    other(
        CSR_GROUP,
        "signers",
        "sign",
        Some(crate::signer::SIGNER_NAME),
    ),
];

const CSR_GROUP: &str = "certificates.k8s.io";

/// Asserts (debug builds) that the signer's calls are listed.
pub(crate) fn assert_signer_calls_listed() {
    for call in [
        named::<Secret>("get", DEFAULT_CA_NAME),
        call::<Secret>("create"),
        named::<ConfigMap>("get", DEFAULT_CA_NAME),
        call::<ConfigMap>("create"),
        named::<ConfigMap>("update", DEFAULT_CA_NAME),
        call::<CertificateSigningRequest>("list"),
        call::<CertificateSigningRequest>("watch"),
        other(
            CSR_GROUP,
            "certificatesigningrequests/approval",
            "update",
            None,
        ),
        other(
            CSR_GROUP,
            "certificatesigningrequests/status",
            "update",
            None,
        ),
    ] {
        debug_assert!(
            CONTROLLER_API_CALLS.contains(&call),
            "{call:?} is not in CONTROLLER_API_CALLS: add it there and to deploy/kubernetes/rbac.yaml"
        );
    }
}

/// Asserts (debug builds) that `node-setup --request-certificate`'s calls are listed.
pub(crate) fn assert_node_certificate_calls_listed() {
    for call in [
        named::<ConfigMap>("get", DEFAULT_CA_NAME),
        call::<CertificateSigningRequest>("create"),
        call::<CertificateSigningRequest>("get"),
    ] {
        debug_assert!(
            NODE_SETUP_API_CALLS.contains(&call),
            "{call:?} is not in NODE_SETUP_API_CALLS: add it there and to deploy/kubernetes/rbac.yaml"
        );
    }
}

/// Asserts (debug builds) that the leader election's calls are listed.
pub(crate) fn assert_lease_calls_listed() {
    for verb in ["get", "create", "update"] {
        listed::<Lease>(CONTROLLER_API_CALLS, verb);
    }
}

/// Every API call `switchyard node-setup` makes: get of its own Node (`--node`); with
/// `--request-certificate`, get of the CA ConfigMap (in the controller's namespace), create
/// and get of its CertificateSigningRequest.
pub const NODE_SETUP_API_CALLS: &[ApiCall] = &[
    call::<Node>("get"),
    named::<ConfigMap>("get", DEFAULT_CA_NAME),
    call::<CertificateSigningRequest>("create"),
    call::<CertificateSigningRequest>("get"),
];

/// Asserts (in debug builds: every test) that a call site's call is listed.
fn listed<K: k8s_openapi::Resource>(calls: &[ApiCall], verb: &'static str) {
    debug_assert!(
        calls.contains(&call::<K>(verb)),
        "{verb} {} is not in the API call list: add it there and to deploy/kubernetes/rbac.yaml",
        K::URL_PATH_SEGMENT
    );
}

/// How long a burst of watch events may last before the state is published: one
/// publication per burst rather than one per event (a Deployment rollout touches pods,
/// endpoint slices and services within milliseconds of each other).
const COALESCE: Duration = Duration::from_millis(50);

/// Per kind: listed yet, failing now (see [`KindSync`]).
type SyncMap = BTreeMap<Kind, KindSync>;

/// The six stores, read together to build a snapshot.
struct Stores {
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    network_policies: Store<NetworkPolicy>,
}

impl Stores {
    fn snapshot(&self) -> ClusterState {
        ClusterState {
            nodes: cluster_scoped(&self.nodes),
            namespaces: cluster_scoped(&self.namespaces),
            pods: namespaced(&self.pods),
            services: namespaced(&self.services),
            endpoint_slices: namespaced(&self.endpoint_slices),
            network_policies: namespaced(&self.network_policies),
        }
    }
}

fn cluster_scoped<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
) -> std::collections::BTreeMap<String, K> {
    store
        .state()
        .into_iter()
        .map(|object| (object.name_any(), K::clone(&object)))
        .collect()
}

fn namespaced<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
) -> std::collections::BTreeMap<ObjectKey, K> {
    store
        .state()
        .into_iter()
        .map(|object| {
            let key = ObjectKey {
                namespace: object.namespace().unwrap_or_default(),
                name: object.name_any(),
            };
            (key, K::clone(&object))
        })
        .collect()
}

/// Starts one reflector task for kind `K`, poking `changed` on every event and forwarding
/// every change as a [`Delta`].
fn reflect<K>(
    client: &Client,
    changed: Arc<Notify>,
    deltas: mpsc::UnboundedSender<Vec<Delta>>,
    sync: watch::Sender<SyncMap>,
    tasks: &mut Tasks,
) -> Store<K>
where
    K: Resource<DynamicType = (), Scope: Send>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + Into<Object>
        + 'static,
{
    listed::<K>(CONTROLLER_API_CALLS, "list");
    listed::<K>(CONTROLLER_API_CALLS, "watch");
    let (reader, writer) = reflector::store::<K>();
    let api = Api::<K>::all(client.clone());
    let kind = object_kind::<K>();
    // managedFields are most of a large object and never read: dropped before the
    // reflector's store keeps the object, so the store holds what the controller uses.
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer);
    let task = async move {
        let mut events = std::pin::pin!(events);
        // What the controller has been told exists, and what the current (re-)list has
        // shown so far: a re-list (after 410 Gone, a lost watch) ends with the deletion of
        // whatever it no longer contains.
        let mut known: HashSet<ObjectKey> = HashSet::new();
        let mut listing: Option<HashSet<ObjectKey>> = None;
        // The initial list goes out as one batch.
        let mut batch: Vec<Delta> = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    let listed = matches!(event, watcher::Event::InitDone);
                    match event {
                        watcher::Event::Init => listing = Some(HashSet::new()),
                        watcher::Event::InitApply(object) => {
                            let object: Object = object.into();
                            let key = object.key();
                            if let Some(seen) = listing.as_mut() {
                                seen.insert(key.clone());
                            }
                            known.insert(key);
                            batch.push(Delta::Apply(object));
                        }
                        watcher::Event::InitDone => {
                            if let Some(seen) = listing.take() {
                                let gone: Vec<ObjectKey> =
                                    known.difference(&seen).cloned().collect();
                                for key in gone {
                                    known.remove(&key);
                                    batch.push(Delta::Delete(object_kind::<K>(), key));
                                }
                            }
                            let _ = deltas.send(std::mem::take(&mut batch));
                        }
                        watcher::Event::Apply(object) => {
                            let object: Object = object.into();
                            known.insert(object.key());
                            let _ = deltas.send(vec![Delta::Apply(object)]);
                        }
                        watcher::Event::Delete(object) => {
                            let object: Object = object.into();
                            let key = object.key();
                            known.remove(&key);
                            let _ = deltas.send(vec![Delta::Delete(object.kind(), key)]);
                        }
                    }
                    // After the deltas went out: "in sync" never runs ahead of them.
                    recovered(&sync, kind, listed);
                    changed.notify_one();
                }
                // Includes objects the server sent that do not deserialize: kube fails
                // that list/watch and the backoff retries it.
                Err(error) => failed(&sync, kind, error.to_string()),
            }
        }
    };
    tasks.push(tokio::spawn(task));
    reader
}

/// A list or watch of `kind` succeeded (`listed`: a complete list ended): clears its error.
fn recovered(sync: &watch::Sender<SyncMap>, kind: Kind, listed: bool) {
    sync.send_if_modified(|map| {
        let entry = map.entry(kind).or_default();
        let before = entry.clone();
        if listed {
            entry.synced = true;
        }
        if entry.error.take().is_some() {
            tracing::info!(%kind, "kubernetes: {kind} list/watch works again");
        }
        if listed && !before.synced {
            tracing::info!(%kind, "kubernetes: {kind} listed; in sync");
        }
        *entry != before
    });
}

/// A list or watch of `kind` failed (kube retries it with backoff): recorded for
/// `/readyz` and Status, logged at warn when the reason changes (at debug while it repeats).
fn failed(sync: &watch::Sender<SyncMap>, kind: Kind, error: String) {
    sync.send_if_modified(|map| {
        let entry = map.entry(kind).or_default();
        if entry.error.as_deref() == Some(error.as_str()) {
            tracing::debug!(%kind, %error, "kubernetes: list/watch still failing");
            return false;
        }
        let waits = kind.needed_by();
        if entry.synced {
            tracing::warn!(%kind, %error, waits,
                "kubernetes: {kind} watch failed; keeping its objects as last seen and \
                 retrying with backoff");
        } else if kind.required() {
            tracing::warn!(%kind, %error, waits,
                "kubernetes: cannot list {kind}; the controller waits for it (retrying with \
                 backoff)");
        } else {
            tracing::warn!(%kind, %error, waits,
                "kubernetes: cannot list {kind}; what needs it waits, everything else goes on \
                 (retrying with backoff)");
        }
        entry.error = Some(error);
        true
    });
}

/// The [`Kind`] of a Kubernetes type, by its kind name.
fn object_kind<K: Resource<DynamicType = ()>>() -> Kind {
    match K::kind(&()).as_ref() {
        "Node" => Kind::Node,
        "Namespace" => Kind::Namespace,
        "Pod" => Kind::Pod,
        "Service" => Kind::Service,
        "EndpointSlice" => Kind::EndpointSlice,
        _ => Kind::NetworkPolicy,
    }
}

/// Starts the reflectors, waits until the required kinds have been listed and every other
/// kind listed or failed once, and starts the publisher.
pub(super) async fn start(
    client: Client,
) -> (
    watch::Receiver<Arc<ClusterState>>,
    mpsc::UnboundedReceiver<Vec<Delta>>,
    watch::Receiver<SyncMap>,
    Tasks,
) {
    let changed = Arc::new(Notify::new());
    let (delta_tx, delta_rx) = mpsc::unbounded_channel();
    let (sync_tx, mut sync_rx) = watch::channel(
        Kind::ALL
            .iter()
            .map(|kind| (*kind, KindSync::default()))
            .collect::<SyncMap>(),
    );
    let mut tasks = Tasks(Vec::new());
    let c = &client;
    let stores = Stores {
        nodes: reflect(
            c,
            changed.clone(),
            delta_tx.clone(),
            sync_tx.clone(),
            &mut tasks,
        ),
        namespaces: reflect(
            c,
            changed.clone(),
            delta_tx.clone(),
            sync_tx.clone(),
            &mut tasks,
        ),
        pods: reflect(
            c,
            changed.clone(),
            delta_tx.clone(),
            sync_tx.clone(),
            &mut tasks,
        ),
        services: reflect(
            c,
            changed.clone(),
            delta_tx.clone(),
            sync_tx.clone(),
            &mut tasks,
        ),
        endpoint_slices: reflect(
            c,
            changed.clone(),
            delta_tx.clone(),
            sync_tx.clone(),
            &mut tasks,
        ),
        network_policies: reflect(c, changed.clone(), delta_tx, sync_tx, &mut tasks),
    };
    // The senders live in the reflector tasks, which end only when the source is dropped,
    // so the channel cannot close while this waits.
    let _ = sync_rx
        .wait_for(|map| {
            map.iter()
                .all(|(kind, sync)| sync.synced || (!kind.required() && sync.error.is_some()))
        })
        .await;
    let waiting: Vec<String> = sync_rx
        .borrow()
        .iter()
        .filter(|(_, sync)| !sync.synced)
        .map(|(kind, _)| kind.to_string())
        .collect();
    let initial = stores.snapshot();
    tracing::info!(
        nodes = initial.nodes.len(),
        namespaces = initial.namespaces.len(),
        pods = initial.pods.len(),
        services = initial.services.len(),
        endpoint_slices = initial.endpoint_slices.len(),
        network_policies = initial.network_policies.len(),
        not_listed = ?waiting,
        "kubernetes: initial lists complete"
    );
    let (sender, receiver) = watch::channel(Arc::new(initial));
    tasks.push(tokio::spawn(publish(stores, changed, sender)));
    (receiver, delta_rx, sync_rx, tasks)
}

/// Publishes a snapshot after each burst of events, if it differs from the last one — only
/// while somebody besides the [`super::Source`] itself holds a receiver: a snapshot costs a
/// pass over the whole cluster, which the controller (reading deltas) never pays.
async fn publish(stores: Stores, changed: Arc<Notify>, sender: watch::Sender<Arc<ClusterState>>) {
    loop {
        changed.notified().await;
        tokio::time::sleep(COALESCE).await;
        if sender.receiver_count() <= 1 {
            continue;
        }
        let state = stores.snapshot();
        sender.send_if_modified(|published| {
            if **published == state {
                false
            } else {
                *published = Arc::new(state);
                true
            }
        });
    }
}

/// Whether the API server has the pod now (a GET: the reflector's view may lag behind).
pub(super) async fn has_pod(client: Client, key: &ObjectKey) -> Result<bool, Error> {
    listed::<Pod>(CONTROLLER_API_CALLS, "get");
    Api::<Pod>::namespaced(client, &key.namespace)
        .get_opt(&key.name)
        .await
        .map(|pod| pod.is_some())
        .map_err(|source| Error::Kube {
            action: format!("get pod {key}"),
            source,
        })
}

/// JSON merge patch (RFC 7386) of one annotation on one pod.
pub(super) async fn annotate_pod(
    client: Client,
    key: &ObjectKey,
    annotation_key: &str,
    value: &str,
) -> Result<(), Error> {
    listed::<Pod>(CONTROLLER_API_CALLS, "patch");
    let pods = Api::<Pod>::namespaced(client, &key.namespace);
    let patch = serde_json::json!({
        "metadata": { "annotations": { annotation_key: value } }
    });
    pods.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Kube {
            action: format!("annotate pod {key} with {annotation_key}"),
            source,
        })
}

/// `spec.podCIDR` of the Node `name` (what `switchyard node-setup --node` reads): one GET.
pub async fn node_pod_cidr(client: Client, name: &str) -> Result<ipnet::Ipv4Net, Error> {
    listed::<Node>(NODE_SETUP_API_CALLS, "get");
    let node = Api::<Node>::all(client)
        .get(name)
        .await
        .map_err(|source| Error::Kube {
            action: format!("get node {name}"),
            source,
        })?;
    let cidr = node.spec.and_then(|spec| spec.pod_cidr).unwrap_or_default();
    cidr.parse().map_err(|_| Error::NodePodCidr {
        node: name.to_owned(),
        value: cidr,
    })
}
