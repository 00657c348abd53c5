//! Kafka over TLS, end to end: `recoup topics ensure` and `recoup up` reach an out-of-process
//! broker (tansu) only through a TLS-terminating proxy (rustls, in this test) with certificates
//! `recoup tls init` made; the broker advertises the proxy's address, so every connection
//! librdkafka makes is TLS. An upload goes out and the projection reads it back over it; a
//! client that does not trust the CA is refused with a clear error.
//!
//! tansu speaks neither TLS nor SASL itself and there is no SASL-terminating proxy at hand:
//! SASL (PLAIN, SCRAM) is shown to be built in (`event-backbone`'s config tests), not run
//! against a broker. Needs `RECOUP_TEST_TANSU` (CI sets it); without it the test says it
//! skips.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::binary::Up;
use common::cluster::free_port;
use common::http::{exchange, head};
use recoup::tls::{TlsFiles, server_config};
use tokio::net::{TcpListener, TcpStream};

const RECOUP: &str = env!("CARGO_BIN_EXE_recoup");

/// Accepts TLS on a free port and forwards the plaintext to `broker`; counts the handshakes.
async fn tls_proxy(certs: &Path, broker: u16) -> (u16, Arc<AtomicUsize>) {
    let mut config = (*server_config(&TlsFiles {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        client_ca: None,
    })
    .unwrap())
    .clone();
    config.alpn_protocols.clear();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                // The broker may not listen yet: the client's connection just ends, as with a
                // real proxy.
                if let Ok(mut plain) = TcpStream::connect(("127.0.0.1", broker)).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (port, handshakes)
}

/// `recoup ARGS` with the Kafka properties of a TLS client trusting `ca` (none: no CA given).
fn recoup(args: &[&str], brokers: &str, ca: Option<&Path>) -> std::process::Output {
    let mut command = Command::new(RECOUP);
    command
        .args(args)
        .args(["--kafka-brokers", brokers])
        .args(["--kafka-property", "security.protocol=SSL"])
        // A secret that must never be printed.
        .args(["--kafka-property", "ssl.key.password=hunter2-secret"]);
    if let Some(ca) = ca {
        command
            .arg("--kafka-property")
            .arg(format!("ssl.ca.location={}", ca.display()));
    }
    command.stdin(Stdio::null()).output().unwrap()
}

fn metric(grpc: &str, prefix: &str) -> f64 {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(grpc).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoup_reaches_kafka_over_tls_only() {
    let Some(tansu) = std::env::var_os("RECOUP_TEST_TANSU") else {
        eprintln!("skipped: Kafka over TLS needs a tansu broker (RECOUP_TEST_TANSU)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    let made = Command::new(RECOUP)
        .args(["tls", "init", "--out-dir"])
        .arg(&certs)
        .args(["--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let broker_port = free_port();
    let (proxy_port, handshakes) = tls_proxy(&certs, broker_port).await;
    let listener = format!("tcp://127.0.0.1:{broker_port}");
    let advertised = format!("tcp://127.0.0.1:{proxy_port}");
    let _broker = Killed(
        Command::new(tansu)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let brokers = format!("127.0.0.1:{proxy_port}");
    let ca = certs.join("ca.pem");

    // Topics over TLS; tansu takes a moment to listen.
    let started = Instant::now();
    loop {
        let ensured = recoup(&["topics", "ensure"], &brokers, Some(&ca));
        if ensured.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            String::from_utf8_lossy(&ensured.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A client that does not trust the CA is refused, and says why, without the secret.
    let refused = recoup(&["topics", "ensure"], &brokers, None);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    assert!(!said.contains("hunter2-secret"), "{said}");

    // The platform over TLS: an upload is acknowledged and the projection reads it back.
    let data = dir.path().join("data");
    let mut extra = vec!["--kafka-brokers".to_owned(), brokers.clone()];
    for property in [
        "security.protocol=SSL".to_owned(),
        format!("ssl.ca.location={}", ca.display()),
    ] {
        extra.push("--kafka-property".to_owned());
        extra.push(property);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let up = Up::start(&data, &extra);
    let csv = "snapshot_date,account_external_id\n2021-05-03,T1\n2021-05-03,T2\n2021-05-03,T3\n";
    let auth = format!("authorization: Bearer {}\r\n", up.key());
    let mut request = head(
        "POST",
        "/v1/paygo_snapshots_ts",
        "default",
        Some(("text/csv", csv.len())),
        &auth,
    )
    .into_bytes();
    request.extend_from_slice(csv.as_bytes());
    let answer = exchange(up.http.parse().unwrap(), &request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["accepted"], 3);
    let consumed = r#"recoup_events_consumed_total{topic="recoup.paygo-snapshots.v1""#;
    let started = Instant::now();
    while metric(&up.grpc, consumed) < 3.0 {
        assert!(started.elapsed() < Duration::from_secs(30), "not projected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        handshakes.load(Ordering::Relaxed) >= 2,
        "TLS connections through the proxy"
    );
    assert!(up.stop().success());
}

/// A child process killed when dropped, a failing test included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
