//! The tenant of a gRPC request. Until API keys arrive it comes from metadata `x-recoup-tenant`.

/// The metadata key naming the tenant.
pub const TENANT_METADATA_KEY: &str = crate::contract::metadata::TENANT;
/// The tenant of requests that name none.
pub const DEFAULT_TENANT: &str = "default";
/// Longest tenant id, bytes.
pub const MAX_TENANT_LEN: usize = 64;

/// Checks a tenant id: 1–64 of `A-Z a-z 0-9 . _ -` (it becomes part of every storage key).
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN {
        return Err(format!(
            "tenant must be 1 to {MAX_TENANT_LEN} characters, got {}",
            tenant.len()
        ));
    }
    if let Some(c) = tenant
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "tenant may contain only A-Z, a-z, 0-9, '.', '_' and '-', found {c:?}"
        ));
    }
    Ok(())
}

/// The tenant of a `GetCase` request and the case it names, or `INVALID_ARGUMENT`.
pub fn tenant_and_case(
    request: &tonic::Request<crate::v1::GetCaseRequest>,
) -> Result<(String, &str), tonic::Status> {
    let tenant = tenant_of(request)?;
    Ok((tenant, case_id_of(request)?))
}

/// The case a `GetCase` request names, or `INVALID_ARGUMENT`.
pub fn case_id_of(
    request: &tonic::Request<crate::v1::GetCaseRequest>,
) -> Result<&str, tonic::Status> {
    let case_id = request.get_ref().case_id.as_str();
    if case_id.is_empty() {
        return Err(tonic::Status::invalid_argument("case_id is required"));
    }
    Ok(case_id)
}

/// The request's tenant, or `INVALID_ARGUMENT` naming the metadata key.
pub fn tenant_of<T>(request: &tonic::Request<T>) -> Result<String, tonic::Status> {
    Ok(requested_tenant(request.metadata())?.unwrap_or_else(|| DEFAULT_TENANT.to_owned()))
}

/// The tenant metadata names (`None`: no metadata `x-recoup-tenant`), or `INVALID_ARGUMENT`
/// naming the metadata key.
pub fn requested_tenant(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Option<String>, tonic::Status> {
    let tenant = match metadata.get(TENANT_METADATA_KEY) {
        None => return Ok(None),
        Some(value) => value.to_str().map_err(|_| {
            tonic::Status::invalid_argument(format!("metadata {TENANT_METADATA_KEY} must be ASCII"))
        })?,
    };
    validate_tenant(tenant).map_err(|e| {
        tonic::Status::invalid_argument(format!("metadata {TENANT_METADATA_KEY}: {e}"))
    })?;
    Ok(Some(tenant.to_owned()))
}
