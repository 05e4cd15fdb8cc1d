//! Who owns a flow on one node, read from its cookie (see `pipeline::cookie` and `ids`):
//! the category in the top byte, the owner's id (an address, or a conjunction id) in the
//! low 32 bits, the direction and prefix length of policy flows in between.
//!
//! Built per request for one node from the state snapshot: the node's attached pods by
//! address, the nodes by pod CIDR, the conjunction ids of the policies on the node. Its
//! cost is that node's share of the state, never the cluster's pods.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::pipeline::{CookieCategory, cookie_owner};
use crate::policy::Direction;
use crate::source::ObjectKey;
use crate::state::{RuleKey, Snapshot};

/// Names the owners of one node's flows.
pub struct OwnerNames {
    pods: HashMap<Ipv4Addr, ObjectKey>,
    nodes: HashMap<Ipv4Addr, String>,
    rules: HashMap<u32, RuleKey>,
    /// Service ports by id, as `ns/name:port/PROTOCOL`.
    services: HashMap<u32, String>,
}

impl OwnerNames {
    /// The names for `node`'s flows as `snap` holds the cluster.
    pub fn new(snap: &Snapshot, node: &str) -> OwnerNames {
        let pods = snap
            .attachments_on(node)
            .map(|a| (a.ip, a.pod.clone()))
            .collect();
        let nodes = snap
            .nodes()
            .map(|n| (n.pod_cidr.network(), n.name.to_string()))
            .collect();
        let mut rules = HashMap::new();
        for policy in snap.policies_on(node) {
            for direction in Direction::BOTH {
                let n = policy.rules(direction).map_or(0, <[_]>::len);
                for index in 0..n {
                    let key = RuleKey {
                        policy: policy.key.clone(),
                        direction,
                        index: index as u16,
                    };
                    if let Some(id) = snap.conj_id(&key) {
                        rules.insert(id, key);
                    }
                }
            }
        }
        // Service flows are on every node: every Service port (a dump shows them all).
        let services = snap
            .services()
            .flat_map(|svc| {
                svc.ports.iter().map(move |p| {
                    (
                        p.id,
                        format!("{}:{}/{}", svc.key, p.name, p.protocol.name()),
                    )
                })
            })
            .collect();
        OwnerNames {
            pods,
            nodes,
            rules,
            services,
        }
    }

    /// The owner of a flow with this cookie, as the admin API prints it (see the proto's
    /// `Flow.owner`).
    pub fn name(&self, cookie: u64) -> String {
        let id = cookie_owner(cookie);
        let ip = Ipv4Addr::from(id);
        let direction = if cookie & (1 << 32) != 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let pod = |what: &str| match self.pods.get(&ip) {
            Some(key) => format!("{what}{key}"),
            None => format!("{what}{ip}?"),
        };
        match CookieCategory::of(cookie) {
            Some(CookieCategory::Pipeline) => "pipeline".into(),
            Some(CookieCategory::Gateway) => "gateway".into(),
            Some(CookieCategory::Pod) => pod("pod "),
            Some(CookieCategory::RemoteNode) => match self.nodes.get(&ip) {
                Some(name) => format!("node {name}"),
                None => format!("node {ip}?"),
            },
            Some(CookieCategory::PolicyBase) => "policy-base".into(),
            Some(CookieCategory::PolicyRule) => match self.rules.get(&id) {
                Some(rule) => format!("policy {rule}"),
                None => format!("policy conj_id={id}?"),
            },
            Some(CookieCategory::PolicyTarget) => {
                pod(&format!("policy-target {} ", direction.field()))
            }
            Some(CookieCategory::PolicyPeer) => {
                let prefix = ((cookie >> 40) & 0x3f) as u8;
                let net = Ipv4Net::new(ip, prefix.min(32))
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| format!("{ip}/{prefix}"));
                format!("policy-peer {} {net}", direction.field())
            }
            Some(CookieCategory::Service) => match self.services.get(&id) {
                Some(port) => format!("service {port}"),
                None => format!("service port-id={id}?"),
            },
            Some(CookieCategory::ServiceBase) => "service-base".into(),
            Some(CookieCategory::ServiceAffinity) => match self.services.get(&id) {
                Some(port) => format!("service-affinity {port}"),
                None => format!("service-affinity port-id={id}?"),
            },
            None => format!("foreign {cookie:#x}"),
        }
    }
}

/// Whether an owner name passes a `--owner` filter: the exact name, or its kind alone
/// (`pod`, `node`, `policy` — which takes every policy kind —, `service` — likewise —,
/// `pipeline`, `gateway`, `foreign`).
pub fn owner_matches(owner: &str, filter: &str) -> bool {
    if filter.is_empty() || owner == filter {
        return true;
    }
    let kind = owner.split(' ').next().unwrap_or(owner);
    kind == filter
        || (filter == "policy" && kind.starts_with("policy"))
        || (filter == "service" && kind.starts_with("service"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids;

    fn empty() -> OwnerNames {
        OwnerNames {
            pods: HashMap::from([(Ipv4Addr::new(10, 244, 1, 5), ObjectKey::new("x", "a"))]),
            nodes: HashMap::from([(Ipv4Addr::new(10, 244, 2, 0), "node-2".to_owned())]),
            rules: HashMap::new(),
            services: HashMap::new(),
        }
    }

    #[test]
    fn cookies_name_their_owners() {
        let n = empty();
        let a = Ipv4Addr::new(10, 244, 1, 5);
        assert_eq!(n.name(ids::pod_cookie(a)), "pod x/a");
        assert_eq!(
            n.name(ids::pod_cookie(Ipv4Addr::new(10, 244, 1, 9))),
            "pod 10.244.1.9?"
        );
        assert_eq!(n.name(ids::pipeline_cookie()), "pipeline");
        assert_eq!(
            n.name(ids::remote_node_cookie("10.244.2.0/24".parse().unwrap())),
            "node node-2"
        );
        assert_eq!(
            n.name(ids::policy_target_cookie(Direction::Egress, a)),
            "policy-target egress x/a"
        );
        assert_eq!(
            n.name(ids::policy_peer_cookie(
                Direction::Ingress,
                "10.0.0.0/8".parse().unwrap()
            )),
            "policy-peer ingress 10.0.0.0/8"
        );
        assert_eq!(n.name(ids::policy_rule_cookie(7)), "policy conj_id=7?");
        assert_eq!(n.name(0x1234), "foreign 0x1234");
    }

    #[test]
    fn owner_filters_take_a_name_or_a_kind() {
        assert!(owner_matches("pod x/a", "pod"));
        assert!(owner_matches("pod x/a", "pod x/a"));
        assert!(!owner_matches("pod x/a", "pod x/b"));
        assert!(owner_matches("policy-target egress x/a", "policy"));
        assert!(!owner_matches("node n1", "pod"));
    }
}
