//! `recoup.v1.ApiKeys`: admins create, list and revoke the keys of their tenants.

use std::sync::Arc;

use chrono::Duration;
use recoup_access::{Access, Action, KeySpec, Principal, Role};
use recoup_proto::v1;
use recoup_proto::v1::api_keys_server::{ApiKeys, ApiKeysServer};
use recoup_runtime::Clock;
use tonic::{Request, Response, Status};

use crate::registry::{Registry, RegistryError};

/// Longest expiry a key may be given, in days (100 years: "does not expire" is 0).
pub const MAX_EXPIRY_DAYS: u32 = 36_500;

/// The key administration API of a process.
pub struct KeyAdmin {
    registry: Arc<Registry>,
    access: Access,
    clock: Clock,
}

impl KeyAdmin {
    /// `access`: what requests are checked against (the registry's keys, and tokens).
    pub fn new(registry: Arc<Registry>, access: Access, clock: Clock) -> Self {
        Self {
            registry,
            access,
            clock,
        }
    }

    pub fn into_server(self) -> ApiKeysServer<Self> {
        ApiKeysServer::new(self)
    }

    /// The admin calling, and the tenant the request acts for.
    fn admin<T>(&self, request: &Request<T>) -> Result<(Arc<Principal>, String), Status> {
        let acting = self.access.grpc(request, Action::ManageKeys)?;
        let principal = acting
            .principal
            .ok_or_else(|| Status::failed_precondition("API keys are off in this process"))?;
        Ok((principal, acting.tenant))
    }
}

/// Whether every tenant of `record` is one of the admin's: the keys it may see and revoke.
fn manages(admin: &Principal, record: &v1::ApiKey) -> bool {
    record
        .tenants
        .iter()
        .all(|t| admin.tenants.iter().any(|a| a == t))
}

/// A record as answered: without the secret's hash.
fn public(mut record: v1::ApiKey) -> v1::ApiKey {
    record.secret_sha256.clear();
    record
}

fn status_of(error: RegistryError) -> Status {
    match error {
        RegistryError::Invalid(why) => Status::invalid_argument(why),
        RegistryError::NotFound(id) => Status::not_found(format!("no API key {id}")),
        RegistryError::Publish(_) => Status::unavailable(error.to_string()),
        RegistryError::Store(_) => {
            tracing::error!(%error, "API key store");
            Status::internal("the key store failed; see the server log")
        }
    }
}

#[tonic::async_trait]
impl ApiKeys for KeyAdmin {
    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::CreateKeyResponse>, Status> {
        let (admin, tenant) = self.admin(&request)?;
        let asked = request.into_inner();
        let tenants = match asked.tenants.is_empty() {
            true => vec![tenant],
            false => asked.tenants,
        };
        if let Some(other) = tenants.iter().find(|t| !admin.tenants.contains(t)) {
            return Err(Status::permission_denied(format!(
                "{} may not make keys for tenant {other:?}",
                admin.id
            )));
        }
        let role = Role::from_proto(asked.role).ok_or_else(|| {
            Status::invalid_argument(
                "role: one of ROLE_VIEWER, ROLE_AGENT, ROLE_IMPORTER, ROLE_ADMIN",
            )
        })?;
        if asked.expires_in_days > MAX_EXPIRY_DAYS {
            return Err(Status::invalid_argument(format!(
                "expires_in_days: at most {MAX_EXPIRY_DAYS} (0: it does not expire)"
            )));
        }
        let now = (self.clock)();
        let spec = KeySpec {
            name: asked.name,
            tenants,
            role,
            expires_at: (asked.expires_in_days > 0)
                .then(|| now + Duration::days(i64::from(asked.expires_in_days))),
            created_by: admin.id.clone(),
        };
        let issued = self.registry.create(&spec, now).await.map_err(status_of)?;
        tracing::info!(key_id = %issued.record.id, by = %admin.id, role = %role, "API key created");
        Ok(Response::new(v1::CreateKeyResponse {
            key: issued.key.clone(),
            record: Some(public(issued.record.clone())),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let (admin, _) = self.admin(&request)?;
        let keys = self
            .registry
            .list()
            .into_iter()
            .filter(|record| manages(&admin, record))
            .map(public)
            .collect();
        Ok(Response::new(v1::ListKeysResponse { keys }))
    }

    async fn revoke_key(
        &self,
        request: Request<v1::RevokeKeyRequest>,
    ) -> Result<Response<v1::ApiKey>, Status> {
        let (admin, _) = self.admin(&request)?;
        let id = request.into_inner().id;
        // A key of other tenants is answered as unknown: its existence is not theirs to learn.
        let known = self.registry.get(&id);
        if !known.is_some_and(|record| manages(&admin, &record)) {
            return Err(Status::not_found(format!("no API key {id:?}")));
        }
        let now = (self.clock)();
        let record = self
            .registry
            .revoke(&id, now, &admin.id)
            .await
            .map_err(status_of)?;
        tracing::info!(key_id = %id, by = %admin.id, "API key revoked");
        Ok(Response::new(public(record)))
    }
}
