//! The model: Kubernetes objects turned into the typed, validated facts the controller acts on.
//!
//! Owns: validation of Nodes and Pods (an invalid object becomes a [`Problem`] naming the
//! object and field, and is left out; it never stops the rest). Does not own: where the
//! objects come from (see `source`), addresses (see `ipam`) or flows (see `compiler`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::source::{ClusterState, ObjectKey};

/// A Kubernetes node as Switchyard sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeModel {
    /// `metadata.name`.
    pub name: std::sync::Arc<str>,
    /// The first IPv4 entry of `spec.podCIDRs` (or `spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// The node's underlay address: its first `InternalIP` in `status.addresses`. Tunnels to
    /// this node's pods go there.
    pub internal_ip: Ipv4Addr,
}

impl NodeModel {
    /// The gateway address: the first host address of the pod CIDR (10.244.1.1 for 10.244.1.0/24).
    pub fn gateway_ip(&self) -> Ipv4Addr {
        first_host(self.pod_cidr)
    }
}

/// The first host address of a network.
pub fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))
}

/// A pod that Switchyard must network: scheduled to a node, not host-network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodModel {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `spec.nodeName`.
    pub node: String,
    /// `metadata.uid`, when the object has one (the API server always sets it).
    pub uid: Option<String>,
    /// `metadata.labels`, sorted by key. A sorted list rather than a map: most pods carry a
    /// handful of labels, and a map's node costs ~0.5 KB even for one (at 100k pods that is
    /// 50 MB for nothing).
    pub labels: Vec<(String, String)>,
    /// The address a controller recorded on the pod (annotation
    /// `switchyard.io/pod-network`), if it names this pod's node.
    pub recorded_ip: Option<Ipv4Addr>,
    /// The named container ports (`spec.containers[].ports[]` with a name), sorted: what a
    /// NetworkPolicy's named port resolves to for traffic to this pod.
    pub named_ports: Vec<NamedPort>,
}

/// A container port with a name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// `name`.
    pub name: String,
    /// `protocol` (TCP when omitted).
    pub protocol: crate::policy::Protocol,
    /// `containerPort`.
    pub port: u16,
}

impl PodModel {
    /// The number a named port resolves to on this pod, for this protocol.
    pub fn named_port(&self, name: &str, protocol: crate::policy::Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// An object that could not be used, and why. Shown to the operator in logs and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `Node/node-1` or `Pod/default/web`.
    pub object: String,
    /// The field at fault, e.g. `spec.podCIDR`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.reason)
    }
}

/// The whole validated cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterModel {
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeModel>,
    /// Pods to network, by namespace/name.
    pub pods: BTreeMap<ObjectKey, PodModel>,
}

impl ClusterModel {
    /// Validates every object of `state`; returns the usable model and the problems found.
    pub fn build(state: &ClusterState) -> (ClusterModel, Vec<Problem>) {
        let mut model = ClusterModel::default();
        let mut problems = Vec::new();
        for (name, node) in &state.nodes {
            match node_model(name, node) {
                Ok(n) => {
                    model.nodes.insert(name.clone(), n);
                }
                Err(p) => problems.push(p),
            }
        }
        // Two nodes claiming overlapping pod CIDRs would make addresses ambiguous: keep the
        // first (by name) and report the other.
        let mut kept: Vec<(String, Ipv4Net)> = Vec::new();
        let names: Vec<String> = model.nodes.keys().cloned().collect();
        for name in names {
            let cidr = model.nodes[&name].pod_cidr;
            if let Some((other, _)) = kept
                .iter()
                .find(|(_, c)| c.contains(&cidr.network()) || cidr.contains(&c.network()))
            {
                problems.push(Problem {
                    object: format!("Node/{name}"),
                    field: "spec.podCIDR".into(),
                    reason: format!("{cidr} overlaps the pod CIDR of node {other}"),
                });
                model.nodes.remove(&name);
            } else {
                kept.push((name, cidr));
            }
        }
        for (key, pod) in &state.pods {
            match pod_model(key, pod) {
                Ok(Some(p)) => {
                    model.pods.insert(key.clone(), p);
                }
                Ok(None) => {}
                Err(p) => problems.push(p),
            }
        }
        (model, problems)
    }
}

pub(crate) fn node_model(name: &str, node: &Node) -> Result<NodeModel, Problem> {
    let problem = |field: &str, reason: String| Problem {
        object: format!("Node/{name}"),
        field: field.into(),
        reason,
    };
    let spec = node
        .spec
        .as_ref()
        .ok_or_else(|| problem("spec", "missing; a node needs spec.podCIDR".into()))?;
    let mut cidrs: Vec<&String> = spec.pod_cidrs.iter().flatten().collect();
    if let Some(c) = &spec.pod_cidr {
        cidrs.insert(0, c);
    }
    if cidrs.is_empty() {
        return Err(problem(
            "spec.podCIDR",
            "missing; Switchyard allocates pod addresses from it".into(),
        ));
    }
    let mut pod_cidr = None;
    for c in cidrs {
        match c.parse::<ipnet::IpNet>() {
            Ok(ipnet::IpNet::V4(net)) => {
                pod_cidr = Some(net.trunc());
                break;
            }
            Ok(ipnet::IpNet::V6(_)) => {}
            Err(e) => return Err(problem("spec.podCIDR", format!("{c:?} is not a CIDR: {e}"))),
        }
    }
    let pod_cidr = pod_cidr.ok_or_else(|| {
        problem(
            "spec.podCIDRs",
            "no IPv4 CIDR; IPv6-only nodes are not supported yet".into(),
        )
    })?;
    if pod_cidr.prefix_len() > 29 {
        return Err(problem(
            "spec.podCIDR",
            format!("{pod_cidr} is too small: it needs room for a gateway and pods (at most /29)"),
        ));
    }
    let internal_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| {
            problem(
                "status.addresses",
                "no IPv4 InternalIP; tunnels to this node need one".into(),
            )
        })?;
    Ok(NodeModel {
        name: name.into(),
        pod_cidr,
        internal_ip,
    })
}

pub(crate) fn pod_model(key: &ObjectKey, pod: &Pod) -> Result<Option<PodModel>, Problem> {
    let Some(spec) = pod.spec.as_ref() else {
        return Err(Problem {
            object: format!("Pod/{}/{}", key.namespace, key.name),
            field: "spec".into(),
            reason: "missing".into(),
        });
    };
    if spec.host_network == Some(true) {
        return Ok(None);
    }
    let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) else {
        // Not scheduled yet: nothing to network.
        return Ok(None);
    };
    // A pod that has finished keeps its object but no longer needs its address.
    if let Some(phase) = pod.status.as_ref().and_then(|s| s.phase.as_deref())
        && (phase == "Succeeded" || phase == "Failed")
    {
        return Ok(None);
    }
    let recorded_ip = recorded_ip(pod, &node);
    let mut named_ports = Vec::new();
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let Some(name) = p.name.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            let field = format!("spec.containers[{ci}].ports[{pi}]");
            let protocol =
                crate::policy::Protocol::parse(p.protocol.as_deref()).ok_or_else(|| Problem {
                    object: format!("Pod/{}/{}", key.namespace, key.name),
                    field: format!("{field}.protocol"),
                    reason: format!("{:?} is not TCP, UDP or SCTP", p.protocol),
                })?;
            let port = u16::try_from(p.container_port)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| Problem {
                    object: format!("Pod/{}/{}", key.namespace, key.name),
                    field: format!("{field}.containerPort"),
                    reason: format!("{} is not in 1..=65535", p.container_port),
                })?;
            named_ports.push(NamedPort {
                name,
                protocol,
                port,
            });
        }
    }
    named_ports.sort();
    Ok(Some(PodModel {
        key: key.clone(),
        node,
        uid: pod.metadata.uid.clone(),
        labels: pod
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        recorded_ip,
        named_ports,
    }))
}

/// The address in the pod's `switchyard.io/pod-network` annotation, when it was made on
/// `node`. A malformed annotation is ignored: the pod simply gets an address again.
fn recorded_ip(pod: &Pod, node: &str) -> Option<Ipv4Addr> {
    let text = pod
        .metadata
        .annotations
        .as_ref()?
        .get(crate::source::POD_NETWORK_ANNOTATION)?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("node")?.as_str()? != node {
        return None;
    }
    value.get("ip")?.as_str()?.parse().ok()
}

/// Label that joins an EndpointSlice to its Service (discovery.k8s.io/v1).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A Service with this label is not proxied (kube-proxy skips it).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// A Service with this label belongs to another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when absent (the API server's default).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// A Service as the proxy sees it: only the Services it must program (not headless, not
/// ExternalName, not labelled for another proxy; see [`service_model`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceModel {
    /// Namespace and name.
    pub key: ObjectKey,
    /// The IPv4 cluster IP (`spec.clusterIPs`, else `spec.clusterIP`).
    pub cluster_ip: Ipv4Addr,
    /// `spec.ports`, in order.
    pub ports: Vec<ServicePortModel>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds (default 10800); `None` without
    /// affinity.
    pub affinity_timeout: Option<u32>,
    /// The addresses external clients reach it on besides the nodes' NodePorts: every IPv4
    /// `spec.externalIPs` entry, then (type LoadBalancer) every
    /// `status.loadBalancer.ingress[].ip` whose `ipMode` is not `Proxy`; sorted, no
    /// duplicates.
    pub external_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortModel {
    /// `name` ("" when the Service has one unnamed port).
    pub name: String,
    /// `protocol` (TCP when omitted).
    pub protocol: crate::policy::Protocol,
    /// `port`: the port on the cluster IP.
    pub port: u16,
    /// `nodePort`, for NodePort and LoadBalancer Services that have one.
    pub node_port: Option<u16>,
}

/// An EndpointSlice (IPv4 only) reduced to what the proxy uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceModel {
    /// The Service it belongs to (its `kubernetes.io/service-name` label, same namespace).
    pub service: ObjectKey,
    /// `ports`: name ("" when absent), protocol (TCP when absent) and number. A port
    /// without a number means "all ports" in the API; the proxy cannot use it and skips it.
    pub ports: Vec<(String, crate::policy::Protocol, u16)>,
    /// `endpoints`, one per address entry (the first address, as kube-proxy uses).
    pub endpoints: Vec<EndpointModel>,
}

/// One endpoint of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointModel {
    /// `addresses[0]`.
    pub ip: Ipv4Addr,
    /// `conditions.ready` (absent = true).
    pub ready: bool,
    /// `conditions.serving` (absent = the value of ready).
    pub serving: bool,
    /// `conditions.terminating` (absent = false).
    pub terminating: bool,
}

/// Validates a Service for the proxy. `Ok(None)`: a valid Service the proxy leaves alone
/// (headless, ExternalName, labelled headless or for another proxy, IPv6 only).
pub fn service_model(
    key: &ObjectKey,
    svc: &k8s_openapi::api::core::v1::Service,
) -> Result<Option<ServiceModel>, Problem> {
    let problem = |field: String, reason: String| Problem {
        object: format!("Service/{key}"),
        field,
        reason,
    };
    let labels = svc.metadata.labels.as_ref();
    if labels
        .is_some_and(|l| l.contains_key(HEADLESS_LABEL) || l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return Ok(None);
    }
    let Some(spec) = svc.spec.as_ref() else {
        return Err(problem("spec".into(), "missing".into()));
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.iter());
    }
    if ips.iter().any(|ip| ip.is_empty() || *ip == "None") {
        return Ok(None);
    }
    let mut cluster_ip = None;
    for ip in ips {
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => {
                cluster_ip = Some(v4);
                break;
            }
            Ok(std::net::IpAddr::V6(_)) => {}
            Err(e) => {
                return Err(problem(
                    "spec.clusterIP".into(),
                    format!("{ip:?} is not an IP address: {e}"),
                ));
            }
        }
    }
    let Some(cluster_ip) = cluster_ip else {
        return Ok(None);
    };
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = crate::policy::Protocol::parse(p.protocol.as_deref()).ok_or_else(|| {
            problem(
                format!("spec.ports[{i}].protocol"),
                format!("{:?} is not TCP, UDP or SCTP", p.protocol),
            )
        })?;
        let port = u16::try_from(p.port)
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| {
                problem(
                    format!("spec.ports[{i}].port"),
                    format!("{} is not in 1..=65535", p.port),
                )
            })?;
        let node_port = match p.node_port {
            Some(n) if node_ports && n != 0 => Some(u16::try_from(n).ok().ok_or_else(|| {
                problem(
                    format!("spec.ports[{i}].nodePort"),
                    format!("{n} is not in 1..=65535"),
                )
            })?),
            _ => None,
        };
        ports.push(ServicePortModel {
            name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
            node_port,
        });
    }
    let mut external_ips = std::collections::BTreeSet::new();
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => {
                external_ips.insert(v4);
            }
            Ok(std::net::IpAddr::V6(_)) => {}
            Err(e) => {
                return Err(problem(
                    format!("spec.externalIPs[{i}]"),
                    format!("{ip:?} is not an IP address: {e}"),
                ));
            }
        }
    }
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            // ipMode Proxy: the load balancer proxies, the node never sees its address.
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            let Some(ip) = ing.ip.as_deref().filter(|ip| !ip.is_empty()) else {
                continue;
            };
            match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) => {
                    external_ips.insert(v4);
                }
                Ok(std::net::IpAddr::V6(_)) => {}
                Err(e) => {
                    return Err(problem(
                        format!("status.loadBalancer.ingress[{i}].ip"),
                        format!("{ip:?} is not an IP address: {e}"),
                    ));
                }
            }
        }
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    Ok(Some(ServiceModel {
        key: key.clone(),
        cluster_ip,
        ports,
        affinity_timeout,
        external_ips: external_ips.into_iter().collect(),
        external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
    }))
}

/// Validates an EndpointSlice for the proxy. `Ok(None)`: a slice the proxy does not use
/// (no service-name label, or not IPv4).
pub fn slice_model(
    key: &ObjectKey,
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
) -> Result<Option<SliceModel>, Problem> {
    let problem = |field: String, reason: String| Problem {
        object: format!("EndpointSlice/{key}"),
        field,
        reason,
    };
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    if slice.address_type != "IPv4" {
        return Ok(None);
    }
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let protocol = crate::policy::Protocol::parse(p.protocol.as_deref()).ok_or_else(|| {
            problem(
                format!("ports[{i}].protocol"),
                format!("{:?} is not TCP, UDP or SCTP", p.protocol),
            )
        })?;
        let Some(n) = p.port else { continue };
        let port = u16::try_from(n).ok().filter(|n| *n != 0).ok_or_else(|| {
            problem(
                format!("ports[{i}].port"),
                format!("{n} is not in 1..=65535"),
            )
        })?;
        ports.push((p.name.clone().unwrap_or_default(), protocol, port));
    }
    let mut endpoints = Vec::new();
    for (i, e) in slice.endpoints.iter().enumerate() {
        let Some(address) = e.addresses.first() else {
            continue;
        };
        let ip = address.parse::<Ipv4Addr>().map_err(|err| {
            problem(
                format!("endpoints[{i}].addresses[0]"),
                format!("{address:?} is not an IPv4 address: {err}"),
            )
        })?;
        let c = e.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        endpoints.push(EndpointModel {
            ip,
            ready,
            serving: c.and_then(|c| c.serving).unwrap_or(ready),
            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
        });
    }
    Ok(Some(SliceModel {
        service: ObjectKey::new(key.namespace.clone(), service.clone()),
        ports,
        endpoints,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn pod(ns: &str, name: &str, node: Option<&str>, host_network: bool) -> (ObjectKey, Pod) {
        let key = ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                host_network: Some(host_network),
                ..Default::default()
            }),
            status: None,
        };
        (key, pod)
    }

    #[test]
    fn valid_nodes_and_pods_become_the_model() {
        let mut state = ClusterState::default();
        state.nodes.insert(
            "n1".into(),
            node("n1", Some("10.244.1.0/24"), Some("192.168.77.11")),
        );
        let (k, p) = pod("default", "web", Some("n1"), false);
        state.pods.insert(k.clone(), p);
        let (hk, hp) = pod("default", "host", Some("n1"), true);
        state.pods.insert(hk, hp);
        let (uk, up) = pod("default", "pending", None, false);
        state.pods.insert(uk, up);

        let (ak, mut ap) = pod("default", "annotated", Some("n1"), false);
        ap.metadata.annotations = Some(BTreeMap::from([(
            crate::source::POD_NETWORK_ANNOTATION.to_owned(),
            r#"{"ip":"10.244.1.9","mac":"0a:58:0a:f4:01:09","node":"n1"}"#.to_owned(),
        )]));
        state.pods.insert(ak.clone(), ap);

        let (model, problems) = ClusterModel::build(&state);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            model.pods[&ak].recorded_ip,
            Some(Ipv4Addr::new(10, 244, 1, 9))
        );
        assert_eq!(model.pods[&k].recorded_ip, None);
        let n1 = &model.nodes["n1"];
        assert_eq!(n1.pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(n1.gateway_ip(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(n1.internal_ip, Ipv4Addr::new(192, 168, 77, 11));
        assert_eq!(
            model.pods.len(),
            2,
            "host-network and unscheduled pods are skipped"
        );
        assert_eq!(model.pods[&k].node, "n1");
    }

    #[test]
    fn invalid_nodes_are_reported_by_field_and_skipped() {
        let mut state = ClusterState::default();
        state
            .nodes
            .insert("a".into(), node("a", None, Some("192.168.77.1")));
        state.nodes.insert(
            "b".into(),
            node("b", Some("10.0.0.0/33"), Some("192.168.77.2")),
        );
        state
            .nodes
            .insert("c".into(), node("c", Some("10.1.0.0/24"), None));
        state.nodes.insert(
            "d".into(),
            node("d", Some("10.2.0.0/24"), Some("192.168.77.4")),
        );
        state.nodes.insert(
            "e".into(),
            node("e", Some("10.2.0.0/25"), Some("192.168.77.5")),
        );
        let (model, problems) = ClusterModel::build(&state);
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            model.nodes.keys().collect::<Vec<_>>(),
            vec!["d"],
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("Node/a: spec.podCIDR: missing"))
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("Node/b: spec.podCIDR: \"10.0.0.0/33\""))
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("Node/c: status.addresses"))
        );
        assert!(
            shown
                .iter()
                .any(|s| s.contains("Node/e: spec.podCIDR: 10.2.0.0/25 overlaps"))
        );
    }
}
