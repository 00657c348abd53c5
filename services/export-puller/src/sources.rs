//! What to pull from where: the sources file (JSON), checked before anything runs.
//!
//! ```json
//! {
//!   "poll_interval_secs": 300,
//!   "max_concurrent": 4,
//!   "datasets": [],
//!   "sources": [{
//!     "tenant": "acme",
//!     "host": "https://api.vendor.example",
//!     "lender": "acme",
//!     "email": "exports@acme.example",
//!     "password_env": "ACME_EXPORT_PASSWORD",
//!     "datasets": ["S3/D16"],
//!     "limit": 500,
//!     "requests_per_second": 5
//!   }]
//! }
//! ```
//!
//! A source's password comes from an environment variable (`password_env`) or a file
//! (`password_file`, e.g. a mounted secret; its trailing newline is dropped), never from the
//! file itself. `datasets` names descriptors by path: `S3/D16` is built in, others are declared
//! in the top-level `datasets` (the shape of [`Dataset`]).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::client::{ClientConfig, DEFAULT_LIMIT, MAX_LIMIT, Secret};
use crate::dataset::{self, Dataset};

/// The sources file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesFile {
    /// Seconds between the end of a stream's cycle and the start of its next (service mode).
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    /// Cycles running at once, over every source and dataset.
    #[serde(default = "default_concurrency")]
    pub max_concurrent: usize,
    /// Descriptors of datasets beyond the built-in D16.
    #[serde(default)]
    pub datasets: Vec<Dataset>,
    pub sources: Vec<SourceEntry>,
}

fn default_poll() -> u64 {
    300
}

fn default_concurrency() -> usize {
    4
}

/// One lender account of one tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    pub tenant: String,
    /// The API's base URL.
    pub host: String,
    /// The lender's slug in the auth paths.
    pub lender: String,
    /// The `lenderPublicId` login must answer (checked when given).
    #[serde(default)]
    pub lender_public_id: Option<String>,
    pub email: String,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Dataset paths; default `["S3/D16"]`.
    #[serde(default)]
    pub datasets: Option<Vec<String>>,
    /// Rows per page, 1–1000 (default 500).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Requests per second to this lender (default 10).
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// Seconds per request, body included (default 30).
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
}

/// A source ready to pull: its client's configuration and its datasets.
#[derive(Debug, Clone)]
pub struct Source {
    pub tenant: String,
    pub client: ClientConfig,
    pub datasets: Vec<Arc<Dataset>>,
    pub limit: u32,
}

/// Every source, checked.
#[derive(Debug, Clone)]
pub struct Sources {
    pub poll_interval: Duration,
    pub max_concurrent: usize,
    pub sources: Vec<Source>,
}

/// Reads and checks a sources file; every error names the source and field.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Sources, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read sources file {}: {e}", path.display()))?;
    parse(&text, env).map_err(|e| format!("sources file {}: {e}", path.display()))
}

/// Parses and checks the sources file format; `env` reads environment variables.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Sources, String> {
    let file: SourcesFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut known: BTreeMap<String, Arc<Dataset>> = BTreeMap::new();
    let d16 = dataset::d16();
    known.insert(d16.path(), Arc::new(d16));
    for descriptor in file.datasets {
        descriptor.check()?;
        let path = descriptor.path();
        if known.insert(path.clone(), Arc::new(descriptor)).is_some() {
            return Err(format!(
                "dataset {path} is declared twice (S3/D16 is built in)"
            ));
        }
    }
    if file.sources.is_empty() {
        return Err("no sources: nothing to pull".to_owned());
    }
    if file.max_concurrent == 0 {
        return Err("max_concurrent must be at least 1".to_owned());
    }
    let mut sources = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, entry) in file.sources.into_iter().enumerate() {
        let name = format!("source {} (tenant {:?})", i + 1, entry.tenant);
        let source = check_source(entry, &known, env).map_err(|e| format!("{name}: {e}"))?;
        for dataset in &source.datasets {
            if !seen.insert((source.tenant.clone(), dataset.path())) {
                return Err(format!(
                    "{name}: tenant {} pulls {} twice: one source per tenant and dataset",
                    source.tenant,
                    dataset.path()
                ));
            }
        }
        sources.push(source);
    }
    Ok(Sources {
        poll_interval: Duration::from_secs(file.poll_interval_secs.max(1)),
        max_concurrent: file.max_concurrent,
        sources,
    })
}

/// One source entry checked, field by field in the order of the file's documentation.
fn check_source(
    mut entry: SourceEntry,
    known: &BTreeMap<String, Arc<Dataset>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, String> {
    check_account(&entry)?;
    let password = password_of(&entry, env)?;
    let limit = entry.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(format!("limit must be 1 to {MAX_LIMIT}, got {limit}"));
    }
    let datasets = described_datasets(entry.datasets.take(), known)?;
    let client = client_config(&entry, password)?;
    Ok(Source {
        tenant: entry.tenant,
        client,
        datasets,
        limit,
    })
}

/// The tenant, the API's address, the lender's slug and the email.
fn check_account(entry: &SourceEntry) -> Result<(), String> {
    recoup_proto::tenant::validate_tenant(&entry.tenant).map_err(|e| format!("tenant: {e}"))?;
    if !(entry.host.starts_with("http://") || entry.host.starts_with("https://")) {
        return Err(format!(
            "host must start with http:// or https://, got {:?}",
            entry.host
        ));
    }
    if entry.lender.is_empty() || entry.lender.contains('/') {
        return Err(format!(
            "lender must be a non-empty slug without '/', got {:?}",
            entry.lender
        ));
    }
    if entry.email.is_empty() {
        return Err("email is required".to_owned());
    }
    Ok(())
}

/// The password, from the environment variable or the file the entry names (exactly one).
fn password_of(
    entry: &SourceEntry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let password = match (&entry.password_env, &entry.password_file) {
        (Some(var), None) => {
            let name_like = !var.is_empty()
                && var
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !name_like {
                // Not repeated: it may be the password itself, put in the wrong place.
                return Err(
                    "password_env must name an environment variable (A-Z, 0-9, _), not hold the password"
                        .to_owned(),
                );
            }
            env(var)
                .ok_or_else(|| format!("password_env: the environment variable {var} is not set"))?
        }
        (None, Some(file)) => read_secret(file)?,
        (Some(_), Some(_)) => return Err("give password_env or password_file, not both".to_owned()),
        (None, None) => return Err("password_env or password_file is required".to_owned()),
    };
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    Ok(password)
}

/// The descriptors of the datasets an entry names (D16 when it names none).
fn described_datasets(
    names: Option<Vec<String>>,
    known: &BTreeMap<String, Arc<Dataset>>,
) -> Result<Vec<Arc<Dataset>>, String> {
    let names = names.unwrap_or_else(|| vec![dataset::d16().path()]);
    if names.is_empty() {
        return Err("datasets is empty".to_owned());
    }
    names
        .iter()
        .map(|name| {
            known.get(name).cloned().ok_or_else(|| {
                format!(
                    "dataset {name:?} is not described (known: {})",
                    known.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// The client's configuration: the defaults, with the entry's expected lender, request budget
/// and timeout where it gives them.
fn client_config(entry: &SourceEntry, password: String) -> Result<ClientConfig, String> {
    let mut client = ClientConfig::new(
        &entry.host,
        &entry.lender,
        &entry.email,
        Secret::new(password),
    );
    client.lender_public_id = entry.lender_public_id.clone();
    if let Some(rps) = entry.requests_per_second {
        client.requests_per_second =
            NonZeroU32::new(rps).ok_or("requests_per_second must be at least 1")?;
    }
    if let Some(secs) = entry.request_timeout_secs {
        if secs == 0 {
            return Err("request_timeout_secs must be at least 1".to_owned());
        }
        client.request_timeout = Duration::from_secs(secs);
    }
    Ok(client)
}

/// A secret from a file, without its trailing newline.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}
