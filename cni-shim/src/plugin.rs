//! The CNI plugin protocol (CNI SPEC.md 1.0.0/1.1.0, "Section 2: Execution Protocol"): reading
//! `CNI_*` variables and the network configuration, dispatching ADD/DEL/CHECK/VERSION/STATUS/
//! GC, and printing the result or error JSON.
//!
//! Owns: validation of the runtime's input, the order of operations of each command and their
//! undo on failure, the result format. Does not own: netlink ([`crate::link`]) or the wire
//! protocol to the controller ([`crate::api`]).
//!
//! [`execute`] is the whole plugin as a function of its environment and stdin, so it can be
//! driven by `main` and by tests alike.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{self, PodNetwork, PodRef, Reply, Request};
use crate::link::{self, NetnsFile};
use crate::timing::{Phases, TIMING_ENV};
use crate::{Error, SUPPORTED_VERSIONS};

/// The version stamped on output when the configuration's own version is unknown or bad.
const DEFAULT_VERSION: &str = "1.1.0";
/// Default for `timeoutSeconds`.
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// Cap on the best-effort DEL sent while undoing a failed ADD, so a dead controller cannot
/// hold the ADD's error for long (the runtime's own DEL follows and is retried).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest configuration accepted on stdin.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What the plugin prints and how it exits.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Process exit status: 0 on success, 1 with an error JSON on stdout otherwise.
    pub exit_code: i32,
    /// Everything to print on stdout (may be empty).
    pub stdout: String,
}

/// The CNI operation requested by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container (idempotent).
    Del,
    /// Verify an attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Report readiness (1.1).
    Status,
    /// Remove stale attachments (1.1).
    Gc,
}

impl Command {
    fn parse(value: &str) -> Option<Command> {
        Some(match value {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The oldest spec version that defines the command.
    fn since(self) -> &'static str {
        match self {
            Command::Add | Command::Del | Command::Version => "0.3.0",
            Command::Check => "0.4.0",
            Command::Status | Command::Gc => "1.1.0",
        }
    }
}

/// The plugin's entry in a configuration list, as the runtime passes it on stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// Spec version the configuration (and our output) follows.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (our binary's name).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Controller address: `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT` (with `tls`).
    pub controller: String,
    /// Seconds an ADD may take in total, controller included.
    #[serde(rename = "timeoutSeconds", default)]
    pub timeout_seconds: Option<u64>,
    /// The result of the previous ADD (CHECK, DEL).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    /// GC: attachments still in use.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// GC: the name an earlier 1.1 draft used; libcni sends both.
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
    /// The Kubernetes node this host is (GC and STATUS tell the controller); the host name
    /// when absent.
    #[serde(rename = "nodeName", default)]
    pub node_name: Option<String>,
    /// The node's TLS identity for an `ssl:` controller.
    #[serde(default)]
    pub tls: Option<TlsConf>,
}

/// `"tls"`: PEM files of the node's CNI identity (docs/operations.md).
#[derive(Debug, Clone, Deserialize)]
pub struct TlsConf {
    /// The CA that signed the controller's certificate (and the nodes').
    pub ca: std::path::PathBuf,
    /// This node's certificate: a DNS subjectAltName equal to the node name.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
    /// The name the controller's certificate must carry; default: the host of the
    /// `ssl:HOST:PORT` controller address.
    #[serde(rename = "serverName", default)]
    pub server_name: Option<String>,
}

impl NetConf {
    /// One request to the controller, over TLS when `tls` is configured.
    fn call(&self, request: &Request, timeout: Duration) -> Result<Reply, Error> {
        // The files are read only for an ssl: controller: a conflist may carry them for
        // a later switch to TLS.
        let tls = match &self.tls {
            Some(t) if self.controller.starts_with("ssl:") => Some(api::ClientTls::new(
                &switchyard_tls::TlsFiles {
                    ca: t.ca.clone(),
                    certificate: t.cert.clone(),
                    private_key: t.key.clone(),
                },
                t.server_name.clone(),
            )?),
            _ => None,
        };
        api::call_with(&self.controller, tls.as_ref(), request, timeout)
    }
}

/// One `(container id, ifname)` pair of a GC request.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// The container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name inside the container.
    pub ifname: String,
}

/// Runs the plugin: `var` reads an environment variable, `stdin` is read only by commands
/// that take a configuration.
pub fn execute(var: &dyn Fn(&str) -> Option<String>, stdin: &mut dyn Read) -> Outcome {
    let mut version = DEFAULT_VERSION.to_owned();
    let mut phases = Phases::new(var(TIMING_ENV).is_some_and(|v| !v.is_empty() && v != "0"));
    match run(var, stdin, &mut version, &mut phases) {
        Ok(stdout) => Outcome {
            exit_code: 0,
            stdout,
        },
        Err(e) => Outcome {
            exit_code: 1,
            stdout: error_json(&version, &e),
        },
    }
}

/// The CNI error object for `e` (CNI SPEC.md, "Error").
pub fn error_json(version: &str, e: &Error) -> String {
    let (msg, details) = match e {
        Error::ControllerRefused { msg, .. } => (msg.clone(), e.to_string()),
        Error::NotAvailable(_) => ("plugin not available".to_owned(), e.to_string()),
        _ => (short_message(e).to_owned(), e.to_string()),
    };
    let mut out = json!({
        "cniVersion": version,
        "code": e.cni_code(),
        "msg": msg,
        "details": details,
    })
    .to_string();
    out.push('\n');
    out
}

fn short_message(e: &Error) -> &'static str {
    match e {
        Error::IncompatibleVersion(_) => "incompatible CNI version",
        Error::MissingEnv(_) => "missing environment variable",
        Error::InvalidEnv { .. } => "invalid environment variable",
        Error::ReadStdin(_) => "cannot read stdin",
        Error::Decode(_) => "malformed network configuration",
        Error::InvalidConfig { .. } | Error::ControllerAddress { .. } => {
            "invalid network configuration"
        }
        Error::Controller { .. } => "controller unreachable",
        Error::ControllerTimeout { .. } => "controller timed out",
        Error::ControllerClosed { .. }
        | Error::ControllerReply { .. }
        | Error::ControllerNoNetwork { .. }
        | Error::BadPodNetwork { .. }
        | Error::Encode(_) => "controller protocol error",
        Error::ControllerRefused { .. } => "controller refused",
        Error::Netns { .. } => "network namespace unusable",
        Error::Netlink { .. } => "interface setup failed",
        Error::Offload { .. } => "checksum offload setup failed",
        Error::CheckMismatch { .. } => "interface differs from the controller's record",
        Error::NotAvailable(_) => "plugin not available",
    }
}

/// A runtime's request, read and validated: nothing on the node or the controller has been
/// touched yet. [`parse_request`] makes it; [`execute`] carries it out.
#[derive(Debug)]
pub struct Parsed {
    command: Command,
    /// None for VERSION, which reads no configuration.
    conf: Option<NetConf>,
    timeout: Duration,
    /// ADD, DEL and CHECK: the per-container variables.
    invocation: Option<Invocation>,
}

impl Parsed {
    /// The command requested.
    pub fn command(&self) -> Command {
        self.command
    }
}

/// Reads and validates `CNI_*` variables and the configuration on stdin (CNI SPEC.md, section
/// 2), as [`execute`] does before it acts. `version` becomes the configuration's version once
/// it is known to be supported (errors are printed in it).
pub fn parse_request(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    version: &mut String,
) -> Result<Parsed, Error> {
    let command_text = var("CNI_COMMAND").ok_or(Error::MissingEnv("CNI_COMMAND"))?;
    let command = Command::parse(&command_text).ok_or_else(|| Error::InvalidEnv {
        var: "CNI_COMMAND",
        value: command_text.clone(),
        reason: "expected ADD, DEL, CHECK, VERSION, STATUS or GC".into(),
    })?;
    if command == Command::Version {
        // VERSION takes no configuration worth reading (CNI SPEC.md, VERSION).
        return Ok(Parsed {
            command,
            conf: None,
            timeout: Duration::ZERO,
            invocation: None,
        });
    }
    let conf = read_config(stdin)?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(Error::IncompatibleVersion(conf.cni_version));
    }
    version.clone_from(&conf.cni_version);
    if version_lt(&conf.cni_version, command.since()) {
        return Err(Error::IncompatibleVersion(format!(
            "{} ({command_text} needs {} or later)",
            conf.cni_version,
            command.since()
        )));
    }
    if conf.controller.is_empty() {
        return Err(Error::InvalidConfig {
            field: "controller",
            reason: "must not be empty; expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT".into(),
        });
    }
    let timeout = Duration::from_secs(conf.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS));
    if timeout.is_zero() {
        return Err(Error::InvalidConfig {
            field: "timeoutSeconds",
            reason: "must be at least 1".into(),
        });
    }
    let invocation = match command {
        Command::Add | Command::Check => Some(Invocation::read(var, true)?),
        Command::Del => Some(Invocation::read(var, false)?),
        Command::Status | Command::Gc | Command::Version => None,
    };
    Ok(Parsed {
        command,
        conf: Some(conf),
        timeout,
        invocation,
    })
}

fn run(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    version: &mut String,
    phases: &mut Phases,
) -> Result<String, Error> {
    let parsed = parse_request(var, stdin, version)?;
    phases.mark("parse");
    let (Some(conf), timeout) = (parsed.conf, parsed.timeout) else {
        return Ok(version_json());
    };
    let inv = parsed.invocation.as_ref();
    match (parsed.command, inv) {
        (Command::Add, Some(inv)) => {
            let out = add(inv, &conf, timeout, phases);
            phases.report("ADD", &inv.who(), out.is_ok());
            out
        }
        (Command::Del, Some(inv)) => {
            let out = del(inv, &conf, timeout, phases);
            phases.report("DEL", &inv.who(), out.is_ok());
            out.map(|()| String::new())
        }
        (Command::Check, Some(inv)) => check(inv, &conf, timeout).map(|()| String::new()),
        (Command::Status, _) => status(&conf, timeout).map(|()| String::new()),
        (Command::Gc, _) => gc(&conf, timeout).map(|()| String::new()),
        (Command::Version, _) | (Command::Add | Command::Del | Command::Check, None) => {
            Ok(version_json())
        }
    }
}

fn version_json() -> String {
    let mut out = json!({
        "cniVersion": DEFAULT_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string();
    out.push('\n');
    out
}

fn read_config(stdin: &mut dyn Read) -> Result<NetConf, Error> {
    let mut bytes = Vec::new();
    stdin
        .take(MAX_CONFIG_BYTES)
        .read_to_end(&mut bytes)
        .map_err(Error::ReadStdin)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Decode(if bytes.iter().all(u8::is_ascii_whitespace) {
            "stdin is empty; the runtime must pass the plugin's configuration as JSON".into()
        } else {
            e.to_string()
        })
    })?;
    if !value.is_object() {
        return Err(Error::Decode(format!(
            "expected a JSON object, got {}",
            truncate(&value.to_string(), 80)
        )));
    }
    for field in ["cniVersion", "name", "type", "controller"] {
        match value.get(field) {
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(Error::InvalidConfig {
                    field: static_field(field),
                    reason: format!("must be a string, got {other}"),
                });
            }
            None => {
                return Err(Error::InvalidConfig {
                    field: static_field(field),
                    reason: "is required".into(),
                });
            }
        }
    }
    if let Some(timeout) = value.get("timeoutSeconds")
        && !(timeout.is_u64() || timeout.is_null())
    {
        return Err(Error::InvalidConfig {
            field: "timeoutSeconds",
            reason: format!("must be a whole number of seconds, got {timeout}"),
        });
    }
    serde_json::from_value(value).map_err(|e| Error::InvalidConfig {
        field: "(configuration)",
        reason: e.to_string(),
    })
}

fn static_field(field: &str) -> &'static str {
    match field {
        "cniVersion" => "cniVersion",
        "name" => "name",
        "type" => "type",
        _ => "controller",
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// `a < b` for dotted numeric versions.
fn version_lt(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

/// The per-container variables of ADD, DEL and CHECK.
#[derive(Debug)]
struct Invocation {
    container_id: String,
    netns: Option<String>,
    ifname: String,
    namespace: String,
    pod: String,
}

impl Invocation {
    /// Reads and validates the variables; `full` (ADD, CHECK) also requires CNI_NETNS and
    /// the pod's identity in CNI_ARGS, which DEL may lack (CNI SPEC.md, DEL).
    fn read(var: &dyn Fn(&str) -> Option<String>, full: bool) -> Result<Invocation, Error> {
        let container_id = var("CNI_CONTAINERID")
            .filter(|v| !v.is_empty())
            .ok_or(Error::MissingEnv("CNI_CONTAINERID"))?;
        validate_container_id(&container_id)?;
        let ifname = var("CNI_IFNAME")
            .filter(|v| !v.is_empty())
            .ok_or(Error::MissingEnv("CNI_IFNAME"))?;
        validate_ifname(&ifname)?;
        let netns = var("CNI_NETNS").filter(|v| !v.is_empty());
        if full && netns.is_none() {
            return Err(Error::MissingEnv("CNI_NETNS"));
        }
        let args = parse_cni_args(&var("CNI_ARGS").unwrap_or_default())?;
        let get = |key: &'static str| -> Result<String, Error> {
            match args.get(key) {
                Some(v) if !v.is_empty() => Ok(v.clone()),
                _ if full => Err(Error::InvalidEnv {
                    var: "CNI_ARGS",
                    value: var("CNI_ARGS").unwrap_or_default(),
                    reason: format!("{key} is required (the controller finds the pod by it)"),
                }),
                _ => Ok(String::new()),
            }
        };
        Ok(Invocation {
            namespace: get("K8S_POD_NAMESPACE")?,
            pod: get("K8S_POD_NAME")?,
            container_id,
            netns,
            ifname,
        })
    }

    fn pod_ref(&self, pod_mac: Option<String>, node: Option<String>) -> PodRef {
        PodRef {
            node,
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container_id: self.container_id.clone(),
            netns: self.netns.clone().unwrap_or_default(),
            ifname: self.ifname.clone(),
            host_iface: self.host_iface(),
            pod_mac,
            host_ifindex: None,
        }
    }

    fn host_iface(&self) -> String {
        api::host_iface_name(&self.container_id, &self.ifname)
    }

    fn who(&self) -> String {
        if self.pod.is_empty() {
            format!("container {}", self.container_id)
        } else {
            format!("{}/{}", self.namespace, self.pod)
        }
    }
}

/// CNI SPEC.md, "Parameters": must start with an alphanumeric character, then alphanumerics,
/// `_`, `.`, `-`.
fn validate_container_id(id: &str) -> Result<(), Error> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv {
            var: "CNI_CONTAINERID",
            value: id.to_owned(),
            reason:
                "must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
                    .into(),
        })
    }
}

/// CNI SPEC.md, "Parameters": fewer than 16 characters, not `.`/`..`, no `/`, `:` or space.
fn validate_ifname(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() >= 16 {
        Some("must be shorter than 16 bytes")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        Some("must not contain '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidEnv {
            var: "CNI_IFNAME",
            value: name.to_owned(),
            reason: reason.into(),
        }),
    }
}

/// `K=V;K=V` (CNI SPEC.md, CNI_ARGS). Empty segments are skipped.
fn parse_cni_args(text: &str) -> Result<HashMap<String, String>, Error> {
    let mut args = HashMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::InvalidEnv {
                var: "CNI_ARGS",
                value: text.to_owned(),
                reason: format!("{pair:?} is not KEY=VALUE"),
            });
        };
        args.insert(key.to_owned(), value.to_owned());
    }
    Ok(args)
}

/// Turns a controller reply into the pod's network or an error.
fn expect_network(reply: Reply, op: &'static str, who: &str) -> Result<PodNetwork, Error> {
    match reply {
        Reply::Ok(Some(net)) => Ok(net),
        Reply::Ok(None) => Err(Error::ControllerNoNetwork {
            op,
            pod: who.to_owned(),
        }),
        Reply::Error(e) => Err(refused(op, who, e)),
    }
}

fn refused(op: &'static str, who: &str, e: api::ErrorReply) -> Error {
    Error::ControllerRefused {
        op,
        pod: who.to_owned(),
        code: e.code,
        msg: e.msg,
        details: e.details,
    }
}

fn remaining(deadline: Instant, controller: &str) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Error::ControllerTimeout {
            controller: controller.to_owned(),
        })
    } else {
        Ok(left)
    }
}

fn add(
    inv: &Invocation,
    conf: &NetConf,
    timeout: Duration,
    phases: &mut Phases,
) -> Result<String, Error> {
    let deadline = Instant::now() + timeout;
    let netns_path = inv.netns.as_deref().unwrap_or_default();
    let netns = NetnsFile::open(netns_path)?;
    phases.mark("netns");
    let host = inv.host_iface();
    // The host end's name is a function of (container id, ifname). One that exists, with
    // the pod end in the pod's namespace, is an earlier ADD of this very attachment: ADD
    // again is idempotent (same address, same result), so it is kept and configured again.
    // A host end without its pod end is the leftover of an ADD whose undo did not finish.
    let existing = match link::link_mac(None, &host)? {
        Some(host_mac) => match link::link_mac(Some(&netns), &inv.ifname)? {
            Some(pod_mac) => Some(link::VethMacs {
                host_index: None,
                host: host_mac,
                pod: pod_mac,
            }),
            None => {
                link::delete_link(None, &host)?;
                eprintln!(
                    "switchyard-cni: removed leftover {host} of an earlier ADD of {}",
                    inv.who()
                );
                None
            }
        },
        None => None,
    };
    phases.mark("lookup");
    let macs = match existing {
        Some(macs) => {
            eprintln!(
                "switchyard-cni: {host} and {} exist already: ADD of {} again",
                inv.ifname,
                inv.who()
            );
            macs
        }
        None => link::create_veth(&host, &netns, &inv.ifname)?,
    };
    phases.mark("veth");
    // From here on the veth exists: every failure undoes it and tells the controller.
    let attached = (|| {
        let mut pod = inv.pod_ref(Some(macs.pod.clone()), node_name(conf));
        pod.host_ifindex = macs.host_index;
        let request = Request::Add(pod);
        let reply = conf.call(&request, remaining(deadline, &conf.controller)?)?;
        phases.mark("controller");
        let net = expect_network(reply, "add", &inv.who())?;
        let ethtool = link::configure_pod_end(&netns, &inv.ifname, &net)?;
        phases.part("pod_ethtool", ethtool);
        phases.mark("pod_end");
        let ethtool = link::configure_host_end(&host, net.mtu, net.userspace_datapath)?;
        phases.part("host_ethtool", ethtool);
        phases.mark("host_end");
        Ok::<_, Error>(net)
    })();
    let net = match attached {
        Ok(net) => net,
        Err(e) => {
            undo_add(inv, conf, &host);
            return Err(e);
        }
    };
    let mut out = add_result(
        &conf.cni_version,
        inv,
        netns.path(),
        &host,
        &macs.host,
        &net,
    )
    .to_string();
    out.push('\n');
    Ok(out)
}

fn undo_add(inv: &Invocation, conf: &NetConf, host: &str) {
    if let Err(e) = link::delete_link(None, host) {
        eprintln!("switchyard-cni: undoing ADD of {}: {e}", inv.who());
    }
    let request = Request::Del(inv.pod_ref(None, node_name(conf)));
    match conf.call(&request, CLEANUP_TIMEOUT) {
        Ok(Reply::Ok(_)) => {}
        Ok(Reply::Error(e)) => eprintln!(
            "switchyard-cni: undoing ADD of {}: controller refused del: {} ({})",
            inv.who(),
            e.msg,
            e.details
        ),
        Err(e) => eprintln!("switchyard-cni: undoing ADD of {}: {e}", inv.who()),
    }
}

/// The ADD result (CNI SPEC.md, "Success"): interface 0 is the host end, 1 the pod end.
fn add_result(
    version: &str,
    inv: &Invocation,
    sandbox: &str,
    host: &str,
    host_mac: &str,
    net: &PodNetwork,
) -> Value {
    let v1 = !version_lt(version, "1.0.0");
    let mut host_if = json!({"name": host, "mac": host_mac});
    let mut pod_if = json!({"name": inv.ifname, "mac": net.mac.to_lowercase(), "sandbox": sandbox});
    if !version_lt(version, "1.1.0") {
        host_if["mtu"] = json!(net.mtu);
        pod_if["mtu"] = json!(net.mtu);
    }
    let mut ip = json!({"address": net.address.to_string(), "interface": 1});
    if net.address.addr().is_ipv4() == net.gateway.is_ipv4() {
        ip["gateway"] = json!(net.gateway.to_string());
    }
    if !v1 {
        // 0.3.x/0.4.0 results carry the IP version; 1.0.0 removed the field.
        ip["version"] = json!(if net.address.addr().is_ipv4() {
            "4"
        } else {
            "6"
        });
    }
    let routes: Vec<Value> = net
        .routes
        .iter()
        .map(|r| match r.gw {
            Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
            None => json!({"dst": r.dst.to_string()}),
        })
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": [host_if, pod_if],
        "ips": [ip],
        "routes": routes,
        "dns": {},
    })
}

fn del(
    inv: &Invocation,
    conf: &NetConf,
    timeout: Duration,
    phases: &mut Phases,
) -> Result<(), Error> {
    // Clean up as much as possible (CNI SPEC.md, DEL), but succeed only once the controller
    // has confirmed: a DEL it never heard of would leave the pod's port, flows and
    // attachment behind, so an unreachable controller is an error and the runtime retries
    // the DEL (it must, until one succeeds). Missing things are not errors: DEL of an
    // attachment that does not exist succeeds.
    let request = Request::Del(inv.pod_ref(None, node_name(conf)));
    // Deleting the host end takes the pod end with it; a gone netns took both already. It
    // goes on while the controller is asked: the kernel takes tens of milliseconds to
    // destroy a veth, and neither side needs the other done first.
    let host = inv.host_iface();
    let removing = std::thread::Builder::new()
        .name("switchyard-del".into())
        .spawn(move || link::delete_link(None, &host));
    let told = match conf.call(&request, timeout) {
        Ok(Reply::Ok(_)) => Ok(()),
        Ok(Reply::Error(e)) => Err(refused("del", &inv.who(), e)),
        Err(e) => Err(e),
    };
    phases.mark("controller");
    let removed = match removing {
        Ok(thread) => thread.join().unwrap_or_else(|_| {
            Err(Error::Netlink {
                what: "delete",
                iface: inv.host_iface(),
                reason: "the deleting thread panicked".into(),
            })
        }),
        Err(e) => Err(Error::Netlink {
            what: "spawn a thread to delete",
            iface: inv.host_iface(),
            reason: e.to_string(),
        }),
    };
    phases.mark("veth");
    told?;
    removed?;
    Ok(())
}

fn check(inv: &Invocation, conf: &NetConf, timeout: Duration) -> Result<(), Error> {
    let netns = NetnsFile::open(inv.netns.as_deref().unwrap_or_default())?;
    let reply = conf.call(&Request::Check(inv.pod_ref(None, node_name(conf))), timeout)?;
    let net = expect_network(reply, "check", &inv.who())?;
    let mismatch = |iface: &str, reason: String| Error::CheckMismatch {
        iface: iface.to_owned(),
        reason,
    };
    let pod_iface = format!("{} in {}", inv.ifname, netns.path());
    let state = link::inspect(Some(&netns), &inv.ifname)?
        .ok_or_else(|| mismatch(&pod_iface, "the interface does not exist".into()))?;
    let expected = net.mac.parse::<switchyard_mac::Mac>().ok();
    if expected.is_none() || state.mac.parse().ok() != expected {
        return Err(mismatch(
            &pod_iface,
            format!("MAC is {}, controller expects {}", state.mac, net.mac),
        ));
    }
    if !state.addresses.contains(&net.address) {
        return Err(mismatch(
            &pod_iface,
            format!(
                "address {} missing (has {:?})",
                net.address,
                state
                    .addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        ));
    }
    if state.mtu != net.mtu {
        return Err(mismatch(
            &pod_iface,
            format!("MTU is {}, controller expects {}", state.mtu, net.mtu),
        ));
    }
    if !state.up {
        return Err(mismatch(&pod_iface, "the interface is down".into()));
    }
    if net.userspace_datapath && state.tx_checksum {
        return Err(mismatch(
            &pod_iface,
            "tx checksum offload is on, the userspace datapath needs it off".into(),
        ));
    }
    for route in &net.routes {
        let want = api::Route {
            dst: route.dst.trunc(),
            gw: route.gw,
        };
        if !state.routes.contains(&want) {
            return Err(mismatch(
                &pod_iface,
                format!("route {} via {:?} missing", want.dst, want.gw),
            ));
        }
    }
    if let Some(prev) = &conf.prev_result {
        let listed = prev
            .get("ips")
            .and_then(Value::as_array)
            .is_some_and(|ips| {
                ips.iter().any(|ip| {
                    ip.get("address").and_then(Value::as_str) == Some(&net.address.to_string())
                })
            });
        if !listed {
            return Err(mismatch(
                &pod_iface,
                format!(
                    "prevResult does not list the controller's address {}",
                    net.address
                ),
            ));
        }
    }
    let host = inv.host_iface();
    let host_state = link::inspect(None, &host)?
        .ok_or_else(|| mismatch(&host, "the host end of the veth does not exist".into()))?;
    if !host_state.up {
        return Err(mismatch(&host, "the host end is down".into()));
    }
    if net.userspace_datapath && host_state.tx_checksum {
        return Err(mismatch(
            &host,
            "tx checksum offload is on, the userspace datapath needs it off".into(),
        ));
    }
    Ok(())
}

/// The node this shim runs on: `nodeName` from the configuration, else the host name as the
/// kernel knows it (the UTS namespace, which `ip netns exec` and container runtimes leave
/// alone).
fn node_name(conf: &NetConf) -> Option<String> {
    conf.node_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
}

fn status(conf: &NetConf, timeout: Duration) -> Result<(), Error> {
    let node = node_name(conf);
    match conf.call(&Request::Status { node }, timeout) {
        Ok(Reply::Ok(_)) => Ok(()),
        Ok(Reply::Error(e)) => Err(Error::NotAvailable(format!(
            "controller {} is not ready: {} ({})",
            conf.controller, e.msg, e.details
        ))),
        Err(e) => Err(Error::NotAvailable(e.to_string())),
    }
}

/// True for names [`api::host_iface_name`] can produce.
fn is_our_host_iface(name: &str) -> bool {
    api::is_host_iface_name(name)
}

fn gc(conf: &NetConf, timeout: Duration) -> Result<(), Error> {
    let valid = conf
        .valid_attachments
        .as_ref()
        .or(conf.attachments.as_ref())
        .ok_or(Error::InvalidConfig {
            field: "cni.dev/valid-attachments",
            reason: "GC needs the list of attachments still in use".into(),
        })?;
    let node = node_name(conf).ok_or(Error::InvalidConfig {
        field: "nodeName",
        reason: "GC needs the node's name and the host name is empty".into(),
    })?;
    // The controller first: it holds attachments whose veth is gone already (a DEL that
    // never reached it).
    let request = Request::Gc {
        node: node.clone(),
        valid: valid
            .iter()
            .map(|a| api::ValidAttachment {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })
            .collect(),
    };
    let told = match conf.call(&request, timeout) {
        Ok(Reply::Ok(_)) => Ok(()),
        Ok(Reply::Error(e)) => Err(refused("gc", &format!("node {node}"), e)),
        Err(e) => Err(e),
    };
    let keep: HashSet<String> = valid
        .iter()
        .map(|a| api::host_iface_name(&a.container_id, &a.ifname))
        .collect();
    let mut failures = Vec::new();
    for name in link::list_veths()? {
        if is_our_host_iface(&name)
            && !keep.contains(&name)
            && let Err(e) = link::delete_link(None, &name)
        {
            failures.push(e.to_string());
        }
    }
    told?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Netlink {
            what: "delete stale",
            iface: "veths".into(),
            reason: failures.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn run_with(pairs: &[(&str, &str)], stdin: &str) -> (i32, Value) {
        let out = execute(&env(pairs), &mut stdin.as_bytes());
        let value = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out.stdout).unwrap()
        };
        (out.exit_code, value)
    }

    const CONF: &str = r#"{"cniVersion":"1.1.0","name":"switchyard","type":"switchyard-cni","controller":"unix:/nonexistent/cni.sock"}"#;

    #[test]
    fn version_lists_what_we_speak() {
        let (code, out) = run_with(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(code, 0);
        assert_eq!(out["supportedVersions"], json!(SUPPORTED_VERSIONS));
    }

    #[test]
    fn input_errors_get_their_codes() {
        let (code, out) = run_with(&[], CONF);
        assert_eq!((code, out["code"].as_u64()), (1, Some(4)));
        let (_, out) = run_with(&[("CNI_COMMAND", "ADD")], "{not json");
        assert_eq!(out["code"], 6);
        let (_, out) = run_with(&[("CNI_COMMAND", "ADD")], r#"{"cniVersion":"1.1.0"}"#);
        assert_eq!(out["code"], 7);
        let (_, out) = run_with(&[("CNI_COMMAND", "ADD")], &CONF.replace("1.1.0", "0.2.0"));
        assert_eq!(out["code"], 1);
        let (_, out) = run_with(&[("CNI_COMMAND", "GC")], &CONF.replace("1.1.0", "1.0.0"));
        assert_eq!(out["code"], 1);
        let (_, out) = run_with(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "-bad"),
                ("CNI_IFNAME", "eth0"),
            ],
            CONF,
        );
        assert_eq!(out["code"], 4);
        assert!(out["details"].as_str().unwrap().contains("CNI_CONTAINERID"));
    }

    #[test]
    fn ifname_and_args_rules_follow_the_spec() {
        assert!(validate_ifname("eth0").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        let args = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p").unwrap();
        assert_eq!(args["K8S_POD_NAME"], "p");
        assert!(parse_cni_args("oops").is_err());
        assert!(version_lt("0.4.0", "1.0.0") && !version_lt("1.1.0", "1.1.0"));
    }

    #[test]
    fn result_format_follows_the_requested_version() {
        let inv = Invocation {
            container_id: "c1".into(),
            netns: Some("/run/netns/p".into()),
            ifname: "eth0".into(),
            namespace: "default".into(),
            pod: "web-0".into(),
        };
        let net = PodNetwork {
            address: "10.244.1.5/24".parse().unwrap(),
            mac: "0A:58:0A:F4:01:05".into(),
            gateway: "10.244.1.1".parse().unwrap(),
            mtu: 1450,
            routes: vec![api::Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.244.1.1".parse().unwrap()),
            }],
            userspace_datapath: true,
        };
        let r = add_result(
            "1.1.0",
            &inv,
            "/run/netns/p",
            "syhost",
            "aa:aa:aa:aa:aa:aa",
            &net,
        );
        assert_eq!(r["interfaces"][1]["mac"], "0a:58:0a:f4:01:05");
        assert_eq!(r["interfaces"][1]["mtu"], 1450);
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/p");
        assert!(r["interfaces"][0].get("sandbox").is_none());
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(
            r["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"})
        );
        let r = add_result(
            "1.0.0",
            &inv,
            "/run/netns/p",
            "syhost",
            "aa:aa:aa:aa:aa:aa",
            &net,
        );
        assert!(
            r["interfaces"][1].get("mtu").is_none(),
            "mtu is a 1.1 field"
        );
        let r = add_result(
            "0.4.0",
            &inv,
            "/run/netns/p",
            "syhost",
            "aa:aa:aa:aa:aa:aa",
            &net,
        );
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["cniVersion"], "0.4.0");
    }

    #[test]
    fn a_mistyped_timeout_is_named() {
        let conf = CONF.replace('}', r#","timeoutSeconds":"30"}"#);
        let (_, out) = run_with(&[("CNI_COMMAND", "STATUS")], &conf);
        assert_eq!(out["code"], 7);
        assert!(
            out["details"].as_str().unwrap().contains("timeoutSeconds"),
            "{out}"
        );
    }

    #[test]
    fn gc_only_touches_names_we_make() {
        assert!(is_our_host_iface(&api::host_iface_name("c", "eth0")));
        for other in ["eth0", "syovs123450", "sy0123456789ab0", "syABCDEF012345"] {
            assert!(!is_our_host_iface(other), "{other}");
        }
    }
}
