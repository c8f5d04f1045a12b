//! The cluster's copy of each durable stream's journal: a Redis stream per (route, stream key)
//! (`<prefix>journal:<route>:<key>`), so a client that reconnects with `Last-Event-ID` to a
//! replica that never served it is replayed from there, and only what came after is asked of
//! the upstream.
//!
//! Every replica with a hub for the stream appends what it relays, in order, through one writer
//! task per hub. Each event id is written once, by whichever replica gets there first (a Lua
//! script: `SET … NX` on the id, then `XADD`), so the stream keeps the upstream's order without
//! duplicates. Events without an id cannot be resumed to and are not written. The stream is
//! capped like the local journal (`sse.journal_events`, approximately) and expires
//! `sse.journal_age` after its last write. A write that fails is dropped (the resume then falls
//! back to the upstream), never retried out of order.

use super::Cluster;
use crate::sse::Event;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

const APPEND: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[1], 'ev', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0";

/// Most entries one replay reads.
const REPLAY_MAX: usize = 100_000;

/// Where one stream's journal lives and how long it is kept.
#[derive(Clone)]
pub struct Place {
    /// Route name.
    pub route: String,
    /// Stream key (`Route::stream_key`).
    pub key: String,
    /// Most entries kept.
    pub max_events: usize,
    /// Seconds kept after the last write.
    pub age_s: u64,
}

impl Cluster {
    pub(super) fn journal_key(&self, place: &Place) -> String {
        format!("{}journal:{}:{}", self.prefix, place.route, place.key)
    }

    /// A writer for one hub's events: what is sent is appended in order by one task, which ends
    /// when the sender is dropped.
    pub fn journal_writer(self: &Arc<Self>, place: Place) -> mpsc::UnboundedSender<Arc<Event>> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Event>>();
        let cluster = self.clone();
        tokio::spawn(async move {
            let stream = cluster.journal_key(&place);
            while let Some(ev) = rx.recv().await {
                let Some(id) = ev.id.as_deref().filter(|i| !i.is_empty()) else {
                    continue;
                };
                let cmd = redis::cmd("EVAL")
                    .arg(APPEND)
                    .arg(2)
                    .arg(&stream)
                    .arg(format!("{stream}:id:{id}"))
                    .arg(id)
                    .arg(encode(&ev).to_string())
                    .arg(place.age_s.max(1))
                    .arg(place.max_events.max(1))
                    .clone();
                if let Err(e) = cluster.run::<i64>(&cmd).await {
                    tracing::debug!(error = %e, "event not written to the cluster journal");
                }
            }
        });
        tx
    }

    /// The events after `cursor` in the cluster's journal of `place`; `None` when the cursor is
    /// not there (or Redis cannot say).
    pub async fn journal_after(&self, place: &Place, cursor: &str) -> Option<Vec<Event>> {
        let cmd = redis::cmd("XRANGE")
            .arg(self.journal_key(place))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(REPLAY_MAX)
            .clone();
        let entries: Vec<(String, Vec<(String, String)>)> = self.run(&cmd).await.ok()?;
        let events: Vec<Event> = entries
            .iter()
            .filter_map(|(_, fields)| decode_entry(fields))
            .collect();
        let at = events
            .iter()
            .position(|e| e.id.as_deref() == Some(cursor))?;
        Some(events.into_iter().skip(at + 1).collect())
    }
}

/// The event of one journal entry's fields.
pub fn decode_entry(fields: &[(String, String)]) -> Option<Event> {
    let (_, ev) = fields.iter().find(|(k, _)| k == "ev")?;
    decode(&serde_json::from_str(ev).ok()?)
}

fn encode(ev: &Event) -> Value {
    json!({"event": ev.event.as_deref(), "data": ev.data, "id": ev.id.as_deref(), "retry": ev.retry, "last": &*ev.last_event_id})
}

fn decode(v: &Value) -> Option<Event> {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(Event {
        event: text("event").map(Arc::from),
        data: text("data"),
        id: text("id").map(Arc::from),
        retry: v.get("retry").and_then(Value::as_u64),
        last_event_id: text("last")?.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_journal_form() {
        let ev = Event {
            event: Some("chat_message".into()),
            data: Some("{\"a\":1}\nline".into()),
            id: Some("41".into()),
            retry: Some(3000),
            last_event_id: "41".into(),
        };
        assert_eq!(decode(&encode(&ev)), Some(ev));
        let bare = Event {
            last_event_id: "".into(),
            ..Event::default()
        };
        assert_eq!(decode(&encode(&bare)), Some(bare));
    }
}
