//! How a dataset's files are named: one place for every name the engine writes, and the
//! test of whether a name belongs to a dataset (any run's, any format, any layout).
//!
//! - one file per table and format: `users.csv`, `users.parquet`, ...;
//! - the Excel dialect splits a long table at the worksheet limit: `users.csv`,
//!   `users-00002.csv`, ...;
//! - with a row limit per file, each table and format is a folder of parts:
//!   `parquet/users/part-00000.parquet`, `csv/users/part-00000.csv`, ...;
//! - `rejects.ndjson` (bad items skipped) and `manifest.json` (the commit record) beside them.

use zephr_core::schema::Table;

/// The rejects file's name.
pub const REJECTS_NAME: &str = "rejects.ndjson";

/// A file format the engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// CSV in the run's dialect, one file per table (or per part, or per worksheet's worth
    /// in the excel dialect).
    Csv,
    /// Parquet, one file per table (or per part).
    Parquet,
    /// One Excel workbook per table (a long table goes on in more worksheets, never more
    /// files).
    Xlsx,
}

impl Format {
    /// Every format, in the order files are written and listed.
    pub const ALL: [Format; 3] = [Format::Csv, Format::Parquet, Format::Xlsx];

    /// The name in the manifest, the file extension and the partitioned layout's folder.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Xlsx => "xlsx",
        }
    }
}

/// Extensions that any version of the tool gives table files (xlsx included, so that a
/// dataset of a later version is recognised too).
const DATASET_EXTENSIONS: [&str; 3] = ["csv", "parquet", "xlsx"];

/// A table the engine writes: the item tables and the state events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputTable {
    /// The item table [`Table::Users`].
    Users,
    /// The item table [`Table::Grants`].
    Grants,
    /// The item table [`Table::Attributes`].
    Attributes,
    /// `state_events`: the export's optional second phase (fetched, or a saved file).
    StateEvents,
}

impl OutputTable {
    /// Every table, in the order they are written and reported.
    pub const ALL: [OutputTable; 4] = [
        OutputTable::Users,
        OutputTable::Grants,
        OutputTable::Attributes,
        OutputTable::StateEvents,
    ];

    /// The table's name (file stem, manifest key).
    pub fn name(self) -> &'static str {
        match self {
            OutputTable::Users => "users",
            OutputTable::Grants => "grants",
            OutputTable::Attributes => "attributes",
            OutputTable::StateEvents => crate::state_events::TABLE_NAME,
        }
    }
}

impl From<Table> for OutputTable {
    fn from(table: Table) -> OutputTable {
        match table {
            Table::Users => OutputTable::Users,
            Table::Grants => OutputTable::Grants,
            Table::Attributes => OutputTable::Attributes,
        }
    }
}

/// How the files of a run are named and split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// Each table and format a folder of part files of at most this many rows.
    pub partition: Option<u64>,
    /// With the Excel dialect: data rows per CSV file (the worksheet limit less the header).
    pub excel_rows: Option<u64>,
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

    /// The name of part `part` (0-based) of `table` in `format`.
    pub(crate) fn part_name(&self, table: OutputTable, format: Format, part: usize) -> String {
        let (stem, ext) = (table.name(), format.name());
        if format == Format::Xlsx {
            // One workbook whatever the layout: its worksheets hold any number of rows.
            format!("{stem}.{ext}")
        } else if self.partition.is_some() {
            format!("{ext}/{stem}/part-{part:05}.{ext}")
        } else if part == 0 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{:05}.{ext}", part + 1)
        }
    }
}

/// Where `name` ranks among a dataset's files (tables in their order, then rejects, then the
/// manifest), or `None` when it is no name a dataset file has: the files a destination
/// holds that make it "hold a dataset", in the order a message names them.
pub(crate) fn dataset_rank(name: &str) -> Option<usize> {
    if name == REJECTS_NAME {
        return Some(100);
    }
    if name == zephr_core::manifest::MANIFEST_NAME {
        return Some(101);
    }
    let numbered = |text: &str, prefix: &str, ext: &str| {
        text.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(ext))
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|digits| digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
    };
    for (t, table) in OutputTable::ALL.into_iter().enumerate() {
        let stem = table.name();
        for (e, ext) in DATASET_EXTENSIONS.into_iter().enumerate() {
            let rank = t * 10 + e;
            if name == format!("{stem}.{ext}") || numbered(name, &format!("{stem}-"), ext) {
                return Some(rank);
            }
            // Parts: `FORMAT/TABLE/part-NNNNN.EXT` and the older `TABLE/part-NNNNN.EXT`.
            let part = |folder: &str| {
                name.strip_prefix(folder)
                    .is_some_and(|rest| numbered(rest, "part-", ext))
            };
            if part(&format!("{ext}/{stem}/")) || part(&format!("{stem}/")) {
                return Some(rank);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_layout() {
        let plain = Layout::default();
        assert_eq!(
            plain.part_name(OutputTable::Users, Format::Csv, 0),
            "users.csv"
        );
        let excel = Layout {
            excel_rows: Some(10),
            ..Layout::default()
        };
        assert_eq!(
            excel.part_name(OutputTable::Grants, Format::Csv, 1),
            "grants-00002.csv"
        );
        let parts = Layout {
            partition: Some(5),
            ..Layout::default()
        };
        assert_eq!(
            parts.part_name(OutputTable::StateEvents, Format::Parquet, 3),
            "parquet/state_events/part-00003.parquet"
        );
        assert_eq!(parts.csv_rows(), Some(5));
    }

    #[test]
    fn recognises_dataset_files_of_any_layout() {
        for name in [
            "users.csv",
            "grants.parquet",
            "attributes-00002.csv",
            "state_events.xlsx",
            "csv/users/part-00000.csv",
            "parquet/state_events/part-00012.parquet",
            "users/part-00000.parquet",
            "rejects.ndjson",
            "manifest.json",
        ] {
            assert!(dataset_rank(name).is_some(), "{name}");
        }
        for name in [
            "notes.txt",
            "users.json",
            "users-2.csv",
            "csv/users/part-0.csv",
            "raw.ndjson",
            "csv/grants/part-00000.parquet",
        ] {
            assert!(dataset_rank(name).is_none(), "{name}");
        }
        assert!(dataset_rank("users.csv") < dataset_rank("grants.parquet"));
    }
}
