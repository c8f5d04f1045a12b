//! Cluster mode's shared SSE streams: one upstream stream per thread per cluster. The replica
//! holding the thread's lease reads the upstream like a single node ([`sse_upstream`]) and
//! writes what it relays to the cluster's journal; every other replica with clients on the
//! thread feeds them from that journal. A follower tries for the lease every half second, so
//! when the holder dies another replica reads the upstream within about
//! [`LEASE`](crate::cluster::lease::LEASE) plus half a second, resuming after the last event it
//! relayed: its clients see no gap and no duplicate.

use crate::app::Gateway;
use crate::cluster::journal::Place;
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
    spec: UpstreamSpec,
    cluster: Arc<Cluster>,
    place: Place,
) {
    hub.set_mirroring(false);
    let mut reader = JournalReader::new(&cluster, &place);
    reader.resync(hub.last_id().as_deref()).await;
    let done = |hub: &Arc<Hub>| hub.is_empty() && gw.hubs.try_remove(hub);
    while !gw.draining.is_cancelled() && !done(&hub) {
        if cluster.acquire(&place).await {
            lead(&gw, &hub, &spec, &cluster, &place).await;
            reader.resync(hub.last_id().as_deref()).await;
            continue;
        }
        let events = reader.next(FOLLOW).await;
        if !events.is_empty() {
            hub.deliver(events, Instant::now());
        }
    }
    cluster.release(&place).await;
}

/// Reads the upstream while the lease holds (and the hub has clients).
async fn lead(
    gw: &Arc<Gateway>,
    hub: &Arc<Hub>,
    spec: &UpstreamSpec,
    cluster: &Cluster,
    place: &Place,
) {
    tracing::info!(route = %place.route, thread_id = %hub.thread, "this replica now reads the upstream stream for the cluster");
    let held = gw.metrics.cluster_leases();
    held.inc();
    hub.set_mirroring(true);
    tokio::select! {
        _ = sse_upstream::run_once(gw, hub, spec, None) => {}
        _ = keep(cluster, place) => {
            tracing::warn!(route = %place.route, thread_id = %hub.thread, "lease lost; following the cluster's journal");
        }
    }
    hub.set_mirroring(false);
    held.dec();
}

/// Renews the lease every quarter of its length; returns when it is lost.
async fn keep(cluster: &Cluster, place: &Place) {
    loop {
        tokio::time::sleep(LEASE / 4).await;
        if !cluster.renew(place).await {
            return;
        }
    }
}
