//! What `zephr-etl load-sql` prints: the statements that load the dataset a manifest
//! describes into a warehouse the tool cannot write to itself (SPEC section 8). Nothing runs
//! here; the script is text for the warehouse's own client.
//!
//! Every script creates the manifest's tables when missing ([`crate::ddl`], the run's own
//! columns through [`crate::describe::from_manifest`]), then loads exactly the files the
//! manifest lists, Parquet where the run wrote it and its CSV otherwise (PostgreSQL: the CSV
//! always, `\copy` one part at a time). Plainly the rows are appended. With
//! [`Options::merge`] the users, grants and attributes go into staging tables first and the
//! SPEC section 7 rules apply in one transaction where the warehouse has them:
//! - users upserted on `user_id` (MERGE in PostgreSQL, BigQuery, Snowflake and Databricks;
//!   delete-then-insert in DuckDB and Redshift), the last row of a `user_id` the run repeats
//!   winning: the last in file order where the engine can see it (DuckDB's
//!   `file_row_number`, PostgreSQL's COPY order), the greatest `seq_no` elsewhere;
//! - the grants and attributes of the run's users deleted, then inserted from the run (a
//!   user repeated within the run gets the rows of all its items: the files do not say which
//!   item a grant or an attribute came from);
//! - users not in the run kept, `state_events` appended;
//! - the staging tables dropped at the end.
//!
//! As in [`crate::ddl`], no comment holds a `;`: a runner that splits the script on `;` gets
//! whole statements (PostgreSQL's `\copy` lines are psql commands, one a line, without `;`).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::ddl::{self, Create, Dialect, JsonAs};
use crate::describe::{self, DescribeError};
use crate::manifest::Manifest;
use crate::schema::{ColumnType, TableDef};

/// The warehouses `load-sql` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warehouse {
    /// Google BigQuery (`LOAD DATA` from GCS).
    Bigquery,
    /// Snowflake (`COPY INTO` from a stage).
    Snowflake,
    /// Amazon Redshift (`COPY` from S3).
    Redshift,
    /// Databricks (`COPY INTO`, Spark SQL).
    Databricks,
    /// DuckDB (reads local files or buckets).
    Duckdb,
    /// PostgreSQL (`COPY` of the CSV files).
    Postgres,
}

impl Warehouse {
    /// Every warehouse, in the order the documentation lists them.
    pub const ALL: [Warehouse; 6] = [
        Warehouse::Bigquery,
        Warehouse::Snowflake,
        Warehouse::Redshift,
        Warehouse::Databricks,
        Warehouse::Duckdb,
        Warehouse::Postgres,
    ];

    /// The name `--dialect` takes.
    pub fn name(self) -> &'static str {
        match self {
            Warehouse::Bigquery => "bigquery",
            Warehouse::Snowflake => "snowflake",
            Warehouse::Redshift => "redshift",
            Warehouse::Databricks => "databricks",
            Warehouse::Duckdb => "duckdb",
            Warehouse::Postgres => "postgres",
        }
    }

    /// The DDL dialect of its tables (Databricks is Spark SQL).
    fn dialect(self) -> Dialect {
        match self {
            Warehouse::Bigquery => Dialect::Bigquery,
            Warehouse::Snowflake => Dialect::Snowflake,
            Warehouse::Redshift => Dialect::Redshift,
            Warehouse::Databricks => Dialect::Spark,
            Warehouse::Duckdb => Dialect::Duckdb,
            Warehouse::Postgres => Dialect::Postgres,
        }
    }

    /// Whether the warehouse reads files only from a bucket (a local run's files must be
    /// uploaded, and the script would name where).
    fn needs_bucket(self) -> bool {
        matches!(
            self,
            Warehouse::Bigquery | Warehouse::Redshift | Warehouse::Databricks
        )
    }
}

/// The default Snowflake stage: the one docs/loading.md creates.
pub const DEFAULT_STAGE: &str = "zephr";

/// The default Redshift role: the cluster's default IAM role (`IAM_ROLE default`).
pub const DEFAULT_IAM_ROLE: &str = "default";

/// What the script should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The warehouse the script is for (`--dialect`).
    pub warehouse: Warehouse,
    /// Apply SPEC section 7 (`--merge`) instead of appending.
    pub merge: bool,
    /// With `merge`: the run is a full export, and users absent from it are deleted with
    /// their grants and attributes (`--delete-missing`).
    pub delete_missing: bool,
    /// The schema (BigQuery dataset, Snowflake or Databricks schema) of every table.
    pub schema: Option<String>,
    /// Snowflake: the stage (with an optional path, `name/path`) that holds the run's folder.
    pub stage: String,
    /// Redshift: the IAM role COPY reads S3 with (`default`, or an ARN).
    pub iam_role: String,
}

impl Options {
    /// Plain loading into `warehouse`, default stage and role.
    pub fn new(warehouse: Warehouse) -> Options {
        Options {
            warehouse,
            merge: false,
            delete_missing: false,
            schema: None,
            stage: DEFAULT_STAGE.into(),
            iam_role: DEFAULT_IAM_ROLE.into(),
        }
    }
}

/// Where the run's files are: the manifest's folder or bucket prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A local folder, absolute.
    Local(PathBuf),
    /// A bucket prefix URL (`s3://bucket/prefix`), no trailing `/`.
    Bucket(String),
}

impl Base {
    /// Where a manifest path (`/`-separated, relative) is.
    fn locate(&self, path: &str) -> String {
        match self {
            Base::Local(dir) => dir.join(path).display().to_string(),
            Base::Bucket(url) => format!("{url}/{path}"),
        }
    }

    /// The folder or prefix itself, with a final `/`.
    fn root(&self) -> String {
        match self {
            Base::Local(dir) => format!("{}/", dir.display()),
            Base::Bucket(url) => format!("{url}/"),
        }
    }
}

/// Why no script can be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadSqlError {
    /// The tables' definitions could not be made from the manifest.
    #[error(transparent)]
    Describe(#[from] DescribeError),
    /// The warehouse reads only from buckets and the manifest is a local folder's.
    #[error(
        "{warehouse} loads files from a bucket, and this manifest is a local folder's: write \
         the run to a bucket (-o s3://..., gs://...) or upload the folder as it is and give \
         the uploaded manifest's URL"
    )]
    LocalFiles {
        /// The warehouse's name, as [`Warehouse::name`] gives it.
        warehouse: &'static str,
    },
    /// Redshift's COPY reads S3 only.
    #[error("Redshift's COPY reads Amazon S3 only, and the run's files are at {url}")]
    NotS3 {
        /// The run's base URL (`gs://...`, `az://...`).
        url: String,
    },
    /// PostgreSQL needs CSV and the run wrote none of a table.
    #[error(
        "PostgreSQL loads the CSV files (it cannot read Parquet), and the run wrote no CSV of \
         {table}: write the run with CSV (its default formats), in the postgres CSV dialect"
    )]
    NoCsv {
        /// The table without CSV files.
        table: String,
    },
    /// The only files of a table are excel-dialect CSV, whose values a loader would change.
    #[error(
        "the run's CSV files are in the excel dialect (BOM, formula guard), which no loader \
         reads back as written, and {table} has no Parquet: write the run with Parquet, or \
         with the postgres CSV dialect"
    )]
    ExcelCsv {
        /// The table whose only files are excel-dialect CSV.
        table: String,
    },
    /// `--merge` needs the users table, whose user ids every other table's rows follow.
    #[error("a merge needs the run's users table, and the manifest lists none")]
    NoUsers,
}

/// The file format a table loads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    Csv,
}

/// One table of the run: its definition and the files it loads from (manifest paths).
struct Part {
    def: TableDef,
    format: Format,
    files: Vec<String>,
}

impl Part {
    fn name(&self) -> &str {
        &self.def.table
    }

    /// Users, grants and attributes follow the merge rules; other tables are appended.
    fn merged(&self) -> bool {
        matches!(self.name(), "users" | "grants" | "attributes")
    }
}

/// The script that loads `manifest`'s dataset, found at `base`, as `options` say.
pub fn script(manifest: &Manifest, base: &Base, options: &Options) -> Result<String, LoadSqlError> {
    let w = options.warehouse;
    if w.needs_bucket()
        && let Base::Local(_) = base
    {
        return Err(LoadSqlError::LocalFiles {
            warehouse: match w {
                Warehouse::Bigquery => "BigQuery",
                Warehouse::Redshift => "Redshift",
                _ => "Databricks",
            },
        });
    }
    if w == Warehouse::Redshift
        && let Base::Bucket(url) = base
        && !url.starts_with("s3://")
    {
        return Err(LoadSqlError::NotS3 { url: url.clone() });
    }
    let parts = parts(manifest, w)?;
    if options.merge && !parts.iter().any(|p| p.name() == "users") {
        return Err(LoadSqlError::NoUsers);
    }
    let writer = Gen {
        w,
        d: w.dialect(),
        options,
        base,
    };
    Ok(writer.script(manifest, &parts))
}

/// The manifest's tables with the files each loads from.
fn parts(manifest: &Manifest, w: Warehouse) -> Result<Vec<Part>, LoadSqlError> {
    let csv_dialect = manifest
        .parameters
        .get("csv_dialect")
        .and_then(|v| v.as_str())
        .unwrap_or("plain");
    let mut out = Vec::new();
    for described in describe::from_manifest(manifest, None)? {
        let Some(def) = described.def().cloned() else {
            continue;
        };
        let files_of = |format: &str| -> Vec<String> {
            manifest
                .files
                .iter()
                .filter(|f| f.table == def.table && f.format == format)
                .map(|f| f.path.clone())
                .collect()
        };
        let parquet = files_of("parquet");
        let csv = files_of("csv");
        let (format, files) = if w != Warehouse::Postgres && !parquet.is_empty() {
            (Format::Parquet, parquet)
        } else if csv.is_empty() {
            if w == Warehouse::Postgres {
                return Err(LoadSqlError::NoCsv { table: def.table });
            }
            (Format::Parquet, Vec::new())
        } else if csv_dialect == "excel" {
            return Err(LoadSqlError::ExcelCsv { table: def.table });
        } else {
            (Format::Csv, csv)
        };
        out.push(Part { def, format, files });
    }
    Ok(out)
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The name of a table's staging table.
fn stage_name(table: &str) -> String {
    format!("zephr_etl_stage_{table}")
}

/// Snowflake and Databricks take at most 1,000 names in one `FILES = (...)`.
const FILES_PER_STATEMENT: usize = 1000;

/// The script's writer: the warehouse, its DDL dialect, the options and where files are.
struct Gen<'a> {
    w: Warehouse,
    d: Dialect,
    options: &'a Options,
    base: &'a Base,
}

impl Gen<'_> {
    fn script(&self, manifest: &Manifest, parts: &[Part]) -> String {
        let mut out = String::new();
        self.header(&mut out, manifest, parts);
        if let Some(schema) = &self.options.schema {
            let _ = writeln!(
                out,
                "CREATE SCHEMA IF NOT EXISTS {};\n",
                self.d.identifier(schema)
            );
        }
        for part in parts {
            out.push_str(&self.create(&part.def, false));
            out.push('\n');
        }
        // The tables loaded through staging: all but state_events when merging, and every
        // table in BigQuery and Snowflake, whose JSON columns are filled by PARSE_JSON.
        let staged = |part: &Part| {
            (self.options.merge && part.merged())
                || matches!(self.w, Warehouse::Bigquery | Warehouse::Snowflake)
        };
        let in_transaction = matches!(
            self.w,
            Warehouse::Postgres | Warehouse::Duckdb | Warehouse::Redshift
        );
        let begin = self.begin();
        let mut staging = String::new();
        for part in parts.iter().filter(|p| staged(p)) {
            self.stage(&mut staging, part);
        }
        let mut apply = String::new();
        let users_staged = parts.iter().any(|p| p.name() == "users" && staged(p));
        if self.options.merge && self.options.delete_missing && users_staged {
            for part in parts.iter().filter(|p| p.merged()) {
                self.delete_missing(&mut apply, part);
            }
        }
        for part in parts {
            if !staged(part) {
                self.load_direct(&mut apply, part);
            } else if !self.options.merge || !part.merged() {
                self.insert_all(&mut apply, part);
            } else if part.name() == "users" {
                self.upsert_users(&mut apply, part);
            } else if users_staged {
                self.replace_rows(&mut apply, part);
            }
        }
        let mut drops = String::new();
        for part in parts.iter().filter(|p| staged(p)) {
            let _ = writeln!(
                drops,
                "DROP TABLE IF EXISTS {};",
                self.stage_ref(part.name())
            );
        }
        match begin {
            Some((begin, commit)) if in_transaction => {
                let _ = writeln!(out, "{begin}\n");
                out.push_str(&staging);
                out.push_str(&apply);
                out.push_str(&drops);
                let _ = writeln!(out, "{commit}");
            }
            Some((begin, commit)) => {
                out.push_str(&staging);
                let _ = writeln!(out, "{begin}\n");
                out.push_str(&apply);
                let _ = writeln!(out, "{commit}\n");
                out.push_str(&drops);
            }
            None => {
                out.push_str(&staging);
                out.push_str(&apply);
                out.push_str(&drops);
            }
        }
        out
    }

    /// The comments that open the script: what it loads, how, and what to know first.
    fn header(&self, out: &mut String, manifest: &Manifest, parts: &[Part]) {
        let mode = if self.options.merge && self.options.delete_missing {
            "merged as a full export (users absent from the run deleted with their grants \
             and attributes, the run's users upserted on user_id, their grants and \
             attributes replaced, state_events appended)"
        } else if self.options.merge {
            "merged (users upserted on user_id, their grants and attributes replaced, \
             state_events appended)"
        } else {
            "appended (running it twice loads the rows twice: empty the tables first, or use \
             --merge)"
        };
        let _ = writeln!(
            out,
            "-- zephr-etl load-sql for {}: run {} (written {}) from {}",
            self.w.name(),
            manifest.run_id,
            manifest.created_at,
            self.base.root()
        );
        let _ = writeln!(out, "-- The run's rows are {mode}.");
        let last = match self.w {
            Warehouse::Duckdb | Warehouse::Postgres => {
                "the last row of a user_id repeated in the run wins (file order)"
            }
            _ => {
                "the row with the greatest seq_no wins where the run repeats a user_id \
                 (this warehouse does not keep the files' row order)"
            }
        };
        if self.options.merge {
            let _ = writeln!(out, "-- Users: {last}.");
        }
        match (self.w, self.base) {
            (Warehouse::Postgres, _) => {
                let _ = writeln!(
                    out,
                    "-- Run it with psql (\\copy is a psql command): psql -v ON_ERROR_STOP=1 -f load.sql"
                );
                let dialect = manifest
                    .parameters
                    .get("csv_dialect")
                    .and_then(|v| v.as_str())
                    .unwrap_or("plain");
                if dialect != "postgres" {
                    let _ = writeln!(
                        out,
                        "-- The CSV files are in the {dialect} dialect, not postgres: a NUL \
                         character in a value makes \\copy fail (convert with --csv-dialect \
                         postgres to have it replaced)."
                    );
                }
            }
            (Warehouse::Snowflake, Base::Local(dir)) => {
                let _ = writeln!(
                    out,
                    "-- The stage @{} must hold the run's folder as it is, for example",
                    self.options.stage
                );
                let mut folders: Vec<String> = parts
                    .iter()
                    .flat_map(|p| p.files.iter())
                    .map(|f| f.rsplit_once('/').map_or(String::new(), |(d, _)| d.into()))
                    .collect();
                folders.dedup();
                for folder in folders {
                    let (pattern, target) = if folder.is_empty() {
                        (dir.join("*").display().to_string(), String::new())
                    } else {
                        (
                            dir.join(&folder).join("*").display().to_string(),
                            format!("{folder}/"),
                        )
                    };
                    let _ = writeln!(
                        out,
                        "--   PUT file://{pattern} @{}/{target} AUTO_COMPRESS = FALSE",
                        self.options.stage
                    );
                }
            }
            (Warehouse::Snowflake, Base::Bucket(url)) => {
                let _ = writeln!(
                    out,
                    "-- The stage @{} must hold the run's files as {url}/ does (a stage \
                     created with URL = '{url}/' and a STORAGE_INTEGRATION, or one above it \
                     with the path after its name).",
                    self.options.stage,
                );
            }
            (Warehouse::Bigquery, Base::Bucket(url)) if !url.starts_with("gs://") => {
                let _ = writeln!(
                    out,
                    "-- BigQuery reads gs:// URIs, others only through BigQuery Omni (add WITH \
                     CONNECTION to each LOAD DATA), or copy the run to Cloud Storage first."
                );
            }
            (Warehouse::Databricks, Base::Bucket(url)) if url.starts_with("az://") => {
                let _ = writeln!(
                    out,
                    "-- Databricks reads Azure storage as abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH: \
                     write that URL in place of az://."
                );
            }
            (Warehouse::Databricks, _) => {
                let _ = writeln!(
                    out,
                    "-- Databricks runs each statement as its own transaction, and COPY INTO skips \
                     files a table already loaded."
                );
            }
            (Warehouse::Redshift, _) => {
                out.push_str(ddl::REDSHIFT_NOTE);
            }
            _ => {}
        }
        if self.options.schema.is_none()
            && matches!(self.w, Warehouse::Bigquery | Warehouse::Databricks)
        {
            let _ = writeln!(
                out,
                "-- No schema given: the tables are the session's default dataset or schema."
            );
        }
        for part in parts.iter().filter(|p| p.files.is_empty()) {
            let _ = writeln!(out, "-- {}: the run wrote no file of it.", part.name());
        }
        out.push('\n');
    }

    /// The transaction's first and last statements; `None` where there is no multi-statement
    /// transaction (Databricks).
    fn begin(&self) -> Option<(&'static str, &'static str)> {
        match self.w {
            Warehouse::Postgres | Warehouse::Redshift => Some(("BEGIN;", "COMMIT;")),
            Warehouse::Duckdb | Warehouse::Snowflake => Some(("BEGIN TRANSACTION;", "COMMIT;")),
            Warehouse::Bigquery => Some(("BEGIN TRANSACTION;", "COMMIT TRANSACTION;")),
            Warehouse::Databricks => None,
        }
    }

    /// `CREATE TABLE` of a target (when missing) or of a staging table.
    fn create(&self, def: &TableDef, staging: bool) -> String {
        let mut create = Create {
            if_not_exists: !staging,
            temporary: None,
            schema: self.options.schema.clone(),
            no_using: self.w == Warehouse::Databricks,
        };
        let mut json = JsonAs::Native;
        if staging {
            create.temporary = match self.w {
                Warehouse::Snowflake => Some("TEMPORARY"),
                Warehouse::Redshift | Warehouse::Postgres | Warehouse::Duckdb => Some("TEMP"),
                Warehouse::Bigquery | Warehouse::Databricks => None,
            };
            // PARSE_JSON fills BigQuery's and Snowflake's JSON columns from the text.
            if matches!(self.w, Warehouse::Bigquery | Warehouse::Snowflake) {
                json = JsonAs::Text;
            }
        }
        ddl::create_table_with(def, self.d, json, &create)
    }

    fn target(&self, table: &str) -> String {
        ddl::qualified(self.d, self.options.schema.as_deref(), table)
    }

    /// A staging table's name: temporary ones unqualified, others in the schema.
    fn stage_ref(&self, table: &str) -> String {
        match self.w {
            Warehouse::Bigquery | Warehouse::Databricks => self.target(&stage_name(table)),
            _ => self.d.identifier(&stage_name(table)),
        }
    }

    fn columns(&self, def: &TableDef, prefix: &str) -> String {
        def.columns
            .iter()
            .map(|c| format!("{prefix}{}", self.d.identifier(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A staged column as the target takes it: JSON parsed where the engine must.
    fn value(&self, name: &str, column_type: ColumnType, prefix: &str) -> String {
        let column = format!("{prefix}{}", self.d.identifier(name));
        match (self.w, column_type) {
            (Warehouse::Bigquery, ColumnType::Json) => {
                format!("PARSE_JSON({column}, wide_number_mode => 'round')")
            }
            (Warehouse::Snowflake, ColumnType::Json) => format!("PARSE_JSON({column})"),
            _ => column,
        }
    }

    fn values(&self, def: &TableDef, prefix: &str) -> String {
        def.columns
            .iter()
            .map(|c| self.value(&c.name, c.column_type, prefix))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// DuckDB's list of a table's files.
    fn duckdb_list(&self, part: &Part) -> String {
        let files: Vec<String> = part
            .files
            .iter()
            .map(|f| literal(&self.base.locate(f)))
            .collect();
        format!("[{}]", files.join(", "))
    }

    /// DuckDB's reader of a table's files, with `more` options.
    fn duckdb_read(&self, part: &Part, more: &str) -> String {
        let list = self.duckdb_list(part);
        match part.format {
            Format::Parquet => format!("read_parquet({list}{more})"),
            // Every cell as text, cast by the INSERT into the column's type: no guessing.
            Format::Csv => format!(
                "read_csv({list}, header = true, all_varchar = true, parallel = false{more})"
            ),
        }
    }

    /// The statements that fill `table` (a target or a staging table) with a part's files.
    fn copy_files(&self, out: &mut String, part: &Part, table: &str) {
        if part.files.is_empty() {
            return;
        }
        match self.w {
            Warehouse::Duckdb => {
                let _ = writeln!(
                    out,
                    "INSERT INTO {table} ({cols}) SELECT {cols} FROM {};",
                    self.duckdb_read(part, ""),
                    cols = self.columns(&part.def, "")
                );
            }
            Warehouse::Postgres => {
                for file in &part.files {
                    let _ = writeln!(
                        out,
                        "\\copy {table} ({}) FROM {} WITH (FORMAT csv, HEADER)",
                        self.columns(&part.def, ""),
                        literal(&self.base.locate(file))
                    );
                }
            }
            Warehouse::Bigquery => {
                let uris: Vec<String> = part
                    .files
                    .iter()
                    .map(|f| literal(&self.base.locate(f)))
                    .collect();
                let format = match part.format {
                    Format::Parquet => "format = 'PARQUET'".to_string(),
                    Format::Csv => "format = 'CSV', skip_leading_rows = 1".to_string(),
                };
                let _ = writeln!(
                    out,
                    "LOAD DATA INTO {table} FROM FILES ({format}, uris = [{}]);",
                    uris.join(", ")
                );
            }
            Warehouse::Snowflake => {
                let format = match part.format {
                    Format::Parquet => {
                        "FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
                    }
                    Format::Csv => {
                        "FILE_FORMAT = (TYPE = CSV PARSE_HEADER = TRUE FIELD_OPTIONALLY_ENCLOSED_BY = '\"') MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
                    }
                };
                for chunk in part.files.chunks(FILES_PER_STATEMENT) {
                    let files: Vec<String> = chunk.iter().map(|f| literal(f)).collect();
                    let _ = writeln!(
                        out,
                        "COPY INTO {table} FROM @{} FILES = ({}) {format};",
                        self.options.stage,
                        files.join(", ")
                    );
                }
            }
            Warehouse::Redshift => {
                let role = if self.options.iam_role == DEFAULT_IAM_ROLE {
                    DEFAULT_IAM_ROLE.to_string()
                } else {
                    literal(&self.options.iam_role)
                };
                let format = match part.format {
                    Format::Parquet => "FORMAT AS PARQUET",
                    Format::Csv => "FORMAT AS CSV IGNOREHEADER 1 TIMEFORMAT 'auto' EMPTYASNULL",
                };
                for file in &part.files {
                    let _ = writeln!(
                        out,
                        "COPY {table} FROM {} IAM_ROLE {role} {format};",
                        literal(&self.base.locate(file))
                    );
                }
            }
            Warehouse::Databricks => {
                let format = match part.format {
                    Format::Parquet => "FILEFORMAT = PARQUET",
                    Format::Csv => "FILEFORMAT = CSV",
                };
                let options = match part.format {
                    Format::Parquet => "",
                    Format::Csv => " FORMAT_OPTIONS ('header' = 'true')",
                };
                for chunk in part.files.chunks(FILES_PER_STATEMENT) {
                    let files: Vec<String> = chunk.iter().map(|f| literal(f)).collect();
                    let _ = writeln!(
                        out,
                        "COPY INTO {table} FROM {} {format} FILES = ({}){options};",
                        literal(&self.base.root()),
                        files.join(", ")
                    );
                }
            }
        }
    }

    /// A table appended straight from its files.
    fn load_direct(&self, out: &mut String, part: &Part) {
        self.copy_files(out, part, &self.target(part.name()));
        out.push('\n');
    }

    /// A staging table created and filled (DuckDB's and PostgreSQL's with each row's place
    /// in the files, for the last-row rule).
    fn stage(&self, out: &mut String, part: &Part) {
        let stage = self.stage_ref(part.name());
        let _ = writeln!(out, "DROP TABLE IF EXISTS {stage};");
        match self.w {
            Warehouse::Duckdb if part.files.is_empty() => {
                out.push_str(&self.create(&staging_def(&part.def), true));
                let _ = writeln!(out, "ALTER TABLE {stage} ADD COLUMN zephr_etl_row BIGINT;");
            }
            Warehouse::Duckdb => {
                // The row's place: its file's in the manifest's order, then its row number.
                let row = match part.format {
                    Format::Parquet => "file_row_number",
                    Format::Csv => "row_number() OVER ()",
                };
                let _ = writeln!(
                    out,
                    "CREATE TEMP TABLE {stage} AS SELECT {cols}, \
                     list_position({list}, filename) * 4294967296 + {row} AS zephr_etl_row \
                     FROM {read};",
                    cols = self.columns(&part.def, ""),
                    list = self.duckdb_list(part),
                    read = self.duckdb_read(
                        part,
                        match part.format {
                            Format::Parquet => ", filename = true, file_row_number = true",
                            Format::Csv => ", filename = true",
                        }
                    ),
                );
            }
            Warehouse::Postgres => {
                let _ = writeln!(
                    out,
                    "CREATE TEMP TABLE {stage} (LIKE {});",
                    self.target(part.name())
                );
                // COPY fills the identity in file order, across the files in manifest order.
                let _ = writeln!(
                    out,
                    "ALTER TABLE {stage} ADD COLUMN zephr_etl_row bigint GENERATED ALWAYS AS IDENTITY;"
                );
                self.copy_files(out, part, &stage);
            }
            _ => {
                out.push_str(&self.create(&staging_def(&part.def), true));
                self.copy_files(out, part, &stage);
            }
        }
        out.push('\n');
    }

    /// Every staged row into the target.
    fn insert_all(&self, out: &mut String, part: &Part) {
        let _ = writeln!(
            out,
            "INSERT INTO {} ({}) SELECT {} FROM {};\n",
            self.target(part.name()),
            self.columns(&part.def, ""),
            self.values(&part.def, ""),
            self.stage_ref(part.name())
        );
    }

    /// The run's users, one row each (the last), as a subquery named `latest`.
    fn latest_users(&self, part: &Part) -> String {
        let order = match self.w {
            Warehouse::Duckdb | Warehouse::Postgres => "zephr_etl_row".to_string(),
            _ => self.d.identifier("seq_no"),
        };
        let user_id = self.d.identifier("user_id");
        format!(
            "(SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {user_id} \
             ORDER BY {order} DESC) AS zephr_etl_last FROM {stage}) AS ranked \
             WHERE zephr_etl_last = 1)",
            cols = self.columns(&part.def, ""),
            stage = self.stage_ref(part.name()),
        )
    }

    /// The run's users upserted on `user_id`.
    fn upsert_users(&self, out: &mut String, part: &Part) {
        let target = self.target("users");
        let user_id = self.d.identifier("user_id");
        let latest = self.latest_users(part);
        match self.w {
            Warehouse::Duckdb | Warehouse::Redshift => {
                let _ = writeln!(
                    out,
                    "DELETE FROM {target} WHERE {user_id} IN (SELECT {user_id} FROM {});",
                    self.stage_ref("users")
                );
                let _ = writeln!(
                    out,
                    "INSERT INTO {target} ({cols}) SELECT {cols} FROM {latest} AS latest;\n",
                    cols = self.columns(&part.def, ""),
                );
            }
            _ => {
                let set: Vec<String> = part
                    .def
                    .columns
                    .iter()
                    .filter(|c| c.name != "user_id")
                    .map(|c| {
                        format!(
                            "{} = {}",
                            self.d.identifier(&c.name),
                            self.value(&c.name, c.column_type, "latest.")
                        )
                    })
                    .collect();
                let into = if self.w == Warehouse::Bigquery {
                    ""
                } else {
                    "INTO "
                };
                let _ = writeln!(
                    out,
                    "MERGE {into}{target} AS live USING {latest} AS latest \
                     ON live.{user_id} = latest.{user_id}\n  \
                     WHEN MATCHED THEN UPDATE SET {}\n  \
                     WHEN NOT MATCHED THEN INSERT ({}) VALUES ({});\n",
                    set.join(", "),
                    self.columns(&part.def, ""),
                    self.values(&part.def, "latest."),
                );
            }
        }
    }

    /// A full export's `--delete-missing`: the rows of users the run does not have go.
    fn delete_missing(&self, out: &mut String, part: &Part) {
        let user_id = self.d.identifier("user_id");
        let _ = writeln!(
            out,
            "DELETE FROM {} WHERE {user_id} NOT IN (SELECT {user_id} FROM {});",
            self.target(part.name()),
            self.stage_ref("users")
        );
    }

    /// The run's users' rows of a table deleted, then the run's rows inserted.
    fn replace_rows(&self, out: &mut String, part: &Part) {
        let user_id = self.d.identifier("user_id");
        let _ = writeln!(
            out,
            "DELETE FROM {} WHERE {user_id} IN (SELECT {user_id} FROM {});",
            self.target(part.name()),
            self.stage_ref("users")
        );
        self.insert_all(out, part);
    }
}

/// A staging table's definition: the target's columns under the staging name.
fn staging_def(def: &TableDef) -> TableDef {
    let mut def = def.clone();
    def.table = stage_name(&def.table);
    def
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ManifestColumn, ManifestFile, ManifestTable};
    use crate::schema::Table;

    fn manifest() -> Manifest {
        let mut m = Manifest::new("r1".into(), serde_json::json!({}), Default::default());
        for table in [Table::Users, Table::Grants] {
            let def = table.def();
            let columns = def
                .columns
                .iter()
                .map(|c| ManifestColumn {
                    name: c.name.clone(),
                    column_type: serde_json::to_value(c.column_type)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .into(),
                    source_name: None,
                })
                .collect();
            m.tables.insert(
                def.table.clone(),
                ManifestTable {
                    rows: 1,
                    nul_replaced: None,
                    columns,
                },
            );
            for format in ["csv", "parquet"] {
                m.files.push(ManifestFile {
                    path: format!("{}.{format}", def.table),
                    table: def.table.clone(),
                    format: format.into(),
                    rows: 1,
                    bytes: 1,
                    sha256: String::new(),
                });
            }
        }
        m
    }

    #[test]
    fn cloud_warehouses_refuse_a_local_folder_and_redshift_other_clouds() {
        let local = Base::Local("/data/run".into());
        for w in [
            Warehouse::Bigquery,
            Warehouse::Redshift,
            Warehouse::Databricks,
        ] {
            assert!(matches!(
                script(&manifest(), &local, &Options::new(w)),
                Err(LoadSqlError::LocalFiles { .. })
            ));
        }
        let gs = Base::Bucket("gs://b/run".into());
        assert_eq!(
            script(&manifest(), &gs, &Options::new(Warehouse::Redshift)),
            Err(LoadSqlError::NotS3 {
                url: "gs://b/run".into()
            })
        );
        let sql = script(&manifest(), &local, &Options::new(Warehouse::Snowflake)).unwrap();
        assert!(
            sql.contains("--   PUT file:///data/run/* @zephr/ AUTO_COMPRESS"),
            "{sql}"
        );
    }

    #[test]
    fn no_comment_holds_a_semicolon() {
        let s3 = Base::Bucket("s3://b/run".into());
        for w in Warehouse::ALL {
            for merge in [false, true] {
                let mut options = Options::new(w);
                options.merge = merge;
                options.schema = Some("s".into());
                let sql = script(&manifest(), &s3, &options).unwrap();
                for line in sql.lines().filter(|l| l.starts_with("--")) {
                    assert!(!line.contains(';'), "{}: {line}", w.name());
                }
            }
        }
    }

    #[test]
    fn postgres_copies_the_csv_and_refuses_a_run_without() {
        let local = Base::Local("/data/run".into());
        let sql = script(&manifest(), &local, &Options::new(Warehouse::Postgres)).unwrap();
        assert!(sql.contains("\\copy \"users\" (\"user_id\", "), "{sql}");
        assert!(
            sql.contains(") FROM '/data/run/users.csv' WITH (FORMAT csv, HEADER)\n"),
            "{sql}"
        );
        let mut m = manifest();
        m.files.retain(|f| f.format == "parquet");
        assert_eq!(
            script(&m, &local, &Options::new(Warehouse::Postgres)),
            Err(LoadSqlError::NoCsv {
                table: "users".into()
            })
        );
    }
}
