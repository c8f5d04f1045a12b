//! Who is connected to which thread over WebSocket. Presence never crosses a tenant or env: the
//! registry is keyed by (tenant, env, thread), and members only ever hear about their own key.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// A member's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
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

type Key = (String, String, String);

struct Entry {
    member: Member,
    tx: mpsc::Sender<String>,
}

/// The presence registry.
#[derive(Default)]
pub struct Presence {
    threads: Mutex<HashMap<Key, Vec<Entry>>>,
}

fn event(op: &str, m: &Member, key: &Key) -> String {
    json!({
        "type": "presence",
        "op": op,
        "actor_id": m.actor_id,
        "surface_id": m.surface_id,
        "routing": {"tenant_id": key.0, "env": key.1, "thread_id": key.2},
    })
    .to_string()
}

impl Presence {
    /// Adds a member and tells the others (best effort: a member whose queue is full misses it).
    pub fn join(
        &self,
        tenant: &str,
        env: &str,
        thread: &str,
        member: Member,
        tx: mpsc::Sender<String>,
    ) {
        let key = (tenant.to_owned(), env.to_owned(), thread.to_owned());
        let msg = event("join", &member, &key);
        let mut map = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(key).or_default();
        for e in list.iter() {
            let _ = e.tx.try_send(msg.clone());
        }
        list.push(Entry { member, tx });
    }

    /// Removes a member and tells the others.
    pub fn leave(&self, tenant: &str, env: &str, thread: &str, session: u64) {
        let key = (tenant.to_owned(), env.to_owned(), thread.to_owned());
        let mut map = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = map.get_mut(&key) else {
            return;
        };
        let Some(pos) = list.iter().position(|e| e.member.session == session) else {
            return;
        };
        let gone = list.remove(pos);
        let msg = event("leave", &gone.member, &key);
        for e in list.iter() {
            let _ = e.tx.try_send(msg.clone());
        }
        if list.is_empty() {
            map.remove(&key);
        }
    }

    /// Members of a thread in a tenant (every env this gateway serves: its own).
    pub fn members(&self, tenant: &str, thread: &str) -> Value {
        let map = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<Value> = map
            .iter()
            .filter(|((t, _, th), _)| t == tenant && th == thread)
            .flat_map(|((_, env, _), entries)| {
                entries.iter().map(move |e| {
                    json!({"actor_id": e.member.actor_id, "surface_id": e.member.surface_id, "env": env, "joined_at": e.member.joined_at})
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

    #[test]
    fn members_hear_joins_and_leaves_of_their_own_thread_only() {
        let p = Presence::default();
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let (tx_c, mut rx_c) = mpsc::channel(8);
        p.join("t_a", "dev", "th", member(1, "alice"), tx_a);
        p.join("t_b", "dev", "th", member(2, "mallory"), tx_b);
        p.join("t_a", "dev", "th", member(3, "bob"), tx_c);
        let joined: Value =
            serde_json::from_str(&rx_a.try_recv().expect("alice hears bob")).expect("json");
        assert_eq!(joined["op"], "join");
        assert_eq!(joined["actor_id"], "bob");
        assert_eq!(joined["routing"]["tenant_id"], "t_a");
        assert!(rx_b.try_recv().is_err(), "another tenant hears nothing");
        assert!(rx_c.try_recv().is_err(), "a joiner does not hear itself");
        p.leave("t_a", "dev", "th", 1);
        let left: Value =
            serde_json::from_str(&rx_c.try_recv().expect("bob hears alice leave")).expect("json");
        assert_eq!(
            (left["op"].as_str(), left["actor_id"].as_str()),
            (Some("leave"), Some("alice"))
        );
        assert!(rx_b.try_recv().is_err());
        let listed = p.members("t_a", "th");
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        assert_eq!(listed[0]["actor_id"], "bob");
    }
}
