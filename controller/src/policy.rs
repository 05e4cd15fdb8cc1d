//! The NetworkPolicy model: `networking.k8s.io/v1` NetworkPolicies validated and normalised
//! into what the policy feature compiles, and label selectors.
//!
//! Owns: the API server's share of the semantics, which a cluster file has no API server to
//! apply — `policyTypes` defaulting (Ingress always; Egress when egress rules exist), port
//! protocol TCP by default, the rejection of what the API server would reject (a peer with
//! nothing or with both an ipBlock and a selector, a bad operator, a port out of range, an
//! `endPort` below `port` or with a named port, an `except` outside its `cidr`) — and label
//! selector matching (matchLabels and matchExpressions In, NotIn, Exists, DoesNotExist).
//! An invalid policy becomes a [`Problem`] naming the object and the field.
//!
//! Does not own: which pods a policy selects right now (the state's memberships) or flows
//! (`features::policy`).

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::Problem;
use crate::source::ObjectKey;

/// The label the API server puts on every Namespace (Kubernetes ≥ 1.21): its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The NetworkPolicy annotation that turns on audit logging of the connections its rules
/// allow and its isolation denies (value `"true"`; anything else, or no annotation, is off,
/// as Antrea's `networkpolicy.antrea.io/enable-logging`). See `crate::audit`.
pub const AUDIT_ANNOTATION: &str = "switchyard.io/audit";

/// Labels, sorted by key (as [`crate::model::PodModel::labels`]).
pub type Labels = Vec<(String, String)>;

/// The value of `key` in sorted labels.
pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(key))
        .ok()
        .map(|i| labels[i].1.as_str())
}

/// The direction of a rule: into the selected pods, or out of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic to the selected pods (`spec.ingress`).
    Ingress,
    /// Traffic from the selected pods (`spec.egress`).
    Egress,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The field of the spec holding the rules.
    pub fn field(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// One requirement of a selector (`matchExpressions`; `matchLabels` entries become `In`
/// with one value).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    /// The label is one of the values.
    In(String, Vec<String>),
    /// The label is absent or none of the values.
    NotIn(String, Vec<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &[(String, String)]) -> bool {
        match self {
            Requirement::In(k, vs) => label(labels, k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => label(labels, k).is_none_or(|v| vs.iter().all(|x| x != v)),
            Requirement::Exists(k) => label(labels, k).is_some(),
            Requirement::DoesNotExist(k) => label(labels, k).is_none(),
        }
    }
}

/// A label selector: every requirement must hold; no requirement selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    /// The requirements, `matchLabels` first (sorted), then `matchExpressions` in order.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Whether these labels are selected.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// A label every selected object carries (the first `In` with one value), if any: what
    /// the state indexes the selector by, so a labelled object finds the selectors that
    /// may select it without looking at all of them.
    pub fn anchor(&self) -> Option<(&str, &str)> {
        self.requirements.iter().find_map(|r| match r {
            Requirement::In(k, vs) if vs.len() == 1 => Some((k.as_str(), vs[0].as_str())),
            _ => None,
        })
    }

    fn parse(sel: &LabelSelector, field: &str) -> Result<Selector, (String, String)> {
        let mut requirements: Vec<Requirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            let values = e.values.clone().unwrap_or_default();
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err((
                        format!("{at}.values"),
                        format!("operator {} needs at least one value", e.operator),
                    ));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err((
                        format!("{at}.values"),
                        format!("operator {} takes no values", e.operator),
                    ));
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err((
                        format!("{at}.operator"),
                        format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            };
            requirements.push(r);
        }
        Ok(Selector { requirements })
    }
}

/// Which namespaces a pod peer's pods come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespaces {
    /// The policy's own namespace (a peer with only a `podSelector`).
    Own(String),
    /// Every namespace whose labels match (`namespaceSelector`; empty = every namespace).
    Matching(Selector),
}

/// One `from`/`to` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Pods matching `pods` in the namespaces `namespaces` (both must hold).
    Pods {
        /// Which namespaces.
        namespaces: Namespaces,
        /// Which pods in them (empty = all).
        pods: Selector,
    },
    /// Addresses: `cidr` minus each of `except`, as disjoint prefixes (OVS matches
    /// prefixes; set difference is done here, once).
    Block(Vec<Ipv4Net>),
}

/// An L4 protocol a policy port names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The Kubernetes spelling.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// From the Kubernetes spelling (`None` = TCP, the API server's default).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some("SCTP") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }
}

/// The destination port(s) of one policy port entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Every port of the protocol (no `port`).
    Any,
    /// `port`..=`endPort` (one port when they are equal).
    Range(u16, u16),
    /// A containerPort name, resolved against each destination pod (with the protocol).
    Named(String),
}

/// One `ports` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyPort {
    /// The protocol (TCP when omitted).
    pub protocol: Protocol,
    /// Which ports.
    pub port: PortMatch,
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// The peers (`from`/`to`); `None` = every source or destination (empty or missing).
    pub peers: Option<Vec<Peer>>,
    /// The ports; `None` = every port and protocol (empty or missing).
    pub ports: Option<Vec<PolicyPort>>,
}

/// A validated NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyModel {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `spec.podSelector`: the pods of the policy's namespace it applies to.
    pub pod_selector: Selector,
    /// Ingress rules when the policy isolates for ingress (`policyTypes` holds Ingress).
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules when the policy isolates for egress.
    pub egress: Option<Vec<Rule>>,
    /// New connections it allows or denies are logged ([`AUDIT_ANNOTATION`], or the
    /// controller's `--policy-audit` for every policy).
    pub audit: bool,
}

impl PolicyModel {
    /// The rules of a direction, if the policy isolates for it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// Validates and normalises one NetworkPolicy.
pub fn policy_model(key: &ObjectKey, np: &NetworkPolicy) -> Result<PolicyModel, Problem> {
    let problem = |(field, reason): (String, String)| Problem {
        object: format!("NetworkPolicy/{key}"),
        field,
        reason,
    };
    let Some(spec) = np.spec.as_ref() else {
        return Err(problem(("spec".into(), "missing".into())));
    };
    let pod_selector = match &spec.pod_selector {
        Some(sel) => Selector::parse(sel, "spec.podSelector").map_err(problem)?,
        None => Selector::default(),
    };
    // API server defaulting (pkg/apis/networking/v1/defaults.go): Ingress always; Egress
    // when there are egress rules.
    let (has_ingress, has_egress) = match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => {
            for (i, t) in types.iter().enumerate() {
                if t != "Ingress" && t != "Egress" {
                    return Err(problem((
                        format!("spec.policyTypes[{i}]"),
                        format!("{t:?} is not Ingress or Egress"),
                    )));
                }
            }
            (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            )
        }
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    };
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        let at = format!("spec.ingress[{i}]");
        ingress.push(
            rule(
                &key.namespace,
                r.from.as_deref(),
                r.ports.as_deref(),
                &at,
                "from",
            )
            .map_err(problem)?,
        );
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        let at = format!("spec.egress[{i}]");
        egress.push(
            rule(
                &key.namespace,
                r.to.as_deref(),
                r.ports.as_deref(),
                &at,
                "to",
            )
            .map_err(problem)?,
        );
    }
    Ok(PolicyModel {
        key: key.clone(),
        pod_selector,
        ingress: has_ingress.then_some(ingress),
        egress: has_egress.then_some(egress),
        audit: np
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(AUDIT_ANNOTATION))
            .is_some_and(|v| v == "true"),
    })
}

fn rule(
    namespace: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    at: &str,
    peers_field: &str,
) -> Result<Rule, (String, String)> {
    let peers = match peers {
        None | Some([]) => None,
        Some(list) => {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let field = format!("{at}.{peers_field}[{i}]");
                if let Some(peer) = peer(namespace, p, &field)? {
                    out.push(peer);
                }
            }
            // Only IPv6 blocks: they match nothing on this IPv4 network, but the rule
            // still restricts its peers.
            Some(out)
        }
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(list) => {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                out.push(port(p, &format!("{at}.ports[{i}]"))?);
            }
            Some(out)
        }
    };
    Ok(Rule { peers, ports })
}

fn peer(
    namespace: &str,
    p: &NetworkPolicyPeer,
    field: &str,
) -> Result<Option<Peer>, (String, String)> {
    match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
        (None, None, None) => Err((
            field.into(),
            "a peer needs a podSelector, a namespaceSelector or an ipBlock".into(),
        )),
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err((
            field.into(),
            "an ipBlock cannot be combined with a podSelector or namespaceSelector".into(),
        )),
        (Some(block), None, None) => {
            let cidr = match block.cidr.parse::<IpNet>() {
                Ok(IpNet::V4(n)) => n.trunc(),
                Ok(IpNet::V6(_)) => return Ok(None),
                Err(e) => {
                    return Err((
                        format!("{field}.ipBlock.cidr"),
                        format!("{:?} is not a CIDR: {e}", block.cidr),
                    ));
                }
            };
            let mut except = Vec::new();
            for (i, e) in block.except.iter().flatten().enumerate() {
                let at = format!("{field}.ipBlock.except[{i}]");
                let net = match e.parse::<IpNet>() {
                    Ok(IpNet::V4(n)) => n.trunc(),
                    Ok(IpNet::V6(_)) | Err(_) => {
                        return Err((at, format!("{e:?} is not an IPv4 CIDR like the cidr")));
                    }
                };
                if !cidr.contains(&net) || net == cidr {
                    return Err((at, format!("{net} is not strictly inside {cidr}")));
                }
                except.push(net);
            }
            Ok(Some(Peer::Block(subtract(cidr, &except))))
        }
        (None, pods, nss) => {
            let pods = match pods {
                Some(s) => Selector::parse(s, &format!("{field}.podSelector"))?,
                None => Selector::default(),
            };
            let namespaces = match nss {
                Some(s) => {
                    Namespaces::Matching(Selector::parse(s, &format!("{field}.namespaceSelector"))?)
                }
                None => Namespaces::Own(namespace.to_owned()),
            };
            Ok(Some(Peer::Pods { namespaces, pods }))
        }
    }
}

fn port(p: &NetworkPolicyPort, field: &str) -> Result<PolicyPort, (String, String)> {
    let protocol = Protocol::parse(p.protocol.as_deref()).ok_or_else(|| {
        (
            format!("{field}.protocol"),
            format!(
                "{:?} is not TCP, UDP or SCTP",
                p.protocol.as_deref().unwrap_or("")
            ),
        )
    })?;
    let check = |n: i32, what: &str| -> Result<u16, (String, String)> {
        u16::try_from(n).ok().filter(|n| *n != 0).ok_or_else(|| {
            (
                format!("{field}.{what}"),
                format!("{n} is not in 1..=65535"),
            )
        })
    };
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::Any,
        (None, Some(_)) => {
            return Err((format!("{field}.endPort"), "endPort needs a port".into()));
        }
        (Some(IntOrString::Int(n)), end) => {
            let first = check(*n, "port")?;
            let last = match end {
                Some(e) => check(e, "endPort")?,
                None => first,
            };
            if last < first {
                return Err((
                    format!("{field}.endPort"),
                    format!("{last} is below port {first}"),
                ));
            }
            PortMatch::Range(first, last)
        }
        (Some(IntOrString::String(name)), None) => match name.parse::<i32>() {
            // The API server stores "80" as a string only if it was written so; a named
            // port is never all digits (IANA_SVC_NAME), so treat it as the number.
            Ok(n) => {
                let n = check(n, "port")?;
                PortMatch::Range(n, n)
            }
            Err(_) if name.is_empty() => {
                return Err((format!("{field}.port"), "empty port name".into()));
            }
            Err(_) => PortMatch::Named(name.clone()),
        },
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err((
                format!("{field}.endPort"),
                "endPort cannot be used with a named port".into(),
            ));
        }
    };
    Ok(PolicyPort { protocol, port })
}

/// `cidr` minus every net of `except`, as the fewest disjoint prefixes (sorted).
pub fn subtract(cidr: Ipv4Net, except: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    fn walk(net: Ipv4Net, except: &[Ipv4Net], out: &mut Vec<Ipv4Net>) {
        if except.iter().any(|e| e.contains(&net)) {
            return;
        }
        if !except.iter().any(|e| net.contains(e)) {
            out.push(net);
            return;
        }
        // Some excepted prefix lies strictly inside: split in halves.
        if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
            for half in halves {
                walk(half, except, out);
            }
        }
    }
    walk(cidr, except, &mut out);
    out
}

/// `first..=last` as the fewest (value, mask) prefix matches on a 16-bit port: OVS has no
/// range match, but masks `tp_dst` (the way Antrea and OVN split port ranges).
pub fn port_masks(first: u16, last: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    while lo <= hi {
        // The largest aligned block starting at lo that does not pass hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, (!(size - 1)) as u16));
        lo += size;
    }
    out
}

/// The address of a /32.
pub fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("32 is a valid IPv4 prefix length")
}

#[cfg(test)]
mod tests;
