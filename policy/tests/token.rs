//! JWT verification: positive cases for every algorithm and a table of attacks.

mod support;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use railgate_policy::keys::{load_jwks, Key, KeyError, KeySet};
use railgate_policy::token::{verify, verify_signed, Rules, TokenError};
use railgate_policy::{b64url_encode, Denial, ErrorCode};
use serde_json::json;
use support::*;

fn rules() -> Rules {
    Rules::default()
}

fn check(token: &str) -> Result<railgate_policy::token::Claims, TokenError> {
    verify(token, &keyset(), NOW, &rules())
}

#[test]
fn hs256_token_is_accepted() {
    let c = check(&hs256(claims())).expect("valid");
    assert_eq!(c.sub, "user-1");
    assert_eq!(c.tenants, vec!["t_demo".to_string()]);
    assert_eq!(c.exp, NOW + 600);
}

#[test]
fn rs256_es256_eddsa_tokens_are_accepted() {
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa1", rsa_enc()),
        (Algorithm::ES256, "ec1", ec_enc()),
        (Algorithm::EdDSA, "ed1", ed_enc()),
    ] {
        let t = forge(json!({"alg": alg, "kid": kid}), claims(), &key, alg);
        assert_eq!(
            check(&t).map(|c| c.sub),
            Ok("user-1".to_string()),
            "{alg:?}"
        );
    }
}

#[test]
fn rfc7515_a1_token_verifies_with_injected_clock() {
    let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let k = railgate_policy::b64url_decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
    )
    .expect("key");
    let mut ks = KeySet::new();
    ks.add(Key::hs256(&k, None).expect("key")).expect("add");
    let r = Rules {
        leeway_s: 0,
        issuer: Some("joe".into()),
        audience: None,
    };
    let jwt = verify_signed(token, &ks, 1_300_819_379, &r).expect("verifies before exp");
    assert_eq!(jwt.exp, 1_300_819_380);
    assert_eq!(jwt.claims["http://example.com/is_root"], json!(true));
    assert_eq!(
        verify_signed(token, &ks, 1_300_819_380, &r),
        Err(TokenError::Expired)
    );
    // It has no `sub`, which railgate requires.
    assert_eq!(
        verify(token, &ks, 1_300_819_379, &r),
        Err(TokenError::Claim("sub"))
    );
}

#[test]
fn alg_none_is_refused_in_any_casing() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64url_encode(json!({"alg": alg}).to_string().as_bytes());
        let p = b64url_encode(claims().to_string().as_bytes());
        for t in [format!("{h}.{p}."), format!("{h}.{p}.AAAA")] {
            let got = check(&t);
            assert!(
                matches!(
                    got,
                    Err(TokenError::AlgNone) | Err(TokenError::Malformed(_))
                ),
                "{alg}: {got:?}"
            );
        }
        assert_eq!(check(&format!("{h}.{p}.AAAA")), Err(TokenError::AlgNone));
    }
}

#[test]
fn rs256_public_key_used_as_hmac_secret_is_refused() {
    let jwk = Jwk::from_encoding_key(&rsa_enc(), Algorithm::RS256).expect("jwk");
    let forms: Vec<Vec<u8>> = vec![
        RSA_PUBLIC.to_vec(),
        RSA_PUBLIC_DER.to_vec(),
        serde_json::to_vec(&jwk).expect("json"),
    ];
    for secret in forms {
        let key = EncodingKey::from_secret(&secret);
        for header in [
            json!({"alg": "HS256", "kid": "rsa1"}),
            json!({"alg": "HS256"}),
        ] {
            let t = forge(header.clone(), claims(), &key, Algorithm::HS256);
            let got = check(&t);
            assert!(
                matches!(
                    got,
                    Err(TokenError::AlgNotAllowed) | Err(TokenError::BadSignature)
                ),
                "{header}: {got:?}"
            );
        }
    }
}

#[test]
fn token_alg_never_selects_a_different_method_for_a_kid() {
    // An ES256 token naming the RSA key id.
    let t = forge(
        json!({"alg": "ES256", "kid": "rsa1"}),
        claims(),
        &ec_enc(),
        Algorithm::ES256,
    );
    assert_eq!(check(&t), Err(TokenError::AlgNotAllowed));
    // RS384 signature with the right RSA key but the key is pinned to RS256.
    let t = forge(
        json!({"alg": "RS384", "kid": "rsa1"}),
        claims(),
        &rsa_enc(),
        Algorithm::RS384,
    );
    assert_eq!(check(&t), Err(TokenError::AlgNotAllowed));
}

#[test]
fn header_key_material_and_crit_are_refused() {
    let jwk = Jwk::from_encoding_key(&rsa_enc(), Algorithm::RS256).expect("jwk");
    let cases = [
        ("jwk", json!({"alg": "RS256", "jwk": jwk})),
        (
            "jku",
            json!({"alg": "HS256", "jku": "http://127.0.0.1:1/jwks.json"}),
        ),
        (
            "x5u",
            json!({"alg": "HS256", "x5u": "http://127.0.0.1:1/cert.pem"}),
        ),
        ("x5c", json!({"alg": "HS256", "x5c": ["MIIB"]})),
        ("crit", json!({"alg": "HS256", "crit": ["exp"]})),
        ("crit", json!({"alg": "HS256", "crit": []})),
    ];
    for (name, header) in cases {
        let key = if header["alg"] == "RS256" {
            rsa_enc()
        } else {
            hs_key()
        };
        let alg = if header["alg"] == "RS256" {
            Algorithm::RS256
        } else {
            Algorithm::HS256
        };
        let t = forge(header, claims(), &key, alg);
        assert_eq!(check(&t), Err(TokenError::ForbiddenHeader(name)), "{name}");
    }
}

#[test]
fn unknown_path_like_and_non_string_kids_are_refused() {
    for kid in ["nope", "../../etc/passwd", "rsa1\u{0}", ""] {
        let t = forge(
            json!({"alg": "HS256", "kid": kid}),
            claims(),
            &hs_key(),
            Algorithm::HS256,
        );
        assert_eq!(
            check(&t),
            Err(TokenError::UnknownKid(kid.to_string())),
            "{kid:?}"
        );
    }
    for kid in [json!(1), json!(null), json!(["rsa1"]), json!({"k": 1})] {
        let t = forge(
            json!({"alg": "HS256", "kid": kid}),
            claims(),
            &hs_key(),
            Algorithm::HS256,
        );
        assert_eq!(
            check(&t),
            Err(TokenError::Malformed("kid must be a string")),
            "{kid}"
        );
    }
}

#[test]
fn blank_hmac_secret_cannot_be_configured() {
    assert_eq!(Key::hs256(b"", None).err(), Some(KeyError::BlankSecret));
    assert_eq!(Key::hs256(b"  \t", None).err(), Some(KeyError::BlankSecret));
    // And a token signed with an empty secret does not verify against a real one.
    let t = forge(
        json!({"alg": "HS256"}),
        claims(),
        &EncodingKey::from_secret(b""),
        Algorithm::HS256,
    );
    assert_eq!(check(&t), Err(TokenError::BadSignature));
}

#[test]
fn empty_truncated_and_altered_signatures_are_refused() {
    let good = hs256(claims());
    let (msg, sig) = good.rsplit_once('.').expect("dot");
    assert_eq!(
        check(&format!("{msg}.")),
        Err(TokenError::Malformed("empty segment"))
    );
    let truncated = &sig[..sig.len() - 3];
    assert_eq!(
        check(&format!("{msg}.{truncated}")),
        Err(TokenError::BadSignature)
    );
    let mut flipped = sig.to_string().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    assert_eq!(
        check(&format!("{msg}.{flipped}")),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn es256_zero_signature_is_refused() {
    let t = forge(
        json!({"alg": "ES256", "kid": "ec1"}),
        claims(),
        &ec_enc(),
        Algorithm::ES256,
    );
    let (msg, _) = t.rsplit_once('.').expect("dot");
    let zero = b64url_encode(&[0u8; 64]);
    assert_eq!(
        check(&format!("{msg}.{zero}")),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn numeric_dates_must_be_numbers_in_range() {
    for bad in [
        json!("1800000600"),
        json!(null),
        json!(-5),
        json!(1e300),
        json!(u64::MAX),
        json!(true),
    ] {
        let mut c = claims();
        c["exp"] = bad.clone();
        assert_eq!(check(&hs256(c)), Err(TokenError::Claim("exp")), "exp={bad}");
        let mut c = claims();
        c["nbf"] = bad.clone();
        assert_eq!(check(&hs256(c)), Err(TokenError::Claim("nbf")), "nbf={bad}");
    }
    let mut c = claims();
    c.as_object_mut().expect("obj").remove("exp");
    assert_eq!(check(&hs256(c)), Err(TokenError::Claim("exp")));
}

#[test]
fn expiry_and_not_before_honour_leeway() {
    let mut c = claims();
    c["exp"] = json!(NOW - 29);
    assert!(check(&hs256(c.clone())).is_ok(), "within 30 s leeway");
    c["exp"] = json!(NOW - 30);
    assert_eq!(check(&hs256(c)), Err(TokenError::Expired));
    let mut c = claims();
    c["nbf"] = json!(NOW + 30);
    assert!(check(&hs256(c.clone())).is_ok(), "nbf within leeway");
    c["nbf"] = json!(NOW + 31);
    assert_eq!(check(&hs256(c)), Err(TokenError::NotYetValid));
    assert_eq!(
        Denial::from(TokenError::NotYetValid).code,
        ErrorCode::TokenExpired
    );
    assert_eq!(
        Denial::from(TokenError::Expired).code,
        ErrorCode::TokenExpired
    );
    let mut c = claims();
    c["exp"] = json!((NOW + 600) as f64 + 0.5);
    assert_eq!(check(&hs256(c)).map(|c| c.exp), Ok(NOW + 600));
}

#[test]
fn issuer_and_audience_are_required_once_configured() {
    let r = Rules {
        leeway_s: 30,
        issuer: Some("https://idp".into()),
        audience: Some("railgate".into()),
    };
    let run = |extra: serde_json::Value| {
        let mut c = claims();
        for (k, v) in extra.as_object().expect("obj") {
            c[k] = v.clone();
        }
        verify(&hs256(c), &keyset(), NOW, &r)
    };
    assert!(run(json!({"iss": "https://idp", "aud": "railgate"})).is_ok());
    assert!(run(json!({"iss": "https://idp", "aud": ["other", "railgate"]})).is_ok());
    assert_eq!(run(json!({"aud": "railgate"})), Err(TokenError::Issuer));
    assert_eq!(
        run(json!({"iss": "https://evil", "aud": "railgate"})),
        Err(TokenError::Issuer)
    );
    assert_eq!(
        run(json!({"iss": ["https://idp", "x"], "aud": "railgate"})),
        Err(TokenError::Issuer)
    );
    assert_eq!(
        run(json!({"iss": "https://idp"})),
        Err(TokenError::Audience)
    );
    assert_eq!(
        run(json!({"iss": "https://idp", "aud": "other"})),
        Err(TokenError::Audience)
    );
    assert_eq!(
        run(json!({"iss": "https://idp", "aud": ["railgate", 7]})),
        Err(TokenError::Audience)
    );
    assert_eq!(
        run(json!({"iss": "https://idp", "aud": []})),
        Err(TokenError::Audience)
    );
}

#[test]
fn unconfigured_issuer_and_audience_are_not_checked() {
    let mut c = claims();
    c["iss"] = json!("anyone");
    c["aud"] = json!(["x"]);
    assert!(check(&hs256(c)).is_ok());
}

#[test]
fn malformed_shapes_are_refused() {
    let good = hs256(claims());
    let (h, rest) = good.split_once('.').expect("dot");
    let cases = vec![
        format!("{good}."),
        format!("{h}.{rest}.extra"),
        good.replacen('.', "", 1),
        format!(" {good}"),
        format!("{good} "),
        format!("{h}=.{rest}"),
        good.replace('.', ". "),
        String::new(),
        "a.b".into(),
        "...".into(),
    ];
    for t in cases {
        assert!(
            matches!(check(&t), Err(TokenError::Malformed(_))),
            "{t:?}: {:?}",
            check(&t)
        );
    }
}

#[test]
fn array_and_non_json_payloads_are_refused() {
    let k = hs_key();
    for payload in ["[1,2]", "\"sub\"", "not json", "{\"sub\":\"a\"", "null"] {
        let t = forge_raw(r#"{"alg":"HS256"}"#, payload, &k, Algorithm::HS256);
        assert!(
            matches!(check(&t), Err(TokenError::Malformed(_))),
            "{payload}"
        );
    }
    let t = forge_raw("[\"HS256\"]", &claims().to_string(), &k, Algorithm::HS256);
    assert!(matches!(check(&t), Err(TokenError::Malformed(_))));
}

#[test]
fn duplicate_claims_and_header_members_are_refused() {
    let k = hs_key();
    let payload = format!(r#"{{"sub":"user-1","sub":"admin","exp":{}}}"#, NOW + 60);
    let t = forge_raw(r#"{"alg":"HS256"}"#, &payload, &k, Algorithm::HS256);
    assert_eq!(check(&t), Err(TokenError::Duplicate));
    let t = forge_raw(
        r#"{"alg":"HS256","alg":"none"}"#,
        &claims().to_string(),
        &k,
        Algorithm::HS256,
    );
    assert_eq!(check(&t), Err(TokenError::Duplicate));
}

#[test]
fn tokens_over_8_kib_are_refused_before_parsing() {
    let mut c = claims();
    c["pad"] = json!("x".repeat(8 * 1024));
    assert_eq!(check(&hs256(c)), Err(TokenError::Oversized));
    assert_eq!(check(&"a".repeat(8193)), Err(TokenError::Oversized));
}

#[test]
fn sub_and_tenant_claims_are_typed() {
    let mut c = claims();
    c["sub"] = json!(42);
    assert_eq!(check(&hs256(c)), Err(TokenError::Claim("sub")));
    let mut c = claims();
    c["sub"] = json!("");
    assert_eq!(check(&hs256(c)), Err(TokenError::Claim("sub")));
    let mut c = claims();
    c["tenant_id"] = json!(["a"]);
    assert_eq!(check(&hs256(c)), Err(TokenError::Claim("tenant_id")));
    let mut c = claims();
    c["tenants"] = json!(["t_a", 3]);
    assert_eq!(check(&hs256(c)), Err(TokenError::Claim("tenants")));
    let mut c = claims();
    c["tenants"] = json!(["t_a", "t_b"]);
    assert_eq!(
        check(&hs256(c)).map(|c| c.tenants).expect("ok"),
        vec!["t_demo", "t_a", "t_b"]
    );
    let mut c = claims();
    c["env"] = json!(1);
    assert_eq!(check(&hs256(c)), Err(TokenError::Claim("env")));
}

#[test]
fn unknown_algorithm_names_are_refused() {
    for alg in ["HS1", "RS256 ", "hs256", "ES256K"] {
        let h = b64url_encode(json!({"alg": alg}).to_string().as_bytes());
        let p = b64url_encode(claims().to_string().as_bytes());
        assert_eq!(
            check(&format!("{h}.{p}.AAAA")),
            Err(TokenError::AlgNotAllowed),
            "{alg}"
        );
    }
    let h = b64url_encode(br#"{"alg":256}"#);
    let p = b64url_encode(claims().to_string().as_bytes());
    assert!(matches!(
        check(&format!("{h}.{p}.AAAA")),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn jwks_keys_verify_and_are_pinned() {
    let mut rsa =
        serde_json::to_value(Jwk::from_encoding_key(&rsa_enc(), Algorithm::RS256).expect("jwk"))
            .expect("v");
    rsa["kid"] = json!("k-rsa");
    let mut ec =
        serde_json::to_value(Jwk::from_encoding_key(&ec_enc(), Algorithm::ES256).expect("jwk"))
            .expect("v");
    ec["kid"] = json!("k-ec");
    let ed = json!({"kty": "OKP", "crv": "Ed25519", "kid": "k-ed", "x": ed_public_x()});
    let doc = json!({"keys": [rsa, ec, ed]}).to_string();
    let load = load_jwks(doc.as_bytes()).expect("jwks");
    assert!(load.skipped.is_empty(), "{:?}", load.skipped);
    let mut ks = KeySet::new();
    assert!(ks.extend_jwks(load).is_empty());
    assert_eq!(ks.len(), 3);
    for (kid, alg, key) in [
        ("k-rsa", Algorithm::RS256, rsa_enc()),
        ("k-ec", Algorithm::ES256, ec_enc()),
        ("k-ed", Algorithm::EdDSA, ed_enc()),
    ] {
        let t = forge(json!({"alg": alg, "kid": kid}), claims(), &key, alg);
        assert!(verify(&t, &ks, NOW, &rules()).is_ok(), "{kid}");
    }
}

#[test]
fn jwk_whose_alg_or_use_disagree_is_skipped() {
    let base =
        serde_json::to_value(Jwk::from_encoding_key(&rsa_enc(), Algorithm::RS256).expect("jwk"))
            .expect("v");
    let mut wrong_alg = base.clone();
    wrong_alg["kid"] = json!("a");
    wrong_alg["alg"] = json!("HS256");
    let mut ec_alg_on_rsa = base.clone();
    ec_alg_on_rsa["kid"] = json!("b");
    ec_alg_on_rsa["alg"] = json!("ES256");
    let mut enc_use = base.clone();
    enc_use["kid"] = json!("c");
    enc_use["use"] = json!("enc");
    let oct = json!({"kty": "oct", "kid": "d", "k": "c2VjcmV0"});
    let mut ok = base;
    ok["kid"] = json!("e");
    let doc = json!({"keys": [wrong_alg, ec_alg_on_rsa, enc_use, oct, ok]}).to_string();
    let load = load_jwks(doc.as_bytes()).expect("jwks");
    let skipped: Vec<_> = load
        .skipped
        .iter()
        .map(|(k, _)| k.clone().unwrap_or_default())
        .collect();
    assert_eq!(skipped, vec!["a", "b", "c", "d"]);
    assert_eq!(load.keys.len(), 1);
    assert_eq!(load.keys[0].kid.as_deref(), Some("e"));
    assert!(load_jwks(b"{\"nokeys\":[]}").is_err());
    assert!(load_jwks(b"garbage").is_err());
}

#[test]
fn duplicate_kids_are_refused() {
    let mut ks = keyset();
    let again = Key::from_pem(RSA_PUBLIC, Algorithm::RS256, Some("rsa1".into())).expect("rsa");
    assert_eq!(
        ks.add(again).err(),
        Some(KeyError::DuplicateKid("rsa1".into()))
    );
}

#[test]
fn pem_keys_must_match_their_algorithm() {
    assert!(Key::from_pem(RSA_PUBLIC, Algorithm::ES256, None).is_err());
    assert!(Key::from_pem(EC_PUBLIC, Algorithm::EdDSA, None).is_err());
    assert!(matches!(
        Key::from_pem(RSA_PUBLIC, Algorithm::HS256, None),
        Err(KeyError::AlgorithmNotAllowed(_))
    ));
    assert!(Key::from_pem(
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        Algorithm::RS256,
        None
    )
    .is_err());
}

#[test]
fn key_debug_never_prints_material() {
    let k = Key::hs256(SECRET, Some("x".into())).expect("key");
    let shown = format!("{k:?}");
    assert!(!shown.contains("test-hs256"), "{shown}");
}
