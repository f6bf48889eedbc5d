//! Secrets at rest: AES-256-GCM (RustCrypto `aes-gcm`), a fresh random 96-bit nonce for every
//! write, the secret's name and the key's version as associated data (a ciphertext moved to
//! another name, or kept past a key rotation, fails to decrypt), the key in its own 0600 file.
//! Nothing here holds a plaintext longer than the caller's `Zeroizing` buffer.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::state::{self, StateError};

pub const SECRETS_FILE: &str = "secrets.json";
pub const KEY_FILE: &str = "secrets.key";
const LOCK_FILE: &str = "secrets.lock";
/// A secret's value, at most.
pub const MAX_SECRET_BYTES: usize = 64 << 10;
/// A secret's value, at least: a shorter one could not be redacted from output without
/// redacting ordinary text too.
pub const MIN_SECRET_BYTES: usize = 8;
/// Secrets in one store, at most.
pub const MAX_SECRETS: usize = 256;
const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("no secret named {name:?} (see `stockade secret list`)")]
    NotFound { name: String },
    #[error("{name:?} is not a secret name: use A-Z, 0-9 and _, not starting with a digit, at most 64 (it becomes an environment variable)")]
    BadName { name: String },
    #[error("the value of {name:?} is {len} bytes; a secret takes {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes (a shorter one cannot be told apart from ordinary output to redact it)")]
    BadLength { name: String, len: usize },
    #[error("{MAX_SECRETS} secrets exist; remove one first")]
    TooMany,
    #[error("secret {name:?} is not UTF-8 text, so it cannot be an environment variable")]
    NotText { name: String },
    #[error("secret {name:?} is not granted to principal {principal:?}: an operator grants it with `stockade secret set {name} --allow {principal}`")]
    NotGranted { name: String, principal: String },
    #[error("secret {name:?} cannot be decrypted ({why}): the key file {key} is not the one it was written with, or the store was tampered with. Set it again with `stockade secret set {name}`")]
    Decrypt {
        name: String,
        key: PathBuf,
        why: &'static str,
    },
    #[error("the secrets key {path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("the secrets file {path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// What `secret list` shows of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// When its value was last replaced (`secret rotate NAME`).
    pub rotated: Option<i64>,
    /// The version of the key it is encrypted under.
    pub key_version: u32,
    /// The API principals that may name it (`secret set NAME --allow P`); the local CLI
    /// always may.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    name: String,
    created: i64,
    rotated: Option<i64>,
    key_version: u32,
    /// Hex, 12 bytes.
    nonce: String,
    /// Base64: the ciphertext and its 16-byte tag.
    ciphertext: String,
    /// API principals that may name it (the local CLI always may).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    secrets: Vec<Stored>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    /// Hex, 32 bytes.
    key: String,
}

struct Key {
    version: u32,
    bytes: Zeroizing<[u8; 32]>,
}

/// Whether `name` may name a secret (it becomes an environment variable name).
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn aad(name: &str, version: u32) -> Vec<u8> {
    format!("stockade-secret:v1:{name}:{version}").into_bytes()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the kernel's random number generator is unavailable");
    bytes
}

/// The secrets of one state directory.
#[derive(Debug, Clone)]
pub struct Secrets {
    dir: PathBuf,
    key_path: PathBuf,
}

impl Secrets {
    /// The store in `state_dir`, its key in `key_path` (default: `secrets.key` beside it).
    pub fn new(state_dir: &Path, key_path: Option<PathBuf>) -> Secrets {
        Secrets {
            dir: state_dir.to_path_buf(),
            key_path: key_path.unwrap_or_else(|| state_dir.join(KEY_FILE)),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(SECRETS_FILE)
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    fn read_capped(path: &Path, max: u64) -> Result<Option<Zeroizing<String>>, SecretError> {
        let file = match state::open_private_file(path, OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut text = Zeroizing::new(String::new());
        file.take(max + 1)
            .read_to_string(&mut text)
            .map_err(|source| SecretError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            })?;
        if text.len() as u64 > max {
            return Err(SecretError::Corrupt {
                path: path.to_path_buf(),
                message: format!("larger than {max} bytes"),
            });
        }
        Ok(Some(text))
    }

    fn load_key(&self) -> Result<Option<Key>, SecretError> {
        let Some(text) = Self::read_capped(&self.key_path, 4096)? else {
            return Ok(None);
        };
        let bad = |problem: &str| SecretError::Key {
            path: self.key_path.clone(),
            problem: problem.to_string(),
        };
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|_| bad("is not a stockade secrets key"))?;
        let raw = Zeroizing::new(hex::decode(&file.key).map_err(|_| bad("its key is not hex"))?);
        let bytes: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| bad("its key is not 32 bytes"))?;
        Ok(Some(Key {
            version: file.version,
            bytes: Zeroizing::new(bytes),
        }))
    }

    fn write_key(&self, key: &Key) -> Result<(), SecretError> {
        let text = Zeroizing::new(
            serde_json::to_string(&KeyFile {
                version: key.version,
                key: hex::encode(*key.bytes),
            })
            .unwrap_or_default(),
        );
        let tmp = self
            .key_path
            .with_extension(format!("{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        state::write_private_file(&tmp, format!("{}\n", &*text).as_bytes())?;
        std::fs::rename(&tmp, &self.key_path).map_err(|source| SecretError::Io {
            op: "replace",
            path: self.key_path.clone(),
            source,
        })
    }

    fn key_or_new(&self) -> Result<Key, SecretError> {
        if let Some(key) = self.load_key()? {
            return Ok(key);
        }
        let key = Key {
            version: 1,
            bytes: Zeroizing::new(random::<32>()),
        };
        self.write_key(&key)?;
        Ok(key)
    }

    fn load(&self) -> Result<StoreFile, SecretError> {
        let path = self.path();
        match Self::read_capped(&path, MAX_FILE_BYTES)? {
            None => Ok(StoreFile::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| SecretError::Corrupt {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// Changes the store under its lock: read, `change`, write whole (temporary, rename).
    fn update<T>(
        &self,
        change: impl FnOnce(&mut StoreFile, &mut Option<Key>) -> Result<T, SecretError>,
    ) -> Result<T, SecretError> {
        state::ensure_private_dir(&self.dir)?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock_file = state::open_private_file(&lock_path, OFlag::O_RDWR | OFlag::O_CREAT)?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            SecretError::Io {
                op: "lock",
                path: lock_path.clone(),
                source: errno.into(),
            }
        })?;
        let mut file = self.load()?;
        let mut key = self.load_key()?;
        let out = change(&mut file, &mut key)?;
        let text = serde_json::to_vec_pretty(&file).map_err(|e| SecretError::Corrupt {
            path: self.path(),
            message: e.to_string(),
        })?;
        let tmp = self
            .dir
            .join(format!("{SECRETS_FILE}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        state::write_private_file(&tmp, &text)?;
        std::fs::rename(&tmp, self.path()).map_err(|source| SecretError::Io {
            op: "replace",
            path: self.path(),
            source,
        })?;
        Ok(out)
    }

    fn seal(key: &Key, name: &str, value: &[u8]) -> Result<(String, String), SecretError> {
        let cipher = Aes256Gcm::new_from_slice(&*key.bytes).map_err(|_| SecretError::Key {
            path: PathBuf::new(),
            problem: "not 32 bytes".into(),
        })?;
        let nonce = random::<12>();
        let aad = aad(name, key.version);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Corrupt {
                path: PathBuf::new(),
                message: "encryption failed".into(),
            })?;
        Ok((
            hex::encode(nonce),
            base64::engine::general_purpose::STANDARD.encode(sealed),
        ))
    }

    fn open(&self, key: &Key, stored: &Stored) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let fail = |why| SecretError::Decrypt {
            name: stored.name.clone(),
            key: self.key_path.clone(),
            why,
        };
        if stored.key_version != key.version {
            return Err(fail("it was written under another key version"));
        }
        let nonce = hex::decode(&stored.nonce).map_err(|_| fail("its nonce is not hex"))?;
        if nonce.len() != 12 {
            return Err(fail("its nonce is not 12 bytes"));
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&stored.ciphertext)
            .map_err(|_| fail("its ciphertext is not base64"))?;
        let cipher = Aes256Gcm::new_from_slice(&*key.bytes).map_err(|_| fail("bad key"))?;
        let aad = aad(&stored.name, stored.key_version);
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| fail("authentication failed"))
    }

    fn check(name: &str, value: &[u8]) -> Result<(), SecretError> {
        if !is_name(name) {
            return Err(SecretError::BadName { name: name.into() });
        }
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&value.len()) {
            return Err(SecretError::BadLength {
                name: name.into(),
                len: value.len(),
            });
        }
        Ok(())
    }

    /// Sets `name` to `value` (created, or replaced as a rotation of its value). Returns
    /// whether it existed.
    pub fn set(&self, name: &str, value: &[u8]) -> Result<bool, SecretError> {
        self.set_allowing(name, value, None)
    }

    /// [`Secrets::set`], and (when `allow` is given) the API principals that may name it.
    pub fn set_allowing(
        &self,
        name: &str,
        value: &[u8],
        allow: Option<&[String]>,
    ) -> Result<bool, SecretError> {
        Self::check(name, value)?;
        self.update(|file, key| {
            let key = match key {
                Some(k) => k,
                None => key.insert(self.key_or_new()?),
            };
            let (nonce, ciphertext) = Self::seal(key, name, value)?;
            let now = now_secs();
            match file.secrets.iter_mut().find(|s| s.name == name) {
                Some(s) => {
                    s.nonce = nonce;
                    s.ciphertext = ciphertext;
                    s.key_version = key.version;
                    s.rotated = Some(now);
                    if let Some(allow) = allow {
                        s.allow = allow.to_vec();
                    }
                    Ok(true)
                }
                None => {
                    if file.secrets.len() >= MAX_SECRETS {
                        return Err(SecretError::TooMany);
                    }
                    file.secrets.push(Stored {
                        name: name.to_string(),
                        created: now,
                        rotated: None,
                        key_version: key.version,
                        nonce,
                        ciphertext,
                        allow: allow.map(<[String]>::to_vec).unwrap_or_default(),
                    });
                    Ok(false)
                }
            }
        })
    }

    pub fn list(&self) -> Result<Vec<SecretInfo>, SecretError> {
        Ok(self
            .load()?
            .secrets
            .into_iter()
            .map(|s| SecretInfo {
                name: s.name,
                created: s.created,
                rotated: s.rotated,
                key_version: s.key_version,
                allow: s.allow,
            })
            .collect())
    }

    pub fn remove(&self, name: &str) -> Result<(), SecretError> {
        self.update(|file, _| {
            let before = file.secrets.len();
            file.secrets.retain(|s| s.name != name);
            if file.secrets.len() == before {
                return Err(SecretError::NotFound { name: name.into() });
            }
            Ok(())
        })
    }

    /// The value of `name` for an API principal: refused unless it is granted to it.
    pub fn get_for(
        &self,
        name: &str,
        api_principal: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        if let Some(principal) = api_principal {
            let file = self.load()?;
            let granted = file
                .secrets
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| SecretError::NotFound { name: name.into() })?
                .allow
                .iter()
                .any(|p| p == principal);
            if !granted {
                return Err(SecretError::NotGranted {
                    name: name.into(),
                    principal: principal.into(),
                });
            }
        }
        self.get(name)
    }

    /// The value of `name`, decrypted.
    pub fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let file = self.load()?;
        let stored = file
            .secrets
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SecretError::NotFound { name: name.into() })?;
        let key = self.load_key()?.ok_or_else(|| SecretError::Key {
            path: self.key_path.clone(),
            problem: "is missing, so no secret can be decrypted".into(),
        })?;
        self.open(&key, stored)
    }

    /// A new key: every secret is decrypted with the old one and encrypted with the new one,
    /// then the new key replaces the old. Returns the new key's version.
    pub fn rotate_key(&self) -> Result<u32, SecretError> {
        self.update(|file, key| {
            let old = key.take();
            let new = Key {
                version: old.as_ref().map_or(1, |k| k.version + 1),
                bytes: Zeroizing::new(random::<32>()),
            };
            for stored in &mut file.secrets {
                let Some(old) = &old else {
                    return Err(SecretError::Key {
                        path: self.key_path.clone(),
                        problem: "is missing, so the secrets cannot be re-encrypted".into(),
                    });
                };
                let value = self.open(old, stored)?;
                let (nonce, ciphertext) = Self::seal(&new, &stored.name, &value)?;
                stored.nonce = nonce;
                stored.ciphertext = ciphertext;
                stored.key_version = new.version;
            }
            // The store is written (by `update`) after the key: a crash between them leaves
            // secrets under the old version, which fail to decrypt with a clear error.
            self.write_key(&new)?;
            let version = new.version;
            *key = Some(new);
            Ok(version)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let secrets = Secrets::new(&state, None);
        (dir, secrets)
    }

    const VALUE: &[u8] = b"hunter2-correct-horse";

    fn files_contain(dir: &Path, needle: &[u8]) -> bool {
        walk(dir)
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn a_secret_round_trips_and_its_plaintext_is_nowhere_on_disk() {
        let (dir, s) = store();
        assert!(!s.set("API_TOKEN", VALUE).unwrap());
        assert_eq!(&*s.get("API_TOKEN").unwrap(), VALUE);
        assert!(!files_contain(dir.path(), VALUE));
        assert!(!files_contain(dir.path(), hex::encode(VALUE).as_bytes()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE);
        assert!(!files_contain(dir.path(), b64.as_bytes()));
        use std::os::unix::fs::PermissionsExt;
        for p in [s.path(), s.key_path().to_path_buf()] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let info = s.list().unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(
            (info[0].name.as_str(), info[0].rotated),
            ("API_TOKEN", None)
        );
        // Replacing the value is a rotation of it; every write takes a fresh nonce.
        let first = s.load().unwrap().secrets[0].nonce.clone();
        assert!(s.set("API_TOKEN", b"another-value-1").unwrap());
        assert_ne!(s.load().unwrap().secrets[0].nonce, first);
        assert!(s.list().unwrap()[0].rotated.is_some());
        assert_eq!(&*s.get("API_TOKEN").unwrap(), b"another-value-1");
        s.remove("API_TOKEN").unwrap();
        assert!(matches!(
            s.get("API_TOKEN"),
            Err(SecretError::NotFound { .. })
        ));
    }

    #[test]
    fn a_tampered_or_moved_ciphertext_fails_to_decrypt_with_a_clear_error() {
        let (_dir, s) = store();
        s.set("ONE_SECRET", VALUE).unwrap();
        s.set("TWO_SECRET", b"second-value-xyz").unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        let mut file: StoreFile = serde_json::from_str(&text).unwrap();
        // One bit of the ciphertext flipped.
        let mut sealed = base64::engine::general_purpose::STANDARD
            .decode(&file.secrets[0].ciphertext)
            .unwrap();
        sealed[0] ^= 1;
        file.secrets[0].ciphertext = base64::engine::general_purpose::STANDARD.encode(sealed);
        // The second's ciphertext under the first's name: the name is associated data.
        let (nonce, ct) = (
            file.secrets[1].nonce.clone(),
            file.secrets[1].ciphertext.clone(),
        );
        file.secrets.push(Stored {
            name: "MOVED".into(),
            nonce,
            ciphertext: ct,
            ..file.secrets[1].clone()
        });
        std::fs::write(s.path(), serde_json::to_vec(&file).unwrap()).unwrap();
        for name in ["ONE_SECRET", "MOVED"] {
            let err = s.get(name).unwrap_err();
            assert!(matches!(err, SecretError::Decrypt { .. }), "{err}");
            assert!(err.to_string().contains("cannot be decrypted"), "{err}");
        }
        assert_eq!(&*s.get("TWO_SECRET").unwrap(), b"second-value-xyz");
    }

    #[test]
    fn rotating_the_key_re_encrypts_and_the_old_key_no_longer_opens() {
        let (_dir, s) = store();
        s.set("ROTATED", VALUE).unwrap();
        let old_key = std::fs::read(s.key_path()).unwrap();
        assert_eq!(s.rotate_key().unwrap(), 2);
        assert_eq!(&*s.get("ROTATED").unwrap(), VALUE);
        assert_eq!(s.list().unwrap()[0].key_version, 2);
        std::fs::write(s.key_path(), old_key).unwrap();
        assert!(matches!(s.get("ROTATED"), Err(SecretError::Decrypt { .. })));
    }

    #[test]
    fn an_api_principal_gets_only_what_is_granted_to_it() {
        let (_dir, s) = store();
        s.set("SHARED", VALUE).unwrap();
        assert!(matches!(
            s.get_for("SHARED", Some("alice")),
            Err(SecretError::NotGranted { .. })
        ));
        assert_eq!(&*s.get_for("SHARED", None).unwrap(), VALUE);
        s.set_allowing("SHARED", VALUE, Some(&["alice".to_string()]))
            .unwrap();
        assert_eq!(&*s.get_for("SHARED", Some("alice")).unwrap(), VALUE);
        assert!(s.get_for("SHARED", Some("bob")).is_err());
        // Replacing the value keeps the grants unless new ones are given.
        s.set("SHARED", b"new-value-123").unwrap();
        assert_eq!(s.list().unwrap()[0].allow, ["alice"]);
    }

    #[test]
    fn names_and_lengths_are_checked() {
        let (_dir, s) = store();
        for bad in ["lower", "1ABC", "A-B", "", &"A".repeat(65)] {
            assert!(
                matches!(s.set(bad, VALUE), Err(SecretError::BadName { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            s.set("SHORT", b"1234567"),
            Err(SecretError::BadLength { .. })
        ));
        let big = vec![b'x'; MAX_SECRET_BYTES + 1];
        assert!(matches!(
            s.set("BIG", &big),
            Err(SecretError::BadLength { .. })
        ));
        assert!(matches!(
            s.get("MISSING"),
            Err(SecretError::NotFound { .. })
        ));
    }
}
