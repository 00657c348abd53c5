//! API keys as a service of a process: the registry, caught up with the access topic before
//! the process serves, followed while it runs, the first admin key, and `recoup.v1.ApiKeys`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_backbone::EventConsumer;
use event_backbone::topics::ACCESS;
use recoup_access::{Access, Credentials, KeySpec, KeyStore, Role};
use recoup_proto::tenant::DEFAULT_TENANT;
use recoup_proto::v1::api_keys_server::ApiKeysServer;
use recoup_runtime::shutdown::join;
use recoup_runtime::{Context, StartError, Starting};
use tokio::task::JoinHandle;

use crate::follow;
use crate::grpc::KeyAdmin;
use crate::jwks::{self, Tokens};
use crate::registry::Registry;

/// The follower's consumer group id (it is assigned its partitions, it joins no group).
const FOLLOWER_GROUP: &str = "recoup-access";

/// The file name of the first admin key, in the data dir.
pub const FIRST_ADMIN_KEY_FILE: &str = "admin.key";

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to write the first admin key (for the default tenant) when no key exists at all
    /// once the topic was read (`recoup up`); `None` makes none (a service of a cluster, whose
    /// first key is made by `recoup keys create --kafka-brokers`).
    pub first_admin_key: Option<PathBuf>,
    /// How long the start waits to read the access topic to its end.
    pub catch_up_timeout: Duration,
    /// Bearer tokens of an identity provider, besides API keys; `None`: API keys only.
    pub tokens: Option<Tokens>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            first_admin_key: None,
            catch_up_timeout: Duration::from_secs(15),
            tokens: None,
        }
    }
}

/// A started key service.
pub struct Running {
    registry: Arc<Registry>,
    access: Access,
    /// The follower of the access topic, and the JWKS refresher when tokens are on.
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the key store in `{data_dir}/access`, publishes it again in embedded mode, reads the
/// access topic to its end, makes the first admin key if there is no key, follows the topic
/// and serves `recoup.v1.ApiKeys`.
pub async fn start(ctx: &Context, settings: Settings) -> Result<Running, StartError> {
    let store = KeyStore::open_with(&ctx.service_dir("access"), ctx.store)
        .starting("opening the key store")?;
    let registry =
        Arc::new(Registry::new(&ctx.kafka.config, Some(store)).starting("the key producer")?);
    let now = (ctx.clock)();
    if ctx.kafka.embedded() {
        // The embedded broker started empty: the store is the record of the keys.
        registry
            .republish(now)
            .await
            .starting("publishing the keys to the embedded broker")?;
    }
    let consumer = EventConsumer::new(&ctx.kafka.config, FOLLOWER_GROUP, ACCESS.name, None)
        .starting("the access topic's consumer")?;
    let consumer = Arc::new(consumer);
    follow::catch_up(&registry, consumer.clone(), settings.catch_up_timeout)
        .await
        .starting("reading the access topic")?;
    if let Some(path) = &settings.first_admin_key
        && registry.ring().is_empty()
    {
        first_admin_key(&registry, path, now).await?;
    }
    let keys = registry.ring().len();
    if keys == 0 {
        tracing::warn!(
            "no API key exists yet: every request is refused until one is made \
             (recoup keys create --kafka-brokers ... --role admin)"
        );
    }
    tracing::info!(keys, "API keys on: every request needs a credential");
    let mut tasks = vec![tokio::spawn(follow::follow(
        registry.clone(),
        consumer,
        ctx.shutdown.clone(),
    ))];
    let tokens = match &settings.tokens {
        Some(tokens) => {
            let (verifier, client) = jwks::verifier(tokens)
                .await
                .map_err(|why| StartError::new("reading the identity provider's keys", why))?;
            let refresh = jwks::keep_fresh(
                verifier.clone(),
                tokens.jwks.clone(),
                client,
                ctx.shutdown.clone(),
            );
            tasks.push(tokio::spawn(refresh));
            Some(verifier)
        }
        None => None,
    };
    let access = Access::Checked(Arc::new(Credentials {
        keys: registry.ring(),
        tokens,
    }));
    let admin = KeyAdmin::new(registry.clone(), access.clone(), ctx.clock.clone());
    ctx.grpc().add_service(admin.into_server());
    ctx.health.set_serving::<ApiKeysServer<KeyAdmin>>().await;
    Ok(Running {
        registry,
        access,
        tasks,
    })
}

/// Makes an admin key for the default tenant and writes it to `path`, readable only by its
/// owner. The file is written before the key is published: a key nobody holds is never made.
async fn first_admin_key(
    registry: &Registry,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<(), StartError> {
    let spec = KeySpec {
        name: "first admin".to_owned(),
        tenants: vec![DEFAULT_TENANT.to_owned()],
        role: Role::Admin,
        expires_at: None,
        created_by: "bootstrap".to_owned(),
    };
    let issued = recoup_access::api_key::issue(&spec, now)
        .map_err(|why| StartError::new("making the first admin key", why))?;
    write_secret(path, &issued.key).starting(&format!(
        "writing the first admin key to {}",
        path.display()
    ))?;
    registry
        .put(issued.record, now)
        .await
        .starting("publishing the first admin key")?;
    tracing::warn!(
        path = %path.display(),
        tenant = DEFAULT_TENANT,
        "made the first admin key and wrote it to {} (readable only by you): the bundled CLI \
         reads it from there; make keys of their own for people and scripts \
         (recoup keys create --help)",
        path.display()
    );
    Ok(())
}

/// Writes `secret` to `path` with mode 0600, replacing a file that was there.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A file already there may be readable by others: start from a new one.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}

impl Running {
    /// What the process's requests are checked against: the keys, and tokens when on.
    pub fn access(&self) -> Access {
        self.access.clone()
    }

    /// The registry: make and revoke keys from within the process (tests, tools).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Waits for the follower and the JWKS refresher, which end with the process's shutdown
    /// signal.
    pub async fn shutdown(self) -> Result<(), StartError> {
        for task in self.tasks {
            join("access topic follower or JWKS refresher", task)
                .await
                .starting("stopping the key service")?;
        }
        Ok(())
    }
}
