//! Header hygiene both ways: hop-by-hop headers (and every header `Connection` names) are
//! stripped, the verified context replaces anything the client sent, `X-Railgate-*` from
//! clients is dropped, and forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`,
//! `X-Original-URL`, …) are the gateway's own unless the peer is a trusted front proxy.

use crate::admission::field_header;
use crate::header_names::{TRACEPARENT, X_REQUEST_ID};
use crate::proxy::forwarded::{self, forwarding, Forwarding, Peer, Value};
use crate::proxy::forwarded::{FORWARDING_HEADERS, X_FORWARDED_FOR};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use railgate_policy::field::traceparent_trace_id;
use railgate_policy::{Field, RequestContext};

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies strip in practice.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers the gateway owns towards the upstream; client copies are always removed.
const CONTEXT_HEADERS: &[&str] = &["x-user-id", "x-request-id", "traceparent", "tracestate"];

const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// A copy of `headers` that owns its values. Values hyper parsed point into the connection's
/// read buffer; a long-lived copy of them (an upstream stream's reconnect headers) would keep
/// that whole buffer alive for the stream's life.
pub fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let Ok(mut v) = HeaderValue::from_bytes(value.as_bytes()) {
            v.set_sensitive(value.is_sensitive());
            out.append(name.clone(), v);
        }
    }
    out
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    remove_where(headers, |n, _| hop_by_hop(n, &named));
}

/// Whether `name` is hop-by-hop: one of [`HOP_BY_HOP`] or `named` by the `Connection` header.
fn hop_by_hop(name: &HeaderName, named: &[HeaderName]) -> bool {
    class(name) == Class::HopByHop || named.contains(name)
}

/// What a request header is to the gateway, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// One of [`HOP_BY_HOP`].
    HopByHop,
    /// A context field's header: the gateway's to set (or to keep, as verified).
    Field(Field),
    /// One of [`CONTEXT_HEADERS`]: the gateway's to set.
    Context,
    /// One of [`FORWARDING_HEADERS`].
    Forwarding,
    /// Anything else.
    Other,
}

/// A header name's [`Class`]: one hash lookup rather than a comparison with every listed name.
fn class(name: &HeaderName) -> Class {
    static CLASSES: std::sync::LazyLock<foldhash::HashMap<&'static str, Class>> =
        std::sync::LazyLock::new(|| {
            let fields = Field::ALL.iter().map(|f| (f.header(), Class::Field(*f)));
            let hop = HOP_BY_HOP.iter().map(|n| (*n, Class::HopByHop));
            let context = CONTEXT_HEADERS.iter().map(|n| (*n, Class::Context));
            let forwarding = FORWARDING_HEADERS.iter().map(|n| (*n, Class::Forwarding));
            hop.chain(fields).chain(context).chain(forwarding).collect()
        });
    CLASSES.get(name.as_str()).copied().unwrap_or(Class::Other)
}

/// The headers a `Connection` header names (hop-by-hop by RFC 9110 §7.6.1).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// Removes every header `drop` picks for any of its values (all its values then): one lookup
/// per name dropped, the kept headers untouched (rebuilding the map would hash every kept
/// header again, and a client that sends its context headers has some dropped on every
/// request). `drop` sees every value, a name's values one after another.
fn remove_where(headers: &mut HeaderMap, mut drop: impl FnMut(&HeaderName, &HeaderValue) -> bool) {
    let mut dropped: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if drop(name, value) && dropped.last() != Some(name) {
            dropped.push(name.clone());
        }
    }
    for name in &dropped {
        headers.remove(name);
    }
}

/// Prepares the client's headers for the upstream in place: hygiene, the verified context,
/// forwarding (see `Screen`).
pub fn to_upstream(headers: &mut HeaderMap, ctx: &RequestContext, fwd: &Forwarding) {
    let mut screen = Screen::new(headers, ctx, fwd);
    remove_where(headers, |n, v| screen.drops(n, v));
    // Room for what follows at once, rather than the map growing as it is inserted.
    headers.reserve(ADDED_HEADERS);
    // Every name added was dropped from the client's headers: inserting appends.
    screen.add(|name, value| {
        if let Some(v) = value.into_header() {
            headers.insert(name, v);
        }
    });
}

/// The header lines of a request to `uri` as the upstream gets them, for the gateway's own
/// upstream client: the client's headers as [`write_lines`] writes them, its `Host` giving way to
/// the authority of `uri` (the upstream's). `skip` names further headers the caller writes itself.
pub fn write_upstream(
    out: &mut Vec<u8>,
    uri: &http::Uri,
    headers: &HeaderMap,
    ctx: &RequestContext,
    fwd: &Forwarding,
    skip: &[HeaderName],
) {
    let skipped = |name: &HeaderName| *name == http::header::HOST || skip.contains(name);
    write_lines(out, headers, ctx, fwd, skipped);
    if let Some(authority) = uri.authority() {
        line(out, "host", authority.as_str().as_bytes());
    }
}

/// The same headers as [`to_upstream`] makes, written as the lines of a request head
/// (`name: value` and CRLF) without a header map in between. Names `skip` holds are the
/// caller's: the client's are screened, then left out. A name's values stay together and in
/// order, the gateway's headers follow.
fn write_lines(
    out: &mut Vec<u8>,
    headers: &HeaderMap,
    ctx: &RequestContext,
    fwd: &Forwarding,
    skip: impl Fn(&HeaderName) -> bool,
) {
    let mut screen = Screen::new(headers, ctx, fwd);
    // The name being written, where its lines began, and whether any of its values dropped it.
    let mut run: Option<(&HeaderName, usize, bool)> = None;
    for (name, value) in headers {
        // One key per name in the map: a name's values share its key, by address.
        let (_, start, dropped) = match &mut run {
            Some(r) if std::ptr::eq(r.0, name) => r,
            _ => run.insert((name, out.len(), false)),
        };
        *dropped |= screen.drops(name, value) || skip(name);
        // A later value can drop a name whose first was kept: its lines are taken back.
        if *dropped {
            out.truncate(*start);
        } else {
            line(out, name.as_str(), value.as_bytes());
        }
    }
    let (by, added) = screen.finish();
    let mut write = |out: &mut Vec<u8>, name: HeaderName, value: Value<'_>| {
        if valid_value(value.as_bytes()) {
            line(out, name.as_str(), value.as_bytes());
        }
    };
    match by.peer.trusted {
        true => by.add(&mut |name, value| write(out, name, value)),
        false => forwarded::untrusted_lines(out, by.peer.ip, by.host, &mut write),
    }
    added.add(|name, value| write(out, name, value));
}

/// Room for the lines the gateway adds to a request head it writes (forwarding, the verified
/// context, ids, `traceparent`, `Host`, `Accept`), beside the client's headers at 64 bytes each.
pub const HEAD_ROOM: usize = 768;

/// Appends a request line (`METHOD target HTTP/1.1` and its CRLF) to a request head.
pub fn request_line(out: &mut Vec<u8>, method: &str, target: &str) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// Appends `name: value` and its CRLF to a request head.
pub fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether `value` may be a header value: the rule of `http::HeaderValue` (visible ASCII,
/// space, tab and obs-text; no control character), checked without an early exit.
pub fn valid_value(value: &[u8]) -> bool {
    value
        .iter()
        .fold(true, |ok, &b| ok & ((b >= 32 && b != 127) | (b == b'\t')))
}

/// The one pass over a client's headers that decides what the upstream must not get
/// ([`Screen::drops`]) and learns what the gateway's own headers need ([`Screen::add`]).
struct Screen<'a> {
    ctx: &'a RequestContext,
    fwd: &'a Forwarding,
    /// The headers `Connection` names.
    named: Vec<HeaderName>,
    /// Context fields seen, and those sent once with exactly the verified value.
    seen: u16,
    as_verified: u16,
    host: Once,
    traceparent: Once,
    /// A trusted front proxy's `X-Forwarded-For` values, in order.
    chain: Vec<HeaderValue>,
}

/// A header's value when it was sent exactly once.
enum Once {
    None,
    One(HeaderValue),
    Many,
}

impl Once {
    fn see(&mut self, v: &HeaderValue) {
        // Cloned values share the request's buffer: no copy, no second validation.
        *self = match self {
            Once::None => Once::One(v.clone()),
            _ => Once::Many,
        };
    }

    fn single(self) -> Option<HeaderValue> {
        match self {
            Once::One(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> Screen<'a> {
    fn new(headers: &HeaderMap, ctx: &'a RequestContext, fwd: &'a Forwarding) -> Screen<'a> {
        Screen {
            ctx,
            fwd,
            named: connection_named(headers),
            seen: 0,
            as_verified: 0,
            host: Once::None,
            traceparent: Once::None,
            chain: Vec::new(),
        }
    }

    /// Whether the upstream must not get this client header: hop-by-hop headers and those
    /// `Connection` names, the gateway's own headers, forwarding headers unless from a trusted
    /// proxy (whose `X-Forwarded-For` is replaced by the chain with this hop), `Authorization`
    /// unless forwarded, and every context field's header except one sent once with exactly
    /// the verified value, which stays as it is. Sees a name's values one after another.
    fn drops(&mut self, n: &HeaderName, v: &HeaderValue) -> bool {
        let class = class(n);
        let drop = match class {
            Class::Field(f) => self.seen & field_bit(f) != 0 || self.ctx.get(f) != v.to_str().ok(),
            Class::HopByHop => true,
            Class::Context => {
                if n == TRACEPARENT {
                    self.traceparent.see(v);
                }
                true
            }
            Class::Forwarding if self.fwd.peer.trusted && n == X_FORWARDED_FOR => {
                self.chain.push(v.clone());
                true
            }
            Class::Forwarding => !self.fwd.peer.trusted,
            Class::Other => {
                if n == http::header::HOST {
                    self.host.see(v);
                }
                n.as_str().starts_with("x-railgate-")
            }
        } || self.named.contains(n)
            || (!self.fwd.authorization && n == http::header::AUTHORIZATION);
        if let Class::Field(f) = class {
            // A second value drops the name even when the first was the verified one.
            self.seen |= field_bit(f);
            self.as_verified = match drop {
                false => self.as_verified | field_bit(f),
                true => self.as_verified & !field_bit(f),
            };
        }
        drop
    }

    /// What the pass learned for the gateway's own headers: the forwarding headers' part,
    /// and the rest's.
    fn finish(self) -> (ForwardedBy, Added<'a>) {
        let by = ForwardedBy {
            peer: self.fwd.peer,
            host: self.host.single(),
            chain: self.chain,
        };
        let added = Added {
            ctx: self.ctx,
            as_verified: self.as_verified,
            traceparent: self.traceparent.single(),
        };
        (by, added)
    }

    /// Hands the gateway's headers to `put`: forwarding ([`ForwardedBy::add`]), then the
    /// others ([`Added::add`]).
    fn add(self, mut put: impl FnMut(HeaderName, Value<'_>)) {
        let (by, added) = self.finish();
        by.add(&mut put);
        added.add(put);
    }
}

/// Who sent a request, as its forwarding headers tell the upstream: the peer, the client's
/// `Host` when sent once, a trusted front proxy's `X-Forwarded-For` values.
struct ForwardedBy {
    peer: Peer,
    host: Option<HeaderValue>,
    chain: Vec<HeaderValue>,
}

impl ForwardedBy {
    fn add(self, put: &mut impl FnMut(HeaderName, Value<'_>)) {
        forwarding(self.peer, self.host, self.chain, put);
    }
}

/// The gateway's headers besides forwarding: the verified context fields not kept as the
/// client sent them (`as_verified`), the user and request ids, `traceparent` (continuing the
/// client's when it sent one).
struct Added<'a> {
    ctx: &'a RequestContext,
    as_verified: u16,
    traceparent: Option<HeaderValue>,
}

impl Added<'_> {
    fn add(self, mut put: impl FnMut(HeaderName, Value<'_>)) {
        let ctx = self.ctx;
        for (f, v) in ctx.fields() {
            if self.as_verified & field_bit(f) == 0 {
                put(field_header(f).clone(), Value::Text(v));
            }
        }
        put(X_USER_ID, Value::Text(&ctx.user_id));
        put(X_REQUEST_ID, Value::Text(&ctx.trace_id));
        let client = self.traceparent.as_ref().map(HeaderValue::as_bytes);
        put(
            TRACEPARENT,
            Value::Owned(traceparent(&ctx.trace_id, client)),
        );
    }
}

fn field_bit(f: Field) -> u16 {
    1 << f.index()
}

/// At most how many headers [`Screen::add`] adds: the context fields, the user and request
/// ids, `traceparent`, and five forwarding headers.
const ADDED_HEADERS: usize = Field::ALL.len() + 3 + 5;

/// Prepares the upstream's response headers for the client.
pub fn to_client(headers: &mut HeaderMap, trace_id: &str) {
    strip_hop_by_hop(headers);
    set(headers, X_REQUEST_ID, trace_id);
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// A `traceparent` for the upstream hop: the trace id when it is 32 hex (else the client's valid
/// trace id, else a fresh one), with a fresh parent id for this hop.
pub fn traceparent(trace_id: &str, client: Option<&[u8]>) -> String {
    let is_trace = trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && trace_id.bytes().any(|b| b != b'0');
    let minted;
    let trace = if is_trace {
        trace_id
    } else if let Some(t) = client.and_then(traceparent_trace_id) {
        t
    } else {
        minted = crate::mint::random_hex_id();
        &minted
    };
    let parent = loop {
        let p = rand::random::<u64>();
        if p != 0 {
            break p;
        }
    };
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    out.push_str(trace);
    out.push('-');
    crate::mint::push_hex(&mut out, u128::from(parent), 16);
    out.push_str("-01");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_copies_every_value_in_order() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let mut secret = HeaderValue::from_static("Bearer t");
        secret.set_sensitive(true);
        h.insert("authorization", secret);
        let d = detached(&h);
        assert_eq!(d, h);
        let a: Vec<_> = d.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert!(d["authorization"].is_sensitive());
    }

    /// A field header sent once with the verified value is kept as it was sent; sent twice
    /// (even with that value), named in `Connection`, or with another value, it is replaced:
    /// in every case the upstream gets the verified value exactly once.
    #[test]
    fn a_verified_field_header_is_kept_once_and_anything_else_replaced() {
        let cases: [&[(&str, &str)]; 5] = [
            &[("x-tenant-id", "t_a")],
            &[("x-tenant-id", "t_a"), ("x-tenant-id", "t_a")],
            &[("x-tenant-id", "t_b"), ("x-tenant-id", "t_a")],
            &[("x-tenant-id", "t_a"), ("connection", "x-tenant-id")],
            &[("X-Mode", "lab"), ("x-tenant-id", "T_A"), ("x-env", "prod")],
        ];
        for sent in cases {
            let mut h = HeaderMap::new();
            for (n, v) in sent {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).expect("n"),
                    v.parse().expect("v"),
                );
            }
            to_upstream(&mut h, &ctx(), &direct("127.0.0.1"));
            for (name, want) in [("x-tenant-id", "t_a"), ("x-mode", "lab"), ("x-env", "dev")] {
                let got: Vec<_> = h.get_all(name).iter().collect();
                assert_eq!(got, vec![want], "{name} after {sent:?}");
            }
            assert!(h.get("connection").is_none(), "{sent:?}");
        }
    }

    fn direct(ip: &str) -> Forwarding {
        Forwarding {
            peer: Peer {
                ip: ip.parse().expect("ip"),
                trusted: false,
            },
            authorization: true,
        }
    }

    fn ctx() -> RequestContext {
        RequestContext::from_parts(
            &[
                (Field::Tenant, "t_a"),
                (Field::Env, "dev"),
                (Field::Mode, "lab"),
            ],
            "u1",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        )
    }

    #[test]
    fn context_replaces_client_copies_and_hygiene_applies() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant-id", "t_evil".parse().expect("v"));
        h.append("x-tenant-id", "t_evil2".parse().expect("v"));
        h.insert("x-user-id", "admin".parse().expect("v"));
        h.insert("x-railgate-internal", "1".parse().expect("v"));
        h.insert("connection", "close, x-custom".parse().expect("v"));
        h.insert("x-custom", "gone".parse().expect("v"));
        h.insert("keep-alive", "timeout=5".parse().expect("v"));
        h.insert("x-project-id", "p_evil".parse().expect("v"));
        h.insert("accept", "text/plain".parse().expect("v"));
        to_upstream(&mut h, &ctx(), &direct("127.0.0.1"));
        assert_eq!(
            h.get_all("x-tenant-id").iter().collect::<Vec<_>>(),
            vec!["t_a"]
        );
        assert_eq!(h["x-user-id"], "u1");
        assert_eq!(h["x-env"], "dev");
        assert_eq!(h["x-mode"], "lab");
        assert!(
            h.get("x-project-id").is_none(),
            "absent from the verified context"
        );
        assert!(h.get("x-railgate-internal").is_none());
        assert!(h.get("x-custom").is_none());
        assert!(h.get("connection").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h["accept"], "text/plain");
        assert_eq!(h["x-request-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let tp = h["traceparent"].to_str().expect("ascii");
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"),
            "{tp}"
        );
    }

    #[test]
    fn removal_keeps_every_value_of_kept_headers_in_order() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().expect("v"));
        h.append("x-tenant-id", "t_evil".parse().expect("v"));
        h.append("x-a", "2".parse().expect("v"));
        h.append("te", "trailers".parse().expect("v"));
        h.append("x-tenant-id", "t_evil2".parse().expect("v"));
        h.append("x-a", "3".parse().expect("v"));
        remove_where(&mut h, |n, _| n == "x-tenant-id" || n == "te");
        assert_eq!(h.len(), 3);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2", "3"]);
        let mut resp = HeaderMap::new();
        resp.insert("content-type", "text/plain".parse().expect("v"));
        resp.insert("connection", "keep-alive".parse().expect("v"));
        resp.insert("keep-alive", "timeout=5".parse().expect("v"));
        to_client(&mut resp, "t1");
        assert_eq!(resp.len(), 2);
        assert_eq!(resp["content-type"], "text/plain");
        assert_eq!(resp["x-request-id"], "t1");
    }

    #[test]
    fn connection_cannot_strip_the_verified_context() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "close, X-Tenant-Id, X-User-Id".parse().expect("v"),
        );
        to_upstream(&mut h, &ctx(), &direct("127.0.0.1"));
        assert_eq!(h["x-tenant-id"], "t_a");
        assert_eq!(h["x-user-id"], "u1");
    }

    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "gw.example:8000".parse().expect("v"));
        h.insert("authorization", "Bearer t".parse().expect("v"));
        for (k, v) in [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "admin.internal"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6;host=admin.internal"),
            ("x-real-ip", "6.6.6.6"),
            ("x-original-url", "/admin/registry/th"),
            ("x-rewrite-url", "/admin"),
        ] {
            h.insert(k, v.parse().expect("v"));
        }
        h
    }

    #[test]
    fn forwarding_headers_from_a_client_are_replaced_by_the_gateways() {
        let mut h = forged();
        to_upstream(&mut h, &ctx(), &direct("203.0.113.7"));
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h["x-real-ip"], "203.0.113.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gw.example:8000");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.7;host=\"gw.example:8000\";proto=http"
        );
        assert!(h.get("x-original-url").is_none() && h.get("x-rewrite-url").is_none());
        assert_eq!(
            h["authorization"], "Bearer t",
            "forwarded unless the route says not"
        );
        let mut h = forged();
        let mut fwd = direct("2001:db8::1");
        fwd.authorization = false;
        to_upstream(&mut h, &ctx(), &fwd);
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";host=\"gw.example:8000\";proto=http"
        );
        assert!(h.get("authorization").is_none());
        // No Host (an HTTP/1.0 client): no host parameter, no X-Forwarded-Host.
        let mut h = HeaderMap::new();
        to_upstream(&mut h, &ctx(), &direct("203.0.113.7"));
        assert_eq!(h["forwarded"], "for=203.0.113.7;proto=http");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn a_trusted_front_proxy_keeps_its_forwarding_headers() {
        let mut h = forged();
        let mut fwd = direct("10.0.0.2");
        fwd.peer.trusted = true;
        to_upstream(&mut h, &ctx(), &fwd);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-original-url"], "/admin/registry/th");
    }

    /// The request head's lines name the same headers with the same values, in the same order
    /// for a name, as the header map: over hand-picked hostile sets (repeated, mixed-case and
    /// `Connection`-named context headers, forged forwarding, a trusted proxy, no forwarded
    /// `Authorization`) and seeded random ones drawn from the names the screen treats apart.
    #[test]
    fn the_written_head_matches_the_prepared_map() {
        use rand::{Rng, SeedableRng};
        let names = [
            "x-tenant-id",
            "x-env",
            "x-mode",
            "x-project-id",
            "host",
            "traceparent",
            "x-forwarded-for",
            "x-forwarded-host",
            "forwarded",
            "x-real-ip",
            "connection",
            "keep-alive",
            "te",
            "authorization",
            "x-railgate-debug",
            "x-user-id",
            "x-other",
        ];
        let values = [
            "t_a",
            "t_b",
            "dev",
            "lab",
            "x-env, te",
            "x-other",
            "1.2.3.4",
            "h:1",
            "\u{e9}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let mut sets: Vec<HeaderMap> = vec![forged(), HeaderMap::new()];
        for _ in 0..400 {
            let mut h = HeaderMap::new();
            for _ in 0..rng.random_range(0..12) {
                let n = names[rng.random_range(0..names.len())];
                let v = values[rng.random_range(0..values.len())];
                h.append(n, HeaderValue::from_bytes(v.as_bytes()).expect("v"));
            }
            sets.push(h);
        }
        for (i, sent) in sets.iter().enumerate() {
            let mut fwd = direct(["127.0.0.1", "2001:db8::7"][i % 2]);
            fwd.peer.trusted = i % 3 == 0;
            fwd.authorization = i % 5 != 0;
            let mut map = sent.clone();
            to_upstream(&mut map, &ctx(), &fwd);
            let mut written = Vec::new();
            write_lines(&mut written, sent, &ctx(), &fwd, |_| false);
            let mut lines: Vec<(String, Vec<u8>)> = written
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let l = l.strip_suffix(b"\r").expect("CRLF");
                    let at = l.windows(2).position(|w| w == b": ").expect("name: value");
                    let name = String::from_utf8(l[..at].to_vec()).expect("name");
                    (name, l[at + 2..].to_vec())
                })
                .collect();
            let mut want: Vec<(String, Vec<u8>)> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            // Stable: a name's values keep their order.
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let parent = |l: &mut Vec<(String, Vec<u8>)>| {
                let tp = l
                    .iter_mut()
                    .find(|(n, _)| n == "traceparent")
                    .expect("traceparent");
                tp.1.truncate(36); // the parent id is fresh per hop
            };
            parent(&mut lines);
            parent(&mut want);
            assert_eq!(lines, want, "set {i}: {sent:?}");
        }
    }

    /// The client's Host gives way to the upstream's; names the caller writes itself are
    /// screened, then left out; a name a later value drops leaves no line.
    #[test]
    fn the_written_head_has_the_upstreams_host_skips_the_callers_names_and_drops_whole_names() {
        let mut h = HeaderMap::new();
        h.append("x-tenant-id", HeaderValue::from_static("t_a"));
        h.append("x-tenant-id", HeaderValue::from_static("t_a"));
        h.append("host", HeaderValue::from_static("gw.example"));
        h.append("accept", HeaderValue::from_static("*/*"));
        h.append("x-kept", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        let fwd = direct("127.0.0.1");
        let uri: http::Uri = "http://up.internal:9000/x".parse().expect("uri");
        write_upstream(&mut out, &uri, &h, &ctx(), &fwd, &[http::header::ACCEPT]);
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with("x-kept: 1\r\nx-forwarded-proto: http\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("x-tenant-id: t_a\r\n").count(), 1, "{text}");
        let names: Vec<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
        assert!(!names.contains(&"accept"), "{text}");
        // The client's Host gives way to the upstream's authority, written last.
        assert_eq!(names.iter().filter(|n| **n == "host").count(), 1, "{text}");
        assert!(text.ends_with("host: up.internal:9000\r\n"), "{text}");
        assert!(text.contains("forwarded: for=127.0.0.1;host=\"gw.example\";proto=http\r\n"));
    }

    #[test]
    fn a_value_is_valid_exactly_when_the_header_map_takes_it() {
        for b in 0..=255u8 {
            let v = [b'a', b, b'z'];
            assert_eq!(
                valid_value(&v),
                HeaderValue::from_bytes(&v).is_ok(),
                "byte {b}"
            );
        }
    }

    #[test]
    fn traceparent_keeps_client_trace_when_request_id_is_not_hex() {
        let client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let tp = traceparent("req-1", Some(client.as_bytes()));
        assert!(
            tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp}"
        );
        assert!(!tp.contains("b7ad6b7169203331"), "a new parent id per hop");
        assert_eq!(traceparent("req-1", None).len(), 55);
        // Whole and well-formed: read back, it names the trace; its parent is 16 hex, not zero.
        let tp = traceparent("4bf92f3577b34da6a3ce929d0e0e4736", None);
        assert_eq!(
            traceparent_trace_id(tp.as_bytes()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let parent = &tp[36..52];
        assert!(parent
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(parent, "0000000000000000");
        assert!(tp.ends_with("-01"));
    }
}
