//! A node's OVSDB configuration: br-int, its controller, table names, the tunnel port, the
//! gateway port and the pod ports.
//!
//! Owns: the transaction that turns what a node's ovsdb-server holds (a replica snapshot)
//! into what Switchyard wants, touching only what differs; and reading back what a previous
//! controller left there (pod attachments, ofports). Pure functions; the node agent sends
//! the transaction. Ports that Switchyard did not create (no `switchyard.io/*` external_ids)
//! are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use ovsdb::vswitch::{self, Bridge, Controller, Interface, Port};
use ovsdb::{Condition, Datum, Mutation, NamedUuid, Row, Snapshot, Transaction, Uuid};

use crate::pipeline::{
    BRIDGE, Encap, GATEWAY_OFPORT, GATEWAY_PORT, TUNNEL_OFPORT, TUNNEL_PORT, Table,
};
use crate::source::ObjectKey;
use switchyard_mac::Mac;

/// external_ids key naming the pod a port belongs to (`namespace/name`).
pub const EXT_POD: &str = "switchyard.io/pod";
/// external_ids key with the pod's address.
pub const EXT_IP: &str = "switchyard.io/ip";
/// external_ids key with the pod's MAC.
pub const EXT_MAC: &str = "switchyard.io/mac";
/// external_ids key with the CNI container id.
pub const EXT_CONTAINER: &str = "switchyard.io/container-id";
/// external_ids key marking rows Switchyard owns (value: their role).
pub const EXT_OWNER: &str = "switchyard.io/owner";

/// A pod's port on br-int, as the controller wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPort {
    /// The host end of the pod's veth (the port and interface name).
    pub iface: String,
    /// The pod.
    pub pod: ObjectKey,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: Mac,
    /// The CNI container id.
    pub container_id: String,
}

impl PodPort {
    fn external_ids(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (EXT_POD.to_owned(), self.pod.to_string()),
            (EXT_IP.to_owned(), self.ip.to_string()),
            (EXT_MAC.to_owned(), self.mac.to_string()),
            (EXT_CONTAINER.to_owned(), self.container_id.clone()),
            (EXT_OWNER.to_owned(), "pod".to_owned()),
        ])
    }

    /// Reads a pod port back from an interface's external_ids; `None` if it is not one of
    /// ours or a value is unreadable.
    pub fn from_interface(iface: &Interface) -> Option<PodPort> {
        let ids = &iface.external_ids;
        let (namespace, name) = ids.get(EXT_POD)?.split_once('/')?;
        Some(PodPort {
            iface: iface.name.clone(),
            pod: ObjectKey::new(namespace, name),
            ip: ids.get(EXT_IP)?.parse().ok()?,
            mac: ids.get(EXT_MAC)?.parse().ok()?,
            container_id: ids.get(EXT_CONTAINER)?.clone(),
        })
    }
}

/// What a node's OVSDB must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    /// `netdev` (userspace) or `system` (kernel module).
    pub datapath_type: String,
    /// br-int's datapath id, 16 hex digits: how the controller recognises the node's
    /// OpenFlow connection.
    pub datapath_id: String,
    /// Where br-int connects for OpenFlow (`tcp:IP:PORT` or `unix:PATH`): one target per
    /// controller replica (vswitchd connects to each; OpenFlow roles say which one writes).
    pub controller_targets: Vec<String>,
    /// Tunnel type.
    pub encap: Encap,
    /// MAC of the gateway port.
    pub gateway_mac: Mac,
    /// The node's pod CIDR: a pod port's `ofport_request` derives from the pod's place in
    /// it ([`requested_ofport`]).
    pub pod_cidr: Ipv4Net,
    /// The pods attached on this node.
    pub pod_ports: Vec<PodPort>,
}

/// The first OpenFlow port number pod ports are requested at (1 and 2 are the tunnel's and
/// the gateway's; a few below this stay free for later infrastructure ports).
pub const POD_OFPORT_BASE: u32 = 16;

/// Largest port number OpenFlow lets a physical port have (OFPP_MAX = 0xffffff00 in OF1.3,
/// but OVS keeps port numbers below 0xff00, ovs-vswitchd.conf.db(5) `ofport_request`).
const MAX_OFPORT: u32 = 0xfeff;

/// The OpenFlow port a pod's interface is created with (`ofport_request`): its address's
/// offset in the node's pod CIDR plus [`POD_OFPORT_BASE`]. A function of the address, so
/// it is the same after a controller restart, unique among the node's pods (IPAM never
/// gives an address twice), and known before vswitchd has added the port: the pod's flows
/// go in while vswitchd is still adding it. `None` when the CIDR is too large for the
/// offset to fit (then vswitchd picks the number and the flows wait for it).
pub fn requested_ofport(pod_cidr: Ipv4Net, ip: Ipv4Addr) -> Option<u32> {
    let offset = u32::from(ip).checked_sub(u32::from(pod_cidr.network()))?;
    let port = offset.checked_add(POD_OFPORT_BASE)?;
    (port <= MAX_OFPORT).then_some(port)
}

/// What one interface on the node looks like to vswitchd, as the replica shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceView {
    /// `ofport`: `None` while vswitchd has not processed the interface, `Some(-1)` when it
    /// failed to add it.
    pub ofport: Option<i64>,
    /// `ofport_request`.
    pub ofport_request: Option<i64>,
    /// `error`: why vswitchd could not add it.
    pub error: Option<String>,
    /// `mac_in_use`: empty once the device under a port is gone (a deleted veth), though
    /// vswitchd keeps the port and its number.
    pub has_device: bool,
}

/// True when going from `snapshot` to `pods` takes pod ports away and adds none (a DEL,
/// a GC): the agent then sends the transaction before the flows' bundle.
pub fn only_removes_pod_ports(snapshot: &Snapshot, pods: &[std::sync::Arc<PodPort>]) -> bool {
    let have: Vec<String> = pod_ports(snapshot).into_iter().map(|p| p.iface).collect();
    only_removes(&have, pods)
}

/// [`only_removes_pod_ports`] on the pod interfaces OVSDB has (`have`).
fn only_removes(have: &[String], pods: &[std::sync::Arc<PodPort>]) -> bool {
    let want: std::collections::BTreeSet<&str> = pods.iter().map(|p| p.iface.as_str()).collect();
    want.iter().all(|i| have.iter().any(|h| h == i))
        && have.iter().any(|h| !want.contains(h.as_str()))
}

/// Every interface the node's OVSDB holds, by name.
pub fn interfaces(snapshot: &Snapshot) -> BTreeMap<String, InterfaceView> {
    vswitch::rows::<Interface>(snapshot)
        .into_iter()
        .map(|i| {
            (
                i.name,
                InterfaceView {
                    ofport: i.ofport,
                    ofport_request: i.ofport_request,
                    error: i.error,
                    has_device: i.mac_in_use.is_some_and(|m| !m.is_empty()),
                },
            )
        })
        .collect()
}

/// The OpenFlow port of each attached pod's interface that flows can use now: the one
/// vswitchd reports, or, while vswitchd has not reported one yet, the requested one, unless
/// another interface holds or requests that number (a port someone else added): then the
/// flows wait for vswitchd's choice. An interface vswitchd failed to add (-1) has none.
pub fn effective_ofports(
    interfaces: &BTreeMap<String, InterfaceView>,
    pod_cidr: Ipv4Net,
    pods: &[std::sync::Arc<PodPort>],
) -> std::collections::HashMap<String, u32> {
    let mut out = std::collections::HashMap::new();
    // Every number some interface holds or asked for, with who.
    let mut taken: std::collections::HashMap<i64, &str> = std::collections::HashMap::new();
    for (name, view) in interfaces {
        for p in [view.ofport, view.ofport_request].into_iter().flatten() {
            if p > 0 {
                taken.entry(p).or_insert(name.as_str());
            }
        }
    }
    for pod in pods {
        let view = interfaces.get(&pod.iface);
        match view.and_then(|v| v.ofport) {
            Some(p) => {
                if let Ok(p) = u32::try_from(p)
                    && p > 0
                {
                    out.insert(pod.iface.clone(), p);
                }
            }
            None => {
                let Some(want) = requested_ofport(pod_cidr, pod.ip) else {
                    continue;
                };
                let holder = taken.get(&i64::from(want)).copied();
                if holder.is_none_or(|h| h == pod.iface) {
                    out.insert(pod.iface.clone(), want);
                }
            }
        }
    }
    out
}

/// The datapath id Switchyard gives a node's br-int: `5359` ("SY") then 48 bits derived from
/// the node name.
pub fn datapath_id(node: &str) -> u64 {
    let h = u64::from(fnv1a(node));
    let h2 = u64::from(fnv1a(&format!("{node}/br-int")) & 0xffff);
    (0x5359u64 << 48) | (h2 << 32) | h
}

/// The transaction that brings `snapshot` to `desired`; empty when nothing differs.
pub fn plan(snapshot: &Snapshot, desired: &SwitchConfig) -> Transaction {
    let mut txn = Transaction::new();
    let bridges: Vec<Bridge> = vswitch::rows(snapshot);
    let Some(bridge) = bridges.into_iter().find(|b| b.name == BRIDGE) else {
        create_bridge(snapshot, desired, &mut txn);
        return txn;
    };
    let bridge_uuid = bridge.uuid.unwrap_or_else(Uuid::zero);
    let on_bridge = || vec![Condition::uuid(&bridge_uuid)];

    // Bridge columns.
    let mut other_config = bridge.other_config.clone();
    other_config.insert("datapath-id".into(), desired.datapath_id.clone());
    other_config.insert("disable-in-band".into(), "true".into());
    let mut external_ids = bridge.external_ids.clone();
    external_ids.insert(EXT_OWNER.into(), "bridge".into());
    if bridge.fail_mode.as_deref() != Some("secure")
        || bridge.protocols != ["OpenFlow13"]
        || bridge.datapath_type != desired.datapath_type
        || other_config != bridge.other_config
        || external_ids != bridge.external_ids
    {
        txn.update(
            "Bridge",
            on_bridge(),
            Row::new()
                .with("fail_mode", "secure")
                .with("protocols", Datum::set(["OpenFlow13"]))
                .with("datapath_type", desired.datapath_type.as_str())
                .with("other_config", other_config)
                .with("external_ids", external_ids),
        );
    }

    let controllers: Vec<Controller> = vswitch::rows(snapshot);
    let have: BTreeSet<&str> = controllers
        .iter()
        .filter(|c| {
            c.uuid
                .as_ref()
                .is_some_and(|u| bridge.controller.contains(u))
        })
        .map(|c| c.target.as_str())
        .collect();
    let want: BTreeSet<&str> = desired
        .controller_targets
        .iter()
        .map(String::as_str)
        .collect();
    if have != want || bridge.controller.len() != want.len() {
        let rows: Vec<NamedUuid> = want
            .iter()
            .map(|target| insert_controller(target, &mut txn))
            .collect();
        txn.update(
            "Bridge",
            on_bridge(),
            Row::new().with("controller", Datum::set(rows.iter())),
        );
    }

    let wanted_tables: Vec<i64> = Table::ALL.iter().map(|t| i64::from(t.id())).collect();
    let have_tables: Vec<i64> = bridge.flow_tables.keys().copied().collect();
    if have_tables != wanted_tables {
        let map = insert_flow_tables(&mut txn);
        txn.update("Bridge", on_bridge(), Row::new().with("flow_tables", map));
    }

    // Ports, by name, with their (first) interface.
    let ports: Vec<Port> = vswitch::rows(snapshot);
    let interfaces: BTreeMap<Uuid, Interface> = vswitch::rows::<Interface>(snapshot)
        .into_iter()
        .filter_map(|i| Some((i.uuid?, i)))
        .collect();
    let mut on_br: BTreeMap<String, (Uuid, Option<&Interface>)> = BTreeMap::new();
    for p in ports
        .iter()
        .filter(|p| p.uuid.as_ref().is_some_and(|u| bridge.ports.contains(u)))
    {
        let iface = p.interfaces.first().and_then(|u| interfaces.get(u));
        on_br.insert(p.name.clone(), (p.uuid.unwrap_or_else(Uuid::zero), iface));
    }
    let mut new_ports: Vec<NamedUuid> = Vec::new();
    let mut gone_ports: Vec<Uuid> = Vec::new();

    let tunnel = tunnel_interface(desired);
    match on_br.get(TUNNEL_PORT) {
        None => new_ports.push(insert_port(&mut txn, TUNNEL_PORT, tunnel, "tunnel")),
        Some((_, Some(i))) => {
            let want_type = desired.encap.interface_type();
            if i.kind != want_type || i.options != tunnel_options() {
                txn.update(
                    "Interface",
                    vec![Condition::uuid(i.uuid.as_ref().unwrap_or(&Uuid::zero()))],
                    Row::new()
                        .with("type", want_type)
                        .with("options", tunnel_options()),
                );
            }
        }
        Some((_, None)) => {}
    }

    let gateway_mac = desired.gateway_mac.to_string();
    match on_br.get(GATEWAY_PORT) {
        None => new_ports.push(insert_port(
            &mut txn,
            GATEWAY_PORT,
            gateway_interface(desired),
            "gateway",
        )),
        Some((_, Some(i))) => {
            let mac = snapshot
                .row("Interface", i.uuid.as_ref().unwrap_or(&Uuid::zero()))
                .and_then(|r| r.get("mac"))
                .and_then(Datum::as_str)
                .map(str::to_owned);
            if mac.as_deref() != Some(gateway_mac.as_str()) {
                txn.update(
                    "Interface",
                    vec![Condition::uuid(i.uuid.as_ref().unwrap_or(&Uuid::zero()))],
                    Row::new().with("mac", Datum::set([gateway_mac.as_str()])),
                );
            }
        }
        Some((_, None)) => {}
    }

    let wanted_pods: BTreeMap<&str, &PodPort> = desired
        .pod_ports
        .iter()
        .map(|p| (p.iface.as_str(), p))
        .collect();
    for (name, (port_uuid, iface)) in &on_br {
        let Some(iface) = iface else { continue };
        if !iface.external_ids.contains_key(EXT_POD) {
            continue;
        }
        match wanted_pods.get(name.as_str()) {
            None => gone_ports.push(*port_uuid),
            Some(want) => {
                let mut ids = iface.external_ids.clone();
                ids.extend(want.external_ids());
                if ids != iface.external_ids {
                    txn.update(
                        "Interface",
                        vec![Condition::uuid(
                            iface.uuid.as_ref().unwrap_or(&Uuid::zero()),
                        )],
                        Row::new().with("external_ids", ids),
                    );
                }
            }
        }
    }
    for (name, pod) in &wanted_pods {
        if !on_br.contains_key(*name) {
            new_ports.push(insert_port(
                &mut txn,
                name,
                pod_interface(pod, desired.pod_cidr),
                "pod",
            ));
        }
    }
    if !new_ports.is_empty() {
        txn.mutate(
            "Bridge",
            on_bridge(),
            vec![Mutation::insert("ports", Datum::set(new_ports.iter()))],
        );
    }
    if !gone_ports.is_empty() {
        // Removing the reference is enough: Port and Interface are not root tables, so
        // ovsdb-server garbage-collects them.
        txn.mutate(
            "Bridge",
            on_bridge(),
            vec![Mutation::delete("ports", Datum::set(gone_ports.iter()))],
        );
    }
    txn
}

fn tunnel_options() -> BTreeMap<String, String> {
    // One flow-based tunnel port for all peers: the destination comes from tun_dst in the
    // flow, so adding a node never touches another node's OVSDB.
    BTreeMap::from([
        ("remote_ip".to_owned(), "flow".to_owned()),
        ("key".to_owned(), "flow".to_owned()),
    ])
}

fn tunnel_interface(desired: &SwitchConfig) -> Row {
    Row::new()
        .with("name", TUNNEL_PORT)
        .with("type", desired.encap.interface_type())
        .with("options", tunnel_options())
        .with("ofport_request", i64::from(TUNNEL_OFPORT))
        .with("external_ids", owner("tunnel"))
}

fn gateway_interface(desired: &SwitchConfig) -> Row {
    Row::new()
        .with("name", GATEWAY_PORT)
        .with("type", "internal")
        .with(
            "mac",
            Datum::set([desired.gateway_mac.to_string().as_str()]),
        )
        .with("ofport_request", i64::from(GATEWAY_OFPORT))
        .with("external_ids", owner("gateway"))
}

fn pod_interface(pod: &PodPort, pod_cidr: Ipv4Net) -> Row {
    let row = Row::new()
        .with("name", pod.iface.as_str())
        .with("external_ids", pod.external_ids());
    // Only new interfaces get a request: changing it on an existing one makes vswitchd
    // renumber a working port.
    match requested_ofport(pod_cidr, pod.ip) {
        Some(port) => row.with("ofport_request", i64::from(port)),
        None => row,
    }
}

fn owner(role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(EXT_OWNER.to_owned(), role.to_owned())])
}

fn insert_port(txn: &mut Transaction, name: &str, interface: Row, role: &str) -> NamedUuid {
    let iface = txn.insert("Interface", interface);
    txn.insert(
        "Port",
        Row::new()
            .with("name", name)
            .with("interfaces", Datum::set([&iface]))
            .with("external_ids", owner(role)),
    )
}

fn insert_controller(target: &str, txn: &mut Transaction) -> NamedUuid {
    txn.insert(
        "Controller",
        Row::new()
            .with("target", target)
            .with("external_ids", owner("controller")),
    )
}

fn insert_flow_tables(txn: &mut Transaction) -> Datum {
    let mut entries: Vec<(i64, NamedUuid)> = Vec::new();
    for t in Table::ALL {
        let row = txn.insert("Flow_Table", Row::new().with("name", t.name()));
        entries.push((i64::from(t.id()), row));
    }
    Datum::map(entries.iter().map(|(k, v)| (*k, v)))
}

fn create_bridge(snapshot: &Snapshot, desired: &SwitchConfig, txn: &mut Transaction) {
    let local = insert_port(
        txn,
        BRIDGE,
        Row::new().with("name", BRIDGE).with("type", "internal"),
        "bridge",
    );
    let mut ports = vec![local];
    ports.push(insert_port(
        txn,
        TUNNEL_PORT,
        tunnel_interface(desired),
        "tunnel",
    ));
    ports.push(insert_port(
        txn,
        GATEWAY_PORT,
        gateway_interface(desired),
        "gateway",
    ));
    for pod in &desired.pod_ports {
        ports.push(insert_port(
            txn,
            &pod.iface,
            pod_interface(pod, desired.pod_cidr),
            "pod",
        ));
    }
    let controllers: Vec<NamedUuid> = desired
        .controller_targets
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|target| insert_controller(target, txn))
        .collect();
    let flow_tables = insert_flow_tables(txn);
    let bridge = txn.insert(
        "Bridge",
        Row::new()
            .with("name", BRIDGE)
            .with("fail_mode", "secure")
            .with("protocols", Datum::set(["OpenFlow13"]))
            .with("datapath_type", desired.datapath_type.as_str())
            .with(
                "other_config",
                BTreeMap::from([
                    ("datapath-id".to_owned(), desired.datapath_id.clone()),
                    ("disable-in-band".to_owned(), "true".to_owned()),
                ]),
            )
            .with("external_ids", owner("bridge"))
            .with("controller", Datum::set(controllers.iter()))
            .with("flow_tables", flow_tables)
            .with("ports", Datum::set(ports.iter())),
    );
    let root: Vec<Uuid> = snapshot.table("Open_vSwitch").keys().cloned().collect();
    let conditions = match root.first() {
        Some(u) => vec![Condition::uuid(u)],
        None => vec![],
    };
    txn.mutate(
        "Open_vSwitch",
        conditions,
        vec![Mutation::insert("bridges", Datum::set([&bridge]))],
    );
}

/// The ofport of every interface on the node that has one (vswitchd assigns them
/// asynchronously; -1 means the interface failed or is gone).
pub fn ofports(snapshot: &Snapshot) -> BTreeMap<String, u32> {
    vswitch::rows::<Interface>(snapshot)
        .into_iter()
        .filter_map(|i| {
            let p = u32::try_from(i.ofport?).ok().filter(|p| *p > 0)?;
            Some((i.name, p))
        })
        .collect()
}

/// Interfaces that vswitchd reported an error for, by name, for status and logs.
pub fn interface_errors(snapshot: &Snapshot) -> BTreeMap<String, String> {
    vswitch::rows::<Interface>(snapshot)
        .into_iter()
        .filter_map(|i| Some((i.name, i.error?)))
        .collect()
}

/// Controller targets br-int is not connected to, with vswitchd's reason
/// (`status:last_error`, e.g. `Connection refused`).
pub fn controller_errors(snapshot: &Snapshot) -> BTreeMap<String, String> {
    vswitch::rows::<vswitch::Controller>(snapshot)
        .into_iter()
        .filter(|c| !c.is_connected)
        .filter_map(|c| Some((c.target, c.status.get("last_error")?.clone())))
        .collect()
}

/// FNV-1a, 32 bits: stable across versions and platforms, unlike std's hasher.
fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The `Open_vSwitch` key that keeps a (re)started vswitchd from forwarding with a half-built
/// pipeline: set by whoever starts vswitchd, cleared by the controller once it has installed
/// the switch's groups and flows (ovs-vswitchd.conf.db(5), `other_config:flow-restore-wait`).
pub const FLOW_RESTORE_WAIT: &str = "flow-restore-wait";

/// True when the node's vswitchd waits for its flows to be restored.
pub fn flow_restore_wait(snapshot: &Snapshot) -> bool {
    vswitch::rows::<vswitch::OpenVswitch>(snapshot)
        .iter()
        .any(|r| r.other_config.get(FLOW_RESTORE_WAIT).map(String::as_str) == Some("true"))
}

/// The transaction that clears `flow-restore-wait`, if it is set.
pub fn clear_flow_restore_wait(snapshot: &Snapshot) -> Option<Transaction> {
    let root = vswitch::rows::<vswitch::OpenVswitch>(snapshot)
        .into_iter()
        .find(|r| r.other_config.contains_key(FLOW_RESTORE_WAIT))?;
    let mut txn = Transaction::new();
    txn.mutate(
        "Open_vSwitch",
        vec![Condition::uuid(&root.uuid?)],
        vec![vswitch::external_ids::remove(
            "other_config",
            FLOW_RESTORE_WAIT,
        )],
    );
    Some(txn)
}

/// The pod ports a previous controller left on the node.
pub fn pod_ports(snapshot: &Snapshot) -> Vec<PodPort> {
    vswitch::rows::<Interface>(snapshot)
        .iter()
        .filter_map(PodPort::from_interface)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datapath_ids_are_stable_and_distinct() {
        assert_eq!(datapath_id("node-1"), datapath_id("node-1"));
        assert_ne!(datapath_id("node-1"), datapath_id("node-2"));
        assert_eq!(datapath_id("node-1") >> 48, 0x5359);
    }

    #[test]
    fn an_empty_database_gets_the_whole_bridge_in_one_transaction() {
        let desired = SwitchConfig {
            datapath_type: "netdev".into(),
            datapath_id: format!("{:016x}", datapath_id("n1")),
            controller_targets: vec!["unix:/tmp/x".into()],
            encap: Encap::Geneve,
            gateway_mac: Mac::new([0x0a, 0x58, 10, 244, 1, 1]),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            pod_ports: vec![],
        };
        let txn = plan(&Snapshot::default(), &desired);
        let ops = txn.to_params("Open_vSwitch").to_string();
        for needle in [
            "\"br-int\"",
            "\"sy-tun0\"",
            "\"geneve\"",
            "\"remote_ip\",\"flow\"",
            "\"sy-gw0\"",
            "\"0a:58:0a:f4:01:01\"",
            "\"secure\"",
            "\"unix:/tmp/x\"",
            "\"L3Forwarding\"",
        ] {
            assert!(ops.contains(needle), "{needle} missing from {ops}");
        }
    }

    fn port(iface: &str, ip: [u8; 4]) -> std::sync::Arc<PodPort> {
        let ip = Ipv4Addr::from(ip);
        std::sync::Arc::new(PodPort {
            iface: iface.into(),
            pod: ObjectKey::new("default", iface),
            ip,
            mac: crate::ipam::mac_for(ip),
            container_id: "c".into(),
        })
    }

    #[test]
    fn only_a_transaction_that_takes_ports_away_and_adds_none_goes_first() {
        let have = ["sya".to_owned(), "syb".to_owned()];
        let (a, b, c) = (
            port("sya", [10, 244, 1, 2]),
            port("syb", [10, 244, 1, 3]),
            port("syc", [10, 244, 1, 4]),
        );
        assert!(only_removes(&have, std::slice::from_ref(&a)), "a DEL");
        assert!(only_removes(&have, &[]), "the last pod's DEL, a GC");
        assert!(
            !only_removes(&have, &[a.clone(), b.clone()]),
            "nothing goes"
        );
        assert!(
            !only_removes(&have, &[a.clone(), c.clone()]),
            "one goes, one comes"
        );
        assert!(!only_removes(&have, &[a, b, c]), "an ADD");
    }

    #[test]
    fn requested_ofports_follow_the_address_and_fit() {
        let cidr: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        assert_eq!(
            requested_ofport(cidr, Ipv4Addr::new(10, 244, 1, 2)),
            Some(18)
        );
        assert_eq!(
            requested_ofport(cidr, Ipv4Addr::new(10, 244, 1, 254)),
            Some(270)
        );
        assert_eq!(requested_ofport(cidr, Ipv4Addr::new(10, 244, 0, 2)), None);
        let huge: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert_eq!(requested_ofport(huge, Ipv4Addr::new(10, 9, 0, 1)), None);
    }

    #[test]
    fn effective_ofports_prefer_vswitchd_and_avoid_numbers_others_hold() {
        let cidr: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let view = |ofport, ofport_request| InterfaceView {
            ofport,
            ofport_request,
            error: None,
            has_device: true,
        };
        let pods = [
            port("sya", [10, 244, 1, 2]), // requested 18, not in OVSDB yet
            port("syb", [10, 244, 1, 3]), // requested 19, vswitchd gave 40
            port("syc", [10, 244, 1, 4]), // requested 20, but "eth9" holds 20
            port("syd", [10, 244, 1, 5]), // vswitchd failed to add it
        ];
        let interfaces = BTreeMap::from([
            ("syb".to_owned(), view(Some(40), Some(19))),
            ("syc".to_owned(), view(None, Some(20))),
            ("eth9".to_owned(), view(Some(20), None)),
            ("syd".to_owned(), view(Some(-1), Some(21))),
        ]);
        let got = effective_ofports(&interfaces, cidr, &pods);
        assert_eq!(got.get("sya"), Some(&18));
        assert_eq!(got.get("syb"), Some(&40));
        assert_eq!(got.get("syc"), None);
        assert_eq!(got.get("syd"), None);
    }
}
