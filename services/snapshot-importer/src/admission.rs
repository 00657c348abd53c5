//! The one check both front ends (gRPC and HTTP) put a request through before it costs
//! anything: who calls, for which tenant, with which right, and that tenant's rate limit.

use recoup_access::{Access, AccessError, Action};
use recoup_proto::tenant::named_tenant;

use crate::limits::{RateLimited, TenantLimiter};

/// Access and the rate limit (per credential and tenant), shared by gRPC and HTTP.
#[derive(Clone)]
pub struct Admission {
    access: Access,
    limiter: TenantLimiter,
}

/// Who a request acts as, once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub tenant: String,
    /// The principal (`key:<id>`, `jwt:<sub>`), or `anonymous` without credentials: the
    /// actor of the events the request causes.
    pub actor: String,
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Refused {
    /// The tenant header is not a tenant id (INVALID_ARGUMENT / 400).
    Tenant(String),
    Access(AccessError),
    Limited(RateLimited),
}

impl Admission {
    pub fn new(access: Access, limiter: TenantLimiter) -> Self {
        Self { access, limiter }
    }

    /// The tenant a request acts for: `tenant` is its `x-recoup-tenant` value (read from
    /// `source`, "metadata" or "header"), `authorization` its credential; `action` what it does.
    pub fn admit(
        &self,
        authorization: Option<&[u8]>,
        tenant: Option<&[u8]>,
        source: &str,
        action: Action,
    ) -> Result<Admitted, Refused> {
        let requested = named_tenant(tenant, source).map_err(Refused::Tenant)?;
        let acting = self
            .access
            .acting(authorization, requested, action)
            .map_err(Refused::Access)?;
        let actor = acting.actor().to_owned();
        // Each credential has its own budget in each tenant: one noisy script does not use
        // up the others'.
        let budget = match &acting.principal {
            None => acting.tenant.clone(),
            Some(_) => format!("{}, credential {actor}", acting.tenant),
        };
        self.limiter.check(&budget).map_err(Refused::Limited)?;
        Ok(Admitted {
            tenant: acting.tenant,
            actor,
        })
    }
}
