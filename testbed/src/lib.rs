//! The demo's hosts: network namespaces standing in for machines, with OVS where a node needs it.
//!
//! Owns: creating namespaces, veths and per-node ovsdb-server/ovs-vswitchd (userspace
//! datapath), and removing all of it again. Everything started is stopped by PID from its
//! pidfile; nothing is killed by name. Does not own: anything Switchyard configures on OVS
//! (the controller does that, as it would on a real node).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Runs a command; an error names the command and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = output(program, args)?;
    if !output.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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

/// Sends SIGTERM to the PID in `pidfile`, waits up to 5 s, then SIGKILL.
pub fn stop_pidfile(pidfile: &Path) {
    let Ok(text) = std::fs::read_to_string(pidfile) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    stop_pid(pid);
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

/// ovsdb-server and ovs-vswitchd of one simulated node, in that node's namespace.
#[derive(Debug)]
pub struct NodeOvs {
    dir: PathBuf,
}

impl NodeOvs {
    /// Starts both daemons inside `netns`, with database, sockets and logs in `dir`.
    pub fn start(netns: &Netns, dir: &Path) -> Result<NodeOvs, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            what: format!("create {}", dir.display()),
            source: e,
        })?;
        let ovs = NodeOvs { dir: dir.into() };
        let d = dir.display().to_string();
        let db = format!("{d}/conf.db");
        run(
            "ovsdb-tool",
            &["create", &db, "/usr/share/openvswitch/vswitch.ovsschema"],
        )?;
        let env = [
            format!("OVS_RUNDIR={d}"),
            format!("OVS_LOGDIR={d}"),
            format!("OVS_DBDIR={d}"),
            format!("OVS_SYSCONFDIR={d}"),
        ];
        let daemon = |argv: &[String]| -> Result<String, Error> {
            let mut args: Vec<&str> = vec!["env"];
            args.extend(env.iter().map(String::as_str));
            args.extend(argv.iter().map(String::as_str));
            netns.exec(&args)
        };
        daemon(&[
            "ovsdb-server".into(),
            "--detach".into(),
            "--no-chdir".into(),
            format!("--pidfile={d}/ovsdb-server.pid"),
            format!("--log-file={d}/ovsdb-server.log"),
            format!("--remote=punix:{d}/db.sock"),
            format!("--unixctl={d}/ovsdb-server.ctl"),
            db,
        ])?;
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.start_vswitchd(netns)?;
        Ok(ovs)
    }

    /// Starts ovs-vswitchd inside `netns` (again, after [`NodeOvs::kill_vswitchd`]).
    pub fn start_vswitchd(&self, netns: &Netns) -> Result<(), Error> {
        let d = self.dir.display().to_string();
        let mut args: Vec<String> = vec![
            "env".into(),
            format!("OVS_RUNDIR={d}"),
            format!("OVS_LOGDIR={d}"),
            format!("OVS_DBDIR={d}"),
            format!("OVS_SYSCONFDIR={d}"),
        ];
        args.extend([
            "ovs-vswitchd".into(),
            "--detach".into(),
            "--no-chdir".into(),
            format!("--pidfile={d}/ovs-vswitchd.pid"),
            format!("--log-file={d}/ovs-vswitchd.log"),
            format!("--unixctl={d}/ovs-vswitchd.ctl"),
            self.db_target(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        netns.exec(&argv).map(|_| ())
    }

    /// Kills ovs-vswitchd with SIGKILL (by its pidfile), as a crash would, and waits until
    /// it is gone. ovsdb-server keeps running.
    pub fn kill_vswitchd(&self) -> Result<(), Error> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let file = self.dir.join("ovs-vswitchd.pid");
        let text = std::fs::read_to_string(&file).map_err(|e| Error::Io {
            what: format!("read {}", file.display()),
            source: e,
        })?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| Error::Demo(format!("{}: not a pid: {text:?}", file.display())))?;
        let pid = Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGKILL);
        if !wait_until(Duration::from_secs(10), || kill(pid, None).is_err()) {
            return Err(Error::Demo(format!("ovs-vswitchd {pid} survived SIGKILL")));
        }
        let _ = std::fs::remove_file(&file);
        Ok(())
    }

    /// `unix:DIR/db.sock`.
    pub fn db_target(&self) -> String {
        format!("unix:{}/db.sock", self.dir.display())
    }

    /// The daemons' directory (sockets, logs, pidfiles).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `unix:DIR/BRIDGE.mgmt`, for `ovs-ofctl`.
    pub fn mgmt_target(&self, bridge: &str) -> String {
        format!("unix:{}/{bridge}.mgmt", self.dir.display())
    }

    /// Runs `ovs-vsctl --db=unix:DIR/db.sock ARGS`.
    pub fn vsctl(&self, args: &[&str]) -> Result<String, Error> {
        let db = format!("--db={}", self.db_target());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// Stops both daemons by PID.
    pub fn stop(&self) {
        stop_pidfile(&self.dir.join("ovs-vswitchd.pid"));
        stop_pidfile(&self.dir.join("ovsdb-server.pid"));
    }
}

impl Drop for NodeOvs {
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
