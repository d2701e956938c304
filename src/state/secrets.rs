//! The secret store and redaction: secrets are read from `<state-dir>/secrets/<name>`
//! or `BERTH_SECRET_<NAME>`, and wherever a value could be shown they appear only as
//! `<secret:name sha256:1a2b3c4d>`, the hash keyed by the state directory's own random
//! key (`<state-dir>/secret-hash-key`), so that nobody who sees it can test guesses of
//! a weak password against it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use crate::manifest::syntax;

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither the file nor the variable exists.
    #[error(
        "secret `{name}` is not in the secret store: write it to {file} (mode 0600) or set \
         {var}"
    )]
    Missing {
        /// The secret's name.
        name: String,
        /// Where its file would be.
        file: String,
        /// The environment variable that would hold it.
        var: String,
    },
    /// The name is not a valid secret name.
    #[error("invalid secret name: {0}")]
    InvalidName(String),
    /// The file exists but could not be read.
    #[error("failed to read secret `{name}` from {file}: {source}")]
    Read {
        /// The secret's name.
        name: String,
        /// Its file.
        file: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("failed to write secret `{name}` to {file}: {source}")]
    Write {
        /// The secret's name.
        name: String,
        /// Its file.
        file: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key of the shown hashes could not be read or created.
    #[error("failed to read or create the key of secret hashes {file}: {source}")]
    HashKey {
        /// The key's file.
        file: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// No random value could be had from the kernel.
    #[error("failed to generate secret `{name}`: {source}")]
    Generate {
        /// The secret's name.
        name: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A secret's value. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    name: String,
    value: String,
    /// The store's key of shown hashes; `None` for a value from elsewhere.
    key: Option<HashKey>,
}

/// The random key a state directory's shown secret hashes are made with.
type HashKey = Arc<[u8]>;

impl Secret {
    /// A secret that did not come from the store (a value given by other means); its
    /// shown hash is not keyed.
    pub fn new(name: &str, value: &str) -> Secret {
        Secret {
            name: name.to_owned(),
            value: value.to_owned(),
            key: None,
        }
    }

    /// The value, for injecting where it is used (never for printing).
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first 8 hex digits of the value's HMAC-SHA256 under the store's key (its
    /// SHA-256 for a value from elsewhere): a change is visible, the value not, and a
    /// guess cannot be checked without the key.
    pub fn short_hash(&self) -> String {
        match &self.key {
            Some(key) => {
                let full = signature(key, self.value.as_bytes());
                full["sha256=".len().."sha256=".len() + 8].to_owned()
            }
            None => short_hash(&self.value),
        }
    }

    /// How the secret is shown anywhere: `<secret:name sha256:1a2b3c4d>`.
    pub fn redacted(&self) -> String {
        format!("<secret:{} sha256:{}>", self.name, self.short_hash())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The first 8 hex digits of the SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..4])
}

/// Anything secrets are read from: the store, or a pass's view of it.
pub trait SecretSource {
    /// Reads secret `name`.
    fn get(&self, name: &str) -> Result<Secret, SecretError>;
}

impl SecretSource for SecretStore {
    fn get(&self, name: &str) -> Result<Secret, SecretError> {
        SecretStore::get(self, name)
    }
}

/// Where secrets are read from.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
    key: Arc<OnceLock<HashKey>>,
}

/// The key's file, in the state directory.
const HASH_KEY_FILE: &str = "secret-hash-key";

/// The key of a process whose state directory cannot keep one.
fn process_key() -> std::io::Result<&'static HashKey> {
    static KEY: OnceLock<HashKey> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let fresh = format!("{}{}", random_token()?, random_token()?);
    Ok(KEY.get_or_init(|| Arc::from(fresh.as_bytes())))
}

impl SecretStore {
    /// The store under `<state_dir>/secrets`.
    pub fn new(state_dir: &Path) -> SecretStore {
        SecretStore {
            dir: state_dir.join("secrets"),
            key: Arc::new(OnceLock::new()),
        }
    }

    /// The key of shown hashes: read from the state directory, or created there once
    /// (32 random bytes, mode 0600). Two berths that race to create it agree on the one
    /// written first. Where it cannot be written (a dry run against a state directory
    /// that does not exist yet, or is not ours to write), a key of this process is used:
    /// such a berth cannot apply either, so nothing is labelled with it.
    fn hash_key(&self) -> Result<HashKey, SecretError> {
        if let Some(key) = self.key.get() {
            return Ok(key.clone());
        }
        let file = self.key_file();
        let failed = |source| SecretError::HashKey {
            file: file.display().to_string(),
            source,
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let fresh = format!(
                    "{}{}",
                    random_token().map_err(failed)?,
                    random_token().map_err(failed)?
                );
                match crate::state::atomic::write_new_mode(&file, fresh.as_bytes(), Some(0o600)) {
                    Ok(()) => fresh,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read_to_string(&file).map_err(failed)?
                    }
                    // Not ours to write: a dry run, which labels nothing. Any other
                    // failure (a full disk) is an error, or a key of this process would
                    // end up in labels and change with the next.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound
                                | std::io::ErrorKind::PermissionDenied
                                | std::io::ErrorKind::ReadOnlyFilesystem
                        ) =>
                    {
                        return Ok(process_key().map_err(failed)?.clone());
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
            Err(e) => return Err(failed(e)),
        };
        let key: HashKey = Arc::from(text.trim().as_bytes());
        Ok(self.key.get_or_init(|| key).clone())
    }

    /// `<state-dir>/secret-hash-key`.
    fn key_file(&self) -> PathBuf {
        self.dir
            .parent()
            .unwrap_or(Path::new("."))
            .join(HASH_KEY_FILE)
    }

    /// The environment variable that may hold secret `name`.
    pub fn variable(name: &str) -> String {
        format!("BERTH_SECRET_{}", name.to_uppercase().replace('-', "_"))
    }

    /// Reads secret `name`: the environment variable wins over the file, so that a
    /// deployment can override a stored value without touching the disk. A trailing
    /// newline in the file is dropped (editors add one).
    pub fn get(&self, name: &str) -> Result<Secret, SecretError> {
        syntax::check_name(name).map_err(SecretError::InvalidName)?;
        let var = Self::variable(name);
        if let Ok(value) = std::env::var(&var) {
            return Ok(Secret {
                name: name.to_owned(),
                value,
                key: Some(self.hash_key()?),
            });
        }
        let file = self.dir.join(name);
        match std::fs::read_to_string(&file) {
            Ok(mut value) => {
                if value.ends_with('\n') {
                    value.pop();
                    if value.ends_with('\r') {
                        value.pop();
                    }
                }
                Ok(Secret {
                    name: name.to_owned(),
                    value,
                    key: Some(self.hash_key()?),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SecretError::Missing {
                name: name.to_owned(),
                file: file.display().to_string(),
                var,
            }),
            Err(source) => Err(SecretError::Read {
                name: name.to_owned(),
                file: file.display().to_string(),
                source,
            }),
        }
    }
}

impl SecretStore {
    /// Reads secret `name`, or generates it (32 random hex digits) and stores it with
    /// mode 0600 when it does not exist yet: generated once, kept for good.
    pub fn get_or_generate(&self, name: &str) -> Result<Secret, SecretError> {
        match self.get(name) {
            Err(SecretError::Missing { .. }) => {
                let secret = self.generate(name)?;
                self.put(&secret)?;
                Ok(secret)
            }
            other => other,
        }
    }

    /// Stores `secret` (mode 0600), written to a temporary file and renamed into place.
    pub fn put(&self, secret: &Secret) -> Result<(), SecretError> {
        syntax::check_name(&secret.name).map_err(SecretError::InvalidName)?;
        let file = self.dir.join(&secret.name);
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                crate::state::atomic::write_atomic_mode(&file, secret.value.as_bytes(), Some(0o600))
            })
            .map_err(|source| SecretError::Write {
                name: secret.name.clone(),
                file: file.display().to_string(),
                source,
            })
    }
}

impl SecretStore {
    /// A new random value (32 hex digits) for secret `name`, shown as the store shows
    /// its secrets, not stored anywhere yet.
    pub fn generate(&self, name: &str) -> Result<Secret, SecretError> {
        self.generate_with(name, random_token)
    }

    /// A new value for secret `name` made by `make` (an ACME account's key), shown as
    /// the store shows its secrets, not stored anywhere yet.
    pub fn generate_with(
        &self,
        name: &str,
        make: impl FnOnce() -> std::io::Result<String>,
    ) -> Result<Secret, SecretError> {
        let value = make().map_err(|source| SecretError::Generate {
            name: name.to_owned(),
            source,
        })?;
        Ok(Secret {
            name: name.to_owned(),
            value,
            key: Some(self.hash_key()?),
        })
    }
}

impl Secret {
    /// A new random value (32 hex digits) for secret `name`, not stored anywhere yet;
    /// its shown hash is not keyed ([`SecretStore::generate`] keys it).
    pub fn generate(name: &str) -> Result<Secret, SecretError> {
        let value = random_token().map_err(|source| SecretError::Generate {
            name: name.to_owned(),
            source,
        })?;
        Ok(Secret {
            name: name.to_owned(),
            value,
            key: None,
        })
    }
}

/// 16 random bytes from the kernel, as hex.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Replaces every occurrence of each secret's value in `text` with its redaction: the
/// last line of defence for text that came from outside (a daemon's error message).
pub fn redact_all(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.value.len() >= 4 {
            out = out.replace(&s.value, &s.redacted());
        }
    }
    out
}

/// The `X-Berth-Signature-256` value of `body`: `sha256=` and the hex HMAC-SHA256 under
/// `key`, as GitHub signs its webhooks, so receivers can reuse their verification code.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsalted SHA-256 prefix of a weak password lets whoever reads a plan or a
    /// notification test guesses offline; keyed per state directory, it does not.
    #[test]
    fn short_hashes_are_keyed_per_state_directory_so_guesses_cannot_be_tested_offline() {
        let shown = |dir: &Path| {
            std::fs::create_dir_all(dir.join("secrets")).unwrap();
            std::fs::write(dir.join("secrets/db-password"), "password1\n").unwrap();
            SecretStore::new(dir).get("db-password").unwrap().redacted()
        };
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = shown(one.path());
        assert_ne!(first, shown(two.path()), "two berths, two keys");
        assert_ne!(
            first,
            format!("<secret:db-password sha256:{}>", short_hash("password1"))
        );
        // The key is made once and kept: the same value is shown the same way after.
        assert_eq!(first, shown(one.path()));
        let key = one.path().join("secret-hash-key");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap().len(), 64);
        // Generated secrets are shown as the stored ones will be.
        let store = SecretStore::new(one.path());
        let generated = store.generate("fresh").unwrap();
        store.put(&generated).unwrap();
        assert_eq!(generated.redacted(), store.get("fresh").unwrap().redacted());
    }

    #[test]
    fn files_are_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(
            dir.path().join("secrets/mail-password"),
            "hunter2-hunter2\n",
        )
        .unwrap();
        let store = SecretStore::new(dir.path());
        let s = store.get("mail-password").unwrap();
        assert_eq!(s.expose(), "hunter2-hunter2");
        let shown = format!("{s} {s:?}");
        assert!(!shown.contains("hunter2"));
        assert!(
            s.redacted().starts_with("<secret:mail-password sha256:"),
            "{}",
            s.redacted()
        );
        assert_eq!(
            redact_all("oops hunter2-hunter2 leaked", std::slice::from_ref(&s)),
            format!("oops {} leaked", s.redacted())
        );
    }

    #[test]
    fn a_missing_secret_says_where_to_put_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = SecretStore::new(dir.path())
            .get("api-token")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret `api-token` is not in the secret store"),
            "{err}"
        );
        assert!(err.contains("BERTH_SECRET_API_TOKEN"), "{err}");
    }

    #[test]
    fn names_cannot_escape_the_store() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            SecretStore::new(dir.path()).get("../etc/passwd"),
            Err(SecretError::InvalidName(_))
        ));
    }
}
