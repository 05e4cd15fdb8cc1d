//! Test support: real Open vSwitch sandboxes and network namespaces made by the test.
//!
//! Owns: the tests' face of `switchyard-testbed` (the one harness, which the demo uses too):
//! names unique to the test process, skipping without root, and panicking wrappers, so a
//! test reads `sandbox.vsctl(..)` and fails with the harness's error. Everything a sandbox
//! starts is stopped by PID from its pidfile when the value is dropped; nothing is ever
//! killed by name.
//!
//! Does not own: starting or stopping anything itself (the harness does), nor anything
//! Switchyard-specific. Tests of the product build on this.

pub mod bench_core;
pub mod cni_node;
pub mod pki;
pub mod pod_servers;
pub mod sim_core;
pub mod sim_switch;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use switchyard_testbed as testbed;

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

/// Unwraps a harness result, panicking with the error (which names the command, file or
/// wait that failed): the tests' convenience over `switchyard-testbed`'s `Result`s.
#[track_caller]
fn ok<T>(result: Result<T, testbed::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
#[track_caller]
pub fn run(program: &str, args: &[&str]) -> String {
    ok(testbed::run(program, args))
}

/// Runs a command and returns its output whatever its exit status.
#[track_caller]
pub fn run_output(program: &str, args: &[&str]) -> Output {
    ok(testbed::output(program, args))
}

/// A network namespace the test created, with a name unique to the test process; deleted
/// on drop. A panicking face of [`testbed::Netns`].
pub struct Netns {
    inner: testbed::Netns,
}

impl Netns {
    /// Creates a namespace with a unique name built from `tag` (keep it to 3 characters),
    /// with its loopback up.
    #[track_caller]
    pub fn new(tag: &str) -> Netns {
        require_root();
        Netns {
            inner: ok(testbed::Netns::create(&unique_name(tag))),
        }
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Runs a command inside the namespace; panics with stderr on failure; returns stdout.
    #[track_caller]
    pub fn exec(&self, argv: &[&str]) -> String {
        ok(self.inner.exec(argv))
    }

    /// Runs a command inside the namespace and returns its output whatever its status.
    #[track_caller]
    pub fn exec_output(&self, argv: &[&str]) -> Output {
        ok(self.inner.exec_output(argv))
    }

    /// The namespace's file under /run/netns, as a CNI runtime passes it in CNI_NETNS.
    pub fn path(&self) -> PathBuf {
        self.inner.path()
    }

    /// The harness's namespace, for `switchyard-testbed` functions that take one.
    pub fn testbed(&self) -> &testbed::Netns {
        &self.inner
    }
}

/// ovsdb-server and ovs-vswitchd (userspace datapath) running inside their own network
/// namespace, with their sockets, database and logs in a temporary directory: a
/// [`testbed::OvsSandbox`] that owns its namespace and directory, and panics on failure.
pub struct OvsSandbox {
    // Fields drop in order: the daemons stop before their namespace and directory go.
    inner: testbed::OvsSandbox,
    /// The namespace the daemons run in (one per simulated node: two userspace
    /// vswitchd in one namespace collide on the `ovs-netdev` device).
    pub netns: Netns,
    _dir: tempfile::TempDir,
}

impl OvsSandbox {
    /// Starts ovsdb-server and ovs-vswitchd in a new namespace. Panics with the daemon's
    /// log if either fails to come up.
    #[track_caller]
    pub fn start() -> OvsSandbox {
        OvsSandbox::start_tagged("ovs")
    }

    /// [`OvsSandbox::start`] with the namespace named by `tag` (`sy<tag>…`), for a test or
    /// benchmark that keeps to its own prefix.
    #[track_caller]
    pub fn start_tagged(tag: &str) -> OvsSandbox {
        let netns = Netns::new(tag);
        let dir = tempfile::Builder::new()
            .prefix("switchyard-ovs-")
            .tempdir()
            .expect("create a temporary directory for the OVS sandbox");
        match testbed::OvsSandbox::start(Some(netns.testbed()), dir.path()) {
            Ok(inner) => OvsSandbox {
                inner,
                netns,
                _dir: dir,
            },
            Err(e) => {
                let log = |daemon: &str| {
                    std::fs::read_to_string(dir.path().join(format!("{daemon}.log")))
                        .unwrap_or_default()
                };
                // Whatever did start is stopped by PID before the directory goes.
                testbed::stop_pidfile(&dir.path().join("ovs-vswitchd.pid"));
                testbed::stop_pidfile(&dir.path().join("ovsdb-server.pid"));
                panic!(
                    "OVS sandbox did not start: {e}\n--- ovsdb-server.log ---\n{}\n--- ovs-vswitchd.log ---\n{}",
                    log("ovsdb-server"),
                    log("ovs-vswitchd")
                )
            }
        }
    }

    /// The harness's sandbox, for its `Result`-returning methods.
    pub fn testbed(&self) -> &testbed::OvsSandbox {
        &self.inner
    }

    /// The directory holding sockets, database, pidfiles and logs.
    pub fn dir(&self) -> &Path {
        self.inner.dir()
    }

    /// `unix:DIR/db.sock`: the OVSDB target.
    pub fn db_target(&self) -> String {
        self.inner.db_target()
    }

    /// Path of the OVSDB socket.
    pub fn db_socket(&self) -> PathBuf {
        self.inner.db_socket()
    }

    /// `unix:DIR/BRIDGE.mgmt`: the bridge's OpenFlow management socket.
    pub fn mgmt_target(&self, bridge: &str) -> String {
        self.inner.mgmt_target(bridge)
    }

    /// Runs `ovs-vsctl --db=unix:... ARGS`; panics with stderr on failure; returns stdout.
    #[track_caller]
    pub fn vsctl(&self, args: &[&str]) -> String {
        ok(self.inner.vsctl(args))
    }

    /// Runs `ovs-ofctl -O OpenFlow13 SUBCOMMAND unix:DIR/BRIDGE.mgmt ARGS...`; panics on
    /// failure; returns stdout.
    #[track_caller]
    pub fn ofctl(&self, subcommand: &str, bridge: &str, args: &[&str]) -> String {
        ok(self.inner.ofctl(subcommand, bridge, args))
    }

    /// Runs `ovs-appctl -t DIR/ovs-vswitchd.ctl ARGS`; panics on failure; returns stdout.
    #[track_caller]
    pub fn appctl(&self, args: &[&str]) -> String {
        ok(self.inner.appctl(args))
    }

    /// Adds a userspace bridge speaking OpenFlow 1.3 and waits until its management
    /// socket exists. Returns the socket's `unix:` target.
    #[track_caller]
    pub fn add_bridge(&self, bridge: &str) -> String {
        ok(self.inner.add_bridge(bridge))
    }

    /// The last 30 lines of a daemon's log (`ovs-vswitchd` or `ovsdb-server`), for failure
    /// messages.
    pub fn log_tail(&self, daemon: &str) -> String {
        self.inner.log_tail(daemon, 30)
    }

    /// Stops ovs-vswitchd only (by PID), leaving ovsdb-server running.
    pub fn stop_vswitchd(&self) {
        self.inner.stop_vswitchd();
    }

    /// Stops ovsdb-server only (by PID).
    pub fn stop_ovsdb_server(&self) {
        self.inner.stop_ovsdb_server();
    }

    /// Starts ovsdb-server again on the same database and socket (after
    /// [`stop_ovsdb_server`](Self::stop_ovsdb_server)).
    #[track_caller]
    pub fn restart_ovsdb_server(&self) {
        ok(self.inner.restart_ovsdb_server());
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, condition: impl FnMut() -> bool) -> Option<()> {
    testbed::wait_until(timeout, condition).then_some(())
}

/// Path of a workspace binary (`switchyard`, `switchyard-cni`, `switchyard-demo`, `yardctl`) in the target
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
            "switchyard-demo" => "switchyard-demo",
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
