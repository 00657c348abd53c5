//! `recoup tls init`: a private CA and one server certificate it signs, as PEM files, for a
//! stack whose clients can be handed the CA (the compose stack, a trial on a LAN). A
//! deployment with a PKI of its own serves that PKI's certificates instead.
//!
//! The CA's private key is not kept: nothing else can ever be signed with it. Renewing means a
//! new CA, whose `ca.pem` the clients then need.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::{Datelike as _, Duration, NaiveDate, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA's certificate: what clients trust (`--ca-cert`).
pub const CA_FILE: &str = "ca.pem";
/// The server's certificate (`--tls-cert`).
pub const CERT_FILE: &str = "server.pem";
/// The server's private key (`--tls-key`), readable only by its owner.
pub const KEY_FILE: &str = "server.key";
/// Longest validity accepted, in days.
pub const MAX_DAYS: u32 = 3650;

/// What to make.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Host names and IP addresses the server certificate is valid for.
    pub hosts: Vec<String>,
    /// Days from today the certificates are valid (1..=[`MAX_DAYS`]).
    pub days: u32,
}

/// The files of a CA and its server certificate in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join(CA_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }

    /// True when all three files are there.
    pub fn exist(&self) -> bool {
        [&self.ca, &self.cert, &self.key].iter().all(|p| p.exists())
    }
}

/// Writes a new CA and a server certificate of `spec` into `dir` (made if missing), replacing
/// what is there.
pub fn init(dir: &Path, spec: &CertSpec) -> anyhow::Result<CertFiles> {
    if spec.hosts.is_empty() {
        bail!("name at least one host the server is reached by (--host)");
    }
    if !(1..=MAX_DAYS).contains(&spec.days) {
        bail!("--days must be 1..={MAX_DAYS}, got {}", spec.days);
    }
    // Days of a valid NaiveDate: month 1..=12 and day 1..=31 fit a u8.
    let date = |d: NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let today = Utc::now().date_naive();
    // From yesterday: a client whose clock is a little behind accepts it too.
    let not_before = date(today - Duration::days(1));
    let not_after = date(today + Duration::days(i64::from(spec.days)));

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "recoup private CA");
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(spec.hosts.clone())
        .with_context(|| format!("the hosts {:?}", spec.hosts))?;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server
        .distinguished_name
        .push(DnType::CommonName, spec.hosts[0].as_str());
    (server.not_before, server.not_after) = (not_before, not_after);
    let key = KeyPair::generate()?;
    let cert_pem = server.signed_by(&key, &issuer)?.pem();

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = CertFiles::in_dir(dir);
    api_keys::service::write_secret(&files.key, key.serialize_pem().trim_end())
        .with_context(|| format!("writing {}", files.key.display()))?;
    write_public(&files.cert, &cert_pem)?;
    write_public(&files.ca, &ca_pem)?;
    Ok(files)
}

fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
