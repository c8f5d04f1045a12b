//! The cluster's copy of each durable stream's journal: a Redis stream per (route, stream key)
//! (`<prefix>journal:<route>:<key>`), so a client that reconnects with `Last-Event-ID` to a
//! replica that never served it is replayed from there, and only what came after is asked of
//! the upstream.
//!
//! Every replica with a hub for the stream appends what it relays, in order, through one writer
//! task per hub ([`Mirror`]). Each entry carries the id of the event its stream delivered before
//! it (`prev`), and each event id is written once, by whichever replica gets there first (a Lua
//! script: the id's marker, `SET … NX`, then `XADD`). The journal has no hole: an event whose
//! `prev` is not the journal's last event is left out ([`Append::IfNext`]: a stream resumed
//! after a cursor the journal does not hold yet, or one whose earlier write failed) — except
//! from the replica holding the thread's lease ([`Append::Always`]), whose stream is the
//! cluster's; a follower that meets an entry not following on from the last one it took
//! ([`follow`]), and a replay, stop there instead of skipping what is missing. The holder's
//! first event when its stream starts from now (none before it) starts the journal afresh, like
//! the local journal; another replica's is left out, so that streams joining a busy thread of a
//! route without `share_upstream` do not cut the journal short.
//! Events without an id cannot be resumed to and are not written. The stream is capped like
//! the local journal (`sse.journal_events`, approximately) and expires `sse.journal_age` after
//! its last write. A write that fails is dropped, never retried out of order.

use super::Cluster;
use crate::sse::Event;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const APPEND: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last and last[2][2] ~= ARGV[5] then
  if ARGV[6] == '0' then return -1 end
  if ARGV[5] == '' then redis.call('DEL', KEYS[1]) end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[1], 'prev', ARGV[5], 'ev', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1";

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

/// How a hub's events join the cluster's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// Only as the journal's next event (or the first of an empty journal).
    IfNext = 0,
    /// Not at all: the hub follows the journal.
    Off = 1,
    /// Always: the hub holds the thread's lease.
    Always = 2,
}

/// What a hub's writer task is sent.
enum ToJournal {
    /// An event.
    Event(Mirrored),
    /// Answered once every event sent before it is written or left out.
    Flush(oneshot::Sender<()>),
}

/// One event on its way to the cluster's journal.
struct Mirrored {
    /// The id of the event the hub delivered before it (`None`: the hub's first).
    prev: Option<Arc<str>>,
    event: Arc<Event>,
    append: Append,
}

/// A hub's way into the cluster's journal: its writer (set once, in cluster mode) and how its
/// events join ([`Append`]; [`Append::IfNext`] until told otherwise).
#[derive(Default)]
pub struct Mirror {
    writer: OnceLock<mpsc::UnboundedSender<ToJournal>>,
    append: AtomicU8,
}

impl Mirror {
    /// Writes through `writer` ([`Cluster::journal_writer`]) from now on.
    pub fn to(&self, writer: JournalWriter) {
        let _ = self.writer.set(writer.0);
    }

    /// How the events sent from now on join the journal.
    pub fn set(&self, append: Append) {
        self.append.store(append as u8, Ordering::Relaxed);
    }

    /// Sends `event` to the journal (in cluster mode, unless off) as the successor of `chain`,
    /// the id of the event the hub passed before it, which moves to `event`'s.
    pub fn send(&self, chain: &mut Option<Arc<str>>, event: &Arc<Event>) {
        let Some(writer) = self.writer.get() else {
            return;
        };
        let Some(id) = event.id.as_ref().filter(|i| !i.is_empty()) else {
            return;
        };
        let prev = chain.replace(id.clone());
        let append = match self.append.load(Ordering::Relaxed) {
            0 => Append::IfNext,
            2 => Append::Always,
            _ => return,
        };
        let _ = writer.send(ToJournal::Event(Mirrored {
            prev,
            event: event.clone(),
            append,
        }));
    }

    /// Waits, at most `wait`, until every event sent before is written or left out.
    pub async fn flush(&self, wait: Duration) {
        let Some(writer) = self.writer.get() else {
            return;
        };
        let (done, written) = oneshot::channel();
        if writer.send(ToJournal::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(wait, written).await;
        }
    }
}

/// The sending side of one hub's journal writer.
pub struct JournalWriter(mpsc::UnboundedSender<ToJournal>);

/// Whether an entry written after `prev` follows on from `chain`, the id of the last event taken
/// from the journal (`None`: nothing taken yet). An entry without `prev` (written by an earlier
/// version) is taken as following.
fn follows(chain: Option<&str>, prev: Option<&str>) -> bool {
    match (chain, prev) {
        (Some(c), Some(p)) => c == p,
        _ => true,
    }
}

impl Cluster {
    pub(super) fn journal_key(&self, place: &Place) -> String {
        format!("{}journal:{}:{}", self.prefix, place.route, place.key)
    }

    /// A writer for one hub's events: what is sent is appended in order by one task, which ends
    /// when the sender is dropped.
    pub fn journal_writer(self: &Arc<Self>, place: Place) -> JournalWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<ToJournal>();
        let cluster = self.clone();
        tokio::spawn(async move {
            let stream = cluster.journal_key(&place);
            while let Some(sent) = rx.recv().await {
                match sent {
                    ToJournal::Event(m) => cluster.append(&stream, &place, m).await,
                    ToJournal::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        JournalWriter(tx)
    }

    async fn append(&self, stream: &str, place: &Place, m: Mirrored) {
        let Some(id) = m.event.id.as_deref().filter(|i| !i.is_empty()) else {
            return;
        };
        let cmd = redis::cmd("EVAL")
            .arg(APPEND)
            .arg(2)
            .arg(stream)
            .arg(format!("{stream}:id:{id}"))
            .arg(id)
            .arg(encode(&m.event).to_string())
            .arg(place.age_s.max(1))
            .arg(place.max_events.max(1))
            .arg(m.prev.as_deref().unwrap_or(""))
            .arg(u8::from(m.append == Append::Always))
            .clone();
        match self.run::<i64>(&cmd).await {
            Err(e) => tracing::debug!(error = %e, "event not written to the cluster journal"),
            Ok(-1) => tracing::debug!(
                id,
                "event left out of the cluster journal: it does not follow the journal's last one"
            ),
            Ok(_) => {}
        }
    }

    /// The events after `cursor` in the cluster's journal of `place`, up to a break (an entry not
    /// following on from the one before it: what is missing there comes from the upstream);
    /// `None` when the cursor is not there (or Redis cannot say).
    pub async fn journal_after(&self, place: &Place, cursor: &str) -> Option<Vec<Event>> {
        let cmd = redis::cmd("XRANGE")
            .arg(self.journal_key(place))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(REPLAY_MAX)
            .clone();
        let entries: Vec<(String, Vec<(String, String)>)> = self.run(&cmd).await.ok()?;
        let mut entries = entries.iter().map(|(_, fields)| fields);
        entries.find(|f| entry_field(f, "id") == Some(cursor))?;
        let mut chain = Some(cursor.to_owned());
        let mut out = Vec::new();
        for fields in entries {
            match follow(&mut chain, fields) {
                Step::Take(ev) => out.push(ev),
                Step::Skip => {}
                Step::Break => break,
            }
        }
        Some(out)
    }
}

/// What following the journal does with one entry ([`follow`]).
pub enum Step {
    /// Its event, which follows on from the last one taken.
    Take(Event),
    /// Nothing: the entry cannot be read.
    Skip,
    /// A break: the entry does not follow on from the last event taken.
    Break,
}

/// Takes the entry with `fields` as the next after `chain`, the id of the last event taken
/// (`None`: nothing taken yet), which then moves to the entry's id; at a break `chain` stays.
pub fn follow(chain: &mut Option<String>, fields: &[(String, String)]) -> Step {
    let Some(ev) = decode_entry(fields) else {
        return Step::Skip;
    };
    if !follows(chain.as_deref(), entry_field(fields, "prev")) {
        return Step::Break;
    }
    if let Some(id) = ev.id.as_deref() {
        *chain = Some(id.to_owned());
    }
    Step::Take(ev)
}

/// The event of one journal entry's fields.
fn decode_entry(fields: &[(String, String)]) -> Option<Event> {
    let (_, ev) = fields.iter().find(|(k, _)| k == "ev")?;
    decode(&serde_json::from_str(ev).ok()?)
}

/// One field of a journal entry: `id` (the event's id, also inside `ev`), `prev` (the id of the
/// event written before it; `""`: none; absent in entries of earlier versions) or `ev`.
pub fn entry_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
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

    #[test]
    fn an_entry_follows_on_only_from_the_event_it_names_as_its_predecessor() {
        let fields = |prev: Option<&str>| {
            let mut f = vec![("id".to_owned(), "21".to_owned())];
            f.extend(prev.map(|p| ("prev".to_owned(), p.to_owned())));
            f.push(("ev".to_owned(), "{}".to_owned()));
            f
        };
        let after_20 = fields(Some("20"));
        assert_eq!(entry_field(&after_20, "prev"), Some("20"));
        assert!(follows(Some("20"), entry_field(&after_20, "prev")));
        assert!(
            !follows(Some("19"), entry_field(&after_20, "prev")),
            "20 is missing: a break"
        );
        assert!(
            follows(None, entry_field(&after_20, "prev")),
            "nothing taken yet"
        );
        let first = fields(Some(""));
        assert!(
            !follows(Some("19"), entry_field(&first, "prev")),
            "a stream's first event after 19: a break"
        );
        assert!(
            follows(Some("19"), entry_field(&fields(None), "prev")),
            "an entry written without `prev` by an earlier version"
        );
    }
}
