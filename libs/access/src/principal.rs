//! The caller a credential names, and what it may do for which tenant.

use crate::error::AccessError;
use crate::role::{Action, Role};

/// Who is calling: what audit records (`id`), which tenants it acts for, and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<key id>` for an API key, `jwt:<subject>` for a bearer token.
    pub id: String,
    /// Never empty; the first is the tenant of requests that name none.
    pub tenants: Vec<String>,
    /// Never empty: one for an API key, those a token grants. Any of them may allow an action.
    pub roles: Vec<Role>,
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

    /// Refuses `action` when no role allows it, naming the role needed.
    pub fn require(&self, action: Action) -> Result<(), AccessError> {
        if self.roles.iter().any(|role| role.allows(action)) {
            return Ok(());
        }
        let has = match self.roles.as_slice() {
            [one] => format!("the {one} role"),
            [] => "no role".to_owned(),
            many => {
                let names: Vec<&str> = many.iter().map(|r| r.name()).collect();
                format!("the roles {}", names.join(", "))
            }
        };
        Err(AccessError::denied(format!(
            "this call needs {}; {} has {has}",
            action.needs(),
            self.id
        )))
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
