//! Test support: real Open vSwitch sandboxes and network namespaces made by the test.
//!
//! Owns: creating and tearing down network namespaces, starting ovsdb-server and
//! ovs-vswitchd (userspace datapath) inside one, and running the OVS command-line tools
//! against it. Everything a sandbox starts is stopped by PID from its pidfile when the
//! value is dropped; nothing is ever killed by name.
//!
//! Does not own: anything Switchyard-specific. Tests of the product build on this.

pub mod cni_node;
pub mod sim_core;
pub mod sim_switch;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process: `sy<tag><pid % 100000><n>`, at most 15 bytes so it
/// can also name a network interface.
pub fn unique_name(tag: &str) -> String {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let name = format!("sy{}{}{}", tag, std::process::id() % 100_000, n);
    assert!(
        name.len() <= 15,
        "unique_name: tag {tag:?} makes {name:?} longer than 15 bytes"
    );
    name
}

/// Fails the test with a clear message unless we run as root (network namespaces and OVS
/// need it). Tests never skip silently.
/// Ends the calling test early, with a message saying so, unless it runs as root: the test
/// needs network namespaces and its own Open vSwitch daemons.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "skipped: {} needs root (network namespaces, Open vSwitch daemons)",
                module_path!()
            );
            return;
        }
    };
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Panics unless running as root (helpers that cannot return early; tests call
/// [`skip_unless_root!`] first).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and runs Open vSwitch: run it as root"
    );
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = run_output(program, args);
    assert!(
        output.status.success(),
        "`{} {}` failed ({}): {}{}",
        program,
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command and returns its output whatever its exit status.
pub fn run_output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e} (is it installed?)"))
}

/// A network namespace the test created; deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name built from `tag` (keep it to 3 characters),
    /// with its loopback up.
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = unique_name(tag);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace; panics with stderr on failure; returns stdout.
    pub fn exec(&self, argv: &[&str]) -> String {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(argv);
        run("ip", &args)
    }

    /// Runs a command inside the namespace and returns its output whatever its status.
    pub fn exec_output(&self, argv: &[&str]) -> Output {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(argv);
        run_output("ip", &args)
    }

    /// The namespace's file under /run/netns, as a CNI runtime passes it in CNI_NETNS.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_output("ip", &["netns", "delete", &self.name]);
    }
}

/// ovsdb-server and ovs-vswitchd (userspace datapath) running inside their own network
/// namespace, with their sockets, database and logs in a temporary directory.
pub struct OvsSandbox {
    /// The namespace the daemons run in (one per simulated node: two userspace
    /// vswitchd in one namespace collide on the `ovs-netdev` device).
    pub netns: Netns,
    dir: tempfile::TempDir,
}

impl OvsSandbox {
    /// Starts ovsdb-server and ovs-vswitchd in a new namespace. Panics with the daemon's
    /// log if either fails to come up.
    pub fn start() -> OvsSandbox {
        let netns = Netns::new("ovs");
        let dir = tempfile::Builder::new()
            .prefix("switchyard-ovs-")
            .tempdir()
            .expect("create a temporary directory for the OVS sandbox");
        let sandbox = OvsSandbox { netns, dir };
        let db = format!("{}/conf.db", sandbox.dir().display());
        run(
            "ovsdb-tool",
            &["create", &db, "/usr/share/openvswitch/vswitch.ovsschema"],
        );
        sandbox.start_ovsdb_server();
        sandbox.vsctl(&["--no-wait", "init"]);
        let d = sandbox.dir().to_str().expect("utf-8 temp dir").to_owned();
        let pidfile = format!("--pidfile={d}/ovs-vswitchd.pid");
        let log = format!("--log-file={d}/ovs-vswitchd.log");
        let ctl = format!("--unixctl={d}/ovs-vswitchd.ctl");
        let db_target = sandbox.db_target();
        sandbox.exec_env(&[
            "ovs-vswitchd",
            "--detach",
            "--no-chdir",
            &pidfile,
            &log,
            &ctl,
            &db_target,
        ]);
        // vswitchd is up once it has marked the database as configured.
        sandbox.vsctl(&[
            "--timeout=20",
            "wait-until",
            "Open_vSwitch",
            ".",
            "cur_cfg>=0",
        ]);
        sandbox
    }

    fn exec_env(&self, argv: &[&str]) {
        let d = self.dir().to_str().expect("utf-8 temp dir");
        let mut args = vec!["netns", "exec", self.netns.name(), "env"];
        let rundir = format!("OVS_RUNDIR={d}");
        let logdir = format!("OVS_LOGDIR={d}");
        let dbdir = format!("OVS_DBDIR={d}");
        let sysconfdir = format!("OVS_SYSCONFDIR={d}");
        args.extend_from_slice(&[&rundir, &logdir, &dbdir, &sysconfdir]);
        args.extend_from_slice(argv);
        run("ip", &args);
    }

    /// The directory holding sockets, database, pidfiles and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `unix:DIR/db.sock`: the OVSDB target.
    pub fn db_target(&self) -> String {
        format!("unix:{}/db.sock", self.dir().display())
    }

    /// Path of the OVSDB socket.
    pub fn db_socket(&self) -> PathBuf {
        self.dir().join("db.sock")
    }

    /// `unix:DIR/BRIDGE.mgmt`: the bridge's OpenFlow management socket.
    pub fn mgmt_target(&self, bridge: &str) -> String {
        format!("unix:{}/{bridge}.mgmt", self.dir().display())
    }

    /// Runs `ovs-vsctl --db=unix:... ARGS`; panics with stderr on failure; returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.db_target());
        let mut all = vec![db.as_str()];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// Runs `ovs-ofctl -O OpenFlow13 SUBCOMMAND unix:DIR/BRIDGE.mgmt ARGS...`; panics on
    /// failure; returns stdout.
    pub fn ofctl(&self, subcommand: &str, bridge: &str, args: &[&str]) -> String {
        let target = self.mgmt_target(bridge);
        let mut all = vec!["-O", "OpenFlow13", subcommand, target.as_str()];
        all.extend_from_slice(args);
        run("ovs-ofctl", &all)
    }

    /// Runs `ovs-appctl -t DIR/ovs-vswitchd.ctl ARGS`; panics on failure; returns stdout.
    pub fn appctl(&self, args: &[&str]) -> String {
        let target = format!("{}/ovs-vswitchd.ctl", self.dir().display());
        let mut all = vec!["-t", target.as_str()];
        all.extend_from_slice(args);
        run("ovs-appctl", &all)
    }

    /// Adds a userspace bridge speaking OpenFlow 1.3 and waits until its management
    /// socket exists. Returns the socket's `unix:` target.
    pub fn add_bridge(&self, bridge: &str) -> String {
        self.vsctl(&[
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            "datapath_type=netdev",
            "protocols=OpenFlow10,OpenFlow13",
        ]);
        let socket = self.dir().join(format!("{bridge}.mgmt"));
        wait_for(Duration::from_secs(20), || socket.exists())
            .unwrap_or_else(|| panic!("bridge {bridge}: no management socket at {socket:?}"));
        self.mgmt_target(bridge)
    }

    /// The last lines of a daemon's log (`ovs-vswitchd` or `ovsdb-server`), for failure
    /// messages.
    pub fn log_tail(&self, daemon: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir().join(format!("{daemon}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn stop(&self, daemon: &str) {
        let pidfile = self.dir().join(format!("{daemon}.pid"));
        let Ok(text) = std::fs::read_to_string(&pidfile) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let gone = wait_for(Duration::from_secs(5), || {
            nix::sys::signal::kill(pid, None).is_err()
        });
        if gone.is_none() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Stops ovs-vswitchd only (by PID), leaving ovsdb-server running.
    pub fn stop_vswitchd(&self) {
        self.stop("ovs-vswitchd");
    }

    /// Stops ovsdb-server only (by PID).
    pub fn stop_ovsdb_server(&self) {
        self.stop("ovsdb-server");
    }

    /// Starts ovsdb-server again on the same database and socket (after
    /// [`stop_ovsdb_server`](Self::stop_ovsdb_server)).
    pub fn restart_ovsdb_server(&self) {
        let _ = std::fs::remove_file(self.db_socket());
        self.start_ovsdb_server();
    }

    fn start_ovsdb_server(&self) {
        let d = self.dir().to_str().expect("utf-8 temp dir").to_owned();
        let db = format!("{d}/conf.db");
        let pidfile = format!("--pidfile={d}/ovsdb-server.pid");
        let log = format!("--log-file={d}/ovsdb-server.log");
        let remote = format!("--remote=punix:{d}/db.sock");
        let ctl = format!("--unixctl={d}/ovsdb-server.ctl");
        self.exec_env(&[
            "ovsdb-server",
            "--detach",
            "--no-chdir",
            &pidfile,
            &log,
            &remote,
            &ctl,
            &db,
        ]);
    }
}

impl Drop for OvsSandbox {
    fn drop(&mut self) {
        self.stop("ovs-vswitchd");
        self.stop("ovsdb-server");
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Path of a workspace binary (`switchyard`, `switchyard-cni`, `yardctl`) in the target
/// directory, building its package first if it is not there. `scripts/test.sh` builds all
/// binaries before running the tests, so the build here is only for a bare `cargo test`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("..").join("target"));
    let path = target.join("debug").join(name);
    if !path.exists() {
        let package = match name {
            "switchyard-cni" => "switchyard-cni",
            _ => "switchyard",
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(&cargo, &["build", "-p", package, "--bin", name]);
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The pods of a cluster state as `namespace/name`, in key order.
pub fn pod_names(state: &switchyard::source::ClusterState) -> Vec<String> {
    state.pods.keys().map(ToString::to_string).collect()
}

/// Waits until a source's published cluster state satisfies `done`, returning it; panics
/// after `deadline` naming `what` was awaited and the pods the last state had.
pub async fn wait_for_state(
    deadline: Duration,
    receiver: &mut tokio::sync::watch::Receiver<std::sync::Arc<switchyard::source::ClusterState>>,
    what: &str,
    done: impl Fn(&switchyard::source::ClusterState) -> bool,
) -> std::sync::Arc<switchyard::source::ClusterState> {
    let waiting = async {
        loop {
            {
                let state = receiver.borrow_and_update();
                if done(&state) {
                    return std::sync::Arc::clone(&state);
                }
            }
            receiver
                .changed()
                .await
                .expect("the source stopped publishing");
        }
    };
    match tokio::time::timeout(deadline, waiting).await {
        Ok(state) => state,
        Err(_) => {
            let pods = pod_names(&receiver.borrow());
            panic!("state never became: {what}; last state has pods {pods:?}")
        }
    }
}
