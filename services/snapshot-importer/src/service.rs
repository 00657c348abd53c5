//! The snapshot importer as a service of a process: the import store, the importer, its gRPC
//! and HTTP front ends sharing one rate limit, and its health while Kafka is away.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use event_backbone::producer::ProducerSettings;
use event_backbone::topics::PAYGO_SNAPSHOTS;
use recoup_proto::v1::snapshot_imports_server::SnapshotImportsServer;
use recoup_runtime::shutdown::stopped;
use recoup_runtime::{Context, StartError, Starting};
use tokio::sync::watch;
use tonic_health::server::HealthReporter;

use crate::admission::Admission;
use crate::grpc::ImportService;
use crate::http::HttpApi;
use crate::import::{ImportSettings, Importer};
use crate::limits::{DEFAULT_REQUESTS_PER_MINUTE, LimiterClock, TenantLimiter};
use crate::readers::ReadLimits;
use crate::store::{ImportStore, StoreError};
use crate::upload::{DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_UPLOAD_IDLE, Uploads};

/// How the snapshot importer runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest file one upload may carry, in bytes.
    pub max_upload_bytes: u64,
    /// What reading one file may cost.
    pub read_limits: ReadLimits,
    /// How long an upload may send nothing before it is dropped.
    pub upload_idle: Duration,
    /// Requests per minute each tenant may make, gRPC and HTTP together.
    pub rate_limit_per_minute: NonZeroU32,
    /// The time the rate limits read (tests stop it).
    pub rate_limit_clock: LimiterClock,
    pub import: ImportSettings,
}

impl Default for Settings {
    /// 100 MiB uploads, 300 requests per minute and tenant.
    fn default() -> Self {
        Self {
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            read_limits: ReadLimits::default(),
            upload_idle: DEFAULT_UPLOAD_IDLE,
            rate_limit_per_minute: NonZeroU32::new(DEFAULT_REQUESTS_PER_MINUTE)
                .unwrap_or(NonZeroU32::MIN),
            rate_limit_clock: LimiterClock::real(),
            import: ImportSettings::default(),
        }
    }
}

/// A started snapshot importer.
pub struct Running {
    importer: Importer,
    http: HttpApi,
}

/// Opens the import store in `{data_dir}/snapshot-importer`, serves
/// `recoup.v1.SnapshotImports` and prepares the HTTP API ([`Running::http_router`]).
pub async fn start(ctx: &Context, settings: Settings) -> Result<Running, StartError> {
    let dir = ctx.service_dir("snapshot-importer");
    let mut store =
        ImportStore::open_with(&dir, ctx.store).starting("opening the snapshot importer store")?;
    // Embedded, the broker keeps only the newest events: the store keeps every one published,
    // the snapshot stream's record. On external Kafka the topic is the record.
    if ctx.kafka.embedded() {
        store = store
            .keep_record()
            .starting("opening the snapshot record")?;
        if let Some(record) = store.record() {
            ctx.records.register(PAYGO_SNAPSHOTS.name, Arc::new(record));
        }
    }
    let spool_dir = dir.join("uploads");
    // Uploads of a process that died are of no use: their senders got no answer.
    let _ = std::fs::remove_dir_all(&spool_dir);
    let producer = ctx
        .kafka
        .producer(&ProducerSettings::bulk())
        .starting("kafka producer")?;
    let mut importer = Importer::new(
        store,
        Arc::new(producer),
        ctx.clock.clone(),
        settings.import,
    )
    .cancelled_by(ctx.cancel.clone());
    if let Some(up) = &ctx.kafka.up {
        importer = importer.with_reachability(up.clone());
        tokio::spawn(follow_kafka(
            up.clone(),
            ctx.health.clone(),
            ctx.shutdown.clone(),
        ));
    }
    // One budget per tenant, whether it speaks gRPC or HTTP.
    let limiter =
        TenantLimiter::with_clock(settings.rate_limit_per_minute, settings.rate_limit_clock);
    let admission = Admission::new(ctx.access.clone(), limiter);
    let uploads = Uploads::new(
        importer.clone(),
        spool_dir,
        settings.max_upload_bytes,
        settings.read_limits,
        settings.upload_idle,
    );
    ctx.grpc()
        .add_service(ImportService::new(uploads.clone(), admission.clone()).into_server());
    ctx.health
        .set_serving::<SnapshotImportsServer<ImportService>>()
        .await;
    Ok(Running {
        importer,
        http: HttpApi::new(uploads, admission),
    })
}

/// `recoup.v1.SnapshotImports` is NOT_SERVING while Kafka does not answer: imports are refused
/// meanwhile.
async fn follow_kafka(
    mut up: watch::Receiver<bool>,
    health: HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *up.borrow_and_update() {
            health
                .set_serving::<SnapshotImportsServer<ImportService>>()
                .await;
        } else {
            health
                .set_not_serving::<SnapshotImportsServer<ImportService>>()
                .await;
        }
        tokio::select! {
            changed = up.changed() => if changed.is_err() { return },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

impl Running {
    pub fn importer(&self) -> &Importer {
        &self.importer
    }

    /// The HTTP API, for the process's HTTP listener.
    pub fn http_router(&self) -> axum::Router {
        self.http.clone().router()
    }

    /// Embedded mode, after a run that did not end cleanly: snapshots the dead in-memory broker
    /// acknowledged but no read model received are forgotten, with the reports of their
    /// imports, so that the same uploads sent again import them (the importer keeps
    /// fingerprints, not rows). `applied` names the revision a read model applied of an
    /// account's day.
    pub fn forget_unprojected<E>(
        &self,
        applied: impl Fn(&str, &str, NaiveDate) -> Result<Option<u64>, E>,
    ) -> Result<(), StartError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let store = self.importer.store();
        if store
            .take_clean_mark()
            .starting("reading the import store")?
        {
            return Ok(());
        }
        let mut stale = Vec::new();
        let mut ahead = Vec::new();
        for entry in store.snapshots() {
            let (parts, stored) = entry.starting("reading the import store")?;
            let applied = applied(&parts.tenant, &parts.account_uid, parts.date)
                .starting("reading the account read model")?;
            match applied {
                Some(applied) if applied > stored.revision => ahead.push((parts, stored, applied)),
                Some(applied) if applied == stored.revision => {}
                _ => stale.push((parts, stored)),
            }
        }
        if !ahead.is_empty() {
            // The read model got events whose fingerprints the crash took: count on above them.
            store
                .raise_revisions(&ahead)
                .starting("raising revisions")?;
        }
        if stale.is_empty() {
            return Ok(());
        }
        let imports = store.forget(&stale).starting("forgetting snapshots")?;
        tracing::warn!(
            snapshots = stale.len(),
            imports = ?imports,
            "the last run ended before these imports reached the read models; send the same \
             uploads again to import the missing rows"
        );
        Ok(())
    }

    /// After the process's servers stopped: flushes the store, and marks it clean when
    /// `everything_projected` (every snapshot it remembers reached the read models).
    pub async fn shutdown(self, everything_projected: bool) -> Result<(), StoreError> {
        let store = self.importer.store();
        store.flush().await?;
        if everything_projected {
            store.mark_clean()?;
        }
        Ok(())
    }
}
