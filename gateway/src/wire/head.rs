//! The strict reading of one HTTP/1 request head (RFC 9112), before hyper parses it.
//!
//! Anything two parsers could read two ways is refused: `Content-Length` with
//! `Transfer-Encoding`, a repeated `Content-Length` (even identical), a transfer coding other
//! than `chunked`, bare-LF line ends, obs-fold, control bytes, whitespace before a colon, a
//! second `Host`. What passes is a head hyper parses the same way, so the two never disagree
//! on where a message ends.

use railgate_policy::ErrorCode;

/// Most header fields in one head: hyper's own default, which is left in place (naming it in
/// hyper's builder, even with the same number, makes hyper fill its header arrays element by
/// element for every request).
pub const MAX_HEADERS: usize = 100;

/// Most empty lines (CRLF) skipped before a request line.
const MAX_LEADING_EMPTY_LINES: usize = 8;

/// Why a head is refused: the code (`request.malformed`, or `request.too_large` as 431) and
/// what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The code the refusal carries.
    pub code: ErrorCode,
    /// What was wrong, for the envelope's message.
    pub why: &'static str,
}

fn malformed(why: &'static str) -> Refused {
    Refused {
        code: ErrorCode::Malformed,
        why,
    }
}

fn too_large(why: &'static str) -> Refused {
    Refused {
        code: ErrorCode::HeadersTooLarge,
        why,
    }
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What a head that passed says about the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The body's delimitation.
    pub body: BodyLen,
    /// The request asks for a protocol switch (`Upgrade`): what follows it is no longer
    /// HTTP/1 request framing once the switch is answered (a refused switch closes the
    /// connection).
    pub upgrade: bool,
}

/// Where a head stands after reading some bytes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// More bytes are needed; the first `scanned` were checked already.
    More {
        /// Bytes already checked (resume from here).
        scanned: usize,
    },
    /// The head ends just before `end` (which is past its empty line).
    Complete {
        /// Length of the head including its final CRLF CRLF.
        end: usize,
    },
    /// Refused before the head is complete.
    Refused(Refused),
}

/// How many leading empty lines (`CRLF`) `buf` starts with, or a refusal when there are too
/// many. A lone trailing `\r` counts as not yet known.
pub fn leading_empty_lines(buf: &[u8]) -> Result<usize, Refused> {
    let n = buf.chunks(2).take_while(|c| *c == b"\r\n").count();
    if n > MAX_LEADING_EMPTY_LINES {
        return Err(malformed("too many empty lines before the request line"));
    }
    Ok(n)
}

/// Scans `buf` (a head's bytes so far, from its request line) from `from` for the end of the
/// head, refusing bare LF, a CR not followed by LF, NUL, and a head over `max_bytes`. Jumps from
/// line end to line end (`memchr`), so a head costs a few steps per line, not per byte.
pub fn scan(buf: &[u8], from: usize, max_bytes: usize) -> Scan {
    let mut end = None;
    for at in memchr::memchr2_iter(b'\r', b'\n', &buf[from..]) {
        let i = from + at;
        match buf[i] {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => {
                return Scan::Refused(malformed("bare LF line end in the request head"))
            }
            b'\n' if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" => {
                end = Some(i + 1);
                break;
            }
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => {
                return Scan::Refused(malformed("CR without LF in the request head"))
            }
            _ => {}
        }
    }
    let checked = end.unwrap_or(buf.len());
    if memchr::memchr(0, &buf[from..checked]).is_some() {
        return Scan::Refused(malformed("NUL byte in the request head"));
    }
    match end {
        Some(end) if end <= max_bytes => return Scan::Complete { end },
        _ if buf.len() > max_bytes => {
            return Scan::Refused(too_large("request head is over limits.max_header_bytes"))
        }
        _ => {}
    }
    // A CR at the very end is checked again once its next byte arrives.
    Scan::More {
        scanned: if buf.last() == Some(&b'\r') {
            buf.len() - 1
        } else {
            buf.len()
        },
    }
}

/// A table by byte of ASCII letters, digits and the bytes of `extra`.
const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut j = 0;
    while j < extra.len() {
        table[extra[j] as usize] = true;
        j += 1;
    }
    table
}

/// RFC 9110 `tchar`, by byte: letters, digits and these.
const TCHAR: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A byte a header value (or a chunk extension, or a trailer) may hold: HTAB, visible ASCII,
/// space, obs-text.
pub(super) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

/// Checks a complete head (as [`scan`] delimited it, CRLF CRLF included) and says how its
/// body is framed.
pub fn check(head: &[u8]) -> Result<Framing, Refused> {
    let text = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let mut lines = LineSplit { rest: Some(text) }.map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let http10 = request_line(lines.next().unwrap_or_default())?;
    let mut fields = Fields::default();
    for line in lines {
        fields.add(line)?;
    }
    fields.framing(http10)
}

/// The lines of a head, found with `memchr` (as `split` on `\n` would give them).
struct LineSplit<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for LineSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memchr(b'\n', rest) {
            Some(at) => {
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => self.rest.take(),
        }
    }
}

/// Whether every byte of `bytes` may be in a field value, without stopping at the first that
/// may not (so the loop vectorises; a refused head is rare).
fn all_field_bytes(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & is_field_byte(b))
}

/// Checks the request line; returns whether it is HTTP/1.0.
fn request_line(line: &[u8]) -> Result<bool, Refused> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("request line is not METHOD SP TARGET SP VERSION"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(malformed("method is not a token"));
    }
    if method == b"CONNECT" {
        return Err(malformed("CONNECT is not served"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => {
            return Err(malformed(
                "only HTTP/1.0 and HTTP/1.1 requests are read here",
            ))
        }
    };
    if !target_is_valid(method, target) {
        return Err(malformed("request target is malformed"));
    }
    Ok(http10)
}

/// Origin form (`/path?query`), absolute form (`http://…`), or `*` for `OPTIONS`; visible
/// ASCII only, and something the URI parser downstream accepts.
fn target_is_valid(method: &[u8], target: &[u8]) -> bool {
    // The common case first: its bytes are all visible ASCII, so the check below holds.
    if plain_origin_form(target) {
        return true;
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..0x7f).contains(b)) {
        return false;
    }
    let scheme = |s: &[u8]| {
        target
            .get(..s.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(s))
    };
    let form_ok = target[0] == b'/'
        || scheme(b"http://")
        || scheme(b"https://")
        || (target == b"*" && method == b"OPTIONS");
    form_ok && http::Uri::try_from(target).is_ok()
}

/// A path and query of RFC 3986's unreserved characters, sub-delimiters, `:`, `@`, `%`, `/` and
/// `?` only, of a length any URI parser takes: one the URI parser accepts, known without running
/// it (it runs again when hyper reads the head; here, only for targets with other bytes).
fn plain_origin_form(target: &[u8]) -> bool {
    const PLAIN: [bool; 256] = alphanumeric_and(b"-._~!$&'()*+,;=:@%/?");
    target.first() == Some(&b'/')
        && target.len() <= 8 * 1024
        && target
            .iter()
            .fold(true, |ok, &b| ok & PLAIN[usize::from(b)])
}

/// The framing-relevant fields of a head, counted as they are read.
#[derive(Default)]
struct Fields {
    count: usize,
    lengths: Vec<u64>,
    codings: usize,
    chunked: bool,
    hosts: usize,
    upgrade: bool,
}

impl Fields {
    fn add(&mut self, line: &[u8]) -> Result<(), Refused> {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(malformed(
                "obs-fold (a header line starting with whitespace)",
            ));
        }
        self.count += 1;
        if self.count > MAX_HEADERS {
            return Err(too_large("more header fields than the gateway reads"));
        }
        let colon = memchr::memchr(b':', line);
        let Some(colon) = colon.filter(|&c| c > 0) else {
            return Err(malformed("header line without a field name and colon"));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if !name.iter().all(|&b| is_tchar(b)) {
            return Err(malformed(
                "header name is not a token (whitespace before the colon?)",
            ));
        }
        if !all_field_bytes(value) {
            return Err(malformed("control byte in a header value"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            self.lengths.push(parse_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.codings += 1;
            self.chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        }
        Ok(())
    }

    fn framing(self, http10: bool) -> Result<Framing, Refused> {
        if self.hosts > 1 {
            return Err(malformed("Host sent more than once"));
        }
        if self.lengths.len() > 1 {
            return Err(malformed("Content-Length sent more than once"));
        }
        let body = match (self.lengths.first(), self.codings) {
            (Some(_), 1..) => {
                return Err(malformed("Content-Length together with Transfer-Encoding"))
            }
            (_, 2..) => return Err(malformed("Transfer-Encoding sent more than once")),
            (None, 1) if http10 => {
                return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"))
            }
            (None, 1) if !self.chunked => {
                return Err(malformed("Transfer-Encoding other than chunked"))
            }
            (None, 1) => BodyLen::Chunked,
            (Some(0), _) | (None, _) => BodyLen::None,
            (Some(&n), _) => BodyLen::Length(n),
        };
        Ok(Framing {
            body,
            upgrade: self.upgrade,
        })
    }
}

/// A `Content-Length` value: decimal digits only (no list, no sign), at most 18 of them.
fn parse_length(value: &[u8]) -> Result<u64, Refused> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(malformed("Content-Length is not a single decimal number"));
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
