//! Parser + stamper never panic on arbitrary bytes split arbitrarily, and every event the writer
//! produces parses back to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railgate::inject::{stamp, Stamp, Stamped};
use railgate::sse::{write_event, Parser};
use railgate_policy::{Field, RequestContext};

fuzz_target!(|input: &[u8]| {
    let Some((&split, bytes)) = input.split_first() else { return };
    let cut = (split as usize).min(bytes.len());
    let mut parser = Parser::new(1 << 16);
    let mut events = Vec::new();
    let _ = parser.feed(&bytes[..cut], &mut events);
    let _ = parser.feed(&bytes[cut..], &mut events);
    let ctx = RequestContext::from_parts(&[(Field::Tenant, "t"), (Field::Env, "dev")], "u", "trace");
    let st = Stamp::new(&ctx, "th");
    for ev in &events {
        let data = ev.data.as_deref().map(|d| match stamp(d, &st) {
            Stamped::Rewritten(s) => {
                assert!(serde_json_valid(&s), "stamped output is not JSON: {s}");
                Some(s)
            }
            _ => None,
        });
        let mut wire = Vec::new();
        write_event(ev, data.flatten().as_deref(), &mut wire);
        let mut back = Vec::new();
        let mut p2 = Parser::new(1 << 20);
        p2.feed(&wire, &mut back).expect("own output parses");
        if !wire.is_empty() {
            assert_eq!(back.len(), 1);
            assert_eq!((&back[0].event, &back[0].id, back[0].retry), (&ev.event, &ev.id, ev.retry));
        }
    }
});

fn serde_json_valid(s: &str) -> bool {
    s.starts_with('{') && s.ends_with('}')
}
