//! The check every request passes: who calls, for which tenant, with which right.

use std::sync::Arc;

use chrono::Utc;
use recoup_proto::contract::metadata;
use recoup_proto::tenant::{DEFAULT_TENANT, requested_tenant};

use crate::error::AccessError;
use crate::principal::Principal;
use crate::ring::KeyRing;
use crate::role::Action;

/// How a process decides who may do what.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// No credentials: a request acts for the tenant it names, with every right (today's
    /// behaviour; servers bind to loopback by default).
    #[default]
    Open,
    /// Every request needs an API key of the ring.
    Keys(Arc<KeyRing>),
}

/// What a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    pub tenant: String,
    /// Who is calling; `None` when access is [`Access::Open`].
    pub principal: Option<Arc<Principal>>,
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
            Access::Keys(ring) => {
                let principal = ring.authenticate(authorization, Utc::now())?;
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
        }
    }

    /// [`Access::acting`] for a gRPC request: metadata `authorization` and `x-recoup-tenant`.
    /// A malformed tenant is INVALID_ARGUMENT; refusals are UNAUTHENTICATED or
    /// PERMISSION_DENIED.
    pub fn grpc<T>(
        &self,
        request: &tonic::Request<T>,
        action: Action,
    ) -> Result<Acting, tonic::Status> {
        let requested = requested_tenant(request.metadata())?;
        let authorization = request
            .metadata()
            .get(metadata::AUTHORIZATION)
            .map(|v| v.as_bytes());
        self.acting(authorization, requested, action)
            .map_err(tonic::Status::from)
    }
}

impl From<AccessError> for tonic::Status {
    fn from(error: AccessError) -> Self {
        match error {
            AccessError::Unauthenticated(why) => tonic::Status::unauthenticated(why),
            AccessError::PermissionDenied(why) => tonic::Status::permission_denied(why),
        }
    }
}
