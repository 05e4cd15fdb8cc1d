//! One node driven by the real controller, for the CNI tests and the `cni_attach` benchmark:
//! an [`OvsSandbox`] (the node's namespace with its own ovsdb-server and ovs-vswitchd), the
//! `switchyard controller` process reading a cluster file that this value writes, and the
//! real `switchyard-cni` run inside the node's namespace as a container runtime runs it.
//!
//! Owns: the cluster file (one Node, the pods given), the controller process (stopped by its
//! PID on drop), running the shim. Does not own: what the tests assert.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Netns, OvsSandbox, wait_for};

/// The node's name in the cluster file.
pub const NODE: &str = "cni-node";
/// The node's pod CIDR.
pub const POD_CIDR: &str = "10.252.0.0/16";

/// What one run of the shim printed and how it exited.
#[derive(Debug)]
pub struct ShimOutput {
    /// Exit status 0.
    pub success: bool,
    /// The CNI result or error JSON.
    pub stdout: String,
    /// The shim's log lines.
    pub stderr: String,
}

impl ShimOutput {
    /// stdout as JSON; panics (naming stdout and stderr) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "shim stdout is not JSON ({e}): {:?} (stderr: {})",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code, if the run failed with one.
    pub fn code(&self) -> Option<u64> {
        if self.success {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&self.stdout)
            .ok()?
            .get("code")?
            .as_u64()
    }
}

/// A node with the real controller; see the module docs.
pub struct CniNode {
    /// The node's OVS.
    pub ovs: OvsSandbox,
    dir: tempfile::TempDir,
    pods: Vec<(String, String)>,
    controller: Option<Child>,
    shim: PathBuf,
    controller_bin: PathBuf,
    /// The controller's source flags when not the cluster file (e.g. `--kubeconfig PATH`).
    source_args: Option<Vec<String>>,
    /// `--cni-listen` and what the shims connect to, when not the unix socket in `dir`.
    cni_listen: Option<String>,
    /// More controller flags (e.g. `--cni-tls-*`).
    extra_args: Vec<String>,
    /// Fields merged into every shim configuration (e.g. `"tls"`).
    conf_extra: Vec<(String, serde_json::Value)>,
    /// More cluster-file documents (NetworkPolicies, Namespaces...), after the pods.
    documents: Vec<String>,
    /// `--ovsdb-template`, when not this node's OVSDB socket (see
    /// [`CniNode::set_ovsdb_template`]).
    ovsdb_template: Option<String>,
    /// Other controller replicas' OpenFlow targets, listed after this one's in
    /// `--openflow-target` (see [`CniNode::start_replicated`]); `{ovs}` is the OVS
    /// directory.
    peers: Vec<String>,
}

impl CniNode {
    /// Starts OVS and the controller with `pods` (namespace, name) on the node, and waits
    /// until the controller reports the node ready (STATUS).
    pub fn start(pods: &[(&str, &str)]) -> CniNode {
        Self::start_with(
            pods,
            crate::workspace_binary("switchyard"),
            crate::workspace_binary("switchyard-cni"),
        )
    }

    /// [`CniNode::start`] with the given controller and shim binaries (the benchmark uses
    /// release builds).
    pub fn start_with(pods: &[(&str, &str)], controller_bin: PathBuf, shim: PathBuf) -> CniNode {
        let ovs = OvsSandbox::start();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-cninode-")
            .tempdir()
            .expect("temporary directory");
        let mut node = CniNode {
            ovs,
            dir,
            pods: pods
                .iter()
                .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
                .collect(),
            controller: None,
            shim,
            controller_bin,
            source_args: None,
            cni_listen: None,
            extra_args: Vec::new(),
            conf_extra: Vec::new(),
            documents: Vec::new(),
            ovsdb_template: None,
            peers: Vec::new(),
        };
        node.write_cluster_file();
        node.start_controller();
        node
    }

    /// [`CniNode::start`] with the CNI listener on `cni_listen` (e.g. `ssl:127.0.0.1:PORT`:
    /// the controller then runs in the node's namespace, whose loopback the shims reach),
    /// `extra_args` for the controller (e.g. `--cni-tls-*`), and `conf_extra` merged into
    /// every shim configuration (e.g. the node's `"tls"` files).
    pub fn start_listening(
        pods: &[(&str, &str)],
        cni_listen: &str,
        extra_args: &[&str],
        conf_extra: &[(&str, serde_json::Value)],
    ) -> CniNode {
        let ovs = OvsSandbox::start();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-cninode-")
            .tempdir()
            .expect("temporary directory");
        let mut node = CniNode {
            ovs,
            dir,
            pods: pods
                .iter()
                .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
                .collect(),
            controller: None,
            shim: crate::workspace_binary("switchyard-cni"),
            controller_bin: crate::workspace_binary("switchyard"),
            source_args: None,
            cni_listen: Some(cni_listen.to_owned()),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            conf_extra: conf_extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            documents: Vec::new(),
            ovsdb_template: None,
            peers: Vec::new(),
        };
        node.write_cluster_file();
        node.start_controller();
        node
    }

    /// Starts OVS and the controller reading its objects through `source_args` (e.g.
    /// `--kubeconfig PATH` naming a test API server that serves Node [`NODE`] with pod CIDR
    /// [`POD_CIDR`]) instead of the cluster file; waits as [`CniNode::start`] does.
    pub fn start_with_source(source_args: &[&str]) -> CniNode {
        Self::start_replicated(source_args, &[], &[])
    }

    /// [`CniNode::start_with_source`] with more controller flags and the OpenFlow targets
    /// of other replicas (`unix:` sockets in [`CniNode::ovs`]'s directory, where vswitchd
    /// connects: `unix:{ovs}/NAME.sock`), so br-int's Controller table lists every replica.
    pub fn start_replicated(
        source_args: &[&str],
        extra_args: &[&str],
        peers: &[String],
    ) -> CniNode {
        let ovs = OvsSandbox::start();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-cninode-")
            .tempdir()
            .expect("temporary directory");
        let mut node = CniNode {
            ovs,
            dir,
            pods: Vec::new(),
            controller: None,
            shim: crate::workspace_binary("switchyard-cni"),
            controller_bin: crate::workspace_binary("switchyard"),
            source_args: Some(source_args.iter().map(|a| (*a).to_owned()).collect()),
            cni_listen: None,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            conf_extra: Vec::new(),
            documents: Vec::new(),
            ovsdb_template: None,
            peers: peers.to_vec(),
        };
        node.start_controller();
        node
    }

    /// OVS and the node's namespace, without the controller: the caller starts what the
    /// controller needs first (e.g. a test API server listening inside [`CniNode::ovs`]'s
    /// namespace, where a controller with a TCP `cni_listen` runs), then
    /// [`CniNode::start_controller`]. As [`CniNode::start_listening`] otherwise, with
    /// `source_args` (e.g. `--kubeconfig PATH`) instead of the cluster file.
    pub fn unstarted(
        source_args: &[&str],
        cni_listen: &str,
        extra_args: &[&str],
        conf_extra: &[(&str, serde_json::Value)],
    ) -> CniNode {
        let ovs = OvsSandbox::start();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-cninode-")
            .tempdir()
            .expect("temporary directory");
        CniNode {
            ovs,
            dir,
            pods: Vec::new(),
            controller: None,
            shim: crate::workspace_binary("switchyard-cni"),
            controller_bin: crate::workspace_binary("switchyard"),
            source_args: Some(source_args.iter().map(|a| (*a).to_owned()).collect()),
            cni_listen: Some(cni_listen.to_owned()),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            conf_extra: conf_extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            documents: Vec::new(),
            ovsdb_template: None,
            peers: Vec::new(),
        }
    }

    /// The controller's `--ovsdb-template` from its next start on (e.g. with `{node}`, so
    /// that other nodes' agents do not reach this node's OVSDB).
    pub fn set_ovsdb_template(&mut self, template: &str) {
        self.ovsdb_template = Some(template.to_owned());
    }

    /// The address the controller's metrics endpoint bound (`--metrics-listen 127.0.0.1:0`),
    /// from its log line `metrics endpoint ready`.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        let log = self.controller_log();
        let line = log.lines().find(|l| l.contains("metrics endpoint ready"))?;
        let (_, rest) = line.split_once("listen=Some(")?;
        rest.split(')').next()?.parse().ok()
    }

    /// `GET path` on the metrics endpoint: status code and body.
    pub fn metrics_get(&self, path: &str) -> (u16, String) {
        use std::io::Read;
        let addr = self
            .metrics_addr()
            .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", self.controller_log()));
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send GET");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the answer");
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    /// The controller's CNI address.
    pub fn cni_target(&self) -> String {
        self.cni_listen
            .clone()
            .unwrap_or_else(|| format!("unix:{}/cni.sock", self.dir.path().display()))
    }

    /// The controller's log.
    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    fn cluster_file(&self) -> PathBuf {
        self.dir.path().join("cluster.yaml")
    }

    fn write_cluster_file(&self) {
        let mut docs = vec![format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}}}\nspec: {{podCIDR: \"{POD_CIDR}\"}}\nstatus:\n  addresses: [{{type: InternalIP, address: 192.0.2.10}}]\n"
        )];
        for (ns, name) in &self.pods {
            docs.push(format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  nodeName: {NODE}\n  containers: [{{name: c, image: x}}]\n"
            ));
        }
        docs.extend(self.documents.iter().cloned());
        // Write then rename, so the controller never reads half a file.
        let tmp = self.dir.path().join("cluster.yaml.tmp");
        std::fs::write(&tmp, docs.join("---\n")).expect("write the cluster file");
        std::fs::rename(&tmp, self.cluster_file()).expect("replace the cluster file");
    }

    /// Replaces the cluster file's extra documents (YAML, one object each) and rewrites it.
    pub fn set_documents(&mut self, documents: Vec<String>) {
        self.documents = documents;
        self.write_cluster_file();
    }

    /// Removes a pod from the cluster file (the pod object is deleted).
    pub fn remove_pod(&mut self, namespace: &str, name: &str) {
        self.pods.retain(|(n, p)| !(n == namespace && p == name));
        self.write_cluster_file();
    }

    /// Starts the controller process (again, after [`CniNode::stop_controller`]).
    pub fn start_controller(&mut self) {
        let d = self.dir.path().display().to_string();
        let ovs = self.ovs.dir().display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("controller.log"))
            .expect("controller.log");
        let err = log.try_clone().expect("controller.log");
        let _ = std::fs::remove_file(self.dir.path().join("cni.sock"));
        let source = self.source_args.clone().unwrap_or_else(|| {
            vec![
                "--cluster-file".to_owned(),
                self.cluster_file().display().to_string(),
            ]
        });
        // A TCP listener must be reachable from the node's namespace, where the shims run:
        // then the controller runs there too (`ip netns exec` execs in place, so the PID is
        // the controller's). Unix sockets reach across namespaces.
        let mut command = if self.cni_listen.is_some() {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", self.ovs.netns.name()])
                .arg(&self.controller_bin);
            c
        } else {
            Command::new(&self.controller_bin)
        };
        let child = command
            .arg("controller")
            .args(&source)
            .args([
                "--ovsdb-template",
                &self
                    .ovsdb_template
                    .clone()
                    .unwrap_or_else(|| format!("unix:{ovs}/db.sock")),
                // vswitchd connects only to unix: sockets in its own run directory.
                "--openflow-listen",
                &format!("punix:{ovs}/controller.sock"),
                "--openflow-target",
                &std::iter::once(format!("unix:{ovs}/controller.sock"))
                    .chain(self.peers.iter().map(|p| p.replace("{ovs}", &ovs)))
                    .collect::<Vec<_>>()
                    .join(","),
                "--cni-listen",
                &self.cni_target(),
                "--cni-timeout",
                "10",
                // Its own admin socket and any free metrics port: tests run side by side.
                "--admin-listen",
                &format!("unix:{d}/admin.sock"),
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start the controller");
        self.controller = Some(child);
        let ready = wait_for(Duration::from_secs(30), || {
            let out = self.shim_run("STATUS", "", "", "", &[]);
            out.success
        });
        assert!(
            ready.is_some(),
            "the controller did not become ready in 30 s; its log:\n{}",
            self.controller_log()
        );
    }

    /// The controller's PID, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    /// Stops the controller (SIGKILL, by PID).
    pub fn stop_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The plugin configuration the shim gets on stdin, with `extra` fields merged in.
    pub fn conf(&self, extra: &[(&str, serde_json::Value)]) -> String {
        let mut conf = serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "switchyard",
            "type": "switchyard-cni",
            "controller": self.cni_target(),
            "timeoutSeconds": 10,
            "nodeName": NODE,
        });
        for (k, v) in &self.conf_extra {
            conf[k.as_str()] = v.clone();
        }
        for (k, v) in extra {
            conf[*k] = v.clone();
        }
        conf.to_string()
    }

    /// Runs the shim in the node's namespace: `command` for pod `pod` (`namespace/name`,
    /// or empty for no CNI_ARGS), container `container`, network namespace `netns` (empty:
    /// unset).
    pub fn shim_run(
        &self,
        command: &str,
        pod: &str,
        container: &str,
        netns: &str,
        extra: &[(&str, serde_json::Value)],
    ) -> ShimOutput {
        let stdin = self.conf(extra);
        self.shim_spawn(command, pod, container, netns, &stdin)
            .wait_with_output()
            .map(|out| ShimOutput {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
            .expect("wait for the shim")
    }

    /// Starts the shim as [`CniNode::shim_run`] does, without waiting (its PID is the
    /// shim's: `ip netns exec` execs in place).
    pub fn shim_spawn(
        &self,
        command: &str,
        pod: &str,
        container: &str,
        netns: &str,
        stdin: &str,
    ) -> Child {
        self.shim_spawn_wrapped(&[], command, pod, container, netns, stdin, &[])
    }

    /// [`CniNode::shim_spawn`] with more variables in the shim's environment (e.g.
    /// `SWITCHYARD_CNI_TIMING=1`: its phase times on stderr).
    pub fn shim_spawn_with_env(
        &self,
        command: &str,
        pod: &str,
        container: &str,
        netns: &str,
        stdin: &str,
        env: &[(&str, &str)],
    ) -> Child {
        self.shim_spawn_wrapped(&[], command, pod, container, netns, stdin, env)
    }

    /// [`CniNode::shim_run`] with the shim started through `wrapper` (e.g. `setpriv
    /// --reuid=65534 ...`: a process of another user on the node).
    pub fn shim_run_wrapped(
        &self,
        wrapper: &[&str],
        command: &str,
        pod: &str,
        container: &str,
        netns: &str,
        extra: &[(&str, serde_json::Value)],
    ) -> ShimOutput {
        let stdin = self.conf(extra);
        self.shim_spawn_wrapped(wrapper, command, pod, container, netns, &stdin, &[])
            .wait_with_output()
            .map(|out| ShimOutput {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
            .expect("wait for the shim")
    }

    #[allow(clippy::too_many_arguments)]
    fn shim_spawn_wrapped(
        &self,
        wrapper: &[&str],
        command: &str,
        pod: &str,
        container: &str,
        netns: &str,
        stdin: &str,
        env: &[(&str, &str)],
    ) -> Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ovs.netns.name()])
            .args(wrapper)
            .arg(&self.shim)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !container.is_empty() {
            cmd.env("CNI_CONTAINERID", container);
        }
        if !netns.is_empty() {
            cmd.env("CNI_NETNS", netns);
        }
        if let Some((ns, name)) = pod.split_once('/') {
            cmd.env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
            );
        }
        let mut child = cmd.spawn().expect("spawn the shim");
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.as_bytes());
        }
        child
    }

    /// `ovs-vsctl` against the node's database.
    pub fn vsctl(&self, args: &[&str]) -> String {
        self.ovs.vsctl(args)
    }

    /// The ports on br-int.
    pub fn ports(&self) -> Vec<String> {
        self.vsctl(&["list-ports", "br-int"])
            .lines()
            .map(str::to_owned)
            .filter(|p| p.starts_with("sy") && p.len() == 14)
            .collect()
    }

    /// br-int's flows carrying `cookie` (exact).
    pub fn flows_with_cookie(&self, cookie: u64) -> Vec<String> {
        self.ovs
            .ofctl(
                "dump-flows",
                "br-int",
                &["--no-stats", &format!("cookie={cookie:#x}/-1")],
            )
            .lines()
            .filter(|l| l.contains("cookie="))
            .map(str::to_owned)
            .collect()
    }

    /// The host-side veths the shim made in the node's namespace.
    pub fn veths(&self) -> Vec<String> {
        let out = self
            .ovs
            .netns
            .exec(&["ip", "-o", "link", "show", "type", "veth"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("sy") && n.len() == 14)
            .collect()
    }

    /// The directory of the controller's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh pod network namespace.
    pub fn pod_netns(&self) -> Netns {
        Netns::new("cn")
    }
}

impl Drop for CniNode {
    fn drop(&mut self) {
        self.stop_controller();
    }
}
