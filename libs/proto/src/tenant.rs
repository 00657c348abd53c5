//! The tenant a request names (`x-recoup-tenant`, gRPC metadata or HTTP header) and the rule
//! of tenant ids. Which tenant a request may act for is `recoup_access`'s decision.

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

/// The case a `GetCase` request names, or `INVALID_ARGUMENT`.
pub fn case_id_of(
    request: &tonic::Request<crate::v1::GetCaseRequest>,
) -> Result<&str, tonic::Status> {
    required_case_id(&request.get_ref().case_id)
}

/// A case id a request names, or `INVALID_ARGUMENT` when it names none.
pub fn required_case_id(case_id: &str) -> Result<&str, tonic::Status> {
    if case_id.is_empty() {
        return Err(tonic::Status::invalid_argument("case_id is required"));
    }
    Ok(case_id)
}

/// The tenant a request names: `value` of `x-recoup-tenant` (`None`: not sent), checked.
/// `source` ("metadata", "header") says where in a refusal.
pub fn named_tenant(value: Option<&[u8]>, source: &str) -> Result<Option<String>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let tenant = std::str::from_utf8(value)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or_else(|| format!("{source} {TENANT_METADATA_KEY} must be ASCII"))?;
    validate_tenant(tenant).map_err(|e| format!("{source} {TENANT_METADATA_KEY}: {e}"))?;
    Ok(Some(tenant.to_owned()))
}

/// The tenant gRPC metadata names (`None`: no `x-recoup-tenant`), or `INVALID_ARGUMENT`.
pub fn requested_tenant(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Option<String>, tonic::Status> {
    let value =
        single_value(metadata, TENANT_METADATA_KEY).map_err(tonic::Status::invalid_argument)?;
    named_tenant(value, "metadata").map_err(tonic::Status::invalid_argument)
}

/// The one value of `key` in gRPC metadata (`None`: not sent), or why not: a key that names
/// the tenant or the credential, sent twice, would leave the choice to whoever reads first.
pub fn single_value<'a>(
    metadata: &'a tonic::metadata::MetadataMap,
    key: &str,
) -> Result<Option<&'a [u8]>, String> {
    let mut values = metadata.get_all(key).iter();
    let first = values.next().map(|v| v.as_bytes());
    if values.next().is_some() {
        return Err(format!("metadata {key} is sent more than once"));
    }
    Ok(first)
}
