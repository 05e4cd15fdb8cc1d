//! The controller core in the benchmark's process, driving one real ovs-vswitchd: what the
//! `services_vs_ovn` benchmark measures Switchyard with (the same arrangement as
//! `policy_vs_ovn`'s, which predates this module and keeps its own copy).
//!
//! Owns: an [`OvsSandbox`] (its own namespace, ovsdb-server and ovs-vswitchd on the
//! userspace datapath), the [`Core`] (state task and node agent, as `switchyard controller`
//! runs them) talking real OVSDB and OpenFlow to it, the channel its Kubernetes objects are
//! fed through as a source's deltas, and waiting until a state version is realised. Drop
//! stops the core, then the daemons (by PID), then the namespace.
//!
//! Does not own: the workload or what is reported; nothing here times anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::agent::{AgentConfig, SwitchDb};
use switchyard::controller::Core;
use switchyard::pipeline::Encap;
use switchyard::source::Delta;
use tokio::sync::mpsc::UnboundedSender;

use crate::{OvsSandbox, run};

/// One node's switch with the controller core attached; see the module docs.
pub struct BenchCore {
    // Drop order: the accept loop and the core stop before the sandbox's daemons.
    accept: tokio::task::JoinHandle<()>,
    deltas: UnboundedSender<Vec<Delta>>,
    /// The core (state and agents).
    pub core: Arc<Core>,
    /// The node's OVS.
    pub ovs: OvsSandbox,
    node: String,
}

impl Drop for BenchCore {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl BenchCore {
    /// Starts OVS in a namespace tagged `tag` (`sy<tag>…`) and the core for node `node`;
    /// must run inside a tokio runtime.
    pub async fn start(tag: &str, node: &str) -> BenchCore {
        let ovs = OvsSandbox::start_tagged(tag);
        let d = ovs.dir().to_str().expect("utf-8 dir").to_owned();
        // vswitchd connects only to unix: controllers inside its run directory.
        let mut listener =
            openflow::Listener::bind(&format!("punix:{d}/switchyard-controller.sock"))
                .await
                .expect("listen for br-int");
        let (deltas, delta_rx) = tokio::sync::mpsc::unbounded_channel();
        let core = Arc::new(Core::start(
            AgentConfig::new(
                SwitchDb::Ovsdb(format!("unix:{d}/db.sock")),
                format!("unix:{d}/switchyard-controller.sock"),
                Encap::Geneve,
                "netdev".into(),
            ),
            delta_rx,
        ));
        let accept = {
            let core = core.clone();
            tokio::spawn(async move {
                while let Ok(conn) = listener.accept().await {
                    core.accept_switch(conn);
                }
            })
        };
        BenchCore {
            accept,
            deltas,
            core,
            ovs,
            node: node.to_owned(),
        }
    }

    /// Hands a batch of deltas to the state task.
    pub fn send(&self, batch: Vec<Delta>) {
        self.deltas.send(batch).expect("state task alive");
    }

    /// The state version after the last batch applied.
    pub fn version(&self) -> u64 {
        self.core.state.snapshot().version
    }

    /// Sends `batch` and returns the state version it produced (waits for the state task
    /// to publish a version newer than the one before).
    pub async fn apply(&self, batch: Vec<Delta>) -> u64 {
        let v0 = self.version();
        let mut snaps = self.core.state.subscribe();
        self.send(batch);
        loop {
            let v = snaps.borrow_and_update().version;
            if v > v0 {
                return v;
            }
            snaps.changed().await.expect("state task alive");
        }
    }

    /// The agent's (ready, flows desired, flows installed, realised version, groups
    /// desired).
    pub fn agent_state(&self) -> Option<(bool, usize, usize, u64, usize)> {
        let agents = self.core.agents.lock().unwrap();
        agents.get(&self.node).map(|a| {
            let s = a.status.borrow();
            let r = a.realised.borrow();
            (
                s.ready,
                s.flows_desired,
                s.flows_installed,
                r.version,
                s.groups_desired,
            )
        })
    }

    /// Waits (polling every 2 ms) until the agent is ready, has realised `version` (its
    /// bundle's commit reply came back: groups and flows are in br-int) and holds every
    /// desired flow. Panics after 30 minutes naming `what`.
    pub async fn realised(&self, version: u64, what: &str) {
        let started = Instant::now();
        loop {
            if let Some((ready, desired, installed, v, _)) = self.agent_state()
                && ready
                && v >= version
                && desired == installed
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "{what}: not realised after 30 min: {:?}",
                self.agent_state()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The agent's last realisation: how long it took and how many changes it sent.
    pub fn last_realisation(&self) -> Option<(Duration, usize)> {
        let agents = self.core.agents.lock().unwrap();
        agents
            .get(&self.node)
            .and_then(|a| a.status.borrow().last_realisation)
            .map(|(_, took, changes)| (took, changes))
    }

    /// `ovs-ofctl -O OpenFlow13 SUBCOMMAND` on br-int.
    pub fn ofctl(&self, subcommand: &str) -> String {
        run(
            "ovs-ofctl",
            &[
                "-O",
                "OpenFlow13",
                subcommand,
                &self.ovs.mgmt_target("br-int"),
            ],
        )
    }

    /// Flows in br-int (`dump-aggregate`).
    pub fn flow_count(&self) -> usize {
        aggregate_flow_count(&self.ofctl("dump-aggregate"))
    }

    /// Groups in br-int (`dump-groups`).
    pub fn group_count(&self) -> usize {
        self.ofctl("dump-groups")
            .lines()
            .filter(|l| l.contains("group_id="))
            .count()
    }
}

/// `flow_count=N` of an `ovs-ofctl dump-aggregate` reply (0 if absent).
pub fn aggregate_flow_count(reply: &str) -> usize {
    reply
        .split("flow_count=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The median of samples (the lower middle one for an even count; NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The host's 1, 5 and 15 minute load averages, as /proc/loadavg has them.
pub fn host_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A benchmark size from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The Debian packages of `names` that are not installed.
pub fn missing_packages(names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|p| {
            let out = crate::run_output("dpkg-query", &["-W", "-f=${Status}", p]);
            !String::from_utf8_lossy(&out.stdout).contains("install ok installed")
        })
        .collect()
}
