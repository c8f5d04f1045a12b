//! The readers of single route keys that take a closed set of values or a syntax of their own:
//! `kind`, `stream_scope`, `hello`, `auth`, `delivery` (with `coalesce_key` and
//! `key_rate_per_s`) and `resource_kind`.

use super::reader::{Problems, Reader};
use super::route::{Accepts, Delivery, Ephemeral, HelloMode, Rail, StreamScope};

pub(super) fn read_kind(r: &mut Reader<'_>, p: &mut Problems) -> Option<Rail> {
    match r.string("kind", p).as_deref() {
        Some("sse") => Some(Rail::Sse),
        Some("ws") => Some(Rail::Ws),
        Some("http") | None => Some(Rail::Http),
        Some(other) => {
            p.add(
                &r.path_of("kind"),
                format!("{other:?} is not \"sse\", \"ws\" or \"http\""),
            );
            None
        }
    }
}

pub(super) fn read_scope(r: &mut Reader<'_>, p: &mut Problems) -> StreamScope {
    match r.string("stream_scope", p).as_deref() {
        None | Some("thread") => StreamScope::Thread,
        Some("user") => StreamScope::User,
        Some(other) => {
            p.add(
                &r.path_of("stream_scope"),
                format!("{other:?} is not \"thread\" or \"user\""),
            );
            StreamScope::Thread
        }
    }
}

pub(super) fn read_hello(r: &mut Reader<'_>, p: &mut Problems) -> HelloMode {
    match r.string("hello", p).as_deref() {
        None | Some("forward") => HelloMode::Forward,
        Some("consume") => HelloMode::Consume,
        Some(other) => {
            p.add(
                &r.path_of("hello"),
                format!("{other:?} is not \"forward\" or \"consume\""),
            );
            HelloMode::Forward
        }
    }
}

/// `auth`: JWTs only on HTTP routes by default, JWTs and tickets on SSE and WS.
pub(super) fn read_accepts(r: &mut Reader<'_>, kind: Rail, p: &mut Problems) -> Accepts {
    let default_auth: &[&str] = if kind == Rail::Http {
        &["jwt"]
    } else {
        &["jwt", "ticket"]
    };
    let auth = r
        .strings("auth", p)
        .unwrap_or_else(|| default_auth.iter().map(|s| s.to_string()).collect());
    for a in &auth {
        if a != "jwt" && a != "ticket" {
            p.add(
                &r.path_of("auth"),
                format!("{a:?} is not \"jwt\" or \"ticket\""),
            );
        }
    }
    Accepts {
        jwt: auth.iter().any(|a| a == "jwt"),
        ticket: auth.iter().any(|a| a == "ticket"),
        resume_grant: kind == Rail::Sse,
    }
}

/// `delivery` (SSE routes), with `coalesce_key` and `key_rate_per_s` for `"ephemeral"`.
pub(super) fn read_delivery(r: &mut Reader<'_>, kind: Rail, p: &mut Problems) -> Delivery {
    let coalesce_key = r.string("coalesce_key", p);
    let key_rate = r.uint("key_rate_per_s", p);
    let ephemeral = match r.string("delivery", p).as_deref() {
        None | Some("durable") => false,
        Some("ephemeral") => true,
        Some(other) => {
            p.add(
                &r.path_of("delivery"),
                format!("{other:?} is not \"durable\" or \"ephemeral\""),
            );
            false
        }
    };
    if ephemeral && kind != Rail::Sse {
        p.add(
            &r.path_of("delivery"),
            "\"ephemeral\" applies to sse routes",
        );
    }
    if !ephemeral && (coalesce_key.is_some() || key_rate.is_some()) {
        p.add(
            &r.path_of("delivery"),
            "coalesce_key and key_rate_per_s need delivery = \"ephemeral\"",
        );
    }
    if !ephemeral {
        return Delivery::Durable;
    }
    let coalesce_key = coalesce_key.unwrap_or_else(|| "/actor_id".into());
    if !coalesce_key.starts_with('/') {
        p.add(
            &r.path_of("coalesce_key"),
            format!("{coalesce_key:?} is not a JSON pointer such as \"/actor_id\""),
        );
    }
    Delivery::Ephemeral(Ephemeral {
        coalesce_key,
        key_rate_per_s: key_rate.map_or(60, |v| v.min(u64::from(u32::MAX)) as u32),
    })
}

/// `resource_kind`: a lower-case name (`thread`, `canvas`, …) that goes into registry URLs.
pub(super) fn read_resource_kind(r: &mut Reader<'_>, p: &mut Problems) -> String {
    let kind = r
        .string("resource_kind", p)
        .unwrap_or_else(|| "thread".into());
    if !railgate_policy::thread::valid_kind(&kind) {
        p.add(
            &r.path_of("resource_kind"),
            format!("{kind:?} is not a lower-case name such as \"canvas\" (a-z, 0-9, _)"),
        );
    }
    kind
}
