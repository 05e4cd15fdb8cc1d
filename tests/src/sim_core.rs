//! A controller core (state task and node agents, exactly as `switchyard controller` runs
//! them) with simulated OVSDB, listening on a unix socket for switches — real ovs-vswitchd
//! or [`crate::sim_switch::SimSwitch`]es. For the core's tests and the scale benchmark.

use std::path::Path;
use std::sync::Arc;

use switchyard::agent::{AgentConfig, SwitchDb};
use switchyard::controller::Core;
use switchyard::pipeline::Encap;
use switchyard::source::Delta;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A running core and the way to feed it.
pub struct SimulatedCore {
    /// The core: its state handle and agents.
    pub core: Arc<Core>,
    /// Where the source's deltas go.
    pub deltas: mpsc::UnboundedSender<Vec<Delta>>,
    /// What switches dial (`unix:DIR/of.sock`).
    pub target: String,
    accept: JoinHandle<()>,
}

impl SimulatedCore {
    /// Starts the core, its OpenFlow listener in `dir`, and the task that hands each
    /// connecting switch to its node's agent.
    pub async fn start(dir: &Path) -> SimulatedCore {
        let socket = dir.join("of.sock");
        let mut listener = openflow::Listener::bind(&format!("punix:{}", socket.display()))
            .await
            .expect("listen for switches");
        let (deltas, delta_rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core::start(
            AgentConfig::new(
                SwitchDb::Simulated,
                "unix:unused".into(),
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
        SimulatedCore {
            core,
            deltas,
            target: format!("unix:{}", socket.display()),
            accept,
        }
    }
}

impl Drop for SimulatedCore {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
