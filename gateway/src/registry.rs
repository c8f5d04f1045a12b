//! Ownership registry: which tenant and env own a resource — a thread, or another kind a route
//! declares (`resource_kind`, e.g. `canvas`). Each kind is asked at its own address
//! (`GET {url}/registry/{plural}/{id}`: `threads`, `canvases`, see [`plural`]) or read from the file's records of that `kind`; threads are
//! cached under their id, other kinds under `{kind}/{id}`.
//!
//! Answers are cached ([`TimedCache`]): positive for `ttl`, "not found" for `negative_ttl`;
//! concurrent misses for one id make a single lookup, and share its answer or its failure. A
//! record that expired is kept `stale_if_error` longer and used only when the source fails. With
//! nothing usable the lookup fails closed (`registry.unavailable`).

use crate::client::HttpClient;
use crate::config::{RegistryConfig, RegistrySource};
use crate::metrics::{Lookup, Metrics};
use crate::timed_cache::TimedCache;
use railgate_policy::thread::ThreadRecord;
use railgate_policy::{Denial, ErrorCode};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The owner (shared with every request that reads it: no copy per request).
    Found(Arc<ThreadRecord>),
    /// The source says no such thread.
    NotFound,
}

#[derive(Deserialize)]
struct FileEntry {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    thread_id: Option<String>,
    tenant_id: String,
    env: String,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    disabled_routes: Vec<String>,
}

type FileMap = Arc<HashMap<String, ThreadRecord>>;

enum Source {
    Upstream {
        base: String,
        client: HttpClient,
        timeout: Duration,
    },
    File {
        path: PathBuf,
        map: RwLock<FileMap>,
        stamp: RwLock<Option<(SystemTime, u64)>>,
    },
}

/// The registry.
pub struct Registry {
    /// Answers, and the failures shared by the lookups that waited for them.
    fresh: TimedCache<Result<Answer, Arc<str>>>,
    stale: TimedCache<Arc<ThreadRecord>>,
    ttl: Duration,
    negative_ttl: Duration,
    /// How long a record is kept for when the source fails (`ttl + stale_if_error`).
    stale_for: Duration,
    source: Source,
    metrics: Arc<Metrics>,
}

/// The cache (and file map) key of a resource: a thread's id, else `{kind}/{id}` (an id from a
/// path segment never holds a `/`).
pub fn key(kind: &str, id: &str) -> String {
    if kind == "thread" {
        id.to_owned()
    } else {
        format!("{kind}/{id}")
    }
}

/// The collection name of a kind in registry URLs: `thread` → `threads`, `canvas` →
/// `canvases`, `story` → `stories` (English plural: `-es` after s, x, z, ch, sh; `-ies` for a
/// consonant and y).
pub fn plural(kind: &str) -> String {
    let consonant_y = kind.len() > 1
        && kind.ends_with('y')
        && !kind[..kind.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if consonant_y {
        format!("{}ies", &kind[..kind.len() - 1])
    } else if kind.ends_with(['s', 'x', 'z']) || kind.ends_with("ch") || kind.ends_with("sh") {
        format!("{kind}es")
    } else {
        format!("{kind}s")
    }
}

/// Parses a registry file: a JSON array of
/// `{"kind"?,"id" | "thread_id","tenant_id","env","project_id"?,"disabled_routes"?}` (`kind`
/// defaults to `thread`).
pub fn parse_file(bytes: &[u8]) -> Result<HashMap<String, ThreadRecord>, String> {
    let entries: Vec<FileEntry> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut map = HashMap::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let id = match (e.id, e.thread_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!("record {i}: \"id\" and \"thread_id\" differ"))
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => {
                return Err(format!("record {i}: \"id\" (or \"thread_id\") is required"))
            }
        };
        let kind = e.kind.unwrap_or_else(|| "thread".into());
        let record = ThreadRecord {
            tenant_id: e.tenant_id,
            env: e.env,
            project_id: e.project_id,
            disabled_routes: e.disabled_routes,
        };
        map.insert(key(&kind, &id), record);
    }
    Ok(map)
}

fn file_stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Registry {
    /// Builds the registry. A file source is read now; a bad file is a start-up error.
    pub fn new(
        config: &RegistryConfig,
        client: HttpClient,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Registry>, String> {
        let source = match &config.source {
            RegistrySource::Upstream { url } => Source::Upstream {
                base: url.trim_end_matches('/').to_owned(),
                client,
                timeout: config.timeout,
            },
            RegistrySource::File { path } => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("registry file {}: {e}", path.display()))?;
                let map = parse_file(&bytes)
                    .map_err(|e| format!("registry file {}: {e}", path.display()))?;
                Source::File {
                    path: path.clone(),
                    map: RwLock::new(Arc::new(map)),
                    stamp: RwLock::new(file_stamp(path)),
                }
            }
        };
        Ok(Arc::new(Registry {
            fresh: TimedCache::new(config.max_entries),
            stale: TimedCache::new(config.max_entries),
            ttl: config.ttl,
            negative_ttl: config.negative_ttl,
            stale_for: config.ttl + config.stale_if_error,
            source,
            metrics,
        }))
    }

    fn count(&self, result: Lookup) {
        self.metrics.registry_lookup(result);
    }

    /// The owner of the `kind` resource `id`, `None` if unknown, or `registry.unavailable`.
    pub async fn lookup(&self, kind: &str, id: &str) -> Result<Option<Arc<ThreadRecord>>, Denial> {
        let thread_id = &key(kind, id);
        // A hit is a plain read; only a miss goes through the loader (which makes concurrent
        // misses for one id share a single fetch).
        let (result, fetched) = match self.fresh.get(thread_id) {
            Some(answer) => (answer, false),
            None => Box::pin(self.fresh.get_or_load(thread_id, || self.load(kind, id))).await,
        };
        match result {
            Ok(Answer::Found(rec)) => {
                self.count(if fetched {
                    Lookup::Fetched
                } else {
                    Lookup::Hit
                });
                if fetched {
                    self.stale
                        .insert(thread_id.to_owned(), rec.clone(), self.stale_for);
                }
                Ok(Some(rec))
            }
            Ok(Answer::NotFound) => {
                self.count(if fetched {
                    Lookup::NotFound
                } else {
                    Lookup::NegativeHit
                });
                Ok(None)
            }
            Err(err) => match self.stale.get(thread_id) {
                Some(rec) => {
                    self.count(Lookup::Stale);
                    tracing::warn!(thread_id, error = %err, "registry source failed; serving a stale record");
                    Ok(Some(rec))
                }
                None => {
                    self.count(Lookup::Unavailable);
                    tracing::warn!(thread_id, error = %err, "registry source failed and nothing is cached");
                    Err(Denial::new(ErrorCode::RegistryUnavailable))
                }
            },
        }
    }

    /// A fetched answer and how long it stays fresh (a failure: not at all).
    async fn load(&self, kind: &str, id: &str) -> (Result<Answer, Arc<str>>, Option<Duration>) {
        let answer = self.fetch(kind, id).await.map_err(Arc::from);
        let ttl = match &answer {
            Ok(Answer::Found(_)) => Some(self.ttl),
            Ok(Answer::NotFound) => Some(self.negative_ttl),
            Err(_) => None,
        };
        (answer, ttl)
    }

    async fn fetch(&self, kind: &str, id: &str) -> Result<Answer, String> {
        match &self.source {
            Source::File { map, .. } => {
                let map = map
                    .read()
                    .map_err(|_| "registry map poisoned".to_string())?;
                Ok(map
                    .get(&key(kind, id))
                    .map(|r| Answer::Found(Arc::new(r.clone())))
                    .unwrap_or(Answer::NotFound))
            }
            Source::Upstream {
                base,
                client,
                timeout,
            } => {
                let url = format!("{base}/registry/{}/{id}", plural(kind));
                let (status, body) = client
                    .get_small(&url, *timeout, 64 * 1024)
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                match status.as_u16() {
                    200 => serde_json::from_slice::<ThreadRecord>(&body)
                        .map(|r| Answer::Found(Arc::new(r)))
                        .map_err(|e| format!("bad registry answer: {e}")),
                    404 => Ok(Answer::NotFound),
                    other => Err(format!("registry answered {other}")),
                }
            }
        }
    }

    /// Records that the `kind` resource `id` belongs to `record` (learned from a `registers_thread`
    /// route, of that route's `resource_kind`) —
    /// unless it already belongs to another tenant or env: an owner is never replaced
    /// (`chat.thread_forbidden`). Fails closed when the owner cannot be looked up.
    pub async fn learn(&self, kind: &str, id: &str, record: ThreadRecord) -> Result<(), Denial> {
        if let Some(owner) = self.lookup(kind, id).await? {
            if owner.tenant_id != record.tenant_id || owner.env != record.env {
                return Err(Denial::with_message(
                    ErrorCode::ThreadForbidden,
                    "the thread already belongs to another tenant",
                ));
            }
        }
        self.remember(kind, id, record).await;
        Ok(())
    }

    /// Records an owner learned here or by another replica (which already checked it against
    /// any previous owner).
    pub async fn remember(&self, kind: &str, id: &str, record: ThreadRecord) {
        self.count(Lookup::Learned);
        let key = key(kind, id);
        let record = Arc::new(record);
        self.stale
            .insert(key.clone(), record.clone(), self.stale_for);
        self.fresh.insert(key, Ok(Answer::Found(record)), self.ttl);
    }

    /// Drops every cached answer (after missing other replicas' changes).
    pub fn forget_all(&self) {
        self.fresh.clear();
        self.stale.clear();
    }

    /// Drops a cached entry by its [`key`] (`DELETE /admin/registry/{id}` for a thread,
    /// `/admin/registry/{kind}/{id}` for another kind). Returns whether one was cached.
    pub async fn forget(&self, thread_id: &str) -> bool {
        let fresh = self.fresh.remove(thread_id);
        self.stale.remove(thread_id) || fresh
    }

    /// For a file source: reloads the file if it changed. Returns whether it reloaded.
    pub async fn reload_if_changed(&self) -> bool {
        let Source::File { path, map, stamp } = &self.source else {
            return false;
        };
        let now = file_stamp(path);
        let before = stamp.read().map(|s| *s).unwrap_or(None);
        if now == before {
            return false;
        }
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| parse_file(&b));
        if let Ok(mut s) = stamp.write() {
            *s = now;
        }
        match parsed {
            Ok(new_map) => {
                if let Ok(mut m) = map.write() {
                    *m = Arc::new(new_map);
                }
                self.fresh.clear();
                self.stale.clear();
                tracing::info!(path = %path.display(), "registry file reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "registry file unreadable; keeping the previous contents");
                false
            }
        }
    }

    /// Whether this registry reads a file (and wants the reload task).
    pub fn is_file(&self) -> bool {
        matches!(self.source, Source::File { .. })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_are_pluralised_as_in_english() {
        for (kind, want) in [
            ("thread", "threads"),
            ("canvas", "canvases"),
            ("box", "boxes"),
            ("sketch", "sketches"),
            ("story", "stories"),
            ("day", "days"),
            ("panel", "panels"),
        ] {
            assert_eq!(super::plural(kind), want);
        }
    }
}
