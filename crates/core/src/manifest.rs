//! `manifest.json`: the commit record of a dataset, and what loaders should check.
//!
//! Every run writes it last, atomically, once every data file it lists is in place (see
//! `zephr_dest`): a dataset is exactly the files its manifest lists. It gives the run's
//! random id, the tool and its version, the source (input names, or the tenant and API root of
//! a fetch; never credentials), the parameters that shape the tables, each table's columns,
//! and every file with its table, format, rows, bytes and SHA-256 (computed as the file was
//! written). The state-events phase of a run commits again with its files added.
//!
//! ```json
//! {"tool": "zephr-etl", "version": "0.1.0", "run_id": "6f1c...", "created_at": "2024-05-01T10:00:00Z",
//!  "source": {"inputs": ["export.json"]},
//!  "parameters": {"format": ["csv", "parquet"], "max_rows_per_file": 1000000, ...},
//!  "tables": {"users": {"rows": 3, "columns": [{"name": "user_id", "type": "string"}, ...]}},
//!  "files": [{"path": "parquet/users/part-00000.parquet", "table": "users", "format": "parquet",
//!             "rows": 3, "bytes": 2048, "sha256": "..."}]}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest's name in every destination.
pub const MANIFEST_NAME: &str = "manifest.json";

/// One column of a table, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestColumn {
    /// The column's name in the files.
    pub name: String,
    /// Its type as `schemas/` spells it (`string`, `timestamp`, ...); kept as text so a
    /// manifest with a type this version does not know still reads.
    #[serde(rename = "type")]
    pub column_type: String,
    /// The source's own name when the column was renamed for warehouses (state events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
}

/// One table: its rows and columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    /// The table's rows, summed over its part files (each format holds the same rows).
    pub rows: u64,
    /// CSV cells the postgres dialect changed (a NUL replaced by U+FFFD); present with that
    /// dialect, or whenever a cell was changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nul_replaced: Option<u64>,
    /// The columns, in the order the files hold them.
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
    /// The file's size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `zephr-etl`.
    pub tool: String,
    /// The version of the tool that wrote it.
    pub version: String,
    /// The run's random id (128 bits, hex): tells two runs' datasets apart.
    #[serde(default)]
    pub run_id: String,
    /// When the manifest was written (UTC).
    pub created_at: String,
    /// Where the data came from: the input names, or the tenant and API root of a fetch;
    /// never credentials.
    pub source: serde_json::Value,
    /// The options that shape the tables (formats, dialect, `max_rows_per_file`, ...), by
    /// name.
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// The dataset's tables by name (`users`, `grants`, `attributes`, `state_events`).
    pub tables: BTreeMap<String, ManifestTable>,
    /// Every file of the dataset; nothing else in the destination belongs to it.
    pub files: Vec<ManifestFile>,
    /// With `--format delta`: each Delta table's folder and version after the run (its rows
    /// are what the table's log says at that version: `files` lists none of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delta: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// An empty manifest of run `run_id` for this tool.
    pub fn new(
        run_id: String,
        source: serde_json::Value,
        parameters: BTreeMap<String, serde_json::Value>,
    ) -> Manifest {
        Manifest {
            tool: "zephr-etl".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            run_id,
            created_at: String::new(),
            source,
            parameters,
            tables: BTreeMap::new(),
            files: Vec::new(),
            delta: BTreeMap::new(),
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

/// The file names a manifest's bytes list (any version's: only `files[].path` is read);
/// empty when they are not a manifest.
pub fn listed_files(bytes: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    value["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A new random run id: 128 bits as lowercase hex (unique even without the OS's generator).
pub fn new_run_id() -> String {
    crate::random::unique_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lists_files() {
        let mut m = Manifest::new(
            new_run_id(),
            serde_json::json!({"inputs": ["a"]}),
            BTreeMap::new(),
        );
        assert_eq!(m.run_id.len(), 32);
        m.files.push(ManifestFile {
            path: "users.csv".into(),
            table: "users".into(),
            format: "csv".into(),
            rows: 1,
            bytes: 2,
            sha256: "x".into(),
        });
        let text = m.to_json();
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(listed_files(text.as_bytes()), ["users.csv"]);
        assert!(listed_files(b"not json").is_empty());
        assert_ne!(new_run_id(), new_run_id());
    }
}
