//! WebSocket presence across replicas. Each replica announces its members' joins and leaves,
//! says it is alive every second, and asks everyone to announce their members again whenever its
//! subscription is (re)made. Members of a replica not heard of for [`SILENCE`] leave, so the
//! members of a replica that died (or of every other replica while Redis is unreachable) are gone
//! within about `SILENCE` plus one presence window.

use super::events::{Heard, Presence as News};
use super::Cluster;
use crate::presence::{Member, Place, Presence};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a replica may be silent before its members leave.
pub const SILENCE: Duration = Duration::from_secs(3);

/// Announces a member of this replica joining `place` (cluster mode; nothing otherwise).
pub async fn joined(
    cluster: Option<&Cluster>,
    (tenant, env): (&str, &str),
    place: &Place,
    member: &Member,
) {
    let Some(cluster) = cluster else { return };
    let news = News::Join {
        tenant: tenant.to_owned(),
        env: env.to_owned(),
        place: place.clone(),
        member: member.clone(),
    };
    cluster.announce(&news).await;
}

/// Announces a member of this replica leaving `place` (cluster mode; nothing otherwise).
pub async fn left(
    cluster: Option<&Cluster>,
    (tenant, env): (&str, &str),
    place: &Place,
    session: u64,
) {
    let Some(cluster) = cluster else { return };
    let news = News::Leave {
        tenant: tenant.to_owned(),
        env: env.to_owned(),
        place: place.clone(),
        session,
    };
    cluster.announce(&news).await;
}

/// Runs the exchange for `presence` for the life of the process.
pub fn spawn(cluster: Arc<Cluster>, presence: Arc<Presence>) {
    let (tx, mut rx) = mpsc::channel(4096);
    let follower = cluster.clone();
    tokio::spawn(async move { follower.follow::<News>("presence", tx).await });
    tokio::spawn(async move {
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                heard = rx.recv() => match heard {
                    Some(h) => apply(&cluster, &presence, &mut seen, h).await,
                    None => return,
                },
                _ = tick.tick() => {
                    cluster.announce(&News::Alive).await;
                    let now = Instant::now();
                    seen.retain(|node, at| {
                        let alive = now.duration_since(*at) < SILENCE;
                        if !alive {
                            tracing::info!(replica = %node, "a replica fell silent; its members leave");
                            presence.drop_origin(Some(node));
                        }
                        alive
                    });
                }
            }
        }
    });
}

async fn apply(
    cluster: &Cluster,
    presence: &Arc<Presence>,
    seen: &mut HashMap<String, Instant>,
    heard: Heard<News>,
) {
    let (node, news) = match heard {
        Heard::Subscribed => {
            // What was missed is unknown: start over from everyone's members.
            presence.drop_origin(None);
            seen.clear();
            cluster.announce(&News::Sync).await;
            return announce_all(cluster, presence).await;
        }
        Heard::News(node, news) => (node, news),
    };
    seen.insert(node.clone(), Instant::now());
    match news {
        News::Join {
            tenant,
            env,
            place,
            member,
        } => presence.join_remote(&node, (tenant, env, place), member),
        News::Leave {
            tenant,
            env,
            place,
            session,
        } => presence.leave_remote(&node, (tenant, env, place), session),
        News::Alive => {}
        News::Sync => announce_all(cluster, presence).await,
    }
}

async fn announce_all(cluster: &Cluster, presence: &Presence) {
    for ((tenant, env, place), member) in presence.local_members() {
        joined(Some(cluster), (&tenant, &env), &place, &member).await;
    }
}
