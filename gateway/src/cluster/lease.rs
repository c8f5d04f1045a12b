//! One upstream stream per shared thread per cluster: a replica holds the thread's lease
//! (`<prefix>lease:<route>:<key>`, [`LEASE`] long, renewed every quarter of it) while it reads
//! the upstream; every other replica with clients on that thread follows the cluster's journal
//! ([`super::journal`]) instead. When the holder dies its lease runs out and another replica
//! takes it and resumes the upstream after the last event it relayed.

use super::journal::{entry_field, follow, Place, Step};
use super::Cluster;
use crate::sse::Event;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// How long a lease lasts without renewal: the bound on a holder's death going unnoticed.
pub const LEASE: Duration = Duration::from_millis(1500);

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// One XREAD reply: per stream, its entries with their fields.
type XRead = Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>>;

impl Cluster {
    fn lease_key(&self, place: &Place) -> String {
        format!("{}lease:{}:{}", self.prefix, place.route, place.key)
    }

    /// Takes the lease if nobody holds it; `None` when Redis cannot say.
    pub async fn acquire(&self, place: &Place) -> Option<bool> {
        let cmd = redis::cmd("SET")
            .arg(self.lease_key(place))
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .clone();
        self.run::<Option<String>>(&cmd)
            .await
            .ok()
            .map(|set| set.is_some())
    }

    /// Extends the lease if this replica still holds it; `None` when Redis cannot say.
    pub async fn renew(&self, place: &Place) -> Option<bool> {
        let cmd = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(self.lease_key(place))
            .arg(&self.node)
            .arg(LEASE.as_millis() as u64)
            .clone();
        self.run::<i64>(&cmd).await.ok().map(|n| n == 1)
    }

    /// Gives the lease up if this replica holds it.
    pub async fn release(&self, place: &Place) {
        let cmd = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(self.lease_key(place))
            .arg(&self.node)
            .clone();
        let _ = self.run::<i64>(&cmd).await;
    }
}

/// A follower's reader of the cluster's journal of one stream, on a connection of its own (a
/// blocking read would hold up every other command on the shared one).
pub struct JournalReader<'a> {
    cluster: &'a Cluster,
    stream: String,
    conn: Option<MultiplexedConnection>,
    /// The last entry read (a Redis stream id).
    at: Option<String>,
    /// The id of the last event read, which the next entry must follow on from.
    chain: Option<String>,
}

/// What one read of the journal gave.
pub struct Followed {
    /// The events, in order.
    pub events: Vec<Event>,
    /// The read stopped at an entry that does not follow on from the last event read: the
    /// journal misses events there, which only the upstream has.
    pub broken: bool,
}

impl<'a> JournalReader<'a> {
    /// A reader of `place`'s journal; it starts at the journal's end.
    pub fn new(cluster: &'a Cluster, place: &Place) -> JournalReader<'a> {
        JournalReader {
            cluster,
            stream: cluster.journal_key(place),
            conn: None,
            at: None,
            chain: None,
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        wait: Duration,
    ) -> Option<T> {
        if self.conn.is_none() {
            let made = tokio::time::timeout(
                self.cluster.timeout,
                self.cluster.client.get_multiplexed_async_connection(),
            )
            .await;
            self.conn = made.ok()?.ok();
        }
        let conn = self.conn.as_mut()?;
        match tokio::time::timeout(wait + self.cluster.timeout, cmd.query_async::<T>(conn)).await {
            Ok(Ok(v)) => Some(v),
            _ => {
                self.conn = None;
                None
            }
        }
    }

    /// Continues after the entry holding event `id` (the last one the hub relayed), else at the
    /// journal's end; returns whether it found `id` there (or had none to find).
    pub async fn resync(&mut self, id: Option<&str>) -> bool {
        let cmd = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg("+")
            .clone();
        let entries: Vec<(String, Vec<(String, String)>)> =
            self.query(&cmd, Duration::ZERO).await.unwrap_or_default();
        let found = id.and_then(|id| {
            entries
                .iter()
                .find(|(_, f)| entry_field(f, "id") == Some(id))
        });
        let positioned = id.is_none() || found.is_some();
        self.chain = found.and(id).map(str::to_owned);
        self.at = found
            .or(entries.last())
            .map(|(entry, _)| entry.clone())
            .or(Some("0-0".to_owned()));
        positioned
    }

    /// The events written after the last read, waiting up to `wait` for some; up to the first
    /// entry that does not follow on from the event before it ([`Followed::broken`]).
    pub async fn next(&mut self, wait: Duration) -> Followed {
        if self.at.is_none() {
            self.resync(None).await;
        }
        let at = self.at.clone().unwrap_or_else(|| "0-0".to_owned());
        let cmd = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1024)
            .arg("BLOCK")
            .arg(wait.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(at)
            .clone();
        let mut read = Followed {
            events: Vec::new(),
            broken: false,
        };
        let Some(Some(streams)) = self.query::<XRead>(&cmd, wait).await else {
            return read;
        };
        for (entry, fields) in streams.into_iter().flat_map(|(_, entries)| entries) {
            match follow(&mut self.chain, &fields) {
                Step::Take(ev) => read.events.push(ev),
                Step::Skip => {}
                Step::Break => {
                    read.broken = true;
                    break;
                }
            }
            self.at = Some(entry);
        }
        read
    }
}
