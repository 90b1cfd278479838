//! Optional bearer tokens (`--auth-token-file`), for VMs where no platform authenticates
//! callers. SageMaker does that itself, so this is off unless a token file is given.
//!
//! Every route but `/ping` then needs `Authorization: Bearer <token>`, `/metrics` on the main
//! port included; the `--metrics-port` listener stays open, as an ops port to keep off the
//! public network. The file holds one token per line so that a new one can be added, clients
//! moved over, and the old one removed, each step followed by SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpResponse;

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {} holds no token (only blank lines and # comments)", path.display())]
    Empty { path: PathBuf },
    // The line number, never the token: the log must not hold a secret, even a broken one.
    #[error("line {line} of the token file {}: a token may hold only visible ASCII characters (no spaces)", path.display())]
    BadToken { path: PathBuf, line: usize },
}

/// The tokens in force, swapped whole on reload.
pub struct Tokens {
    path: PathBuf,
    set: RwLock<Vec<Box<[u8]>>>,
}

impl Tokens {
    /// Reads the file at start-up: unreadable, empty or malformed is an error.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        Ok(Self {
            path: path.to_path_buf(),
            set: RwLock::new(read(path)?),
        })
    }

    pub fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the file (on SIGHUP). A file that cannot be used leaves the tokens in force
    /// unchanged: locking every client out over a half-written file is worse than a late
    /// rotation.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let fresh = read(&self.path)?;
        let n = fresh.len();
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(n)
    }

    /// Whether `Authorization` carries one of the tokens.
    pub fn allows(&self, authorization: Option<&HeaderValue>) -> Result<(), Refusal> {
        let presented = authorization
            .and_then(|v| bearer(v.as_bytes()))
            .ok_or(Refusal::Missing)?;
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        // Every token is compared, so the time taken does not say which one came close.
        let mut ok = false;
        for token in set.iter() {
            ok |= constant_time_eq(presented, token);
        }
        if ok {
            Ok(())
        } else {
            Err(Refusal::Invalid)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid,
}

impl Refusal {
    /// The 401, with the challenge RFC 6750 asks for: in mlapp's error shape, or in the Open
    /// Inference Protocol's on its routes (`v2`).
    pub fn response(self, v2: bool) -> HttpResponse {
        let (message, challenge) = match self {
            Refusal::Missing => (
                "this server needs an Authorization: Bearer <token> header",
                "Bearer realm=\"mlapp\"",
            ),
            Refusal::Invalid => (
                "the bearer token in the Authorization header is not valid",
                "Bearer realm=\"mlapp\", error=\"invalid_token\"",
            ),
        };
        let e = ApiError::Unauthorized(message.into());
        let mut resp = match v2 {
            true => super::v2::error(&e),
            false => super::error_response(&e),
        };
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        resp
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Equality whose time depends only on the length of `presented`, not on where it differs.
fn constant_time_eq(presented: &[u8], token: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != token.len());
    for (i, &b) in presented.iter().enumerate() {
        diff |= b ^ token.get(i).copied().unwrap_or(!b);
    }
    // Keeps the optimizer from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

fn read(path: &Path) -> Result<Vec<Box<[u8]>>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::BadToken {
                path: path.to_path_buf(),
                line: i + 1,
            });
        }
        tokens.push(Box::from(line.as_bytes()));
    }
    if tokens.is_empty() {
        return Err(AuthError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn any_listed_token_is_accepted_and_nothing_else() {
        let f = file("# ops\n\n  alpha-1  \nbeta_2\n");
        let t = Tokens::load(f.path()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.allows(Some(&header("Bearer alpha-1"))), Ok(()));
        assert_eq!(t.allows(Some(&header("bearer   beta_2 "))), Ok(()));
        for wrong in [
            "Bearer alpha",
            "Bearer alpha-12",
            "Bearer beta_3",
            "Bearer # ops",
        ] {
            assert_eq!(
                t.allows(Some(&header(wrong))),
                Err(Refusal::Invalid),
                "{wrong}"
            );
        }
        for missing in ["", "Bearer", "Bearer   ", "Basic alpha-1", "Beareralpha-1"] {
            assert_eq!(
                t.allows(Some(&header(missing))),
                Err(Refusal::Missing),
                "{missing:?}"
            );
        }
        assert_eq!(t.allows(None), Err(Refusal::Missing));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        for (a, b) in [
            ("", ""),
            ("a", ""),
            ("", "a"),
            ("ab", "ab"),
            ("ab", "ac"),
            ("ab", "abc"),
        ] {
            assert_eq!(
                constant_time_eq(a.as_bytes(), b.as_bytes()),
                a == b,
                "{a} {b}"
            );
        }
        // A presented byte equal to the filler must not match past the token's end.
        assert!(!constant_time_eq(&[0xff], &[]));
        assert!(!constant_time_eq(&[0x00], &[]));
    }

    #[test]
    fn a_bad_file_is_refused_at_load_and_keeps_the_old_tokens_on_reload() {
        let f = file("first\n");
        let t = Tokens::load(f.path()).unwrap();
        for (text, want) in [
            ("\n# none\n", "holds no token"),
            ("ok\nwith space\n", "line 2 of the token file"),
        ] {
            std::fs::write(f.path(), text).unwrap();
            let e = t.reload().unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains(&f.path().display().to_string()),
                "{e}"
            );
            assert!(
                !e.contains("with space"),
                "the token leaked into the error: {e}"
            );
            assert!(Tokens::load(f.path()).is_err());
            assert_eq!(t.allows(Some(&header("Bearer first"))), Ok(()));
        }
        std::fs::write(f.path(), "second\n").unwrap();
        assert_eq!(t.reload().unwrap(), 1);
        assert_eq!(
            t.allows(Some(&header("Bearer first"))),
            Err(Refusal::Invalid)
        );
        assert_eq!(t.allows(Some(&header("Bearer second"))), Ok(()));
        let gone = f.path().to_path_buf();
        drop(f);
        let e = Tokens::load(&gone).err().unwrap().to_string();
        assert!(e.contains("cannot read the token file"), "{e}");
    }
}
