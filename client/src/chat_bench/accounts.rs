//! The benchmark accounts, `PREFIX000`, `PREFIX001`...: their password,
//! made once and kept under the root so a later run reuses the same
//! accounts; registering the new ones and logging all of them in, a few at
//! a time since each costs the manager an argon2id hash; and logging them
//! out when the run is over, whatever its outcome.

use crate::session::Client;
use crate::session_store::{self, STATE_DIR};
use dupla::v1::RegisterRequest;
use dupla::{Error, Result};
use futures::StreamExt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File under `ROOT/.dupla` holding the benchmark accounts' password.
pub const PASSWORD_FILE: &str = "bench-chat-password";

/// Registrations and logins in flight: the manager hashes two passwords at
/// a time, so a few keep it busy without queueing many.
const SETUP_CONCURRENCY: usize = 4;

/// Logouts in flight at the end.
const LOGOUT_CONCURRENCY: usize = 16;

/// The benchmark accounts' password and its file: read, or made and saved.
pub(super) fn bench_password(root: &Path) -> Result<(String, PathBuf)> {
    let dir = root.join(STATE_DIR);
    let path = dir.join(PASSWORD_FILE);
    let read = |path: &Path| -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let password = text.trim().to_string();
                if password.len() < 8 {
                    return Err(Error::InvalidInput(format!(
                        "{} does not hold a benchmark password; delete it (new accounts need another --prefix)",
                        path.display()
                    )));
                }
                Ok(Some(password))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(e)),
        }
    };
    if let Some(password) = read(&path)? {
        return Ok((password, path));
    }
    session_store::create_private_dir(&dir)?;
    let password = hex::encode(rand::random::<[u8; 16]>());
    match session_store::private_file(&path) {
        Ok(mut file) => {
            file.write_all(format!("{password}\n").as_bytes())?;
            file.sync_all()?;
            Ok((password, path))
        }
        // Another run made it meanwhile: use that one.
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => match read(&path)? {
            Some(password) => Ok((password, path)),
            None => Err(Error::Io(e)),
        },
        Err(e) => Err(e),
    }
}

/// One signed-in benchmark account.
pub(super) struct Account {
    pub(super) token: String,
    /// The storage server the login assigned (the social bench opens the
    /// account's stream there); `None` when no server was up.
    pub(super) server: Option<String>,
    /// Registered by this run (else reused).
    pub(super) registered: bool,
}

/// Register (when new) and log in every login, a few at a time; stops at
/// the first failure.
///
/// The manager rate-limits registration attempts per address (250, then
/// one every 5 s), and an attempt counts even for a login that exists: so
/// only the first account is registered blindly. If it existed already,
/// this is a rerun, and the others are logged in straight away, each
/// registered only if its login is refused.
pub(super) async fn sign_in(
    anonymous: &Client,
    logins: &[String],
    password: &str,
    file: &Path,
) -> Result<Vec<Account>> {
    let Some((first, rest)) = logins.split_first() else {
        return Ok(Vec::new());
    };
    // The first account alone: on a fresh manager the first registration
    // gets the admin role, and it must be PREFIX000 whatever the concurrency.
    let mut accounts = Vec::with_capacity(logins.len());
    let first = account(anonymous, first, password, file, false).await?;
    let rerun = !first.registered;
    accounts.push(first);
    let mut pending = futures::stream::iter(rest)
        .map(|login| account(anonymous, login, password, file, rerun))
        .buffered(SETUP_CONCURRENCY);
    while let Some(outcome) = pending.next().await {
        match outcome {
            Ok(account) => accounts.push(account),
            Err(err) => {
                drop(pending);
                let members: Vec<Client> = accounts
                    .iter()
                    .map(|a| anonymous.sibling().with_token(a.token.clone()))
                    .collect();
                log_out(&members).await;
                return Err(err);
            }
        }
    }
    Ok(accounts)
}

/// Log `login` in, registering it first unless it `probably_exists`
/// (then only when the login is refused).
async fn account(
    anonymous: &Client,
    login: &str,
    password: &str,
    file: &Path,
    probably_exists: bool,
) -> Result<Account> {
    if probably_exists {
        match anonymous.login(login, password).await {
            Ok(reply) => {
                return Ok(Account {
                    token: reply.token,
                    server: reply.server.map(|node| node.addr),
                    registered: false,
                })
            }
            Err(Error::Unauthenticated(_)) => {} // Not there after all.
            Err(err) => return Err(err),
        }
    }
    let registered = match anonymous
        .register(RegisterRequest {
            first_names: "Chat".into(),
            last_names: "Benchmark".into(),
            login: login.into(),
            password: password.into(),
            age: 30,
            gender: "bot".into(),
        })
        .await
    {
        Ok(user) => {
            if user.admin {
                eprintln!(
                    "note: {login} is the manager's first account, so it is an admin; its password is in {}",
                    file.display()
                );
            }
            true
        }
        Err(Error::AlreadyExists(_)) => false,
        Err(err) => return Err(err),
    };
    let reply = anonymous
        .login(login, password)
        .await
        .map_err(|err| match err {
            Error::Unauthenticated(_) if !registered => Error::Unauthenticated(format!(
                "the account {login} exists, but not with the password in {}: run from the root \
                 that registered it, or use other accounts with --prefix",
                file.display()
            )),
            other => other,
        })?;
    Ok(Account {
        token: reply.token,
        server: reply.server.map(|node| node.addr),
        registered,
    })
}

/// Log every member out, a few at a time; returns how many failed.
pub(super) async fn log_out(members: &[Client]) -> usize {
    futures::stream::iter(members)
        .map(|member| member.logout())
        .buffer_unordered(LOGOUT_CONCURRENCY)
        .filter(|outcome| futures::future::ready(outcome.is_err()))
        .count()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_made_once_and_kept_private() {
        let root = tempfile::tempdir().unwrap();
        let (first, path) = bench_password(root.path()).unwrap();
        assert_eq!(first.len(), 32);
        let (again, _) = bench_password(root.path()).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short\n").unwrap();
        assert!(bench_password(root.path()).is_err());
    }
}
