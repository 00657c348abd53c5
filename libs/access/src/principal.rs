//! The caller a credential names, and what it may do for which tenant.

use crate::error::AccessError;
use crate::role::{Action, Role};

/// Who is calling: what audit records (`id`), which tenants it acts for, and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<key id>` for an API key, the token's subject for a bearer token.
    pub id: String,
    /// Never empty; the first is the tenant of requests that name none.
    pub tenants: Vec<String>,
    pub role: Role,
}

impl Principal {
    /// The tenant a request acts for: the one it names (`x-recoup-tenant`), which must be one
    /// of the principal's, or else the principal's first.
    pub fn tenant_for<'a>(&'a self, requested: Option<&'a str>) -> Result<&'a str, AccessError> {
        match requested {
            None => self.tenants.first().map(String::as_str).ok_or_else(|| {
                AccessError::unauthenticated(format!("{} names no tenant", self.id))
            }),
            Some(tenant) if self.tenants.iter().any(|t| t == tenant) => Ok(tenant),
            Some(tenant) => Err(AccessError::denied(format!(
                "{} may not act for tenant {tenant:?}",
                self.id
            ))),
        }
    }

    /// Refuses `action` when the role does not allow it, naming the role needed.
    pub fn require(&self, action: Action) -> Result<(), AccessError> {
        if self.role.allows(action) {
            Ok(())
        } else {
            Err(AccessError::denied(format!(
                "this call needs {}; {} has the {} role",
                action.needs(),
                self.id,
                self.role
            )))
        }
    }

    /// The tenant `action` is done for, once both the tenant and the role allow it.
    pub fn act<'a>(
        &'a self,
        requested: Option<&'a str>,
        action: Action,
    ) -> Result<&'a str, AccessError> {
        let tenant = self.tenant_for(requested)?;
        self.require(action)?;
        Ok(tenant)
    }
}
