//! The process's durable copy of API keys: a sled tree of the latest record of each key, as the
//! process's [`crate::KeyRing`] took it. It lets a process check credentials from its first
//! request, before it has read the access topic again; in embedded mode it is the record itself.

use std::path::Path;

use prost::Message;
use recoup_keys::Key;
use recoup_keys::layout::mark_codec_layout;
use recoup_keys::store::StoreOptions;
use recoup_proto::v1;

/// Keys: `k` + key id → the encoded [`v1::ApiKey`].
const KEYS: u8 = b'k';

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store: {0}")]
    Sled(#[from] sled::Error),
    #[error("key store: the record of key {id} is unreadable: {source}")]
    Decode {
        id: String,
        source: prost::DecodeError,
    },
}

/// API keys kept on disk, each under its id.
#[derive(Debug, Clone)]
pub struct KeyStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl KeyStore {
    /// Opens (or creates) the store in `dir`, its database as by default.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`, its database as `options` say.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = recoup_keys::store::open(dir, options)?;
        let tree = db.open_tree("keys")?;
        if tree.is_empty() {
            let mut batch = sled::Batch::default();
            mark_codec_layout(&mut batch);
            tree.apply_batch(batch)?;
        }
        Ok(Self { db, tree })
    }

    /// Keeps `record` as key `record.id`'s latest (from another process's change, say).
    pub fn put(&self, record: &v1::ApiKey) -> Result<(), StoreError> {
        self.tree
            .insert(key_of(&record.id), record.encode_to_vec())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<v1::ApiKey>, StoreError> {
        self.tree
            .get(key_of(id))?
            .map(|bytes| decode(id, &bytes))
            .transpose()
    }

    /// Every key's latest record, by id.
    pub fn list(&self) -> Result<Vec<v1::ApiKey>, StoreError> {
        self.tree
            .scan_prefix([KEYS])
            .map(|entry| {
                let (key, bytes) = entry?;
                decode(&String::from_utf8_lossy(&key[1..]), &bytes)
            })
            .collect()
    }
}

fn key_of(id: &str) -> Key {
    Key::new(KEYS).last_str(id)
}

fn decode(id: &str, bytes: &[u8]) -> Result<v1::ApiKey, StoreError> {
    v1::ApiKey::decode(bytes).map_err(|source| StoreError::Decode {
        id: id.to_owned(),
        source,
    })
}
