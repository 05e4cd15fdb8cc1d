//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does
//! it: get the Lease; create it when missing; take it over when its holder is empty or its
//! `renewTime + leaseDurationSeconds` has passed; renew it while holding it; every write is
//! a replace carrying the `resourceVersion` read, so of two replicas racing for one Lease
//! the API server lets one win and answers the other `409 Conflict` (a create of an existing
//! Lease: `409 AlreadyExists`).
//!
//! The holder renews every third of the lease duration. A leader that has not renewed for
//! two thirds of the duration steps down at once (before any other replica may take the
//! Lease, which needs the full duration since the last renewal), so there is never a moment
//! with two leaders as long as the replicas' clocks agree within a third of the duration.
//! On SIGTERM the leader releases the Lease (empty `holderIdentity`), so the standby takes
//! over at its next try rather than after the duration.
//!
//! The outcome is a `watch` of [`Leadership`]: the controller's state task starts the node
//! agents when it turns leader and stops them (drops every switch connection) when it turns
//! standby. The kube source is not touched: the standby's caches stay warm.
//!
//! The holder also writes where its CNI listener is reached (`--cni-advertise`) into the
//! Lease's annotation [`LEADER_CNI_ANNOTATION`], on every write; a standby reads it with
//! the holder and publishes it in a second `watch`, so the CNI server can hand a shim's
//! connection on to the leader (cni_server.rs). It is cleared whenever this replica's own
//! view changes (it takes the Lease, or steps down): a replica forwards only to a holder
//! it read after its own last term, so two replicas never forward to each other.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Where the Lease is and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's name (`--lease-name`).
    pub name: String,
    /// Its namespace (`--lease-namespace`): the controller's own.
    pub namespace: String,
    /// This replica's `holderIdentity`: pod name plus a random suffix.
    pub identity: String,
    /// `leaseDurationSeconds` (`--lease-duration`).
    pub duration: Duration,
    /// Where this replica's CNI listener is reached (`--cni-advertise`), written into the
    /// Lease while it holds it; `None`: no standby can forward to it.
    pub cni_address: Option<String>,
}

/// The Lease annotation holding the holder's CNI address (`--cni-advertise`).
pub const LEADER_CNI_ANNOTATION: &str = "switchyard.io/cni-address";

/// Whether this replica leads, and the generation it is master of the switches with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This replica holds the Lease.
    pub leader: bool,
    /// The OpenFlow master generation id of this term (see [`switch_generation`]): `Some`
    /// while leading by election, `None` without election (no role is asked for) and on a
    /// standby.
    pub generation: Option<u64>,
}

impl Leadership {
    /// A controller without election (the cluster-file source): always the leader.
    pub fn sole() -> Leadership {
        Leadership {
            leader: true,
            generation: None,
        }
    }
}

/// `POD_NAME` (the Downward API) or the host name, plus a random suffix: a restarted pod of
/// the same name is another holder.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "switchyard".to_owned());
    let mut bytes = [0u8; 4];
    let suffix = match std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
    {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => std::process::id() ^ (Instant::now().elapsed().subsec_nanos()),
    };
    format!("{base}_{suffix:08x}")
}

/// What one try did.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease (created, taken over or renewed); its `leaseTransitions`.
    Holding(u64),
    /// Someone else holds it (or won the race: 409): its identity, and the CNI address it
    /// advertises (never our own).
    Standby {
        holder: Option<String>,
        cni: Option<String>,
    },
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// The OpenFlow master generation id of a term (OFPT_ROLE_REQUEST): it must grow with every
/// change of leader, because a switch refuses a master whose generation is older than one
/// it has seen (OFPRRFC_STALE) — that is what fences a deposed leader off. The Lease's
/// `leaseTransitions` grows with every change of holder, but starts again at 0 when the
/// Lease is deleted and created anew; its `metadata.creationTimestamp` (set by the API
/// server, never by a client) is then later. So: the creation time in seconds in the high
/// bits, the transitions in the low 24.
pub fn switch_generation(lease: &Lease, transitions: u64) -> u64 {
    let created = lease
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second().max(0) as u64)
        .unwrap_or(0);
    (created << 24) | (transitions & 0xff_ffff)
}

fn expired(spec: &LeaseSpec, fallback: Duration) -> bool {
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(fallback);
    match &spec.renew_time {
        None => true,
        Some(MicroTime(t)) => {
            let age = Timestamp::now().as_millisecond() - t.as_millisecond();
            age >= duration.as_millis() as i64
        }
    }
}

async fn attempt(api: &Api<Lease>, config: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let seconds = config.duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                annotations: config
                    .cni_address
                    .as_ref()
                    .map(|a| [(LEADER_CNI_ANNOTATION.to_owned(), a.clone())].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => Ok(Attempt::Holding(switch_generation(&created, 0))),
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                Ok(Attempt::Standby {
                    holder: None,
                    cni: None,
                })
            }
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let transitions = spec.lease_transitions.unwrap_or(0).max(0) as u64;
    let generation = match &holder {
        Some(h) if *h == config.identity => transitions,
        Some(_) if !expired(spec, config.duration) => {
            let cni = lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEADER_CNI_ANNOTATION))
                .filter(|a| !a.is_empty() && Some(*a) != config.cni_address.as_ref())
                .cloned();
            return Ok(Attempt::Standby { holder, cni });
        }
        _ => {
            // Free or expired: take it over.
            spec.holder_identity = Some(config.identity.clone());
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some((transitions + 1) as i32);
            transitions + 1
        }
    };
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(now());
    // The holder's CNI address: ours now (an earlier holder's must not stay).
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match &config.cni_address {
        Some(address) => {
            annotations.insert(LEADER_CNI_ANNOTATION.to_owned(), address.clone());
        }
        None => {
            annotations.remove(LEADER_CNI_ANNOTATION);
        }
    }
    // metadata.resourceVersion is the one read: a concurrent write makes this a 409.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(replaced) => Ok(Attempt::Holding(switch_generation(&replaced, generation))),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Attempt::Standby {
            holder: None,
            cni: None,
        }),
        Err(e) => Err(e),
    }
}

/// Runs the election until the process stops; publishes every change in `leadership`,
/// and in `leader_cni` the CNI address of the holder while this replica is its standby.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leadership: watch::Sender<Leadership>,
    leader_cni: watch::Sender<Option<String>>,
) {
    crate::source::assert_lease_calls_listed();
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let renew_every = config.duration / 3;
    let step_down_after = config.duration * 2 / 3;
    let mut last_renewal: Option<Instant> = None;
    let mut last_holder: Option<String> = None;
    let mut last_error: Option<String> = None;
    info!(lease = %format!("{}/{}", config.namespace, config.name), identity = %config.identity,
        duration_s = config.duration.as_secs(), "leader election: standby until the Lease is ours");
    loop {
        let started = Instant::now();
        let result = tokio::time::timeout(
            renew_every.max(Duration::from_secs(1)),
            attempt(&api, &config),
        )
        .await;
        let leading = leadership.borrow().leader;
        match result {
            Ok(Ok(Attempt::Holding(generation))) => {
                last_error = None;
                last_renewal = Some(started);
                leader_cni.send_if_modified(|a| a.take().is_some());
                if !leading {
                    info!(identity = %config.identity, generation, "leader election: took the Lease; \
                        this replica leads and programs the switches");
                    leadership.send_replace(Leadership {
                        leader: true,
                        generation: Some(generation),
                    });
                }
            }
            Ok(Ok(Attempt::Standby { holder, cni })) => {
                last_error = None;
                if leading {
                    warn!(holder = ?holder, "leader election: another replica holds the Lease; \
                        stepping down (agents stop, switch connections close)");
                    leadership.send_replace(Leadership {
                        leader: false,
                        generation: None,
                    });
                    last_renewal = None;
                }
                if holder.is_some() {
                    // A live holder's address (a lost race names none: the next try will).
                    leader_cni.send_if_modified(|a| {
                        let changed = *a != cni;
                        *a = cni.clone();
                        changed
                    });
                }
                if holder.is_some() && holder != last_holder {
                    info!(holder = ?holder, leader_cni = ?cni,
                        "leader election: standby (caches warm, programming nothing)");
                    last_holder = holder;
                }
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    warn!(error = %e, "leader election: cannot get or renew the Lease");
                    last_error = Some(e);
                }
            }
            Err(_) => {
                if last_error.as_deref() != Some("timeout") {
                    warn!(
                        "leader election: the API server did not answer within a third of the lease duration"
                    );
                    last_error = Some("timeout".into());
                }
            }
        }
        if leadership.borrow().leader && last_renewal.is_none_or(|t| t.elapsed() >= step_down_after)
        {
            warn!(identity = %config.identity, "leader election: could not renew the Lease in time; \
                stepping down at once (agents stop, switch connections close)");
            leadership.send_replace(Leadership {
                leader: false,
                generation: None,
            });
            leader_cni.send_if_modified(|a| a.take().is_some());
            last_renewal = None;
        }
        tokio::time::sleep(renew_every.saturating_sub(started.elapsed())).await;
    }
}

/// Gives the Lease up (empty `holderIdentity`) if this replica holds it: the standby takes
/// over at its next try. What SIGTERM does.
pub async fn release(client: Client, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(false);
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(false);
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(false);
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    api.replace(&config.name, &PostParams::default(), &lease)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration_since_renewal() {
        let mut spec = LeaseSpec {
            lease_duration_seconds: Some(15),
            renew_time: Some(now()),
            ..Default::default()
        };
        assert!(!expired(&spec, Duration::from_secs(15)));
        spec.renew_time = Some(MicroTime(
            Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(16),
        ));
        assert!(expired(&spec, Duration::from_secs(15)));
        spec.renew_time = None;
        assert!(expired(&spec, Duration::from_secs(15)));
    }

    #[test]
    fn identities_differ_between_two_processes_of_one_pod() {
        assert_ne!(default_identity(), default_identity());
    }
}
