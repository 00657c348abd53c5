//! Bearer tokens of an identity provider: tokens signed with RSA and EC keys the test makes,
//! checked against a JWKS of their public halves, and every way a token is refused.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use recoup_access::{AccessError, Credentials, JwtSettings, JwtVerifier, KeyRing, Role};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "recoup";

/// The provider's signing keys, made for this test, and its JWKS.
struct Provider {
    rsa: EncodingKey,
    rsa_n: Vec<u8>,
    ec: EncodingKey,
    jwks: Value,
}

impl Provider {
    fn new() -> Self {
        let rsa = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let rsa_der = rsa.to_pkcs1_der().unwrap();
        let ec = rcgen::KeyPair::generate().unwrap();
        let point = ec.public_key_raw();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let rsa_n = rsa.n().to_bytes_be();
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
             "n": b64(&rsa_n), "e": b64(&rsa.e().to_bytes_be())},
            {"kty": "EC", "kid": "ec-1", "use": "sig", "crv": "P-256",
             "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            // A shared secret in a JWKS is never a way in.
            {"kty": "oct", "kid": "hmac", "k": b64(b"not a secret at all")},
        ]});
        Self {
            rsa: EncodingKey::from_rsa_der(rsa_der.as_bytes()),
            rsa_n,
            ec: EncodingKey::from_ec_der(&ec.serialize_der()),
            jwks,
        }
    }

    fn verifier(&self) -> JwtVerifier {
        let verifier = JwtVerifier::new(JwtSettings::new(ISSUER, AUDIENCE));
        let kept = verifier.set_keys(self.jwks.to_string().as_bytes()).unwrap();
        assert_eq!(kept, 2, "the RSA and the EC key; not the HMAC secret");
        verifier
    }

    fn sign(&self, alg: Algorithm, kid: &str, claims: &Value) -> String {
        let header = Header {
            kid: Some(kid.to_owned()),
            ..Header::new(alg)
        };
        let key = match alg {
            Algorithm::ES256 => &self.ec,
            _ => &self.rsa,
        };
        encode(&header, claims, key).unwrap()
    }
}

fn claims() -> Value {
    let now = Utc::now().timestamp();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "ana@lender.example", "iat": now,
           "exp": now + 300, "recoup_tenants": ["acme", "globex"], "recoup_roles": "agent"})
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn refused(verifier: &JwtVerifier, token: &str) -> String {
    match verifier.verify(token) {
        Err(AccessError::Unauthenticated(why)) => {
            assert!(!why.contains(token), "the refusal repeats the token");
            why
        }
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[test]
fn tokens_signed_with_rs256_and_es256_name_their_subject_tenants_and_roles() {
    let provider = Provider::new();
    let verifier = provider.verifier();
    for (alg, kid) in [(Algorithm::RS256, "rsa-1"), (Algorithm::ES256, "ec-1")] {
        let principal = verifier
            .verify(&provider.sign(alg, kid, &claims()))
            .unwrap();
        assert_eq!(principal.id, "jwt:ana@lender.example");
        assert_eq!(principal.tenants, ["acme", "globex"]);
        assert_eq!(principal.roles, [Role::Agent]);
    }
    let several = with(
        claims(),
        "recoup_roles",
        json!(["importer", "viewer", "pilot"]),
    );
    let several = with(several, "recoup_tenants", json!("acme"));
    let principal = verifier
        .verify(&provider.sign(Algorithm::ES256, "ec-1", &several))
        .unwrap();
    assert_eq!(
        principal.roles,
        [Role::Viewer, Role::Importer],
        "unknown names are left out"
    );
    assert_eq!(principal.tenants, ["acme"]);
}

#[test]
fn expired_tokens_are_refused_after_the_leeway() {
    let provider = Provider::new();
    let verifier = provider.verifier();
    let now = Utc::now().timestamp();
    let late = with(claims(), "exp", json!(now - 120));
    let why = refused(&verifier, &provider.sign(Algorithm::RS256, "rsa-1", &late));
    assert_eq!(why, "the token has expired");
    let within = with(claims(), "exp", json!(now - 10));
    verifier
        .verify(&provider.sign(Algorithm::RS256, "rsa-1", &within))
        .unwrap();
    let early = with(claims(), "nbf", json!(now + 600));
    let why = refused(&verifier, &provider.sign(Algorithm::RS256, "rsa-1", &early));
    assert!(why.contains("not valid yet"), "{why}");
}

#[test]
fn a_wrong_audience_or_issuer_is_refused() {
    let provider = Provider::new();
    let verifier = provider.verifier();
    let other = with(claims(), "aud", json!("someone-else"));
    let why = refused(&verifier, &provider.sign(Algorithm::ES256, "ec-1", &other));
    assert_eq!(why, "the token is not for this audience");
    let other = with(claims(), "iss", json!("https://evil.example"));
    let why = refused(&verifier, &provider.sign(Algorithm::ES256, "ec-1", &other));
    assert_eq!(why, "the token's issuer is not trusted");
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let why = refused(&verifier, &provider.sign(Algorithm::ES256, "ec-1", &no_sub));
    assert!(why.contains("sub"), "{why}");
}

#[tokio::test]
async fn an_unknown_key_id_is_refused_and_asks_for_the_keys_again() {
    let provider = Provider::new();
    let verifier = provider.verifier();
    let why = refused(
        &verifier,
        &provider.sign(Algorithm::RS256, "rsa-2", &claims()),
    );
    assert_eq!(why, "no key \"rsa-2\" in the identity provider's JWKS");
    tokio::time::timeout(Duration::from_secs(1), verifier.unknown_key_seen())
        .await
        .expect("the refresher is woken");
}

#[test]
fn alg_none_hmac_and_tampered_tokens_are_refused() {
    let provider = Provider::new();
    let verifier = provider.verifier();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "rsa-1", "typ": "JWT"})),
        b64(&claims())
    );
    let why = refused(&verifier, &none);
    assert!(
        why.starts_with("the bearer token is not a JWT this server takes"),
        "{why}"
    );

    // HMAC: with the JWKS's secret, and with the RSA key's public modulus as the secret.
    let secret = EncodingKey::from_secret(b"not a secret at all");
    let header = Header {
        kid: Some("hmac".to_owned()),
        ..Header::new(Algorithm::HS256)
    };
    let why = refused(&verifier, &encode(&header, &claims(), &secret).unwrap());
    assert!(why.starts_with("no key \"hmac\""), "{why}");
    let confused = Header {
        kid: Some("rsa-1".to_owned()),
        ..Header::new(Algorithm::HS256)
    };
    let public = EncodingKey::from_secret(&provider.rsa_n);
    let why = refused(&verifier, &encode(&confused, &claims(), &public).unwrap());
    assert_eq!(why, "key \"rsa-1\" does not sign with HS256");

    let token = provider.sign(Algorithm::ES256, "ec-1", &claims());
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 0x01;
    let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    let why = refused(&verifier, &tampered);
    assert_eq!(why, "the token's signature does not verify");
    // Claims changed under a valid signature: another tenant.
    let (header, _) = signed.split_once('.').unwrap();
    let forged = with(claims(), "recoup_tenants", json!(["initech"]));
    let forged = format!("{header}.{}.{signature}", b64(&forged));
    let why = refused(&verifier, &forged);
    assert_eq!(why, "the token's signature does not verify");
}

#[test]
fn tokens_without_a_tenant_or_a_role_name_nobody() {
    let provider = Provider::new();
    let verifier = provider.verifier();
    let no_role = with(claims(), "recoup_roles", json!(["pilot"]));
    let why = refused(
        &verifier,
        &provider.sign(Algorithm::RS256, "rsa-1", &no_role),
    );
    assert!(why.contains("has no role this server knows"), "{why}");
    let no_tenant = with(claims(), "recoup_tenants", json!([]));
    let why = refused(
        &verifier,
        &provider.sign(Algorithm::RS256, "rsa-1", &no_tenant),
    );
    assert!(why.contains("names no tenant"), "{why}");
    let odd_tenant = with(claims(), "recoup_tenants", json!("a b"));
    let why = refused(
        &verifier,
        &provider.sign(Algorithm::RS256, "rsa-1", &odd_tenant),
    );
    assert!(why.contains("tenant may contain only"), "{why}");
    // Configured claims.
    let mut settings = JwtSettings::new(ISSUER, AUDIENCE);
    settings.tenant_claim = "org".to_owned();
    settings.role_claim = "groups".to_owned();
    let custom = JwtVerifier::new(settings);
    custom
        .set_keys(provider.jwks.to_string().as_bytes())
        .unwrap();
    let claims = with(
        with(claims(), "org", json!("acme")),
        "groups",
        json!(["admin"]),
    );
    let principal = custom
        .verify(&provider.sign(Algorithm::RS256, "rsa-1", &claims))
        .unwrap();
    assert_eq!(
        (principal.tenants, principal.roles),
        (vec!["acme".to_owned()], vec![Role::Admin])
    );
}

#[test]
fn a_jwks_without_a_usable_key_is_refused_and_keeps_the_keys_there_were() {
    let provider = Provider::new();
    let verifier = provider.verifier();
    let only_hmac = json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]});
    let why = verifier
        .set_keys(only_hmac.to_string().as_bytes())
        .unwrap_err();
    assert!(why.contains("no RSA or EC signing key"), "{why}");
    assert!(
        verifier
            .set_keys(b"<html>")
            .unwrap_err()
            .starts_with("not a JWKS")
    );
    verifier
        .verify(&provider.sign(Algorithm::RS256, "rsa-1", &claims()))
        .unwrap();
}

/// One gate for both kinds of credential.
#[test]
fn credentials_take_api_keys_and_tokens() {
    let provider = Provider::new();
    let credentials = Credentials {
        keys: Arc::new(KeyRing::new()),
        tokens: Some(Arc::new(provider.verifier())),
    };
    let token = provider.sign(Algorithm::ES256, "ec-1", &claims());
    let authorization = format!("Bearer {token}");
    let principal = credentials
        .authenticate(Some(authorization.as_bytes()), Utc::now())
        .unwrap();
    assert_eq!(principal.id, "jwt:ana@lender.example");
    let why = credentials.authenticate(Some(b"Bearer rk1_0000000000000000_x"), Utc::now());
    assert!(matches!(why, Err(AccessError::Unauthenticated(_))));
    let why = credentials.authenticate(Some(b"Bearer something-else"), Utc::now());
    assert_eq!(
        why,
        Err(AccessError::Unauthenticated(
            "the bearer credential is neither an API key (rk1_…) nor a JWT".to_owned()
        ))
    );
}
