//! The strict reading of an upstream's HTTP/1 response head (RFC 9112) and the decoding of its
//! body, for the gateway's own upstream exchanges: an SSE stream's and a bodiless HTTP-rail
//! request's.
//!
//! A head whose body could be read two ways is refused: `Content-Length` with
//! `Transfer-Encoding` (RFC 9112 §6.3 asks for it to be handled as an error), differing
//! `Content-Length`s, a transfer coding that does not end in `chunked`.

use super::chunked::Chunked;

/// Most response headers accepted.
pub const MAX_HEADERS: usize = 100;

/// Most bytes of a chunked response's trailers.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// Whether `buffered` bytes that [`parse_head`] found incomplete are already over [`MAX_HEAD`].
pub fn head_too_large(buffered: usize) -> bool {
    buffered >= MAX_HEAD
}

/// How a response body is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Chunked, decoded as it arrives.
    Chunked(Chunked),
    /// This many bytes still to come.
    Length(u64),
    /// Up to the end of the connection.
    ToEnd,
}

/// A complete response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Its body's framing (none, `Length(0)`, for 1xx, 204 and 304 and for the answer to `HEAD`).
    pub framing: Framing,
    /// The head's length in bytes.
    pub used: usize,
    /// The connection may carry another request once the body has ended.
    pub keep_alive: bool,
}

/// Reads a complete response head at the start of `buf`, handing each header to `header` in
/// order; `Ok(None)` while it is incomplete. `head_request`: the answer is to `HEAD` (it has no
/// body whatever its headers say).
pub fn parse_head(
    buf: &[u8],
    head_request: bool,
    mut header: impl FnMut(&str, &[u8]),
) -> Result<Option<Head>, String> {
    // Left uninitialised: the parser writes only the headers it finds (filling 100 empty ones
    // first was a third of the parse).
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parser = httparse::ParserConfig::default();
    let used = match parser.parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let (mut chunked, mut length) = (false, None);
    let (mut close, mut keep) = (false, false);
    for h in resp.headers.iter() {
        header(h.name, h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !ends_in_chunked(h.value) {
                return Err("unsupported transfer-encoding".into());
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or("bad content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("differing content-lengths".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, b"close");
            keep |= has_token(h.value, b"keep-alive");
        }
    }
    if chunked && length.is_some() {
        return Err("both content-length and transfer-encoding".into());
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::new(MAX_TRAILERS))
    } else {
        length.map_or(Framing::ToEnd, Framing::Length)
    };
    let persistent = if resp.version == Some(1) {
        !close
    } else {
        keep && !close
    };
    Ok(Some(Head {
        status,
        keep_alive: persistent && framing != Framing::ToEnd,
        framing,
        used,
    }))
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
fn ends_in_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| {
        let v = v.trim().as_bytes();
        v.len() >= 7
            && v[v.len() - 7..].eq_ignore_ascii_case(b"chunked")
            && (v.len() == 7 || matches!(v[v.len() - 8], b',' | b' ' | b'\t'))
    })
}

/// A `Content-Length` value: digits only, around them optional whitespace.
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether a comma-separated header value lists `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Decodes raw body bytes, handing the data to `sink`; returns how many data bytes it handed,
/// and sets `ended` when the framing says the body ended.
pub fn decode(
    framing: &mut Framing,
    ended: &mut bool,
    raw: &[u8],
    sink: &mut impl FnMut(&[u8]),
) -> Result<usize, &'static str> {
    let mut handed = 0;
    let mut hand = |data: &[u8]| {
        handed += data.len();
        if !data.is_empty() {
            sink(data);
        }
    };
    match framing {
        Framing::ToEnd => hand(raw),
        Framing::Length(left) => {
            let take;
            (take, *ended) = take_length(left, raw.len());
            hand(&raw[..take]);
        }
        Framing::Chunked(state) => *ended = state.decode(raw, hand)?,
    }
    Ok(handed)
}

/// Of `available` body bytes, how many a body with `left` bytes still to come takes (`left`
/// counts them off), and whether it has then ended.
pub fn take_length(left: &mut u64, available: usize) -> (usize, bool) {
    let take = (*left).min(available as u64);
    *left -= take;
    (take as usize, *left == 0)
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
