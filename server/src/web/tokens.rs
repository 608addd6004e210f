//! Web tokens: how browsers authenticate to a party's web listener.
//!
//! A token is `mpcvit_` + 64 hex digits (32 bytes from the operating
//! system's entropy), issued by `mpcvit-server web-token`, which prints it
//! once and appends its SHA-256 to a token file. A party reads only that
//! file: one line per token, `sha256:<64 hex digits>` and an optional label,
//! `#` comments and blank lines ignored. A presented token is hashed and
//! compared with every stored hash in constant time (`subtle`), so neither
//! the comparison's time nor an early exit tells how much of a guess was
//! right. A plain SHA-256 suffices: tokens carry 256 random bits, so there is
//! no dictionary to slow down.
//!
//! The party re-reads the file when it changes ([`WebTokens::watch`]):
//! issuing or revoking a token (deleting its line) needs no restart. A file
//! that no longer parses leaves the tokens as they were, with a warning.
//! Neither tokens nor hashes ever reach a log; errors name line numbers only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::error::ServerError;

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "mpcvit_";
/// How often a party looks at its token file for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The SHA-256 of a token.
type TokenHash = [u8; 32];

/// The hashes of the tokens a party accepts.
#[derive(Debug, Default)]
pub struct WebTokens {
    hashes: RwLock<Arc<Vec<TokenHash>>>,
}

/// A freshly issued token and the line that stores its hash.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token: shown once, to the person it is for.
    pub token: Zeroizing<String>,
    /// `sha256:<hex>` and the label: the line for the token file.
    pub line: String,
}

/// Draw a fresh token; `label` (one line) is stored beside its hash.
pub fn issue(label: &str) -> IssuedToken {
    let bytes = mpc_core::Seed::random().to_bytes();
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", crate::hex(&bytes)));
    let label: String = label
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = format!("sha256:{}  {}", crate::hex(&hash(&token)), label.trim())
        .trim_end()
        .to_string();
    IssuedToken { token, line }
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The hashes in a token file's text; errors name the line, never its text.
pub fn parse(text: &str) -> Result<Vec<TokenHash>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let field = line.split_whitespace().next().unwrap_or("");
        let parsed = field
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .and_then(|h| {
                let mut b = [0u8; 32];
                for (k, byte) in b.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(h.get(2 * k..2 * k + 2)?, 16).ok()?;
                }
                Some(b)
            });
        match parsed {
            Some(h) => out.push(h),
            None => {
                return Err(format!(
                    "line {}: expected `sha256:<64 hex digits> [label]` (lines come from `mpcvit-server web-token`)",
                    i + 1
                ));
            }
        }
    }
    Ok(out)
}

impl WebTokens {
    /// Accept exactly the tokens whose hashes are `hashes`.
    pub fn from_hashes(hashes: Vec<TokenHash>) -> Self {
        WebTokens {
            hashes: RwLock::new(Arc::new(hashes)),
        }
    }

    /// Accept exactly these tokens (the local mode's, issued in memory).
    pub fn from_tokens<S: AsRef<str>>(tokens: &[S]) -> Self {
        Self::from_hashes(tokens.iter().map(|t| hash(t.as_ref())).collect())
    }

    /// Read a token file.
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        Ok(Self::from_hashes(read(path)?))
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn current(&self) -> Arc<Vec<TokenHash>> {
        self.hashes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, hashes: Vec<TokenHash>) {
        *self
            .hashes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(hashes);
    }

    /// Whether `presented` is one of the accepted tokens: its hash against
    /// every stored hash, each comparison in constant time and all of them
    /// made whatever the outcome.
    pub fn accepts(&self, presented: &str) -> bool {
        let h = hash(presented);
        let mut ok = subtle::Choice::from(0);
        for stored in self.current().iter() {
            ok |= stored.ct_eq(&h);
        }
        bool::from(ok)
    }

    /// Check a request's `authorization: Bearer <token>` header.
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), ServerError> {
        let Some(value) = metadata.get("authorization") else {
            return Err(ServerError::NoCredential {
                needed: "a web token is required (authorization: Bearer <token>)",
            });
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if self.accepts(given) {
            Ok(())
        } else {
            Err(ServerError::NoCredential {
                needed: "the web token is not valid",
            })
        }
    }

    /// Re-read `path` whenever its modification time or size changes
    /// (looked at every [`RELOAD_INTERVAL`]) until `self` is dropped
    /// elsewhere. A file that fails to read or parse keeps the tokens as
    /// they were.
    pub fn watch(self: &Arc<Self>, path: PathBuf) {
        let weak = Arc::downgrade(self);
        let mut seen = stamp(&path);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_INTERVAL).await;
                let Some(tokens) = weak.upgrade() else { return };
                let now = stamp(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match read(&path) {
                    Ok(h) => {
                        info!(path = %path.display(), tokens = h.len(), "web tokens reloaded");
                        tokens.replace(h);
                    }
                    Err(e) => {
                        warn!(error = %e, "web token file unreadable: keeping the tokens as they were")
                    }
                }
            }
        });
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read(path: &Path) -> Result<Vec<TokenHash>, ServerError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| ServerError::io("reading", path, e))?,
    );
    parse(&text).map_err(|reason| ServerError::Config(format!("{}: {reason}", path.display())))
}

/// Append `line` to the token file at `path` (created, readable by its owner
/// only on Unix, when missing).
pub fn append(path: &Path, line: &str) -> Result<(), ServerError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| ServerError::io("opening", path, e))?;
    writeln!(f, "{line}").map_err(|e| ServerError::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic::metadata::MetadataMap;

    #[test]
    fn issued_tokens_are_accepted_by_their_hash_only() {
        let a = issue("alice");
        let b = issue("bob\nsecond line");
        assert!(a.token.starts_with(TOKEN_PREFIX) && a.token.len() == TOKEN_PREFIX.len() + 64);
        assert_ne!(*a.token, *b.token);
        assert!(a.line.ends_with("  alice"));
        assert!(!b.line.contains('\n'), "a label stays on its line");
        assert!(
            !a.line.contains(a.token.as_str()),
            "the file holds no token"
        );
        let text = format!("# web tokens\n\n{}\n", a.line);
        let tokens = WebTokens::from_hashes(parse(&text).unwrap());
        assert_eq!(tokens.len(), 1);
        assert!(tokens.accepts(&a.token));
        assert!(!tokens.accepts(&b.token));
        assert!(!tokens.accepts(""));
        assert!(!tokens.accepts(&a.token[..a.token.len() - 1]));
    }

    #[test]
    fn malformed_lines_are_named_by_number_without_their_text() {
        let secret = "mpcvit_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let e = parse(&format!("# ok\n{secret}\n")).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(!e.contains(secret), "{e}");
        assert!(parse("sha256:abc\n").is_err());
        assert!(parse(&format!("sha256:{}\n", "zz".repeat(32))).is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn missing_and_wrong_bearer_tokens_are_unauthenticated() {
        let t = issue("t");
        let tokens = WebTokens::from_tokens(&[t.token.as_str()]);
        let with = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("authorization", v.parse().unwrap());
            m
        };
        assert!(tokens.check(&with(&format!("Bearer {}", *t.token))).is_ok());
        for md in [
            MetadataMap::new(),
            with("Bearer mpcvit_00"),
            with(&format!("Basic {}", *t.token)),
            with(&t.token),
        ] {
            let e = tokens.check(&md).unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated);
            assert!(!e.to_string().contains(t.token.as_str()));
        }
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("mpcvit-web-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.txt");
        let _ = std::fs::remove_file(&path);
        let (a, b) = (issue("a"), issue("b"));
        append(&path, &a.line).unwrap();
        let tokens = Arc::new(WebTokens::load(&path).unwrap());
        tokens.watch(path.clone());
        assert!(tokens.accepts(&a.token) && !tokens.accepts(&b.token));
        append(&path, &b.line).unwrap();
        let deadline = std::time::Instant::now() + RELOAD_INTERVAL * 5;
        while !tokens.accepts(&b.token) {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::write(&path, "not a hash\n").unwrap();
        tokio::time::sleep(RELOAD_INTERVAL * 2).await;
        assert!(tokens.accepts(&a.token), "a broken file keeps the tokens");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
