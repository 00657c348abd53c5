//! API keys, roles and tenants: what a credential lets a request do, and every way a request
//! without a good one is refused.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use recoup_access::api_key::{KEY_PREFIX, issue, revoked};
use recoup_access::bearer::MAX_AUTHORIZATION_BYTES;
use recoup_access::{AccessError, Action, KeyRing, KeySpec, KeyStore, Principal, Role};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap()
}

fn spec(role: Role, tenants: &[&str]) -> KeySpec {
    KeySpec {
        name: "dialer".to_owned(),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        role,
        expires_at: None,
        created_by: "bootstrap".to_owned(),
    }
}

fn bearer(key: &str) -> Vec<u8> {
    format!("Bearer {key}").into_bytes()
}

fn unauthenticated<P: std::fmt::Debug>(result: Result<P, AccessError>) -> String {
    match result {
        Err(AccessError::Unauthenticated(why)) => why,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[test]
fn each_role_allows_exactly_its_actions() {
    use Action::*;
    let expected = [
        (Role::Viewer, [true, false, false, false]),
        (Role::Agent, [true, true, false, false]),
        (Role::Importer, [true, false, true, false]),
        (Role::Admin, [true, true, true, true]),
    ];
    for (role, allowed) in expected {
        for (action, allowed) in [Read, CaseCommand, Import, ManageKeys]
            .into_iter()
            .zip(allowed)
        {
            assert_eq!(role.allows(action), allowed, "{role} {action:?}");
        }
        assert_eq!(role.name().parse::<Role>().unwrap(), role);
        assert_eq!(Role::from_proto(role.to_proto() as i32), Some(role));
    }
    assert_eq!(Role::from_proto(0), None, "unspecified is no role");
    assert!(
        "root"
            .parse::<Role>()
            .unwrap_err()
            .contains("viewer, agent")
    );
}

#[test]
fn a_key_names_its_principal_and_acts_only_for_its_tenants_and_role() {
    let ring = KeyRing::new();
    let issued = issue(&spec(Role::Agent, &["acme", "acme-eu"]), now()).unwrap();
    assert!(issued.key.starts_with(KEY_PREFIX));
    ring.upsert(issued.record.clone());
    let principal = ring
        .authenticate(Some(&bearer(&issued.key)), now())
        .unwrap();
    assert_eq!(principal.id, format!("key:{}", issued.record.id));
    assert_eq!(principal.roles, [Role::Agent]);

    assert_eq!(principal.act(None, Action::CaseCommand).unwrap(), "acme");
    assert_eq!(
        principal.act(Some("acme-eu"), Action::Read).unwrap(),
        "acme-eu"
    );
    let other = principal.act(Some("globex"), Action::Read).unwrap_err();
    assert!(
        matches!(&other, AccessError::PermissionDenied(m) if m.contains("\"globex\"")),
        "{other:?}"
    );
    let import = principal.act(Some("acme"), Action::Import).unwrap_err();
    assert_eq!(
        import,
        AccessError::PermissionDenied(format!(
            "this call needs the importer or admin role; key:{} has the agent role",
            issued.record.id
        ))
    );
    // The scheme is not case-sensitive.
    let lower = format!("bearer {}", issued.key);
    assert!(ring.authenticate(Some(lower.as_bytes()), now()).is_ok());
}

#[test]
fn wrong_revoked_expired_and_unknown_keys_are_refused_without_echoing_the_secret() {
    let ring = KeyRing::new();
    let mut expiring = spec(Role::Viewer, &["acme"]);
    expiring.expires_at = Some(now() + Duration::hours(1));
    let issued = issue(&expiring, now()).unwrap();
    ring.upsert(issued.record.clone());
    let id = issued.record.id.clone();

    // The last character of the secret changed.
    let mut tampered = issued.key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let why = unauthenticated(ring.authenticate(Some(&bearer(&tampered)), now()));
    assert_eq!(why, format!("wrong secret for API key {id}"));

    // Another key's secret under this id.
    let other = issue(&spec(Role::Admin, &["acme"]), now()).unwrap();
    let borrowed = format!("{KEY_PREFIX}{id}{}", &other.key[KEY_PREFIX.len() + 16..]);
    let why = unauthenticated(ring.authenticate(Some(&bearer(&borrowed)), now()));
    assert_eq!(why, format!("wrong secret for API key {id}"));

    // Not in the ring.
    let why = unauthenticated(ring.authenticate(Some(&bearer(&other.key)), now()));
    assert_eq!(why, format!("no API key {}", other.record.id));

    // Expired: valid up to its expiry, refused from then on.
    let before = now() + Duration::minutes(59);
    assert!(
        ring.authenticate(Some(&bearer(&issued.key)), before)
            .is_ok()
    );
    let why =
        unauthenticated(ring.authenticate(Some(&bearer(&issued.key)), now() + Duration::hours(1)));
    assert_eq!(why, format!("API key {id} has expired"));

    // Revoked: the ring takes the key's new record.
    let mut revoked = issued.record.clone();
    revoked.revoked_at = Some(recoup_proto::to_timestamp(now()));
    ring.upsert(revoked);
    let why = unauthenticated(ring.authenticate(Some(&bearer(&issued.key)), now()));
    assert_eq!(why, format!("API key {id} was revoked"));
    assert_eq!(ring.len(), 1);

    let secret = &issued.key[KEY_PREFIX.len() + 17..];
    assert!(
        !format!("{issued:?}").contains(secret),
        "Debug hides the key"
    );
}

#[test]
fn malformed_authorization_values_are_unauthenticated() {
    let ring = KeyRing::new();
    let issued = issue(&spec(Role::Admin, &["acme"]), now()).unwrap();
    ring.upsert(issued.record.clone());
    let huge = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES));
    let truncated = format!("Bearer {}", &issued.key[..issued.key.len() - 1]);
    let cases: [(&[u8], &str); 10] = [
        (b"", "not \"Bearer <credential>\""),
        (b"Bearer", "not \"Bearer <credential>\""),
        (b"Bearer ", "not \"Bearer <credential>\""),
        (b"Bearer    ", "not \"Bearer <credential>\""),
        (b"Basic YWxhZGRpbjpvcGVuc2VzYW1l", "scheme is not Bearer"),
        (b"Bearer \xff\xfe\xfd", "not UTF-8"),
        (huge.as_bytes(), "longer than 8192 bytes"),
        (truncated.as_bytes(), "not an API key"),
        (b"Bearer rk1_0123456789abcdef_x y", "holds spaces"),
        (b"Bearer eyJhbGciOiJub25lIn0.e30.", "not an API key"),
    ];
    for (value, says) in cases {
        let why = unauthenticated(ring.authenticate(Some(value), now()));
        assert!(
            why.contains(says),
            "{:?}: {why}",
            String::from_utf8_lossy(value)
        );
    }
    let why = unauthenticated(ring.authenticate(None, now()));
    assert!(why.starts_with("no credential"), "{why}");
}

proptest! {
    #[test]
    fn any_authorization_value_is_refused_without_a_panic(
        value in proptest::collection::vec(any::<u8>(), 0..200),
        prefix in proptest::sample::select(vec!["", "Bearer ", "Bearer rk1_", "bearer rk1_0123456789abcdef_"]),
    ) {
        let ring = KeyRing::new();
        let issued = issue(&spec(Role::Admin, &["acme"]), now()).unwrap();
        ring.upsert(issued.record.clone());
        let mut bytes = prefix.as_bytes().to_vec();
        bytes.extend_from_slice(&value);
        let result = ring.authenticate(Some(&bytes), now());
        prop_assert!(matches!(result, Err(AccessError::Unauthenticated(_))));
    }
}

#[test]
fn key_specs_are_checked() {
    let mut no_tenant = spec(Role::Viewer, &[]);
    assert!(
        issue(&no_tenant, now())
            .unwrap_err()
            .contains("1 to 64 tenants")
    );
    no_tenant.tenants = vec!["a b".to_owned()];
    assert!(
        issue(&no_tenant, now())
            .unwrap_err()
            .contains("tenant may contain only")
    );
    let mut past = spec(Role::Viewer, &["acme"]);
    past.expires_at = Some(now());
    assert!(issue(&past, now()).unwrap_err().contains("cannot expire"));
    let mut long_name = spec(Role::Viewer, &["acme"]);
    long_name.name = "n".repeat(129);
    assert!(
        issue(&long_name, now())
            .unwrap_err()
            .contains("at most 128")
    );
}

#[test]
fn the_store_keeps_hashes_only_and_revocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (issued, kept) = {
        let store = KeyStore::open(dir.path()).unwrap();
        let issued = issue(&spec(Role::Importer, &["acme"]), now()).unwrap();
        let kept = issue(&spec(Role::Viewer, &["acme"]), now()).unwrap();
        store.put(&issued.record).unwrap();
        store.put(&kept.record).unwrap();
        store
            .put(&revoked(issued.record.clone(), now(), "test"))
            .unwrap();
        assert_eq!(store.get("0000000000000000").unwrap(), None);
        (issued, kept)
    };
    // Nothing of the secrets is on disk.
    for key in [&issued.key, &kept.key] {
        let secret = &key.as_bytes()[KEY_PREFIX.len() + 17..];
        for file in walk(dir.path()) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "secret found in {}",
                file.display()
            );
        }
    }

    let store = KeyStore::open(dir.path()).unwrap();
    let records = store.list().unwrap();
    assert_eq!(records.len(), 2);
    let ring = KeyRing::new();
    for record in records {
        ring.upsert(record);
    }
    let why = unauthenticated(ring.authenticate(Some(&bearer(&issued.key)), now()));
    assert!(why.ends_with("was revoked"), "{why}");
    let principal = ring.authenticate(Some(&bearer(&kept.key)), now()).unwrap();
    assert_eq!(principal.roles, [Role::Viewer]);
}

/// Processes receive a key's records again and out of order (a stale copy republished, a
/// follower reading the topic from its start): a revocation is final whatever comes after it.
#[test]
fn a_revocation_is_final_whatever_record_comes_later() {
    let ring = KeyRing::new();
    let issued = issue(&spec(Role::Agent, &["acme"]), now()).unwrap();
    let first = revoked(issued.record.clone(), now(), "test");
    let later = revoked(issued.record.clone(), now() + Duration::hours(1), "later");
    assert_eq!(
        ring.upsert(issued.record.clone()),
        Some(issued.record.clone())
    );
    assert_eq!(ring.upsert(issued.record.clone()), None, "known already");
    assert_eq!(ring.upsert(later.clone()), Some(later.clone()));
    // An earlier revocation wins; the stale active record and a later revocation change nothing.
    assert_eq!(ring.upsert(first.clone()), Some(first.clone()));
    assert_eq!(ring.upsert(issued.record.clone()), None);
    assert_eq!(ring.upsert(later), None);
    assert_eq!(ring.get(&issued.record.id), Some(first));
    let why = unauthenticated(ring.authenticate(Some(&bearer(&issued.key)), now()));
    assert!(why.ends_with("was revoked"), "{why}");
    assert_eq!(ring.records().len(), 1);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_principal_without_tenants_acts_for_none() {
    let nobody = Principal {
        id: "key:0".to_owned(),
        tenants: Vec::new(),
        roles: vec![Role::Admin],
    };
    assert_eq!(
        nobody.act(None, Action::Read),
        Err(AccessError::Unauthenticated(
            "key:0 names no tenant".to_owned()
        ))
    );
    assert!(matches!(
        nobody.act(Some("acme"), Action::Read),
        Err(AccessError::PermissionDenied(_))
    ));
}

#[test]
fn records_this_version_cannot_read_name_nobody() {
    let ring = KeyRing::new();
    let unknown_role = issue(&spec(Role::Viewer, &["acme"]), now()).unwrap();
    let mut record = unknown_role.record.clone();
    record.role = 99;
    ring.upsert(record);
    let why = unauthenticated(ring.authenticate(Some(&bearer(&unknown_role.key)), now()));
    assert!(why.ends_with("has no role this version knows"), "{why}");

    let odd_expiry = issue(&spec(Role::Viewer, &["acme"]), now()).unwrap();
    let mut record = odd_expiry.record.clone();
    record.expires_at = Some(prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    });
    ring.upsert(record);
    let why = unauthenticated(ring.authenticate(Some(&bearer(&odd_expiry.key)), now()));
    assert!(
        why.ends_with("has expired"),
        "an unreadable expiry counts as passed: {why}"
    );
}

/// Repeated failures from one peer make its requests wait, doubling to a cap; a quiet window
/// forgets it; other peers never wait; memory stays bounded.
#[test]
fn a_peer_that_keeps_failing_is_slowed_down() {
    use recoup_access::{Throttle, ThrottleSettings};
    use std::time::{Duration as Wait, Instant};
    let settings = ThrottleSettings {
        max_peers: 3,
        ..ThrottleSettings::default()
    };
    let throttle = Throttle::new(settings);
    let t0 = Instant::now();
    let peer: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let other: std::net::IpAddr = "192.0.2.8".parse().unwrap();
    let mut waits = Vec::new();
    for _ in 0..12 {
        throttle.failed(peer, t0);
        waits.push(throttle.wait(peer, t0).as_millis());
    }
    assert_eq!(
        waits,
        [0, 0, 0, 0, 0, 100, 200, 400, 800, 1600, 3200, 5000],
        "5 free, then doubling to 5 s"
    );
    assert_eq!(throttle.wait(other, t0), Wait::ZERO);
    assert_eq!(
        throttle.wait(peer, t0 + Wait::from_secs(61)),
        Wait::ZERO,
        "a quiet minute"
    );
    assert_eq!(throttle.peers(), 0, "and forgotten");
    throttle.failed(peer, t0 + Wait::from_secs(61));
    assert_eq!(
        throttle.wait(peer, t0 + Wait::from_secs(61)),
        Wait::ZERO,
        "counted anew"
    );
    for i in 0..10u8 {
        throttle.failed(std::net::IpAddr::from([198, 51, 100, i]), t0);
    }
    assert!(throttle.peers() <= 3, "bounded: {}", throttle.peers());
}
