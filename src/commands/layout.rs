//! How a run's files are named and described: the [`Layout`] of part files and worksheet
//! splits, the files an earlier run left under those names, and the manifest's entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use zephr_etl::manifest::{ManifestColumn, ManifestTable};
use zephr_etl::schema::TableDef;

use crate::cli::{CompressionArg, CsvDialectArg, OutputArgs};

/// How the files of a run are named and split.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// `--max-rows-per-file`: each table a folder of part files of at most this many rows.
    pub partition: Option<u64>,
    /// With the Excel dialect: data rows per CSV file (the worksheet limit less the header).
    pub excel_rows: Option<u64>,
    /// `--overwrite` was given.
    pub overwrite: bool,
    /// Write `manifest.json`, with this source and these parameters.
    pub manifest: Option<ManifestContext>,
}

impl Layout {
    /// Whether a table may be written as more than one file.
    pub fn splits(&self) -> bool {
        self.partition.is_some() || self.excel_rows.is_some()
    }

    /// CSV rows per file at most.
    pub fn csv_rows(&self) -> Option<u64> {
        match (self.partition, self.excel_rows) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The name of part `part` (0-based) of table `stem` in format `extension`.
    pub fn part_name(&self, stem: &str, extension: &str, part: usize) -> String {
        if self.partition.is_some() {
            format!("{stem}/part-{part:05}.{extension}")
        } else if part == 0 {
            format!("{stem}.{extension}")
        } else {
            format!("{stem}-{:05}.{extension}", part + 1)
        }
    }
}

/// What the manifest says about the run besides its files.
#[derive(Debug, Clone, Default)]
pub struct ManifestContext {
    pub source: Value,
    pub parameters: BTreeMap<String, Value>,
}

/// The manifest's entry for a table.
pub fn table_entry(def: &TableDef, rows: u64) -> ManifestTable {
    ManifestTable {
        rows,
        columns: def
            .columns
            .iter()
            .map(|c| ManifestColumn {
                name: c.name.clone(),
                column_type: serde_json::to_value(c.column_type)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                source_name: None,
            })
            .collect(),
    }
}

/// Files in `dir` under any name a run gives table `stem` in format `extension`:
/// `stem.ext`, `stem-NNNNN.ext` and `stem/part-NNNNN.ext`.
pub fn existing_outputs(dir: &Path, stem: &str, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let single = dir.join(format!("{stem}.{extension}"));
    if std::fs::symlink_metadata(&single).is_ok() {
        found.push(single);
    }
    let numbered = |name: &str, prefix: &str| -> bool {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(&format!(".{extension}")))
            .is_some_and(|digits| digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut scan = |folder: &Path, prefix: &str| {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| numbered(name, prefix))
            .collect();
        names.sort();
        found.extend(names.into_iter().map(|n| folder.join(n)));
    };
    scan(dir, &format!("{stem}-"));
    scan(&dir.join(stem), "part-");
    found
}

/// The parameters that shape the tables, for the manifest.
pub fn parameters(args: &OutputArgs) -> BTreeMap<String, Value> {
    let formats: Vec<String> = args
        .format
        .iter()
        .map(|f| format!("{f:?}").to_lowercase())
        .collect();
    let mut map = BTreeMap::new();
    map.insert("format".into(), json!(formats));
    map.insert(
        "csv_dialect".into(),
        json!(format!("{:?}", args.csv_dialect).to_lowercase()),
    );
    if args.csv_dialect == CsvDialectArg::Excel {
        map.insert("excel_max_rows".into(), json!(args.excel_max_rows));
    }
    map.insert("max_rows_per_file".into(), json!(args.max_rows_per_file));
    map.insert(
        "compression".into(),
        json!(format!("{:?}", args.compression).to_lowercase()),
    );
    if args.compression == CompressionArg::Zstd {
        map.insert("zstd_level".into(), json!(args.zstd_level));
    }
    map.insert("row_group_size".into(), json!(args.row_group_size));
    map.insert(
        "on_error".into(),
        json!(format!("{:?}", args.on_error).to_lowercase()),
    );
    map.insert("hash_pii".into(), json!(args.hash_pii));
    map.insert("wide_attributes".into(), json!(args.wide_attributes));
    map.insert(
        "user_schema".into(),
        json!(args.user_schema.as_ref().map(|p| p.display().to_string())),
    );
    map
}
