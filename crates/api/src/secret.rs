//! Credentials for the Zephr Admin API, kept out of every output.
//!
//! SPEC section 2: keys come from the environment (`ZEPHR_ACCESS_KEY`, `ZEPHR_SECRET_KEY`) or
//! from a file, never from a flag value, and never appear in output, logs or error messages.
//! The secret lives in [`SecretKey`], whose `Debug` and `Display` print a mask, so a stray
//! `{:?}` of a config struct cannot leak it; `SecretKey::expose` is the one way to read it.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Environment variable holding the access key (the public half of the key pair).
pub(crate) const ACCESS_KEY_VAR: &str = "ZEPHR_ACCESS_KEY";
/// Environment variable holding the secret key.
pub const SECRET_KEY_VAR: &str = "ZEPHR_SECRET_KEY";

/// A secret key. Prints as `***`; its bytes are overwritten with zeros when dropped.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> SecretKey {
        SecretKey(secret.into())
    }

    /// The secret itself. Only the request signer should need this.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // Best effort: zero the buffer before the allocator gets it back. `black_box` keeps the
        // compiler from eliding the writes to memory that is about to be freed. Copies made by
        // earlier reallocations are out of reach, which is why the secret is built once.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// An Admin API key pair. `Debug` shows at most the first four characters of the access key.
#[derive(Clone)]
pub struct Credentials {
    /// The access key, sent in clear in the `Authorization` header.
    pub access_key: String,
    /// The secret key, only ever used to compute request signatures.
    pub secret: SecretKey,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SPEC section 2 keeps both keys out of output; a short prefix still tells key pairs
        // apart when debugging.
        let shown: String = if self.access_key.chars().count() > 8 {
            self.access_key.chars().take(4).chain(['…']).collect()
        } else {
            "***".to_owned()
        };
        f.debug_struct("Credentials")
            .field("access_key", &shown)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Why the credentials could not be loaded. No variant ever holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The access key variable is not set.
    #[error("{ACCESS_KEY_VAR} is not set: export the access key of a Zephr Admin API key pair")]
    MissingAccessKey,
    /// Neither the secret variable nor a secret key file was given.
    #[error("{SECRET_KEY_VAR} is not set and no secret key file was given")]
    MissingSecret,
    /// A variable is set but blank.
    #[error("{0} is set but empty")]
    EmptyVar(&'static str),
    /// A variable holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    /// The access key cannot go into an HTTP header.
    #[error(
        "{ACCESS_KEY_VAR} must be printable ASCII without ':' (it is sent in the Authorization header)"
    )]
    BadAccessKey,
    /// The secret key file could not be opened or read. The name is never repeated: it may
    /// be the secret itself, given where its file's name was expected (`dir/SECRET` fails
    /// with "not a directory", not only "no such file").
    #[error("{}", read_file_message(error))]
    ReadFile {
        /// The file named by `--secret-key-file` (for callers; never in the message).
        path: PathBuf,
        /// The underlying error (never the file's contents). Not a `source`: the message
        /// words it in the middle of its sentence, before the fix.
        error: std::io::Error,
    },
    /// The secret key file is far larger than any key (a wrong path, or a device).
    #[error("secret key file {} is larger than {MAX_SECRET_FILE} bytes", .0.display())]
    FileTooLarge(PathBuf),
    /// The secret key file holds nothing but whitespace.
    #[error("secret key file {} is empty", .0.display())]
    EmptyFile(PathBuf),
}

/// What went wrong with the secret key file, without its name, and what to do about it.
fn read_file_message(source: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let problem = match source.kind() {
        ErrorKind::NotFound => "there is no such file",
        ErrorKind::NotADirectory => "a part of its path before the last `/` is not a folder",
        ErrorKind::IsADirectory => "it is a folder, not a file",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::InvalidFilename => "the name is too long or not a valid file name",
        ErrorKind::InvalidData => "it is not UTF-8 text",
        _ => "",
    };
    let problem = if problem.is_empty() {
        source.to_string()
    } else {
        format!("{problem} ({source})")
    };
    format!(
        "cannot read the secret key file: {problem}; give the path of a readable file that \
         holds the secret, not the secret itself, or set {SECRET_KEY_VAR} instead (the path \
         is not repeated here in case it is the secret)"
    )
}

impl Credentials {
    /// Loads the key pair: the access key from `ZEPHR_ACCESS_KEY`, the secret from
    /// `secret_key_file` when given (its contents trimmed), else from `ZEPHR_SECRET_KEY`.
    ///
    /// A file, when given, wins over the variable: asking for one on the command line is the
    /// more explicit choice. Values are trimmed of surrounding whitespace, since a trailing
    /// newline from `echo` or an editor is never part of a key.
    pub fn from_env_or_file(
        secret_key_file: Option<&Path>,
    ) -> Result<Credentials, CredentialError> {
        Self::from_sources(|name| std::env::var_os(name), secret_key_file)
    }

    /// [`Credentials::from_env_or_file`] with the environment lookup passed in, so tests need
    /// not change the process environment (which is unsafe with threads around).
    pub(crate) fn from_sources(
        env: impl Fn(&str) -> Option<OsString>,
        secret_key_file: Option<&Path>,
    ) -> Result<Credentials, CredentialError> {
        let access = env(ACCESS_KEY_VAR).ok_or(CredentialError::MissingAccessKey)?;
        let access = access
            .into_string()
            .map_err(|_| CredentialError::NotUnicode(ACCESS_KEY_VAR))?;
        let access_key = access.trim().to_owned();
        if access_key.is_empty() {
            return Err(CredentialError::EmptyVar(ACCESS_KEY_VAR));
        }
        // The header is `SCHEME key:timestamp:nonce:hash`, so a ':' would shift every field.
        if !access_key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(CredentialError::BadAccessKey);
        }

        let secret = match secret_key_file {
            Some(path) => {
                let raw = read_secret_file(path)?;
                let trimmed = raw.expose().trim();
                if trimmed.is_empty() {
                    return Err(CredentialError::EmptyFile(path.to_owned()));
                }
                SecretKey(trimmed.to_owned())
            }
            None => {
                let raw = env(SECRET_KEY_VAR).ok_or(CredentialError::MissingSecret)?;
                let raw = SecretKey(
                    raw.into_string()
                        .map_err(|_| CredentialError::NotUnicode(SECRET_KEY_VAR))?,
                );
                let trimmed = raw.expose().trim();
                if trimmed.is_empty() {
                    return Err(CredentialError::EmptyVar(SECRET_KEY_VAR));
                }
                SecretKey(trimmed.to_owned())
            }
        };
        Ok(Credentials { access_key, secret })
    }
}

/// Largest secret key file read.
pub(crate) const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_secret_file(path: &Path) -> Result<SecretKey, CredentialError> {
    let read_error = |error| CredentialError::ReadFile {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // Wrapped at once so the untrimmed copy is zeroed however this returns. The bound keeps a
    // wrong path (a log file, /dev/zero) from being read for ever.
    let mut raw = SecretKey(String::new());
    file.take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut raw.0)
        .map_err(read_error)?;
    if raw.0.len() as u64 > MAX_SECRET_FILE {
        return Err(CredentialError::FileTooLarge(path.to_owned()));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn secret_is_masked() {
        let s = SecretKey::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "SecretKey(***)");
        let c = Credentials {
            access_key: "AKIA-0123456789".into(),
            secret: s,
        };
        let dbg = format!("{c:?}");
        assert_eq!(
            dbg,
            "Credentials { access_key: \"AKIA…\", secret: SecretKey(***) }"
        );
        assert_eq!(c.secret.expose(), "hunter2");
    }

    #[test]
    fn secret_is_masked_in_every_format() {
        let s = SecretKey::new("hunter2");
        for text in [
            s.to_string(),
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{s:>20}"),
            format!("{s:.3}"),
            format!("{:?}", Some(s.clone())),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        let c = Credentials {
            access_key: "AK".into(),
            secret: s,
        };
        assert_eq!(
            format!("{c:?}"),
            "Credentials { access_key: \"***\", secret: SecretKey(***) }"
        );
        assert!(!format!("{c:#?}").contains("hunter2"));
    }

    #[test]
    fn an_unreadable_secret_file_is_not_quoted() {
        let dir = std::env::temp_dir().join(format!("zephr-secret-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, b"hunter2-\xff-rest").unwrap();
        let env = env_of(&[(ACCESS_KEY_VAR, "AK")]);
        let e = Credentials::from_sources(&env, Some(&path)).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_env_trims() {
        let env = env_of(&[(ACCESS_KEY_VAR, " AK1 \n"), (SECRET_KEY_VAR, "sek\n")]);
        let c = Credentials::from_sources(env, None).unwrap();
        assert_eq!(c.access_key, "AK1");
        assert_eq!(c.secret.expose(), "sek");
    }

    #[test]
    fn missing_and_empty_vars_are_named() {
        let e = Credentials::from_sources(env_of(&[]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ZEPHR_ACCESS_KEY is not set: export the access key of a Zephr Admin API key pair"
        );
        let e = Credentials::from_sources(env_of(&[(ACCESS_KEY_VAR, "AK")]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ZEPHR_SECRET_KEY is not set and no secret key file was given"
        );
        let env = env_of(&[(ACCESS_KEY_VAR, "AK"), (SECRET_KEY_VAR, "  ")]);
        let e = Credentials::from_sources(env, None).unwrap_err();
        assert_eq!(e.to_string(), "ZEPHR_SECRET_KEY is set but empty");
        let env = env_of(&[(ACCESS_KEY_VAR, "A:K"), (SECRET_KEY_VAR, "s")]);
        let e = Credentials::from_sources(env, None).unwrap_err();
        assert!(matches!(e, CredentialError::BadAccessKey));
    }

    #[test]
    fn file_wins_over_env_and_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("zephr-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "from-file\r\n").unwrap();
        let env = env_of(&[(ACCESS_KEY_VAR, "AK"), (SECRET_KEY_VAR, "from-env")]);
        let c = Credentials::from_sources(&env, Some(&path)).unwrap();
        assert_eq!(c.secret.expose(), "from-file");

        std::fs::write(&path, " \n").unwrap();
        let e = Credentials::from_sources(&env, Some(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("secret key file {} is empty", path.display())
        );

        // However the path fails, it is not echoed: it may be the secret itself, pasted where
        // the path goes (`existing-file/SECRET` fails as "not a directory"). Issue 20 (g).
        let loop_link = dir.join("loop");
        std::os::unix::fs::symlink(&loop_link, &loop_link).unwrap();
        let cases = [
            (
                PathBuf::from("s3cr3t-passed-as-path"),
                "there is no such file (",
            ),
            (
                path.join("s3cr3t"),
                "a part of its path before the last `/` is not a folder (",
            ),
            (dir.clone(), "it is a folder, not a file ("),
            (
                dir.join("s3cr3t".repeat(60)),
                "the name is too long or not a valid file name (",
            ),
            (
                loop_link.join("s3cr3t"),
                "Too many levels of symbolic links",
            ),
        ];
        for (given, problem) in cases {
            let e = Credentials::from_sources(&env, Some(&given)).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("cannot read the secret key file: {problem}"))
                    && msg.ends_with(
                        "; give the path of a readable file that holds the secret, not the \
                         secret itself, or set ZEPHR_SECRET_KEY instead (the path is not \
                         repeated here in case it is the secret)"
                    ),
                "{msg}"
            );
            assert!(
                !msg.contains("s3cr3t") && !msg.contains("from-env") && !msg.contains("zephr-"),
                "{msg}"
            );
        }
        std::fs::write(&path, vec![b'k'; 70_000]).unwrap();
        let e = Credentials::from_sources(&env, Some(&path)).unwrap_err();
        assert!(matches!(e, CredentialError::FileTooLarge(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
