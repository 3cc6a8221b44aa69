//! Command-line arguments: what was asked, nothing opened yet.
//!
//! clap fills these plain structs; `commands/` turns them into a configuration that opens
//! files and connections. Usage errors exit with status 2 before any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Stream Zephr user exports into typed users, grants and attributes tables (CSV and Parquet).
#[derive(Debug, Parser)]
#[command(name = "zephr-etl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Print no progress or summary on stderr (errors are still printed).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert saved exports (files or `-` for stdin) into tables.
    Convert(ConvertArgs),
    /// Fetch an export live from the Zephr Admin API and convert it.
    Fetch(Box<FetchArgs>),
    /// Print the output tables' columns and types.
    Schema(SchemaArgs),
    /// Write a synthetic export on stdout (for examples, tests and benchmarks).
    Generate(GenerateArgs),
    /// Print the SQL that loads a run's files into a warehouse (creates the tables when
    /// missing, loads the files its manifest lists; with --merge keeps current-state tables).
    LoadSql(LoadSqlArgs),
    /// Summarise an export without writing tables: counts, attribute keys, products, dates.
    Inspect(InspectArgs),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(CompletionsArgs),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Csv,
    Parquet,
    /// Excel workbooks (TABLE.xlsx): typed cells, nothing for a spreadsheet to guess.
    Xlsx,
    /// Delta Lake tables DIR/users, DIR/grants, DIR/attributes (and DIR/state_events), kept
    /// run after run with --merge or --overwrite (alone: not with other formats).
    Delta,
}

/// What to do with an item that cannot be mapped faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    /// Stop at the first bad item (exit 1).
    Fail,
    /// Leave bad items out of the tables and write them to DIR/rejects.ndjson.
    Skip,
}

/// Parquet compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    Zstd,
    Snappy,
    None,
}

/// CSV flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CsvDialectArg {
    /// RFC 4180, `\n` line ends, data exactly as it is (for machines).
    Plain,
    /// For Excel's own CSV import: byte-order mark, CRLF, formula guard, files of at most
    /// 1,048,576 rows (the spreadsheet still guesses types: --format xlsx keeps them).
    Excel,
    /// For PostgreSQL's COPY ... (FORMAT csv, HEADER): plain, with NUL characters replaced
    /// by U+FFFD (the changed cells are counted).
    Postgres,
}

/// Options shared by every command that writes tables.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Directory that receives the tables (created if missing), or an object-store prefix:
    /// s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX (credentials from the
    /// cloud's standard environment variables), or a PostgreSQL database:
    /// postgresql://USER@HOST:PORT/DB?schema=S (password from PGPASSWORD or ~/.pgpass).
    #[arg(short = 'o', long = "output", value_name = "DIR|URL")]
    pub output: PathBuf,
    /// Formats to write.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "csv,parquet")]
    pub format: Vec<FormatArg>,
    /// Replace the dataset DIR holds, whole (files of it this run does not write are removed);
    /// with -o postgresql://..., every row of the tables.
    #[arg(long)]
    pub overwrite: bool,
    /// Keep current-state tables (--format delta, or -o postgresql://...): the run's users
    /// replace the same users' rows in every table (users upserted on user_id, their grants
    /// and attributes replaced; the last item of a user_id repeated in the run wins); other
    /// users keep theirs; state events are appended (Delta).
    #[arg(long, conflicts_with = "overwrite")]
    pub merge: bool,
    /// With --merge, for a full export: users absent from the run are removed with their
    /// grants and attributes (fetch: not with --since, a registration window or --state-file).
    #[arg(long, requires = "merge")]
    pub delete_missing: bool,
    /// With an object-store -o: how long one failing store request (5xx, throttling, a
    /// timeout, a dropped connection) is retried, with backoff, before the run fails.
    #[arg(long, value_name = "SECS", default_value_t = zephr_store::store::DEFAULT_RETRY_SECS)]
    pub store_retry_secs: u64,
    /// What to do with a bad item.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnErrorArg,
    /// With --on-error skip: stop (exit 1, no output) once this many items were rejected.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_errors: Option<u64>,
    /// An item larger than this many bytes is a bad item, never held in memory whole.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_item_bytes: usize,
    /// Worker threads (default: all cores). 1 runs every stage in turn on one core; more
    /// run the reader, that many flattening workers and a writer per table side by side.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Items per batch handed to a worker.
    #[arg(long, value_name = "N", default_value_t = zephr_core::source::framer::DEFAULT_BATCH_ITEMS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Bytes read from the input at a time.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer_size: u32,
    /// Parquet compression codec.
    #[arg(long, value_enum, default_value = "zstd")]
    pub compression: CompressionArg,
    /// zstd level for Parquet (-7 fastest … 22 smallest).
    #[arg(long, value_name = "N", default_value_t = 1, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-7..=22))]
    pub zstd_level: i32,
    /// Rows per Parquet row group at most.
    #[arg(long, value_name = "N", default_value_t = 122_880, value_parser = clap::value_parser!(u32).range(1..))]
    pub row_group_size: u32,
    /// CSV flavour: `plain` (RFC 4180, unchanged data), `excel` (byte-order mark, CRLF,
    /// text cells starting with = + - @ tab or CR prefixed with ', tables longer than a
    /// worksheet split into TABLE.csv, TABLE-00002.csv, ...) or `postgres` (plain, NUL
    /// replaced by U+FFFD so that COPY ... (FORMAT csv, HEADER) loads every table).
    /// `excel` is for Excel's own CSV import; it does not make a spreadsheet keep values
    /// (LibreOffice still drops ids' leading zeros and 16th digits, keeps ISO timestamps as
    /// text and the guard's ' in values such as '-1.50): for spreadsheets use --format xlsx.
    #[arg(long, value_enum, default_value = "plain", value_name = "DIALECT")]
    pub csv_dialect: CsvDialectArg,
    /// Rows per worksheet with --csv-dialect excel, header included (Excel's limit).
    #[arg(long, value_name = "N", default_value_t = zephr_sink::csv::EXCEL_MAX_DATA_ROWS + 1, hide = true,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub excel_max_rows: u64,
    /// Rows per worksheet of --format xlsx, header included (Excel's limit; lower for tests).
    #[arg(long, value_name = "N", default_value_t = zephr_sink::xlsx::EXCEL_MAX_ROWS, hide = true,
          value_parser = clap::value_parser!(u32).range(2..=zephr_sink::xlsx::EXCEL_MAX_ROWS as i64))]
    pub xlsx_max_rows: u32,
    /// Write each table and format as a folder of part files of at most N rows
    /// (parquet/users/part-00000.parquet, csv/users/part-00000.csv, ...).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows_per_file: Option<u64>,
    /// Accepted for older scripts: every run writes manifest.json now.
    #[arg(long, hide = true)]
    pub manifest: bool,
    /// Replace email_address and username by the hex HMAC-SHA256 of the trimmed, lowercased
    /// value, keyed by the environment variable ZEPHR_ETL_PII_KEY.
    #[arg(long)]
    pub hash_pii: bool,
    /// Add one users column per attribute key (attr_KEY), typed by --user-schema (`fetch`
    /// downloads the tenant's when none is given); without one, `convert` reads its inputs
    /// twice to find the keys (string columns).
    #[arg(long)]
    pub wide_attributes: bool,
    /// Zephr's user schema (the JSON array GET /v3/schema/users returns) for
    /// --wide-attributes: its fields are the columns and their input types the column types.
    #[arg(long, value_name = "FILE", requires = "wide_attributes")]
    pub user_schema: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Export files (JSON array, paginated envelope or NDJSON; gzip or zstd welcome); `-` is stdin.
    /// Several inputs are read as one export.
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Also convert a saved state-events file (CSV, JSON array or NDJSON) into state_events.*.
    #[arg(long, value_name = "FILE")]
    pub state_events: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Credentials: the access key comes from ZEPHR_ACCESS_KEY, the secret key from \
ZEPHR_SECRET_KEY or --secret-key-file; neither is ever printed."
)]
pub struct FetchArgs {
    /// The Zephr tenant (the API is https://TENANT.api.zephr.com unless --base-url says otherwise).
    #[arg(long)]
    pub tenant: String,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Include each user's grants.
    #[arg(long)]
    pub grants: bool,
    /// Include each user's attributes.
    #[arg(long)]
    pub attributes: bool,
    /// Extended-profile app ids to include (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub app_ids: Vec<String>,
    /// Only users with a matching extended profile.
    #[arg(long)]
    pub app_ids_restrictive: bool,
    /// Only users updated after this time (ISO-8601).
    #[arg(long, value_name = "TS")]
    pub since: Option<String>,
    /// Only users registered at or after this time (ISO-8601).
    #[arg(long, value_name = "TS")]
    pub registered_since: Option<String>,
    /// Only users registered before this time (ISO-8601).
    #[arg(long, value_name = "TS")]
    pub registered_before: Option<String>,
    /// Results per page (Zephr's default is 500); also used for state events.
    #[arg(long, value_name = "N")]
    pub rpp: Option<u32>,
    /// Ask for the whole export as one array instead of page by page.
    #[arg(long)]
    pub no_paginate: bool,
    /// Pages fetched at once (tables keep page order).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Retries of a failed request (429, 5xx, dropped, stalled or truncated responses).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Longest silence in seconds while connecting, waiting for a response or between reads
    /// of its body; a request that times out is retried like a dropped connection.
    #[arg(long, value_name = "SECS", default_value_t = zephr_api::client::DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// Continue an interrupted fetch into the same DIR with the same arguments.
    #[arg(long, conflicts_with = "no_paginate")]
    pub resume: bool,
    /// Local folder that keeps a paginated fetch's pages for --resume (default: DIR's hidden
    /// .zephr-etl-fetch for a folder; for a bucket, a folder named after it in the user's
    /// cache directory, else the temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Remember the time of the last successful run here and use it as --since next time.
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Also export state events (needs --events-from and --events-to).
    #[arg(long, requires_all = ["events_from", "events_to"])]
    pub state_events: bool,
    /// Start of the state-events window (ISO-8601).
    #[arg(long, value_name = "TS")]
    pub events_from: Option<String>,
    /// End of the state-events window (ISO-8601).
    #[arg(long, value_name = "TS")]
    pub events_to: Option<String>,
    /// Also keep the user export's response bodies, as received, in this file (page by page:
    /// one body per line; with --no-paginate: the single array). Written once the tables are in place.
    #[arg(long, value_name = "FILE")]
    pub save_raw: Option<PathBuf>,
    /// API root instead of https://TENANT.api.zephr.com (a proxy, or a local test server).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Read the secret key from this file instead of ZEPHR_SECRET_KEY.
    #[arg(long, value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Backoff before the first retry is random up to this many milliseconds, doubling after.
    #[arg(long, value_name = "MS", default_value_t = 500, hide = true)]
    pub retry_base_ms: u64,
    /// Longest wait before a retry, `Retry-After` included, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000, hide = true)]
    pub retry_max_ms: u64,
    /// Close a resumable segment (see --resume) after this many pages; no limit by default.
    #[arg(long, value_name = "N", hide = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub segment_pages: Option<u32>,
    /// Close a resumable segment once its pages reach this many bytes of response bodies.
    #[arg(long, value_name = "BYTES", default_value_t = 1_000_000_000, hide = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub segment_bytes: u64,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// One table (users, grants, attributes, state_events); all when omitted.
    #[arg(value_name = "TABLE")]
    pub table: Option<String>,
    /// Print the schema files' JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show users as --wide-attributes makes it with this user schema (the JSON array that
    /// GET /v3/schema/users returns).
    #[arg(long, value_name = "FILE")]
    pub user_schema: Option<PathBuf>,
    /// Print load-ready definitions for this engine: CREATE TABLE statements, or for
    /// bigquery the JSON field list `bq load --schema` takes (one table per call).
    #[arg(long, value_enum, value_name = "ENGINE", conflicts_with = "json")]
    pub dialect: Option<DialectArg>,
    /// Describe exactly the tables of a run's manifest.json (the file, or the run's folder
    /// or object-store prefix), with its columns and types: a wide run's users, state_events.
    #[arg(long, value_name = "MANIFEST", conflicts_with = "user_schema")]
    pub manifest: Option<String>,
    /// Keep extra as text instead of the engine's JSON type (postgres json, duckdb and
    /// bigquery JSON, snowflake VARIANT).
    #[arg(long, requires = "dialect")]
    pub json_as_text: bool,
}

/// Engines `schema --dialect` writes definitions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DialectArg {
    Postgres,
    Duckdb,
    Bigquery,
    Snowflake,
    Redshift,
    Spark,
}

#[derive(Debug, Args)]
pub struct LoadSqlArgs {
    /// The run: its manifest.json, the run's folder, or its bucket URL (the manifest's key or
    /// the run's prefix, as in s3://bucket/nightly/).
    #[arg(value_name = "MANIFEST")]
    pub manifest: String,
    /// The warehouse the statements are for. bigquery, redshift and databricks read the files
    /// from a bucket (redshift from S3 only); postgres loads the CSV with psql's \copy (write
    /// the run with --csv-dialect postgres); the others load the Parquet.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub dialect: WarehouseArg,
    /// Keep current-state tables: the run's users upserted on user_id (the last row of a
    /// repeated user_id wins), their grants and attributes replaced, other users kept,
    /// state_events appended; through staging tables, in one transaction where the warehouse
    /// has them. Without it the rows are appended: a second run of the script loads them twice.
    #[arg(long)]
    pub merge: bool,
    /// With --merge, for a full export (a fetch without --since or a registration window):
    /// users absent from the run are deleted with their grants and attributes.
    #[arg(long, requires = "merge")]
    pub delete_missing: bool,
    /// Qualify every table with this schema (BigQuery: dataset), created when missing.
    #[arg(long, value_name = "S")]
    pub schema: Option<String>,
    /// snowflake: the stage that holds the run's folder (a name, or name/path).
    #[arg(long, value_name = "NAME", default_value = zephr_core::load_sql::DEFAULT_STAGE)]
    pub stage: String,
    /// redshift: the IAM role COPY reads S3 with: default (the cluster's default role) or an ARN.
    #[arg(long, value_name = "ROLE", default_value = zephr_core::load_sql::DEFAULT_IAM_ROLE)]
    pub iam_role: String,
}

/// Warehouses `load-sql` writes statements for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WarehouseArg {
    Bigquery,
    Snowflake,
    Redshift,
    Databricks,
    Duckdb,
    Postgres,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Export files (any shape `convert` reads); `-` is stdin. Several are read as one export.
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Track at most this many distinct attribute keys, and as many distinct products and
    /// entitlement types; the report says when a list was capped.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_keys: u32,
    /// An item larger than this many bytes is refused instead of filling memory.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_item_bytes: usize,
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of users.
    #[arg(long, value_name = "N")]
    pub users: u64,
    /// Seed of the random generator; the same seed gives the same bytes.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Give users grants.
    #[arg(long)]
    pub grants: bool,
    /// Give users attributes.
    #[arg(long)]
    pub attributes: bool,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A count that must be at least 1, with a message that says so.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}
