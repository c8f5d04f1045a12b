//! The verified values a stream stamps into its events ([`Stamp`]).

use railgate_policy::{Field, RequestContext};

/// The verified values stamped into every event of one stream. Held for the stream's life: the
/// `routing` object and the trace id are read out of the one text that holds them both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// `"routing":…,"meta":{"trace_id":…}}` (see [`Stamp::tail`]).
    tail: Box<str>,
    /// Where `routing`'s object ends in `tail`.
    routing_end: usize,
    /// Where the trace id's JSON string starts in `tail`.
    trace_at: usize,
    /// The tenant events must belong to.
    pub tenant: String,
    /// The env events must belong to.
    pub env: String,
    /// The stream's own values of its scope keys (see `is_scope_key`).
    pub scope: Box<[(String, String)]>,
}

/// What `tail` opens with, before the `routing` object.
const ROUTING_MEMBER: &str = "\"routing\":";
/// What comes between the `routing` object and the trace id.
const META_MEMBER: &str = ",\"meta\":{\"trace_id\":";

/// Appends `s` as a JSON string, as serde_json writes it: between quotes as it is when nothing in
/// it needs an escape (ids and context values, as a rule), through serde_json otherwise.
pub fn push_json_str(out: &mut String, s: &str) {
    // Without an early exit, so the compiler checks many bytes at a time.
    let escaped = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !escaped {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// Whether an event naming another value of routing key `k` than its stream's is dropped: the
/// scope fields ([`Field::SCOPES`]), `thread_id`, and the route's resource key.
fn is_scope_key(k: &str, resource_key: &str) -> bool {
    k == resource_key || k == "thread_id" || Field::SCOPES.iter().any(|f| f.key() == k)
}

impl Stamp {
    /// The stamp of a thread's stream (`thread_id` is its resource key).
    pub fn new(ctx: &RequestContext, thread_id: &str) -> Stamp {
        Stamp::for_resource(ctx, "thread_id", thread_id)
    }

    /// `routing` = tenant_id, env, the resource (`thread_id`, `canvas_id`, …), actor_id (= sub),
    /// then every other present field.
    pub fn for_resource(ctx: &RequestContext, resource_key: &str, id: &str) -> Stamp {
        // Written out directly (a JSON map per stream cost more than the rest of the stamp): a
        // key met again keeps its first place and takes the later value, as a map would.
        let mut members: Vec<(&str, &str)> = Vec::with_capacity(Field::ALL.len() + 2);
        let mut put = |k, v| match members.iter_mut().find(|(seen, _)| *seen == k) {
            Some(m) => m.1 = v,
            None => members.push((k, v)),
        };
        put("tenant_id", ctx.tenant_id());
        put("env", ctx.env());
        put(resource_key, id);
        put("actor_id", ctx.user_id.as_str());
        for (f, v) in ctx.fields() {
            if !matches!(f, Field::Tenant | Field::Env) {
                put(f.key(), v);
            }
        }
        let scope = members
            .iter()
            .filter(|(k, _)| is_scope_key(k, resource_key))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        // Sized for values that need no escaping (the usual case): kept as it is, not copied to
        // shrink it.
        let size = ROUTING_MEMBER.len()
            + members
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>()
            + META_MEMBER.len()
            + ctx.trace_id.len()
            + 5;
        let mut tail = String::with_capacity(size);
        tail.push_str(ROUTING_MEMBER);
        tail.push('{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                tail.push(',');
            }
            push_json_str(&mut tail, k);
            tail.push(':');
            push_json_str(&mut tail, v);
        }
        tail.push('}');
        let routing_end = tail.len();
        tail.push_str(META_MEMBER);
        let trace_at = tail.len();
        push_json_str(&mut tail, &ctx.trace_id);
        tail.push_str("}}");
        Stamp {
            tail: tail.into_boxed_str(),
            routing_end,
            trace_at,
            tenant: ctx.tenant_id().to_owned(),
            env: ctx.env().to_owned(),
            scope,
        }
    }

    /// `routing` as compact JSON.
    pub fn routing(&self) -> &str {
        &self.tail[ROUTING_MEMBER.len()..self.routing_end]
    }

    /// The trace id as a JSON string literal.
    pub fn trace_json(&self) -> &str {
        &self.tail[self.trace_at..self.tail.len() - 2]
    }

    /// `"routing":…,"meta":{"trace_id":…}}`: what this stream appends to an event that carries
    /// neither member (see [`super::Prepared::write_shared_prefix`]).
    pub fn tail(&self) -> &str {
        &self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::push_json_str;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut all: Vec<String> = [
            "", "t_acme", "th_0123", "a b", "é✓", "\u{7f}", "q\"", "b\\", "\u{1f}x", "l\nr\t",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        all.extend((0u8..=0x7f).map(|b| format!("x{}y", b as char)));
        for s in &all {
            let mut out = String::from("{");
            push_json_str(&mut out, s);
            assert_eq!(
                out,
                format!("{{{}", serde_json::to_string(s).expect("json")),
                "{s:?}"
            );
        }
    }
}
