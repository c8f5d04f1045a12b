//! Registry changes between replicas: what one replica publishes when an operator evicts a
//! cached owner or a `registers_thread` answer teaches it one, and the subscription that hands
//! the other replicas' changes to the caller.

use super::Cluster;
use futures_util::StreamExt;
use railgate_policy::thread::ThreadRecord;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;

/// One registry change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Drop the cached owner under this registry key.
    Forget {
        /// The registry key (`crate::registry::key`).
        key: String,
    },
    /// The resource now belongs to `record` (learned from a `registers_thread` answer).
    Learn {
        /// Its kind.
        kind: String,
        /// Its id.
        id: String,
        /// Its owner.
        record: ThreadRecord,
    },
}

/// What the subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Another replica's change.
    Change(Change),
    /// The subscription is (again) in place: changes published while it was not were missed.
    Subscribed,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    change: Change,
}

/// The wire form of a change published by `node`.
pub fn encode(node: &str, change: &Change) -> String {
    serde_json::to_string(&Envelope {
        node: node.to_owned(),
        change: change.clone(),
    })
    .unwrap_or_default()
}

/// The change in `text`, unless it is this replica's own (or unreadable).
pub fn decode(node: &str, text: &str) -> Option<Change> {
    let env: Envelope = serde_json::from_str(text).ok()?;
    (env.node != node).then_some(env.change)
}

impl Cluster {
    /// Follows the other replicas' registry changes into `tx` until it closes, re-subscribing
    /// after any failure (every second).
    pub async fn follow(&self, tx: mpsc::Sender<Heard>) {
        while !tx.is_closed() {
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    if tx.send(Heard::Subscribed).await.is_err() {
                        return;
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        if let Some(change) = decode(&self.node, &text) {
                            if tx.send(Heard::Change(change)).await.is_err() {
                                return;
                            }
                        }
                    }
                    tracing::warn!("cluster subscription ended; subscribing again");
                }
                Err(e) => tracing::debug!(error = %e, "cluster subscription failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let sub = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        tokio::time::timeout(self.timeout, sub)
            .await
            .map_err(|_| "subscribing timed out".to_owned())?
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_a_replica_ignores_its_own() {
        let learn = Change::Learn {
            kind: "canvas".into(),
            id: "cv_1".into(),
            record: ThreadRecord {
                tenant_id: "t_a".into(),
                env: "dev".into(),
                project_id: None,
                disabled_routes: Vec::new(),
            },
        };
        let text = encode("n1", &learn);
        assert_eq!(decode("n2", &text), Some(learn));
        assert_eq!(decode("n1", &text), None);
        let forget = encode("n1", &Change::Forget { key: "th_1".into() });
        assert_eq!(forget, r#"{"node":"n1","op":"forget","key":"th_1"}"#);
        assert_eq!(decode("n1", "not json"), None);
    }
}
