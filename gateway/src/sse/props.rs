//! Property tests: the parser and the stamper never panic on arbitrary bytes, and what the writer
//! produces parses back to the same events, however it is split into chunks.

use super::parse::{Event, Parser};
use super::write::write_event;
use crate::inject::{stamp, Stamp, Stamped};
use proptest::prelude::*;
use railgate_policy::{Field, RequestContext};

fn event() -> impl Strategy<Value = Event> {
    let text = "[^\r\n\u{0}]{0,20}";
    (
        proptest::option::of(text),
        proptest::option::of(proptest::collection::vec(text, 1..4).prop_map(|l| l.join("\n"))),
        proptest::option::of(text),
        proptest::option::of(0u64..100_000),
    )
        .prop_map(|(event, data, id, retry)| Event {
            event: event.map(Into::into),
            data,
            id: id.map(Into::into),
            retry,
            last_event_id: "".into(),
        })
}

fn parse_chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut p = Parser::new(1 << 20);
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        let _ = p.feed(&bytes[at..c.max(at)], &mut out);
        at = c.max(at);
    }
    let _ = p.feed(&bytes[at..], &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(0usize..600, 0..6)) {
        let whole = parse_chunks(&bytes, &[]);
        prop_assert_eq!(parse_chunks(&bytes, &cuts), whole);
    }

    #[test]
    fn write_then_parse_returns_the_same_events(events in proptest::collection::vec(event(), 1..6), cuts in proptest::collection::vec(0usize..2000, 0..5)) {
        let mut wire = Vec::new();
        let written: Vec<&Event> = events.iter().filter(|e| e.event.is_some() || e.data.is_some() || e.id.is_some() || e.retry.is_some()).collect();
        for e in &written {
            write_event(e, None, &mut wire);
        }
        let back = parse_chunks(&wire, &cuts);
        prop_assert_eq!(back.len(), written.len());
        for (b, e) in back.iter().zip(written) {
            prop_assert_eq!((&b.event, &b.data, &b.id, b.retry), (&e.event, &e.data, &e.id, e.retry));
        }
    }

    #[test]
    fn stamping_never_panics_and_keeps_json_valid(data in ".{0,200}", json in proptest::collection::btree_map("[a-z]{1,3}", any::<i64>(), 0..6)) {
        let ctx = RequestContext::from_parts(&[(Field::Tenant, "t"), (Field::Env, "dev")], "u", "tr");
        let st = Stamp::new(&ctx, "th");
        let _ = stamp(&data, &st);
        let obj = serde_json::to_string(&json).unwrap_or_default();
        match stamp(&obj, &st) {
            Stamped::Rewritten(out) => {
                let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
                for (k, n) in &json {
                    prop_assert_eq!(&v[k], &serde_json::json!(n));
                }
                prop_assert_eq!(&v["routing"]["tenant_id"], "t");
            }
            other => prop_assert!(false, "object not rewritten: {:?}", other),
        }
    }
}
