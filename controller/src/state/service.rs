//! The state's Service share: the Services the proxy programs, their EndpointSlices, and
//! each Service resolved to what its flows need (per port: the endpoints to balance over,
//! each with the DNAT port its slice names), kept up to date incrementally.
//!
//! Owns: joining slices to Services (`kubernetes.io/service-name`, same namespace), the
//! endpoint choice kube-proxy makes (`ready`, absent = ready, decides; serving and
//! terminating endpoints only when no ready one exists; duplicates removed), the group ids
//! of Service ports, and deciding which Services a change touches ([`Change::Service`]). A
//! slice change costs its Service's slices, never every Service.
//!
//! Service port ids (group id, cookie owner, `reg5` value): a 24-bit FNV-1a hash of
//! `namespace/name/port-name/protocol`, skipping 0 and ids in use (linear probing), so a
//! Service keeps its groups' ids across controller restarts (the switch's groups are not
//! rewritten). 24 bits leave the top byte of a group id for the chained groups of a port
//! with many endpoints.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use super::{Change, NetworkState, Snapshot};
use crate::model::{ServiceModel, SliceModel, service_model, slice_model};
use crate::policy::Protocol;
use crate::source::{Kind, ObjectKey};

/// A Service port's identity: its Service, port name and protocol.
pub type ServicePortKey = (ObjectKey, String, Protocol);

/// Largest Service port id (24 bits).
pub const MAX_SERVICE_PORT_ID: u32 = (1 << 24) - 1;

/// A Service as its flows need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedService {
    /// The Service.
    pub key: ObjectKey,
    /// Its cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// `sessionAffinity: ClientIP` timeout, if any.
    pub affinity_timeout: Option<u32>,
    /// Its ports.
    pub ports: Vec<ResolvedPort>,
    /// Its externalIPs and LoadBalancer ingress IPs (sorted, no duplicates).
    pub external_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`: external traffic only to the receiving node's
    /// endpoints, unSNATed.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: in-cluster clients of the ClusterIP only to their own
    /// node's endpoints.
    pub internal_local: bool,
}

impl ResolvedService {
    /// True when some node's flows for it differ from another's (a Local traffic policy).
    pub fn node_dependent(&self) -> bool {
        self.internal_local
            || (self.external_local
                && (!self.external_ips.is_empty()
                    || self.ports.iter().any(|p| p.node_port.is_some())))
    }
}

/// One Service port with its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPort {
    /// The port's id (see the module docs).
    pub id: u32,
    /// Port name.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Port on the cluster IP.
    pub port: u16,
    /// The endpoints to balance over (address, DNAT port), sorted, without duplicates.
    /// Empty: no usable endpoint, clients are refused.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// `nodePort` (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    /// The nodes' datapath cannot load-balance the port's protocol (SCTP on the userspace
    /// datapath, [`userspace_datapath_balances`]): its clients are refused, whatever its
    /// endpoints.
    pub datapath_refuses: bool,
    /// Every endpoint that may serve (address, DNAT port, ready): the ready ones and the
    /// serving-and-terminating ones, for the per-node choice of a Local traffic policy.
    pub serving: Vec<(Ipv4Addr, u16, bool)>,
}

impl ResolvedPort {
    /// The endpoints of a Local traffic policy on the node whose pod CIDR is `local`
    /// (kube-proxy's topology.go, per node): its ready endpoints, else its
    /// serving-and-terminating ones; empty when it has none.
    pub fn local_endpoints(&self, local: ipnet::Ipv4Net) -> Vec<(Ipv4Addr, u16)> {
        let here = |ip: &Ipv4Addr| local.contains(ip);
        let ready: Vec<(Ipv4Addr, u16)> = self
            .serving
            .iter()
            .filter(|(ip, _, r)| *r && here(ip))
            .map(|&(ip, p, _)| (ip, p))
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        self.serving
            .iter()
            .filter(|(ip, _, _)| here(ip))
            .map(|&(ip, p, _)| (ip, p))
            .collect()
    }
}

/// The Service index, part of every snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceIndex {
    services: OrdMap<ObjectKey, Arc<ServiceModel>>,
    slices: OrdMap<ObjectKey, Arc<SliceModel>>,
    slices_by_service: OrdMap<ObjectKey, OrdSet<ObjectKey>>,
    resolved: OrdMap<ObjectKey, Arc<ResolvedService>>,
    port_ids: OrdMap<ServicePortKey, u32>,
    used_ids: OrdSet<u32>,
}

impl Snapshot {
    /// A Service resolved for its flows, if the proxy programs it.
    pub fn service(&self, key: &ObjectKey) -> Option<&Arc<ResolvedService>> {
        self.services.resolved.get(key)
    }

    /// Every Service the proxy programs.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ResolvedService>> {
        self.services.resolved.values()
    }

    /// How many Services the proxy programs.
    pub fn service_count(&self) -> usize {
        self.services.resolved.len()
    }
}

fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The endpoints of one Service port over the Service's slices (kube-proxy's
/// endpointslicecache and topology rules for the cluster set).
pub fn port_endpoints<'a>(
    port: &crate::model::ServicePortModel,
    slices: impl IntoIterator<Item = &'a SliceModel>,
) -> Vec<(Ipv4Addr, u16)> {
    let mut ready = BTreeSet::new();
    let mut fallback = BTreeSet::new();
    for slice in slices {
        // The DNAT port comes from this slice's port of the same name and protocol.
        let Some(&(_, _, target)) = slice
            .ports
            .iter()
            .find(|(n, p, _)| *n == port.name && *p == port.protocol)
        else {
            continue;
        };
        for e in &slice.endpoints {
            if e.ready {
                ready.insert((e.ip, target));
            } else if e.serving && e.terminating {
                fallback.insert((e.ip, target));
            }
        }
    }
    let chosen = if ready.is_empty() { fallback } else { ready };
    chosen.into_iter().collect()
}

/// Every endpoint of one Service port that may serve: (address, DNAT port, ready), the
/// ready ones and the serving-and-terminating ones, sorted, without duplicates (an address
/// ready in one slice counts as ready).
pub fn port_serving<'a>(
    port: &crate::model::ServicePortModel,
    slices: impl IntoIterator<Item = &'a SliceModel>,
) -> Vec<(Ipv4Addr, u16, bool)> {
    let mut all: std::collections::BTreeMap<(Ipv4Addr, u16), bool> = Default::default();
    for slice in slices {
        let Some(&(_, _, target)) = slice
            .ports
            .iter()
            .find(|(n, p, _)| *n == port.name && *p == port.protocol)
        else {
            continue;
        };
        for e in &slice.endpoints {
            if e.ready || (e.serving && e.terminating) {
                *all.entry((e.ip, target)).or_default() |= e.ready;
            }
        }
    }
    all.into_iter().map(|((ip, p), r)| (ip, p, r)).collect()
}

/// Whether ovs-vswitchd's userspace datapath (`netdev`) can load-balance a Service port of
/// `protocol`. SCTP cannot: its conntrack (ovs-vswitchd 3.1, lib/conntrack.c) tracks SCTP
/// as an L3-only protocol, without its ports, so `ct(nat(dst=IP:PORT))` rewrites the address
/// but not the port, and every association between two addresses is one connection (one
/// endpoint for all of a client's associations to a cluster IP; a SNAT to the gateway
/// address would merge clients). The kernel datapath's conntrack tracks SCTP ports.
/// docs/operations.md, "SCTP", has the measurements.
pub fn userspace_datapath_balances(protocol: Protocol) -> bool {
    match protocol {
        Protocol::Tcp | Protocol::Udp => true,
        Protocol::Sctp => false,
    }
}

/// What an operator must know of a valid Service that is not programmed as asked on the
/// userspace datapath: its first port of a protocol that datapath cannot load-balance,
/// which is refused instead.
fn unbalanced_port(m: &ServiceModel) -> Option<crate::model::Problem> {
    let (i, p) = m
        .ports
        .iter()
        .enumerate()
        .find(|(_, p)| !userspace_datapath_balances(p.protocol))?;
    let name = if p.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", p.name)
    };
    Some(crate::model::Problem {
        object: format!("Service/{}", m.key),
        field: format!("spec.ports[{i}].protocol"),
        reason: format!(
            "port {}/{}{name} is refused, not load-balanced: the userspace datapath's conntrack does not track {} ports, so ct(nat) cannot DNAT to an endpoint's port nor keep associations apart (docs/operations.md, \"SCTP\"); the Service's TCP and UDP ports are programmed",
            p.port,
            p.protocol.name(),
            p.protocol.name()
        ),
    })
}

impl NetworkState {
    /// Applies a Service (or its deletion, `None`).
    pub(super) fn apply_service(
        &mut self,
        key: &ObjectKey,
        svc: Option<&k8s_openapi::api::core::v1::Service>,
        changes: &mut Vec<Change>,
    ) {
        let model = match svc.map(|s| service_model(key, s)) {
            None => {
                self.problems.remove(&(Kind::Service, key.clone()));
                None
            }
            Some(Ok(m)) => {
                let notice = m.as_ref().filter(|_| self.userspace_datapath);
                match notice.and_then(unbalanced_port) {
                    Some(notice) => self.note(Kind::Service, key, notice),
                    None => self.clear_problem(Kind::Service, key),
                }
                m
            }
            Some(Err(problem)) => {
                let kept = self.snap.services.services.contains_key(key);
                self.report(Kind::Service, key.clone(), problem, kept);
                return;
            }
        };
        let index = &mut self.snap.services;
        if index.services.get(key).map(|m| &**m) == model.as_ref() {
            return;
        }
        match model {
            Some(m) => {
                index.services.insert(key.clone(), Arc::new(m));
            }
            None => {
                index.services.remove(key);
            }
        }
        self.resolve_service(key, changes);
    }

    /// Applies an EndpointSlice (or its deletion, `None`).
    pub(super) fn apply_slice(
        &mut self,
        key: &ObjectKey,
        slice: Option<&k8s_openapi::api::discovery::v1::EndpointSlice>,
        changes: &mut Vec<Change>,
    ) {
        let model = match slice.map(|s| slice_model(key, s)) {
            None => {
                self.problems.remove(&(Kind::EndpointSlice, key.clone()));
                None
            }
            Some(Ok(m)) => {
                self.clear_problem(Kind::EndpointSlice, key);
                m
            }
            Some(Err(problem)) => {
                let kept = self.snap.services.slices.contains_key(key);
                self.report(Kind::EndpointSlice, key.clone(), problem, kept);
                return;
            }
        };
        let index = &mut self.snap.services;
        let old = index.slices.get(key).cloned();
        if old.as_deref() == model.as_ref() {
            return;
        }
        if let Some(old) = &old
            && let Some(set) = index.slices_by_service.get_mut(&old.service)
        {
            set.remove(key);
            if set.is_empty() {
                index.slices_by_service.remove(&old.service);
            }
        }
        let new_service = model.as_ref().map(|m| m.service.clone());
        match model {
            Some(m) => {
                index
                    .slices_by_service
                    .entry(m.service.clone())
                    .or_default()
                    .insert(key.clone());
                index.slices.insert(key.clone(), Arc::new(m));
            }
            None => {
                index.slices.remove(key);
            }
        }
        let mut touched: Vec<ObjectKey> = old.map(|o| o.service.clone()).into_iter().collect();
        touched.extend(new_service);
        touched.dedup();
        for service in touched {
            self.resolve_service(&service, changes);
        }
    }

    /// Recomputes one Service's resolution from its model and slices; a change in it is a
    /// [`Change::Service`].
    fn resolve_service(&mut self, key: &ObjectKey, changes: &mut Vec<Change>) {
        let userspace = self.userspace_datapath;
        let index = &mut self.snap.services;
        let resolved = index.services.get(key).cloned().map(|svc| {
            let slices: Vec<Arc<SliceModel>> = index
                .slices_by_service
                .get(key)
                .into_iter()
                .flatten()
                .filter_map(|k| index.slices.get(k).cloned())
                .collect();
            let ports = svc
                .ports
                .iter()
                .map(|p| ResolvedPort {
                    id: port_id(index, (key.clone(), p.name.clone(), p.protocol)),
                    name: p.name.clone(),
                    protocol: p.protocol,
                    port: p.port,
                    endpoints: port_endpoints(p, slices.iter().map(|s| &**s)),
                    node_port: p.node_port,
                    datapath_refuses: userspace && !userspace_datapath_balances(p.protocol),
                    serving: port_serving(p, slices.iter().map(|s| &**s)),
                })
                .collect::<Vec<_>>();
            ResolvedService {
                key: key.clone(),
                cluster_ip: svc.cluster_ip,
                affinity_timeout: svc.affinity_timeout,
                ports,
                external_ips: svc.external_ips.clone(),
                external_local: svc.external_local,
                internal_local: svc.internal_local,
            }
        });
        // Ids of ports the Service no longer has go back.
        let keep: BTreeSet<(String, Protocol)> = resolved
            .iter()
            .flat_map(|r| r.ports.iter().map(|p| (p.name.clone(), p.protocol)))
            .collect();
        let stale: Vec<ServicePortKey> = index
            .port_ids
            .range((key.clone(), String::new(), Protocol::Tcp)..)
            .take_while(|((k, _, _), _)| k == key)
            .filter(|((_, n, p), _)| !keep.contains(&(n.clone(), *p)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(id) = index.port_ids.remove(&k) {
                index.used_ids.remove(&id);
            }
        }
        if index.resolved.get(key).map(|r| &**r) == resolved.as_ref() {
            return;
        }
        match resolved {
            Some(r) => {
                index.resolved.insert(key.clone(), Arc::new(r));
            }
            None => {
                index.resolved.remove(key);
            }
        }
        changes.push(Change::Service(key.clone()));
    }
}

fn port_id(index: &mut ServiceIndex, key: ServicePortKey) -> u32 {
    if let Some(id) = index.port_ids.get(&key) {
        return *id;
    }
    let text = format!("{}/{}/{}", key.0, key.1, key.2.name());
    let mut id = fnv1a(&text) & MAX_SERVICE_PORT_ID;
    while id == 0 || index.used_ids.contains(&id) {
        id = (id + 1) & MAX_SERVICE_PORT_ID;
    }
    index.used_ids.insert(id);
    index.port_ids.insert(key, id);
    id
}
