//! Operator actions on a stopped manager's data directory: create an admin
//! account, grant or revoke the admin role, and hand a catalog from before
//! accounts to an account. They are the only way to get the admin role or
//! legacy files: registering a login over gRPC never does, whatever the
//! login (`dupla-manager admin create LOGIN`, `dupla-manager adopt-legacy
//! LOGIN`).
//!
//! They open the manager's database, which sled locks while the manager
//! runs: stop the manager first (the error says so).

use crate::config::Config;
use crate::identity::accounts::{self, Account, Accounts, NewAccount};
use crate::state::State;
use dupla::kv::{Kv, SledKv};
use dupla::{Error, Result};
use std::sync::Arc;

/// The manager's database under `config.data`, or a clear error when the
/// manager holds it.
fn open_db(config: &Config) -> Result<Arc<dyn Kv>> {
    std::fs::create_dir_all(&config.data)?;
    let path = config.data.join("db");
    let kv = SledKv::open(&path).map_err(|e| {
        Error::Unavailable(format!(
            "cannot open the manager database {}: {e} (is the manager running? stop it first: operator commands need it to themselves)",
            path.display()
        ))
    })?;
    Ok(Arc::new(kv))
}

/// Create the account `login` with the admin role and `password`; if it
/// exists, `ALREADY_EXISTS` (use [`set_admin`] to grant the role).
pub fn create(config: &Config, login: &str, password: &str) -> Result<Account> {
    let new = NewAccount {
        login: login.to_string(),
        first_names: "Administrator".into(),
        last_names: login.to_string(),
        age: 30,
        gender: "n/a".into(),
        password: password.to_string(),
    };
    accounts::validate(&new)?;
    let accounts = Accounts::new(open_db(config)?);
    let password_hash = accounts::hash_password(password)?;
    let account = accounts.create(new.into_account(password_hash, true))?;
    tracing::warn!(login, "admin account created by the operator");
    Ok(account)
}

/// Grant (`admin` true) or revoke the admin role of the existing `login`.
pub fn set_admin(config: &Config, login: &str, admin: bool) -> Result<Account> {
    let account = Accounts::new(open_db(config)?).set_admin(login, admin)?;
    tracing::warn!(login, admin, "admin role changed by the operator");
    Ok(account)
}

/// Give the files of a catalog from before accounts to `login`, which must
/// exist. Returns how many files moved.
pub fn adopt_legacy(config: &Config, login: &str) -> Result<usize> {
    let kv = open_db(config)?;
    if !Accounts::new(kv.clone()).exists(login)? {
        return Err(Error::NotFound(format!(
            "no account {login:?}: register it (or `dupla-manager admin create {login}`) first"
        )));
    }
    let state = State::open(config.clone(), kv.clone(), dupla::rpc::Transport::Insecure)?;
    let moved = crate::adopt_legacy_files(&state, login)?;
    kv.flush()?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_actions_on_a_stopped_manager() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_test(dir.path().join("m"), "s3cret");
        let root = create(&config, "root", "long enough").unwrap();
        assert!(root.admin);
        assert!(matches!(
            create(&config, "root", "long enough"),
            Err(Error::AlreadyExists(_))
        ));
        assert!(!set_admin(&config, "root", false).unwrap().admin);
        assert!(set_admin(&config, "root", true).unwrap().admin);
        assert!(matches!(
            set_admin(&config, "nobody", true),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            adopt_legacy(&config, "nobody"),
            Err(Error::NotFound(_))
        ));
        assert_eq!(adopt_legacy(&config, "root").unwrap(), 0);
        // While the database is held (by a running manager), a clear error.
        let _held = SledKv::open(&config.data.join("db")).unwrap();
        let err = create(&config, "other", "long enough").unwrap_err();
        assert!(err.to_string().contains("stop it first"), "{err}");
    }
}
