//! The policy feature against the upstream model (test/e2e/network/netpol in
//! kubernetes/kubernetes): namespaces x, y, z × pods a, b, c on three nodes, ports 80/81 ×
//! TCP/UDP/SCTP. Every ordered pair of pods × port × protocol is sent through the
//! EgressRule table of the sender's node and the IngressRule table of the receiver's node,
//! evaluated with OVS's conjunctive-match semantics, and compared with the verdict computed
//! straight from the policy models ([`Snapshot::policy_allows`]) and, for the ported
//! upstream cases, with upstream's own expectations.

use std::collections::HashMap;

use super::*;
use crate::policy::Protocol;
use crate::source::{Delta, Object};
use crate::state::Change;
use crate::state::NetworkState;
use crate::state::testing::{apply as delta, node};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

fn obj(v: serde_json::Value) -> Object {
    let kind = v["kind"].as_str().unwrap_or_default().to_owned();
    match kind.as_str() {
        "Pod" => {
            Object::from(serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(v).unwrap())
        }
        "Namespace" => Object::from(
            serde_json::from_value::<k8s_openapi::api::core::v1::Namespace>(v).unwrap(),
        ),
        _ => Object::from(
            serde_json::from_value::<k8s_openapi::api::networking::v1::NetworkPolicy>(v).unwrap(),
        ),
    }
}

fn pod_json(ns: &str, name: &str, node: &str, labels: serde_json::Value) -> serde_json::Value {
    let mut ports = vec![];
    for p in [80, 81] {
        for proto in ["TCP", "UDP", "SCTP"] {
            ports.push(serde_json::json!({
                "name": format!("serve-{p}-{}", proto.to_lowercase()),
                "containerPort": p, "protocol": proto,
            }));
        }
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports}]}})
}

pub(crate) fn policy_json(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// (from, to, protocol, port), through the flows, from the model.
type Verdicts = ((ObjectKey, ObjectKey, Protocol, u16), bool, bool);

struct Model {
    state: NetworkState,
    ofports: HashMap<String, u32>,
    /// Each node's flows by owner, kept the way a node agent keeps them: only the owners
    /// a change set names are recomputed.
    agents: HashMap<String, std::collections::BTreeMap<Owner, Vec<Flow>>>,
}

impl Model {
    fn new() -> Model {
        let mut state = NetworkState::new();
        let mut deltas = vec![];
        for (i, n) in NODES.iter().enumerate() {
            deltas.push(delta(node(
                n,
                &format!("10.244.{}.0/24", i + 1),
                &format!("192.168.77.{}", 11 + i),
            )));
        }
        for ns in NAMESPACES {
            deltas.push(Delta::Apply(obj(serde_json::json!({"apiVersion": "v1",
                "kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}}))));
            for (i, p) in PODS.iter().enumerate() {
                deltas.push(Delta::Apply(obj(pod_json(
                    ns,
                    p,
                    NODES[i],
                    serde_json::json!({"pod": p}),
                ))));
            }
        }
        state.apply(deltas);
        let mut ofports = HashMap::new();
        let mut port = 10;
        for ns in NAMESPACES {
            for p in PODS {
                let iface = format!("v{ns}{p}");
                state.attach(&ObjectKey::new(ns, p), &iface, "c").0.unwrap();
                ofports.insert(iface, port);
                port += 1;
            }
        }
        let mut m = Model {
            state,
            ofports,
            agents: HashMap::new(),
        };
        for n in NODES {
            m.recompute(n, None);
        }
        m
    }

    /// Recomputes one owner (or, with `None`, every owner) of a node.
    fn recompute(&mut self, node: &str, owner: Option<Owner>) {
        let snap = self.state.snapshot();
        let Some(model) = snap.node(node) else {
            return;
        };
        let ctx = NodeContext {
            node: model,
            state: &snap,
            ofports: &self.ofports,
        };
        let agent = self.agents.entry(node.to_owned()).or_default();
        match owner {
            Some(o) => {
                agent.insert(o.clone(), owner_flows(&o, &ctx));
            }
            None => {
                agent.clear();
                for o in node_owners(&ctx) {
                    agent.insert(o.clone(), owner_flows(&o, &ctx));
                }
            }
        }
    }

    /// What `agent::route` marks, recomputed.
    fn route(&mut self, cs: &crate::state::ChangeSet) {
        for c in &cs.changes {
            match c {
                Change::Pod { key, node } => {
                    let key = Arc::new(key.clone());
                    self.recompute(node, Some(Owner::Pod(key.clone())));
                    for d in Direction::BOTH {
                        self.recompute(
                            node,
                            Some(Owner::Policy(PolicyOwner::Target(d, key.clone()))),
                        );
                    }
                }
                Change::Policy { node, owner } => {
                    self.recompute(node, Some(Owner::Policy(owner.clone())))
                }
                Change::NodeAdded(_) | Change::NodeChanged(_) | Change::NodeRemoved(_) => {
                    for n in NODES {
                        self.recompute(n, None);
                    }
                }
                Change::Other(..) | Change::Service(..) => {}
            }
        }
    }

    fn apply(&mut self, objects: Vec<serde_json::Value>) -> crate::state::ChangeSet {
        let cs = self
            .state
            .apply(objects.into_iter().map(|o| Delta::Apply(obj(o))).collect());
        self.route(&cs);
        cs
    }

    fn attach(&mut self, key: &ObjectKey, iface: &str, ofport: u32) {
        self.ofports.insert(iface.to_owned(), ofport);
        let (r, cs) = self.state.attach(key, iface, "c");
        r.unwrap();
        self.route(&cs);
    }

    fn delete_policy(&mut self, ns: &str, name: &str) {
        let cs = self.state.apply(vec![Delta::Delete(
            crate::source::Kind::NetworkPolicy,
            ObjectKey::new(ns, name),
        )]);
        self.route(&cs);
    }

    /// A node's flows as its agent holds them, checked against a full recomputation: the
    /// change sets named every owner whose flows changed.
    fn node_flows(&self, node: &str) -> Vec<Flow> {
        let snap = self.state.snapshot();
        let ctx = NodeContext {
            node: snap.node(node).unwrap(),
            state: &snap,
            ofports: &self.ofports,
        };
        let key = |f: &Flow| (f.table, f.priority, format!("{:?}", f.match_), f.cookie);
        let mut held: Vec<Flow> = self.agents[node].values().flatten().cloned().collect();
        held.sort_by_key(key);
        let mut full = node_flows(&ctx);
        full.sort_by_key(key);
        if held != full {
            let show = |v: &[Flow]| -> std::collections::BTreeSet<String> {
                v.iter().map(|f| format!("{f:?}")).collect()
            };
            let (h, f) = (show(&held), show(&full));
            panic!(
                "{node}: incremental flows differ from a full recomputation\nmissing: {:#?}\nstale: {:#?}",
                f.difference(&h).collect::<Vec<_>>(),
                h.difference(&f).collect::<Vec<_>>()
            );
        }
        held
    }

    /// Every (from, to, protocol, port) through the flows, and the model's verdict.
    fn truth_table(&self) -> Vec<Verdicts> {
        let snap = self.state.snapshot();
        let flows: HashMap<&str, Vec<Flow>> =
            NODES.iter().map(|n| (*n, self.node_flows(n))).collect();
        let mut out = vec![];
        for from in pods() {
            for to in pods() {
                if from == to {
                    continue;
                }
                for protocol in PROTOCOLS {
                    for port in [80, 81] {
                        let src = snap.attachment(&from).unwrap().ip;
                        let dst = snap.attachment(&to).unwrap().ip;
                        let p = Packet {
                            src,
                            dst,
                            proto: protocol.number(),
                            dport: port,
                            reg0: 1,
                        };
                        let sender = &flows[snap.pod(&from).unwrap().node.as_str()];
                        let receiver = &flows[snap.pod(&to).unwrap().node.as_str()];
                        let through = eval(sender, Table::EgressRule, &p)
                            && eval(receiver, Table::IngressRule, &Packet { reg0: 2, ..p });
                        let expected = snap.policy_allows(&from, &to, Some((protocol, port)));
                        out.push((
                            (from.clone(), to.clone(), protocol, port),
                            through,
                            expected,
                        ));
                    }
                }
                // ICMP: no policy port names it; only rules without ports allow it. Flows
                // and model must agree (upstream does not probe it).
                let (src, dst) = (
                    snap.attachment(&from).unwrap().ip,
                    snap.attachment(&to).unwrap().ip,
                );
                let p = Packet {
                    src,
                    dst,
                    proto: 1,
                    dport: 0,
                    reg0: 1,
                };
                let through = eval(
                    &flows[snap.pod(&from).unwrap().node.as_str()],
                    Table::EgressRule,
                    &p,
                ) && eval(
                    &flows[snap.pod(&to).unwrap().node.as_str()],
                    Table::IngressRule,
                    &Packet { reg0: 2, ..p },
                );
                assert_eq!(
                    through,
                    snap.policy_allows(&from, &to, None),
                    "ICMP {from} -> {to}"
                );
            }
        }
        out
    }

    /// Checks the flows against the model for every pair, and against `upstream` (the
    /// upstream case's expectation) when given.
    fn check(&self, case: &str, upstream: impl Fn(&str, &str, Protocol, u16) -> bool) {
        let mut wrong = vec![];
        for ((from, to, protocol, port), through, expected) in self.truth_table() {
            let up = upstream(&from.to_string(), &to.to_string(), protocol, port);
            if through != expected || expected != up {
                wrong.push(format!(
                    "{from} -> {to} {}/{port}: flows {through}, model {expected}, upstream {up}",
                    protocol.name()
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{case}: {} wrong of 486:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

fn pods() -> Vec<ObjectKey> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| ObjectKey::new(*ns, *p)))
        .collect()
}

#[derive(Clone, Copy)]
struct Packet {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    dport: u16,
    reg0: u32,
}

fn field_value(f: Field, p: &Packet, conj_id: Option<u32>) -> Option<u128> {
    Some(match f {
        Field::EthType => 0x0800,
        Field::Ipv4Src => u32::from(p.src).into(),
        Field::Ipv4Dst => u32::from(p.dst).into(),
        Field::IpProto => p.proto.into(),
        Field::TcpDst if p.proto == 6 => p.dport.into(),
        Field::UdpDst if p.proto == 17 => p.dport.into(),
        Field::SctpDst if p.proto == 132 => p.dport.into(),
        Field::CtState => u128::from(CT_NEW | CT_TRK),
        Field::Reg(0) => p.reg0.into(),
        Field::ConjId => conj_id?.into(),
        _ => return None,
    })
}

fn matches(f: &Flow, p: &Packet, conj_id: Option<u32>) -> bool {
    f.match_.iter().all(|m| {
        field_value(m.field, p, conj_id)
            .is_some_and(|v| v & m.mask_u128() == m.value_u128() & m.mask_u128())
    })
}

/// One table as OVS's classifier evaluates it with conjunctions: the highest priority with a
/// matching ordinary flow or a complete conjunction wins; an incomplete conjunction falls
/// through. True when the packet goes on (goto), false when it is dropped.
fn eval(flows: &[Flow], table: Table, p: &Packet) -> bool {
    let flows: Vec<&Flow> = flows.iter().filter(|f| f.table == table).collect();
    let mut priorities: Vec<u16> = flows.iter().map(|f| f.priority).collect();
    priorities.sort_unstable_by(|a, b| b.cmp(a));
    priorities.dedup();
    let goes_on = |f: &Flow| {
        f.instructions
            .iter()
            .any(|i| matches!(i, Instruction::GotoTable(_)))
    };
    for prio in priorities {
        let here: Vec<&&Flow> = flows
            .iter()
            .filter(|f| f.priority == prio && matches(f, p, None))
            .collect();
        let mut plain = here.iter().filter(|f| !is_conj(f));
        if let Some(f) = plain.next() {
            assert!(
                !here.iter().any(|f| is_conj(f)),
                "ambiguous: plain and conjunctive flows at {prio}"
            );
            return goes_on(f);
        }
        let mut clauses: HashMap<u32, (u8, std::collections::BTreeSet<u8>)> = HashMap::new();
        for f in &here {
            for i in &f.instructions {
                if let Instruction::ApplyActions(actions) = i {
                    for a in actions {
                        if let Action::Conjunction {
                            id,
                            clause,
                            n_clauses,
                        } = a
                        {
                            let e = clauses
                                .entry(*id)
                                .or_insert((*n_clauses, Default::default()));
                            assert_eq!(e.0, *n_clauses, "one conjunction, one clause count");
                            e.1.insert(*clause);
                        }
                    }
                }
            }
        }
        let mut complete: Vec<u32> = clauses
            .iter()
            .filter(|(_, (n, seen))| seen.len() == usize::from(*n))
            .map(|(id, _)| *id)
            .collect();
        complete.sort_unstable();
        // The lowest complete id (OVS takes any one; our flows all allow).
        if let Some(id) = complete.first() {
            let id = *id;
            let f = flows
                .iter()
                .find(|f| matches(f, p, Some(id)) && f.match_.get(Field::ConjId).is_some())
                .unwrap_or_else(|| panic!("conjunction {id} complete but no conj_id flow"));
            return goes_on(f);
        }
    }
    panic!("no flow in {table:?} matched");
}

fn is_conj(f: &Flow) -> bool {
    f.instructions.iter().any(|i| {
        matches!(i, Instruction::ApplyActions(a) if a.iter().any(|a| matches!(a, Action::Conjunction { .. })))
    })
}

/// Parses "ns/name".
fn split(k: &str) -> (&str, &str) {
    k.split_once('/').unwrap()
}

fn all(_: &str, _: &str, _: Protocol, _: u16) -> bool {
    true
}

#[test]
fn without_policies_everything_is_allowed() {
    Model::new().check("no policy", all);
}

#[test]
fn upstream_cases_give_upstream_truth_tables() {
    use serde_json::json;
    type Expect = Box<dyn Fn(&str, &str, Protocol, u16) -> bool>;
    let cases: Vec<(&str, Vec<serde_json::Value>, Expect)> = vec![
        (
            "should support a 'default-deny-ingress' policy",
            vec![policy_json("x", "deny-ingress", json!({"podSelector": {}}))],
            Box::new(|_, to, _, _| split(to).0 != "x"),
        ),
        (
            "should support a 'default-deny-all' policy",
            vec![policy_json(
                "x",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            )],
            Box::new(|from, to, _, _| split(to).0 != "x" && split(from).0 != "x"),
        ),
        (
            "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || from == "x/b"),
        ),
        (
            "should enforce policy to allow ingress traffic from pods in all namespaces",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
            )],
            Box::new(all),
        ),
        (
            "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || split(from).0 == "y"),
        ),
        (
            "should enforce policy based on PodSelector with MatchExpressions",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || from == "x/b"),
        ),
        (
            "should enforce policy based on NamespaceSelector with MatchExpressions",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y"]}]}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || split(from).0 == "y"),
        ),
        (
            "should enforce policy based on PodSelector or NamespaceSelector",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [
                    {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}},
                    {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || from != "x/c"),
        ),
        (
            "should enforce policy based on PodSelector and NamespaceSelector",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
                    "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || from == "y/b" || from == "z/b"),
        ),
        (
            "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
                    "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]}),
            )],
            Box::new(|from, to, _, _| {
                to != "x/a" || (split(from).0 != "x" && split(from).1 != "a")
            }),
        ),
        (
            "should enforce policy based on any PodSelectors",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                    {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || from == "x/b" || from == "x/c"),
        ),
        (
            "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                    "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || from == "y/a"),
        ),
        (
            "should enforce policy based on Ports",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                    "ports": [{"port": 81, "protocol": "TCP"}]}]}),
            )],
            Box::new(|from, to, proto, port| {
                to != "x/a" || (split(from).0 == "y" && proto == Protocol::Tcp && port == 81)
            }),
        ),
        (
            "should enforce multiple, stacked policies with overlapping podSelectors",
            vec![
                policy_json(
                    "x",
                    "p81",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                        "ports": [{"port": 81, "protocol": "TCP"}]}]}),
                ),
                policy_json(
                    "x",
                    "p80",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                        "ports": [{"port": 80, "protocol": "TCP"}]}]}),
                ),
            ],
            Box::new(|from, to, proto, _| {
                to != "x/a" || (split(from).0 == "y" && proto == Protocol::Tcp)
            }),
        ),
        (
            "should support allow-all policy",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [{}]}),
            )],
            Box::new(all),
        ),
        (
            "should allow ingress access on one named port",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
            )],
            Box::new(|_, to, proto, port| {
                split(to).0 != "x" || (proto == Protocol::Tcp && port == 81)
            }),
        ),
        (
            "should allow ingress access from namespace on one named port",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                    "ports": [{"port": "serve-80-tcp"}]}]}),
            )],
            Box::new(|from, to, proto, port| {
                split(to).0 != "x" || (split(from).0 == "y" && proto == Protocol::Tcp && port == 80)
            }),
        ),
        (
            "should allow egress access on one named port",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
            )],
            Box::new(|from, _, proto, port| {
                split(from).0 != "x" || (proto == Protocol::Tcp && port == 80)
            }),
        ),
        (
            "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                    "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
            )],
            Box::new(|from, to, _, _| from != "x/a" || to == "y/a"),
        ),
        (
            "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"protocol": "TCP"}]}]}),
            )],
            Box::new(|_, to, proto, _| to != "x/a" || proto == Protocol::Tcp),
        ),
        (
            "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
            vec![
                policy_json(
                    "x",
                    "only-80",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}),
                ),
                policy_json(
                    "x",
                    "all",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]}),
                ),
            ],
            Box::new(all),
        ),
        (
            "should enforce multiple egress policies with egress allow-all policy taking precedence",
            vec![
                policy_json(
                    "x",
                    "only-80",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}),
                ),
                policy_json(
                    "x",
                    "all",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"], "egress": [{}]}),
                ),
            ],
            Box::new(all),
        ),
        (
            "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
            vec![
                policy_json(
                    "x",
                    "deny-egress-a",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"]}),
                ),
                policy_json(
                    "x",
                    "deny-ingress-b-from-a",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]}}]}]}),
                ),
            ],
            Box::new(|from, to, _, _| from != "x/a" && (to != "x/b" || split(from).0 == "x")),
        ),
        (
            "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}),
            )],
            Box::new(|_, to, proto, port| to != "x/a" || (proto == Protocol::Sctp && port == 80)),
        ),
        (
            "should not allow access by TCP when a policy specifies only UDP",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]}),
            )],
            Box::new(|_, to, proto, port| to != "x/a" || (proto == Protocol::Udp && port == 81)),
        ),
        (
            "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}),
            )],
            Box::new(|from, to, _, _| to != "x/a" || split(from).0 == "y"),
        ),
        (
            "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
            vec![
                policy_json(
                    "x",
                    "allow-to-ns-y-pod-a",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"], "egress": [{"to": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
                        "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                ),
                policy_json(
                    "y",
                    "allow-from-xa-on-ya",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}},
                        "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                ),
                policy_json(
                    "y",
                    "allow-from-xa-on-yb",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}},
                        "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                ),
            ],
            Box::new(|from, to, _, _| {
                if from == "x/a" {
                    to == "y/a"
                } else {
                    to != "y/a" && to != "y/b"
                }
            }),
        ),
        (
            "should enforce policy to allow ingress traffic for a target",
            vec![
                policy_json("x", "deny-all", json!({"podSelector": {}})),
                policy_json(
                    "x",
                    "allow-all-to-a",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]}),
                ),
            ],
            Box::new(|_, to, _, _| split(to).0 != "x" || to == "x/a"),
        ),
        (
            "should deny ingress from pods on other namespaces",
            vec![policy_json(
                "x",
                "deny-empty-policy",
                json!({"podSelector": {},
                "ingress": [{"from": [{"podSelector": {}}]}]}),
            )],
            Box::new(|from, to, _, _| split(to).0 != "x" || split(from).0 == "x"),
        ),
        (
            "should deny egress from pods based on PodSelector",
            vec![policy_json(
                "x",
                "deny-egress-pod-a",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"]}),
            )],
            Box::new(|from, _, _, _| from != "x/a"),
        ),
        (
            "should deny egress from all pods in a namespace",
            vec![policy_json(
                "x",
                "deny-egress-ns-x",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            Box::new(|from, _, _, _| split(from).0 != "x"),
        ),
        (
            "should properly isolate pods that are selected by a policy allowing SCTP",
            vec![policy_json(
                "x",
                "allow-only-sctp-ingress-on-port-81",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"port": 81, "protocol": "SCTP"}]}]}),
            )],
            Box::new(|_, to, proto, port| to != "x/a" || (proto == Protocol::Sctp && port == 81)),
        ),
        (
            "should work with Ingress, Egress specified together",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                "egress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}),
            )],
            Box::new(|from, to, proto, port| {
                (to != "x/a" || from == "x/b")
                    && (from != "x/a" || (proto == Protocol::Tcp && port == 80))
            }),
        ),
        (
            "port range (endPort)",
            vec![policy_json(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 90, "protocol": "UDP"}]}]}),
            )],
            Box::new(|_, to, proto, port| {
                split(to).0 != "x" || (proto == Protocol::Udp && port == 81)
            }),
        ),
    ];
    for (case, objects, upstream) in cases {
        let mut m = Model::new();
        // One at a time, as a user applies them: each step is routed incrementally.
        let names: Vec<(String, String)> = objects
            .iter()
            .map(|o| {
                let md = &o["metadata"];
                (
                    md["namespace"].as_str().unwrap().to_owned(),
                    md["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for o in objects {
            m.apply(vec![o]);
        }
        assert!(
            m.state.problems().next().is_none(),
            "{case}: {:?}",
            m.state.problems().collect::<Vec<_>>()
        );
        m.check(case, upstream);
        // "should stop enforcing policies after they are deleted".
        for (ns, name) in names {
            m.delete_policy(&ns, &name);
        }
        m.check(&format!("{case}, deleted"), all);
    }
}

#[test]
fn pods_and_namespaces_coming_and_going_keep_the_flows_incremental() {
    use serde_json::json;
    let mut m = Model::new();
    m.apply(vec![policy_json(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"target": "isolated"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}},
                {"podSelector": {"matchLabels": {"pod": "b", "pod2": "updated"}}}]}]}),
    )]);
    m.check("nobody isolated", all);
    // "should deny ingress access to updated pod".
    m.apply(vec![pod_json(
        "x",
        "a",
        "n1",
        json!({"pod": "a", "target": "isolated"}),
    )]);
    m.check("x/a isolated", |_, to, _, _| to != "x/a");
    // "should allow ingress access from updated pod".
    m.apply(vec![pod_json(
        "x",
        "b",
        "n2",
        json!({"pod": "b", "pod2": "updated"}),
    )]);
    m.check("x/b updated", |from, to, _, _| to != "x/a" || from == "x/b");
    // "should allow ingress access from updated namespace".
    m.apply(vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "y", "labels": {"ns": "y", "ns2": "updated"}}})]);
    m.check("y updated", |from, to, _, _| {
        to != "x/a" || from == "x/b" || split(from).0 == "y"
    });
    // A peer pod deleted, then back with another address.
    let cs = m
        .state
        .apply(vec![crate::state::testing::delete_pod("y", "c")]);
    m.route(&cs);
    m.node_flows("n1");
    m.apply(vec![pod_json("y", "c", "n1", json!({"pod": "c"}))]);
    m.attach(&ObjectKey::new("y", "c"), "vyc2", 77);
    m.check("y/c back", |from, to, _, _| {
        to != "x/a" || from == "x/b" || split(from).0 == "y"
    });
    // The namespace object deleted: its labels are gone with it.
    let cs = m.state.apply(vec![Delta::Delete(
        crate::source::Kind::Namespace,
        ObjectKey::new("", "y"),
    )]);
    m.route(&cs);
    m.check("y deleted", |from, to, _, _| to != "x/a" || from == "x/b");
    // The target leaves the selector: back to open.
    m.apply(vec![pod_json("x", "a", "n1", json!({"pod": "a"}))]);
    m.check("x/a released", all);
}

#[test]
fn ip_blocks_with_except_follow_the_model() {
    use serde_json::json;
    let mut m = Model::new();
    let snap = m.state.snapshot();
    let yb = snap.attachment(&ObjectKey::new("y", "b")).unwrap().ip;
    // Egress from x/a to node n2's pods (10.244.2.0/24) except y/b: upstream's "should
    // enforce except clause while egress access to server in CIDR block".
    m.apply(vec![policy_json(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.0/24",
        "except": [format!("{yb}/32")]}}]}]}),
    )]);
    m.check("except", |from, to, _, _| {
        from != "x/a" || (split(to).1 == "b" && to != "y/b")
    });
    // "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed":
    // another policy allowing y/b's address alone restores it (union).
    m.apply(vec![policy_json("x", "p2", json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{yb}/32")}}]}]}))]);
    m.check("except overlapped", |from, to, _, _| {
        from != "x/a" || split(to).1 == "b"
    });
}

#[test]
fn changes_over_time_recompute_only_what_they_touch_and_keep_the_truth_table() {
    use serde_json::json;
    let mut m = Model::new();
    let allow_from_b = |sel: serde_json::Value| {
        policy_json(
            "x",
            "p",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": sel}]}]}),
        )
    };
    m.apply(vec![allow_from_b(json!({"matchLabels": {"pod": "b"}}))]);
    m.check("added", |from, to, _, _| to != "x/a" || from == "x/b");
    // Updated: now from c.
    m.apply(vec![allow_from_b(json!({"matchLabels": {"pod": "c"}}))]);
    m.check("updated", |from, to, _, _| to != "x/a" || from == "x/c");
    // A pod's labels change: x/b becomes pod=c. Only the peer address flows naming x/b
    // change, and they change on the node holding x/a alone.
    let xb = m
        .state
        .snapshot()
        .attachment(&ObjectKey::new("x", "b"))
        .unwrap()
        .ip;
    let cs = m.apply(vec![pod_json("x", "b", "n2", json!({"pod": "c"}))]);
    let policy_changes: Vec<&Change> = cs
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Policy { .. }))
        .collect();
    assert_eq!(
        policy_changes,
        vec![&Change::Policy {
            node: "n1".into(),
            owner: PolicyOwner::Peer(Direction::Ingress, crate::policy::host(xb)),
        }],
        "a pod joining a selector touches the address flows naming it, nothing else"
    );
    m.check("pod relabelled", |from, to, _, _| {
        to != "x/a" || from == "x/b" || from == "x/c"
    });
    // A namespace's labels change.
    m.apply(vec![policy_json(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}),
    )]);
    m.check("ns selector, nobody blue", |_, to, _, _| to != "x/a");
    m.apply(vec![json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "z", "labels": {"ns": "z", "team": "blue"}}})]);
    m.check("z turned blue", |from, to, _, _| {
        to != "x/a" || split(from).0 == "z"
    });
    // A new pod the selector matches, on a node with no selected pod so far.
    let cs = m.apply(vec![pod_json("x", "d", "n3", json!({"pod": "a"}))]);
    m.attach(&ObjectKey::new("x", "d"), "vxd", 99);
    assert!(
        cs.changes.iter().any(|c| matches!(c,
        Change::Policy { node, owner: PolicyOwner::Rule(_) } if node == "n3")),
        "the rule appears on n3 with its first selected pod there"
    );
    let snap = m.state.snapshot();
    let d_ip = snap.attachment(&ObjectKey::new("x", "d")).unwrap().ip;
    let n3 = m.node_flows("n3");
    let za = snap.attachment(&ObjectKey::new("z", "a")).unwrap().ip;
    for (src, allowed) in [
        (za, true),
        (
            snap.attachment(&ObjectKey::new("y", "a")).unwrap().ip,
            false,
        ),
    ] {
        let p = Packet {
            src,
            dst: d_ip,
            proto: 6,
            dport: 80,
            reg0: 2,
        };
        assert_eq!(
            eval(&n3, Table::IngressRule, &p),
            allowed,
            "to x/d from {src}"
        );
    }
    // From the node itself (through the gateway, from its gateway address or InternalIP):
    // always allowed. An external client through the gateway (a NodePort, its source kept)
    // is judged like any peer: denied here.
    let n3_model = snap.node("n3").unwrap();
    for (src, allowed) in [
        (n3_model.gateway_ip(), true),
        (n3_model.internal_ip, true),
        (Ipv4Addr::new(198, 51, 100, 10), false),
    ] {
        let p = Packet {
            src,
            dst: d_ip,
            proto: 6,
            dport: 80,
            reg0: 3,
        };
        assert_eq!(
            eval(&n3, Table::IngressRule, &p),
            allowed,
            "to x/d from {src} through the gateway"
        );
    }
    // Deleted: everything back.
    m.delete_policy("x", "p");
    m.check("deleted", all);
}

#[test]
fn clause_flows_are_shared_and_cookies_name_the_rule() {
    use serde_json::json;
    let mut m = Model::new();
    // Two policies naming the same peers: one flow per peer address, two conjunctions.
    m.apply(vec![
        policy_json(
            "x",
            "p1",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
        ),
        policy_json(
            "x",
            "p2",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                "ports": [{"port": 80}]}]}),
        ),
    ]);
    let snap = m.state.snapshot();
    let ctx = NodeContext {
        node: snap.node("n1").unwrap(),
        state: &snap,
        ofports: &m.ofports,
    };
    let flows = node_flows(&ctx);
    let ya = snap.attachment(&ObjectKey::new("y", "a")).unwrap().ip;
    let peer: Vec<&Flow> = flows
        .iter()
        .filter(|f| {
            f.table == Table::IngressRule
                && f.match_
                    .get(Field::Ipv4Src)
                    .is_some_and(|m| m.value.to_vec() == ya.octets())
        })
        .collect();
    assert_eq!(peer.len(), 1, "one shared match flow for y/a: {peer:?}");
    let Instruction::ApplyActions(actions) = &peer[0].instructions[0] else {
        panic!()
    };
    assert_eq!(actions.len(), 2, "the conjunction actions of both rules");
    let rule = RuleKey {
        policy: ObjectKey::new("x", "p1"),
        direction: Direction::Ingress,
        index: 0,
    };
    let id = snap.conj_id(&rule).unwrap();
    assert!(
        flows
            .iter()
            .any(|f| f.cookie == ids::policy_rule_cookie(id)
                && f.match_.get(Field::ConjId).is_some())
    );
    // No rule flows on n2/n3 that hold no pod p1/p2 select... except x/a is on n1 only.
    for n in ["n2", "n3"] {
        let ctx = NodeContext {
            node: snap.node(n).unwrap(),
            state: &snap,
            ofports: &m.ofports,
        };
        assert!(
            !node_flows(&ctx)
                .iter()
                .any(|f| f.match_.get(Field::ConjId).is_some()
                    || CookieCategory::of(f.cookie) == Some(CookieCategory::PolicyPeer)),
            "{n} holds no selected pod: no rule flows"
        );
    }
    // The conjunction ids are stable: the same policy applied to a fresh state gets them.
    let mut again = Model::new();
    again.apply(vec![policy_json(
        "x",
        "p1",
        json!({"podSelector": {}, "ingress": [{}]}),
    )]);
    assert_eq!(again.state.snapshot().conj_id(&rule), Some(id));
}

#[test]
fn the_bundled_policy_example_is_valid_and_its_flows_do_what_its_header_says() {
    let text = include_str!("../../../../deploy/netpol-cluster.yaml");
    let (parsed, problems) = crate::source::parse_cluster_file(text);
    assert!(problems.is_empty(), "{problems:?}");
    let mut state = NetworkState::new();
    state.apply(crate::source::diff_states(&Default::default(), &parsed));
    assert!(
        state.problems().next().is_none(),
        "{:?}",
        state.problems().collect::<Vec<_>>()
    );
    let keys: Vec<ObjectKey> = parsed.pods.keys().cloned().collect();
    let mut ofports = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        let iface = format!("v{i}");
        state.attach(k, &iface, "c").0.unwrap();
        ofports.insert(iface, 10 + i as u32);
    }
    let snap = state.snapshot();
    assert_eq!(snap.policy_count(), 4);
    let flows: HashMap<String, Vec<Flow>> = snap
        .nodes()
        .map(|n| {
            let ctx = NodeContext {
                node: n,
                state: &snap,
                ofports: &ofports,
            };
            (n.name.to_string(), node_flows(&ctx))
        })
        .collect();
    let mut denied = vec![];
    for from in &keys {
        for to in &keys {
            if from == to {
                continue;
            }
            let p = Packet {
                src: snap.attachment(from).unwrap().ip,
                dst: snap.attachment(to).unwrap().ip,
                proto: 6,
                dport: 7777,
                reg0: 1,
            };
            let through = eval(&flows[&snap.pod(from).unwrap().node], Table::EgressRule, &p)
                && eval(
                    &flows[&snap.pod(to).unwrap().node],
                    Table::IngressRule,
                    &Packet { reg0: 2, ..p },
                );
            assert_eq!(
                through,
                snap.policy_allows(from, to, Some((Protocol::Tcp, 7777))),
                "{from} -> {to}"
            );
            if !through {
                denied.push(format!("{from} -> {to}"));
            }
        }
    }
    for pair in [
        "default/client -> backend/api-1",
        "frontend/web-1 -> backend/db-1",
        "backend/db-1 -> backend/api-1",
    ] {
        assert!(
            denied.iter().any(|d| d == pair),
            "{pair} should be denied: {denied:?}"
        );
    }
    for (from, to) in [
        ("frontend/web-1", "backend/api-2"),
        ("backend/api-1", "backend/db-1"),
        ("default/client", "frontend/web-2"),
    ] {
        assert!(
            !denied.iter().any(|d| *d == format!("{from} -> {to}")),
            "{from} -> {to} allowed"
        );
    }
}

#[test]
fn an_invalid_update_keeps_the_last_good_policy_and_names_the_field() {
    use serde_json::json;
    let mut m = Model::new();
    m.apply(vec![policy_json(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    )]);
    m.check("valid", |_, to, proto, port| {
        split(to).0 != "x" || (proto == Protocol::Tcp && port == 80)
    });
    let cs = m.apply(vec![policy_json(
        "x",
        "p",
        json!({"podSelector": {},
        "ingress": [{"ports": [{"port": 81, "endPort": 80}]}]}),
    )]);
    assert!(
        !cs.changes
            .iter()
            .any(|c| matches!(c, Change::Policy { .. })),
        "nothing recomputed"
    );
    let problems: Vec<String> = m.state.problems().map(|p| p.to_string()).collect();
    assert_eq!(
        problems,
        vec!["NetworkPolicy/x/p: spec.ingress[0].ports[0].endPort: 80 is below port 81"]
    );
    m.check("kept", |_, to, proto, port| {
        split(to).0 != "x" || (proto == Protocol::Tcp && port == 80)
    });
    // Valid again: the problem is gone, the new version applies.
    m.apply(vec![policy_json(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
    )]);
    assert!(m.state.problems().next().is_none());
    m.check("fixed", |_, to, proto, port| {
        split(to).0 != "x" || (proto == Protocol::Tcp && port == 81)
    });
}

/// The audit action of a flow: `controller(max_len=128,meter_id=2)` first in its actions.
fn audit_copy_of(f: &Flow) -> bool {
    f.instructions.iter().any(|i| {
        matches!(i, Instruction::ApplyActions(a) if a.iter().any(|a| matches!(a,
            Action::Controller2(c) if c.meter_id == Some(AUDIT_METER_ID)
                && c.max_len == Some(AUDIT_MAX_LEN))))
    })
}

#[test]
fn an_audited_policy_copies_its_allows_and_default_drops_to_the_controller() {
    use serde_json::json;
    let mut m = Model::new();
    let audited = |name: &str, audit: Option<&str>, spec: serde_json::Value| {
        let mut p = policy_json("x", name, spec);
        if let Some(v) = audit {
            p["metadata"]["annotations"] = json!({crate::policy::AUDIT_ANNOTATION: v});
        }
        p
    };
    // x/a: ingress from y (conjunction), audited; x/b: ingress from anywhere on 80 (a
    // direct allow), audited; x/c: isolated, not audited ("yes" is not "true").
    m.apply(vec![
        audited(
            "a",
            Some("true"),
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
        ),
        audited(
            "b",
            Some("true"),
            json!({"podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"ports": [{"port": 80}]}]}),
        ),
        audited(
            "c",
            Some("yes"),
            json!({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        ),
    ]);
    // Auditing changes no verdict.
    m.check("audited", |from, to, proto, port| match to {
        "x/a" => split(from).0 == "y",
        "x/b" => port == 80 && proto == Protocol::Tcp,
        "x/c" => split(from).0 == "x",
        _ => true,
    });
    let snap = m.state.snapshot();
    let rule = |name: &str| RuleKey {
        policy: ObjectKey::new("x", name),
        direction: Direction::Ingress,
        index: 0,
    };
    let ip = |p: &str| snap.attachment(&ObjectKey::new("x", p)).unwrap().ip;
    for (node, pod, audited) in [("n1", "a", true), ("n2", "b", true), ("n3", "c", false)] {
        let flows = m.node_flows(node);
        let id = snap.conj_id(&rule(pod)).unwrap();
        let drop = flows
            .iter()
            .find(|f| {
                f.table == Table::IngressRule
                    && f.priority == PRIORITY_ISOLATED
                    && f.cookie == ids::policy_target_cookie(Direction::Ingress, ip(pod))
            })
            .unwrap_or_else(|| panic!("{node}: x/{pod}'s default drop"));
        assert_eq!(
            audit_copy_of(drop),
            audited,
            "{node}: x/{pod}'s drop: {drop:?}"
        );
        // The allow: a conj_id flow (a, c) or a direct allow (b) with the rule's cookie.
        let allows: Vec<&Flow> = flows
            .iter()
            .filter(|f| {
                f.table == Table::IngressRule
                    && f.instructions
                        .iter()
                        .any(|i| matches!(i, Instruction::GotoTable(_)))
                    && (f.match_.get(Field::ConjId).is_some() || f.priority == PRIORITY_DIRECT)
            })
            .collect();
        assert!(!allows.is_empty(), "{node}: x/{pod} has allow flows");
        for f in allows {
            assert_eq!(audit_copy_of(f), audited, "{node}: {f:?}");
            if audited {
                assert_eq!(
                    f.cookie,
                    ids::policy_rule_cookie(id),
                    "names the rule: {f:?}"
                );
                assert!(
                    matches!(f.instructions.last(), Some(Instruction::GotoTable(_))),
                    "the packet goes on after its copy: {f:?}"
                );
            }
        }
        // Nothing else of the pipeline goes to the controller through the audit meter.
        assert!(
            flows
                .iter()
                .filter(|f| audit_copy_of(f))
                .all(|f| matches!(f.table, Table::IngressRule | Table::EgressRule)),
        );
    }
    // The annotation taken away: the flows lose their copies (incrementally: node_flows
    // checks the change set named them).
    m.apply(vec![audited(
        "a",
        None,
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )]);
    assert!(!m.node_flows("n1").iter().any(audit_copy_of));
}

#[test]
fn policy_audit_for_all_audits_unannotated_policies() {
    use serde_json::json;
    let mut m = Model::new();
    m.state.set_policy_audit_all(true);
    m.apply(vec![policy_json(
        "x",
        "deny",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}}),
    )]);
    let flows = m.node_flows("n1");
    assert!(
        flows
            .iter()
            .any(|f| f.priority == PRIORITY_ISOLATED && audit_copy_of(f)),
        "{flows:?}"
    );
    assert!(
        m.state
            .snapshot()
            .policy(&ObjectKey::new("x", "deny"))
            .unwrap()
            .audit
    );
}
