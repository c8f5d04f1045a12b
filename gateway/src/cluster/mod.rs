//! Cluster mode: replicas behind one balancer behave as one gateway for what must be
//! cluster-wide — a ticket is used once across every replica (and across their restarts), and a
//! registry eviction or a learned owner reaches every replica.
//!
//! The shared state lives in Redis 7, reached with the `redis` crate (redis-rs: the maintained,
//! widely used async client; its multiplexed connection pipelines every task's commands over one
//! socket, and its pub/sub stream carries the registry changes). Nothing else is invented
//! between replicas.
//!
//! Redis trouble is defined: a command waits at most `timeout_ms`; while Redis cannot be
//! reached, a ticket's first use fails closed (`cluster.unavailable`, 503) so no ticket can be
//! used twice, while streams and everything else keep working. The connection is re-made on the
//! next command, a health check runs every second (`railgate_cluster_up`), and the registry
//! changes missed while the subscription was down are covered by dropping the registry cache
//! when it comes back.
//!
//! WebSocket presence crosses replicas the same way ([`presence`]): joins and leaves are
//! announced, every replica says it is alive every second, and the members of a replica not
//! heard of for [`presence::SILENCE`] leave.

pub mod events;
pub mod journal;
pub mod lease;
pub mod presence;

use crate::config::ClusterConfig;
use prometheus::IntGauge;
use railgate_policy::{Denial, ErrorCode};
use redis::aio::MultiplexedConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The connection to the cluster's Redis.
pub struct Cluster {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    /// This replica's id (random per process): its own published changes are not applied
    /// twice.
    pub node: String,
    up: AtomicBool,
    gauge: IntGauge,
}

impl Cluster {
    /// A cluster handle; nothing is connected until the first command.
    pub fn new(config: &ClusterConfig, gauge: IntGauge) -> Result<Arc<Cluster>, String> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| format!("cluster.redis_url: {e}"))?;
        Ok(Arc::new(Cluster {
            client,
            conn: tokio::sync::Mutex::new(None),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            node: crate::mint::random_hex_id(),
            up: AtomicBool::new(false),
            gauge,
        }))
    }

    /// Whether the last command (or health check) reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            match up {
                true => tracing::info!(target: "railgate::lifecycle", "cluster state reachable"),
                false => {
                    tracing::warn!(target: "railgate::lifecycle", "cluster state unreachable: tickets are refused until it is back")
                }
            }
        }
        self.gauge.set(i64::from(up));
    }

    /// The shared connection, made when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let made =
            tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
                .await
                .map_err(|_| "connecting timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        *slot = Some(made.clone());
        Ok(made)
    }

    /// Runs one command within the timeout; a failure drops the connection (the next command
    /// makes a new one) and marks the cluster down.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let result = async {
            let mut conn = self.connection().await?;
            tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn))
                .await
                .map_err(|_| "command timed out".to_owned())?
                .map_err(|e| e.to_string())
        }
        .await;
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        self.mark(result.is_ok());
        result
    }

    /// The health check: `PING`.
    pub async fn check(&self) {
        if let Err(e) = self.run::<String>(&redis::cmd("PING")).await {
            tracing::debug!(error = %e, "cluster health check failed");
        }
    }

    fn unavailable(e: String) -> Denial {
        tracing::warn!(error = %e, "cluster state unreachable; refusing a ticket's first use");
        Denial::with_message(
            ErrorCode::ClusterUnavailable,
            "cluster state is unreachable; tickets cannot be checked",
        )
    }

    fn ticket_key(&self, tid: &str) -> String {
        format!("{}ticket:{tid}", self.prefix)
    }

    /// Whether a ticket was used on any replica.
    pub async fn ticket_used(&self, tid: &str) -> Result<bool, Denial> {
        let cmd = redis::cmd("EXISTS").arg(self.ticket_key(tid)).clone();
        self.run::<i64>(&cmd)
            .await
            .map(|n| n > 0)
            .map_err(Self::unavailable)
    }

    /// Marks a ticket used, atomically (`SET NX`, expiring with the ticket at `exp`); `false`
    /// when another use got there first.
    pub async fn use_ticket(&self, tid: &str, exp: u64) -> Result<bool, Denial> {
        let cmd = redis::cmd("SET")
            .arg(self.ticket_key(tid))
            .arg(&self.node)
            .arg("NX")
            .arg("EXAT")
            .arg(exp.max(1))
            .clone();
        self.run::<Option<String>>(&cmd)
            .await
            .map(|set| set.is_some())
            .map_err(Self::unavailable)
    }

    /// The channel of a topic (`registry`, `presence`).
    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// Tells the other replicas of a registry change (best effort: a replica that misses it
    /// drops its cache when its subscription comes back).
    pub async fn publish(&self, change: &events::Change) {
        self.publish_on("registry", change).await
    }

    /// Tells the other replicas of presence news (best effort: a replica that misses some
    /// asks every replica for its members again when its subscription comes back).
    pub async fn announce(&self, news: &events::Presence) {
        self.publish_on("presence", news).await
    }

    async fn publish_on<T: serde::Serialize + Clone>(&self, topic: &str, news: &T) {
        let text = events::encode(&self.node, news);
        let cmd = redis::cmd("PUBLISH")
            .arg(self.channel(topic))
            .arg(text)
            .clone();
        if let Err(e) = self.run::<i64>(&cmd).await {
            tracing::debug!(topic, error = %e, "news not published to the cluster");
        }
    }
}
