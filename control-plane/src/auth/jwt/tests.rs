use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn hs() -> JwtSettings {
    JwtSettings { hs_secret: Some("0123456789abcdef0123456789abcdef".into()), ..JwtSettings::default() }
}

fn rs() -> JwtSettings {
    JwtSettings {
        rs_private_key: Some(fixture("jwt-rs256-private.pem")),
        rs_public_key: Some(fixture("jwt-rs256-public.pem")),
        ..JwtSettings::default()
    }
}

fn sign(claims: &serde_json::Value, header: Header, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

fn claims(exp_offset_s: i64) -> serde_json::Value {
    let now = Utc::now().timestamp();
    serde_json::json!({"sub": "api-key/x", "iss": "legion", "aud": "legion", "exp": now + exp_offset_s, "iat": now})
}

#[test]
fn issued_tokens_verify_with_their_policies() {
    for settings in [hs(), rs()] {
        let keys = JwtKeys::load(&settings).expect("keys");
        let (token, expires_at) = keys.issue("api-key/1", &["ops".into()], Utc::now(), None).expect("issue");
        let claims = keys.verify(&token).expect("verify");
        assert_eq!(claims.sub, "api-key/1");
        assert_eq!(claims.policies, vec!["ops".to_owned()]);
        assert!(expires_at > Utc::now() + Duration::seconds(800));
    }
}

#[test]
fn tokens_never_outlive_their_key() {
    let keys = JwtKeys::load(&hs()).expect("keys");
    let limit = Utc::now() + Duration::seconds(60);
    let (_, expires_at) = keys.issue("s", &[], Utc::now(), Some(limit)).expect("issue");
    assert!(expires_at <= limit);
}

#[test]
fn alg_none_is_refused() {
    let keys = JwtKeys::load(&hs()).expect("keys");
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!("{}.{}.", b64(serde_json::json!({"alg": "none", "typ": "JWT"})), b64(claims(600)));
    assert!(matches!(keys.verify(&token), Err(Refused::Invalid(_))));
    let token = format!("{}.{}.", b64(serde_json::json!({"alg": "None", "typ": "JWT"})), b64(claims(600)));
    assert!(keys.verify(&token).is_err());
}

#[test]
fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
    let public_pem = std::fs::read(fixture("jwt-rs256-public.pem")).expect("pem");
    let forged =
        sign(&claims(600), Header::new(Algorithm::HS256), &EncodingKey::from_secret(&public_pem).expect("key"));
    // RS256 only: HS256 is not on the allow-list.
    let keys = JwtKeys::load(&rs()).expect("keys");
    assert!(matches!(keys.verify(&forged), Err(Refused::Algorithm(_))));
    // Both families configured: the HS256 token is checked against the HS secret, never the RSA key.
    let mut both = rs();
    both.hs_secret = hs().hs_secret;
    let keys = JwtKeys::load(&both).expect("keys");
    assert!(matches!(keys.verify(&forged), Err(Refused::Invalid(_))));
}

#[test]
fn signatures_issuers_audiences_and_times_are_checked() {
    let keys = JwtKeys::load(&rs()).expect("keys");
    let own = EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256-private.pem")).expect("pem")).expect("key");
    let other =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256-other-private.pem")).expect("pem")).expect("key");
    let header = Header::new(Algorithm::RS256);
    keys.verify(&sign(&claims(600), header.clone(), &own)).expect("a good token verifies");
    assert!(keys.verify(&sign(&claims(600), header.clone(), &other)).is_err(), "another key's signature");

    let good = sign(&claims(600), header.clone(), &own);
    let (head, rest) = good.split_once('.').expect("jws");
    let (payload, signature) = rest.split_once('.').expect("jws");
    let mut body: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    body["policies"] = serde_json::json!(["admin"]);
    let tampered = format!("{head}.{}.{signature}", URL_SAFE_NO_PAD.encode(body.to_string()));
    assert!(keys.verify(&tampered).is_err(), "a changed payload");

    let mut c = claims(600);
    c["aud"] = "other".into();
    assert!(keys.verify(&sign(&c, header.clone(), &own)).is_err(), "wrong aud");
    let mut c = claims(600);
    c["iss"] = "other".into();
    assert!(keys.verify(&sign(&c, header.clone(), &own)).is_err(), "wrong iss");
    assert!(keys.verify(&sign(&claims(-120), header.clone(), &own)).is_err(), "expired past the leeway");
    let mut c = claims(600);
    c["nbf"] = (Utc::now().timestamp() + 300).into();
    assert!(keys.verify(&sign(&c, header.clone(), &own)).is_err(), "not yet valid");
    let mut c = claims(600);
    c.as_object_mut().expect("object").remove("exp");
    assert!(keys.verify(&sign(&c, header, &own)).is_err(), "no exp");
}

#[test]
fn the_jwks_publishes_only_the_public_key() {
    let keys = JwtKeys::load(&rs()).expect("keys");
    let jwks: serde_json::Value = serde_json::from_str(keys.jwks()).expect("json");
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert!(key["n"].is_string() && key["e"].is_string() && key["kid"].is_string());
    assert!(key.get("d").is_none(), "no private exponent");
    let keys = JwtKeys::load(&hs()).expect("keys");
    assert_eq!(keys.jwks(), r#"{"keys":[]}"#, "an HS secret is never published");
}

#[test]
fn a_mismatched_key_pair_is_refused_at_start() {
    let mut settings = rs();
    settings.rs_private_key = Some(fixture("jwt-rs256-other-private.pem"));
    let err = JwtKeys::load(&settings).expect_err("mismatch").to_string();
    assert!(err.contains("crypt.jwt.rs_public_key"), "{err}");
    settings.rs_private_key = Some(fixture("missing.pem"));
    let err = JwtKeys::load(&settings).expect_err("missing").to_string();
    assert!(err.contains("crypt.jwt.rs_private_key"), "{err}");
}

#[test]
fn without_keys_every_token_is_refused_as_disabled() {
    let keys = JwtKeys::load(&JwtSettings::default()).expect("no keys");
    let signed = JwtKeys::load(&hs()).expect("keys").issue("api-key/1", &[], Utc::now(), None).expect("issue").0;
    for token in ["abc.def.ghi", signed.as_str()] {
        assert_eq!(keys.verify(token), Err(Refused::Disabled), "{token}");
    }
}
