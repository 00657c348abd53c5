//! The one check both front ends (gRPC and HTTP) put a request through before it costs
//! anything: who calls, for which tenant, with which right, and that tenant's rate limit.

use recoup_access::{Access, AccessError, Action};
use recoup_proto::tenant::named_tenant;

use crate::limits::{RateLimited, TenantLimiter};

/// Access and the per-tenant rate limit, shared by gRPC and HTTP.
#[derive(Clone)]
pub struct Admission {
    access: Access,
    limiter: TenantLimiter,
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
    ) -> Result<String, Refused> {
        let requested = named_tenant(tenant, source).map_err(Refused::Tenant)?;
        let tenant = self
            .access
            .acting(authorization, requested, action)
            .map_err(Refused::Access)?
            .tenant;
        self.limiter.check(&tenant).map_err(Refused::Limited)?;
        Ok(tenant)
    }
}
