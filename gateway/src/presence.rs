//! Who is connected to which thread (or other resource) over WebSocket. Presence never crosses a
//! tenant or env: the registry is keyed by (tenant, env, place), and members only ever hear
//! about their own key. A place is the resource and the narrower scope the session named (a
//! canvas's panel, say): members of one panel see each other, not those of another.
//!
//! Changes are coalesced per thread: joins and leaves within one window (`ws.presence_window_ms`)
//! reach each member present before the window as one message — the classic `join` / `leave`
//! for a single change, `batch` (`joined`, `left`) for several — and a newcomer gets one
//! `snapshot` of the others instead of a message per member, so a thread that fills up costs about
//! one message per member per window rather than one per member per join. Above
//! `ws.presence_fanout_max` members nothing is pushed, not even a newcomer's snapshot; a member
//! asks for a snapshot with `{"type":"presence","op":"snapshot"}` (Centrifugo's approach for
//! large channels).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// A member's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Session id (unique in this gateway).
    pub session: u64,
    /// The member's subject.
    pub actor_id: String,
    /// The member's surface, if any.
    pub surface_id: Option<String>,
    /// Unix seconds.
    pub joined_at: u64,
}

/// Where a member is: the resource (`thread_id` or the route's resource key, and its id), then
/// the scope fields the session named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place(pub Vec<(String, String)>);

impl Place {
    /// A thread, with no narrower scope.
    pub fn thread(id: &str) -> Place {
        Place(vec![("thread_id".into(), id.into())])
    }

    fn resource(&self) -> &str {
        self.0.first().map_or("", |(_, v)| v)
    }
}

/// A room: tenant, env and place.
pub type Key = (String, String, Place);

struct Entry {
    member: Member,
    /// Where this replica's member hears presence; `None` for another replica's member.
    tx: Option<mpsc::Sender<String>>,
    /// The replica a member of another replica is on (cluster mode).
    origin: Option<String>,
    /// Joined in the current window: gets a snapshot at its end, not the window's changes.
    fresh: bool,
}

impl Entry {
    fn is(&self, origin: Option<&str>, session: u64) -> bool {
        self.origin.as_deref() == origin && self.member.session == session
    }
}

enum Change {
    Join(Member),
    Leave(Member),
}

#[derive(Default)]
struct Room {
    entries: Vec<Entry>,
    pending: Vec<Change>,
    flush_scheduled: bool,
}

/// The presence registry.
pub struct Presence {
    rooms: Mutex<HashMap<Key, Room>>,
    window: Duration,
    fanout_max: usize,
}

fn who(m: &Member) -> Value {
    json!({"actor_id": m.actor_id, "surface_id": m.surface_id})
}

fn routing(key: &Key) -> Value {
    let mut r = serde_json::Map::new();
    r.insert("tenant_id".into(), key.0.clone().into());
    r.insert("env".into(), key.1.clone().into());
    for (k, v) in &key.2 .0 {
        r.insert(k.clone(), v.clone().into());
    }
    Value::Object(r)
}

/// What one member present before a window hears of its changes.
fn news(changes: &[Change], key: &Key) -> Option<String> {
    let msg = match changes {
        [] => return None,
        [one] => {
            let (op, m) = match one {
                Change::Join(m) => ("join", m),
                Change::Leave(m) => ("leave", m),
            };
            json!({"type": "presence", "op": op, "actor_id": m.actor_id, "surface_id": m.surface_id, "routing": routing(key)})
        }
        many => {
            let (mut joined, mut left) = (Vec::new(), Vec::new());
            for c in many {
                match c {
                    Change::Join(m) => joined.push(who(m)),
                    Change::Leave(m) => left.push(who(m)),
                }
            }
            json!({"type": "presence", "op": "batch", "joined": joined, "left": left, "routing": routing(key)})
        }
    };
    Some(msg.to_string())
}

fn snapshot(room: &Room, key: &Key, session: u64) -> String {
    let members: Vec<Value> = room
        .entries
        .iter()
        .filter(|e| !e.is(None, session))
        .map(|e| who(&e.member))
        .collect();
    json!({"type": "presence", "op": "snapshot", "members": members, "routing": routing(key)})
        .to_string()
}

/// Whether a client's text message asks for a presence snapshot
/// (`{"type":"presence","op":"snapshot"}`); such a message is answered, not forwarded.
pub fn is_snapshot_request(text: &str) -> bool {
    text.contains("presence")
        && serde_json::from_str::<Value>(text).is_ok_and(|v| {
            v.get("type").and_then(Value::as_str) == Some("presence")
                && v.get("op").and_then(Value::as_str) == Some("snapshot")
        })
}

impl Presence {
    /// A registry coalescing changes over `window`, pushing them to at most `fanout_max` members.
    pub fn new(window: Duration, fanout_max: usize) -> Arc<Presence> {
        Arc::new(Presence {
            rooms: Mutex::default(),
            window,
            fanout_max,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a member; the others hear of it, and it gets a snapshot, at the window's end.
    pub fn join(
        self: &Arc<Self>,
        tenant: &str,
        env: &str,
        place: &Place,
        member: Member,
        tx: mpsc::Sender<String>,
    ) {
        let key = (tenant.to_owned(), env.to_owned(), place.clone());
        let mut rooms = self.lock();
        let room = rooms.entry(key.clone()).or_default();
        room.pending.push(Change::Join(member.clone()));
        room.entries.push(Entry {
            member,
            tx: Some(tx),
            origin: None,
            fresh: true,
        });
        self.schedule(room, key);
    }

    /// Adds a member of another replica (cluster mode); this replica's members hear of it.
    /// Known already: nothing changes.
    pub fn join_remote(self: &Arc<Self>, origin: &str, key: Key, member: Member) {
        let mut rooms = self.lock();
        let room = rooms.entry(key.clone()).or_default();
        if room
            .entries
            .iter()
            .any(|e| e.is(Some(origin), member.session))
        {
            return;
        }
        room.pending.push(Change::Join(member.clone()));
        room.entries.push(Entry {
            member,
            tx: None,
            origin: Some(origin.to_owned()),
            fresh: false,
        });
        self.schedule(room, key);
    }

    /// Removes a member of another replica.
    pub fn leave_remote(self: &Arc<Self>, origin: &str, key: Key, session: u64) {
        self.remove(key, Some(origin), session);
    }

    /// Removes every member of the replica `origin` (gone, or whose news this one missed);
    /// `None`: of every other replica.
    pub fn drop_origin(self: &Arc<Self>, origin: Option<&str>) {
        let rooms = self.lock();
        let gone: Vec<(Key, u64, String)> = rooms
            .iter()
            .flat_map(|(k, room)| {
                room.entries
                    .iter()
                    .filter(|e| {
                        e.origin.is_some() && (origin.is_none() || e.origin.as_deref() == origin)
                    })
                    .map(|e| {
                        (
                            k.clone(),
                            e.member.session,
                            e.origin.clone().unwrap_or_default(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        drop(rooms);
        for (key, session, node) in gone {
            self.remove(key, Some(&node), session);
        }
    }

    /// This replica's own members, where they are (what another replica asks for).
    pub fn local_members(&self) -> Vec<(Key, Member)> {
        let rooms = self.lock();
        rooms
            .iter()
            .flat_map(|(k, room)| {
                room.entries
                    .iter()
                    .filter(|e| e.origin.is_none())
                    .map(|e| (k.clone(), e.member.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Removes a member; the others hear of it at the window's end.
    pub fn leave(self: &Arc<Self>, tenant: &str, env: &str, place: &Place, session: u64) {
        self.remove(
            (tenant.to_owned(), env.to_owned(), place.clone()),
            None,
            session,
        );
    }

    fn remove(self: &Arc<Self>, key: Key, origin: Option<&str>, session: u64) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&key) else {
            return;
        };
        let Some(pos) = room.entries.iter().position(|e| e.is(origin, session)) else {
            return;
        };
        let gone = room.entries.remove(pos);
        room.pending.push(Change::Leave(gone.member));
        self.schedule(room, key);
    }

    fn schedule(self: &Arc<Self>, room: &mut Room, key: Key) {
        if room.flush_scheduled {
            return;
        }
        room.flush_scheduled = true;
        let (me, window) = (self.clone(), self.window);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            me.flush(&key);
        });
    }

    /// Ends a thread's window: newcomers get a snapshot of the others (when there are any),
    /// everyone else the window's changes — unless the room is above `fanout_max`: then nobody
    /// gets either, and members ask for a snapshot. A member whose
    /// queue is full misses the message (best effort; it can ask for a snapshot).
    pub fn flush(&self, key: &Key) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(key) else {
            return;
        };
        room.flush_scheduled = false;
        let changes = std::mem::take(&mut room.pending);
        // Above the limit nothing is pushed, snapshots included: each newcomer's snapshot lists
        // every other member, so a crowd joining one thread would cost members² bytes.
        let pushed = room.entries.len() <= self.fanout_max;
        let news = if pushed { news(&changes, key) } else { None };
        for i in 0..room.entries.len() {
            let e = &room.entries[i];
            let msg = if e.fresh {
                (pushed && room.entries.len() > 1).then(|| snapshot(room, key, e.member.session))
            } else {
                news.clone()
            };
            if let (Some(m), Some(tx)) = (msg, &room.entries[i].tx) {
                let _ = tx.try_send(m);
            }
            room.entries[i].fresh = false;
        }
        if room.entries.is_empty() {
            rooms.remove(key);
        }
    }

    /// A snapshot of the other members of a session's thread, asked for by the session.
    pub fn snapshot_for(&self, tenant: &str, env: &str, place: &Place, session: u64) -> String {
        let key = (tenant.to_owned(), env.to_owned(), place.clone());
        let rooms = self.lock();
        match rooms.get(&key) {
            Some(room) => snapshot(room, &key, session),
            None => snapshot(&Room::default(), &key, session),
        }
    }

    /// Members of a resource in a tenant (every env this gateway serves: its own), each with
    /// the place it is in (`routing`).
    pub fn members(&self, tenant: &str, resource: &str) -> Value {
        let rooms = self.lock();
        let list: Vec<Value> = rooms
            .iter()
            .filter(|((t, _, place), _)| t == tenant && place.resource() == resource)
            .flat_map(|(key, room)| {
                room.entries.iter().map(move |e| {
                    json!({"actor_id": e.member.actor_id, "surface_id": e.member.surface_id, "env": key.1, "joined_at": e.member.joined_at, "routing": routing(key), "replica": e.origin.as_deref().unwrap_or("local")})
                })
            })
            .collect();
        Value::Array(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(session: u64, actor: &str) -> Member {
        Member {
            session,
            actor_id: actor.into(),
            surface_id: Some("web".into()),
            joined_at: 1,
        }
    }

    fn key(tenant: &str) -> Key {
        (tenant.into(), "dev".into(), th())
    }

    fn th() -> Place {
        Place::thread("th")
    }

    fn next(rx: &mut mpsc::Receiver<String>) -> Option<Value> {
        rx.try_recv()
            .ok()
            .map(|t| serde_json::from_str(&t).expect("json"))
    }

    /// A registry whose windows never end by themselves: the tests flush.
    fn registry(fanout_max: usize) -> Arc<Presence> {
        Presence::new(Duration::from_secs(3600), fanout_max)
    }

    #[tokio::test]
    async fn members_hear_joins_and_leaves_of_their_own_thread_only() {
        let p = registry(100);
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let (tx_c, mut rx_c) = mpsc::channel(8);
        p.join("t_a", "dev", &th(), member(1, "alice"), tx_a);
        p.join("t_b", "dev", &th(), member(2, "mallory"), tx_b);
        p.flush(&key("t_a"));
        p.flush(&key("t_b"));
        assert!(next(&mut rx_a).is_none(), "alone: no snapshot");
        p.join("t_a", "dev", &th(), member(3, "bob"), tx_c);
        p.flush(&key("t_a"));
        let joined = next(&mut rx_a).expect("alice hears bob");
        assert_eq!(
            joined,
            json!({"type": "presence", "op": "join", "actor_id": "bob", "surface_id": "web",
                   "routing": {"tenant_id": "t_a", "env": "dev", "thread_id": "th"}})
        );
        let snap = next(&mut rx_c).expect("bob gets a snapshot");
        assert_eq!(snap["op"], "snapshot");
        assert_eq!(
            snap["members"],
            json!([{"actor_id": "alice", "surface_id": "web"}])
        );
        assert!(next(&mut rx_b).is_none(), "another tenant hears nothing");
        p.leave("t_a", "dev", &th(), 1);
        p.flush(&key("t_a"));
        let left = next(&mut rx_c).expect("bob hears alice leave");
        assert_eq!(
            (left["op"].as_str(), left["actor_id"].as_str()),
            (Some("leave"), Some("alice"))
        );
        assert!(next(&mut rx_b).is_none());
        let listed = p.members("t_a", "th");
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        assert_eq!(listed[0]["actor_id"], "bob");
    }

    #[tokio::test]
    async fn changes_within_a_window_go_out_as_one_message_per_member() {
        let p = registry(100);
        let (tx_a, mut rx_a) = mpsc::channel(8);
        p.join("t_a", "dev", &th(), member(1, "alice"), tx_a);
        p.flush(&key("t_a"));
        let mut late = Vec::new();
        for i in 2..=11 {
            let (tx, rx) = mpsc::channel(8);
            p.join("t_a", "dev", &th(), member(i, &format!("u{i}")), tx);
            late.push(rx);
        }
        p.leave("t_a", "dev", &th(), 11);
        p.flush(&key("t_a"));
        let batch = next(&mut rx_a).expect("one message");
        assert!(next(&mut rx_a).is_none(), "only one");
        assert_eq!(batch["op"], "batch");
        assert_eq!(batch["joined"].as_array().map(Vec::len), Some(10));
        assert_eq!(
            batch["left"],
            json!([{"actor_id": "u11", "surface_id": "web"}])
        );
        let snap = next(&mut late[0]).expect("a newcomer's snapshot");
        assert_eq!(
            snap["members"].as_array().map(Vec::len),
            Some(9),
            "the 9 others present"
        );
    }

    #[tokio::test]
    async fn above_the_fanout_limit_changes_are_not_pushed_but_snapshots_answer() {
        let p = registry(2);
        let (tx_a, mut rx_a) = mpsc::channel(8);
        p.join("t_a", "dev", &th(), member(1, "alice"), tx_a);
        for i in 2..=3 {
            let (tx, _rx) = mpsc::channel(8);
            p.join("t_a", "dev", &th(), member(i, &format!("u{i}")), tx);
        }
        p.flush(&key("t_a"));
        assert!(
            next(&mut rx_a).is_none(),
            "3 members > 2: not even a newcomer's snapshot is pushed"
        );
        let (tx, _rx) = mpsc::channel(8);
        p.join("t_a", "dev", &th(), member(4, "u4"), tx);
        p.flush(&key("t_a"));
        assert!(next(&mut rx_a).is_none(), "4 members > 2: no push");
        let snap: Value =
            serde_json::from_str(&p.snapshot_for("t_a", "dev", &th(), 1)).expect("json");
        assert_eq!(snap["members"].as_array().map(Vec::len), Some(3));
        assert!(is_snapshot_request(
            r#"{"type":"presence","op":"snapshot"}"#
        ));
        assert!(!is_snapshot_request(
            r#"{"type":"message","text":"presence"}"#
        ));
    }

    #[tokio::test]
    async fn members_of_one_panel_see_each_other_not_another_panels() {
        let p = registry(100);
        let panel = |id: &str| {
            Place(vec![
                ("canvas_id".into(), "cv1".into()),
                ("panel_id".into(), id.into()),
            ])
        };
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let (tx_c, mut rx_c) = mpsc::channel(8);
        p.join("t_a", "dev", &panel("pa"), member(1, "alice"), tx_a);
        p.join("t_a", "dev", &panel("pb"), member(2, "bob"), tx_b);
        p.flush(&("t_a".into(), "dev".into(), panel("pa")));
        p.flush(&("t_a".into(), "dev".into(), panel("pb")));
        p.join("t_a", "dev", &panel("pa"), member(3, "carol"), tx_c);
        p.flush(&("t_a".into(), "dev".into(), panel("pa")));
        assert_eq!(
            next(&mut rx_a).expect("alice hears carol"),
            json!({"type": "presence", "op": "join", "actor_id": "carol", "surface_id": "web",
                   "routing": {"tenant_id": "t_a", "env": "dev", "canvas_id": "cv1", "panel_id": "pa"}})
        );
        assert_eq!(
            next(&mut rx_c).expect("carol's snapshot")["members"],
            json!([{"actor_id": "alice", "surface_id": "web"}])
        );
        assert!(next(&mut rx_b).is_none(), "another panel hears nothing");
        let listed = p.members("t_a", "cv1");
        assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    }
}
