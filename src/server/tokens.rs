//! API tokens: what a client presents, what stockade keeps (a SHA-256, never the token), and
//! the strength a token must have.
//!
//! A token names its principal (`token create --name N`: the principal is `N`) and a scope.
//! Tokens stockade generates are 32 random bytes (`stk_` + 43 base64url characters); one a
//! user supplies must be at least [`MIN_TOKEN_CHARS`] printable characters with an estimated
//! entropy of at least [`MIN_TOKEN_BITS`] bits. Either way its SHA-256 is what is stored: with
//! that much entropy a preimage is out of reach, so no slow hash is needed, and a lookup costs
//! one hash and a constant-time comparison per stored token ([`subtle`]).
//!
//! The file (`tokens.json`, 0600) is replaced whole (temporary file, rename) under a lock, so
//! a server reading it on the next request sees a revocation, a rotation or an expiry without
//! a restart.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::{self, StateError};

pub const TOKENS_FILE: &str = "tokens.json";
const TOKENS_LOCK: &str = "tokens.lock";
/// A presented token longer than this is refused before any work (hashing, lookup).
pub const MAX_TOKEN_BYTES: usize = 256;
/// The shortest token a user may supply.
pub const MIN_TOKEN_CHARS: usize = 32;
/// The least estimated entropy of a token a user supplies (see [`estimated_bits`]).
pub const MIN_TOKEN_BITS: f64 = 100.0;
/// At most this many tokens in the file (each is compared on every request).
pub const MAX_TOKENS: usize = 1024;
const MAX_FILE_BYTES: u64 = 1 << 20;
const MAX_NAME: usize = 64;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Its own sandboxes and executions.
    Exec,
    /// Everything: every principal's sandboxes, grants, the audit logs, metrics.
    Admin,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Exec => "exec",
            Scope::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "exec" => Ok(Scope::Exec),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!("{s:?}: a scope is `exec` or `admin`")),
        }
    }
}

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The token's name, which is its principal's.
    pub name: String,
    pub scope: Scope,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
    /// When the token was last replaced by `token rotate` (the old one stopped working then).
    pub rotated: Option<i64>,
    /// Its estimated entropy in bits when it was made ([`GENERATED_BITS`] for a generated
    /// one); absent on tokens made before stockade recorded it. `doctor` rates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u32>,
}

impl TokenRecord {
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    pub fn active(&self, now: i64) -> bool {
        self.revoked.is_none() && !self.expired(now)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub tokens: Vec<TokenRecord>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token name {name:?} is invalid: use 1-64 letters, digits, '-', '_' or '.'")]
    BadName { name: String },
    #[error("a token named {name:?} exists already: rotate it (`stockade token rotate {name}`) or revoke it first")]
    Exists { name: String },
    #[error("no token named {name:?} (see `stockade token list`)")]
    NotFound { name: String },
    #[error("the token is too weak: {why}")]
    Weak { why: String },
    #[error("at most {MAX_TOKENS} tokens may exist; revoke some (`stockade token list`)")]
    TooMany,
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    Missing,
    TooLong,
    Unknown,
    Revoked,
    Expired,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "no token: send `Authorization: Bearer TOKEN`",
            Refusal::TooLong => "the token is longer than any stockade issues",
            Refusal::Unknown => "the token is not valid",
            Refusal::Revoked => "the token was revoked",
            Refusal::Expired => "the token has expired",
        }
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A new token: `stk_` and 32 random bytes, base64url.
/// The entropy of a [`generate`]d token: 32 bytes from the kernel's CSPRNG.
pub const GENERATED_BITS: u32 = 256;

/// The estimated entropy of a token a user supplied, in whole bits (what [`check_strength`]
/// rates).
pub fn strength_bits(token: &str) -> u32 {
    estimated_bits(token).floor() as u32
}

pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    // The kernel's CSPRNG; getrandom(2) does not fail once the pool is initialized.
    getrandom::fill(&mut bytes).expect("the kernel's random number generator is unavailable");
    format!(
        "stk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The lower of two estimates: zxcvbn's guess count (dictionary words, keyboard walks, dates,
/// sequences and repeats of any substring, so `Password1!` four times over scores as one
/// `Password1!` repeated), and the Shannon entropy of the token's characters times its length
/// (what a guesser who knows the character frequencies faces: small alphabets score low).
/// 43 random base64url characters score well over 200 bits by either.
pub fn estimated_bits(token: &str) -> f64 {
    shannon_bits(token).min(guessing_bits(token))
}

/// How many characters zxcvbn looks at (it reads no further).
const ZXCVBN_CHARS: usize = 100;

/// The guessing estimate, in bits: zxcvbn's cheapest split of the token into matches, each
/// dictionary word, keyboard walk, sequence, date or repeat counted as zxcvbn's guesses for it,
/// each stretch of no pattern as random characters of the token's character classes. zxcvbn
/// reads 100 characters, so a longer token is scored 100 characters at a time. zxcvbn's own total stops at 2^64, too low to
/// tell 100 bits from 250, so the sum is taken here in bits.
fn guessing_bits(token: &str) -> f64 {
    let chars: Vec<char> = token.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    let per_char = class_bits(&chars);
    // Piece by piece, each scored on its own: a pattern repeated past the first piece scores
    // as that pattern again, never as random characters.
    chars
        .chunks(ZXCVBN_CHARS)
        .map(|piece| {
            let piece: String = piece.iter().collect();
            zxcvbn::zxcvbn(&piece, &[])
                .sequence()
                .iter()
                .map(|m| match m.pattern {
                    zxcvbn::matching::patterns::MatchPattern::BruteForce => {
                        (m.j + 1 - m.i) as f64 * per_char
                    }
                    _ => (m.guesses.unwrap_or(1).max(1) as f64).log2(),
                })
                .sum::<f64>()
        })
        .sum()
}

/// Bits per character of a random string over the classes `chars` uses (lower, upper, digits,
/// other printable ASCII).
fn class_bits(chars: &[char]) -> f64 {
    let mut size = 0u32;
    if chars.iter().any(|c| c.is_ascii_lowercase()) {
        size += 26;
    }
    if chars.iter().any(|c| c.is_ascii_uppercase()) {
        size += 26;
    }
    if chars.iter().any(|c| c.is_ascii_digit()) {
        size += 10;
    }
    if chars.iter().any(|c| !c.is_ascii_alphanumeric()) {
        size += 33;
    }
    f64::from(size.max(2)).log2()
}

fn shannon_bits(token: &str) -> f64 {
    let chars: Vec<char> = token.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    let mut counts = std::collections::HashMap::new();
    for c in &chars {
        *counts.entry(*c).or_insert(0usize) += 1;
    }
    let n = chars.len() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_char * n
}

/// Whether a token a user supplies is strong enough; the error says why not.
pub fn check_strength(token: &str) -> Result<(), TokenError> {
    let weak = |why: String| Err(TokenError::Weak { why });
    if token.len() > MAX_TOKEN_BYTES {
        return weak(format!("longer than {MAX_TOKEN_BYTES} bytes"));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return weak("only printable ASCII without spaces can travel in an HTTP header".into());
    }
    let len = token.chars().count();
    if len < MIN_TOKEN_CHARS {
        return weak(format!(
            "{len} characters; at least {MIN_TOKEN_CHARS} are needed (or let stockade generate one)"
        ));
    }
    let bits = estimated_bits(token);
    if bits < MIN_TOKEN_BITS {
        return weak(format!(
            "its estimated entropy is {bits:.0} bits, under {MIN_TOKEN_BITS:.0}: it repeats characters or uses too few (let stockade generate one)"
        ));
    }
    Ok(())
}

/// Finds the token `presented` among `file`'s, comparing every stored digest in constant time.
pub fn authenticate<'a>(
    file: &'a TokenFile,
    presented: &str,
    now: i64,
) -> Result<&'a TokenRecord, Refusal> {
    if presented.is_empty() {
        return Err(Refusal::Missing);
    }
    if presented.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::TooLong);
    }
    let wanted = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for record in &file.tokens {
        let Ok(stored) = hex::decode(&record.sha256) else {
            continue;
        };
        if bool::from(stored.ct_eq(wanted.as_slice())) && found.is_none() {
            found = Some(record);
        }
    }
    let record = found.ok_or(Refusal::Unknown)?;
    if record.revoked.is_some() {
        return Err(Refusal::Revoked);
    }
    if record.expired(now) {
        return Err(Refusal::Expired);
    }
    Ok(record)
}

/// The name of the stored token `presented` is, whatever its state (for the audit log of a
/// refused revoked or expired token).
pub fn authenticate_name(file: &TokenFile, presented: &str) -> Option<String> {
    if presented.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let wanted = Sha256::digest(presented.as_bytes());
    file.tokens
        .iter()
        .find(|r| hex::decode(&r.sha256).is_ok_and(|s| bool::from(s.ct_eq(wanted.as_slice()))))
        .map(|r| r.name.clone())
}

/// The token file of a state directory.
#[derive(Debug, Clone)]
pub struct Tokens {
    dir: PathBuf,
}

/// The file's identity, to notice a replacement cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Tokens {
    pub fn new(state_dir: &Path) -> Tokens {
        Tokens {
            dir: state_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(TOKENS_FILE)
    }

    /// The file's current identity (`None`: no file yet).
    pub fn stamp(&self) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(self.path()).ok()?;
        Some(Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// Reads the file (an empty set when there is none).
    pub fn load(&self) -> Result<TokenFile, TokenError> {
        let path = self.path();
        let file = match state::open_private_file(&path, OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(TokenFile::default()),
            Err(e) => return Err(e.into()),
        };
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|source| TokenError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(TokenError::Corrupt {
                path,
                message: format!("larger than {MAX_FILE_BYTES} bytes"),
            });
        }
        serde_json::from_str(&text).map_err(|e| TokenError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// Replaces the value of token `name` with a generated one and returns it (the old value
    /// stops working at once). A revoked token is not rotated: create a new one.
    pub fn rotate(&self, name: &str, now: i64) -> Result<String, TokenError> {
        let token = generate();
        let digest = digest(&token);
        self.update(|f| {
            let t = f
                .tokens
                .iter_mut()
                .find(|t| t.name == name)
                .ok_or_else(|| TokenError::NotFound {
                    name: name.to_string(),
                })?;
            if t.revoked.is_some() {
                return Err(TokenError::Weak {
                    why: format!("{name} is revoked; create a new token instead"),
                });
            }
            t.sha256 = digest.clone();
            t.rotated = Some(now);
            t.bits = Some(GENERATED_BITS);
            Ok(())
        })?;
        Ok(token)
    }

    /// Changes the file under its lock: read, `change`, write whole (temporary file, rename).
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        state::ensure_private_dir(&self.dir)?;
        let lock_path = self.dir.join(TOKENS_LOCK);
        let lock_file = state::open_private_file(&lock_path, OFlag::O_RDWR | OFlag::O_CREAT)?;
        let _lock = lock(lock_file, &lock_path)?;
        let mut file = self.load()?;
        let out = change(&mut file)?;
        if file.tokens.len() > MAX_TOKENS {
            return Err(TokenError::TooMany);
        }
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| TokenError::Corrupt {
            path: self.path(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        let tmp = self
            .dir
            .join(format!("{TOKENS_FILE}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        state::write_private_file(&tmp, &text)?;
        std::fs::rename(&tmp, self.path()).map_err(|source| TokenError::Io {
            op: "replace",
            path: self.path(),
            source,
        })?;
        Ok(out)
    }
}

fn lock(file: File, path: &Path) -> Result<Flock<File>, TokenError> {
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| TokenError::Io {
        op: "lock",
        path: path.to_path_buf(),
        source: errno.into(),
    })
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, token: &str) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            scope: Scope::Exec,
            sha256: digest(token),
            created: 0,
            expires: None,
            revoked: None,
            rotated: None,
            bits: None,
        }
    }

    #[test]
    fn generated_tokens_are_strong_and_distinct() {
        for _ in 0..20 {
            let bits = estimated_bits(&generate());
            assert!(bits > 200.0, "{bits}");
        }
        let a = generate();
        assert!(a.starts_with("stk_") && a.len() == 47, "{a}");
        assert_ne!(a, generate());
        check_strength(&a).unwrap();
    }

    #[test]
    fn weak_tokens_are_refused_with_the_reason() {
        let why = |t: &str| check_strength(t).unwrap_err().to_string();
        assert!(why("short").contains("at least 32"));
        assert!(why(&"a".repeat(40)).contains("entropy"));
        assert!(why(&"password".repeat(4)).contains("entropy"));
        // Many distinct characters, but one weak password repeated, or a keyboard walk.
        assert!(why(&"Password1!".repeat(4)).contains("entropy"));
        assert!(why("qwertyuiop[]asdfghjkl;'zxcvbnm,./1234567890").contains("entropy"));
        // Past the 100 characters zxcvbn reads, the repetition goes on being seen.
        assert!(why(&"password".repeat(17)).contains("entropy"));
        assert!(why(&"Password1!".repeat(13)).contains("entropy"));
        assert!(why(&"Password1!".repeat(25)).contains("entropy"));
        assert!(why(&format!("{} x", "Ab3$".repeat(10))).contains("printable"));
        assert!(why(&"Zq9".repeat(100)).contains("longer than"));
        check_strength("f3A9-kQ2z_Lm8Rt5Vx1Bn7Hc4Wd6Yp0Js").unwrap();
        check_strength(&hex::encode([
            0x5a, 0x13, 0xc7, 0x9e, 0x24, 0xb8, 0x6f, 0xd1, 0x03, 0x4a, 0xe5, 0x7c, 0x91, 0x2d,
            0xb6, 0x58,
        ]))
        .unwrap();
    }

    #[test]
    fn authentication_finds_the_token_and_says_why_not() {
        let mut file = TokenFile {
            tokens: vec![record("a", "token-a"), record("b", "token-b")],
        };
        assert_eq!(authenticate(&file, "token-b", 0).unwrap().name, "b");
        assert_eq!(authenticate(&file, "token-c", 0), Err(Refusal::Unknown));
        assert_eq!(authenticate(&file, "", 0), Err(Refusal::Missing));
        assert_eq!(
            authenticate(&file, &"x".repeat(MAX_TOKEN_BYTES + 1), 0),
            Err(Refusal::TooLong)
        );
        file.tokens[0].revoked = Some(5);
        file.tokens[1].expires = Some(10);
        assert_eq!(authenticate(&file, "token-a", 0), Err(Refusal::Revoked));
        assert_eq!(authenticate(&file, "token-b", 9).unwrap().name, "b");
        assert_eq!(authenticate(&file, "token-b", 10), Err(Refusal::Expired));
    }

    #[test]
    fn the_file_keeps_digests_only_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let tokens = Tokens::new(&state_dir);
        let secret = generate();
        tokens
            .update(|f| {
                f.tokens.push(record("a", &secret));
                Ok(())
            })
            .unwrap();
        let text = std::fs::read_to_string(tokens.path()).unwrap();
        assert!(!text.contains(&secret));
        assert!(text.contains(&digest(&secret)));
        let mode = std::fs::metadata(tokens.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = tokens.stamp();
        tokens
            .update(|f| {
                f.tokens[0].revoked = Some(1);
                Ok(())
            })
            .unwrap();
        assert_ne!(tokens.stamp(), before, "a change is noticed by its stamp");
        assert_eq!(tokens.load().unwrap().tokens[0].revoked, Some(1));
    }

    proptest::proptest! {
        #[test]
        fn any_presented_token_is_judged_without_panic(t in ".{0,400}") {
            let file = TokenFile { tokens: vec![record("a", "token-a")] };
            let _ = authenticate(&file, &t, 0);
            let _ = check_strength(&t);
        }
    }
}
