//! The network state: the one owner of what the controller wants the cluster's network to be.
//!
//! Owns: the validated model (nodes, pods, and the objects later features read), the address
//! allocations (IPAM) and the pod attachments (which pod's veth is on which port), all
//! changed by [`NetworkState::apply`] from a source's [`Delta`]s and by the CNI commands.
//! Every change that matters to the network produces a versioned [`ChangeSet`] naming what
//! changed (a pod on a node, a node); an update that changes nothing the network uses (a
//! pod's status, its resourceVersion, managedFields) produces none.
//!
//! Does not own: tasks or I/O. One task (the controller's state task) holds the
//! `NetworkState`; everyone else reads [`Snapshot`]s, which are consistent and cheap to
//! take (persistent maps: a snapshot shares structure with the live state, so taking one
//! costs nothing whatever the cluster's size, and an update costs O(log n)).
//!
//! Invalid updates never cost what works: an object whose new version is invalid keeps its
//! last good version (with a warning naming object and field) until a valid one arrives or
//! it is deleted; of two nodes whose pod CIDRs overlap the one already in use wins; every
//! object skipped is reported ([`NetworkState::problems`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use tracing::{info, warn};

use crate::ipam::{Ipam, IpamError, mac_for};
use crate::model::{NodeModel, PodModel, Problem, node_model, pod_model};
use crate::source::{Delta, Kind, Object, ObjectKey};
use crate::switch_config::PodPort;

mod policy;
pub use policy::{PolicyEnd, PolicyOwner, RuleKey};
mod service;
pub use service::{
    MAX_SERVICE_PORT_ID, ResolvedPort, ResolvedService, port_endpoints, userspace_datapath_balances,
};

/// What changed, as features need to hear it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A node appeared.
    NodeAdded(String),
    /// A node's pod CIDR or InternalIP changed.
    NodeChanged(String),
    /// A node is gone (deleted, or it became invalid with no good version to keep).
    NodeRemoved(String),
    /// A pod on this node changed: its model, its address or its attachment.
    Pod {
        /// The pod.
        key: ObjectKey,
        /// The node it is (or was) on.
        node: String,
    },
    /// A Namespace, Service, EndpointSlice or NetworkPolicy changed (read by the features
    /// that later issues add; nothing consumes it yet).
    Other(Kind, ObjectKey),
    /// Policy flows of one owner on one node must be recomputed: a policy, a namespace's
    /// labels or a pod changed what they hold.
    Policy {
        /// The node.
        node: String,
        /// Which of its policy owners.
        owner: PolicyOwner,
    },
    /// A Service's resolution changed (its model or its endpoints): its flows and groups
    /// on every node must be recomputed.
    Service(ObjectKey),
}

/// The changes one batch of deltas or one command made, with the state version after them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// The state's version once these changes are applied.
    pub version: u64,
    /// What changed, in the order it happened.
    pub changes: Vec<Change>,
}

impl ChangeSet {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A consistent, read-only view of the network state; clone freely.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Increases with every change set.
    pub version: u64,
    nodes: OrdMap<String, Arc<NodeModel>>,
    /// Pods that are networked: valid, scheduled to a node that exists.
    pods: OrdMap<ObjectKey, Arc<PodModel>>,
    pods_by_node: OrdMap<String, OrdSet<ObjectKey>>,
    pods_by_namespace: OrdMap<String, OrdSet<ObjectKey>>,
    pods_by_label: OrdMap<(String, String), OrdSet<ObjectKey>>,
    attachments: Attachments,
    others: OrdMap<(Kind, ObjectKey), Object>,
    policy: policy::PolicyIndex,
    services: service::ServiceIndex,
}

impl Snapshot {
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Arc<NodeModel>> {
        self.nodes.get(name)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<NodeModel>> {
        self.nodes.values()
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A networked pod.
    pub fn pod(&self, key: &ObjectKey) -> Option<&Arc<PodModel>> {
        self.pods.get(key)
    }

    /// How many pods are networked.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// The networked pods of a node.
    pub fn pods_on(&self, node: &str) -> impl Iterator<Item = &ObjectKey> {
        self.pods_by_node.get(node).into_iter().flatten()
    }

    /// How many networked pods a node has (without walking them).
    pub fn pod_count_on(&self, node: &str) -> usize {
        self.pods_by_node.get(node).map_or(0, OrdSet::len)
    }

    /// How many pods are attached (CNI ADD made their port), cluster-wide.
    pub fn attachment_count(&self) -> usize {
        self.attachments.len()
    }

    /// The networked pods of a namespace.
    pub fn pods_in_namespace(&self, namespace: &str) -> impl Iterator<Item = &ObjectKey> {
        self.pods_by_namespace.get(namespace).into_iter().flatten()
    }

    /// The networked pods carrying label `key=value`.
    pub fn pods_with_label(&self, key: &str, value: &str) -> impl Iterator<Item = &ObjectKey> {
        self.pods_by_label
            .get(&(key.to_owned(), value.to_owned()))
            .into_iter()
            .flatten()
    }

    /// A pod's attachment (its port on its node's br-int), once CNI ADD made it.
    pub fn attachment(&self, key: &ObjectKey) -> Option<&Arc<PodPort>> {
        self.attachments.get(key)
    }

    /// The attachments of a node's pods.
    pub fn attachments_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<PodPort>> {
        self.attachments.on(node)
    }

    /// An object of a kind the pod network does not read yet (Namespace, Service,
    /// EndpointSlice, NetworkPolicy).
    pub fn object(&self, kind: Kind, key: &ObjectKey) -> Option<&Object> {
        self.others.get(&(kind, key.clone()))
    }
}

/// Pod attachments, by pod and by node: an agent reads its node's without a lookup per
/// pod (it does on every wake). Only networked pods have one; a pod's node never changes
/// while it is attached (a pod moved is a pod removed, which removes its attachment).
#[derive(Clone, Debug, Default)]
struct Attachments {
    by_pod: OrdMap<ObjectKey, (String, Arc<PodPort>)>,
    by_node: OrdMap<String, OrdMap<ObjectKey, Arc<PodPort>>>,
}

impl Attachments {
    fn get(&self, key: &ObjectKey) -> Option<&Arc<PodPort>> {
        self.by_pod.get(key).map(|(_, port)| port)
    }

    fn contains_key(&self, key: &ObjectKey) -> bool {
        self.by_pod.contains_key(key)
    }

    fn len(&self) -> usize {
        self.by_pod.len()
    }

    fn on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<PodPort>> {
        self.by_node.get(node).into_iter().flat_map(|m| m.values())
    }

    fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<PodPort>)> {
        self.by_pod.iter().map(|(k, (_, port))| (k, port))
    }

    fn insert(&mut self, node: &str, port: Arc<PodPort>) {
        let key = port.pod.clone();
        self.remove(&key);
        self.by_node
            .entry(node.to_owned())
            .or_default()
            .insert(key.clone(), port.clone());
        self.by_pod.insert(key, (node.to_owned(), port));
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<PodPort>> {
        let (node, port) = self.by_pod.remove(key)?;
        if let Some(ports) = self.by_node.get_mut(&node) {
            ports.remove(key);
            if ports.is_empty() {
                self.by_node.remove(&node);
            }
        }
        Some(port)
    }
}

/// The result of a CNI ADD as far as the state goes: the pod's node and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The node the pod is on.
    pub node: Arc<NodeModel>,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The address was allocated by this attachment (the pod held none before): a failed
    /// ADD gives it back ([`NetworkState::release_unattached`]).
    pub fresh_address: bool,
}

/// An attachment CNI DEL or GC removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// The node it was on.
    pub node: String,
    /// The port it had.
    pub port: Arc<PodPort>,
}

/// Why an attachment could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The pod is not networked (not in the source, not scheduled, host network, or its
    /// node has no valid Node object).
    #[error("pod {0} is not in the cluster state (or its node has no valid Node object)")]
    UnknownPod(ObjectKey),
    /// The source has the pod, but it is invalid (and has no earlier valid version): it
    /// stays unnetworked until it is fixed, so waiting for it is pointless.
    #[error("pod {0} is invalid: {1}")]
    InvalidPod(ObjectKey, Problem),
    /// No address could be given.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The caller proved it is node `caller`, and the pod is scheduled on another node.
    #[error(
        "node {caller} may not attach pod {pod}: the pod is scheduled on node {node} (spec.nodeName); a node attaches only its own pods"
    )]
    OtherNode {
        /// The pod.
        pod: ObjectKey,
        /// Its node.
        node: String,
        /// The node the caller proved to be.
        caller: String,
    },
    /// The pod is attached for another container, which the caller did not show dead:
    /// its address stays with the running container.
    #[error(
        "pod {pod} is attached for container {running}, which is still running; DEL that container first"
    )]
    Running {
        /// The pod.
        pod: ObjectKey,
        /// The container id holding the attachment.
        running: String,
    },
}

/// What [`NetworkState::attach_checked`] must see before it attaches (the CNI server's
/// authorisation and takeover rule, decided atomically in the state task).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachRules {
    /// The node the caller proved to be (its TLS certificate); `None`: a caller trusted
    /// for every node (the unix socket, plaintext loopback).
    pub caller_node: Option<String>,
    /// The container whose attachment the caller found dead and may replace; an
    /// attachment for any other container is refused.
    pub replaces: Option<String>,
}

/// The state itself. One task owns it; see the module docs.
#[derive(Debug, Default)]
pub struct NetworkState {
    snap: Snapshot,
    /// Valid pods whose node is unknown (yet): networked as soon as the node appears.
    pending: BTreeMap<ObjectKey, Arc<PodModel>>,
    /// Every object currently skipped or held at its last good version, and why.
    problems: BTreeMap<(Kind, ObjectKey), Problem>,
    ipam: Ipam,
    /// Pods whose model, address or presence changed in the batch being applied: their
    /// policy memberships are brought up to date before the change set is finished.
    touched_pods: BTreeMap<ObjectKey, String>,
    /// Every NetworkPolicy is audited, annotated or not (`--policy-audit`).
    policy_audit_all: bool,
    /// The nodes run ovs-vswitchd's userspace datapath (`--datapath netdev`): Service ports
    /// of a protocol it cannot balance are refused ([`userspace_datapath_balances`]).
    userspace_datapath: bool,
}

impl NetworkState {
    /// Audit every NetworkPolicy applied from now on (`--policy-audit`), not only those
    /// with the annotation `crate::policy::AUDIT_ANNOTATION`.
    pub fn set_policy_audit_all(&mut self, all: bool) {
        self.policy_audit_all = all;
    }

    /// The nodes run the userspace datapath (`--datapath netdev`), or the kernel's
    /// (`system`; the default of a new state). Set before the first Service is applied.
    pub fn set_userspace_datapath(&mut self, userspace: bool) {
        self.userspace_datapath = userspace;
    }

    /// An empty state.
    pub fn new() -> NetworkState {
        NetworkState::default()
    }

    /// A consistent view for other tasks.
    pub fn snapshot(&self) -> Snapshot {
        self.snap.clone()
    }

    /// What is wrong with objects right now (skipped, held at their last good version, or
    /// used with a part not programmed as asked, such as a Service's SCTP port).
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.values()
    }

    /// Applies a batch of deltas from a source.
    pub fn apply(&mut self, deltas: Vec<Delta>) -> ChangeSet {
        let mut changes = Vec::new();
        // Nodes first: a batch holding a node and its pods (the initial list) then adopts
        // the pods in one pass.
        let (nodes, rest): (Vec<Delta>, Vec<Delta>) = deltas.into_iter().partition(|d| {
            matches!(
                d,
                Delta::Apply(Object::Node(_)) | Delta::Delete(Kind::Node, _)
            )
        });
        for delta in nodes.into_iter().chain(rest) {
            match delta {
                Delta::Apply(Object::Node(node)) => self.apply_node(&node, &mut changes),
                Delta::Delete(Kind::Node, key) => self.delete_node(&key.name, &mut changes),
                Delta::Apply(Object::Pod(pod)) => self.apply_pod(&pod, &mut changes),
                Delta::Delete(Kind::Pod, key) => self.delete_pod(&key, &mut changes),
                Delta::Apply(Object::NetworkPolicy(np)) => {
                    let key = Object::NetworkPolicy(np.clone()).key();
                    self.apply_policy(&key, Some(&np), &mut changes);
                }
                Delta::Delete(Kind::NetworkPolicy, key) => {
                    self.apply_policy(&key, None, &mut changes);
                }
                Delta::Apply(Object::Namespace(ns)) => {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    let labels: policy::Labels = ns
                        .metadata
                        .labels
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    self.apply_namespace(&name, Some(labels), &mut changes);
                    let id = (Kind::Namespace, ObjectKey::new("", name));
                    let other = Object::Namespace(ns);
                    if self.snap.others.get(&id) != Some(&other) {
                        self.snap.others.insert(id.clone(), other);
                        changes.push(Change::Other(id.0, id.1));
                    }
                }
                Delta::Apply(Object::Service(svc)) => {
                    let key = Object::Service(svc.clone()).key();
                    self.apply_service(&key, Some(&svc), &mut changes);
                    self.keep_other(Object::Service(svc), &mut changes);
                }
                Delta::Apply(Object::EndpointSlice(slice)) => {
                    let key = Object::EndpointSlice(slice.clone()).key();
                    self.apply_slice(&key, Some(&slice), &mut changes);
                    self.keep_other(Object::EndpointSlice(slice), &mut changes);
                }
                Delta::Delete(kind, key) => {
                    if kind == Kind::Namespace {
                        self.apply_namespace(&key.name, None, &mut changes);
                    }
                    if kind == Kind::Service {
                        self.apply_service(&key, None, &mut changes);
                    }
                    if kind == Kind::EndpointSlice {
                        self.apply_slice(&key, None, &mut changes);
                    }
                    if self.snap.others.remove(&(kind, key.clone())).is_some() {
                        changes.push(Change::Other(kind, key));
                    }
                }
            }
        }
        self.finish(changes)
    }

    fn keep_other(&mut self, other: Object, changes: &mut Vec<Change>) {
        let id = (other.kind(), other.key());
        if self.snap.others.get(&id) != Some(&other) {
            self.snap.others.insert(id.clone(), other);
            changes.push(Change::Other(id.0, id.1));
        }
    }

    fn finish(&mut self, mut changes: Vec<Change>) -> ChangeSet {
        for c in &changes {
            if let Change::Pod { key, node } = c {
                self.touched_pods.insert(key.clone(), node.clone());
            }
        }
        self.refresh_pods(&mut changes);
        if !changes.is_empty() {
            self.snap.version += 1;
        }
        ChangeSet {
            version: self.snap.version,
            changes,
        }
    }

    fn report(&mut self, kind: Kind, key: ObjectKey, problem: Problem, kept: bool) {
        if self.problems.get(&(kind, key.clone())) != Some(&problem) {
            if kept {
                warn!(object = %problem.object, field = %problem.field,
                    "invalid update: {}; keeping the last good version", problem.reason);
            } else {
                warn!(object = %problem.object, field = %problem.field,
                    "skipping invalid object: {}", problem.reason);
            }
        }
        self.problems.insert((kind, key), problem);
    }

    /// Records what is wrong with an object that is used all the same (a part of it is not
    /// programmed as asked); warns once per change of the notice.
    fn note(&mut self, kind: Kind, key: &ObjectKey, notice: Problem) {
        if self.problems.get(&(kind, key.clone())) != Some(&notice) {
            warn!(object = %notice.object, field = %notice.field, "{}", notice.reason);
        }
        self.problems.insert((kind, key.clone()), notice);
    }

    fn clear_problem(&mut self, kind: Kind, key: &ObjectKey) {
        if let Some(p) = self.problems.remove(&(kind, key.clone())) {
            info!(object = %p.object, "object is valid again");
        }
    }

    fn apply_node(&mut self, node: &k8s_openapi::api::core::v1::Node, changes: &mut Vec<Change>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let key = ObjectKey::new("", name.clone());
        let current = self.snap.nodes.get(&name).cloned();
        let model = match node_model(&name, node) {
            Ok(m) => m,
            Err(problem) => {
                self.report(Kind::Node, key, problem, current.is_some());
                return;
            }
        };
        // Of two nodes whose pod CIDRs overlap, the one already in use keeps its CIDR.
        if let Some(other) = self.snap.nodes.values().find(|n| {
            *n.name != *name
                && (n.pod_cidr.contains(&model.pod_cidr.network())
                    || model.pod_cidr.contains(&n.pod_cidr.network()))
        }) {
            let problem = Problem {
                object: format!("Node/{name}"),
                field: "spec.podCIDR".into(),
                reason: format!(
                    "{} overlaps the pod CIDR {} of node {}, which is in use",
                    model.pod_cidr, other.pod_cidr, other.name
                ),
            };
            self.report(Kind::Node, key, problem, current.is_some());
            return;
        }
        self.clear_problem(Kind::Node, &key);
        if current.as_deref() == Some(&model) {
            return;
        }
        let model = Arc::new(model);
        self.snap.nodes.insert(name.clone(), model.clone());
        match current {
            None => {
                self.ipam.set_node(&name, model.pod_cidr);
                changes.push(Change::NodeAdded(name.clone()));
                // Pods that waited for this node are networked now.
                let waiting: Vec<ObjectKey> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.node == name)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in waiting {
                    self.clear_problem(Kind::Pod, &k);
                    if let Some(p) = self.pending.remove(&k) {
                        self.insert_pod(p, changes);
                    }
                }
            }
            Some(old) => {
                if old.pod_cidr != model.pod_cidr {
                    // Addresses from the old CIDR mean nothing now: the pods need a new ADD.
                    warn!(node = %name, old = %old.pod_cidr, new = %model.pod_cidr,
                        "pod CIDR changed: the node's pods lose their addresses and ports");
                    self.ipam.set_node(&name, model.pod_cidr);
                    let pods: Vec<ObjectKey> = self.snap.pods_on(&name).cloned().collect();
                    for k in pods {
                        self.snap.attachments.remove(&k);
                        changes.push(Change::Pod {
                            key: k,
                            node: name.clone(),
                        });
                    }
                }
                changes.push(Change::NodeChanged(name));
            }
        }
    }

    fn delete_node(&mut self, name: &str, changes: &mut Vec<Change>) {
        self.problems
            .remove(&(Kind::Node, ObjectKey::new("", name.to_owned())));
        if self.snap.nodes.remove(name).is_none() {
            return;
        }
        info!(node = %name, "node removed; its pods wait for it to return");
        let pods: Vec<ObjectKey> = self.snap.pods_on(name).cloned().collect();
        for k in pods {
            self.touched_pods.insert(k.clone(), name.to_owned());
            if let Some(p) = self.remove_pod(&k) {
                self.pending.insert(k, p);
            }
        }
        self.ipam.remove_node(name);
        changes.push(Change::NodeRemoved(name.to_owned()));
    }

    fn apply_pod(&mut self, pod: &k8s_openapi::api::core::v1::Pod, changes: &mut Vec<Change>) {
        let key = ObjectKey::new(
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let current = self
            .snap
            .pods
            .get(&key)
            .or_else(|| self.pending.get(&key))
            .cloned();
        let model = match pod_model(&key, pod) {
            Ok(Some(m)) => m,
            // Not (or no longer) networked: unscheduled, host network, finished.
            Ok(None) => {
                self.clear_problem(Kind::Pod, &key);
                self.delete_pod(&key, changes);
                return;
            }
            Err(problem) => {
                self.report(Kind::Pod, key, problem, current.is_some());
                return;
            }
        };
        if let Some(old) = &current
            && old.node != model.node
        {
            // spec.nodeName is immutable once set: a changed one is an invalid edit.
            let problem = Problem {
                object: format!("Pod/{key}"),
                field: "spec.nodeName".into(),
                reason: format!(
                    "changed from {} to {}, but a scheduled pod's node cannot change",
                    old.node, model.node
                ),
            };
            self.report(Kind::Pod, key, problem, true);
            return;
        }
        if current.as_deref() == Some(&model) {
            self.clear_problem(Kind::Pod, &key);
            return;
        }
        if !self.snap.nodes.contains_key(&model.node) {
            let problem = Problem {
                object: format!("Pod/{key}"),
                field: "spec.nodeName".into(),
                reason: format!(
                    "node {} has no valid Node object; the pod is networked once it has",
                    model.node
                ),
            };
            self.report(Kind::Pod, key.clone(), problem, false);
            self.pending.insert(key, Arc::new(model));
            return;
        }
        self.clear_problem(Kind::Pod, &key);
        if let Some(old) = current {
            self.unindex_labels(&key, &old);
        }
        self.insert_pod(Arc::new(model), changes);
    }

    fn insert_pod(&mut self, model: Arc<PodModel>, changes: &mut Vec<Change>) {
        let key = model.key.clone();
        // Addresses recorded on pod objects come back first, so a node whose OVSDB was lost
        // still gives its pods the addresses they had.
        if let Some(ip) = model.recorded_ip
            && self.ipam.address_of(&key).is_none()
            && let Err(e) = self.ipam.restore(&model.node, &key, ip)
        {
            warn!(pod = %key, %ip, "recorded address not restored: {e}");
        }
        let s = &mut self.snap;
        s.pods_by_node
            .entry(model.node.clone())
            .or_default()
            .insert(key.clone());
        s.pods_by_namespace
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.clone());
        for (k, v) in &model.labels {
            s.pods_by_label
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(key.clone());
        }
        let node = model.node.clone();
        s.pods.insert(key.clone(), model);
        self.pending.remove(&key);
        changes.push(Change::Pod { key, node });
    }

    fn unindex_labels(&mut self, key: &ObjectKey, model: &PodModel) {
        for (k, v) in &model.labels {
            let label = (k.clone(), v.clone());
            if let Some(set) = self.snap.pods_by_label.get_mut(&label) {
                set.remove(key);
                if set.is_empty() {
                    self.snap.pods_by_label.remove(&label);
                }
            }
        }
    }

    /// Takes a pod out of the networked set and its indexes; releases address and
    /// attachment.
    fn remove_pod(&mut self, key: &ObjectKey) -> Option<Arc<PodModel>> {
        let model = self.snap.pods.remove(key)?;
        self.unindex_labels(key, &model);
        let s = &mut self.snap;
        for (index, group) in [
            (&mut s.pods_by_node, &model.node),
            (&mut s.pods_by_namespace, &key.namespace),
        ] {
            if let Some(set) = index.get_mut(group) {
                set.remove(key);
                if set.is_empty() {
                    index.remove(group);
                }
            }
        }
        s.attachments.remove(key);
        if let Some(ip) = self.ipam.release(key) {
            info!(pod = %key, %ip, "pod gone: address released");
        }
        Some(model)
    }

    fn delete_pod(&mut self, key: &ObjectKey, changes: &mut Vec<Change>) {
        self.pending.remove(key);
        self.problems.remove(&(Kind::Pod, key.clone()));
        if let Some(model) = self.remove_pod(key) {
            changes.push(Change::Pod {
                key: key.clone(),
                node: model.node.clone(),
            });
        }
    }

    /// CNI ADD: gives the pod its address (the one it holds, if any) and records its port.
    pub fn attach(
        &mut self,
        key: &ObjectKey,
        iface: &str,
        container_id: &str,
    ) -> (Result<Attached, AttachError>, ChangeSet) {
        let Some(pod) = self.snap.pods.get(key).cloned() else {
            let error = match self.problems.get(&(Kind::Pod, key.clone())) {
                Some(problem) if !self.pending.contains_key(key) => {
                    AttachError::InvalidPod(key.clone(), problem.clone())
                }
                _ => AttachError::UnknownPod(key.clone()),
            };
            return (Err(error), self.finish(vec![]));
        };
        let Some(node) = self.snap.nodes.get(&pod.node).cloned() else {
            return (
                Err(AttachError::UnknownPod(key.clone())),
                self.finish(vec![]),
            );
        };
        let fresh_address = self.ipam.address_of(key).is_none();
        let ip = match self.ipam.allocate(&node.name, key) {
            Ok(ip) => ip,
            Err(e) => return (Err(e.into()), self.finish(vec![])),
        };
        let port = PodPort {
            iface: iface.to_owned(),
            pod: key.clone(),
            ip,
            mac: mac_for(ip),
            container_id: container_id.to_owned(),
        };
        let mut changes = vec![];
        if self.snap.attachments.get(key).map(|p| &**p) != Some(&port) {
            self.snap.attachments.insert(&node.name, Arc::new(port));
            changes.push(Change::Pod {
                key: key.clone(),
                node: node.name.to_string(),
            });
        }
        (
            Ok(Attached {
                node,
                ip,
                fresh_address,
            }),
            self.finish(changes),
        )
    }

    /// CNI ADD as the CNI server makes it: [`NetworkState::attach`], once the pod is on the
    /// caller's node and holds no attachment of another container than the one
    /// `rules.replaces` names (the takeover rule, docs/operations.md). A refusal changes
    /// nothing.
    pub fn attach_checked(
        &mut self,
        key: &ObjectKey,
        iface: &str,
        container_id: &str,
        rules: &AttachRules,
    ) -> (Result<Attached, AttachError>, ChangeSet) {
        if let (Some(caller), Some(pod)) = (&rules.caller_node, self.snap.pods.get(key))
            && &pod.node != caller
        {
            let error = AttachError::OtherNode {
                pod: key.clone(),
                node: pod.node.clone(),
                caller: caller.clone(),
            };
            return (Err(error), self.finish(vec![]));
        }
        if let Some(held) = self.snap.attachments.get(key)
            && held.container_id != container_id
            && rules.replaces.as_deref() != Some(held.container_id.as_str())
        {
            let error = AttachError::Running {
                pod: key.clone(),
                running: held.container_id.clone(),
            };
            return (Err(error), self.finish(vec![]));
        }
        self.attach(key, iface, container_id)
    }

    /// Gives back the address of a pod that holds no attachment (a failed first ADD):
    /// nothing of it stays allocated. A pod still attached keeps its address.
    pub fn release_unattached(&mut self, key: &ObjectKey) -> ChangeSet {
        if !self.snap.attachments.contains_key(key)
            && let Some(ip) = self.ipam.release(key)
        {
            info!(pod = %key, %ip, "failed ADD: address released");
        }
        self.finish(vec![])
    }

    /// CNI DEL: removes the attachment (and keeps the address, which the pod holds until
    /// its object goes). A DEL for another sandbox than the attached one changes nothing.
    /// Without a pod name (a runtime may send DEL without CNI_ARGS) the attachment is found
    /// by its container id. Returns what was removed, if anything.
    pub fn detach(&mut self, key: &ObjectKey, container_id: &str) -> (Option<Detached>, ChangeSet) {
        let key = if key.name.is_empty() {
            // Rare (DEL without pod identity): a scan of the attachments.
            let found = self
                .snap
                .attachments
                .iter()
                .find(|(_, a)| !container_id.is_empty() && a.container_id == container_id)
                .map(|(k, _)| k.clone());
            match found {
                Some(k) => k,
                None => return (None, self.finish(vec![])),
            }
        } else {
            key.clone()
        };
        let matches = self
            .snap
            .attachments
            .get(&key)
            .is_some_and(|a| container_id.is_empty() || a.container_id == container_id);
        if !matches {
            return (None, self.finish(vec![]));
        }
        let Some(port) = self.snap.attachments.remove(&key) else {
            return (None, self.finish(vec![]));
        };
        let node = self.snap.pods.get(&key).map(|p| p.node.clone());
        let changes = node
            .iter()
            .map(|n| Change::Pod {
                key: key.clone(),
                node: n.clone(),
            })
            .collect();
        let detached = node.map(|node| Detached { node, port });
        (detached, self.finish(changes))
    }

    /// CNI GC: removes every attachment on `node` whose host interface is not in `keep`
    /// (the runtime's valid attachments). Returns the pods detached.
    pub fn collect_garbage(
        &mut self,
        node: &str,
        keep: &std::collections::HashSet<String>,
    ) -> (Vec<Detached>, ChangeSet) {
        let stale: Vec<(ObjectKey, Arc<PodPort>)> = self
            .snap
            .attachments_on(node)
            .filter(|a| !keep.contains(&a.iface))
            .map(|a| (a.pod.clone(), a.clone()))
            .collect();
        let mut changes = vec![];
        let mut detached = vec![];
        for (key, port) in stale {
            self.snap.attachments.remove(&key);
            changes.push(Change::Pod {
                key,
                node: node.to_owned(),
            });
            detached.push(Detached {
                node: node.to_owned(),
                port,
            });
        }
        (detached, self.finish(changes))
    }

    /// Takes back the attachments a previous controller left on a node's OVSDB. A port
    /// whose pod is gone (or is on another node) is left out, so the node's next OVSDB plan
    /// removes it; a pod already attached keeps its attachment.
    pub fn restore_attachments(&mut self, node: &str, ports: Vec<PodPort>) -> ChangeSet {
        let mut changes = vec![];
        for port in ports {
            let on_node = self
                .snap
                .pods
                .get(&port.pod)
                .is_some_and(|p| p.node == node);
            if !on_node || self.snap.attachments.contains_key(&port.pod) {
                continue;
            }
            match self.ipam.restore(node, &port.pod, port.ip) {
                Ok(()) => {
                    info!(node = %node, pod = %port.pod, ip = %port.ip, iface = %port.iface,
                        "restored pod attachment from OVSDB");
                    changes.push(Change::Pod {
                        key: port.pod.clone(),
                        node: node.to_owned(),
                    });
                    self.snap.attachments.insert(node, Arc::new(port));
                }
                Err(e) => warn!(node = %node, pod = %port.pod, "cannot restore attachment: {e}"),
            }
        }
        self.finish(changes)
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
