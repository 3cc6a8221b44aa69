//! `manifest.json`: what a run wrote, for loaders and for checking a copy.
//!
//! Written last, after every data file is complete (its SHA-256 is computed from the finished
//! temporary file, before the rename that puts it in place), and renamed into place last, so
//! a manifest never lists a file that is not there. It lists every file with its table,
//! format, rows, bytes and SHA-256, each table's columns, the tool and its version, the
//! source (input names, or the tenant and API root of a fetch; never credentials) and the
//! parameters that shape the tables.
//!
//! ```json
//! {"tool": "zephr-etl", "version": "0.1.0", "created_at": "2024-05-01T10:00:00Z",
//!  "source": {"inputs": ["export.json"]},
//!  "parameters": {"format": ["csv", "parquet"], "max_rows_per_file": 1000000, ...},
//!  "tables": {"users": {"rows": 3, "columns": [{"name": "user_id", "type": "string"}, ...]}},
//!  "files": [{"path": "users/part-00000.parquet", "table": "users", "format": "parquet",
//!             "rows": 3, "bytes": 2048, "sha256": "..."}]}
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name in the output directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// One column of a table, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: String,
    /// The source's own name when the column was renamed for warehouses (state events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
}

/// One table: its rows and columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    pub rows: u64,
    pub columns: Vec<ManifestColumn>,
}

/// One file of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// The path relative to the output directory, `/`-separated.
    pub path: String,
    /// The table (`users`, ...), or `rejects` for the rejects file.
    pub table: String,
    /// `csv`, `parquet` or `ndjson`.
    pub format: String,
    /// Data rows (records below the header in CSV; rejected items in rejects).
    pub rows: u64,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub tool: String,
    pub version: String,
    /// When the manifest was written (UTC).
    pub created_at: String,
    pub source: serde_json::Value,
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub tables: BTreeMap<String, ManifestTable>,
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// An empty manifest for this tool.
    pub fn new(
        source: serde_json::Value,
        parameters: BTreeMap<String, serde_json::Value>,
    ) -> Manifest {
        Manifest {
            tool: "zephr-etl".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            created_at: String::new(),
            source,
            parameters,
            tables: BTreeMap::new(),
            files: Vec::new(),
        }
    }

    /// The manifest as pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        // Only strings, numbers and maps: serialising cannot fail.
        let mut text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        text.push('\n');
        text
    }
}

/// The SHA-256 (lowercase hex) and length of a file's bytes.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Writes `manifest` into `file` and syncs it.
pub fn write_to(manifest: &Manifest, mut file: File) -> io::Result<()> {
    file.write_all(manifest.to_json().as_bytes())?;
    file.sync_all()
}

/// Replaces `dir/manifest.json` atomically (a temporary file in `dir`, then a rename).
pub fn replace(dir: &Path, manifest: &Manifest) -> io::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix(".manifest.json.zephr-etl-tmp-")
        .tempfile_in(dir)?;
    write_to(manifest, temp.as_file().try_clone()?)?;
    temp.persist(dir.join(MANIFEST_NAME)).map_err(|e| e.error)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"abc").unwrap();
        let (hash, bytes) = sha256_file(&path).unwrap();
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(bytes, 3);
    }

    #[test]
    fn replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::new(serde_json::json!({"inputs": ["a"]}), BTreeMap::new());
        replace(dir.path(), &m).unwrap();
        m.created_at = "later".into();
        replace(dir.path(), &m).unwrap();
        let back: Manifest =
            serde_json::from_slice(&std::fs::read(dir.path().join(MANIFEST_NAME)).unwrap())
                .unwrap();
        assert_eq!(back, m);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
