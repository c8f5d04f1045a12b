//! Tickets: round trip, tamper of every part, expiry, TTL caps, rotation.

use railgate_policy::ticket::{
    encode, verify, TicketClaims, TicketRequest, TicketSecrets, MAX_TTL_S,
};
use railgate_policy::{b64url_decode, b64url_encode, ErrorCode};

const NOW: u64 = 1_800_000_000;

fn secrets() -> TicketSecrets {
    TicketSecrets::new(b"ticket-secret-A", None).expect("secret")
}

fn request() -> TicketRequest {
    TicketRequest {
        sub: "user-1".into(),
        tenant_id: "t_demo".into(),
        env: "dev".into(),
        thread_id: "th-1".into(),
        ttl_s: None,
        session_expires_at: Some(NOW + 900),
        mode: Some("lab".into()),
        project_id: Some("p_chat".into()),
        app_id: Some("app-chat".into()),
        surface_id: None,
    }
}

fn claims() -> TicketClaims {
    request().issue("tid-0001".into(), NOW)
}

#[test]
fn ticket_round_trips() {
    let c = claims();
    let t = encode(&c, &secrets());
    assert!(t.starts_with("v1."));
    assert_eq!(t.split('.').count(), 3);
    assert_eq!(verify(&t, &secrets(), NOW + 1), Ok(c.clone()));
    assert_eq!(c.exp, NOW + 60);
    assert_eq!(c.sx, NOW + 900);
}

#[test]
fn wire_form_is_prefix_payload_and_hmac_over_both() {
    use hmac::{Hmac, Mac};
    let t = encode(&claims(), &secrets());
    let (signed, tag) = t.rsplit_once('.').expect("dot");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"ticket-secret-A").expect("key");
    mac.update(signed.as_bytes());
    assert_eq!(
        b64url_decode(tag).expect("tag"),
        mac.finalize().into_bytes().to_vec()
    );
    let payload = b64url_decode(signed.strip_prefix("v1.").expect("v1")).expect("payload");
    let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(v["tid"], "tid-0001");
    assert_eq!(v["thread_id"], "th-1");
    assert!(
        v.get("surface_id").is_none(),
        "absent optional fields are omitted"
    );
}

#[test]
fn tampering_with_any_part_is_refused() {
    let t = encode(&claims(), &secrets());
    let parts: Vec<&str> = t.split('.').collect();
    let mut forged_claims = claims();
    forged_claims.tenant_id = "t_other".into();
    let forged_payload = b64url_encode(&serde_json::to_vec(&forged_claims).expect("json"));
    let cases = vec![
        format!("v2.{}.{}", parts[1], parts[2]),
        format!("v1.{}.{}", forged_payload, parts[2]),
        format!("v1.{}.{}A", parts[1], parts[2]),
        format!("v1.{}.{}", parts[1], &parts[2][..parts[2].len() - 2]),
        format!("v1.{}.", parts[1]),
        format!("v1.{}", parts[1]),
        format!("v1..{}", parts[2]),
        t.replace("v1.", "V1."),
        format!("{t} "),
        String::new(),
    ];
    for bad in cases {
        let got = verify(&bad, &secrets(), NOW + 1).map_err(|d| d.code);
        assert_eq!(got, Err(ErrorCode::TicketInvalid), "{bad}");
    }
    // Every single-character change in the signature is caught.
    for i in 0..parts[2].len() {
        let mut sig = parts[2].as_bytes().to_vec();
        sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
        let bad = format!("v1.{}.{}", parts[1], String::from_utf8(sig).expect("ascii"));
        assert!(verify(&bad, &secrets(), NOW + 1).is_err(), "sig byte {i}");
    }
}

#[test]
fn wrong_secret_is_refused() {
    let t = encode(&claims(), &secrets());
    let other = TicketSecrets::new(b"ticket-secret-B", None).expect("secret");
    assert_eq!(
        verify(&t, &other, NOW).map_err(|d| d.code),
        Err(ErrorCode::TicketInvalid)
    );
}

#[test]
fn expired_ticket_is_refused() {
    let t = encode(&claims(), &secrets());
    assert!(verify(&t, &secrets(), NOW + 59).is_ok());
    assert_eq!(
        verify(&t, &secrets(), NOW + 60).map_err(|d| d.code),
        Err(ErrorCode::TicketInvalid)
    );
}

#[test]
fn ttl_is_capped_at_300_seconds() {
    let mut r = request();
    r.ttl_s = Some(10_000);
    let c = r.issue("t".into(), NOW);
    assert_eq!(c.exp - c.iat, MAX_TTL_S);
    let mut r = request();
    r.ttl_s = Some(0);
    assert_eq!(r.issue("t".into(), NOW).exp, NOW + 1);
    // A forged payload with a longer lifetime (signed with the right key) is still refused.
    let mut c = claims();
    c.exp = NOW + 301;
    let t = encode(&c, &secrets());
    assert_eq!(
        verify(&t, &secrets(), NOW).map_err(|d| d.code),
        Err(ErrorCode::TicketInvalid)
    );
}

#[test]
fn session_expiry_is_capped_at_one_hour_and_never_after_the_minting_credential() {
    let mut r = request();
    r.session_expires_at = Some(NOW + 10 * 3600);
    assert_eq!(r.issue("t".into(), NOW).sx, NOW + 3600);
    let mut r = request();
    r.session_expires_at = None;
    assert_eq!(r.issue("t".into(), NOW).sx, NOW + 3600);
    let mut r = request();
    r.session_expires_at = Some(NOW + 5);
    let c = r.issue("t".into(), NOW);
    assert_eq!(
        (c.exp, c.sx),
        (NOW + 5, NOW + 5),
        "a token ending in 5 s: so do both"
    );
    let mut c = claims();
    c.sx = NOW + 3601;
    let t = encode(&c, &secrets());
    assert!(verify(&t, &secrets(), NOW).is_err());
}

#[test]
fn previous_secret_still_verifies_during_rotation() {
    let old = TicketSecrets::new(b"old-secret", None).expect("secret");
    let t = encode(&claims(), &old);
    let rotated = TicketSecrets::new(b"new-secret", Some(b"old-secret")).expect("secret");
    assert!(verify(&t, &rotated, NOW).is_ok());
    let fresh = encode(&claims(), &rotated);
    assert!(verify(
        &fresh,
        &TicketSecrets::new(b"new-secret", None).expect("s"),
        NOW
    )
    .is_ok());
    assert!(
        verify(&fresh, &old, NOW).is_err(),
        "new tickets are signed with the new secret"
    );
    let dropped = TicketSecrets::new(b"new-secret", None).expect("secret");
    assert!(verify(&t, &dropped, NOW).is_err());
}

#[test]
fn blank_secrets_are_refused() {
    assert!(TicketSecrets::new(b"", None).is_err());
    assert!(TicketSecrets::new(b"   ", Some(b"x")).is_err());
    assert!(TicketSecrets::new(b"x", Some(b"")).is_ok());
}

#[test]
fn future_issued_and_incomplete_payloads_are_refused() {
    let mut c = claims();
    c.iat = NOW + 120;
    c.exp = NOW + 180;
    c.sx = NOW + 180;
    assert!(verify(&encode(&c, &secrets()), &secrets(), NOW).is_err());
    let mut c = claims();
    c.tid = String::new();
    assert!(verify(&encode(&c, &secrets()), &secrets(), NOW).is_err());
}

#[test]
fn oversized_ticket_is_refused() {
    let t = format!("v1.{}.AAAA", "A".repeat(5000));
    assert_eq!(
        verify(&t, &secrets(), NOW).map_err(|d| d.code),
        Err(ErrorCode::TicketInvalid)
    );
}

#[test]
fn ticket_error_messages_never_echo_the_ticket() {
    let t = encode(&claims(), &secrets());
    let d = verify(&t, &TicketSecrets::new(b"zz", None).expect("s"), NOW).expect_err("bad");
    assert!(!d.message.contains(&t[3..20]));
}

#[test]
fn grants_round_trip_cover_only_their_ticket_and_expire() {
    use railgate_policy::ticket::{encode_grant, verify_grant, Grant};
    let c = claims();
    let g = Grant::for_ticket(&c);
    assert_eq!(g.exp, c.sx);
    let raw = encode_grant(&g, &secrets());
    assert!(raw.starts_with("g1."));
    let back = verify_grant(&raw, &secrets(), NOW + 10).expect("valid");
    assert!(back.covers(&c));
    let mut other = c.clone();
    other.tid = "tid-other".into();
    assert!(!back.covers(&other));
    assert!(
        verify_grant(&raw, &secrets(), c.sx).is_none(),
        "expired at sx"
    );
    assert!(verify_grant(&raw, &TicketSecrets::new(b"zz", None).expect("s"), NOW).is_none());
    // A ticket is not a grant and a grant is not a ticket.
    let t = encode(&c, &secrets());
    assert!(verify_grant(&t, &secrets(), NOW).is_none());
    assert!(verify(&raw, &secrets(), NOW).is_err());
}
