//! What replicas tell each other over Redis pub/sub, and the subscription that hands the other
//! replicas' news to the caller: registry changes (an operator evicts a cached owner, a
//! `registers_thread` answer teaches one) on `<prefix>registry`, and WebSocket presence on
//! `<prefix>presence`.

use super::Cluster;
use crate::presence::{Member, Place};
use futures_util::StreamExt;
use railgate_policy::thread::ThreadRecord;
use serde::de::DeserializeOwned;
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

/// News of WebSocket presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Presence {
    /// A member joined a room on the sending replica.
    Join {
        /// Tenant.
        tenant: String,
        /// Env.
        env: String,
        /// Place.
        place: Place,
        /// The member.
        member: Member,
    },
    /// A member of the sending replica left.
    Leave {
        /// Tenant.
        tenant: String,
        /// Env.
        env: String,
        /// Place.
        place: Place,
        /// Its session on the sending replica.
        session: u64,
    },
    /// The sending replica is alive (every second); its members leave when this stops.
    Alive,
    /// The sending replica (re)subscribed: every replica announces its members again.
    Sync,
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard<T> {
    /// Another replica's news, and that replica.
    News(String, T),
    /// The subscription is (again) in place: news published while it was not were missed.
    Subscribed,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    node: String,
    #[serde(flatten)]
    news: T,
}

/// The wire form of news published by `node`.
pub fn encode<T: Serialize + Clone>(node: &str, news: &T) -> String {
    serde_json::to_string(&Envelope {
        node: node.to_owned(),
        news: news.clone(),
    })
    .unwrap_or_default()
}

/// The news in `text` and who sent it, unless it is this replica's own (or unreadable).
pub fn decode<T: DeserializeOwned>(node: &str, text: &str) -> Option<(String, T)> {
    let env: Envelope<T> = serde_json::from_str(text).ok()?;
    (env.node != node).then_some((env.node, env.news))
}

impl Cluster {
    /// Follows the other replicas' news on `topic` (`registry`, `presence`) into `tx` until it
    /// closes, re-subscribing after any failure (every second).
    pub async fn follow<T: DeserializeOwned + Send>(
        &self,
        topic: &str,
        tx: mpsc::Sender<Heard<T>>,
    ) {
        while !tx.is_closed() {
            match self.subscribe(topic).await {
                Ok(mut pubsub) => {
                    if tx.send(Heard::Subscribed).await.is_err() {
                        return;
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        if let Some((node, news)) = decode::<T>(&self.node, &text) {
                            if tx.send(Heard::News(node, news)).await.is_err() {
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

    async fn subscribe(&self, topic: &str) -> Result<redis::aio::PubSub, String> {
        let sub = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.channel(topic)).await?;
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
        assert_eq!(decode("n2", &text), Some(("n1".to_owned(), learn)));
        assert_eq!(decode::<Change>("n1", &text), None);
        let forget = encode("n1", &Change::Forget { key: "th_1".into() });
        assert_eq!(forget, r#"{"node":"n1","op":"forget","key":"th_1"}"#);
        assert_eq!(decode::<Change>("n2", "not json"), None);
        let alive = encode("n1", &Presence::Alive);
        assert_eq!(alive, r#"{"node":"n1","op":"alive"}"#);
        assert_eq!(
            decode("n2", &alive),
            Some(("n1".to_owned(), Presence::Alive))
        );
    }
}
