//! The `users` extension of a run from the flags: `--hash-pii`'s key and `--wide-attributes`'
//! columns (from `--user-schema`, the API's user schema, or a first pass over the inputs).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use zephr_etl::extension::UsersExtension;
use zephr_etl::pii::PiiKey;
use zephr_etl::progress::Progress;
use zephr_etl::schema::Table;
use zephr_etl::source::framer::FramerOptions;
use zephr_etl::source::{InputSpec, open_input};
use zephr_etl::wide::{self, MAX_DISCOVERED_KEYS, SchemaField, WideColumns, WideError};

use super::UsageError;
use crate::cli::OutputArgs;

/// What the flags ask of the users table, checked before any work starts.
pub struct UsersPlan {
    pub pii: Option<PiiKey>,
    /// `--user-schema`'s fields, when given.
    pub schema: Option<Vec<SchemaField>>,
    pub wide: bool,
}

impl UsersPlan {
    /// Reads the key and the user schema; both problems are usage errors (exit 2).
    pub fn check(args: &OutputArgs) -> anyhow::Result<UsersPlan> {
        let pii = if args.hash_pii {
            Some(PiiKey::from_env().map_err(|e| UsageError(e.message_for("--hash-pii")))?)
        } else {
            None
        };
        let schema = match &args.user_schema {
            Some(path) => Some(read_user_schema(path)?),
            None => None,
        };
        Ok(UsersPlan {
            pii,
            schema,
            wide: args.wide_attributes,
        })
    }

    /// Whether the columns still have to be found (no `--user-schema`).
    pub fn needs_columns(&self) -> bool {
        self.wide && self.schema.is_none()
    }

    /// The extension with these wide columns (`None` when no flag asks for one).
    pub fn build(self, discovered: Option<WideColumns>) -> Option<&'static UsersExtension> {
        let base = Table::Users.def().column_names();
        let wide = match (self.wide, self.schema) {
            (false, _) => None,
            (true, Some(fields)) => Some(WideColumns::from_schema(&fields, &base)),
            (true, None) => discovered,
        };
        if wide.is_none() && self.pii.is_none() {
            return None;
        }
        Some(UsersExtension::new(wide, self.pii).leak())
    }
}

/// Reads and parses a user schema file.
pub fn read_user_schema(path: &Path) -> anyhow::Result<Vec<SchemaField>> {
    let bytes = std::fs::read(path).map_err(|e| {
        UsageError(format!(
            "--user-schema {}: cannot read: {e}",
            path.display()
        ))
    })?;
    wide::parse_user_schema(&bytes, &path.display().to_string())
        .map_err(|e| UsageError(flag_text(&e)).into())
}

/// The library's wide-columns error as the CLI says it, naming the flag that fixes it.
fn flag_text(e: &WideError) -> String {
    match e {
        WideError::Schema { name, problem } => format!("--user-schema {name}: {problem}"),
        WideError::TooManyKeys => format!(
            "more than {MAX_DISCOVERED_KEYS} distinct attribute keys in the input; pass \
             --user-schema FILE to choose the columns"
        ),
        WideError::Input(e) => e.to_string(),
    }
}

/// [`flag_text`] as an error; input errors stay typed.
pub fn wide_error(e: WideError) -> anyhow::Error {
    match e {
        WideError::Input(_) => e.into(),
        other => anyhow::anyhow!(flag_text(&other)),
    }
}

/// Refuses inputs that cannot be read twice, for the first pass of `--wide-attributes`.
pub fn check_rereadable(inputs: &[InputSpec]) -> anyhow::Result<()> {
    for input in inputs {
        let readable_twice = match input {
            InputSpec::Stdin => false,
            InputSpec::Object(_) => true,
            InputSpec::Path(path) => std::fs::metadata(path).map_or(true, |m| m.is_file()),
        };
        if !readable_twice {
            return Err(UsageError(format!(
                "--wide-attributes without --user-schema reads the input twice (once to find \
                 the attribute keys), and {} can be read only once; save it to a file first, \
                 or pass --user-schema FILE (the JSON array GET /v3/schema/users returns)",
                input.display_name()
            ))
            .into());
        }
    }
    Ok(())
}

/// The first pass: string columns for every attribute key of `inputs`.
pub fn discover(
    inputs: &[InputSpec],
    framer: FramerOptions,
    threads: usize,
    progress: &Progress,
) -> anyhow::Result<WideColumns> {
    progress.phase("Finding attribute keys (first pass)...");
    let counter = Arc::new(AtomicU64::new(0));
    let mut sources = Vec::new();
    for spec in inputs {
        sources.push((spec.display_name(), open_input(spec, counter.clone())?));
    }
    // The first pass decodes on as many threads as the run itself (--threads).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("cannot start worker threads")?;
    let keys = pool
        .install(|| wide::discover_keys(sources, framer))
        .map_err(wide_error)
        .context("--wide-attributes")?;
    let base = Table::Users.def().column_names();
    Ok(WideColumns::from_keys(keys, &base))
}

/// Says how many values did not fit their wide column.
pub fn report_mismatches(progress: &Progress, ext: Option<&UsersExtension>) {
    if let Some(warning) = ext.and_then(|e| e.wide.as_ref()?.mismatch_warning()) {
        progress.line(&warning);
    }
}
