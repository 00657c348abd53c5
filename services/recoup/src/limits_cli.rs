//! The budgets of `recoup up` and the services: what one client, request or file may cost.
//! Every one has a default that suits a public listener; the README's "Limits" table lists them.

use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use recoup::connections::{
    ConnectionLimits, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_AGE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
};
use recoup::platform::{DEFAULT_SHUTDOWN_GRACE, PlatformConfig};
use recoup_console::SessionLimits;
use recoup_keys::store::{DEFAULT_CACHE_BYTES, StoreOptions};
use snapshot_importer::import::{DEFAULT_DEADLINE, DEFAULT_MAX_RUNNING};
use snapshot_importer::readers::{DEFAULT_MAX_RECORD_BYTES, DEFAULT_XLSX_MAX_INFLATED_BYTES};
use snapshot_importer::upload::DEFAULT_UPLOAD_IDLE;

#[derive(Args, Clone)]
pub(crate) struct LimitArgs {
    /// Largest snapshot file one upload may carry, in bytes (larger: RESOURCE_EXHAUSTED, HTTP
    /// 413).
    #[arg(long, env = "RECOUP_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    max_upload_bytes: u64,
    /// Longest record of an uploaded file, in bytes: a CSV record, an XLSX row (and any one
    /// cell, string or tag of the workbook), a JSON element. A longer record is its row's error;
    /// a longer XLSX cell or tag refuses the file.
    #[arg(
        long,
        env = "RECOUP_MAX_RECORD_BYTES",
        default_value_t = DEFAULT_MAX_RECORD_BYTES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=1 << 30)
    )]
    max_record_bytes: usize,
    /// Most bytes an XLSX upload may inflate to, all its parts together (a zip bomb is refused
    /// before it is read).
    #[arg(
        long,
        env = "RECOUP_XLSX_MAX_INFLATED_BYTES",
        default_value_t = DEFAULT_XLSX_MAX_INFLATED_BYTES
    )]
    xlsx_max_inflated_bytes: u64,
    /// Requests per minute each tenant may make to the snapshot importer, gRPC and HTTP
    /// together (more: RESOURCE_EXHAUSTED, HTTP 429, both saying when to retry).
    #[arg(
        long,
        env = "RECOUP_RATE_LIMIT_PER_MINUTE",
        default_value_t = 300,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    rate_limit_per_minute: u32,
    /// Snapshot imports this process runs at once, uploads being received included (more:
    /// RESOURCE_EXHAUSTED, HTTP 429, both saying when to retry).
    #[arg(
        long,
        env = "RECOUP_MAX_RUNNING_IMPORTS",
        default_value_t = DEFAULT_MAX_RUNNING,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
    )]
    max_running_imports: usize,
    /// Seconds one import may take from its admission, receiving the upload included (more:
    /// DEADLINE_EXCEEDED, HTTP 503; what Kafka acknowledged is kept, send it again for the
    /// rest).
    #[arg(
        long,
        env = "RECOUP_IMPORT_DEADLINE_SECONDS",
        default_value_t = DEFAULT_DEADLINE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    import_deadline_seconds: u64,
    /// Seconds requests in flight may go on after SIGTERM before they are cancelled (clients
    /// get UNAVAILABLE / 503 and may retry); the process exits a few seconds later.
    #[arg(
        long,
        env = "RECOUP_SHUTDOWN_GRACE",
        default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs()
    )]
    shutdown_grace: u64,
    /// Seconds an upload may send no byte before it is dropped (HTTP 408, DEADLINE_EXCEEDED).
    #[arg(
        long,
        env = "RECOUP_UPLOAD_IDLE_SECONDS",
        default_value_t = DEFAULT_UPLOAD_IDLE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    upload_idle_seconds: u64,
    /// Connections open at once, every listener together; more are closed at once.
    #[arg(
        long,
        env = "RECOUP_MAX_CONNECTIONS",
        default_value_t = DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    max_connections: usize,
    /// Connections open at once from one IP address (behind a proxy, every client has the
    /// proxy's: raise it).
    #[arg(
        long,
        env = "RECOUP_MAX_CONNECTIONS_PER_PEER",
        default_value_t = DEFAULT_MAX_CONNECTIONS_PER_PEER,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    max_connections_per_peer: usize,
    /// Seconds a connection may take to send its first byte and an HTTP/1 request its headers;
    /// also how long an idle keep-alive connection stays open.
    #[arg(
        long,
        env = "RECOUP_HEADER_TIMEOUT_SECONDS",
        default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    header_timeout_seconds: u64,
    /// Seconds after which a gRPC connection is asked to close (clients reconnect).
    #[arg(
        long,
        env = "RECOUP_GRPC_MAX_CONNECTION_AGE_SECONDS",
        default_value_t = DEFAULT_MAX_AGE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    grpc_max_connection_age_seconds: u64,
    /// Bytes of page cache each database keeps in memory: the case event store, the read
    /// models, the export puller's and the API keys' stores (sled's cache, which holds a few times this; the
    /// import store keeps at most 4 MiB). Memory then grows little with the data; a larger
    /// cache reads the disk less.
    #[arg(
        long,
        env = "RECOUP_STORE_CACHE_BYTES",
        default_value_t = DEFAULT_CACHE_BYTES,
        value_parser = clap::value_parser!(u64).range(1024 * 1024..)
    )]
    store_cache_bytes: u64,
    /// Compress the databases created from now on (zstd): about a fifth of the disk, for a
    /// slower projection and more memory (embedded, imports then run at under half their
    /// speed). A database keeps the choice it was created with.
    #[arg(long, env = "RECOUP_STORE_COMPRESSION")]
    store_compression: bool,
    /// Console sessions held at once, everyone's together; when full, a sign-in is refused
    /// (503) rather than push anyone out.
    #[arg(
        long,
        env = "RECOUP_CONSOLE_MAX_SESSIONS",
        default_value_t = SessionLimits::default().max_sessions,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000)
    )]
    console_max_sessions: usize,
    /// Console sessions of one credential at once; another sign-in ends its least recently
    /// used.
    #[arg(
        long,
        env = "RECOUP_CONSOLE_SESSIONS_PER_CREDENTIAL",
        default_value_t = SessionLimits::default().per_credential,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000)
    )]
    console_sessions_per_credential: usize,
    /// Live-update streams (the do-not-contact list) one console session holds open at once
    /// (more: 429).
    #[arg(
        long,
        env = "RECOUP_CONSOLE_STREAMS_PER_SESSION",
        default_value_t = SessionLimits::default().streams_per_session,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000)
    )]
    console_streams_per_session: usize,
    /// Minutes a console session may go unused before it ends.
    #[arg(
        long,
        env = "RECOUP_CONSOLE_IDLE_MINUTES",
        default_value_t = SessionLimits::default().idle.as_secs() / 60,
        value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 60)
    )]
    console_idle_minutes: u64,
    /// Hours after sign-in a console session ends, used or not.
    #[arg(
        long,
        env = "RECOUP_CONSOLE_SESSION_HOURS",
        default_value_t = SessionLimits::default().lifetime.as_secs() / 3600,
        value_parser = clap::value_parser!(u64).range(1..=30 * 24)
    )]
    console_session_hours: u64,
}

impl LimitArgs {
    pub(crate) fn apply(&self, config: &mut PlatformConfig) -> anyhow::Result<()> {
        let importer = &mut config.importer;
        importer.max_upload_bytes = self.max_upload_bytes;
        importer.read_limits.max_record_bytes = self.max_record_bytes;
        importer.read_limits.xlsx_max_inflated_bytes = self.xlsx_max_inflated_bytes;
        importer.rate_limit_per_minute = NonZeroU32::new(self.rate_limit_per_minute)
            .context("the rate limit must allow at least 1 request per minute")?;
        importer.import.max_running = self.max_running_imports;
        importer.import.deadline = Duration::from_secs(self.import_deadline_seconds);
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace);
        config.store = StoreOptions {
            cache_bytes: self.store_cache_bytes,
            compression: self.store_compression,
        };
        config.importer.upload_idle = Duration::from_secs(self.upload_idle_seconds);
        config.connections = ConnectionLimits {
            max: self.max_connections,
            per_peer: self.max_connections_per_peer,
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            max_age: Duration::from_secs(self.grpc_max_connection_age_seconds),
        };
        config.console_sessions = SessionLimits {
            max_sessions: self.console_max_sessions,
            per_credential: self.console_sessions_per_credential,
            streams_per_session: self.console_streams_per_session,
            idle: Duration::from_secs(self.console_idle_minutes * 60),
            lifetime: Duration::from_secs(self.console_session_hours * 3600),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Up {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn applied(args: &[&str]) -> PlatformConfig {
        let up = Up::try_parse_from(std::iter::once("up").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut config = PlatformConfig::new("data".into());
        up.limits
            .apply(&mut config)
            .unwrap_or_else(|e| panic!("{e}"));
        config
    }

    #[test]
    fn the_console_session_limits_come_from_their_flags() {
        let defaults = applied(&[]).console_sessions;
        assert_eq!(defaults.max_sessions, SessionLimits::default().max_sessions);
        assert_eq!(defaults.lifetime, SessionLimits::default().lifetime);
        let set = applied(&[
            "--console-max-sessions",
            "7",
            "--console-sessions-per-credential",
            "2",
            "--console-streams-per-session",
            "1",
            "--console-idle-minutes",
            "5",
            "--console-session-hours",
            "3",
        ])
        .console_sessions;
        assert_eq!(
            (
                set.max_sessions,
                set.per_credential,
                set.streams_per_session
            ),
            (7, 2, 1)
        );
        assert_eq!(set.idle, Duration::from_secs(300));
        assert_eq!(set.lifetime, Duration::from_secs(3 * 3600));
        let zero = Up::try_parse_from(["up", "--console-max-sessions", "0"]);
        assert!(zero.is_err());
    }
}
