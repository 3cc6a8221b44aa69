//! `--state-file F`: when the last successful fetch started, so the next one can ask only
//! for users updated since (`--since` wins when given).
//!
//! The time recorded is the *start* of the run (of its first attempt, for a resumed fetch):
//! a user updated while the export was being read may or may not be in it, so the next run
//! must ask again from there. It is written atomically (a temporary file in the same folder,
//! fsync, rename) and only once the tables are in place, so a failed run never moves it on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file's layout version.
pub(crate) const STATE_FILE_VERSION: u32 = 1;

/// What the state file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// `STATE_FILE_VERSION`.
    pub version: u32,
    /// The tenant the run fetched: a state file belongs to one tenant.
    pub tenant: String,
    /// When the last successful run started, ISO-8601 UTC (`2024-05-01T12:00:00Z`).
    pub last_success_started_at: String,
}

/// The state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading or writing failed.
    #[error("cannot use state file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds something else.
    #[error(
        "state file {} is not one zephr-etl wrote ({problem}); fix or delete it",
        path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The file is another tenant's.
    #[error(
        "state file {} belongs to tenant {found:?}, not {expected:?}; use one state file per tenant",
        path.display()
    )]
    OtherTenant {
        /// The file.
        path: PathBuf,
        /// The tenant in the file.
        found: String,
        /// This run's tenant.
        expected: String,
    },
}

/// Reads the state file of `tenant`; `None` when it does not exist yet (the first run).
pub fn read(path: &Path, tenant: &str) -> Result<Option<RunState>, StateFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let invalid = |problem: String| StateFileError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let state: RunState = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if state.version != STATE_FILE_VERSION {
        return Err(invalid(format!("version {}", state.version)));
    }
    if !zephr_api::query::is_iso8601(&state.last_success_started_at) {
        return Err(invalid(format!(
            "last_success_started_at {:?} is not an ISO-8601 time",
            state.last_success_started_at
        )));
    }
    if state.tenant != tenant {
        return Err(StateFileError::OtherTenant {
            path: path.to_path_buf(),
            found: state.tenant,
            expected: tenant.to_owned(),
        });
    }
    Ok(Some(state))
}

/// Records that a run for `tenant` that started at `started_at` succeeded.
pub fn record(path: &Path, tenant: &str, started_at: &str) -> Result<(), StateFileError> {
    let state = RunState {
        version: STATE_FILE_VERSION,
        tenant: tenant.to_owned(),
        last_success_started_at: started_at.to_owned(),
    };
    write(path, &state)
}

/// Replaces the state file atomically.
pub fn write(path: &Path, state: &RunState) -> Result<(), StateFileError> {
    let io_error = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_error)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let mut text = serde_json::to_string_pretty(state).unwrap_or_default();
    text.push('\n');
    zephr_dest::local::write_atomic(path, text.as_bytes(), &format!(".{name}.zephr-etl-tmp-"))
        .map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        assert_eq!(read(&path, "acme").unwrap(), None);
        let state = RunState {
            version: STATE_FILE_VERSION,
            tenant: "acme".into(),
            last_success_started_at: "2024-05-01T12:00:00Z".into(),
        };
        write(&path, &state).unwrap();
        assert_eq!(read(&path, "acme").unwrap(), Some(state));
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        let e = read(&path, "other").unwrap_err().to_string();
        assert!(
            e.contains("belongs to tenant \"acme\", not \"other\""),
            "{e}"
        );
        std::fs::write(&path, "{}").unwrap();
        let e = read(&path, "acme").unwrap_err().to_string();
        assert!(e.contains("is not one zephr-etl wrote"), "{e}");
    }
}
