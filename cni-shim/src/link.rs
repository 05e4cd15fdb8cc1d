//! Netlink work on the pod's veth pair: create, configure, inspect, delete.
//!
//! Owns: every netlink conversation of the shim (through `rtnetlink`) and the rule for how it
//! reaches another network namespace. Does not own: what the interfaces should look like (the
//! controller's [`PodNetwork`]) or the tx-checksum ioctl ([`crate::offload`], called from here
//! because it too must run inside the right namespace).
//!
//! # Namespaces
//!
//! `setns(2)` changes the namespace of the calling *thread* only, and a netlink socket works
//! in the namespace it was created in. So each operation runs on a fresh, dedicated OS thread
//! that enters the target namespace (or stays in the node's), builds a current-thread tokio
//! runtime and its own netlink socket there, and exits when done. Nothing here ever runs on a
//! multi-thread runtime, whose workers would carry the namespace to unrelated tasks.

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use switchyard_mac::Mac;

use crate::Error;
use crate::api::{PodNetwork, Route};

/// `ENODEV`/`ENOENT` as netlink reports them: the interface or route is not there.
const GONE: [i32; 2] = [libc::ENODEV, libc::ENOENT];
/// The kernel's main routing table (`RT_TABLE_MAIN`).
const RT_TABLE_MAIN: u32 = 254;

/// An opened network namespace file (CNI_NETNS): holding it open keeps the namespace alive
/// while we work in it, even if the runtime unmounts it meanwhile.
#[derive(Debug)]
pub struct NetnsFile {
    path: String,
    file: File,
}

impl NetnsFile {
    /// Opens the namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
    pub fn open(path: &str) -> Result<NetnsFile, Error> {
        let file = File::open(path).map_err(|source| Error::Netns {
            path: path.to_owned(),
            what: "open",
            source,
        })?;
        Ok(NetnsFile {
            path: path.to_owned(),
            file,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// What CHECK compares against the controller's record.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkState {
    /// The interface's MAC, lowercase `aa:bb:..`.
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is administratively up.
    pub up: bool,
    /// Its addresses with prefix length.
    pub addresses: Vec<IpNet>,
    /// Routes of the main table that leave through it.
    pub routes: Vec<Route>,
    /// Whether tx checksum offload is on.
    pub tx_checksum: bool,
}

/// Runs `job` with a netlink handle inside `ns` (or the caller's namespace for `None`) on a
/// dedicated thread, and waits for it.
fn in_netns<T, F, Fut>(ns: Option<&NetnsFile>, job: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>>,
{
    let target = match ns {
        Some(ns) => Some((
            ns.file.try_clone().map_err(|source| Error::Netns {
                path: ns.path.clone(),
                what: "duplicate the descriptor of",
                source,
            })?,
            ns.path.clone(),
        )),
        None => None,
    };
    let thread = std::thread::Builder::new()
        .name("switchyard-netns".into())
        .spawn(move || {
            if let Some((file, path)) = &target {
                setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                    path: path.clone(),
                    what: "enter",
                    source: e.into(),
                })?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| netlink_err("start a runtime for", "netlink", e))?;
            runtime.block_on(async move {
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| netlink_err("open a netlink socket for", "rtnetlink", e))?;
                let connection = tokio::spawn(connection);
                let result = job(handle).await;
                connection.abort();
                result
            })
        })
        .map_err(|e| netlink_err("spawn a thread for", "netlink", e))?;
    thread.join().unwrap_or_else(|_| {
        Err(Error::Netlink {
            what: "finish",
            iface: "netlink work".into(),
            reason: "the netlink thread panicked".into(),
        })
    })
}

fn netlink_err(what: &'static str, iface: &str, e: impl std::fmt::Display) -> Error {
    Error::Netlink {
        what,
        iface: iface.to_owned(),
        reason: e.to_string(),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The index and MAC of `name`, or `None` when there is no such interface.
async fn find_link(handle: &Handle, name: &str) -> Result<Option<(u32, String)>, Error> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => {
            let mac = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(bytes) => Mac::from_slice(bytes).map(|m| m.to_string()),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Some((msg.header.index, mac)))
        }
        Ok(None) => Ok(None),
        Err(e) if errno(&e).is_some_and(|n| GONE.contains(&n)) => Ok(None),
        Err(e) => Err(netlink_err("look up", name, e)),
    }
}

async fn require_link(handle: &Handle, name: &str) -> Result<(u32, String), Error> {
    find_link(handle, name)
        .await?
        .ok_or_else(|| Error::Netlink {
            what: "find",
            iface: name.to_owned(),
            reason: "no such interface".into(),
        })
}

/// MACs of a freshly created veth pair.
#[derive(Debug, Clone, PartialEq)]
pub struct VethMacs {
    /// The host end's interface index in the node namespace, when it was just created
    /// there (`None` for a veth an earlier ADD made).
    pub host_index: Option<u32>,
    /// MAC of the host end (node namespace).
    pub host: String,
    /// MAC of the pod end, as the kernel chose it (the controller's MAC replaces it later).
    pub pod: String,
}

/// Creates a veth pair whose host end `host` stays in the caller's (node) namespace and whose
/// other end is created directly inside `pod_ns` under the name `ifname` — so no temporary
/// name ever appears in the node namespace and a clash with an existing `ifname` in the pod
/// fails cleanly, before anything exists.
pub fn create_veth(host: &str, pod_ns: &NetnsFile, ifname: &str) -> Result<VethMacs, Error> {
    let pod_fd: RawFd = pod_ns.file.as_raw_fd();
    let (host_name, pod_name) = (host.to_owned(), ifname.to_owned());
    let (host_index, host_mac) = in_netns(None, move |handle| async move {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(pod_name.clone())
            .setns_by_fd(pod_fd)
            .build();
        let msg = LinkVeth::new(&host_name, &pod_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| Error::Netlink {
                what: "create veth",
                iface: format!("{host_name} (peer {pod_name} in the pod namespace)"),
                reason: e.to_string(),
            })?;
        let link = require_link(&handle, &host_name).await?;
        disable_ipv6(&host_name);
        Ok(link)
    })?;
    let pod_name = ifname.to_owned();
    let pod_mac = in_netns(Some(pod_ns), move |handle| async move {
        Ok(require_link(&handle, &pod_name).await?.1)
    })?;
    Ok(VethMacs {
        host_index: Some(host_index),
        host: host_mac,
        pod: pod_mac,
    })
}

/// Turns IPv6 off on `iface` in the calling thread's (node) namespace before it comes up, so
/// the kernel gives it no link-local address and no routes. The host end of a veth is an OVS
/// port, not an IP interface; and ovs-vswitchd re-reads the node's routing table and address
/// list at route and address changes, so per-port IPv6 routes make each new pod cost more the
/// more pods the node has. Only that cost depends on it, so a failure is reported on stderr
/// (the runtime's log) and the ADD goes on; a kernel without IPv6 has nothing to turn off.
fn disable_ipv6(iface: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("switchyard-cni: cannot turn IPv6 off on {iface} ({path}): {e}")
        }
        _ => {}
    }
}

/// The MAC of interface `name` in `ns` (the node's for `None`); `None` if it does not exist.
pub fn link_mac(ns: Option<&NetnsFile>, name: &str) -> Result<Option<String>, Error> {
    let name = name.to_owned();
    in_netns(ns, move |handle| async move {
        Ok(find_link(&handle, &name).await?.map(|(_, mac)| mac))
    })
}

/// Deletes interface `name` in `ns` (the node's for `None`). `Ok(false)` if it was not there.
pub fn delete_link(ns: Option<&NetnsFile>, name: &str) -> Result<bool, Error> {
    let name = name.to_owned();
    in_netns(ns, move |handle| async move {
        let Some((index, _)) = find_link(&handle, &name).await? else {
            return Ok(false);
        };
        match handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e).is_some_and(|n| GONE.contains(&n)) => Ok(false),
            Err(e) => Err(netlink_err("delete", &name, e)),
        }
    })
}

/// Gives the pod end `ifname` in `pod_ns` the controller's MAC, MTU and address, brings it
/// up, installs the routes, and turns tx checksum offload off if the datapath needs it.
/// Returns the time the offload ioctl took (zero without it), for [`crate::timing`].
pub fn configure_pod_end(
    pod_ns: &NetnsFile,
    ifname: &str,
    net: &PodNetwork,
) -> Result<Duration, Error> {
    let mac: Mac = net.mac.parse().map_err(|_| Error::BadPodNetwork {
        field: "mac",
        value: net.mac.clone(),
    })?;
    let (ifname, net) = (ifname.to_owned(), net.clone());
    in_netns(Some(pod_ns), move |handle| async move {
        let (index, _) = require_link(&handle, &ifname).await?;
        let fail = |what| {
            let ifname = ifname.clone();
            move |e: rtnetlink::Error| netlink_err(what, &ifname, e)
        };
        // The MAC goes on while the link is still down: not every driver accepts a live change.
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac.octets().to_vec())
                    .mtu(net.mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(fail("set MAC/MTU on"))?;
        handle
            .address()
            .add(index, net.address.addr(), net.address.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(fail("add address to"))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(fail("bring up"))?;
        // A gateway outside the pod's subnet is only reachable once a link-scope host route
        // says it is on this link (the kernel rejects the default route otherwise, ENETUNREACH).
        let mut on_link = vec![net.address.trunc()];
        for route in &net.routes {
            if let Some(gw) = route.gw
                && !on_link.iter().any(|n| n.contains(&gw))
            {
                let host = IpNet::from(gw);
                add_route(
                    &handle,
                    index,
                    &Route {
                        dst: host,
                        gw: None,
                    },
                )
                .await
                .map_err(fail("add gateway host route on"))?;
                on_link.push(host);
            }
            add_route(&handle, index, route)
                .await
                .map_err(fail("add route on"))?;
        }
        if !net.userspace_datapath {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        crate::offload::disable_tx_checksum(&ifname)?;
        Ok(started.elapsed())
    })
}

async fn add_route(handle: &Handle, index: u32, route: &Route) -> Result<(), rtnetlink::Error> {
    let dst = route.dst.trunc();
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .map_err(|e| invalid_route(route, e))?
        .output_interface(index);
    builder = match route.gw {
        Some(gw) => builder.gateway(gw).map_err(|e| invalid_route(route, e))?,
        None => builder.scope(RouteScope::Link),
    };
    // Replace: the kernel already made the connected route for the pod's subnet, and a
    // retried ADD must not fail on the routes of the first attempt.
    handle
        .route()
        .add(builder.build())
        .replace()
        .execute()
        .await
}

fn invalid_route(route: &Route, e: impl std::fmt::Display) -> rtnetlink::Error {
    rtnetlink::Error::InvalidNla(format!("route {}: {e}", route.dst))
}

/// Sets the MTU of the host end `host` (node namespace), brings it up, and turns tx checksum
/// offload off if the datapath needs it. Returns the time the offload ioctl took (zero
/// without it), for [`crate::timing`].
pub fn configure_host_end(
    host: &str,
    mtu: u32,
    disable_tx_checksum: bool,
) -> Result<Duration, Error> {
    let host = host.to_owned();
    in_netns(None, move |handle| async move {
        let (index, _) = require_link(&handle, &host).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(|e| netlink_err("set MTU and bring up", &host, e))?;
        if !disable_tx_checksum {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        crate::offload::disable_tx_checksum(&host)?;
        Ok(started.elapsed())
    })
}

/// Reads MAC, MTU, addresses and main-table routes of `ifname` in `ns`; `None` if absent.
pub fn inspect(ns: Option<&NetnsFile>, ifname: &str) -> Result<Option<LinkState>, Error> {
    let ifname = ifname.to_owned();
    in_netns(ns, move |handle| async move {
        let mut links = handle.link().get().match_name(ifname.clone()).execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e).is_some_and(|n| GONE.contains(&n)) => return Ok(None),
            Err(e) => return Err(netlink_err("look up", &ifname, e)),
        };
        let index = msg.header.index;
        let mut state = LinkState {
            mac: String::new(),
            mtu: 0,
            up: msg
                .header
                .flags
                .contains(rtnetlink::packet_route::link::LinkFlags::Up),
            addresses: Vec::new(),
            routes: Vec::new(),
            tx_checksum: crate::offload::tx_checksum_enabled(&ifname)?,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Address(bytes) => {
                    state.mac = Mac::from_slice(bytes)
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                }
                LinkAttribute::Mtu(mtu) => state.mtu = *mtu,
                _ => {}
            }
        }
        let mut addrs = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(addr) = addrs
            .try_next()
            .await
            .map_err(|e| netlink_err("list addresses of", &ifname, e))?
        {
            let prefix = addr.header.prefix_len;
            // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL, when present, is ours.
            let ip = addr
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                })
                .or_else(|| {
                    addr.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
            if let Some(net) = ip.and_then(|ip| IpNet::new(ip, prefix).ok()) {
                state.addresses.push(net);
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessageBuilder::<IpAddr>::new().build();
            query.header.address_family = family;
            let mut routes = handle.route().get(query).execute();
            while let Some(route) = routes
                .try_next()
                .await
                .map_err(|e| netlink_err("list routes of", &ifname, e))?
            {
                if let Some(route) = main_route_via(&route, index) {
                    state.routes.push(route);
                }
            }
        }
        Ok(Some(state))
    })
}

/// The route in `msg` if it is in the main table and leaves through interface `index`.
fn main_route_via(msg: &RouteMessage, index: u32) -> Option<Route> {
    let mut table = u32::from(msg.header.table);
    let (mut dst, mut gw, mut oif) = (None, None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gw = route_ip(a),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN || oif != Some(index) {
        return None;
    }
    let len = msg.header.destination_prefix_length;
    let dst = match (dst, msg.header.address_family) {
        (Some(ip), _) => IpNet::new(ip, len).ok()?,
        (None, AddressFamily::Inet) => IpNet::new(IpAddr::from([0u8; 4]), 0).ok()?,
        (None, AddressFamily::Inet6) => IpNet::new(IpAddr::from([0u16; 8]), 0).ok()?,
        (None, _) => return None,
    };
    Some(Route { dst, gw })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Names of the veth interfaces in the caller's (node) namespace.
pub fn list_veths() -> Result<Vec<String>, Error> {
    in_netns(None, |handle| async move {
        let mut links = handle.link().get().execute();
        let mut names = Vec::new();
        while let Some(msg) = links
            .try_next()
            .await
            .map_err(|e| netlink_err("list", "interfaces", e))?
        {
            let is_veth = msg.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos)
                    if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
            });
            let name = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let (true, Some(name)) = (is_veth, name) {
                names.push(name);
            }
        }
        Ok(names)
    })
}
