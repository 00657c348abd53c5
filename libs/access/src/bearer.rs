//! The credential of an `authorization` header: `Bearer <credential>`.

use crate::error::AccessError;

/// Longest `authorization` value read; a longer one is refused unread.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// The credential of an `authorization` value (`None`: no header). Refusals say what is wrong
/// with the value and never repeat it.
pub fn bearer_credential(value: Option<&[u8]>) -> Result<&str, AccessError> {
    let value = value.ok_or_else(|| {
        AccessError::unauthenticated("no credential: send authorization: Bearer <API key or token>")
    })?;
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AccessError::unauthenticated(format!(
            "the authorization header is longer than {MAX_AUTHORIZATION_BYTES} bytes"
        )));
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| AccessError::unauthenticated("the authorization header is not UTF-8"))?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or_else(|| {
        AccessError::unauthenticated("the authorization header is not \"Bearer <credential>\"")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AccessError::unauthenticated(
            "the authorization scheme is not Bearer",
        ));
    }
    let credential = credential.trim();
    if credential.is_empty() || credential.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(AccessError::unauthenticated(
            "the bearer credential is empty or holds spaces",
        ));
    }
    Ok(credential)
}
