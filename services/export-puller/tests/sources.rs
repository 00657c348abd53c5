//! The sources file: what it takes, and every refusal naming the source and field.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use export_puller::sources::parse;

fn env(name: &str) -> Option<String> {
    (name == "ACME_PASSWORD").then(|| "s3cret".to_owned())
}

fn source(fields: &str) -> String {
    let sep = if fields.is_empty() { "" } else { ", " };
    format!(
        r#"{{"sources": [{{"tenant": "acme", "host": "https://api.example", "lender": "acme",
            "email": "ops@acme.example"{sep}{fields}}}]}}"#
    )
}

#[test]
fn a_minimal_source_pulls_d16_with_the_defaults() {
    let sources = parse(&source(r#""password_env": "ACME_PASSWORD""#), &env).unwrap();
    assert_eq!(sources.poll_interval, Duration::from_secs(300));
    assert_eq!(sources.max_concurrent, 4);
    let only = &sources.sources[0];
    assert_eq!(only.tenant, "acme");
    assert_eq!(only.limit, 500);
    assert_eq!(only.datasets.len(), 1);
    assert_eq!(only.datasets[0].path(), "S3/D16");
    assert_eq!(only.client.password.expose(), "s3cret");
    assert_eq!(only.client.requests_per_second.get(), 10);
    assert!(
        !format!("{sources:?}").contains("s3cret"),
        "the password never prints"
    );
}

#[test]
fn a_password_file_loses_its_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let text = source(&format!(
        r#""password_file": {:?}"#,
        file.display().to_string()
    ));
    let sources = parse(&text, &env).unwrap();
    assert_eq!(sources.sources[0].client.password.expose(), "from-file");
}

#[test]
fn configured_datasets_are_checked_and_named_by_path() {
    let text = r#"{
        "poll_interval_secs": 60, "max_concurrent": 2,
        "datasets": [{"section": "S1", "code": "D02", "title": "Payments", "cursor_field": "created_at",
                      "key_fields": ["public_id", "created_at"], "partition_field": "public_id",
                      "renames": [], "fields": [
                        {"name": "public_id", "kind": "string"},
                        {"name": "created_at", "kind": "timestamp"},
                        {"name": "amount", "kind": "minor_amount"}]}],
        "sources": [{"tenant": "acme", "host": "http://localhost:8090", "lender": "acme",
                     "email": "a@b.c", "password_env": "ACME_PASSWORD",
                     "datasets": ["S3/D16", "S1/D02"], "limit": 1000, "requests_per_second": 3}]
    }"#;
    let sources = parse(text, &env).unwrap();
    assert_eq!(sources.poll_interval, Duration::from_secs(60));
    let paths: Vec<String> = sources.sources[0]
        .datasets
        .iter()
        .map(|d| d.path())
        .collect();
    assert_eq!(paths, ["S3/D16", "S1/D02"]);
    assert_eq!(sources.sources[0].client.requests_per_second.get(), 3);
}

#[test]
fn every_mistake_is_named() {
    let cases: Vec<(String, &str)> = vec![
        (
            source(r#""password_env": "NOT_SET""#),
            "environment variable NOT_SET is not set",
        ),
        (
            source(r#""password_env": "ACME_PASSWORD", "password_file": "/x""#),
            "not both",
        ),
        (source(""), "password_env or password_file is required"),
        (
            source(r#""password_env": "ACME_PASSWORD", "limit": 5000"#),
            "limit must be 1 to 1000",
        ),
        (
            source(r#""password_env": "ACME_PASSWORD", "datasets": ["S9/D99"]"#),
            "dataset \"S9/D99\" is not described",
        ),
        (
            source(r#""password_env": "ACME_PASSWORD", "requests_per_second": 0"#),
            "requests_per_second must be at least 1",
        ),
        (
            source(r#""password_env": "ACME_PASSWORD", "colour": "red""#),
            "unknown field `colour`",
        ),
        (
            source(r#""password_env": "ACME_PASSWORD""#).replace("https://api.example", "ftp://x"),
            "host must start with http",
        ),
        (
            source(r#""password_env": "ACME_PASSWORD""#)
                .replace(r#""tenant": "acme""#, r#""tenant": "a b""#),
            "tenant",
        ),
        (r#"{"sources": []}"#.to_owned(), "no sources"),
        (
            source(r#""password_env": "hunter2!""#),
            "must name an environment variable",
        ),
        (
            source(r#""password_env": "ACME_PASSWORD", "datasets": ["S3/D16", "S3/D16"]"#),
            "pulls S3/D16 twice",
        ),
    ];
    for (text, want) in cases {
        let error = parse(&text, &env).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains(want), "{error:?} should say {want:?}");
        if !text.contains(r#""sources": []"#) && !error.contains("unknown field") {
            assert!(
                error.contains("source 1 (tenant"),
                "{error:?} names the source"
            );
        }
    }
}

#[test]
fn a_descriptor_that_does_not_hold_together_is_refused() {
    let text = r#"{"datasets": [{"section": "S1", "code": "D02", "title": "x", "cursor_field": "amount",
        "key_fields": ["amount"], "partition_field": "amount", "renames": [],
        "fields": [{"name": "amount", "kind": "minor_amount"}]}],
        "sources": [{"tenant": "acme", "host": "http://h", "lender": "l", "email": "e", "password_env": "ACME_PASSWORD"}]}"#;
    let error = parse(text, &env).unwrap_err();
    assert!(error.contains("must be a timestamp"), "{error}");
}
