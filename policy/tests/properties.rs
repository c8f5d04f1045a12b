//! Property tests: codecs round-trip and nothing panics on arbitrary input.

use proptest::prelude::*;
use railgate_policy::context::{parse_hello, HeaderSource};
use railgate_policy::keys::{Key, KeySet};
use railgate_policy::ticket::{encode, verify, TicketRequest, TicketSecrets};
use railgate_policy::token::{verify as verify_token, Rules};
use railgate_policy::{build_context, ContextPolicy, Field, Sources};

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:@-]{1,40}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ticket_codec_round_trips(sub in ident(), tenant in ident(), thread in ident(), ttl in 0u64..10_000, now in 1_000u64..4_000_000_000) {
        let secrets = TicketSecrets::new(b"k", None).expect("secret");
        let req = TicketRequest { sub, tenant_id: tenant, env: "dev".into(), thread_id: thread, ttl_s: Some(ttl), ..Default::default() };
        let claims = req.issue("tid".into(), now);
        let wire = encode(&claims, &secrets);
        prop_assert_eq!(verify(&wire, &secrets, now), Ok(claims));
    }

    #[test]
    fn ticket_verify_never_panics(raw in ".{0,300}") {
        let secrets = TicketSecrets::new(b"k", None).expect("secret");
        let _ = verify(&raw, &secrets, 1_800_000_000);
        let v1 = format!("v1.{raw}");
        let _ = verify(&v1, &secrets, 1_800_000_000);
    }

    #[test]
    fn token_verify_never_panics(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,80}", c in "[A-Za-z0-9_-]{0,80}") {
        let mut ks = KeySet::new();
        ks.add(Key::hs256(b"secret", None).expect("key")).expect("add");
        let _ = verify_token(&format!("{a}.{b}.{c}"), &ks, 1_800_000_000, &Rules::default());
    }

    #[test]
    fn context_parsing_never_panics_on_arbitrary_header_bytes(
        values in proptest::collection::vec((0usize..12, proptest::collection::vec(any::<u8>(), 0..140)), 0..12)
    ) {
        let names = ["x-tenant-id", "x-mode", "x-project-id", "x-app-id", "x-surface-id", "x-env",
                     "x-workspace-id", "x-canvas-id", "x-projection-id", "x-panel-id", "x-request-id", "traceparent"];
        let headers: Vec<(&str, Vec<u8>)> = values.into_iter().map(|(i, v)| (names[i], v)).collect();
        let claims = railgate_policy::token::Claims::new(
            "u".into(), 1, vec!["t".into()], None, Default::default(),
        );
        let modes = vec!["lab".to_string()];
        let policy = ContextPolicy { gateway_env: "dev", allowed_modes: &modes, require: &[Field::Tenant, Field::Mode] };
        let src = Sources {
            headers: &headers as &dyn HeaderSource,
            token: Some(&claims), ticket: None, hello: None, path_thread: None, path_fields: &[],
            fallback_trace_id: "f",
        };
        if let Ok(ctx) = build_context(&policy, &src) {
            for (_, v) in ctx.fields() {
                prop_assert!(railgate_policy::field::valid_value(v.as_bytes()));
            }
        }
    }

    #[test]
    fn hello_parsing_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_hello(&raw);
    }
}
