//! The command line of the `switchyard` binary, in the library so that tests check the
//! install manifests' flags against it (`Cli::try_parse_from`); main.rs only runs it.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::pipeline::Encap;

/// `switchyard`'s command line.
#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Kubernetes pod networking on Open vSwitch"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the controller: watch Kubernetes objects, program every node's OVS.
    Controller(Box<ControllerArgs>),
    /// Set up this node's host network for Switchyard (what the node DaemonSet runs, in the
    /// host network namespace): the gateway's address, the route to the cluster CIDR, IPv4
    /// forwarding, SNAT of pod traffic leaving the cluster; with --request-certificate, first
    /// the node's TLS certificate (through a CertificateSigningRequest). Idempotent.
    NodeSetup(NodeSetupArgs),
    /// Build a local multi-node cluster on real OVS and show pods reaching each other
    /// (runs `switchyard-demo` from this binary's directory; `switchyard demo --help` lists
    /// its options).
    #[command(disable_help_flag = true)]
    Demo {
        /// Passed to `switchyard-demo` unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        /// The arguments.
        args: Vec<OsString>,
    },
}

/// `switchyard controller`'s flags (docs/operations.md describes each).
#[derive(Args)]
pub struct ControllerArgs {
    /// Read Kubernetes objects from this multi-document YAML file (watched for edits)
    /// instead of the API server.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub cluster_file: Option<PathBuf>,
    /// Kubeconfig for the API server (default: in-cluster config, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// OVSDB target of each node; {node} and {internal_ip} are replaced. ssl:HOST:PORT
    /// needs --switch-tls-* (the node's ovsdb-server certificate must name the node).
    #[arg(long, default_value = "tcp:{internal_ip}:6640")]
    pub ovsdb_template: String,
    /// Where to listen for br-int OpenFlow connections: punix:PATH, ptcp:PORT[:IP], or
    /// pssl:PORT[:IP] (TLS, needs --switch-tls-*). Plaintext: beyond loopback only with
    /// --insecure-listen.
    #[arg(long, default_value = "ptcp:6653:127.0.0.1")]
    pub openflow_listen: String,
    /// What each br-int connects to (this controller as the nodes reach it), e.g.
    /// tcp:10.0.0.5:6653; {node} and {internal_ip} are replaced. Several, separated by
    /// commas (every replica's, the same list on each): br-int connects to all of them,
    /// and only the leader, its OpenFlow master, writes.
    #[arg(long)]
    pub openflow_target: String,
    /// Where the CNI shim reaches the controller: unix:PATH (a node's shims on the
    /// controller's host: the socket is mode 0600 and the peer's uid is checked),
    /// ssl:IP:PORT (mutual TLS with --cni-tls-*: each node's certificate names the node,
    /// which may then attach only its own pods), or tcp:IP:PORT (plaintext: beyond
    /// loopback only with --insecure-listen).
    #[arg(long, default_value = "tcp:127.0.0.1:6654")]
    pub cni_listen: String,
    /// PEM CA certificate that signs every node's CNI client certificate (a DNS
    /// subjectAltName equal to the node name, as the switch certificates). With
    /// --cni-tls-cert and --cni-tls-key; needed by an ssl: --cni-listen.
    #[arg(long, value_name = "FILE")]
    pub cni_tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) the CNI listener presents; the shims check it against
    /// their "tls" CA and the name in their controller address (or "tls.serverName").
    #[arg(long, value_name = "FILE")]
    pub cni_tls_cert: Option<PathBuf>,
    /// PEM private key of --cni-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub cni_tls_key: Option<PathBuf>,
    /// Where the other replica reaches this one's CNI listener (unix:PATH, tcp:IP:PORT or
    /// ssl:IP:PORT), written into the Lease while this replica leads: a standby hands the
    /// shims' connections on to it unopened (TLS still ends at the leader). Default: the
    /// --cni-listen address, its 0.0.0.0 replaced by POD_IP; empty: never forwarded to.
    #[arg(long, value_name = "TARGET")]
    pub cni_advertise: Option<String>,
    /// A uid, besides 0 and the controller's own, allowed on a unix: --cni-listen socket
    /// (the socket file is chowned to it, mode 0600). Any other peer uid is refused.
    #[arg(long, value_name = "UID")]
    pub cni_socket_uid: Option<u32>,
    /// Allow --openflow-listen and --cni-listen on plaintext TCP beyond loopback: any host
    /// that reaches them can connect as a node's br-int or attach and detach pods. Prefer
    /// pssl: with --switch-tls-* for OpenFlow; firewall what stays plaintext to the nodes.
    #[arg(long)]
    pub insecure_listen: bool,
    /// PEM CA certificate that signs every node's switch certificate (ovs-vswitchd's and
    /// ovsdb-server's, `ovs-vsctl set-ssl`; a DNS subjectAltName equal to the node name).
    #[arg(long, value_name = "FILE")]
    pub switch_tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) the controller presents to switches, signed by a CA the
    /// nodes trust.
    #[arg(long, value_name = "FILE")]
    pub switch_tls_cert: Option<PathBuf>,
    /// PEM private key of --switch-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub switch_tls_key: Option<PathBuf>,
    /// Tunnel type: geneve or vxlan.
    #[arg(long, default_value = "geneve")]
    pub encap: Encap,
    /// MTU of the nodes' underlay network.
    #[arg(long, default_value_t = 1500)]
    pub underlay_mtu: u32,
    /// OVS datapath for br-int: netdev (userspace) or system (kernel module). With netdev,
    /// Services' SCTP ports are refused (its conntrack does not track SCTP ports).
    #[arg(long, default_value = "netdev")]
    pub datapath: String,
    /// Seconds a CNI ADD waits for its pod and its flows.
    #[arg(long, default_value_t = 30)]
    pub cni_timeout: u64,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Audit every NetworkPolicy: log each new connection its rules allow or its
    /// isolation denies (without this flag, only policies annotated
    /// switchyard.io/audit: "true"). Lines go to the log target switchyard::audit.
    #[arg(long)]
    pub policy_audit: bool,
    /// Audit packet-ins per second and node (the audit meter's rate); connections
    /// beyond it are enforced but not logged.
    #[arg(long, default_value_t = crate::audit::DEFAULT_RATE)]
    pub policy_audit_rate: u32,
    /// The audit meter's burst, packets.
    #[arg(long, default_value_t = crate::audit::DEFAULT_BURST)]
    pub policy_audit_burst: u32,
    /// Also append every audit line to this file.
    #[arg(long, value_name = "FILE")]
    pub policy_audit_file: Option<PathBuf>,
    /// Where the admin API (gRPC, what yardctl talks to) listens: a unix socket (PATH or
    /// unix:PATH), or tcp:IP:PORT — with mutual TLS (--admin-tls-*), or plaintext on a
    /// loopback address only.
    #[arg(long, default_value = crate::admin::DEFAULT_ADMIN_SOCKET)]
    pub admin_listen: String,
    /// PEM CA certificate that signed the admin API's client certificates (TCP only).
    #[arg(long, value_name = "FILE")]
    pub admin_tls_ca: Option<PathBuf>,
    /// PEM certificate (chain) the admin API presents (TCP only).
    #[arg(long, value_name = "FILE")]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of --admin-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub admin_tls_key: Option<PathBuf>,
    /// Where /metrics (Prometheus), /healthz and /readyz are served over plain HTTP: IP:PORT.
    #[arg(long, default_value = crate::admin::metrics::DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: String,
    /// Allow --metrics-listen on an address other hosts can reach (plain HTTP, no
    /// authentication: put it behind a firewall or a proxy).
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// Leader election on a coordination.k8s.io/v1 Lease (API-server source only; the
    /// cluster-file source always runs alone): true or false.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,
    /// The leader-election Lease's name.
    #[arg(long, default_value = "switchyard-controller")]
    pub lease_name: String,
    /// The Lease's namespace: the controller's own (default: POD_NAMESPACE, else
    /// switchyard).
    #[arg(long, env = "POD_NAMESPACE", default_value = "switchyard")]
    pub lease_namespace: String,
    /// leaseDurationSeconds: a standby takes over at most this long after the leader's
    /// last renewal; the leader renews every third of it and steps down after two thirds
    /// without a renewal.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600), value_name = "SECONDS")]
    pub lease_duration: u64,
    /// Node certificates (API-server source only): hold a CA in the Secret --ca-secret,
    /// publish its certificate in the ConfigMap of the same name, sign the nodes'
    /// CertificateSigningRequests (signer switchyard.io/node; the leader only), and issue
    /// this controller its own certificate for every TLS channel whose --*-tls-* flags are
    /// not given: true (what the install manifests pass) or false. Needs the RBAC of
    /// deploy/kubernetes/rbac.yaml for Secrets, ConfigMaps and CertificateSigningRequests.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub node_certificates: bool,
    /// The CA's Secret (type kubernetes.io/tls, tls.crt and tls.key) and the ConfigMap
    /// publishing its certificate (key ca.crt), in --lease-namespace. Made by the first
    /// replica that finds it missing.
    #[arg(long, default_value = crate::source::DEFAULT_CA_NAME, value_name = "NAME")]
    pub ca_secret: String,
    /// The ServiceAccount (in --lease-namespace) of the node DaemonSet: the only requester
    /// whose CertificateSigningRequests are approved.
    #[arg(long, default_value = "switchyard-node", value_name = "NAME")]
    pub node_service_account: String,
    /// Days a node certificate is valid; nodes renew in the last third.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650), value_name = "DAYS")]
    pub node_certificate_days: u64,
    /// Seconds a certificate request for a node the controller does not know (yet) waits
    /// for the Node to appear before it is denied.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600), value_name = "SECONDS")]
    pub node_certificate_grace: u64,
    /// DNS names of the controller's own certificate (repeatable; default
    /// switchyard-controller.NAMESPACE.svc), besides the IP address in POD_IP. The CNI
    /// conflist's tls.serverName must be one of them.
    #[arg(long = "certificate-name", value_name = "NAME")]
    pub certificate_names: Vec<String>,
    /// Where the controller writes its own certificate, its key and the CA (tls.crt,
    /// tls.key, ca.crt).
    #[arg(long, default_value = "/run/switchyard/tls", value_name = "DIR")]
    pub certificate_dir: PathBuf,
}

/// `switchyard node-setup`'s flags.
#[derive(Args)]
pub struct NodeSetupArgs {
    /// This node's pod CIDR (its Node's `spec.podCIDR`).
    #[arg(long, required_unless_present = "node", conflicts_with = "node")]
    pub pod_cidr: Option<ipnet::Ipv4Net>,
    /// Read the pod CIDR from this Node's `spec.podCIDR` on the API server (a GET of one
    /// Node; what the DaemonSet passes, from the downward API's `spec.nodeName`).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Kubeconfig for --node (default: in-cluster config, then ~/.kube/config).
    #[arg(long, requires = "node")]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster's pod network, holding every node's pod CIDR. Without it (and with
    /// --request-certificate) only the certificate is seen to.
    #[arg(long, required_unless_present = "request_certificate")]
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    /// First make sure --certificates-dir holds a valid certificate for this node
    /// (--node), asking the controller for one through a CertificateSigningRequest (signer
    /// switchyard.io/node) when it does not or when it is in the last third of its life;
    /// with --reapply-every, checked at every round.
    #[arg(long, requires = "node")]
    pub request_certificate: bool,
    /// The node's TLS directory: tls.key (0600), tls.crt, ca.crt — for OVS (`ovs-vsctl
    /// set-ssl`) and the CNI conflist's "tls".
    #[arg(long, default_value = "/etc/switchyard/tls", value_name = "DIR")]
    pub certificates_dir: PathBuf,
    /// The ConfigMap with the controller's CA certificate (key ca.crt).
    #[arg(long, default_value = crate::source::DEFAULT_CA_NAME, value_name = "NAME")]
    pub ca_config_map: String,
    /// The controller's namespace, where that ConfigMap is.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "switchyard",
        value_name = "NAMESPACE"
    )]
    pub ca_namespace: String,
    /// Seconds to wait for the controller to sign the request.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub certificate_timeout: u64,
    /// The cluster's Service network (kube-apiserver's --service-cluster-ip-range), routed
    /// through the gateway too, so the node's own processes reach ClusterIPs.
    #[arg(long)]
    pub service_cidr: Option<ipnet::Ipv4Net>,
    /// MTU of the route to the cluster CIDR: the pods' MTU (underlay MTU − 50 for Geneve or
    /// VXLAN).
    #[arg(long, default_value_t = 1450)]
    pub mtu: u32,
    /// SNAT tool: auto (nft if installed, else iptables), nft or iptables.
    #[arg(long, default_value = "auto")]
    pub snat: crate::node_setup::SnatBackend,
    /// Seconds to wait for the controller to create the gateway port.
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
    /// Keep running and apply the setup again every SECONDS (0: once, then exit): puts
    /// back what a restart of ovs-vswitchd (a new gateway port) or someone else removed.
    /// A failed round is reported and retried at the next.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub reapply_every: u64,
    /// The NodePort range (kube-apiserver's --service-node-port-range), FIRST-LAST: new
    /// connections to this node's addresses on these ports go to the Service pipeline;
    /// `none`: no NodePorts on this node.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: PortRange,
    /// A CIDR the cluster's externalIPs and LoadBalancer ingress IPs come from, routed
    /// through the gateway (repeatable).
    #[arg(long = "external-cidr", value_name = "CIDR")]
    pub external_cidrs: Vec<ipnet::Ipv4Net>,
}

/// `--service-node-port-range`: `None` for `none`.
#[derive(Clone, Copy, Debug)]
pub struct PortRange(pub Option<(u16, u16)>);

fn parse_port_range(s: &str) -> Result<PortRange, String> {
    if s == "none" {
        return Ok(PortRange(None));
    }
    let bad = || format!("{s:?} is not a port range FIRST-LAST (e.g. 30000-32767) or none");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok(PortRange(Some((lo, hi))))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag of `controller` and `node-setup` has a row in docs/operations.md (an
    /// operator looks there first), so a new flag without its documentation fails here.
    #[test]
    fn every_flag_is_documented_in_operations_md() {
        let docs = include_str!("../../docs/operations.md");
        let cli = Cli::command();
        let mut missing = Vec::new();
        for sub in ["controller", "node-setup"] {
            let command = cli.find_subcommand(sub).expect(sub);
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" || long == "version" {
                    continue;
                }
                if !docs.contains(&format!("--{long}")) {
                    missing.push(format!("{sub} --{long}"));
                }
            }
        }
        assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
    }
}
