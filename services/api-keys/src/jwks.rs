//! The identity provider's keys (JWKS), from a file or a URL: read at start, read again every
//! few minutes and soon after a token names a key id the set lacks (the provider rotated).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use recoup_access::{JwtSettings, JwtVerifier};
use recoup_runtime::shutdown::until_stopped;
use tokio::sync::watch;

/// Largest JWKS read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How often the keys are read again.
const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// Fewest seconds between two reads caused by unknown key ids.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// Where the JWKS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    /// `https://…` (or `http://` on loopback, for tests and sidecars).
    Url(String),
}

impl JwksSource {
    /// A URL when `s` starts with `http://` or `https://`, a file otherwise.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("https://") || s.starts_with("http://") {
            Self::Url(s.to_owned())
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// Bearer tokens: what they must be, and where the keys that sign them are.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub settings: JwtSettings,
    pub jwks: JwksSource,
}

/// Reads the JWKS of `source`.
pub async fn load(source: &JwksSource, client: &reqwest::Client) -> Result<Vec<u8>, String> {
    let bytes = match source {
        JwksSource::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?,
        JwksSource::Url(url) => {
            let answer = client
                .get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| format!("{url}: {e}"))?;
            if answer
                .content_length()
                .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
            {
                return Err(format!("{url}: larger than {MAX_JWKS_BYTES} bytes"));
            }
            answer
                .bytes()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_vec()
        }
    };
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("{source}: larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(bytes)
}

/// A verifier with the keys of `tokens.jwks`, read now: a start fails when they cannot be.
pub async fn verifier(tokens: &Tokens) -> Result<(Arc<JwtVerifier>, reqwest::Client), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let verifier = Arc::new(JwtVerifier::new(tokens.settings.clone()));
    let jwks = load(&tokens.jwks, &client).await?;
    let keys = verifier
        .set_keys(&jwks)
        .map_err(|e| format!("{}: {e}", tokens.jwks))?;
    tracing::info!(jwks = %tokens.jwks, keys, issuer = %tokens.settings.issuer, "bearer tokens on");
    Ok((verifier, client))
}

/// Reads the keys again every [`REFRESH_EVERY`], and soon after an unknown key id (at most
/// every [`REFRESH_AT_MOST_EVERY`]), until `stop`. A failed read keeps the keys there were.
pub async fn keep_fresh(
    verifier: Arc<JwtVerifier>,
    source: JwksSource,
    client: reqwest::Client,
    stop: watch::Receiver<bool>,
) {
    loop {
        let waited = until_stopped(&stop, async {
            tokio::select! {
                () = tokio::time::sleep(REFRESH_EVERY) => {}
                () = verifier.unknown_key_seen() => {}
            }
        });
        if waited.await.is_none() {
            return;
        }
        match load(&source, &client)
            .await
            .and_then(|jwks| verifier.set_keys(&jwks))
        {
            Ok(keys) => tracing::info!(jwks = %source, keys, "identity provider keys read"),
            Err(error) => tracing::warn!(%error, "identity provider keys not read again"),
        }
        if until_stopped(&stop, tokio::time::sleep(REFRESH_AT_MOST_EVERY))
            .await
            .is_none()
        {
            return;
        }
    }
}
