//! Header hygiene both ways: hop-by-hop headers (and every header `Connection` names) are
//! stripped, the verified context replaces anything the client sent, `X-Railgate-*` from
//! clients is dropped, and forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`,
//! `X-Original-URL`, …) are the gateway's own unless the peer is a trusted front proxy.

use crate::admission::field_header;
use crate::header_names::{TRACEPARENT, X_REQUEST_ID};
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
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
// (Made at compile time: `from_static` called at run time parses the name on every request.)
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Headers that say where a request came from or what it asked for before a proxy rewrote it.
/// From a client they are lies a backend may believe; only a trusted front proxy may send them.
const FORWARDING_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];

/// Who sent a request, as the upstream should learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The connection's peer address.
    pub ip: std::net::IpAddr,
    /// The peer is a front proxy listed in `trusted_proxies`: its forwarding headers stand.
    pub trusted: bool,
}

/// What the upstream learns of a request besides its verified context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// Who sent the request.
    pub peer: Peer,
    /// Whether the client's `Authorization` goes on (the route's `forward_authorization`).
    pub authorization: bool,
}

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

/// Prepares the client's headers for the upstream: hygiene, the verified context, forwarding.
pub fn to_upstream(headers: &mut HeaderMap, ctx: &RequestContext, fwd: &Forwarding) {
    // Cloned values share the request's buffer: no copy, no second validation.
    let client_traceparent = single(headers, &TRACEPARENT).cloned();
    let host = single(headers, &http::header::HOST).cloned();
    let as_verified = clean(headers, ctx, fwd);
    // Room for what follows at once, rather than the map growing as it is inserted.
    headers.reserve(ADDED_HEADERS);
    forwarding(headers, fwd.peer, host);
    for (f, v) in ctx.fields() {
        if as_verified & field_bit(f) == 0 {
            set(headers, field_header(f).clone(), v);
        }
    }
    set(headers, X_USER_ID, &ctx.user_id);
    set(headers, X_REQUEST_ID, &ctx.trace_id);
    let client = client_traceparent.as_ref().map(HeaderValue::as_bytes);
    set_owned(headers, TRACEPARENT, traceparent(&ctx.trace_id, client));
}

/// Removes what the upstream must not get from the client: hop-by-hop headers and those
/// `Connection` names, the gateway's own headers, forwarding headers unless from a trusted
/// proxy, `Authorization` unless forwarded, and every context field's header except one sent
/// once with exactly the verified value, which stays as it is (removing it to insert the same
/// value again cost a removal, a copy and an insertion per field). Returns those kept, as
/// [`field_bit`]s.
fn clean(headers: &mut HeaderMap, ctx: &RequestContext, fwd: &Forwarding) -> u16 {
    let named = connection_named(headers);
    let (mut seen, mut as_verified) = (0u16, 0u16);
    remove_where(headers, |n, v| {
        let class = class(n);
        let drop = match class {
            Class::Field(f) => seen & field_bit(f) != 0 || ctx.get(f) != v.to_str().ok(),
            Class::HopByHop | Class::Context => true,
            Class::Forwarding => !fwd.peer.trusted,
            Class::Other => n.as_str().starts_with("x-railgate-"),
        } || named.contains(n)
            || (!fwd.authorization && n == http::header::AUTHORIZATION);
        if let Class::Field(f) = class {
            // A second value drops the name even when the first was the verified one.
            seen |= field_bit(f);
            as_verified = match drop {
                false => as_verified | field_bit(f),
                true => as_verified & !field_bit(f),
            };
        }
        drop
    });
    as_verified
}

fn field_bit(f: Field) -> u16 {
    1 << f.index()
}

/// At most how many headers [`to_upstream`] adds: the context fields, the user and request
/// ids, `traceparent`, and five forwarding headers.
const ADDED_HEADERS: usize = Field::ALL.len() + 3 + 5;

/// Forwarding headers: a trusted front proxy's stand, with this hop appended to
/// `X-Forwarded-For`; anyone else's are replaced by the gateway's own account of the request.
fn forwarding(headers: &mut HeaderMap, peer: Peer, host: Option<HeaderValue>) {
    let ip = ip_text(peer.ip);
    if peer.trusted {
        let chain: Vec<String> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .chain([ip])
            .collect();
        set_owned(headers, X_FORWARDED_FOR, chain.join(", "));
        return;
    }
    // The client's own forwarding headers are gone already (`to_upstream`).
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    let mut forwarded = String::with_capacity(64);
    forwarded.push_str("for=");
    match peer.ip {
        std::net::IpAddr::V6(_) => {
            forwarded.push_str("\"[");
            forwarded.push_str(&ip);
            forwarded.push_str("]\"");
        }
        std::net::IpAddr::V4(_) => forwarded.push_str(&ip),
    }
    if let Some(v) = owned_value(ip) {
        headers.insert(X_REAL_IP, v.clone());
        headers.insert(X_FORWARDED_FOR, v);
    }
    if let Some(h) = host {
        if let Ok(text) = h.to_str() {
            forwarded.push_str(";host=");
            forwarded.push_str(&serde_json::to_string(text).unwrap_or_default());
            headers.insert(X_FORWARDED_HOST, h);
        }
    }
    forwarded.push_str(";proto=http");
    set_owned(headers, FORWARDED, forwarded);
}

/// `ip` as text, an IPv4 address without going through `Display` (its padding support made it
/// a visible share of a plain request's work).
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// Prepares the upstream's response headers for the client.
pub fn to_client(headers: &mut HeaderMap, trace_id: &str) {
    strip_hop_by_hop(headers);
    set(headers, X_REQUEST_ID, trace_id);
}

/// The value of a header sent exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut it = headers.get_all(name).iter();
    match (it.next(), it.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Sets a value the gateway made, handing its bytes over rather than copying them.
fn set_owned(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Some(v) = owned_value(value) {
        headers.insert(name, v);
    }
}

fn owned_value(value: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
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

    #[test]
    fn an_address_is_written_as_display_writes_it() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut cases: Vec<std::net::IpAddr> = ["0.0.0.0", "255.255.255.255", "10.0.9.100", "::1"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        cases.extend((0..2000).map(|_| std::net::IpAddr::from(rng.random::<[u8; 4]>())));
        for ip in cases {
            assert_eq!(ip_text(ip), ip.to_string());
        }
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
