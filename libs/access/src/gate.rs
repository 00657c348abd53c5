//! The check every request passes: who calls, for which tenant, with which right.

use std::sync::Arc;

use chrono::Utc;
use recoup_proto::contract::{actor, metadata};
use recoup_proto::tenant::{DEFAULT_TENANT, requested_tenant, single_value};

use crate::api_key::KEY_PREFIX;
use crate::bearer::bearer_credential;
use crate::error::AccessError;
use crate::jwt::JwtVerifier;
use crate::principal::Principal;
use crate::ring::KeyRing;
use crate::role::Action;

/// How a process decides who may do what.
#[derive(Clone, Default)]
pub enum Access {
    /// No credentials (`--insecure`, loopback only): a request acts for the tenant it names,
    /// with every right.
    #[default]
    Open,
    /// Every request needs a credential: an API key of the ring, or a token the verifier takes.
    Checked(Arc<Credentials>),
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("Open"),
            Access::Checked(c) => write!(
                f,
                "Checked(keys: {}, tokens: {})",
                c.keys.len(),
                c.tokens.is_some()
            ),
        }
    }
}

/// What a credential is checked against.
pub struct Credentials {
    /// API keys (`rk1_…`).
    pub keys: Arc<KeyRing>,
    /// Bearer tokens of an identity provider, when one is configured.
    pub tokens: Option<Arc<JwtVerifier>>,
}

impl Credentials {
    /// The principal of an `authorization` value (`None`: no header) at `now`.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: chrono::DateTime<Utc>,
    ) -> Result<Arc<Principal>, AccessError> {
        let credential = bearer_credential(authorization)?;
        match (Kind::of(credential.as_bytes()), &self.tokens) {
            (Kind::ApiKey, _) => self.keys.check(credential, now),
            (Kind::Token, Some(tokens)) => tokens.verify(credential).map(Arc::new),
            (_, Some(_)) => Err(AccessError::unauthenticated(
                "the bearer credential is neither an API key (rk1_…) nor a JWT",
            )),
            (_, None) => Err(AccessError::unauthenticated(
                "the bearer credential is not an API key (rk1_…)",
            )),
        }
    }
}

/// What a bearer credential looks like: the one rule both the check and the metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ApiKey,
    /// Three dot-separated parts: a JWT.
    Token,
    Other,
}

impl Kind {
    fn of(credential: &[u8]) -> Self {
        if credential.starts_with(KEY_PREFIX.as_bytes()) {
            Kind::ApiKey
        } else if credential.iter().filter(|b| **b == b'.').count() == 2 {
            Kind::Token
        } else {
            Kind::Other
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::ApiKey => "api_key",
            Kind::Token => "token",
            Kind::Other => "other",
        }
    }
}

impl Access {
    /// Credentials checked against `keys` only.
    pub fn keys(keys: Arc<KeyRing>) -> Self {
        Access::Checked(Arc::new(Credentials { keys, tokens: None }))
    }
}

/// What a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    pub tenant: String,
    /// Who is calling; `None` when access is [`Access::Open`].
    pub principal: Option<Arc<Principal>>,
}

impl Acting {
    /// The actor of the events this request causes: the principal's id, or
    /// [`actor::ANONYMOUS`] without credentials.
    pub fn actor(&self) -> &str {
        self.principal
            .as_ref()
            .map_or(actor::ANONYMOUS, |p| p.id.as_str())
    }
}

impl Access {
    /// The tenant and principal of a request with `authorization` (`None`: no header) naming
    /// `requested` (`None`: no tenant header), for `action`.
    pub fn acting(
        &self,
        authorization: Option<&[u8]>,
        requested: Option<String>,
        action: Action,
    ) -> Result<Acting, AccessError> {
        match self {
            Access::Open => Ok(Acting {
                tenant: requested.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
                principal: None,
            }),
            Access::Checked(credentials) => {
                let acting = check(credentials, authorization, requested, action);
                if let Err(refusal) = &acting {
                    count_refusal(authorization, refusal);
                }
                acting
            }
        }
    }

    /// [`Access::acting`] for a gRPC request: metadata `authorization` and `x-recoup-tenant`.
    /// A malformed tenant, or either sent twice, is INVALID_ARGUMENT; refusals are UNAUTHENTICATED or
    /// PERMISSION_DENIED.
    pub fn grpc<T>(
        &self,
        request: &tonic::Request<T>,
        action: Action,
    ) -> Result<Acting, tonic::Status> {
        let requested = requested_tenant(request.metadata())?;
        let authorization = single_value(request.metadata(), metadata::AUTHORIZATION)
            .map_err(tonic::Status::invalid_argument)?;
        self.acting(authorization, requested, action)
            .map_err(tonic::Status::from)
    }
}

fn check(
    credentials: &Credentials,
    authorization: Option<&[u8]>,
    requested: Option<String>,
    action: Action,
) -> Result<Acting, AccessError> {
    let principal = credentials.authenticate(authorization, Utc::now())?;
    let tenant = match requested {
        Some(tenant) => {
            principal.act(Some(&tenant), action)?;
            tenant
        }
        None => principal.act(None, action)?.to_owned(),
    };
    Ok(Acting {
        tenant,
        principal: Some(principal),
    })
}

/// Counts and logs a refusal. The message names the key id or token subject where known and
/// never the secret; the labels name only the kind of credential and of refusal.
fn count_refusal(authorization: Option<&[u8]>, refusal: &AccessError) {
    // The part after the scheme, however malformed the value is.
    let credential = match authorization {
        None => "none",
        Some(value) => Kind::of(value.splitn(2, |b| *b == b' ').nth(1).unwrap_or_default()).label(),
    };
    let outcome = match refusal {
        AccessError::Unauthenticated(_) => "unauthenticated",
        AccessError::PermissionDenied(_) => "permission_denied",
    };
    recoup_metrics::metrics()
        .auth_failures
        .get_or_create(&recoup_metrics::AuthLabel {
            credential,
            outcome,
        })
        .inc();
    tracing::warn!(credential, %refusal, "request refused");
}

impl From<AccessError> for tonic::Status {
    fn from(error: AccessError) -> Self {
        match error {
            AccessError::Unauthenticated(why) => tonic::Status::unauthenticated(why),
            AccessError::PermissionDenied(why) => tonic::Status::permission_denied(why),
        }
    }
}
