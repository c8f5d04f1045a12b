//! The durable append-only log behind `--data-dir`.
//!
//! Each record is one line: `<crc32 of json, 8 hex> <json>\n`. A dedicated thread writes every
//! pending record in one `write` and one `fsync` (group commit: a batch is whatever queued while
//! the previous fsync ran), then hands the batch back in order so it becomes visible only once it
//! is durable. At start-up a torn tail (a line without its newline, or whose checksum fails) is
//! truncated away; damage before the last line is refused, because silently dropping the middle
//! of a history would renumber it.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The log file's name inside the data dir.
pub const LOG_FILE: &str = "events.log";
/// The metadata file's name inside the data dir.
pub const META_FILE: &str = "meta.json";
const FORMAT: u32 = 1;

/// One persisted fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// A thread was created.
    Thread {
        /// Thread id.
        id: String,
        /// Owner tenant.
        tenant_id: String,
        /// Owner env.
        env: String,
        /// Title.
        title: String,
        /// Owner project, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_id: Option<String>,
    },
    /// A message was appended.
    Message {
        /// Thread id.
        thread_id: String,
        /// Per-thread sequence number.
        seq: u64,
        /// Text.
        text: String,
        /// Publish time, microseconds since the epoch.
        sent_at_us: u64,
        /// The routing object the sender attached, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routing: Option<serde_json::Value>,
    },
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
}

/// What start-up recovered.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every intact record, in order.
    pub records: Vec<Record>,
    /// Bytes of torn tail that were dropped.
    pub truncated_bytes: u64,
}

/// Opens (or creates) the data dir, recovers the log and returns the records plus an open file
/// positioned at the end for appending.
pub fn open(dir: &Path) -> io::Result<(Recovered, File)> {
    fs::create_dir_all(dir)?;
    ensure_meta(dir)?;
    let path = dir.join(LOG_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let (records, good_len) = parse(&bytes)?;
    let truncated_bytes = (bytes.len() - good_len) as u64;
    if truncated_bytes > 0 {
        file.set_len(good_len as u64)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::End(0))?;
    sync_dir(dir)?;
    Ok((
        Recovered {
            records,
            truncated_bytes,
        },
        file,
    ))
}

/// Parses the log; returns the records and the length of the intact prefix.
pub fn parse(bytes: &[u8]) -> io::Result<(Vec<Record>, usize)> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(nl) = bytes[pos..].iter().position(|b| *b == b'\n') else {
            break; // torn: no newline at the tail
        };
        let line = &bytes[pos..pos + nl];
        match decode_line(line) {
            Some(rec) => records.push(rec),
            None if pos + nl + 1 == bytes.len() => break, // torn last line
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log record at byte {pos} is damaged and is not the last one"),
                ))
            }
        }
        pos += nl + 1;
    }
    Ok((records, pos))
}

fn decode_line(line: &[u8]) -> Option<Record> {
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Encodes one record as a log line.
pub fn encode_line(rec: &Record, out: &mut Vec<u8>) {
    let json = serde_json::to_vec(rec).unwrap_or_default();
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(&json)).as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
}

fn ensure_meta(dir: &Path) -> io::Result<()> {
    let path = dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{META_FILE}: {e}"))
            })?;
            if meta.format != FORMAT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{META_FILE}: unsupported format {}", meta.format),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let body = serde_json::to_vec(&Meta { format: FORMAT }).unwrap_or_default();
            write_atomic(dir, &path, &body)
        }
        Err(e) => Err(e),
    }
}

/// temp file → fsync → rename → fsync dir.
pub fn write_atomic(dir: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A record waiting for its batch to be durable.
pub struct Pending {
    /// The record.
    pub record: Record,
    /// Told the outcome once the batch is on disk.
    pub done: tokio::sync::oneshot::Sender<io::Result<()>>,
}

/// Runs the group-commit writer on its own thread. `commit` is called in order with each durable
/// batch before the waiters are told; it makes the records visible.
pub fn spawn_writer(
    mut file: File,
    commit: impl Fn(&[Record]) + Send + 'static,
) -> io::Result<mpsc::Sender<Pending>> {
    let (tx, rx) = mpsc::channel::<Pending>();
    std::thread::Builder::new()
        .name("mock-log-writer".into())
        .spawn(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                buf.clear();
                for p in &batch {
                    encode_line(&p.record, &mut buf);
                }
                let result = file.write_all(&buf).and_then(|_| file.sync_data());
                let failed = result.as_ref().err().map(|e| (e.kind(), e.to_string()));
                if failed.is_none() {
                    let records: Vec<Record> = batch.iter().map(|p| p.record.clone()).collect();
                    commit(&records);
                }
                for p in batch {
                    let outcome = match &failed {
                        None => Ok(()),
                        Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
                    };
                    let _ = p.done.send(outcome);
                }
            }
        })?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Record {
        Record::Message {
            thread_id: "th".into(),
            seq,
            text: format!("m{seq}"),
            sent_at_us: 1,
            routing: None,
        }
    }

    fn lines(recs: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in recs {
            encode_line(r, &mut out);
        }
        out
    }

    #[test]
    fn intact_log_parses_completely() {
        let bytes = lines(&[msg(1), msg(2)]);
        let (recs, len) = parse(&bytes).expect("parse");
        assert_eq!(recs, vec![msg(1), msg(2)]);
        assert_eq!(len, bytes.len());
    }

    #[test]
    fn every_torn_tail_is_dropped_at_the_last_intact_record() {
        let whole = lines(&[msg(1), msg(2), msg(3)]);
        let two = lines(&[msg(1), msg(2)]).len();
        for cut in two..whole.len() {
            let (recs, len) = parse(&whole[..cut]).expect("torn tail is not fatal");
            assert_eq!(recs, vec![msg(1), msg(2)], "cut at {cut}");
            assert_eq!(len, two);
        }
    }

    #[test]
    fn damage_before_the_tail_is_refused() {
        let mut bytes = lines(&[msg(1), msg(2)]);
        bytes[12] ^= 0x01;
        assert!(parse(&bytes).is_err());
    }

    #[test]
    fn open_truncates_a_torn_tail_on_disk() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut bytes = lines(&[msg(1)]);
        let torn = b"0000abcd {\"t\":\"mess";
        bytes.extend_from_slice(torn);
        fs::write(dir.path().join(LOG_FILE), &bytes).expect("write");
        let (rec, _f) = open(dir.path()).expect("open");
        assert_eq!(rec.records, vec![msg(1)]);
        assert_eq!(rec.truncated_bytes, torn.len() as u64);
        assert_eq!(
            fs::read(dir.path().join(LOG_FILE)).expect("read"),
            lines(&[msg(1)])
        );
        assert!(dir.path().join(META_FILE).exists());
    }
}
