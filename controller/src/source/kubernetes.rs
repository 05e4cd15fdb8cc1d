//! The Kubernetes API server as a source: one `kube` reflector per kind, their stores
//! combined into [`ClusterState`] snapshots.
//!
//! Owns list+watch (through `kube::runtime`, which handles resourceVersions, bookmarks,
//! re-lists after `410 Gone` and backoff) and the one write the controller makes: the
//! pod allocation annotation. It does not interpret the objects.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use tokio::sync::{Notify, mpsc, watch};

use super::{ClusterState, Delta, Error, Kind, Object, ObjectKey, Tasks};

/// How long a burst of watch events may last before the state is published: one
/// publication per burst rather than one per event (a Deployment rollout touches pods,
/// endpoint slices and services within milliseconds of each other).
const COALESCE: Duration = Duration::from_millis(50);

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

    async fn wait_until_ready(&self) {
        // A store's writer lives in its reflector task, which only ends when the source
        // is dropped, so `WriterDropped` cannot happen while anyone waits here.
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.endpoint_slices.wait_until_ready().await;
        let _ = self.network_policies.wait_until_ready().await;
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
    tasks: &mut Tasks,
) -> Store<K>
where
    K: Resource<DynamicType = (), Scope: Send>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + Into<Object>
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let api = Api::<K>::all(client.clone());
    let kind = K::kind(&());
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
                    changed.notify_one();
                }
                // Includes objects the server sent that do not deserialize: kube fails
                // that list/watch and the backoff retries it.
                Err(error) => tracing::warn!(%kind, %error,
                    "kubernetes: list/watch failed; retrying with backoff"),
            }
        }
    };
    tasks.push(tokio::spawn(task));
    reader
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

/// Starts the reflectors, waits until each kind has been listed once, and starts the
/// publisher.
pub(super) async fn start(
    client: Client,
) -> (
    watch::Receiver<Arc<ClusterState>>,
    mpsc::UnboundedReceiver<Vec<Delta>>,
    Tasks,
) {
    let changed = Arc::new(Notify::new());
    let (delta_tx, delta_rx) = mpsc::unbounded_channel();
    let mut tasks = Tasks(Vec::new());
    let stores = Stores {
        nodes: reflect(&client, changed.clone(), delta_tx.clone(), &mut tasks),
        namespaces: reflect(&client, changed.clone(), delta_tx.clone(), &mut tasks),
        pods: reflect(&client, changed.clone(), delta_tx.clone(), &mut tasks),
        services: reflect(&client, changed.clone(), delta_tx.clone(), &mut tasks),
        endpoint_slices: reflect(&client, changed.clone(), delta_tx.clone(), &mut tasks),
        network_policies: reflect(&client, changed.clone(), delta_tx, &mut tasks),
    };
    stores.wait_until_ready().await;
    let initial = stores.snapshot();
    tracing::info!(
        nodes = initial.nodes.len(),
        namespaces = initial.namespaces.len(),
        pods = initial.pods.len(),
        services = initial.services.len(),
        endpoint_slices = initial.endpoint_slices.len(),
        network_policies = initial.network_policies.len(),
        "kubernetes: initial lists complete"
    );
    let (sender, receiver) = watch::channel(Arc::new(initial));
    tasks.push(tokio::spawn(publish(stores, changed, sender)));
    (receiver, delta_rx, tasks)
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

/// JSON merge patch (RFC 7386) of one annotation on one pod.
/// Whether the API server has the pod now (a GET: the reflector's view may lag behind).
pub(super) async fn has_pod(client: Client, key: &ObjectKey) -> Result<bool, Error> {
    Api::<Pod>::namespaced(client, &key.namespace)
        .get_opt(&key.name)
        .await
        .map(|pod| pod.is_some())
        .map_err(|source| Error::Kube {
            action: format!("get pod {key}"),
            source,
        })
}

pub(super) async fn annotate_pod(
    client: Client,
    key: &ObjectKey,
    annotation_key: &str,
    value: &str,
) -> Result<(), Error> {
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
