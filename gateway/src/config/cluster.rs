//! `[cluster]`: replicas that share single-use tickets and registry changes through Redis.

use super::reader::{Problems, Reader};
use std::time::Duration;

/// Cluster mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub redis_url: String,
    /// Prefix of every key and channel (several deployments can share one Redis).
    pub key_prefix: String,
    /// Longest wait for one Redis command (or a connection).
    pub timeout: Duration,
}

/// Reads `[cluster]`; `None` without the table (single node).
pub(super) fn read_cluster(table: Option<Reader<'_>>, p: &mut Problems) -> Option<ClusterConfig> {
    let mut r = table?;
    let url = r.string("redis_url", p);
    let key_prefix = r
        .string("key_prefix", p)
        .unwrap_or_else(|| "railgate:".into());
    let timeout = Duration::from_millis(r.uint("timeout_ms", p).unwrap_or(500).max(1));
    let url_path = r.path_of("redis_url");
    r.finish(p);
    let Some(redis_url) = url else {
        p.add(&url_path, "is required in [cluster]");
        return None;
    };
    if redis::Client::open(redis_url.as_str()).is_err() || !redis_url.starts_with("redis://") {
        p.add(
            &url_path,
            format!("{redis_url:?} is not a redis://host:port[/db] URL"),
        );
    }
    Some(ClusterConfig {
        redis_url,
        key_prefix,
        timeout,
    })
}
