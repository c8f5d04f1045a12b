//! What the upstream learns of where a request came from: the peer, and the forwarding headers
//! (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) the gateway writes for it, or a trusted front
//! proxy's kept; and the values the gateway adds to a request's headers ([`Value`]).

use crate::inject::push_json_str;
use http::header::{HeaderName, HeaderValue};

/// The client chain of addresses, each proxy appending its peer.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
// (Made at compile time: `from_static` called at run time parses the name on every request.)
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Headers that say where a request came from or what it asked for before a proxy rewrote it.
/// From a client they are lies a backend may believe; only a trusted front proxy may send them.
pub const FORWARDING_HEADERS: &[&str] = &[
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

/// A header value the gateway adds.
pub enum Value<'a> {
    /// A client's value, passed on.
    Shared(HeaderValue),
    /// Text the gateway made.
    Owned(String),
    /// Text of the verified context.
    Text(&'a str),
    /// Text fixed in the gateway.
    Static(&'static str),
}

impl Value<'_> {
    /// The value's bytes, as a request head carries them.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Shared(v) => v.as_bytes(),
            Value::Owned(s) => s.as_bytes(),
            Value::Text(s) | Value::Static(s) => s.as_bytes(),
        }
    }

    /// As a header map holds it: made text handed over, not copied; `None` when not valid.
    pub fn into_header(self) -> Option<HeaderValue> {
        match self {
            Value::Shared(v) => Some(v),
            Value::Owned(s) => owned_value(s),
            Value::Text(s) => HeaderValue::from_str(s).ok(),
            Value::Static(s) => Some(HeaderValue::from_static(s)),
        }
    }
}

/// A value the gateway made, its bytes handed over rather than copied.
fn owned_value(value: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// Forwarding headers: a trusted front proxy's stand, with this hop appended to
/// `X-Forwarded-For` (`chain`, the proxy's values); anyone else's were dropped and are replaced
/// by the gateway's own account of the request.
pub fn forwarding(
    peer: Peer,
    host: Option<HeaderValue>,
    chain: Vec<HeaderValue>,
    put: &mut impl FnMut(HeaderName, Value<'_>),
) {
    let ip = IpText::new(peer.ip);
    let ip = ip.as_str();
    if peer.trusted {
        let mut joined = String::new();
        for v in chain.iter().filter_map(|v| v.to_str().ok()) {
            joined.push_str(v);
            joined.push_str(", ");
        }
        joined.push_str(ip);
        put(X_FORWARDED_FOR, Value::Owned(joined));
        return;
    }
    put(X_FORWARDED_PROTO, Value::Static("http"));
    let mut forwarded = String::with_capacity(64);
    forwarded.push_str("for=");
    match peer.ip {
        std::net::IpAddr::V6(_) => {
            forwarded.push_str("\"[");
            forwarded.push_str(ip);
            forwarded.push_str("]\"");
        }
        std::net::IpAddr::V4(_) => forwarded.push_str(ip),
    }
    put(X_REAL_IP, Value::Text(ip));
    put(X_FORWARDED_FOR, Value::Text(ip));
    if let Some(h) = host {
        let valid = h.to_str().map(|text| {
            forwarded.push_str(";host=");
            push_json_str(&mut forwarded, text);
        });
        if valid.is_ok() {
            put(X_FORWARDED_HOST, Value::Shared(h));
        }
    }
    forwarded.push_str(";proto=http");
    put(FORWARDED, Value::Owned(forwarded));
}

/// The last forwarding lines [`untrusted_lines`] wrote on this thread, and what they were
/// written for.
struct Last {
    ip: std::net::IpAddr,
    host: Option<Box<[u8]>>,
    lines: Vec<u8>,
}

thread_local! {
    static LAST: std::cell::RefCell<Option<Last>> = const { std::cell::RefCell::new(None) };
}

/// Appends to `out` the forwarding headers of a request from `ip`, a peer that is not a trusted
/// proxy, with `host` its `Host` when sent once: the lines `write` makes of what [`forwarding`]
/// gives. They depend on the address and `Host` alone, which repeat from request to request
/// (a connection's, a front balancer's), so the last lines written are kept per thread (a copy
/// of `Host` beside them, not the request's buffer) and written again while both repeat.
pub fn untrusted_lines(
    out: &mut Vec<u8>,
    ip: std::net::IpAddr,
    host: Option<HeaderValue>,
    write: &mut impl FnMut(&mut Vec<u8>, HeaderName, Value<'_>),
) {
    LAST.with_borrow_mut(|last| {
        let sent = host.as_ref().map(HeaderValue::as_bytes);
        let hit = last
            .as_ref()
            .is_some_and(|l| l.ip == ip && l.host.as_deref() == sent);
        if !hit {
            let mut lines = Vec::with_capacity(128);
            let key = sent.map(Box::from);
            let peer = Peer { ip, trusted: false };
            forwarding(peer, host, Vec::new(), &mut |n, v| write(&mut lines, n, v));
            *last = Some(Last {
                ip,
                host: key,
                lines,
            });
        }
        if let Some(l) = last {
            out.extend_from_slice(&l.lines);
        }
    });
}

/// An address as text, written on the stack; an IPv4 address without going through `Display`
/// (its padding support made it a visible share of a plain request's work).
struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    fn new(ip: std::net::IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if octet >= 100 {
                        t.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        t.push(b'0' + octet / 10 % 10);
                    }
                    t.push(b'0' + octet % 10);
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write;
                let mut rest = &mut t.buf[..];
                // The longest IPv6 text is 45 bytes: the write cannot run out of room.
                let _ = write!(rest, "{v6}");
                t.len = 45 - rest.len();
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(out: &mut Vec<u8>, name: HeaderName, value: Value<'_>) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// The kept lines are written again only for the same address and `Host`: every answer,
    /// repeated or not, is what the lines made afresh are.
    #[test]
    fn forwarding_lines_kept_from_the_last_request_are_its_peers_and_hosts_alone() {
        let v4: std::net::IpAddr = "10.0.0.7".parse().expect("v4");
        let v6: std::net::IpAddr = "2001:db8::7".parse().expect("v6");
        let host = |h: &'static str| Some(HeaderValue::from_static(h));
        let cases = [
            (v4, host("a.example")),
            (v4, host("a.example")),
            (v4, host("b.example")),
            (v4, None),
            (v4, None),
            (v6, None),
            (v4, host("a.example")),
            (v6, host("a.example")),
            (v6, host("a.example")),
            (v4, host("a.example:8080")),
        ];
        for (i, (ip, host)) in cases.into_iter().enumerate() {
            let mut fresh = Vec::new();
            let peer = Peer { ip, trusted: false };
            forwarding(peer, host.clone(), Vec::new(), &mut |n, v| {
                write(&mut fresh, n, v)
            });
            let mut out = b"x-kept: 1\r\n".to_vec();
            untrusted_lines(&mut out, ip, host, &mut write);
            assert_eq!(&out[..11], b"x-kept: 1\r\n");
            assert_eq!(
                String::from_utf8_lossy(&out[11..]),
                String::from_utf8_lossy(&fresh),
                "case {i}"
            );
        }
        let mut out = Vec::new();
        untrusted_lines(&mut out, v4, host("c.example"), &mut write);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "x-forwarded-proto: http\r\nx-real-ip: 10.0.0.7\r\nx-forwarded-for: 10.0.0.7\r\n\
             x-forwarded-host: c.example\r\nforwarded: for=10.0.0.7;host=\"c.example\";proto=http\r\n"
        );
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
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }
}
