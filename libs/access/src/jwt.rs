//! Bearer tokens of an identity provider (OIDC): JWTs signed with a key of the provider's JWKS
//! (RSA — RS256/384/512, PS256/384/512 — or EC — ES256, ES384), from the trusted issuer, for
//! this audience, not expired (with a small leeway). Which claims carry the tenants and the
//! roles is configured. HMAC keys and `alg: none` are never accepted: an asymmetric key's
//! public half must not become a shared secret.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::RwLock;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use recoup_proto::tenant::validate_tenant;
use serde_json::Value;
use tokio::sync::Notify;

use crate::error::AccessError;
use crate::principal::Principal;
use crate::role::Role;

/// What a token must be, and where its tenants and roles are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// `iss` must be this.
    pub issuer: String,
    /// `aud` must be or contain this.
    pub audience: String,
    /// The claim with the tenants (a string or an array of strings).
    pub tenant_claim: String,
    /// The claim with the roles (`viewer`, `agent`, `importer`, `admin`: a string or an array).
    pub role_claim: String,
    /// Seconds a token is still taken after its `exp` (and before its `nbf`): clock skew.
    pub leeway_seconds: u64,
}

impl JwtSettings {
    /// Claims `recoup_tenants` and `recoup_roles`, 30 s of leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            tenant_claim: "recoup_tenants".to_owned(),
            role_claim: "recoup_roles".to_owned(),
            leeway_seconds: 30,
        }
    }
}

/// A key of the JWKS and the algorithms it may sign with.
struct VerifyKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Checks bearer tokens against the provider's current keys.
pub struct JwtVerifier {
    settings: JwtSettings,
    /// The checks of a token, per algorithm this verifier takes: made once, not per request.
    validations: HashMap<Algorithm, Validation>,
    keys: RwLock<HashMap<String, VerifyKey>>,
    /// Woken when a token names a key id the JWKS lacks: the provider may have rotated.
    unknown_key: Notify,
}

const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl JwtVerifier {
    /// A verifier without keys yet ([`JwtVerifier::set_keys`]).
    pub fn new(settings: JwtSettings) -> Self {
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.leeway = settings.leeway_seconds;
            v.validate_nbf = true;
            v.set_issuer(&[&settings.issuer]);
            v.set_audience(&[&settings.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            (alg, v)
        };
        let validations = RSA
            .into_iter()
            .chain([Algorithm::ES256, Algorithm::ES384])
            .map(validation)
            .collect();
        Self {
            validations,
            settings,
            keys: RwLock::default(),
            unknown_key: Notify::new(),
        }
    }

    /// Takes a JWKS (JSON); keeps its RSA and EC signing keys that have a `kid`. Refuses a
    /// set without one, keeping the keys it had.
    pub fn set_keys(&self, jwks: &[u8]) -> Result<usize, String> {
        let set: JwkSet = serde_json::from_slice(jwks).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            let mut algorithms: Vec<Algorithm> = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => RSA.to_vec(),
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => continue,
                },
                // HMAC (oct) and the rest: never.
                _ => continue,
            };
            if let Some(named) = &jwk.common.key_algorithm {
                let named = Algorithm::from_str(&named.to_string()).ok();
                algorithms.retain(|a| Some(*a) == named);
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            if !algorithms.is_empty() {
                keys.insert(kid.clone(), VerifyKey { key, algorithms });
            }
        }
        if keys.is_empty() {
            return Err("the JWKS has no RSA or EC signing key with a kid".to_owned());
        }
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        Ok(count)
    }

    /// Completes when a token named a key id the JWKS lacks (time to fetch it again).
    pub async fn unknown_key_seen(&self) {
        self.unknown_key.notified().await;
    }

    /// The principal of `token`: `jwt:<sub>`, the tenants and roles its claims grant.
    pub fn verify(&self, token: &str) -> Result<Principal, AccessError> {
        let unauthenticated = AccessError::unauthenticated;
        let header = decode_header(token).map_err(|e| {
            unauthenticated(format!(
                "the bearer token is not a JWT this server takes ({e})"
            ))
        })?;
        let kid = header
            .kid
            .ok_or_else(|| unauthenticated("the token names no key (kid)".to_owned()))?;
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(key) = keys.get(&kid) else {
            self.unknown_key.notify_one();
            return Err(unauthenticated(format!(
                "no key {kid:?} in the identity provider's JWKS"
            )));
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(unauthenticated(format!(
                "key {kid:?} does not sign with {:?}",
                header.alg
            )));
        }
        // Every algorithm a key may sign with has its validation.
        let Some(validation) = self.validations.get(&header.alg) else {
            return Err(unauthenticated(format!(
                "algorithm {:?} is not taken",
                header.alg
            )));
        };
        let claims = decode::<Value>(token, &key.key, validation)
            .map_err(|e| unauthenticated(refusal(e.kind())))?
            .claims;
        drop(keys);
        self.principal(&claims)
    }

    fn principal(&self, claims: &Value) -> Result<Principal, AccessError> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AccessError::unauthenticated("the token has no subject (sub)"))?;
        let id = format!("jwt:{subject}");
        let tenants = strings(claims, &self.settings.tenant_claim);
        if tenants.is_empty() {
            return Err(AccessError::unauthenticated(format!(
                "{id} names no tenant (claim {})",
                self.settings.tenant_claim
            )));
        }
        for tenant in &tenants {
            validate_tenant(tenant).map_err(AccessError::unauthenticated)?;
        }
        let mut roles: Vec<Role> = strings(claims, &self.settings.role_claim)
            .iter()
            .filter_map(|name| Role::from_str(name).ok())
            .collect();
        roles.sort_unstable();
        roles.dedup();
        if roles.is_empty() {
            return Err(AccessError::unauthenticated(format!(
                "{id} has no role this server knows (claim {}: viewer, agent, importer, admin)",
                self.settings.role_claim
            )));
        }
        Ok(Principal { id, tenants, roles })
    }
}

/// A claim that is a string or an array of strings.
fn strings(claims: &Value, claim: &str) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Why a token was refused, without repeating any of it.
fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidAudience => "the token is not for this audience".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer is not trusted".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks claim {claim}"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not fit its key".to_owned(),
        other => format!("the token is not valid ({other:?})"),
    }
}
