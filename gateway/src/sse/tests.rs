//! The web-platform-tests `eventsource/format-*` cases, chunk splits, and write→parse round trips.

use super::parse::{Event, ParseError, Parser};
use super::write::write_event;

fn parse_all(input: &[u8]) -> Vec<Event> {
    let mut p = Parser::new(1 << 20);
    let mut out = Vec::new();
    p.feed(input, &mut out).expect("parse");
    out
}

/// What a browser would dispatch: (type, data, lastEventId).
fn dispatched(input: &[u8]) -> Vec<(String, String, String)> {
    parse_all(input)
        .into_iter()
        .filter(Event::dispatches)
        .map(|e| {
            let ty = e
                .event
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "message".into());
            (
                ty.to_string(),
                e.data.unwrap_or_default(),
                e.last_event_id.to_string(),
            )
        })
        .collect()
}

fn datas(input: &[u8]) -> Vec<String> {
    dispatched(input).into_iter().map(|(_, d, _)| d).collect()
}

#[test]
fn format_bom_first_is_skipped_second_is_data() {
    assert_eq!(
        datas("\u{FEFF}data: 1\n\n\u{FEFF}data: 2\n\ndata: 3\n\n".as_bytes()),
        vec!["1", "3"]
    );
}

#[test]
fn format_bom_2_only_one_bom_is_skipped() {
    assert_eq!(
        datas("\u{FEFF}\u{FEFF}data: 1\n\ndata: 2\n\ndata: 3\n\n".as_bytes()),
        vec!["2", "3"]
    );
}

#[test]
fn format_comments_are_ignored() {
    let long = "x".repeat(2049);
    let input =
        format!("data:1\r:\0\n:\r\ndata:2\n:{long}\rdata:3\n:data:fail\r:{long}\ndata:4\n\n");
    assert_eq!(datas(input.as_bytes()), vec!["1\n2\n3\n4"]);
}

#[test]
fn format_field_data() {
    assert_eq!(
        datas(b"data:\n\ndata\ndata\n\ndata:test\n\n"),
        vec!["", "\n", "test"]
    );
}

#[test]
fn format_field_event_and_empty_event() {
    let got = dispatched(b"event: test\ndata: x\n\ndata: y\n\nevent: \ndata:data\n\n");
    let types: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, vec!["test", "message", "message"]);
}

#[test]
fn format_field_id_persists_and_empty_id_resets() {
    let got = dispatched(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\nid:\ndata: c\n\n");
    let ids: Vec<&str> = got.iter().map(|(_, _, id)| id.as_str()).collect();
    assert_eq!(ids, vec!["1", "1", ""]);
}

#[test]
fn format_field_id_with_null_is_ignored() {
    let got = dispatched(b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n");
    let ids: Vec<&str> = got.iter().map(|(_, _, id)| id.as_str()).collect();
    assert_eq!(ids, vec!["1", "1"]);
}

#[test]
fn format_field_parsing() {
    let input = b"data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n";
    assert_eq!(datas(input), vec!["\u{0}\n 2\n1\n3\n\n4"]);
}

#[test]
fn format_field_retry_takes_digits_only() {
    let evs = parse_all(
        b"retry: 1000\ndata: a\n\nretry: 10s\ndata: b\n\nretry:\ndata: c\n\nretry: 03\n\n",
    );
    let retries: Vec<Option<u64>> = evs.iter().map(|e| e.retry).collect();
    assert_eq!(retries, vec![Some(1000), None, None, Some(3)]);
}

#[test]
fn format_field_unknown_and_fields_without_colon() {
    assert_eq!(
        datas(
            b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n"
        ),
        vec!["test\n\ntest"]
    );
}

#[test]
fn format_leading_space_strips_exactly_one() {
    assert_eq!(
        datas(b"data:\x20\x20test\n\ndata:test\n\n"),
        vec![" test", "test"]
    );
}

#[test]
fn format_newlines_cr_lf_crlf() {
    assert_eq!(
        datas(b"data:test\r\ndata\ndata:test\r\n\r\n"),
        vec!["test\n\ntest"]
    );
    assert_eq!(datas(b"data:a\rdata:b\r\rdata:c\n\n"), vec!["a\nb", "c"]);
}

#[test]
fn format_null_character_is_data() {
    assert_eq!(datas(b"data:\x00\n\n"), vec!["\u{0}"]);
}

#[test]
fn format_utf_8_and_invalid_bytes() {
    assert_eq!(datas("data:ok\u{2026}\n\n".as_bytes()), vec!["ok\u{2026}"]);
    assert_eq!(datas(b"data:\xff\n\n"), vec!["\u{FFFD}"]);
}

#[test]
fn format_data_before_final_empty_line_is_not_dispatched() {
    assert_eq!(
        datas(b"retry:1000\ndata:test1\n\nid:test\ndata:test2"),
        vec!["test1"]
    );
}

#[test]
fn blocks_without_data_still_move_the_last_event_id() {
    let evs = parse_all(b"id: 7\n\ndata: x\n\n");
    assert_eq!(evs.len(), 2);
    assert!(!evs[0].dispatches());
    assert_eq!(evs[0].id.as_deref(), Some("7"));
    assert_eq!(&*evs[1].last_event_id, "7");
    assert_eq!(evs[1].id, None);
}

#[test]
fn a_repeated_event_type_and_an_id_are_shared_not_copied() {
    let evs = parse_all(b"event: a\nid: 1\ndata: x\n\nevent: a\ndata: y\n\nevent: b\ndata: z\n\nevent: a\ndata: w\n\n");
    let names: Vec<_> = evs.iter().map(|e| e.event.as_deref()).collect();
    assert_eq!(names, [Some("a"), Some("a"), Some("b"), Some("a")]);
    let (first, second) = (
        evs[0].event.as_ref().expect("a"),
        evs[1].event.as_ref().expect("a"),
    );
    assert!(
        std::sync::Arc::ptr_eq(first, second),
        "the same name is handed again"
    );
    let id = evs[0].id.as_ref().expect("id");
    assert!(std::sync::Arc::ptr_eq(id, &evs[0].last_event_id));
    assert!(std::sync::Arc::ptr_eq(id, &evs[3].last_event_id));
    assert_eq!(evs[3].id, None);
}

const SAMPLE: &[u8] = b"\xEF\xBB\xBFretry: 500\r\nid: 1\r\nevent: chat\r\ndata: {\"a\":1}\r\n\r\n: keep\rdata: two\rdata: lines\r\rid: 3\ndata: \xe2\x80\xa6\n\nid\ndata\n\nid: 9\n\n";

#[test]
fn every_single_split_gives_the_same_events() {
    let whole = parse_all(SAMPLE);
    assert_eq!(whole.len(), 5);
    for cut in 0..=SAMPLE.len() {
        let mut p = Parser::new(1 << 20);
        let mut out = Vec::new();
        p.feed(&SAMPLE[..cut], &mut out).expect("a");
        p.feed(&SAMPLE[cut..], &mut out).expect("b");
        assert_eq!(out, whole, "split at {cut}");
    }
}

#[test]
fn every_pair_of_splits_gives_the_same_events() {
    let whole = parse_all(SAMPLE);
    for a in 0..=SAMPLE.len() {
        for b in a..=SAMPLE.len() {
            let mut p = Parser::new(1 << 20);
            let mut out = Vec::new();
            for part in [&SAMPLE[..a], &SAMPLE[a..b], &SAMPLE[b..]] {
                p.feed(part, &mut out).expect("feed");
            }
            assert_eq!(out, whole, "splits at {a},{b}");
        }
    }
}

#[test]
fn byte_at_a_time_matches() {
    let mut p = Parser::new(1 << 20);
    let mut out = Vec::new();
    for b in SAMPLE {
        p.feed(std::slice::from_ref(b), &mut out).expect("feed");
    }
    assert_eq!(out, parse_all(SAMPLE));
}

#[test]
fn write_then_parse_round_trips() {
    for e in parse_all(SAMPLE) {
        let mut wire = Vec::new();
        write_event(&e, None, &mut wire);
        let back = parse_all(&wire);
        assert_eq!(back.len(), 1, "{:?}", String::from_utf8_lossy(&wire));
        assert_eq!(
            (&back[0].event, &back[0].data, &back[0].id, back[0].retry),
            (&e.event, &e.data, &e.id, e.retry)
        );
    }
}

#[test]
fn oversized_events_are_refused() {
    let mut p = Parser::new(64);
    let mut out = Vec::new();
    assert_eq!(p.feed(&[b'x'; 100], &mut out), Err(ParseError::TooLarge));
    let mut p = Parser::new(64);
    let many = "data: 0123456789\n".repeat(10);
    assert_eq!(p.feed(many.as_bytes(), &mut out), Err(ParseError::TooLarge));
}

#[test]
fn reset_stream_keeps_last_event_id_and_drops_partial_state() {
    let mut p = Parser::new(1 << 20);
    let mut out = Vec::new();
    p.feed(b"id: 4\ndata: a\n\ndata: partial", &mut out)
        .expect("feed");
    p.reset_stream();
    p.feed(b"data: b\n\n", &mut out).expect("feed");
    assert_eq!(
        out.iter()
            .map(|e| e.data.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(&*out[1].last_event_id, "4");
}

#[test]
fn a_field_name_is_matched_by_its_bytes_and_a_known_fields_value_read_as_text() {
    // A name with an invalid byte is no known field; values keep U+FFFD for invalid bytes,
    // and a colon inside the value is the value's.
    let got = dispatched(b"\xffdata:x\nevent:\xfe ok\ndata:y:z\nid: 7\xff\n\n");
    assert_eq!(
        got,
        vec![("\u{FFFD} ok".into(), "y:z".into(), "7\u{FFFD}".into())]
    );
}
