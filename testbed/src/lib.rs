//! Machines on one machine: network namespaces, and Open vSwitch sandboxes (ovsdb-server
//! and userspace ovs-vswitchd in their own directory, optionally inside a namespace). The
//! one harness both `switchyard demo` and the tests build on.
//!
//! Owns: creating namespaces and OVS daemons, running commands in them, and removing all
//! of it again. Everything started is stopped by PID from its pidfile; nothing is killed by
//! name. Every function returns a [`Result`] whose error names the command, file or wait
//! that failed; the tests wrap them in panicking helpers (tests/src/lib.rs).
//!
//! Does not own: anything Switchyard configures on OVS (the controller does that, as it
//! would on a real node), nor names: callers choose namespace names and directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod error;

pub use error::Error;

/// Runs a command; an error names the command and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = output(program, args)?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                stdout_note(&output.stdout)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A failed command's stdout, when it said anything (some tools report errors there).
fn stdout_note(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    match text.trim() {
        "" => String::new(),
        t => format!(" (stdout: {t})"),
    }
}

/// Runs a command and returns its output, whatever its status.
pub fn output(program: &str, args: &[&str]) -> Result<Output, Error> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!("cannot start it: {e} (is it installed? scripts/install-deps.sh)"),
        })
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` with loopback up. Fails if it exists (a leftover of another run is not
    /// ours to take over).
    pub fn create(name: &str) -> Result<Netns, Error> {
        run("ip", &["netns", "add", name])?;
        let ns = Netns { name: name.into() };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The name `ip netns` knows.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, what a container runtime passes as CNI_NETNS.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, argv: &[&str]) -> Result<String, Error> {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(argv);
        run("ip", &args)
    }

    /// Runs a command inside the namespace, whatever its status.
    pub fn exec_output(&self, argv: &[&str]) -> Result<Output, Error> {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(argv);
        output("ip", &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = output("ip", &["netns", "delete", &self.name]);
    }
}

/// Sends SIGTERM to the PID in `pidfile`, waits up to 5 s, then SIGKILL. Does nothing
/// if there is no pidfile (the daemon is not running, or was never started).
pub fn stop_pidfile(pidfile: &Path) {
    if let Ok(pid) = read_pidfile(pidfile) {
        stop_pid(pid);
    }
}

/// The process id in a daemon's `--pidfile`.
pub fn read_pidfile(pidfile: &Path) -> Result<i32, Error> {
    let text = std::fs::read_to_string(pidfile).map_err(|e| Error::Io {
        what: format!("read {}", pidfile.display()),
        source: e,
    })?;
    text.trim().parse().map_err(|_| Error::Pidfile {
        path: pidfile.into(),
        content: text.clone(),
    })
}

/// Sends SIGTERM to `pid`, waits up to 5 s for it to go, then SIGKILL.
pub fn stop_pid(pid: i32) {
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    if !wait_until(Duration::from_secs(5), || kill(pid, None).is_err()) {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// ovsdb-server and ovs-vswitchd (userspace datapath) of one simulated node, with
/// database, sockets, pidfiles and logs in one directory, optionally inside a network
/// namespace (one per sandbox: two userspace vswitchd in one namespace collide on the
/// `ovs-netdev` device). Both daemons are stopped by PID on drop; the namespace and the
/// directory are the caller's, and must outlive the sandbox.
#[derive(Debug)]
pub struct OvsSandbox {
    dir: PathBuf,
    netns: Option<String>,
}

impl OvsSandbox {
    /// Starts both daemons (inside `netns`, if given) with everything in `dir` (created if
    /// missing), and waits until ovs-vswitchd has read the database.
    pub fn start(netns: Option<&Netns>, dir: &Path) -> Result<OvsSandbox, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            what: format!("create {}", dir.display()),
            source: e,
        })?;
        let ovs = OvsSandbox {
            dir: dir.into(),
            netns: netns.map(|n| n.name().to_owned()),
        };
        let db = ovs.dir.join("conf.db").display().to_string();
        run(
            "ovsdb-tool",
            &["create", &db, "/usr/share/openvswitch/vswitch.ovsschema"],
        )?;
        ovs.start_ovsdb_server()?;
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.start_vswitchd()?;
        // vswitchd is up once it has marked the database as configured.
        ovs.vsctl(&["wait-until", "Open_vSwitch", ".", "cur_cfg>=0"])?;
        Ok(ovs)
    }

    /// Runs a daemon with the OVS_*DIR variables pointing at the sandbox's directory,
    /// inside its namespace if it has one.
    fn daemon(&self, argv: &[String]) -> Result<(), Error> {
        let d = self.dir.display().to_string();
        let mut args: Vec<String> = Vec::new();
        if let Some(netns) = &self.netns {
            args.extend(["ip".into(), "netns".into(), "exec".into(), netns.clone()]);
        }
        args.extend([
            "env".into(),
            format!("OVS_RUNDIR={d}"),
            format!("OVS_LOGDIR={d}"),
            format!("OVS_DBDIR={d}"),
            format!("OVS_SYSCONFDIR={d}"),
        ]);
        args.extend_from_slice(argv);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        run(argv[0], &argv[1..]).map(|_| ())
    }

    fn start_ovsdb_server(&self) -> Result<(), Error> {
        let d = self.dir.display().to_string();
        self.daemon(&[
            "ovsdb-server".into(),
            "--detach".into(),
            "--no-chdir".into(),
            format!("--pidfile={d}/ovsdb-server.pid"),
            format!("--log-file={d}/ovsdb-server.log"),
            format!("--remote=punix:{d}/db.sock"),
            // As Debian's ovs-ctl starts it: further remotes (`ovs-vsctl set-manager
            // pssl:6640`) and TLS settings (`ovs-vsctl set-ssl`) come from the database.
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options".into(),
            "--private-key=db:Open_vSwitch,SSL,private_key".into(),
            "--certificate=db:Open_vSwitch,SSL,certificate".into(),
            "--ca-cert=db:Open_vSwitch,SSL,ca_cert".into(),
            format!("--unixctl={d}/ovsdb-server.ctl"),
            format!("{d}/conf.db"),
        ])
    }

    /// Starts ovs-vswitchd (again, after [`OvsSandbox::kill_vswitchd`] or
    /// [`OvsSandbox::stop_vswitchd`]) with megaflows off (see below); does not wait for it
    /// to read the database.
    ///
    /// Megaflows off: with megaflows, the userspace datapath of OVS 3.1 (dpif-netdev) can
    /// keep a stale datapath flow after an OpenFlow change. A revalidated flow keeps its
    /// (narrower) mask when only its actions change, so a later upcall can install a wider
    /// flow that overlaps it; dpif-netdev then applies a revalidator's "modify" to whichever
    /// overlapping flow its classifier finds first for the key, not to the flow that was
    /// revalidated, and the flow that was meant keeps its old actions while its userspace
    /// record says they are new: it is never fixed while packets keep hitting it.
    /// Seen here as a NetworkPolicy whose drop went on after the policy was deleted
    /// (`e2e_netpol`), and reproduced with plain `ovs-ofctl mod-flows` (docs/operations.md,
    /// "Known OVS issues"). With exact-match datapath flows no two flows overlap. The
    /// kernel datapath modifies by exact key and mask and is not affected.
    pub fn start_vswitchd(&self) -> Result<(), Error> {
        let d = self.dir.display().to_string();
        self.daemon(&[
            "ovs-vswitchd".into(),
            "--detach".into(),
            "--no-chdir".into(),
            format!("--pidfile={d}/ovs-vswitchd.pid"),
            format!("--log-file={d}/ovs-vswitchd.log"),
            format!("--unixctl={d}/ovs-vswitchd.ctl"),
            self.db_target(),
        ])?;
        self.set_megaflows(false)
    }

    /// Turns the datapath's megaflows on or off (`ovs-appctl upcall/enable-megaflows`,
    /// `upcall/disable-megaflows`; the datapath's flows are flushed). They are off from
    /// [`OvsSandbox::start_vswitchd`] on; a benchmark of the data plane turns them on, as
    /// a real node has them.
    pub fn set_megaflows(&self, enabled: bool) -> Result<(), Error> {
        let command = if enabled {
            "upcall/enable-megaflows"
        } else {
            "upcall/disable-megaflows"
        };
        self.appctl(&[command]).map(|_| ())
    }

    /// Kills ovs-vswitchd with SIGKILL (by its pidfile), as a crash would, and waits until
    /// it is gone. ovsdb-server keeps running.
    pub fn kill_vswitchd(&self) -> Result<(), Error> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let file = self.dir.join("ovs-vswitchd.pid");
        let pid = Pid::from_raw(read_pidfile(&file)?);
        let _ = kill(pid, Signal::SIGKILL);
        let waited = Duration::from_secs(10);
        if !wait_until(waited, || kill(pid, None).is_err()) {
            return Err(Error::Timeout {
                what: format!("ovs-vswitchd (pid {pid}) still running after SIGKILL"),
                waited,
            });
        }
        let _ = std::fs::remove_file(&file);
        Ok(())
    }

    /// Stops ovs-vswitchd only (SIGTERM by PID, then SIGKILL), leaving ovsdb-server running.
    pub fn stop_vswitchd(&self) {
        stop_pidfile(&self.dir.join("ovs-vswitchd.pid"));
    }

    /// Stops ovsdb-server only (by PID).
    pub fn stop_ovsdb_server(&self) {
        stop_pidfile(&self.dir.join("ovsdb-server.pid"));
    }

    /// Starts ovsdb-server again on the same database and socket (after
    /// [`OvsSandbox::stop_ovsdb_server`]).
    pub fn restart_ovsdb_server(&self) -> Result<(), Error> {
        let _ = std::fs::remove_file(self.db_socket());
        self.start_ovsdb_server()
    }

    /// `unix:DIR/db.sock`.
    pub fn db_target(&self) -> String {
        format!("unix:{}/db.sock", self.dir.display())
    }

    /// Path of the OVSDB socket.
    pub fn db_socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// The daemons' directory (sockets, logs, pidfiles).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `unix:DIR/BRIDGE.mgmt`, for `ovs-ofctl`.
    pub fn mgmt_target(&self, bridge: &str) -> String {
        format!("unix:{}/{bridge}.mgmt", self.dir.display())
    }

    /// Runs `ovs-vsctl --db=unix:DIR/db.sock --timeout=20 ARGS` (a later `--timeout` in
    /// ARGS wins); returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> Result<String, Error> {
        let db = format!("--db={}", self.db_target());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// Runs `ovs-ofctl -O OpenFlow13 SUBCOMMAND unix:DIR/BRIDGE.mgmt ARGS...`; returns
    /// stdout.
    pub fn ofctl(&self, subcommand: &str, bridge: &str, args: &[&str]) -> Result<String, Error> {
        let target = self.mgmt_target(bridge);
        let mut all = vec!["-O", "OpenFlow13", subcommand, target.as_str()];
        all.extend_from_slice(args);
        run("ovs-ofctl", &all)
    }

    /// Runs `ovs-appctl -t DIR/ovs-vswitchd.ctl ARGS`; returns stdout.
    pub fn appctl(&self, args: &[&str]) -> Result<String, Error> {
        let target = self.dir.join("ovs-vswitchd.ctl").display().to_string();
        let mut all = vec!["-t", target.as_str()];
        all.extend_from_slice(args);
        run("ovs-appctl", &all)
    }

    /// Adds a userspace bridge speaking OpenFlow 1.0 and 1.3 and waits until its management
    /// socket exists. Returns the socket's `unix:` target.
    pub fn add_bridge(&self, bridge: &str) -> Result<String, Error> {
        self.vsctl(&[
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            "datapath_type=netdev",
            "protocols=OpenFlow10,OpenFlow13",
        ])?;
        let socket = self.dir.join(format!("{bridge}.mgmt"));
        let waited = Duration::from_secs(20);
        if !wait_until(waited, || socket.exists()) {
            return Err(Error::Timeout {
                what: format!(
                    "bridge {bridge}: no management socket at {}",
                    socket.display()
                ),
                waited,
            });
        }
        Ok(self.mgmt_target(bridge))
    }

    /// The last `lines` lines of a daemon's log (`ovs-vswitchd` or `ovsdb-server`), for
    /// failure messages; empty if there is none.
    pub fn log_tail(&self, daemon: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops both daemons by PID.
    pub fn stop(&self) {
        self.stop_vswitchd();
        self.stop_ovsdb_server();
    }
}

impl Drop for OvsSandbox {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Turns transmit checksum offload off: with the userspace datapath, TCP over a veth whose
/// checksums were left to "hardware" arrives corrupt while ping still works.
pub fn tx_offload_off(netns: &Netns, iface: &str) -> Result<(), Error> {
    netns
        .exec(&["ethtool", "-K", iface, "tx", "off"])
        .map(|_| ())
}
