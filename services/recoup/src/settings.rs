//! Configuration read from files: collector configurations.

use std::path::Path;

use anyhow::Context;
use debt_cases::{CollectorConfiguration, CollectorConfigurations, Environment};
use serde::Deserialize;

/// The collectors file: `{"default": "id", "collectors": [{...}]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectorsFile {
    default: String,
    collectors: Vec<CollectorEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectorEntry {
    id: String,
    /// "PRODUCTION" and/or "TEST".
    environments: Vec<String>,
    #[serde(default)]
    skip_review: bool,
    /// Seconds a case may stay PROCESSING before it is failed with "processing timeout".
    processing_timeout_seconds: i64,
}

/// Reads collector configurations from a JSON file, e.g.
/// `{"default":"acme","collectors":[{"id":"acme","environments":["PRODUCTION","TEST"],
/// "skip_review":false,"processing_timeout_seconds":1209600}]}`.
pub fn load_collectors(path: &Path) -> anyhow::Result<CollectorConfigurations> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read collectors file {}", path.display()))?;
    parse_collectors(&text).with_context(|| format!("collectors file {}", path.display()))
}

/// Parses the collectors file format.
pub fn parse_collectors(text: &str) -> anyhow::Result<CollectorConfigurations> {
    let file: CollectorsFile = serde_json::from_str(text)?;
    let mut configurations = Vec::with_capacity(file.collectors.len());
    for entry in file.collectors {
        let environments = entry
            .environments
            .iter()
            .map(|e| match e.as_str() {
                "PRODUCTION" => Ok(Environment::Production),
                "TEST" => Ok(Environment::Test),
                other => anyhow::bail!(
                    "collector {:?}: environment {other:?} is not PRODUCTION or TEST",
                    entry.id
                ),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        configurations.push(CollectorConfiguration {
            id: entry.id,
            environments,
            skip_review: entry.skip_review,
            processing_timeout: chrono::Duration::seconds(entry.processing_timeout_seconds),
        });
    }
    Ok(CollectorConfigurations::new(configurations, file.default)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_collectors_file() {
        let c = parse_collectors(
            r#"{"default":"b","collectors":[
                {"id":"a","environments":["TEST"],"processing_timeout_seconds":60},
                {"id":"b","environments":["PRODUCTION"],"skip_review":true,"processing_timeout_seconds":5}]}"#,
        )
        .expect("valid");
        assert_eq!(c.default_configuration().id, "b");
        assert!(c.default_configuration().skip_review);
        assert_eq!(
            c.get("a").map(|a| a.processing_timeout),
            Some(chrono::Duration::seconds(60))
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let e = parse_collectors(
            r#"{"default":"a","collectors":[{"id":"a","environments":["STAGING"],"processing_timeout_seconds":60}]}"#,
        )
        .expect_err("bad environment");
        assert!(e.to_string().contains("STAGING"), "{e}");
        let e = parse_collectors(r#"{"default":"x","collectors":[{"id":"a","environments":["TEST"],"processing_timeout_seconds":60}]}"#)
            .expect_err("unknown default");
        assert!(e.to_string().contains("\"x\""), "{e}");
    }
}
