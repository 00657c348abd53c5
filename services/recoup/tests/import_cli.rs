//! `recoup import snapshots` against the real binary running `recoup up`: summaries, the errors
//! file beside a file with rejected rows, exit codes, duplicates, and refusals.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::binary::Up;

/// `recoup up` with an upload limit small enough that a refusal needs no large file.
fn server(data: &Path) -> Up {
    Up::start(data, &["--max-upload-bytes", "4096"])
}

fn import(dir: &Path, grpc_addr: &str, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_recoup"))
        .current_dir(dir)
        .args(["import", "snapshots"])
        .args(args)
        .args(["--grpc-addr", grpc_addr])
        .env_remove("RECOUP_TENANT")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// The summary line of `file`: `FILE: import <id>: ...`, without the id and the rate.
fn summary<'a>(stdout: &'a str, file: &str) -> (&'a str, &'a str) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{file}: import ")))
        .unwrap_or_else(|| panic!("no summary for {file} in {stdout:?}"));
    let rest = &line[format!("{file}: import ").len()..];
    let (id, counts) = rest.split_once(": ").unwrap();
    (id, counts)
}

#[test]
fn imports_files_writes_the_errors_beside_them_and_fails_on_rejected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir.path().join("data"));
    let files = dir.path();
    std::fs::write(
        files.join("good.csv"),
        "snapshot_date,account_external_id,days_arrears_consecutive_source\n\
         2024-03-01,A1,0\n\
         2024-03-01,A2,12\n",
    )
    .unwrap();
    std::fs::write(
        files.join("bad.json"),
        r#"[{"snapshot_date": "2024-03-01", "account_external_id": "J1", "days_to_cutoff_source": 3},
            {"snapshot_date": "2024-03-01", "account_external_id": "J2", "days_to_cutoff_source": 2.5},
            {"snapshot_date": "2024-03-01", "account_external_id": "J3"}]"#,
    )
    .unwrap();
    std::fs::write(files.join("notes.txt"), "not a snapshot file\n").unwrap();

    // No --tenant, no --api-key: the CLI finds the first admin key `up` wrote to ./data and
    // acts for its tenant.
    let args = ["good.csv", "bad.json", "--origin", "crm"];
    let (code, stdout, stderr) = import(files, &server.grpc, &args);
    assert_eq!(
        code, 1,
        "a rejected row fails the command: {stdout}{stderr}"
    );
    let (good_id, good) = summary(&stdout, "good.csv");
    assert_eq!(good_id.len(), 32);
    assert!(
        good.starts_with("read 2, accepted 2, unchanged 0, rejected 0 (")
            && good.ends_with(" rows/s)"),
        "{good}"
    );
    let (_, bad) = summary(&stdout, "bad.json");
    assert!(
        bad.starts_with("read 3, accepted 2, unchanged 0, rejected 1 ("),
        "{bad}"
    );
    assert!(
        stdout.contains("bad.json: 1 error written to bad.json.errors.csv"),
        "{stdout}"
    );
    assert!(!files.join("good.csv.errors.csv").exists());
    let mut errors = csv::Reader::from_path(files.join("bad.json.errors.csv")).unwrap();
    assert_eq!(
        errors.headers().unwrap(),
        vec!["row", "column", "value", "rule", "message"]
    );
    let rows: Vec<csv::StringRecord> = errors.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (&rows[0][0], &rows[0][1], &rows[0][2], &rows[0][3]),
        ("2", "days_to_cutoff_source", "2.5", "integer")
    );
    assert!(rows[0][4].contains("not a whole number"), "{:?}", &rows[0]);

    // The same file again: recognised, nothing rejected, success.
    let again = ["good.csv", "--tenant", "default", "--origin", "crm"];
    let (code, stdout, stderr) = import(files, &server.grpc, &again);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (again_id, again) = summary(&stdout, "good.csv");
    assert_eq!(again_id, good_id);
    assert!(
        again.ends_with("rows/s), duplicate of an earlier import"),
        "{again}"
    );

    // A file whose format the name does not tell: refused before anything is sent.
    let (code, stdout, stderr) = import(files, &server.grpc, &["good.csv", "notes.txt"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with("error: notes.txt: cannot tell the format from the file name")
            && stderr.contains("--format"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A refusal of the server: one line naming the file and the code, and no further file.
    let mut big = String::from("snapshot_date,account_external_id\n");
    for i in 0..500 {
        big += &format!("2024-03-01,BIG{i}\n");
    }
    std::fs::write(files.join("big.csv"), big).unwrap();
    let (code, stdout, stderr) = import(files, &server.grpc, &["big.csv", "good.csv"]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "", "stops at the refusal");
    assert_eq!(
        stderr,
        "error: big.csv: RESOURCE_EXHAUSTED: the upload is larger than the limit of 4096 bytes\n"
    );

    assert!(server.stop().success(), "clean exit on SIGTERM");
}
