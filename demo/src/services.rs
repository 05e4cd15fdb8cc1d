//! What a kube-controller-manager would do for the cluster file's Services, and which
//! Service targets the demo probes (the probe contract, README "--json").
//!
//! Owns: filling EndpointSlice endpoints named by `targetRef` with their pod's runtime
//! address (and `nodeName`), building a slice from the selector of a Service that has none,
//! as the EndpointSlice controller would (ready = the pod exists and has an address), and
//! enumerating the `service:`, `nodeport:`, `externalip:` and `lbip:` targets with the pods
//! expected to answer each. Pure functions over the objects: no I/O.
//!
//! Does not own: anything the controller does with Services (it programs them; until it does,
//! Service probes fail), nor the API server's defaults (the controller applies those).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use switchyard::policy::Protocol;
use switchyard::source::ObjectKey;

/// The label joining an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A pod as the EndpointSlice controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningPod {
    /// Its runtime address (what CNI returned).
    pub ip: Ipv4Addr,
    /// `spec.nodeName`.
    pub node: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Its containers' ports: (name, protocol, containerPort).
    pub ports: Vec<(String, Protocol, u16)>,
}

impl RunningPod {
    /// The pod as its object describes it, at `ip`.
    pub fn from_document(doc: &Value, ip: Ipv4Addr) -> RunningPod {
        let labels = doc["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        RunningPod {
            ip,
            node: doc["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            labels,
            ports: container_ports(doc),
        }
    }
}

/// Every port a pod object's containers declare: (name, protocol, containerPort).
pub fn container_ports(doc: &Value) -> Vec<(String, Protocol, u16)> {
    let mut ports = Vec::new();
    for c in doc["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            let Some(port) = p["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
            else {
                continue;
            };
            let Some(protocol) = Protocol::parse(p["protocol"].as_str()) else {
                continue;
            };
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            ports.push((name, protocol, port));
        }
    }
    ports
}

fn key_of(doc: &Value) -> ObjectKey {
    ObjectKey::new(
        doc["metadata"]["namespace"].as_str().unwrap_or("default"),
        doc["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn is_kind(doc: &Value, kind: &str) -> bool {
    doc["kind"].as_str() == Some(kind)
}

/// The objects as the controller should see them: every EndpointSlice's endpoints named by
/// `targetRef` get their pod's address and node (endpoints of pods that are not running yet
/// are left out, as the EndpointSlice controller would not list them), and every Service
/// with a selector and no slice gets one built from the selector.
pub fn controller_documents(docs: &[Value], pods: &BTreeMap<ObjectKey, RunningPod>) -> Vec<Value> {
    let mut out = Vec::with_capacity(docs.len());
    let mut sliced = BTreeSet::new();
    for doc in docs {
        if is_kind(doc, "EndpointSlice") {
            let ns = key_of(doc).namespace;
            if let Some(svc) = doc["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() {
                sliced.insert(ObjectKey::new(&ns, svc));
            }
            out.push(fill_slice(doc, &ns, pods));
        } else {
            out.push(doc.clone());
        }
    }
    for doc in docs.iter().filter(|d| is_kind(d, "Service")) {
        let key = key_of(doc);
        if sliced.contains(&key) {
            continue;
        }
        out.extend(build_slices(doc, pods));
    }
    out
}

fn fill_slice(doc: &Value, ns: &str, pods: &BTreeMap<ObjectKey, RunningPod>) -> Value {
    let mut slice = doc.clone();
    let Some(endpoints) = slice["endpoints"].as_array().cloned() else {
        return slice;
    };
    let mut kept = Vec::new();
    for mut ep in endpoints {
        let target = &ep["targetRef"];
        let named_pod = target.is_object() && target["kind"].as_str().is_none_or(|k| k == "Pod");
        if !named_pod {
            kept.push(ep);
            continue;
        }
        let key = ObjectKey::new(
            target["namespace"].as_str().unwrap_or(ns),
            target["name"].as_str().unwrap_or_default(),
        );
        let Some(pod) = pods.get(&key) else {
            continue;
        };
        ep["addresses"] = json!([pod.ip.to_string()]);
        if ep["nodeName"].as_str().is_none() && !pod.node.is_empty() {
            ep["nodeName"] = json!(pod.node);
        }
        kept.push(ep);
    }
    slice["endpoints"] = Value::Array(kept);
    slice
}

/// The slices the EndpointSlice controller would make for a Service with a selector: one per
/// distinct resolution of its ports (a named targetPort may be another number on each pod);
/// none without a selector (such Services bring their own slices) or for ExternalName.
pub fn build_slices(svc: &Value, pods: &BTreeMap<ObjectKey, RunningPod>) -> Vec<Value> {
    let key = key_of(svc);
    let Some(selector) = svc["spec"]["selector"].as_object() else {
        return Vec::new();
    };
    if svc["spec"]["type"].as_str() == Some("ExternalName") {
        return Vec::new();
    }
    let selector: Vec<(&String, &str)> = selector
        .iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?)))
        .collect();
    let svc_ports: Vec<&Value> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    // Pods grouped by how the Service's ports resolve on them: (name, protocol, port)s.
    type Resolution = Vec<(String, String, u16)>;
    let mut groups: BTreeMap<Resolution, Vec<(&ObjectKey, &RunningPod)>> = BTreeMap::new();
    for (pk, pod) in pods {
        if pk.namespace != key.namespace
            || !selector
                .iter()
                .all(|(k, v)| pod.labels.get(*k).map(String::as_str) == Some(*v))
        {
            continue;
        }
        let mut resolved = Vec::new();
        for p in &svc_ports {
            let protocol = Protocol::parse(p["protocol"].as_str()).unwrap_or(Protocol::Tcp);
            let port = p["port"].as_u64().and_then(|n| u16::try_from(n).ok());
            let target = match &p["targetPort"] {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(s) => match s.parse::<u16>() {
                    Ok(n) => Some(n),
                    Err(_) => pod
                        .ports
                        .iter()
                        .find(|(name, proto, _)| name == s && *proto == protocol)
                        .map(|(_, _, n)| *n),
                },
                _ => port,
            };
            // A named port the pod does not declare: the pod is no endpoint for it.
            if let Some(t) = target {
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                resolved.push((name, protocol.name().to_owned(), t));
            }
        }
        groups.entry(resolved).or_default().push((pk, pod));
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (ports, members))| {
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{}-demo-{i}", key.name),
                    "namespace": key.namespace,
                    "labels": {SERVICE_NAME_LABEL: key.name},
                },
                "addressType": "IPv4",
                "ports": ports.iter().map(|(name, proto, port)| json!({
                    "name": name, "protocol": proto, "port": port,
                })).collect::<Vec<_>>(),
                "endpoints": members.iter().map(|(pk, pod)| json!({
                    "addresses": [pod.ip.to_string()],
                    "conditions": {"ready": true},
                    "nodeName": pod.node,
                    "targetRef": {"kind": "Pod", "namespace": pk.namespace, "name": pk.name},
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Which clients a Service target is probed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Pods and nodes (a ClusterIP is not routed from outside).
    Cluster,
    /// Pods, nodes and the external client.
    Everyone,
}

/// One Service address and port to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTarget {
    /// `service:ns/name`, `nodeport:NODE:ns/name`, `externalip:IP:ns/name`, `lbip:IP:ns/name`.
    pub to: String,
    /// The Service.
    pub service: ObjectKey,
    /// The address probed.
    pub ip: Ipv4Addr,
    /// The port probed (Service port or nodePort).
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The Service port's name (joins the slices' ports).
    pub port_name: String,
    /// Who probes it.
    pub reach: Reach,
    /// For `nodeport:` targets, the node whose address is probed.
    pub node: Option<String>,
}

/// Every Service target of the objects, as the probe contract lists them: each port of each Service
/// with a ClusterIP (not headless, not ExternalName); NodePort and LoadBalancer Services'
/// nodePorts on every node's InternalIP (`nodes`: name → address); each externalIP; each
/// LoadBalancer ingress IP. Services the proxy must leave alone (labelled
/// `service.kubernetes.io/service-proxy-name` or `service.kubernetes.io/headless`) have none.
pub fn service_targets(docs: &[Value], nodes: &BTreeMap<String, Ipv4Addr>) -> Vec<ServiceTarget> {
    let mut out = Vec::new();
    for svc in docs.iter().filter(|d| is_kind(d, "Service")) {
        let key = key_of(svc);
        let spec = &svc["spec"];
        let labels = &svc["metadata"]["labels"];
        if spec["type"].as_str() == Some("ExternalName")
            || labels["service.kubernetes.io/service-proxy-name"].is_string()
            || labels["service.kubernetes.io/headless"].is_string()
        {
            continue;
        }
        let Some(cluster_ip) = spec["clusterIP"].as_str().and_then(|s| s.parse().ok()) else {
            // Headless (`None`) or no address given (no API server allocates one here).
            continue;
        };
        let node_ports = matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"));
        let external_ips: Vec<Ipv4Addr> = spec["externalIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect();
        let lb_ips: Vec<Ipv4Addr> = svc["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["ip"].as_str()?.parse().ok())
            .collect();
        for p in spec["ports"].as_array().into_iter().flatten() {
            let Some(port) = p["port"].as_u64().and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let protocol = Protocol::parse(p["protocol"].as_str()).unwrap_or(Protocol::Tcp);
            let port_name = p["name"].as_str().unwrap_or_default().to_owned();
            let target = |to: String, ip, port, reach, node: Option<&String>| ServiceTarget {
                to,
                service: key.clone(),
                ip,
                port,
                protocol,
                port_name: port_name.clone(),
                reach,
                node: node.cloned(),
            };
            out.push(target(
                format!("service:{key}"),
                cluster_ip,
                port,
                Reach::Cluster,
                None,
            ));
            if node_ports
                && let Some(np) = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok())
            {
                for (name, ip) in nodes {
                    out.push(target(
                        format!("nodeport:{name}:{key}"),
                        *ip,
                        np,
                        Reach::Everyone,
                        Some(name),
                    ));
                }
            }
            for ip in &external_ips {
                out.push(target(
                    format!("externalip:{ip}:{key}"),
                    *ip,
                    port,
                    Reach::Everyone,
                    None,
                ));
            }
            for ip in &lb_ips {
                out.push(target(
                    format!("lbip:{ip}:{key}"),
                    *ip,
                    port,
                    Reach::Everyone,
                    None,
                ));
            }
        }
    }
    out
}

/// An endpoint of a Service port, from the (completed) slices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod behind it (`targetRef`), when named.
    pub pod: Option<ObjectKey>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The port traffic is DNATed to (the slice's port of the same name and protocol).
    pub port: u16,
    /// `nodeName`.
    pub node: Option<String>,
}

/// The endpoints kube-proxy would use for a Service port (topology.go): the ready ones
/// (`ready` missing = ready), else the serving and terminating ones; duplicates removed.
pub fn usable_endpoints(docs: &[Value], target: &ServiceTarget) -> BTreeSet<Endpoint> {
    let mut ready = BTreeSet::new();
    let mut fallback = BTreeSet::new();
    for slice in docs.iter().filter(|d| is_kind(d, "EndpointSlice")) {
        let ns = key_of(slice).namespace;
        if ns != target.service.namespace
            || slice["metadata"]["labels"][SERVICE_NAME_LABEL].as_str()
                != Some(target.service.name.as_str())
        {
            continue;
        }
        let Some(port) = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|p| {
                let name = p["name"].as_str().unwrap_or_default();
                let proto = Protocol::parse(p["protocol"].as_str()).unwrap_or(Protocol::Tcp);
                (name == target.port_name && proto == target.protocol)
                    .then(|| p["port"].as_u64().and_then(|n| u16::try_from(n).ok()))
                    .flatten()
            })
        else {
            continue;
        };
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            let c = &ep["conditions"];
            let is_ready = c["ready"].as_bool().unwrap_or(true);
            let serving = c["serving"].as_bool().unwrap_or(is_ready);
            let terminating = c["terminating"].as_bool().unwrap_or(false);
            let pod = ep["targetRef"]["name"]
                .as_str()
                .map(|n| ObjectKey::new(ep["targetRef"]["namespace"].as_str().unwrap_or(&ns), n));
            for ip in ep["addresses"].as_array().into_iter().flatten() {
                let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let e = Endpoint {
                    pod: pod.clone(),
                    ip,
                    port,
                    node: ep["nodeName"].as_str().map(String::from),
                };
                if is_ready {
                    ready.insert(e);
                } else if serving && terminating {
                    fallback.insert(e);
                }
            }
        }
    }
    if ready.is_empty() { fallback } else { ready }
}

/// The Service's traffic policies: (externalTrafficPolicy Local, internalTrafficPolicy Local).
pub fn local_policies(docs: &[Value], service: &ObjectKey) -> (bool, bool) {
    let svc = docs
        .iter()
        .find(|d| is_kind(d, "Service") && key_of(d) == *service);
    let spec = svc.map(|s| &s["spec"]);
    let local = |field: &str| spec.is_some_and(|s| s[field].as_str() == Some("Local"));
    (
        local("externalTrafficPolicy"),
        local("internalTrafficPolicy"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<Value> {
        let text = r#"
- {apiVersion: v1, kind: Service, metadata: {name: web, namespace: x},
   spec: {type: NodePort, clusterIP: 10.96.0.10, selector: {app: web},
          externalIPs: [203.0.113.7],
          ports: [{name: http, port: 80, targetPort: web, nodePort: 30080},
                  {name: dns, port: 53, protocol: UDP, targetPort: 5353}]},
   status: {loadBalancer: {ingress: [{ip: 203.0.113.9}]}}}
- {apiVersion: v1, kind: Service, metadata: {name: db, namespace: x},
   spec: {clusterIP: 10.96.0.11, ports: [{port: 5432}]}}
- {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice,
   metadata: {name: db-1, namespace: x, labels: {kubernetes.io/service-name: db}},
   addressType: IPv4, ports: [{port: 5432}],
   endpoints: [{addresses: [0.0.0.0], targetRef: {kind: Pod, name: b}},
               {addresses: [0.0.0.0], targetRef: {kind: Pod, name: gone}},
               {addresses: [10.1.1.1], conditions: {ready: false}}]}
- {apiVersion: v1, kind: Service, metadata: {name: headless, namespace: x},
   spec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}}
- {apiVersion: v1, kind: Service, metadata: {name: ext, namespace: x},
   spec: {type: ExternalName, externalName: example.org}}
- {apiVersion: v1, kind: Service, metadata: {name: other, namespace: x,
   labels: {service.kubernetes.io/service-proxy-name: foo}},
   spec: {clusterIP: 10.96.0.12, ports: [{port: 80}]}}
"#;
        serde_saphyr::from_str(text).unwrap()
    }

    fn pods() -> BTreeMap<ObjectKey, RunningPod> {
        let pod = |ip: [u8; 4], node: &str, app: &str, web: u16| RunningPod {
            ip: ip.into(),
            node: node.into(),
            labels: [("app".to_owned(), app.to_owned())].into(),
            ports: vec![("web".into(), Protocol::Tcp, web)],
        };
        [
            (
                ObjectKey::new("x", "a"),
                pod([10, 244, 1, 2], "n1", "web", 8080),
            ),
            (
                ObjectKey::new("x", "c"),
                pod([10, 244, 2, 2], "n2", "web", 8081),
            ),
            (
                ObjectKey::new("x", "b"),
                pod([10, 244, 2, 3], "n2", "db", 0),
            ),
            (
                ObjectKey::new("y", "d"),
                pod([10, 244, 3, 2], "n3", "web", 8080),
            ),
        ]
        .into()
    }

    #[test]
    fn slices_are_filled_from_target_refs_and_built_from_selectors() {
        let out = controller_documents(&docs(), &pods());
        let slices: Vec<&Value> = out.iter().filter(|d| is_kind(d, "EndpointSlice")).collect();
        // db's own slice: b's address and node filled in, the gone pod dropped, the
        // endpoint without targetRef kept as it was.
        let db = slices
            .iter()
            .find(|s| s["metadata"]["name"] == "db-1")
            .unwrap();
        let eps = db["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0]["addresses"], json!(["10.244.2.3"]));
        assert_eq!(eps[0]["nodeName"], "n2");
        assert_eq!(eps[1]["addresses"], json!(["10.1.1.1"]));
        // web has no slice: built from its selector, one slice per resolution of the named
        // targetPort (a → 8080, c → 8081), only pods of its namespace.
        let web: Vec<&&Value> = slices
            .iter()
            .filter(|s| s["metadata"]["labels"][SERVICE_NAME_LABEL] == "web")
            .collect();
        assert_eq!(web.len(), 2, "{web:#?}");
        let mut seen = Vec::new();
        for s in &web {
            let ep = &s["endpoints"].as_array().unwrap()[0];
            let http = s["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "http")
                .unwrap();
            let dns = s["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "dns")
                .unwrap();
            assert_eq!(dns["port"], 5353);
            assert_eq!(dns["protocol"], "UDP");
            assert_eq!(ep["conditions"]["ready"], true);
            seen.push((
                ep["targetRef"]["name"].as_str().unwrap().to_owned(),
                http["port"].as_u64().unwrap(),
            ));
        }
        seen.sort();
        assert_eq!(seen, [("a".to_owned(), 8080), ("c".to_owned(), 8081)]);
        // The headless Service gets a slice too (the EndpointSlice controller makes them),
        // ExternalName and selector-less ones none.
        assert!(
            slices
                .iter()
                .any(|s| s["metadata"]["labels"][SERVICE_NAME_LABEL] == "headless")
        );
        assert!(
            !slices
                .iter()
                .any(|s| s["metadata"]["labels"][SERVICE_NAME_LABEL] == "ext")
        );
    }

    #[test]
    fn targets_cover_every_kind_and_skip_what_the_proxy_leaves_alone() {
        let nodes: BTreeMap<String, Ipv4Addr> = [
            ("n1".to_owned(), Ipv4Addr::new(192, 168, 77, 11)),
            ("n2".to_owned(), Ipv4Addr::new(192, 168, 77, 12)),
        ]
        .into();
        let t = service_targets(&docs(), &nodes);
        let names: Vec<(String, u16, &str)> = t
            .iter()
            .map(|t| (t.to.clone(), t.port, t.protocol.name()))
            .collect();
        assert_eq!(
            names,
            [
                ("service:x/web".to_owned(), 80, "TCP"),
                ("nodeport:n1:x/web".to_owned(), 30080, "TCP"),
                ("nodeport:n2:x/web".to_owned(), 30080, "TCP"),
                ("externalip:203.0.113.7:x/web".to_owned(), 80, "TCP"),
                ("lbip:203.0.113.9:x/web".to_owned(), 80, "TCP"),
                ("service:x/web".to_owned(), 53, "UDP"),
                ("externalip:203.0.113.7:x/web".to_owned(), 53, "UDP"),
                ("lbip:203.0.113.9:x/web".to_owned(), 53, "UDP"),
                ("service:x/db".to_owned(), 5432, "TCP"),
            ]
        );
        assert_eq!(t[1].ip, Ipv4Addr::new(192, 168, 77, 11));
        assert_eq!(t[0].reach, Reach::Cluster);
        assert_eq!(t[1].reach, Reach::Everyone);
    }

    #[test]
    fn usable_endpoints_are_the_ready_ones_with_the_slice_port() {
        let out = controller_documents(&docs(), &pods());
        let nodes = BTreeMap::new();
        let targets = service_targets(&out, &nodes);
        let http = targets
            .iter()
            .find(|t| t.to == "service:x/web" && t.port == 80)
            .unwrap();
        let eps = usable_endpoints(&out, http);
        let got: Vec<(String, u16)> = eps
            .iter()
            .map(|e| (e.pod.as_ref().unwrap().name.clone(), e.port))
            .collect();
        assert_eq!(got, [("a".to_owned(), 8080), ("c".to_owned(), 8081)]);
        // db: the filled endpoint is ready; the not-ready one is not used.
        let db = targets.iter().find(|t| t.to == "service:x/db").unwrap();
        let eps = usable_endpoints(&out, db);
        assert_eq!(eps.len(), 1);
        assert_eq!(eps.iter().next().unwrap().ip, Ipv4Addr::new(10, 244, 2, 3));
        // No pods at all: no endpoints (the probe expects "refused").
        let empty = controller_documents(&docs(), &BTreeMap::new());
        assert!(usable_endpoints(&empty, http).is_empty());
    }
}
