//! Cluster mode's shared SSE streams: one upstream stream per thread per cluster. The replica
//! holding the thread's lease reads the upstream like a single node ([`sse_upstream`]) and
//! writes what it relays to the cluster's journal; every other replica with clients on the
//! thread feeds them from that journal. A follower tries for the lease every half second, so
//! when the holder dies another replica reads the upstream within about
//! [`LEASE`](crate::cluster::lease::LEASE) plus half a second, resuming after the last event it
//! relayed: its clients see no gap and no duplicate.
//!
//! A follower takes the journal's events only while each follows on from the last one it took:
//! at a break (the journal misses events there, see [`crate::cluster::journal`]) it reads the
//! upstream itself from its last event, like a replica whose last event the journal lacks.
//!
//! While Redis cannot be reached, every replica reads the upstream itself (streams go on; the
//! cluster briefly has one upstream stream per replica). When it is back, one takes the lease and
//! the others follow again — except a replica whose last relayed event the journal does not hold
//! (it was relayed during the outage): following from the journal could skip events, so it keeps
//! reading the upstream itself until the thread's clients leave.

use crate::app::Gateway;
use crate::cluster::journal::{Append, Mirror, Place};
use crate::cluster::lease::{JournalReader, LEASE};
use crate::cluster::Cluster;
use crate::proxy::sse_hub::Hub;
use crate::proxy::sse_upstream::{self, UpstreamSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a follower waits on the journal before trying for the lease again.
const FOLLOW: Duration = Duration::from_millis(500);

/// Feeds a shared hub in cluster mode until it has no client left.
pub async fn run(
    gw: Arc<Gateway>,
    hub: Arc<Hub>,
    spec: Arc<UpstreamSpec>,
    cluster: Arc<Cluster>,
    place: Place,
) {
    hub.mirror.set(Append::Off);
    let mut reader = JournalReader::new(&cluster, &place);
    let mut own = !reader.resync(hub.last_id().as_deref()).await;
    hub.placement.placed();
    let done = |hub: &Arc<Hub>| hub.is_empty() && gw.hubs.try_remove(hub);
    while !gw.draining.is_started() && !done(&hub) {
        let lease = match own {
            true => Lease::Never,
            false => match cluster.acquire(&place).await {
                Some(true) => Lease::Held,
                None => Lease::Unknown,
                Some(false) => {
                    let read = reader.next(FOLLOW).await;
                    if !read.events.is_empty() {
                        hub.deliver(read.events, Instant::now());
                    }
                    if read.broken {
                        tracing::warn!(route = %place.route, thread_id = %hub.thread, "the cluster's journal misses events after the last one relayed here; reading the upstream stream from there");
                        own = true;
                    }
                    continue;
                }
            },
        };
        lead(&gw, &hub, &spec, (&cluster, &place), lease).await;
        // Its own last writes first: the journal then holds its last event unless it could not.
        hub.mirror.flush(LEASE).await;
        own = own || !reader.resync(hub.last_id().as_deref()).await;
    }
    cluster.release(&place).await;
}

/// Why a replica reads the upstream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// It holds the thread's lease.
    Held,
    /// Redis cannot be reached: nobody can hold it.
    Unknown,
    /// The journal cannot place this hub: it reads the upstream itself for good.
    Never,
}

impl Lease {
    /// How the events read join the cluster's journal: the holder's whatever it holds, others'
    /// only as its next ones.
    fn append(self) -> Append {
        match self {
            Lease::Held => Append::Always,
            Lease::Unknown | Lease::Never => Append::IfNext,
        }
    }
}

/// Reads the upstream while the lease holds, or while Redis cannot say (or for good).
async fn lead(
    gw: &Arc<Gateway>,
    hub: &Arc<Hub>,
    spec: &UpstreamSpec,
    (cluster, place): (&Cluster, &Place),
    lease: Lease,
) {
    if lease == Lease::Held {
        tracing::info!(route = %place.route, thread_id = %hub.thread, "this replica now reads the upstream stream for the cluster");
    }
    let held = gw.metrics.cluster_upstreams();
    held.inc();
    hub.mirror.set(lease.append());
    tokio::select! {
        _ = sse_upstream::run_once(gw, hub, spec, None) => {}
        _ = keep(cluster, place, lease, &hub.mirror) => {
            tracing::info!(route = %place.route, thread_id = %hub.thread, "another replica reads the upstream stream; following the cluster's journal");
        }
    }
    hub.mirror.set(Append::Off);
    held.dec();
}

/// Returns once another replica is known to hold the lease; renews it while this one does, and
/// takes it when Redis answers again after an outage.
async fn keep(cluster: &Cluster, place: &Place, mut lease: Lease, mirror: &Mirror) {
    loop {
        mirror.set(lease.append());
        tokio::time::sleep(LEASE / 4).await;
        lease = match lease {
            Lease::Never => continue,
            Lease::Held => match cluster.renew(place).await {
                Some(true) => Lease::Held,
                Some(false) => return,
                None => Lease::Unknown,
            },
            Lease::Unknown => match cluster.acquire(place).await {
                Some(true) => Lease::Held,
                Some(false) => return,
                None => Lease::Unknown,
            },
        };
    }
}
