//! The `users` extension of a run from the flags: `--hash-pii`'s key and `--wide-attributes`'
//! columns (from `--user-schema`, the API's user schema, or a first pass over the inputs,
//! all in `zephr_engine::wide`), with the library's errors in the flags' words.

use std::path::Path;
use std::sync::Arc;

use crate::progress::Progress;
use zephr_core::flatten::users::UsersExtension;
use zephr_core::flatten::wide_columns::{SchemaField, WideColumns};
use zephr_core::pii::PiiKey;
use zephr_engine::export::Export;
use zephr_engine::wide::{self, MAX_DISCOVERED_KEYS, WideError};

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

    /// Gives `export` the users table the flags ask for. When the wide columns still have to
    /// be found, `find` finds them, and the manifest records where from (`from`).
    pub fn apply(
        self,
        export: &mut Export,
        from: &str,
        find: impl FnOnce() -> anyhow::Result<WideColumns>,
    ) -> anyhow::Result<()> {
        let found = if self.needs_columns() {
            export.set_parameter("wide_columns_from", serde_json::json!(from));
            Some(find()?)
        } else {
            None
        };
        if let Some(ext) = self.build(found) {
            export.set_users(ext);
        }
        Ok(())
    }

    /// The extension with these wide columns (`None` when no flag asks for one).
    pub fn build(self, found: Option<WideColumns>) -> Option<Arc<UsersExtension>> {
        let wide = match (self.wide, self.schema) {
            (false, _) => None,
            (true, Some(fields)) => Some(wide::schema_columns(&fields)),
            (true, None) => found,
        };
        if wide.is_none() && self.pii.is_none() {
            return None;
        }
        Some(Arc::new(UsersExtension::new(wide, self.pii)))
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
    wide::parse_user_schema(&bytes, &path.display().to_string()).map_err(wide_error)
}

/// The library's wide-columns error as the CLI says it, naming the flag that fixes it; the
/// problems with the arguments are usage errors (exit 2).
pub fn wide_error(e: WideError) -> anyhow::Error {
    let usage = |text: String| anyhow::Error::new(UsageError(text));
    match e {
        WideError::Schema { name, problem } => usage(format!("--user-schema {name}: {problem}")),
        WideError::ReadOnce { input } => usage(format!(
            "--wide-attributes without --user-schema reads the input twice (once to find the \
             attribute keys), and {input} can be read only once; save it to a file first, or \
             pass --user-schema FILE (the JSON array GET /v3/schema/users returns)"
        )),
        WideError::TooManyKeys => anyhow::anyhow!(
            "--wide-attributes: more than {MAX_DISCOVERED_KEYS} distinct attribute keys in the \
             input; pass --user-schema FILE to choose the columns"
        ),
        WideError::Download(source) => anyhow::Error::new(source).context(format!(
            "--wide-attributes: cannot download the user schema (GET {}); pass --user-schema \
             FILE instead",
            wide::USER_SCHEMA_PATH
        )),
        // A located input error says all; the run itself would stop at it too.
        WideError::Input(_) => anyhow::Error::new(e),
        WideError::Threads(_) => anyhow::Error::new(e).context("--wide-attributes"),
    }
}

/// Says how many values did not fit their wide column.
pub fn report_mismatches(progress: &Progress, ext: Option<&UsersExtension>) {
    if let Some(warning) = ext.and_then(|e| e.wide.as_ref()?.mismatch_warning()) {
        progress.line(&warning);
    }
}
