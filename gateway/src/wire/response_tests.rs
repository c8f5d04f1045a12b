use super::{
    head_too_large, parse_head, take_length, Chunked, Framing, Head, MAX_HEAD, MAX_TRAILERS,
};

/// `parse_head` of a complete head, not to `HEAD`.
fn head(text: &[u8]) -> Result<Head, String> {
    parse_head(text, false, |_, _| {}).map(|h| h.expect("complete"))
}

fn framing(text: &str) -> Framing {
    head(text.as_bytes()).expect("ok").framing
}

#[test]
fn heads_give_status_framing_length_and_headers() {
    let text = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
    let mut seen = Vec::new();
    let got = parse_head(text, false, |n, v| {
        seen.push(format!("{n}={}", String::from_utf8_lossy(v)))
    })
    .expect("ok")
    .expect("complete");
    assert_eq!(
        got,
        Head {
            status: 200,
            framing: Framing::Chunked(Chunked::new(MAX_TRAILERS)),
            used: text.len() - 3,
            keep_alive: true,
        }
    );
    assert_eq!(
        seen,
        [
            "Content-Type=text/event-stream",
            "Transfer-Encoding=chunked"
        ]
    );
    let got = head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\n").expect("ok");
    assert_eq!(
        (got.status, got.framing, got.keep_alive),
        (404, Framing::Length(12), true)
    );
    let got = head(b"HTTP/1.0 200 OK\r\n\r\n").expect("ok");
    assert_eq!((got.framing, got.keep_alive), (Framing::ToEnd, false));
    assert_eq!(
        parse_head(b"HTTP/1.1 200 OK\r\nContent-Ty", false, |_, _| {}),
        Ok(None)
    );
}

#[test]
fn transfer_codings_must_end_in_chunked() {
    for te in ["CHUNKED", " gzip, Chunked ", "chunked", "gzip,chunked"] {
        let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            framing(&text),
            Framing::Chunked(Chunked::new(MAX_TRAILERS)),
            "{te}"
        );
    }
    for te in [
        "hunked",
        "chunked, gzip",
        "",
        "chunked\u{e9}x",
        "xchunked",
        "gzip",
    ] {
        let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert!(head(text.as_bytes()).is_err(), "{te}");
    }
}

#[test]
fn a_body_that_could_be_read_two_ways_is_refused() {
    for text in [
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        "NOT HTTP\r\n\r\n",
    ] {
        assert!(head(text.as_bytes()).is_err(), "{text:?}");
    }
    // The same length twice is one length.
    let same = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length:  3 \r\n\r\n";
    assert_eq!(framing(same), Framing::Length(3));
}

#[test]
fn some_answers_have_no_body_whatever_their_headers_say() {
    for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
        let text = format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(framing(&text), Framing::Length(0), "{status}");
    }
    let text = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
    let got = parse_head(text, true, |_, _| {})
        .expect("ok")
        .expect("complete");
    assert_eq!((got.framing, got.keep_alive), (Framing::Length(0), true));
    // To `HEAD`, even an answer without a length keeps its connection.
    let got = parse_head(b"HTTP/1.1 200 OK\r\n\r\n", true, |_, _| {})
        .expect("ok")
        .expect("complete");
    assert_eq!((got.framing, got.keep_alive), (Framing::Length(0), true));
}

#[test]
fn the_connection_is_kept_as_the_version_and_connection_header_say() {
    let cases = [
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", true),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: Upgrade, CLOSE\r\n\r\n",
            false,
        ),
        ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", false),
    ];
    for (text, keep) in cases {
        assert_eq!(
            head(text.as_bytes()).expect("ok").keep_alive,
            keep,
            "{text:?}"
        );
    }
}

#[test]
fn at_most_max_headers_are_read() {
    let many = |n: usize| {
        let lines: String = (0..n).map(|i| format!("x-{i}: {i}\r\n")).collect();
        format!("HTTP/1.1 200 OK\r\n{lines}Content-Length: 3\r\n\r\n")
    };
    assert_eq!(framing(&many(99)), Framing::Length(3));
    assert!(head(many(100).as_bytes()).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(7),
        ..proptest::test_runner::Config::default()
    })]

    /// Any bytes: an answer, a wait for more or a refusal, never a panic; a complete head is
    /// within what was read.
    #[test]
    fn any_bytes_are_read_without_a_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        head_request in proptest::prelude::any::<bool>(),
    ) {
        if let Ok(Some(h)) = parse_head(&bytes, head_request, |_, _| {}) {
            proptest::prop_assert!(h.used <= bytes.len());
        }
    }

    /// Heads made of valid lines in any order: the status, each header in order and the
    /// framing the headers name.
    #[test]
    fn made_heads_read_back(
        status in 200u16..600,
        names in proptest::collection::vec("[a-z]{1,12}", 0..20),
        length in proptest::option::of(0u64..1_000_000),
    ) {
        let mut text = format!("HTTP/1.1 {status} X\r\n");
        let mut want = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let n = format!("x-{n}");
            text.push_str(&format!("{n}: v{i}\r\n"));
            want.push(format!("{n}=v{i}"));
        }
        if let Some(l) = length {
            text.push_str(&format!("content-length: {l}\r\n"));
            want.push(format!("content-length={l}"));
        }
        text.push_str("\r\n");
        let mut seen = Vec::new();
        let h = parse_head(text.as_bytes(), false, |n, v| {
            seen.push(format!("{n}={}", String::from_utf8_lossy(v)));
        });
        let h = h.expect("valid").expect("complete");
        proptest::prop_assert_eq!(seen, want);
        proptest::prop_assert_eq!(h.used, text.len());
        let framing = match (status, length) {
            (204 | 304, _) => Framing::Length(0),
            (_, Some(l)) => Framing::Length(l),
            (_, None) => Framing::ToEnd,
        };
        proptest::prop_assert_eq!(h.framing, framing);
    }
}

#[test]
fn an_incomplete_head_is_too_large_from_the_limit_on_and_a_length_counts_off_what_it_takes() {
    assert!(!head_too_large(MAX_HEAD - 1));
    assert!(head_too_large(MAX_HEAD));
    let mut left = 10;
    assert_eq!(take_length(&mut left, 4), (4, false));
    assert_eq!(left, 6);
    assert_eq!(take_length(&mut left, 20), (6, true));
    assert_eq!(left, 0);
    assert_eq!(take_length(&mut left, 3), (0, true));
}
