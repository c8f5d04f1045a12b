//! Stamping event data with verified routing metadata, keeping everything else byte-exact.
//!
//! When an event's data is a JSON object, `routing` is replaced by the verified context and
//! `meta.trace_id` is set; every other member keeps its position and its exact bytes (numbers such
//! as `1e2` or `123456789012345678901234`, escapes, nested objects). Data that is not JSON at all
//! passes through untouched. An upstream event whose `routing` names another tenant or env is
//! reported as foreign; one that names another workspace, canvas, projection, panel or thread —
//! or another resource of the route's kind — than the stream's own is reported as crossing into
//! another scope (a stream without such a key accepts any value of it); and data that looks like JSON (it starts with `{` or `[`) but is not
//! strict JSON — `NaN`, `Infinity`, a lone surrogate escape in a key, trailing bytes — as
//! malformed: other parsers (Python's, JavaScript's) read such text and could find a routing in
//! it that this guard could not check, so both must be dropped.

use railgate_policy::RequestContext;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

mod claims;
mod stamp;
pub use claims::Claims;
pub use stamp::{push_json_str, Stamp};

/// How an upstream event's `routing` crosses a stream's boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crossing {
    /// Another tenant or env.
    Tenant,
    /// Another value of a scope key (the key).
    Scope(String),
}

/// The verified context as a compact JSON object — every present field, `user_id` and
/// `request_id` — as the upstream gets it in a forwarded hello and in every client message.
pub fn verified_context(ctx: &RequestContext) -> String {
    let mut context = serde_json::Map::new();
    for (f, v) in ctx.fields() {
        context.insert(f.key().into(), v.into());
    }
    context.insert("user_id".into(), ctx.user_id.as_str().into());
    context.insert("request_id".into(), ctx.trace_id.as_str().into());
    serde_json::Value::Object(context).to_string()
}

/// What stamping did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stamped {
    /// Not a JSON object: send the data as it was.
    Unchanged,
    /// The stamped JSON object.
    Rewritten(String),
    /// `routing` names another tenant or env, or another scope than the stream's: drop the
    /// event.
    Foreign(Crossing),
    /// Looks like JSON but is not strict JSON: drop the event (it cannot be checked).
    Malformed,
}

/// One member of a JSON object, as slices of the original text.
struct Member<'a> {
    name: Cow<'a, str>,
    key_raw: &'a str,
    value: &'a RawValue,
}

/// The members as the parser found them (`key_raw` still empty: [`members`] fills it in).
struct Members<'a>(Vec<Member<'a>>);

/// A member's name, borrowed from the text unless it has escapes (no allocation per member).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // (Room for a typical event's members without growing.)
                let mut out = Vec::with_capacity(8);
                while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push(Member {
                        name,
                        key_raw: "",
                        value,
                    });
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Splits a JSON object into members with their raw key text; `None` if `text` is not an object.
fn members(text: &str) -> Option<Vec<Member<'_>>> {
    let open = first_non_ws(text);
    if text.as_bytes().get(open) != Some(&b'{') {
        return None;
    }
    let Members(mut list) = serde_json::from_str::<Members<'_>>(text).ok()?;
    let (bytes, base) = (text.as_bytes(), text.as_ptr() as usize);
    // Between one value's end and the next value: whitespace, a comma, the key, whitespace, a
    // colon, whitespace. (The parser has checked that shape; only the key's bounds are wanted.)
    let mut prev_end = open + 1;
    for m in &mut list {
        let start = m.value.get().as_ptr() as usize - base;
        let skipped = |b: &u8| is_ws_byte(*b) || *b == b',';
        let key_start = prev_end
            + bytes
                .get(prev_end..start)?
                .iter()
                .position(|b| !skipped(b))?;
        let before_value = bytes.get(key_start..start)?;
        let colon = before_value.iter().rposition(|&b| b == b':')?;
        let key_len = before_value[..colon]
            .iter()
            .rposition(|&b| !is_ws_byte(b))?
            + 1;
        m.key_raw = text.get(key_start..key_start + key_len)?;
        prev_end = start + m.value.get().len();
    }
    Some(list)
}

/// JSON whitespace.
fn is_ws_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where `text` has its first byte that is not JSON whitespace (its length if none).
fn first_non_ws(text: &str) -> usize {
    text.bytes()
        .position(|b| !is_ws_byte(b))
        .unwrap_or(text.len())
}

fn push_member(out: &mut String, first: &mut bool, key_raw: &str, value: &str) {
    if !*first {
        out.push(',');
    }
    *first = false;
    out.push_str(key_raw);
    out.push(':');
    out.push_str(value);
}

/// `meta` with `trace_id` set, keeping its other members.
fn merged_meta(meta: Option<&RawValue>, trace_json: &str) -> String {
    let Some(existing) = meta.and_then(|m| members(m.get())) else {
        return format!("{{\"trace_id\":{trace_json}}}");
    };
    let mut out = String::from("{");
    let mut first = true;
    let mut written = false;
    for m in &existing {
        if m.name == "trace_id" {
            if !written {
                push_member(&mut out, &mut first, "\"trace_id\"", trace_json);
                written = true;
            }
        } else {
            push_member(&mut out, &mut first, m.key_raw, m.value.get());
        }
    }
    if !written {
        push_member(&mut out, &mut first, "\"trace_id\"", trace_json);
    }
    out.push('}');
    out
}

/// Whether `text` looks like JSON — its first byte after JSON whitespace is `{` or `[` — but is
/// not strict JSON (`members` is its parse as an object, done by the caller).
fn malformed(text: &str, members: Option<&[Member<'_>]>) -> bool {
    match text.as_bytes().get(first_non_ws(text)) {
        Some(b'{') => members.is_none(),
        Some(b'[') => serde_json::from_str::<serde::de::IgnoredAny>(text).is_err(),
        _ => false,
    }
}

/// An event's data parsed once, ready to be stamped for any number of streams.
pub struct Prepared<'a> {
    /// `None` when the data is not a JSON object.
    members: Option<Vec<Member<'a>>>,
    /// Looks like JSON, is not strict JSON.
    malformed: bool,
    /// Every `routing` member the upstream wrote.
    claims: Claims,
    len: usize,
    /// The text holds a line end somewhere.
    multiline: bool,
}

/// Parses `data` once.
pub fn prepare(data: &str) -> Prepared<'_> {
    let members = members(data);
    let mut claims = Vec::new();
    for m in members.iter().flatten().filter(|m| m.name == "routing") {
        for r in members_of_value(m.value) {
            claims.push((
                r.name.into_owned(),
                serde_json::from_str::<String>(r.value.get()).ok(),
            ));
        }
    }
    Prepared {
        malformed: malformed(data, members.as_deref()),
        members,
        claims: Claims(claims),
        len: data.len(),
        multiline: memchr::memchr2(b'\n', b'\r', data.as_bytes()).is_some(),
    }
}

fn members_of_value(v: &RawValue) -> Vec<Member<'_>> {
    members(v.get()).unwrap_or_default()
}

impl Prepared<'_> {
    /// The raw JSON text of the data's top-level member `name` (the last one, as a JSON
    /// parser reads duplicates), `Some(None)` when there is none; `None` when the data is not a
    /// JSON object.
    pub fn member(&self, name: &str) -> Option<Option<&str>> {
        let list = self.members.as_ref()?;
        Some(
            list.iter()
                .rev()
                .find(|m| m.name == name)
                .map(|m| m.value.get()),
        )
    }

    /// Whether the data looks like JSON but is not strict JSON (it must be dropped).
    pub fn is_malformed(&self) -> bool {
        self.malformed
    }

    /// What the upstream's `routing` claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// [`Prepared::claims`], kept beyond the data's life.
    pub fn into_claims(self) -> Claims {
        self.claims
    }

    /// When the data is a one-line JSON object without `routing` or `meta` (the common case), the
    /// stamped object is this prefix (`{` + the members + `,`) followed by each stream's
    /// [`Stamp::tail`]: the event is rendered once and every stream only appends its own tail.
    /// Appends the prefix to `out` and says whether the data allows one (nothing is written when
    /// it does not).
    pub fn write_shared_prefix(&self, out: &mut Vec<u8>) -> bool {
        let Some(list) = self.members.as_ref() else {
            return false;
        };
        if list.iter().any(|m| m.name == "routing" || m.name == "meta") {
            return false;
        }
        // A line end in a name or value keeps the event out; one check of the whole text first
        // (one-line data, the usual case, needs no other).
        let has_line_end = |t: &str| memchr::memchr2(b'\n', b'\r', t.as_bytes()).is_some();
        if self.multiline
            && list
                .iter()
                .any(|m| has_line_end(m.key_raw) || has_line_end(m.value.get()))
        {
            return false;
        }
        out.reserve(self.len + 2);
        out.push(b'{');
        for m in list {
            out.extend_from_slice(m.key_raw.as_bytes());
            out.push(b':');
            out.extend_from_slice(m.value.get().as_bytes());
            out.push(b',');
        }
        true
    }

    /// [`Prepared::write_shared_prefix`] as a string of its own.
    #[cfg(test)]
    pub fn shared_prefix(&self) -> Option<String> {
        let mut out = Vec::new();
        match self.write_shared_prefix(&mut out) {
            true => String::from_utf8(out).ok(),
            false => None,
        }
    }

    /// Stamps for one stream.
    pub fn stamp(&self, stamp: &Stamp) -> Stamped {
        if self.malformed {
            return Stamped::Malformed;
        }
        let Some(list) = &self.members else {
            return Stamped::Unchanged;
        };
        if let Some(crossing) = self.claims.crossing(stamp) {
            return Stamped::Foreign(crossing);
        }
        let mut out =
            String::with_capacity(self.len + stamp.routing().len() + stamp.trace_json().len() + 40);
        out.push('{');
        let mut first = true;
        let (mut routing_done, mut meta_done) = (false, false);
        for m in list {
            match m.name.as_ref() {
                "routing" => {
                    if !routing_done {
                        push_member(&mut out, &mut first, "\"routing\"", stamp.routing());
                        routing_done = true;
                    }
                }
                "meta" => {
                    if !meta_done {
                        push_member(
                            &mut out,
                            &mut first,
                            "\"meta\"",
                            &merged_meta(Some(m.value), stamp.trace_json()),
                        );
                        meta_done = true;
                    }
                }
                _ => push_member(&mut out, &mut first, m.key_raw, m.value.get()),
            }
        }
        if !routing_done {
            push_member(&mut out, &mut first, "\"routing\"", stamp.routing());
        }
        if !meta_done {
            push_member(
                &mut out,
                &mut first,
                "\"meta\"",
                &merged_meta(None, stamp.trace_json()),
            );
        }
        out.push('}');
        Stamped::Rewritten(out)
    }
}

/// Stamps `data` for one stream (prepare + stamp).
pub fn stamp(data: &str, st: &Stamp) -> Stamped {
    prepare(data).stamp(st)
}

/// A client → upstream text message, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientText {
    /// Not JSON: forwarded as it is.
    Plain,
    /// A JSON object, with `routing` and `context` replaced by the verified ones.
    Object(String),
    /// A second hello (`"type":"hello"`): refused.
    Hello,
    /// Looks like JSON but is not strict JSON: refused.
    Malformed,
}

/// Checks a client's text message and gives a JSON object the verified `routing` and `context`
/// (both compact JSON objects), whatever the client put there.
pub fn client_text(data: &str, routing: &str, context: &str) -> ClientText {
    let list = members(data);
    if malformed(data, list.as_deref()) {
        return ClientText::Malformed;
    }
    let Some(list) = list else {
        return ClientText::Plain;
    };
    let is_hello = list.iter().any(|m| {
        m.name == "type"
            && serde_json::from_str::<String>(m.value.get()).is_ok_and(|t| t == "hello")
    });
    if is_hello {
        return ClientText::Hello;
    }
    let mut out = String::with_capacity(data.len() + routing.len() + context.len() + 24);
    out.push('{');
    let mut first = true;
    for m in list
        .iter()
        .filter(|m| m.name != "routing" && m.name != "context")
    {
        push_member(&mut out, &mut first, m.key_raw, m.value.get());
    }
    push_member(&mut out, &mut first, "\"routing\"", routing);
    push_member(&mut out, &mut first, "\"context\"", context);
    out.push('}');
    ClientText::Object(out)
}

#[cfg(test)]
mod tests;
