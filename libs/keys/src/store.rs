//! How every recoup service opens its sled database: one page cache size and one compression
//! choice, set for the whole process (`--store-cache-bytes`, `--store-compression`).

use std::io;
use std::path::Path;

/// The page cache each database keeps in memory unless configured otherwise. sled holds a few
/// times its nominal cache; a fixed cache keeps the process's memory from growing with the
/// data it stores.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The zstd level of compressed databases: the fastest; higher levels save little on recoup's
/// small records and cost more of every write.
const COMPRESSION_LEVEL: i32 = 1;

/// How a database is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Compress what is written (zstd), in a database created now: about a fifth of the disk
    /// for recoup's records, for more CPU on every write and more memory. A database keeps the choice it was created with.
    pub compression: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            compression: false,
        }
    }
}

/// Opens (or creates) the database in `dir`. A database that exists is opened as it was
/// created, compressed or not, whatever `options` ask (sled refuses a change), and says so in
/// the log when that differs.
pub fn open(dir: &Path, options: StoreOptions) -> sled::Result<sled::Db> {
    let compression = match created_compressed(dir)? {
        Some(created) => {
            if created != options.compression {
                tracing::warn!(
                    dir = %dir.display(),
                    compressed = created,
                    "the database keeps the compression it was created with (sled cannot change \
                     it); a database created from now on takes the setting"
                );
            }
            created
        }
        None => options.compression,
    };
    let mut config = sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_bytes);
    if compression {
        config = config
            .use_compression(true)
            .compression_factor(COMPRESSION_LEVEL);
    }
    config.open()
}

/// Whether the database in `dir` was created compressed, from the parameters sled keeps in
/// `dir/conf` (text lines, then a checksum); `None` when there is no database yet.
pub fn created_compressed(dir: &Path) -> io::Result<Option<bool>> {
    let bytes = match std::fs::read(dir.join("conf")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let value = String::from_utf8_lossy(&bytes).lines().find_map(|line| {
        line.strip_prefix("use_compression:")
            .map(|v| v.trim().to_owned())
    });
    match value.as_deref() {
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: no use_compression parameter sled can read",
                dir.join("conf").display()
            ),
        )),
    }
}
