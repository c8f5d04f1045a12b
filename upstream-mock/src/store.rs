//! Threads and messages, in memory, optionally backed by the durable log.
//!
//! Sequence numbers come from the stored history (replayed at start-up), never from a counter
//! that a restart would reset. With a log, a record becomes visible only after its batch is
//! fsync'd, so an event a client has seen always survives `kill -9`.

use crate::log::{self, Pending, Record};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// A thread's ownership record and title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadInfo {
    /// Id.
    pub id: String,
    /// Owner tenant.
    pub tenant_id: String,
    /// Owner env.
    pub env: String,
    /// Title.
    pub title: String,
    /// Owner project.
    pub project_id: Option<String>,
}

/// One stored message with its pre-rendered wire forms (rendered once, sent to every subscriber).
#[derive(Debug)]
pub struct Message {
    /// Per-thread sequence number (1, 2, 3, ...).
    pub seq: u64,
    /// The message as JSON (the `GET .../messages` form and the WS text form).
    pub json: Value,
    /// `event: chat_message\nid: <seq>\ndata: <json>\n\n`.
    pub sse: Bytes,
    /// The WS text message.
    pub ws: Bytes,
}

struct ThreadState {
    info: ThreadInfo,
    messages: Vec<Arc<Message>>,
    /// Next seq to hand out; ahead of `messages.len() + 1` while a batch is being made durable.
    next_seq: u64,
    latest: watch::Sender<u64>,
}

enum Enqueued {
    Applied,
    Waiting(oneshot::Receiver<io::Result<()>>),
    Failed,
}

/// Why an append failed.
#[derive(Debug)]
pub enum StoreError {
    /// No such thread.
    NotFound,
    /// The log could not be written; the store refuses further writes.
    Io(io::Error),
}

/// The store.
pub struct Store {
    threads: Mutex<HashMap<String, ThreadState>>,
    writer: OnceLock<mpsc::Sender<Pending>>,
    failed: std::sync::atomic::AtomicBool,
}

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Store {
    /// A memory-only store.
    pub fn in_memory() -> Arc<Store> {
        Arc::new(Store {
            threads: Mutex::new(HashMap::new()),
            writer: OnceLock::new(),
            failed: Default::default(),
        })
    }

    /// A store backed by `dir`: recovers the log (dropping a torn tail) and starts the writer.
    pub fn open(dir: &Path) -> io::Result<(Arc<Store>, u64)> {
        let (recovered, file) = log::open(dir)?;
        let store = Store::in_memory();
        store.apply(&recovered.records);
        let weak: Weak<Store> = Arc::downgrade(&store);
        let tx = log::spawn_writer(file, move |recs| {
            if let Some(s) = weak.upgrade() {
                s.apply(recs);
            }
        })?;
        let _ = store.writer.set(tx);
        Ok((store, recovered.truncated_bytes))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ThreadState>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // more than stopping the mock would; keep serving.
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes records visible, in order (replay and durable batches).
    fn apply(&self, records: &[Record]) {
        let mut threads = self.lock();
        for rec in records {
            match rec {
                Record::Thread {
                    id,
                    tenant_id,
                    env,
                    title,
                    project_id,
                } => {
                    let info = ThreadInfo {
                        id: id.clone(),
                        tenant_id: tenant_id.clone(),
                        env: env.clone(),
                        title: title.clone(),
                        project_id: project_id.clone(),
                    };
                    threads.entry(id.clone()).or_insert_with(|| ThreadState {
                        info,
                        messages: Vec::new(),
                        next_seq: 1,
                        latest: watch::channel(0).0,
                    });
                }
                Record::Message {
                    thread_id,
                    seq,
                    text,
                    sent_at_us,
                    routing,
                } => {
                    let Some(t) = threads.get_mut(thread_id) else {
                        continue;
                    };
                    if *seq != t.messages.len() as u64 + 1 {
                        continue;
                    }
                    t.messages.push(Arc::new(render(
                        thread_id,
                        *seq,
                        text,
                        *sent_at_us,
                        routing,
                    )));
                    t.next_seq = t.next_seq.max(seq + 1);
                    t.latest.send_replace(*seq);
                }
            }
        }
    }

    /// Queues `rec` for the log while the map lock is still held (so log order is seq order),
    /// or applies it at once without a log. Synchronous: the guard never crosses an await.
    fn enqueue(
        &self,
        rec: Record,
        guard: MutexGuard<'_, HashMap<String, ThreadState>>,
    ) -> Enqueued {
        let Some(writer) = self.writer.get() else {
            drop(guard);
            self.apply(std::slice::from_ref(&rec));
            return Enqueued::Applied;
        };
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Enqueued::Failed;
        }
        let (done, wait) = oneshot::channel();
        let sent = writer.send(Pending { record: rec, done });
        drop(guard);
        match sent {
            Ok(()) => Enqueued::Waiting(wait),
            Err(_) => Enqueued::Failed,
        }
    }

    async fn persist(&self, queued: Enqueued) -> Result<(), StoreError> {
        let wait = match queued {
            Enqueued::Applied => return Ok(()),
            Enqueued::Failed => return Err(StoreError::Io(io::Error::other("log writer failed"))),
            Enqueued::Waiting(w) => w,
        };
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Err(StoreError::Io(e))
            }
            Err(_) => Err(StoreError::Io(io::Error::other("log writer stopped"))),
        }
    }

    /// Creates a thread with a fresh random id.
    pub async fn create_thread(
        &self,
        tenant_id: &str,
        env: &str,
        title: &str,
        project_id: Option<&str>,
    ) -> Result<ThreadInfo, StoreError> {
        let id = format!("th_{:016x}", rand::random::<u64>());
        let rec = Record::Thread {
            id: id.clone(),
            tenant_id: tenant_id.into(),
            env: env.into(),
            title: title.into(),
            project_id: project_id.map(String::from),
        };
        let queued = self.enqueue(rec, self.lock());
        self.persist(queued).await?;
        self.thread(&id).ok_or(StoreError::NotFound)
    }

    /// Appends a message and returns it once durable and visible.
    pub async fn append(
        &self,
        thread_id: &str,
        text: String,
        routing: Option<Value>,
    ) -> Result<Arc<Message>, StoreError> {
        let (seq, queued) = {
            let mut guard = self.lock();
            let t = guard.get_mut(thread_id).ok_or(StoreError::NotFound)?;
            let seq = t.next_seq;
            t.next_seq += 1;
            let rec = Record::Message {
                thread_id: thread_id.into(),
                seq,
                text,
                sent_at_us: now_us(),
                routing,
            };
            (seq, self.enqueue(rec, guard))
        };
        self.persist(queued).await?;
        let threads = self.lock();
        threads
            .get(thread_id)
            .and_then(|t| t.messages.get(seq as usize - 1).cloned())
            .ok_or(StoreError::NotFound)
    }

    /// A thread's record.
    pub fn thread(&self, id: &str) -> Option<ThreadInfo> {
        self.lock().get(id).map(|t| t.info.clone())
    }

    /// The last visible seq (0 when empty).
    pub fn last_seq(&self, id: &str) -> Option<u64> {
        self.lock().get(id).map(|t| t.messages.len() as u64)
    }

    /// Up to `max` messages after `seq`.
    pub fn after(&self, id: &str, seq: u64, max: usize) -> Option<Vec<Arc<Message>>> {
        let threads = self.lock();
        let t = threads.get(id)?;
        let start = (seq as usize).min(t.messages.len());
        let end = start.saturating_add(max).min(t.messages.len());
        Some(t.messages[start..end].to_vec())
    }

    /// Wakes when the thread's last seq changes.
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.lock().get(id).map(|t| t.latest.subscribe())
    }
}

fn render(
    thread_id: &str,
    seq: u64,
    text: &str,
    sent_at_us: u64,
    routing: &Option<Value>,
) -> Message {
    let mut body = json!({
        "type": "chat_message",
        "thread_id": thread_id,
        "seq": seq,
        "text": text,
        "sent_at_us": sent_at_us,
    });
    if let Some(r) = routing {
        body["routing"] = r.clone();
    }
    let data = body.to_string();
    let sse = Bytes::from(format!("event: chat_message\nid: {seq}\ndata: {data}\n\n"));
    let mut ws_body = body.clone();
    if let Some(obj) = ws_body.as_object_mut() {
        obj.insert("id".into(), Value::String(seq.to_string()));
    }
    let ws = Bytes::from(ws_body.to_string());
    Message {
        seq,
        json: ws_body,
        sse,
        ws,
    }
}
