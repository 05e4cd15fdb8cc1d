//! Node setup: what a node's host network needs so the Kubernetes network model holds on
//! it — `switchyard node-setup`, the command a DaemonSet runs on every node (in the host
//! network namespace, privileged), and the same code the demo runs in each simulated node.
//!
//! Owns, on one node: the gateway port's address and link state, the route for the whole
//! cluster CIDR through the gateway (so the node's own processes reach pods on every node),
//! IPv4 forwarding (pods reach other nodes and the outside through their node), ARP answers
//! only for the interface asked (`arp_ignore=1`: see [`NodeSetup::apply`]), and the SNAT
//! of pod traffic that leaves the cluster CIDR (masquerade to the address of the interface
//! it leaves by: the node's address). Every step reads first and changes only what differs,
//! so running it twice changes nothing; [`NodeSetup::apply`] reports what it changed.
//!
//! Does not own: anything on br-int (the controller creates the gateway port and every flow;
//! see docs/pipeline.md for the gateway flows this setup relies on), nor the node's underlay
//! (its address and default route are the machine's own).
//!
//! The route to the cluster CIDR goes via [`pipeline::REMOTE_PODS_NEXT_HOP`], a link-local
//! address nobody holds: the gateway feature answers ARP for it from the gateway port with
//! the tunnel peer MAC, and L3Forwarding then tunnels by destination pod CIDR as it does for
//! a pod's traffic. One route and one neighbour entry per node, whatever the cluster's size
//! (a per-remote-node route, as Antrea installs, would need a watch on Nodes here).
//!
//! Reverse-path filtering needs no change: every path is symmetric (the node's traffic to a
//! remote pod leaves and returns through the gateway; a pod's traffic to other nodes and the
//! outside leaves and returns through the node's underlay interface, masqueraded), so strict
//! `rp_filter` passes it. The setup only reads it, and reports it in `--dry-run` output.
//!
//! SNAT uses nftables (`nft`, a table `ip switchyard` of its own) when it is installed, else
//! iptables (a chain `SWITCHYARD-POSTROUTING` in the nat table, jumped to from POSTROUTING).
//! The same tool holds the NodePort redirect: new connections to the node's own addresses
//! on the NodePort range are DNATed to [`pipeline::NODE_PORT_VIP`] (routed into br-int like
//! the Service CIDR); static, whatever Services exist (br-int refuses a nodePort no Service
//! has). `--external-cidr` pools are routed through the gateway too.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::pipeline;

/// What went wrong setting up a node. Each message names the step, the command or file and
/// what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum NodeSetupError {
    /// The gateway port does not exist (yet): the controller creates it once it knows the node.
    #[error(
        "the gateway port {port} does not exist on this node (after waiting {waited:?}): the controller creates it on br-int once the Node has a podCIDR and its OVS is reachable; check the controller's log, or pass --wait SECONDS"
    )]
    NoGateway {
        /// The interface name.
        port: String,
        /// How long we waited for it.
        waited: Duration,
    },
    /// A command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr, or why it could not start.
        detail: String,
    },
    /// A command's output could not be understood.
    #[error("cannot read the output of `{command}`: {detail}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// A sysctl could not be read or written.
    #[error("{path}: {source} (node setup must run as root in the host network namespace)")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The flags do not describe a usable node.
    #[error("{0}")]
    Config(String),
    /// Neither nft nor iptables is installed.
    #[error(
        "neither nft nor iptables is installed, so pod traffic leaving the cluster cannot be masqueraded; install nftables (Debian: apt-get install nftables)"
    )]
    NoSnatTool,
}

/// Which tool programs the SNAT rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnatBackend {
    /// `nft` if installed, else `iptables`.
    Auto,
    /// nftables: table `ip switchyard`.
    Nft,
    /// iptables: chain `SWITCHYARD-POSTROUTING` in table nat.
    Iptables,
}

impl std::str::FromStr for SnatBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(SnatBackend::Auto),
            "nft" => Ok(SnatBackend::Nft),
            "iptables" => Ok(SnatBackend::Iptables),
            other => Err(format!(
                "unknown SNAT tool {other:?}: use auto, nft or iptables"
            )),
        }
    }
}

/// One node's host network setup.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// The node's pod CIDR (`spec.podCIDR`); the gateway takes its first host address.
    pub pod_cidr: Ipv4Net,
    /// The cluster's pod network (every node's pod CIDR lies inside it).
    pub cluster_cidr: Ipv4Net,
    /// The cluster's Service network (kube-apiserver's `--service-cluster-ip-range`), routed
    /// like the pod network so the node's own processes reach ClusterIPs through br-int.
    pub service_cidr: Option<Ipv4Net>,
    /// MTU of the route to the cluster CIDR (the pods' MTU: underlay MTU − encapsulation).
    pub mtu: u32,
    /// The gateway port's interface name.
    pub gateway_port: String,
    /// How to program SNAT.
    pub snat: SnatBackend,
    /// How long to wait for the gateway port to appear.
    pub wait: Duration,
    /// The NodePort range (`--service-node-port-range`, default 30000-32767): new
    /// connections to the node's own addresses on these ports (TCP, UDP, SCTP; from outside
    /// and from the node itself) are DNATed to [`pipeline::NODE_PORT_VIP`], port kept, and
    /// routed into br-int through the gateway, where the Service pipeline takes them.
    /// `None`: no NodePorts on this node.
    pub node_port_range: Option<(u16, u16)>,
    /// Where the cluster's externalIPs and LoadBalancer ingress IPs come from (the pools an
    /// operator or a load-balancer controller hands out): routed through the gateway like
    /// the Service CIDR, so traffic arriving at the node for them (and the node's own) goes
    /// into br-int.
    pub external_cidrs: Vec<Ipv4Net>,
}

/// nftables table and iptables chain names: ours alone, so we never touch anyone else's rules.
pub const NFT_TABLE: &str = "switchyard";
/// The iptables chain (nat table) holding the masquerade rule.
pub const IPTABLES_CHAIN: &str = "SWITCHYARD-POSTROUTING";

impl NodeSetup {
    /// A setup for `pod_cidr` inside `cluster_cidr`, with the defaults of `switchyard
    /// node-setup`. Fails unless the pod CIDR lies inside the cluster CIDR.
    pub fn new(pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net) -> Result<NodeSetup, NodeSetupError> {
        if !cluster_cidr.contains(&pod_cidr) {
            return Err(NodeSetupError::Config(format!(
                "the pod CIDR {pod_cidr} is not inside the cluster CIDR {cluster_cidr}"
            )));
        }
        if pod_cidr.prefix_len() > 30 {
            return Err(NodeSetupError::Config(format!(
                "the pod CIDR {pod_cidr} is too small to hold a gateway and pods"
            )));
        }
        Ok(NodeSetup {
            pod_cidr,
            cluster_cidr: cluster_cidr.trunc(),
            service_cidr: None,
            mtu: 1450,
            gateway_port: pipeline::GATEWAY_PORT.to_owned(),
            snat: SnatBackend::Auto,
            wait: Duration::ZERO,
            node_port_range: Some(pipeline::DEFAULT_NODE_PORT_RANGE),
            external_cidrs: Vec::new(),
        })
    }

    /// The gateway's address: the first host of the pod CIDR (what the controller's gateway
    /// flows answer for, and what pods use as their default route).
    pub fn gateway_ip(&self) -> Ipv4Addr {
        crate::model::first_host(self.pod_cidr)
    }

    /// Brings the node's host network to the wanted state. Returns one line per change made
    /// (empty when everything was already in place).
    pub fn apply(&self) -> Result<Vec<String>, NodeSetupError> {
        if let Some(svc) = self.service_cidr
            && (svc.contains(&self.cluster_cidr.network())
                || self.cluster_cidr.contains(&svc.network()))
        {
            return Err(NodeSetupError::Config(format!(
                "the Service CIDR {svc} overlaps the cluster CIDR {}: they must be disjoint",
                self.cluster_cidr
            )));
        }
        if let Some((lo, hi)) = self.node_port_range
            && (lo == 0 || lo > hi)
        {
            return Err(NodeSetupError::Config(format!(
                "the NodePort range {lo}-{hi} is empty or starts at 0: give FIRST-LAST, 1 <= FIRST <= LAST <= 65535"
            )));
        }
        for ext in &self.external_cidrs {
            if ext.contains(&self.cluster_cidr.network())
                || self.cluster_cidr.contains(&ext.network())
            {
                return Err(NodeSetupError::Config(format!(
                    "the external CIDR {ext} overlaps the cluster CIDR {}: they must be disjoint",
                    self.cluster_cidr
                )));
            }
        }
        let mut changes = Vec::new();
        self.wait_for_gateway()?;
        self.gateway_address(&mut changes)?;
        self.cluster_routes(&mut changes)?;
        sysctl_set("/proc/sys/net/ipv4/ip_forward", "1", &mut changes)?;
        // Answer ARP only for addresses of the interface asked (kube-proxy's IPVS mode sets
        // the same). Otherwise the node's stack answers a pod's ARP for its gateway on the
        // pod's host-side veth — which the userspace datapath leaves a live kernel
        // interface — with the veth's MAC, racing br-int's answer; a pod that believes it
        // then sends its traffic for the node and the outside to a MAC br-int does not
        // forward. A stricter value already set (2..8) is kept.
        sysctl_at_least("/proc/sys/net/ipv4/conf/all/arp_ignore", 1, &mut changes)?;
        // One tool holds the rule; the other's copy (from a run with the other tool) goes.
        match self.snat_backend()? {
            SnatBackend::Nft => {
                self.nft_snat(&mut changes)?;
                remove_iptables_snat(&mut changes)?;
            }
            _ => {
                self.iptables_snat(&mut changes)?;
                remove_nft_snat(&mut changes)?;
            }
        }
        Ok(changes)
    }

    fn wait_for_gateway(&self) -> Result<(), NodeSetupError> {
        let started = Instant::now();
        loop {
            let out = output("ip", &["-j", "link", "show", "dev", &self.gateway_port])?;
            if out.status.success() {
                return Ok(());
            }
            if started.elapsed() >= self.wait {
                return Err(NodeSetupError::NoGateway {
                    port: self.gateway_port.clone(),
                    waited: self.wait,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn gateway_address(&self, changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
        let gw = &self.gateway_port;
        let link = json_command("ip", &["-j", "addr", "show", "dev", gw])?;
        let link = link.get(0).cloned().unwrap_or_default();
        let want = (
            self.gateway_ip().to_string(),
            u64::from(self.pod_cidr.prefix_len()),
        );
        let has = link["addr_info"].as_array().into_iter().flatten().any(|a| {
            a["family"] == "inet"
                && a["local"].as_str() == Some(want.0.as_str())
                && a["prefixlen"].as_u64() == Some(want.1)
        });
        if !has {
            let addr = format!("{}/{}", want.0, want.1);
            run("ip", &["addr", "replace", &addr, "dev", gw])?;
            changes.push(format!("address {addr} on {gw}"));
        }
        let up = link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        if !up {
            run("ip", &["link", "set", gw, "up"])?;
            changes.push(format!("{gw} up"));
        }
        Ok(())
    }

    /// The routes to the pod network and (if given) the Service network via the gateway;
    /// routes of ours to anything else (a CIDR that changed) go.
    fn cluster_routes(&self, changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
        let wanted: Vec<Ipv4Net> = std::iter::once(self.cluster_cidr)
            .chain(self.service_cidr.map(|c| c.trunc()))
            .chain(
                self.node_port_range
                    .map(|_| Ipv4Net::from(pipeline::NODE_PORT_VIP)),
            )
            .chain(self.external_cidrs.iter().map(|c| c.trunc()))
            .collect();
        for cidr in &wanted {
            self.route(&cidr.to_string(), changes)?;
        }
        let gw = &self.gateway_port;
        let hop = pipeline::REMOTE_PODS_NEXT_HOP.to_string();
        let all = json_command("ip", &["-j", "route", "show", "dev", gw])?;
        for r in all.as_array().into_iter().flatten() {
            let dst = r["dst"].as_str().unwrap_or_default();
            // `ip -j` prints a host route without its /32.
            let net = dst
                .parse::<Ipv4Net>()
                .ok()
                .or_else(|| dst.parse::<Ipv4Addr>().ok().map(Ipv4Net::from));
            if r["gateway"].as_str() == Some(hop.as_str())
                && !net.is_some_and(|n| wanted.contains(&n))
            {
                run("ip", &["route", "del", dst, "via", &hop, "dev", gw])?;
                changes.push(format!("route {dst} via {hop} dev {gw} removed (stale)"));
            }
        }
        Ok(())
    }

    fn route(&self, cidr: &str, changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
        let gw = &self.gateway_port;
        let hop = pipeline::REMOTE_PODS_NEXT_HOP.to_string();
        let src = self.gateway_ip().to_string();
        let mtu = self.mtu.to_string();
        let routes = json_command("ip", &["-j", "-d", "route", "show", "exact", cidr])?;
        let ours = routes.as_array().is_some_and(|r| {
            r.len() == 1
                && r[0]["gateway"].as_str() == Some(hop.as_str())
                && r[0]["dev"].as_str() == Some(gw.as_str())
                && r[0]["prefsrc"].as_str() == Some(src.as_str())
                && r[0]["metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["mtu"].as_u64() == Some(u64::from(self.mtu)))
                && r[0]["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "onlink"))
        });
        if !ours {
            run(
                "ip",
                &[
                    "route", "replace", cidr, "via", &hop, "dev", gw, "onlink", "src", &src, "mtu",
                    &mtu,
                ],
            )?;
            changes.push(format!(
                "route {cidr} via {hop} dev {gw} onlink src {src} mtu {mtu}"
            ));
        }
        Ok(())
    }

    fn snat_backend(&self) -> Result<SnatBackend, NodeSetupError> {
        let installed = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        match self.snat {
            SnatBackend::Auto if installed("nft") => Ok(SnatBackend::Nft),
            SnatBackend::Auto if installed("iptables") => Ok(SnatBackend::Iptables),
            SnatBackend::Auto => Err(NodeSetupError::NoSnatTool),
            other => Ok(other),
        }
    }

    /// The masquerade rule as `nft list` prints it.
    fn nft_rule(&self) -> String {
        let c = self.cluster_cidr;
        format!("ip saddr {c} ip daddr != {c} masquerade")
    }

    /// The NodePort redirect as `nft list` prints it (in chains prerouting and output).
    fn nft_node_port_rule(&self) -> Option<String> {
        let (lo, hi) = self.node_port_range?;
        let ports = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        Some(format!(
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto {{ tcp, udp, sctp }} th dport {ports} dnat to {}",
            pipeline::NODE_PORT_VIP
        ))
    }

    fn nft_snat(&self, changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
        let listed = output("nft", &["list", "table", "ip", NFT_TABLE])?;
        let text = String::from_utf8_lossy(&listed.stdout);
        let rules: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("masquerade") || l.contains("dnat"))
            .collect();
        let np = self.nft_node_port_rule();
        let mut want = vec![self.nft_rule()];
        want.extend(np.iter().cloned());
        want.extend(np.iter().cloned());
        let hooked = text.contains("type nat hook postrouting priority srcnat")
            && (np.is_none()
                || (text.contains("type nat hook prerouting priority dstnat")
                    && text.contains("type nat hook output priority -100")));
        if listed.status.success() && hooked && rules == want {
            return Ok(());
        }
        // One atomic transaction: create the table if missing, delete it (with whatever
        // stale rules it held), define it anew.
        let mut script = format!(
            "table ip {NFT_TABLE} {{}}\ndelete table ip {NFT_TABLE}\n\
             table ip {NFT_TABLE} {{\n  chain postrouting {{\n    \
             type nat hook postrouting priority srcnat; policy accept;\n    {}\n  }}\n",
            self.nft_rule()
        );
        if let Some(np) = &np {
            script.push_str(&format!(
                "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    {np}\n  }}\n\
                 chain output {{\n    type nat hook output priority -100; policy accept;\n    {np}\n  }}\n"
            ));
        }
        script.push_str("}\n");
        run_stdin("nft", &["-f", "-"], &script)?;
        changes.push(format!(
            "nftables table ip {NFT_TABLE}: {}",
            want.join("; ")
        ));
        Ok(())
    }

    fn iptables_snat(&self, changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
        let c = self.cluster_cidr.to_string();
        let rule = [
            "-s",
            &c,
            "!",
            "-d",
            &c,
            "-m",
            "comment",
            "--comment",
            "switchyard: pods leaving the cluster",
            "-j",
            "MASQUERADE",
        ];
        let listed = output("iptables", &["-w", "-t", "nat", "-S", IPTABLES_CHAIN])?;
        if !listed.status.success() {
            run("iptables", &["-w", "-t", "nat", "-N", IPTABLES_CHAIN])?;
            changes.push(format!("iptables chain nat/{IPTABLES_CHAIN}"));
        }
        let text = String::from_utf8_lossy(&listed.stdout);
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {IPTABLES_CHAIN} ")))
            .collect();
        let want = format!(
            "-A {IPTABLES_CHAIN} -s {c} ! -d {c} -m comment --comment \"switchyard: pods leaving the cluster\" -j MASQUERADE"
        );
        if rules != [want.as_str()] {
            run("iptables", &["-w", "-t", "nat", "-F", IPTABLES_CHAIN])?;
            let mut args = vec!["-w", "-t", "nat", "-A", IPTABLES_CHAIN];
            args.extend_from_slice(&rule);
            run("iptables", &args)?;
            changes.push(format!("iptables {want}"));
        }
        self.iptables_node_ports(changes)?;
        let jump = ["-w", "-t", "nat", "-C", "POSTROUTING", "-j", IPTABLES_CHAIN];
        if !output("iptables", &jump)?.status.success() {
            run(
                "iptables",
                &["-w", "-t", "nat", "-A", "POSTROUTING", "-j", IPTABLES_CHAIN],
            )?;
            changes.push(format!(
                "iptables -t nat -A POSTROUTING -j {IPTABLES_CHAIN}"
            ));
        }
        Ok(())
    }
}

impl NodeSetup {
    /// The iptables NodePort redirect: chains `SWITCHYARD-PREROUTING` and
    /// `SWITCHYARD-OUTPUT` (nat table, jumped to from PREROUTING and OUTPUT), one DNAT rule
    /// per protocol; emptied and unhooked without a NodePort range.
    fn iptables_node_ports(&self, changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
        for (hook, chain) in IPTABLES_NODE_PORT_CHAINS {
            let listed = output("iptables", &["-w", "-t", "nat", "-S", chain])?;
            let jump = ["-w", "-t", "nat", "-C", hook, "-j", chain];
            let Some((lo, hi)) = self.node_port_range else {
                if listed.status.success() {
                    while output("iptables", &["-w", "-t", "nat", "-D", hook, "-j", chain])?
                        .status
                        .success()
                    {}
                    run("iptables", &["-w", "-t", "nat", "-F", chain])?;
                    run("iptables", &["-w", "-t", "nat", "-X", chain])?;
                    changes.push(format!("iptables chain nat/{chain} removed (no NodePorts)"));
                }
                continue;
            };
            if !listed.status.success() {
                run("iptables", &["-w", "-t", "nat", "-N", chain])?;
                changes.push(format!("iptables chain nat/{chain}"));
            }
            let ports = format!("{lo}:{hi}");
            let vip = pipeline::NODE_PORT_VIP.to_string();
            let rule = |proto: &'static str| -> Vec<String> {
                [
                    "-m",
                    "addrtype",
                    "--dst-type",
                    "LOCAL",
                    "!",
                    "-d",
                    "127.0.0.0/8",
                    "-p",
                    proto,
                    "-m",
                    proto,
                    "--dport",
                    &ports,
                    "-m",
                    "comment",
                    "--comment",
                    "switchyard: NodePorts",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &vip,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            };
            let protos = ["tcp", "udp", "sctp"];
            let text = String::from_utf8_lossy(&listed.stdout);
            let count = text
                .lines()
                .filter(|l| l.starts_with(&format!("-A {chain} ")))
                .count();
            let mut all_there = listed.status.success() && count == protos.len();
            for proto in protos {
                if !all_there {
                    break;
                }
                let mut args: Vec<String> = ["-w", "-t", "nat", "-C", chain]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                args.extend(rule(proto));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                all_there = output("iptables", &args)?.status.success();
            }
            if !all_there {
                run("iptables", &["-w", "-t", "nat", "-F", chain])?;
                for proto in protos {
                    let mut args: Vec<String> = ["-w", "-t", "nat", "-A", chain]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    args.extend(rule(proto));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    run("iptables", &args)?;
                }
                changes.push(format!(
                    "iptables nat/{chain}: {lo}-{hi} (tcp, udp, sctp) to local addresses DNAT to {vip}"
                ));
            }
            if !output("iptables", &jump)?.status.success() {
                run("iptables", &["-w", "-t", "nat", "-A", hook, "-j", chain])?;
                changes.push(format!("iptables -t nat -A {hook} -j {chain}"));
            }
        }
        Ok(())
    }
}

/// The iptables chains of the NodePort redirect and the built-in chains they hang off.
pub const IPTABLES_NODE_PORT_CHAINS: [(&str, &str); 2] = [
    ("PREROUTING", "SWITCHYARD-PREROUTING"),
    ("OUTPUT", "SWITCHYARD-OUTPUT"),
];

/// Removes our iptables chain and its jump, if iptables is installed and they exist.
fn remove_iptables_snat(changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
    if installed_iptables() {
        for (hook, chain) in IPTABLES_NODE_PORT_CHAINS {
            if output("iptables", &["-w", "-t", "nat", "-S", chain])?
                .status
                .success()
            {
                while output("iptables", &["-w", "-t", "nat", "-D", hook, "-j", chain])?
                    .status
                    .success()
                {}
                run("iptables", &["-w", "-t", "nat", "-F", chain])?;
                run("iptables", &["-w", "-t", "nat", "-X", chain])?;
                changes.push(format!(
                    "iptables chain nat/{chain} removed (nft holds the rule)"
                ));
            }
        }
    }
    let Ok(listed) = output("iptables", &["-w", "-t", "nat", "-S", IPTABLES_CHAIN]) else {
        return Ok(());
    };
    if !listed.status.success() {
        return Ok(());
    }
    let jump = ["-w", "-t", "nat", "-D", "POSTROUTING", "-j", IPTABLES_CHAIN];
    while output("iptables", &jump)?.status.success() {}
    run("iptables", &["-w", "-t", "nat", "-F", IPTABLES_CHAIN])?;
    run("iptables", &["-w", "-t", "nat", "-X", IPTABLES_CHAIN])?;
    changes.push(format!(
        "iptables chain nat/{IPTABLES_CHAIN} removed (nft holds the rule)"
    ));
    Ok(())
}

fn installed_iptables() -> bool {
    Command::new("iptables")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes our nftables table, if nft is installed and it exists.
fn remove_nft_snat(changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
    let Ok(listed) = output("nft", &["list", "table", "ip", NFT_TABLE]) else {
        return Ok(());
    };
    if !listed.status.success() {
        return Ok(());
    }
    run("nft", &["delete", "table", "ip", NFT_TABLE])?;
    changes.push(format!(
        "nftables table ip {NFT_TABLE} removed (iptables holds the rule)"
    ));
    Ok(())
}

fn sysctl_set(path: &str, value: &str, changes: &mut Vec<String>) -> Result<(), NodeSetupError> {
    let err = |source| NodeSetupError::Sysctl {
        path: path.to_owned(),
        source,
    };
    let now = std::fs::read_to_string(path).map_err(err)?;
    if now.trim() != value {
        std::fs::write(path, value).map_err(err)?;
        changes.push(format!("{path} = {value}"));
    }
    Ok(())
}

fn sysctl_at_least(
    path: &str,
    value: u32,
    changes: &mut Vec<String>,
) -> Result<(), NodeSetupError> {
    let err = |source| NodeSetupError::Sysctl {
        path: path.to_owned(),
        source,
    };
    let now = std::fs::read_to_string(path).map_err(err)?;
    if now.trim().parse::<u32>().is_ok_and(|n| n >= value) {
        return Ok(());
    }
    std::fs::write(path, value.to_string()).map_err(err)?;
    changes.push(format!("{path} = {value}"));
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Result<std::process::Output, NodeSetupError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NodeSetupError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!("cannot start it: {e} (is it installed?)"),
        })
}

fn check(
    program: &str,
    args: &[&str],
    out: std::process::Output,
) -> Result<String, NodeSetupError> {
    if !out.status.success() {
        return Err(NodeSetupError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(program: &str, args: &[&str]) -> Result<String, NodeSetupError> {
    check(program, args, output(program, args)?)
}

fn run_stdin(program: &str, args: &[&str], input: &str) -> Result<String, NodeSetupError> {
    use std::io::Write;
    let command = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NodeSetupError::Command {
            command: command(),
            detail: format!("cannot start it: {e} (is it installed?)"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| NodeSetupError::Command {
                command: command(),
                detail: format!("write its input: {e}"),
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NodeSetupError::Command {
            command: command(),
            detail: e.to_string(),
        })?;
    check(program, args, out)
}

fn json_command(program: &str, args: &[&str]) -> Result<serde_json::Value, NodeSetupError> {
    let text = run(program, args)?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(&text).map_err(|e| NodeSetupError::Output {
        command: format!("{program} {}", args.join(" ")),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_cidr_must_lie_in_the_cluster_cidr() {
        let e = NodeSetup::new(
            "10.245.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("not inside the cluster CIDR 10.244.0.0/16"),
            "{e}"
        );
        let s = NodeSetup::new(
            "10.244.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(s.gateway_ip(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(
            s.nft_rule(),
            "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"
        );
    }

    #[test]
    fn a_service_cidr_overlapping_the_cluster_cidr_is_refused_before_anything_changes() {
        let s = NodeSetup {
            service_cidr: Some("10.244.128.0/20".parse().unwrap()),
            ..NodeSetup::new(
                "10.244.1.0/24".parse().unwrap(),
                "10.244.0.0/16".parse().unwrap(),
            )
            .unwrap()
        };
        let e = s.apply().unwrap_err();
        assert!(
            e.to_string().contains(
                "the Service CIDR 10.244.128.0/20 overlaps the cluster CIDR 10.244.0.0/16"
            ),
            "{e}"
        );
    }
}
