use super::{
    check, leading_empty_lines, plain_origin_form, scan, target_is_valid, BodyLen, Framing,
    Refused, Scan, MAX_HEADERS,
};
use railgate_policy::ErrorCode;

fn head(lines: &[&str]) -> Vec<u8> {
    format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}

fn refused(h: &[u8]) -> (ErrorCode, &'static str) {
    let r = check(h).expect_err("refused");
    (r.code, r.why)
}

#[test]
fn plain_heads_pass_with_their_framing() {
    let get = head(&["GET /chat/threads/A/messages?x=1 HTTP/1.1", "Host: x"]);
    assert_eq!(
        check(&get),
        Ok(Framing {
            body: BodyLen::None,
            upgrade: false
        })
    );
    let post = head(&["POST /p HTTP/1.1", "Host: x", "Content-Length: 12"]);
    assert_eq!(check(&post).map(|f| f.body), Ok(BodyLen::Length(12)));
    let chunked = head(&["POST /p HTTP/1.1", "Transfer-Encoding: Chunked"]);
    assert_eq!(check(&chunked).map(|f| f.body), Ok(BodyLen::Chunked));
    let ws = head(&[
        "GET /ws HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ]);
    assert_eq!(check(&ws).map(|f| f.upgrade), Ok(true));
    let abs = head(&["GET http://x/y HTTP/1.0", "X-Obs: caf\u{e9}\t1"]);
    assert!(check(&abs).is_ok());
    assert!(check(&head(&["OPTIONS * HTTP/1.1"])).is_ok());
}

#[test]
fn smuggling_shapes_are_refused() {
    let m = ErrorCode::Malformed;
    for (lines, why) in [
        (
            &[
                "POST /p HTTP/1.1",
                "Content-Length: 4",
                "Transfer-Encoding: chunked",
            ][..],
            "Content-Length together with Transfer-Encoding",
        ),
        (
            &["POST /p HTTP/1.1", "Content-Length: 4", "Content-Length: 4"],
            "Content-Length sent more than once",
        ),
        (
            &["POST /p HTTP/1.1", "Content-Length: 4, 4"],
            "Content-Length is not a single decimal number",
        ),
        (
            &["POST /p HTTP/1.1", "Content-Length: +4"],
            "Content-Length is not a single decimal number",
        ),
        (
            &["POST /p HTTP/1.1", "Transfer-Encoding: gzip, chunked"],
            "Transfer-Encoding other than chunked",
        ),
        (
            &[
                "POST /p HTTP/1.1",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: chunked",
            ],
            "Transfer-Encoding sent more than once",
        ),
        (
            &["POST /p HTTP/1.0", "Transfer-Encoding: chunked"],
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
        (
            &["GET / HTTP/1.1", "Host: a", "Host: b"],
            "Host sent more than once",
        ),
        (
            &["GET / HTTP/1.1", "X-A: 1", " folded"],
            "obs-fold (a header line starting with whitespace)",
        ),
        (
            &["GET / HTTP/1.1", "Content-Length : 4"],
            "header name is not a token (whitespace before the colon?)",
        ),
        (
            &["GET / HTTP/1.1", ": x"],
            "header line without a field name and colon",
        ),
        (
            &["GET / HTTP/1.1", "X-A: a\u{1}b"],
            "control byte in a header value",
        ),
        (
            &["GET  / HTTP/1.1"],
            "request line is not METHOD SP TARGET SP VERSION",
        ),
        (
            &["GET / HTTP/2.0"],
            "only HTTP/1.0 and HTTP/1.1 requests are read here",
        ),
        (
            &["PRI * HTTP/2.0"],
            "only HTTP/1.0 and HTTP/1.1 requests are read here",
        ),
        (&["G@T / HTTP/1.1"], "method is not a token"),
        (&["CONNECT x:443 HTTP/1.1"], "CONNECT is not served"),
        (&["GET x/y HTTP/1.1"], "request target is malformed"),
        (&["GET * HTTP/1.1"], "request target is malformed"),
        (&["GET /a\u{7f} HTTP/1.1"], "request target is malformed"),
    ] {
        assert_eq!(refused(&head(lines)), (m, why), "{lines:?}");
    }
}

#[test]
fn too_many_fields_is_431() {
    let mut lines = vec!["GET / HTTP/1.1".to_owned()];
    lines.extend((0..=MAX_HEADERS).map(|i| format!("X-{i}: v")));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(refused(&head(&lines)).0, ErrorCode::HeadersTooLarge);
    assert!(check(&head(&lines[..MAX_HEADERS + 1])).is_ok());
}

#[test]
fn scanning_finds_the_end_and_refuses_bad_line_ends_early() {
    let h = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
    assert_eq!(scan(h, 0, 1024), Scan::Complete { end: h.len() - 4 });
    // Byte by byte, resuming where it stopped, gives the same end.
    let mut scanned = 0;
    for n in 1..h.len() {
        match scan(&h[..n], scanned, 1024) {
            Scan::More { scanned: s } => scanned = s,
            Scan::Complete { end } => {
                assert_eq!((n, end), (h.len() - 4, h.len() - 4));
                break;
            }
            Scan::Refused(r) => panic!("{r:?}"),
        }
    }
    let refused = |b: &[u8]| match scan(b, 0, 1024) {
        Scan::Refused(r) => r.why,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(b"GET / HTTP/1.1\nHost"),
        "bare LF line end in the request head"
    );
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nA: b\n\r\n"),
        "bare LF line end in the request head"
    );
    assert_eq!(
        refused(b"GET / HTTP/1.1\rX"),
        "CR without LF in the request head"
    );
    assert_eq!(refused(b"GET /\0 HTTP/1.1"), "NUL byte in the request head");
    assert_eq!(
        refused(&[b'A'; 1025]),
        "request head is over limits.max_header_bytes"
    );
    assert!(matches!(
        scan(b"GET / HTTP/1.1\r", 0, 1024),
        Scan::More { scanned: 14 }
    ));
    // A NUL after the head is the body's; one in bytes read later, resumed from, is the head's.
    let with_body = b"GET / HTTP/1.1\r\nA: b\r\n\r\n\0\0";
    assert_eq!(scan(with_body, 0, 1024), Scan::Complete { end: 24 });
    assert_eq!(
        scan(b"GET / HTTP/1.1\r\nA: \0", 16, 1024),
        Scan::Refused(Refused {
            code: ErrorCode::Malformed,
            why: "NUL byte in the request head"
        })
    );
    let long = [b"GET /".as_slice(), &[b'a'; 1100], b" HTTP/1.1\r\n\r\n"].concat();
    assert!(
        matches!(scan(&long, 0, 1024), Scan::Refused(r) if r.code == ErrorCode::HeadersTooLarge)
    );
}

#[test]
fn leading_empty_lines_are_skipped_up_to_a_bound() {
    assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), Ok(2));
    assert_eq!(leading_empty_lines(b"\r\n\r"), Ok(1));
    assert_eq!(leading_empty_lines(b"GET"), Ok(0));
    assert!(leading_empty_lines(&b"\r\n".repeat(9)).is_err());
}

#[test]
fn lines_are_split_as_split_on_lf_splits_them() {
    for text in [
        &b""[..],
        b"a",
        b"\n",
        b"a\n",
        b"\nb",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b",
        b"a\n\nb\n",
    ] {
        let ours: Vec<&[u8]> = super::LineSplit { rest: Some(text) }.collect();
        let std: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        assert_eq!(ours, std, "{:?}", String::from_utf8_lossy(text));
    }
    for b in 0..=255u8 {
        assert_eq!(
            super::all_field_bytes(&[b'a', b, b'z']),
            super::is_field_byte(b),
            "{b}"
        );
    }
}

#[test]
fn a_target_passed_without_the_uri_parser_is_one_it_accepts() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut plain = 0;
    for _ in 0..20_000 {
        let len = rng.random_range(1..40);
        // Mostly letters and the characters around the ones the URI parser refuses.
        let mut t: Vec<u8> = (0..len)
            .map(|_| match rng.random_range(0..4) {
                0 => rng.random_range(b'a'..=b'z'),
                _ => rng.random_range(0x21u8..0x7f),
            })
            .collect();
        t[0] = b'/';
        let parsed = http::Uri::try_from(&t[..]).is_ok();
        if plain_origin_form(&t) {
            plain += 1;
            assert!(parsed, "{:?}", String::from_utf8_lossy(&t));
        }
        assert_eq!(
            target_is_valid(b"GET", &t),
            parsed,
            "{:?}",
            String::from_utf8_lossy(&t)
        );
    }
    assert!(plain > 1_000, "too few plain targets drawn: {plain}");
    for t in ["/a<b", "/a>b", "/a`b", "/a?b\"c", "/a?b<c"] {
        assert!(!plain_origin_form(t.as_bytes()), "{t}");
        assert!(!target_is_valid(b"GET", t.as_bytes()), "{t}");
    }
    assert!(plain_origin_form(
        b"/chat/threads/th_1/messages?after=3&x=%20"
    ));
    assert!(!plain_origin_form(&[b'/'; 8 * 1024 + 1]));
}
