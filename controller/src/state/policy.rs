//! The state's NetworkPolicy share: validated policies, namespace labels, and the
//! memberships the policy feature reads — which pods each policy selects (per node), which
//! pods and address blocks each rule's peers hold — kept up to date incrementally.
//!
//! Owns: the memberships and the conjunction ids, and deciding which policy owners a change
//! touches on which node ([`Change::Policy`]). A pod change looks only at the selectors that
//! may select it: every selector is indexed by an anchor (a label it requires, else the
//! namespace it is confined to, else "all namespaces"), and a pod looks up its own labels,
//! its namespace's labels and its namespace — never every policy or every pod. A policy
//! change costs the pods it selects and names; a namespace's label change, its pods.
//!
//! Conjunction ids: a 32-bit FNV-1a hash of `namespace/name/direction/index`, skipping 0
//! and ids in use (linear probing). The same policy gets the same ids after a restart,
//! so its flows are not rewritten; only two rules whose hashes collide may swap ids when
//! they arrive in another order (both rules' flows are then rewritten in one bundle: never a
//! wrong verdict). An `IdAllocator`'s lowest-free numbering would depend on arrival order
//! for every rule.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use ipnet::Ipv4Net;
use tracing::info;

use super::{Change, NetworkState, Snapshot};
use crate::model::PodModel;
pub use crate::policy::Labels;
use crate::policy::{
    Direction, NAMESPACE_NAME_LABEL, Namespaces, Peer, PolicyModel, PortMatch, Rule, Selector,
    host, policy_model,
};
use crate::source::{Kind, ObjectKey};

/// One rule of one policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    /// The policy.
    pub policy: ObjectKey,
    /// Ingress or egress.
    pub direction: Direction,
    /// Its index in `spec.ingress` or `spec.egress`.
    pub index: u16,
}

impl std::fmt::Display for RuleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}[{}]",
            self.policy,
            self.direction.field(),
            self.index
        )
    }
}

/// A unit of policy flows on one node (see `features::policy`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyOwner {
    /// A local pod's clause flows as a selected pod of every rule of `direction`, its
    /// default drop and its direct allows.
    Target(Direction, Arc<ObjectKey>),
    /// A rule's `conj_id` flow.
    Rule(Arc<RuleKey>),
    /// The peer clause flows naming one address or block, shared by every rule that
    /// includes it (`0.0.0.0/0` also holds egress rules with ports and no `to`).
    Peer(Direction, Ipv4Net),
}

/// The policy memberships, part of every snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicyIndex {
    policies: OrdMap<ObjectKey, Arc<PolicyModel>>,
    /// Labels of the namespaces that have a Namespace object (with the metadata.name label).
    namespaces: OrdMap<String, Arc<Labels>>,
    /// Pods each policy selects, and how many on each node.
    targets: OrdMap<ObjectKey, OrdSet<ObjectKey>>,
    target_nodes: OrdMap<ObjectKey, OrdMap<String, u32>>,
    node_policies: OrdMap<String, OrdSet<ObjectKey>>,
    pod_policies: OrdMap<ObjectKey, OrdSet<ObjectKey>>,
    /// Pods each rule's peers hold (for egress rules without `to` but with named ports:
    /// every pod, which the named port then resolves against).
    rule_peers: OrdMap<RuleKey, OrdSet<ObjectKey>>,
    pod_rules: OrdMap<ObjectKey, OrdSet<RuleKey>>,
    /// Rules naming each address block; `0.0.0.0/0` also for egress rules without `to`.
    block_rules: OrdMap<Ipv4Net, OrdSet<RuleKey>>,
    /// The address each pod's policy flows were computed with, and back.
    pod_ip: OrdMap<ObjectKey, Ipv4Addr>,
    ip_pod: OrdMap<Ipv4Addr, ObjectKey>,
    conj_ids: OrdMap<RuleKey, u32>,
    /// The rule holding each conjunction id (what an audit packet-in's cookie names).
    used_ids: OrdMap<u32, RuleKey>,
    by_anchor: OrdMap<Anchor, OrdSet<Selecting>>,
}

/// What a selector is indexed by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Anchor {
    PodLabel(String, String),
    NamespaceLabel(String, String),
    Namespace(String),
    AllNamespaces,
}

/// Whose selector it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Selecting {
    Targets(ObjectKey),
    Peers(RuleKey),
}

/// Whether a rule's peers hold pods (materialised in `rule_peers`).
fn rule_has_pod_peers(rule: &Rule, direction: Direction) -> bool {
    match &rule.peers {
        Some(peers) => peers.iter().any(|p| matches!(p, Peer::Pods { .. })),
        None => direction == Direction::Egress && named_ports(rule),
    }
}

/// The address blocks a rule's peer clause names: its ipBlocks (minus their excepts), and
/// `0.0.0.0/0` for an egress rule with ports and no `to`.
fn rule_blocks(rule: &Rule, direction: Direction) -> BTreeSet<Ipv4Net> {
    let mut blocks: BTreeSet<Ipv4Net> = rule
        .peers
        .iter()
        .flatten()
        .filter_map(|p| match p {
            Peer::Block(b) => Some(b.iter().copied()),
            Peer::Pods { .. } => None,
        })
        .flatten()
        .collect();
    if rule.peers.is_none() && direction == Direction::Egress && rule.ports.is_some() {
        blocks.insert(Ipv4Net::default());
    }
    blocks
}

fn named_ports(rule: &Rule) -> bool {
    rule.ports
        .iter()
        .flatten()
        .any(|p| matches!(p.port, PortMatch::Named(_)))
}

fn rules_of(policy: &PolicyModel) -> impl Iterator<Item = (RuleKey, &Rule)> {
    Direction::BOTH.into_iter().flat_map(move |d| {
        policy
            .rules(d)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(i, r)| {
                (
                    RuleKey {
                        policy: policy.key.clone(),
                        direction: d,
                        index: i as u16,
                    },
                    r,
                )
            })
    })
}

fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl Snapshot {
    /// A valid NetworkPolicy.
    pub fn policy(&self, key: &ObjectKey) -> Option<&Arc<PolicyModel>> {
        self.policy.policies.get(key)
    }

    /// How many valid policies there are.
    pub fn policy_count(&self) -> usize {
        self.policy.policies.len()
    }

    /// A namespace's labels (with `kubernetes.io/metadata.name`, which the API server sets
    /// on every Namespace; a namespace without an object has only that one).
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        match self.policy.namespaces.get(namespace) {
            Some(l) => (**l).clone(),
            None => vec![(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned())],
        }
    }

    /// The policies selecting a pod.
    pub fn policies_selecting(&self, pod: &ObjectKey) -> impl Iterator<Item = &Arc<PolicyModel>> {
        self.policy
            .pod_policies
            .get(pod)
            .into_iter()
            .flatten()
            .filter_map(|k| self.policy.policies.get(k))
    }

    /// The policies selecting at least one pod of a node.
    pub fn policies_on(&self, node: &str) -> impl Iterator<Item = &Arc<PolicyModel>> {
        self.policy
            .node_policies
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.policy.policies.get(k))
    }

    /// Whether a policy selects a pod of this node.
    pub fn policy_on(&self, policy: &ObjectKey, node: &str) -> bool {
        self.policy
            .node_policies
            .get(node)
            .is_some_and(|s| s.contains(policy))
    }

    /// The pods a policy selects.
    pub fn policy_targets(&self, policy: &ObjectKey) -> impl Iterator<Item = &ObjectKey> {
        self.policy.targets.get(policy).into_iter().flatten()
    }

    /// A rule of a policy.
    pub fn rule(&self, key: &RuleKey) -> Option<&Rule> {
        self.policy
            .policies
            .get(&key.policy)?
            .rules(key.direction)?
            .get(usize::from(key.index))
    }

    /// A rule's conjunction id.
    pub fn conj_id(&self, key: &RuleKey) -> Option<u32> {
        self.policy.conj_ids.get(key).copied()
    }

    /// The rule holding a conjunction id.
    pub fn rule_with_conj_id(&self, id: u32) -> Option<&RuleKey> {
        self.policy.used_ids.get(&id)
    }

    /// The pods a rule's peers hold.
    pub fn rule_peer_pods(&self, key: &RuleKey) -> impl Iterator<Item = &ObjectKey> {
        self.policy.rule_peers.get(key).into_iter().flatten()
    }

    /// The rules whose peers hold this pod.
    pub fn rules_naming_pod(&self, pod: &ObjectKey) -> impl Iterator<Item = &RuleKey> {
        self.policy.pod_rules.get(pod).into_iter().flatten()
    }

    /// The rules naming an address block exactly (after `except` was taken out).
    pub fn rules_naming_block(&self, net: &Ipv4Net) -> impl Iterator<Item = &RuleKey> {
        self.policy.block_rules.get(net).into_iter().flatten()
    }

    /// The pod holding an address, as the policy flows know it.
    pub fn pod_at(&self, ip: Ipv4Addr) -> Option<&ObjectKey> {
        self.policy.ip_pod.get(&ip)
    }

    /// A pod's address as the policy flows use it (its attachment's).
    pub fn policy_ip(&self, pod: &ObjectKey) -> Option<Ipv4Addr> {
        self.policy.pod_ip.get(pod).copied()
    }

    /// Every address (pod /32 or block) a rule's peer clause names.
    pub fn rule_peer_nets(&self, key: &RuleKey) -> Vec<Ipv4Net> {
        let mut nets: BTreeSet<Ipv4Net> = self
            .rule_peer_pods(key)
            .filter_map(|p| self.policy_ip(p))
            .map(host)
            .collect();
        if let Some(rule) = self.rule(key) {
            nets.extend(rule_blocks(rule, key.direction));
        }
        nets.into_iter().collect()
    }

    fn pod_in(&self, pod: &PodModel, namespaces: &Namespaces, selector: &Selector) -> bool {
        let ns_ok = match namespaces {
            Namespaces::Own(ns) => pod.key.namespace == *ns,
            Namespaces::Matching(sel) => sel.matches(&self.namespace_labels(&pod.key.namespace)),
        };
        ns_ok && selector.matches(&pod.labels)
    }

    fn selects(&self, policy: &PolicyModel, pod: &PodModel) -> bool {
        pod.key.namespace == policy.key.namespace && policy.pod_selector.matches(&pod.labels)
    }

    fn names(&self, rule: &Rule, direction: Direction, pod: &PodModel) -> bool {
        match &rule.peers {
            Some(peers) => peers.iter().any(|p| match p {
                Peer::Pods { namespaces, pods } => self.pod_in(pod, namespaces, pods),
                Peer::Block(_) => false,
            }),
            None => rule_has_pod_peers(rule, direction),
        }
    }

    /// The pods a selector anchor may hold (a superset; the selector decides).
    fn anchor_pods(&self, anchor: &Anchor) -> Vec<ObjectKey> {
        match anchor {
            Anchor::PodLabel(k, v) => self.pods_with_label(k, v).cloned().collect(),
            Anchor::Namespace(ns) => self.pods_in_namespace(ns).cloned().collect(),
            Anchor::NamespaceLabel(k, v) => {
                // Namespaces with pods whose labels hold k=v (a namespace without an object
                // has only its metadata.name label).
                self.pods_by_namespace
                    .keys()
                    .filter(|ns| crate::policy::label(&self.namespace_labels(ns), k) == Some(v))
                    .flat_map(|ns| self.pods_in_namespace(ns).cloned().collect::<Vec<_>>())
                    .collect()
            }
            Anchor::AllNamespaces => self.pods.keys().cloned().collect(),
        }
    }
}

fn target_anchor(policy: &PolicyModel) -> Anchor {
    match policy.pod_selector.anchor() {
        Some((k, v)) => Anchor::PodLabel(k.into(), v.into()),
        None => Anchor::Namespace(policy.key.namespace.clone()),
    }
}

fn peer_anchors(rule: &Rule, direction: Direction) -> Vec<Anchor> {
    let Some(peers) = &rule.peers else {
        return if rule_has_pod_peers(rule, direction) {
            vec![Anchor::AllNamespaces]
        } else {
            vec![]
        };
    };
    let mut out = Vec::new();
    for p in peers {
        if let Peer::Pods { namespaces, pods } = p {
            out.push(match (pods.anchor(), namespaces) {
                (Some((k, v)), _) => Anchor::PodLabel(k.into(), v.into()),
                (None, Namespaces::Own(ns)) => Anchor::Namespace(ns.clone()),
                (None, Namespaces::Matching(sel)) => match sel.anchor() {
                    Some((k, v)) => Anchor::NamespaceLabel(k.into(), v.into()),
                    None => Anchor::AllNamespaces,
                },
            });
        }
    }
    out
}

/// Collects policy owners to mark, without duplicates.
type Touched = BTreeSet<(String, PolicyOwner)>;

impl NetworkState {
    /// Applies a NetworkPolicy (or its deletion, with `None`).
    pub(super) fn apply_policy(
        &mut self,
        key: &ObjectKey,
        np: Option<&k8s_openapi::api::networking::v1::NetworkPolicy>,
        changes: &mut Vec<Change>,
    ) {
        let current = self.snap.policy.policies.get(key).cloned();
        let model = match np {
            None => {
                self.problems.remove(&(Kind::NetworkPolicy, key.clone()));
                None
            }
            Some(np) => match policy_model(key, np) {
                Ok(mut m) => {
                    m.audit |= self.policy_audit_all;
                    self.clear_problem(Kind::NetworkPolicy, key);
                    Some(m)
                }
                Err(problem) => {
                    self.report(Kind::NetworkPolicy, key.clone(), problem, current.is_some());
                    return;
                }
            },
        };
        if current.as_deref() == model.as_ref() {
            return;
        }
        let mut touched = Touched::new();
        if let Some(old) = &current {
            self.touch_policy(old, &mut touched);
            self.unindex_policy(old);
        }
        if let Some(new) = model {
            let new = Arc::new(new);
            self.index_policy(&new);
            for (rule, _) in rules_of(&new) {
                if let Some(id) = self.snap.conj_id(&rule) {
                    info!(rule = %rule, conj_id = id, cookie = format_args!("{:#x}",
                        crate::ids::policy_rule_cookie(id)), "policy rule");
                }
            }
            self.touch_policy(&new, &mut touched);
        }
        changes.push(Change::Other(Kind::NetworkPolicy, key.clone()));
        push_touched(touched, changes);
    }

    /// Applies a Namespace's labels (or its deletion, with `None`).
    pub(super) fn apply_namespace(
        &mut self,
        name: &str,
        labels: Option<Labels>,
        changes: &mut Vec<Change>,
    ) {
        let labels = labels.map(|mut l| {
            l.retain(|(k, _)| k != NAMESPACE_NAME_LABEL);
            l.push((NAMESPACE_NAME_LABEL.to_owned(), name.to_owned()));
            l.sort();
            Arc::new(l)
        });
        let old = self.snap.policy.namespaces.get(name).cloned();
        if old == labels {
            return;
        }
        match labels {
            Some(l) => {
                self.snap.policy.namespaces.insert(name.to_owned(), l);
            }
            None => {
                self.snap.policy.namespaces.remove(name);
            }
        }
        let pods: Vec<ObjectKey> = self.snap.pods_in_namespace(name).cloned().collect();
        let mut touched = Touched::new();
        for pod in pods {
            let node = self.snap.pods.get(&pod).map(|p| p.node.clone());
            if let Some(node) = node {
                self.refresh_pod(&pod, &node, &mut touched);
            }
        }
        push_touched(touched, changes);
    }

    /// Brings the memberships of pods that changed (model, address, presence) up to date.
    pub(super) fn refresh_pods(&mut self, changes: &mut Vec<Change>) {
        let pods = std::mem::take(&mut self.touched_pods);
        if pods.is_empty() {
            return;
        }
        let mut touched = Touched::new();
        for (pod, node) in pods {
            self.refresh_pod(&pod, &node, &mut touched);
        }
        push_touched(touched, changes);
    }

    fn refresh_pod(&mut self, key: &ObjectKey, node: &str, touched: &mut Touched) {
        let model = self.snap.pods.get(key).cloned();
        let old_ip = self.snap.policy.pod_ip.get(key).copied();
        let new_ip = model
            .as_ref()
            .and_then(|_| self.snap.attachments.get(key))
            .map(|a| a.ip);
        let old_policies: BTreeSet<ObjectKey> = self
            .snap
            .policy
            .pod_policies
            .get(key)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let old_rules: BTreeSet<RuleKey> = self
            .snap
            .policy
            .pod_rules
            .get(key)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let (mut new_policies, mut new_rules) = (BTreeSet::new(), BTreeSet::new());
        // No policy selects anything (no anchors): nothing to match the pod against.
        if let Some(pod) = &model
            && !self.snap.policy.by_anchor.is_empty()
        {
            for anchor in self.pod_anchors(pod) {
                for s in self
                    .snap
                    .policy
                    .by_anchor
                    .get(&anchor)
                    .into_iter()
                    .flatten()
                {
                    match s {
                        Selecting::Targets(p) => {
                            if let Some(pm) = self.snap.policy.policies.get(p)
                                && self.snap.selects(pm, pod)
                            {
                                new_policies.insert(p.clone());
                            }
                        }
                        Selecting::Peers(r) => {
                            if let Some(rule) = self.snap.rule(r)
                                && self.snap.names(rule, r.direction, pod)
                            {
                                new_rules.insert(r.clone());
                            }
                        }
                    }
                }
            }
        }
        let ip_changed = old_ip != new_ip;
        if old_policies == new_policies && old_rules == new_rules && !ip_changed {
            return;
        }
        // The address.
        let pi = &mut self.snap.policy;
        if let Some(ip) = old_ip {
            pi.pod_ip.remove(key);
            if pi.ip_pod.get(&ip) == Some(key) {
                pi.ip_pod.remove(&ip);
            }
        }
        if let Some(ip) = new_ip {
            pi.pod_ip.insert(key.clone(), ip);
            pi.ip_pod.insert(ip, key.clone());
        }
        // Targets: the pod's own owners, and a policy's rules appearing on (or leaving) the
        // node with its first (last) selected pod there.
        for p in old_policies.difference(&new_policies) {
            self.untarget(p, key, node, touched);
        }
        for p in new_policies.difference(&old_policies) {
            self.target(p, key, node, touched);
        }
        if !old_policies.is_empty() || !new_policies.is_empty() {
            for d in Direction::BOTH {
                touched.insert((
                    node.to_owned(),
                    PolicyOwner::Target(d, Arc::new(key.clone())),
                ));
            }
        }
        // Peers: the address flows naming this pod, wherever the rules have selected pods.
        let pi = &mut self.snap.policy;
        for r in old_rules.difference(&new_rules) {
            if let Some(set) = pi.rule_peers.get_mut(r) {
                set.remove(key);
            }
        }
        for r in new_rules.difference(&old_rules) {
            pi.rule_peers
                .entry(r.clone())
                .or_default()
                .insert(key.clone());
        }
        if new_rules.is_empty() {
            pi.pod_rules.remove(key);
        } else {
            pi.pod_rules
                .insert(key.clone(), new_rules.iter().cloned().collect());
        }
        let changed_rules: Vec<RuleKey> = if ip_changed {
            old_rules.union(&new_rules).cloned().collect()
        } else {
            old_rules
                .symmetric_difference(&new_rules)
                .cloned()
                .collect()
        };
        for r in changed_rules {
            let nodes: Vec<String> = self
                .snap
                .policy
                .target_nodes
                .get(&r.policy)
                .into_iter()
                .flat_map(|m| m.keys().cloned())
                .collect();
            for n in nodes {
                for ip in [old_ip, new_ip].into_iter().flatten() {
                    touched.insert((n.clone(), PolicyOwner::Peer(r.direction, host(ip))));
                }
            }
        }
    }

    fn pod_anchors(&self, pod: &PodModel) -> Vec<Anchor> {
        let mut anchors: Vec<Anchor> = pod
            .labels
            .iter()
            .map(|(k, v)| Anchor::PodLabel(k.clone(), v.clone()))
            .collect();
        anchors.extend(
            self.snap
                .namespace_labels(&pod.key.namespace)
                .into_iter()
                .map(|(k, v)| Anchor::NamespaceLabel(k, v)),
        );
        anchors.push(Anchor::Namespace(pod.key.namespace.clone()));
        anchors.push(Anchor::AllNamespaces);
        anchors
    }

    fn target(&mut self, policy: &ObjectKey, pod: &ObjectKey, node: &str, touched: &mut Touched) {
        let pi = &mut self.snap.policy;
        pi.targets
            .entry(policy.clone())
            .or_default()
            .insert(pod.clone());
        pi.pod_policies
            .entry(pod.clone())
            .or_default()
            .insert(policy.clone());
        let count = pi
            .target_nodes
            .entry(policy.clone())
            .or_default()
            .entry(node.to_owned())
            .or_insert(0);
        *count += 1;
        if *count == 1 {
            pi.node_policies
                .entry(node.to_owned())
                .or_default()
                .insert(policy.clone());
            self.touch_rules_on(policy, node, touched);
        }
    }

    fn untarget(&mut self, policy: &ObjectKey, pod: &ObjectKey, node: &str, touched: &mut Touched) {
        let pi = &mut self.snap.policy;
        if let Some(set) = pi.targets.get_mut(policy) {
            set.remove(pod);
        }
        if let Some(set) = pi.pod_policies.get_mut(pod) {
            set.remove(policy);
            if set.is_empty() {
                pi.pod_policies.remove(pod);
            }
        }
        let mut last = false;
        if let Some(nodes) = pi.target_nodes.get_mut(policy)
            && let Some(count) = nodes.get_mut(node)
        {
            *count -= 1;
            if *count == 0 {
                nodes.remove(node);
                last = true;
            }
        }
        if last {
            // Touch while the rule is still known on the node, then forget it there: the
            // owners recompute to nothing.
            self.touch_rules_on(policy, node, touched);
            let pi = &mut self.snap.policy;
            if let Some(set) = pi.node_policies.get_mut(node) {
                set.remove(policy);
                if set.is_empty() {
                    pi.node_policies.remove(node);
                }
            }
        }
    }

    /// Every owner of a policy's rules on one node: each rule's conj_id flow and every
    /// address its peers name.
    fn touch_rules_on(&self, policy: &ObjectKey, node: &str, touched: &mut Touched) {
        let Some(model) = self.snap.policy.policies.get(policy) else {
            return;
        };
        for (rule, _) in rules_of(model) {
            for net in self.snap.rule_peer_nets(&rule) {
                touched.insert((node.to_owned(), PolicyOwner::Peer(rule.direction, net)));
            }
            touched.insert((node.to_owned(), PolicyOwner::Rule(Arc::new(rule))));
        }
    }

    /// Every owner a policy's flows live in: its rules on each node with selected pods,
    /// and the selected pods' own owners.
    fn touch_policy(&self, policy: &PolicyModel, touched: &mut Touched) {
        let nodes: Vec<String> = self
            .snap
            .policy
            .target_nodes
            .get(&policy.key)
            .into_iter()
            .flat_map(|m| m.keys().cloned())
            .collect();
        for n in &nodes {
            self.touch_rules_on(&policy.key, n, touched);
        }
        for pod in self.snap.policy_targets(&policy.key) {
            if let Some(p) = self.snap.pods.get(pod) {
                for d in Direction::BOTH {
                    touched.insert((
                        p.node.clone(),
                        PolicyOwner::Target(d, Arc::new(pod.clone())),
                    ));
                }
            }
        }
    }

    fn index_policy(&mut self, policy: &Arc<PolicyModel>) {
        let key = policy.key.clone();
        self.snap
            .policy
            .policies
            .insert(key.clone(), policy.clone());
        self.snap
            .policy
            .by_anchor
            .entry(target_anchor(policy))
            .or_default()
            .insert(Selecting::Targets(key.clone()));
        // Selected pods.
        let candidates = self.snap.anchor_pods(&target_anchor(policy));
        for pod in candidates {
            let Some(pm) = self.snap.pods.get(&pod).cloned() else {
                continue;
            };
            if self.snap.selects(policy, &pm) {
                let pi = &mut self.snap.policy;
                pi.targets
                    .entry(key.clone())
                    .or_default()
                    .insert(pod.clone());
                pi.pod_policies
                    .entry(pod.clone())
                    .or_default()
                    .insert(key.clone());
                *pi.target_nodes
                    .entry(key.clone())
                    .or_default()
                    .entry(pm.node.clone())
                    .or_insert(0) += 1;
                pi.node_policies
                    .entry(pm.node.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        for (rule, r) in rules_of(policy) {
            // Conjunction id.
            let name = format!("{}/{}/{}", rule.policy, rule.direction.field(), rule.index);
            let mut id = fnv1a(&name);
            while id == 0 || self.snap.policy.used_ids.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            self.snap.policy.used_ids.insert(id, rule.clone());
            self.snap.policy.conj_ids.insert(rule.clone(), id);
            for b in rule_blocks(r, rule.direction) {
                self.snap
                    .policy
                    .block_rules
                    .entry(b)
                    .or_default()
                    .insert(rule.clone());
            }
            // Pod peers.
            let anchors = peer_anchors(r, rule.direction);
            let mut seen = BTreeSet::new();
            for anchor in anchors {
                self.snap
                    .policy
                    .by_anchor
                    .entry(anchor.clone())
                    .or_default()
                    .insert(Selecting::Peers(rule.clone()));
                for pod in self.snap.anchor_pods(&anchor) {
                    if !seen.insert(pod.clone()) {
                        continue;
                    }
                    let Some(pm) = self.snap.pods.get(&pod).cloned() else {
                        continue;
                    };
                    if self.snap.names(r, rule.direction, &pm) {
                        let pi = &mut self.snap.policy;
                        pi.rule_peers
                            .entry(rule.clone())
                            .or_default()
                            .insert(pod.clone());
                        pi.pod_rules.entry(pod).or_default().insert(rule.clone());
                    }
                }
            }
        }
    }

    fn unindex_policy(&mut self, policy: &PolicyModel) {
        let key = &policy.key;
        let pi = &mut self.snap.policy;
        pi.policies.remove(key);
        remove_from(
            &mut pi.by_anchor,
            &target_anchor(policy),
            &Selecting::Targets(key.clone()),
        );
        for pod in pi.targets.remove(key).unwrap_or_default() {
            if let Some(set) = pi.pod_policies.get_mut(&pod) {
                set.remove(key);
                if set.is_empty() {
                    pi.pod_policies.remove(&pod);
                }
            }
        }
        for (node, _) in pi.target_nodes.remove(key).unwrap_or_default() {
            remove_from(&mut pi.node_policies, &node, key);
        }
        for (rule, r) in rules_of(policy) {
            if let Some(id) = pi.conj_ids.remove(&rule) {
                pi.used_ids.remove(&id);
            }
            for anchor in peer_anchors(r, rule.direction) {
                remove_from(&mut pi.by_anchor, &anchor, &Selecting::Peers(rule.clone()));
            }
            for pod in pi.rule_peers.remove(&rule).unwrap_or_default() {
                remove_from(&mut pi.pod_rules, &pod, &rule);
            }
            for b in rule_blocks(r, rule.direction) {
                remove_from(&mut pi.block_rules, &b, &rule);
            }
        }
    }
}

fn remove_from<K: Ord + Clone, V: Ord + Clone>(map: &mut OrdMap<K, OrdSet<V>>, key: &K, value: &V) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

fn push_touched(touched: Touched, changes: &mut Vec<Change>) {
    changes.extend(
        touched
            .into_iter()
            .map(|(node, owner)| Change::Policy { node, owner }),
    );
}

/// One side of a connection, for [`Snapshot::policy_allows_between`].
#[derive(Clone, Copy, Debug)]
pub enum PolicyEnd<'a> {
    /// A pod, by key.
    Pod(&'a ObjectKey),
    /// An address that is no pod's: a node's host network, the outside.
    Address(Ipv4Addr),
}

impl Snapshot {
    /// Whether the policies allow a new connection from pod `from` to pod `to` on
    /// `l4` = (protocol, port) (`None`: a protocol no policy port names, such as ICMP,
    /// which only rules without ports allow), decided straight from the policy models by a scan of every
    /// policy: the reference the flows are checked against (tests) and what the demo
    /// expects. Not for the data path: it costs O(policies).
    pub fn policy_allows(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        l4: Option<(crate::policy::Protocol, u16)>,
    ) -> bool {
        let (Some(src), Some(dst)) = (self.pods.get(from), self.pods.get(to)) else {
            return false;
        };
        let (src_ip, dst_ip) = (
            self.attachments.get(from).map(|a| a.ip),
            self.attachments.get(to).map(|a| a.ip),
        );
        self.direction_allows(Direction::Egress, src, Some(dst), dst_ip, Some(dst), l4)
            && self.direction_allows(Direction::Ingress, dst, Some(src), src_ip, Some(dst), l4)
    }

    /// [`Snapshot::policy_allows`] where either side may be an address outside the pod
    /// network (a node's host network, a machine outside the cluster): policies select pods
    /// only, so such a side is never isolated, and as a peer only ipBlocks (or no peers)
    /// name it. A pod side unknown to the state allows nothing.
    pub fn policy_allows_between(
        &self,
        from: PolicyEnd<'_>,
        to: PolicyEnd<'_>,
        l4: Option<(crate::policy::Protocol, u16)>,
    ) -> bool {
        let side = |end: PolicyEnd<'_>| -> Option<(Option<&PodModel>, Option<Ipv4Addr>)> {
            match end {
                PolicyEnd::Pod(key) => Some((
                    Some(self.pods.get(key)?.as_ref()),
                    self.attachments.get(key).map(|a| a.ip),
                )),
                PolicyEnd::Address(ip) => Some((None, Some(ip))),
            }
        };
        let (Some((src, src_ip)), Some((dst, dst_ip))) = (side(from), side(to)) else {
            return false;
        };
        src.is_none_or(|s| self.direction_allows(Direction::Egress, s, dst, dst_ip, dst, l4))
            && dst.is_none_or(|d| {
                self.direction_allows(Direction::Ingress, d, src, src_ip, Some(d), l4)
            })
    }

    fn direction_allows(
        &self,
        direction: Direction,
        subject: &PodModel,
        peer: Option<&PodModel>,
        peer_ip: Option<Ipv4Addr>,
        dest: Option<&PodModel>,
        l4: Option<(crate::policy::Protocol, u16)>,
    ) -> bool {
        let mut isolated = false;
        for policy in self.policy.policies.values() {
            if policy.key.namespace != subject.key.namespace
                || !policy.pod_selector.matches(&subject.labels)
            {
                continue;
            }
            let Some(rules) = policy.rules(direction) else {
                continue;
            };
            isolated = true;
            for rule in rules {
                let peer_ok = match &rule.peers {
                    None => true,
                    Some(peers) => peers.iter().any(|p| match p {
                        Peer::Pods { namespaces, pods } => {
                            peer.is_some_and(|peer| self.pod_in(peer, namespaces, pods))
                        }
                        Peer::Block(nets) => {
                            peer_ip.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
                        }
                    }),
                };
                let port_ok = match &rule.ports {
                    None => true,
                    Some(ports) => ports.iter().any(|p| {
                        let Some((protocol, port)) = l4 else {
                            return false;
                        };
                        p.protocol == protocol
                            && match &p.port {
                                PortMatch::Any => true,
                                PortMatch::Range(a, b) => (*a..=*b).contains(&port),
                                PortMatch::Named(n) => {
                                    dest.and_then(|d| d.named_port(n, protocol)) == Some(port)
                                }
                            }
                    }),
                };
                if peer_ok && port_ok {
                    return true;
                }
            }
        }
        !isolated
    }
}
