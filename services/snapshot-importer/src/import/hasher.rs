//! The import id: a content hash of what was uploaded.

use recoup_proto::v1;

/// The import id of an upload: the first 128 bits of SHA-256 over the format, the data origin,
/// the sheet (XLSX, when named) and the bytes, in hex. The same file sent again with the same
/// origin has the same id.
pub struct ImportHasher(sha2::Sha256);

impl ImportHasher {
    pub fn new(format: v1::FileFormat, data_origin: Option<&str>) -> Self {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(format.as_str_name().as_bytes());
        hasher.update([0]);
        hasher.update(data_origin.unwrap_or("").trim().as_bytes());
        hasher.update([0]);
        Self(hasher)
    }

    /// Adds a named part of the request that changes what is imported (e.g. the XLSX sheet).
    pub fn scope(&mut self, name: &str, value: &str) {
        for part in [name, value] {
            self.update(&(part.len() as u64).to_be_bytes());
            self.update(part.as_bytes());
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    pub fn finish(self) -> String {
        let digest = sha2::Digest::finalize(self.0);
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}
