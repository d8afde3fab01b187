//! Accounts: who may log in, in the manager's database behind the
//! [`Kv`] trait. A record holds the person's details and an argon2id hash of
//! the password (PHC string: algorithm, parameters, salt and hash together),
//! never the password itself.
//!
//! Hashing is slow on purpose (tens of milliseconds, 19 MiB of memory), so
//! callers run [`hash_password`] and [`verify_password`] on a blocking
//! thread, a few at a time (see `accounts_service.rs`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use dupla::kv::Kv;
use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock};

const ACCOUNTS_TREE: &str = "accounts";

/// Shortest login: two letters are too easy to take by accident.
pub const MIN_LOGIN_LEN: usize = 3;
/// Longest login: it is shown before every chat line.
pub const MAX_LOGIN_LEN: usize = 32;
/// Longest first or last names, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest gender, in characters.
pub const MAX_GENDER_CHARS: usize = 32;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password, in bytes: bounds the work one request can ask of argon2.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Youngest and oldest age accepted, in years.
pub const AGE_RANGE: std::ops::RangeInclusive<u32> = 1..=150;

/// One account as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Unique login, 3–32 of `[a-z0-9_.-]`.
    pub login: String,
    /// First names, as given.
    pub first_names: String,
    /// Last names, as given.
    pub last_names: String,
    /// Age in years.
    pub age: u32,
    /// Gender, free text.
    pub gender: String,
    /// argon2id PHC string of the password.
    pub password_hash: String,
    /// May administer others: granted only by an operator
    /// (`dupla-manager admin create|grant`), never by registering.
    pub admin: bool,
    /// May only list and restore (no backups, no deletions): set by an
    /// admin. Absent in records from before roles, which read as `false`.
    #[serde(default)]
    pub viewer: bool,
    /// Registration time, ms since the Unix epoch.
    pub registered_unix_ms: i64,
}

/// What an account may do. Stored as the two flags `admin` and `viewer`
/// (so records from before roles keep their meaning); `admin` wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything a user may, and administer other accounts.
    Admin,
    /// Back up, restore, list and delete their own files.
    User,
    /// List and restore their own files; no backups, no deletions.
    Viewer,
}

impl Role {
    /// The role's name on the wire and in JSON: `admin`, `user`, `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
        }
    }

    /// Whether the role may write: back up, delete, record or forget
    /// snapshots.
    pub fn may_write(self) -> bool {
        self != Role::Viewer
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    fn from_str(text: &str) -> Result<Role> {
        match text {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "viewer" => Ok(Role::Viewer),
            other => Err(Error::InvalidInput(format!(
                "unknown role {:?}: use admin, user or viewer",
                dupla::name::excerpt(other)
            ))),
        }
    }
}

impl Account {
    /// The account's role.
    pub fn role(&self) -> Role {
        match (self.admin, self.viewer) {
            (true, _) => Role::Admin,
            (false, true) => Role::Viewer,
            (false, false) => Role::User,
        }
    }
}

/// What a new user provides, before validation.
#[derive(Clone, Default)]
pub struct NewAccount {
    /// Wanted login.
    pub login: String,
    /// First names.
    pub first_names: String,
    /// Last names.
    pub last_names: String,
    /// Age in years.
    pub age: u32,
    /// Gender.
    pub gender: String,
    /// The password in clear; hashed before anything is stored.
    pub password: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("login", &self.login)
            .field("password", &"..")
            .finish_non_exhaustive()
    }
}

impl NewAccount {
    /// The account to store, with the password's hash, the admin role as
    /// given, registered now.
    pub fn into_account(self, password_hash: String, admin: bool) -> Account {
        Account {
            login: self.login,
            first_names: self.first_names,
            last_names: self.last_names,
            age: self.age,
            gender: self.gender,
            password_hash,
            admin,
            viewer: false,
            registered_unix_ms: dupla::clock::unix_ms(),
        }
    }
}

/// Check a login's shape: 3–32 of `[a-z0-9_.-]`.
pub fn validate_login(login: &str) -> Result<()> {
    if !(MIN_LOGIN_LEN..=MAX_LOGIN_LEN).contains(&login.len()) {
        return Err(Error::InvalidInput(format!(
            "login: {MIN_LOGIN_LEN} to {MAX_LOGIN_LEN} characters, got {}",
            login.chars().count()
        )));
    }
    if let Some(bad) = login
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
    {
        return Err(Error::InvalidInput(format!(
            "login: only lowercase letters a-z, digits and _ . - are allowed, not {bad:?}"
        )));
    }
    Ok(())
}

/// Check a free-text field: non-empty after trimming, bounded, no control
/// characters (they would corrupt every listing they appear in).
fn validate_text(field: &str, value: &str, max_chars: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::InvalidInput(format!("{field}: must not be empty")));
    }
    if value.chars().count() > max_chars {
        return Err(Error::InvalidInput(format!(
            "{field}: at most {max_chars} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{field}: control characters are not allowed"
        )));
    }
    Ok(())
}

/// Check a password's length (its content is the user's business).
pub fn validate_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::InvalidInput(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidInput(format!(
            "password: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Check every field of a registration, naming the first bad one. The
/// profile (names, age, gender) is optional — the social shell registers
/// with a login and a password only — but checked when given: empty text
/// and age 0 mean "not given".
pub fn validate(new: &NewAccount) -> Result<()> {
    validate_login(&new.login)?;
    let given = |text: &str| !text.is_empty();
    if given(&new.first_names) {
        validate_text("first names", &new.first_names, MAX_NAME_CHARS)?;
    }
    if given(&new.last_names) {
        validate_text("last names", &new.last_names, MAX_NAME_CHARS)?;
    }
    if new.age != 0 && !AGE_RANGE.contains(&new.age) {
        return Err(Error::InvalidInput(format!(
            "age: a whole number from {} to {}, got {}",
            AGE_RANGE.start(),
            AGE_RANGE.end(),
            new.age
        )));
    }
    if given(&new.gender) {
        validate_text("gender", &new.gender, MAX_GENDER_CHARS)?;
    }
    validate_password(&new.password)
}

/// The argon2id PHC string of `password` with a fresh random salt. Slow:
/// call it on a blocking thread.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Internal(format!("password hashing: {e}")))
}

/// Whether `password` matches the PHC string `hash`. Slow: call it on a
/// blocking thread. A malformed stored hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches in practice, verified against when the login
/// is unknown, so a wrong login takes as long as a wrong password and the
/// answer time does not reveal which logins exist.
pub fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        hash_password(&hex::encode(rand::random::<[u8; 16]>()))
            .expect("invariant: hashing a fixed-size random password succeeds")
    })
}

/// The accounts, over [`Kv`].
pub struct Accounts {
    kv: Arc<dyn Kv>,
    /// Serialises registrations, so two users cannot take the same login and
    /// only one account can be the first (the Kv has no compare-and-swap).
    write: Mutex<()>,
}

fn encode(account: &Account) -> Result<Vec<u8>> {
    serde_json::to_vec(account).map_err(|e| Error::Internal(format!("encoding an account: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Account> {
    serde_json::from_slice(bytes).map_err(|e| Error::Internal(format!("decoding an account: {e}")))
}

impl Accounts {
    /// The accounts stored in `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Accounts {
            kv,
            write: Mutex::new(()),
        }
    }

    /// Store a new account whose password is already hashed, with the
    /// admin role as `account.admin` says (the caller decides: registration
    /// never grants it). `ALREADY_EXISTS` if the login is taken.
    pub fn create(&self, account: Account) -> Result<Account> {
        validate_login(&account.login)?;
        let _guard = self.write.lock().expect("accounts lock poisoned");
        if self
            .kv
            .get(ACCOUNTS_TREE, account.login.as_bytes())?
            .is_some()
        {
            return Err(Error::AlreadyExists(format!(
                "login {:?} is taken; choose another",
                account.login
            )));
        }
        self.kv
            .put(ACCOUNTS_TREE, account.login.as_bytes(), &encode(&account)?)?;
        self.kv.flush()?;
        Ok(account)
    }

    /// The account of `login`, if any.
    pub fn get(&self, login: &str) -> Result<Option<Account>> {
        self.kv
            .get(ACCOUNTS_TREE, login.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Whether `login` has an account.
    pub fn exists(&self, login: &str) -> Result<bool> {
        Ok(self.kv.get(ACCOUNTS_TREE, login.as_bytes())?.is_some())
    }

    /// Every account, in login order.
    pub fn all(&self) -> Result<Vec<Account>> {
        self.kv
            .scan_prefix(ACCOUNTS_TREE, b"")?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Every login, in order.
    pub fn logins(&self) -> Result<Vec<String>> {
        Ok(self
            .kv
            .scan_prefix(ACCOUNTS_TREE, b"")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    /// Grant or revoke `login`'s admin role durably; `NOT_FOUND` if there
    /// is no such account.
    pub fn set_admin(&self, login: &str, admin: bool) -> Result<Account> {
        let _guard = self.write.lock().expect("accounts lock poisoned");
        let mut account = self.get(login)?.ok_or_else(|| {
            Error::NotFound(format!("no account {:?}", dupla::name::excerpt(login)))
        })?;
        account.admin = admin;
        self.kv
            .put(ACCOUNTS_TREE, login.as_bytes(), &encode(&account)?)?;
        self.kv.flush()?;
        Ok(account)
    }

    /// Give `login` `role` durably; `NOT_FOUND` if there is no such account,
    /// `FAILED_PRECONDITION` if it is the last admin and `role` is not admin
    /// (no one could administer accounts any more).
    pub fn set_role(&self, login: &str, role: Role) -> Result<Account> {
        let _guard = self.write.lock().expect("accounts lock poisoned");
        let mut account = self.get(login)?.ok_or_else(|| {
            Error::NotFound(format!("no account {:?}", dupla::name::excerpt(login)))
        })?;
        if account.admin && role != Role::Admin {
            self.keep_an_admin(login, "take the admin role from")?;
        }
        account.admin = role == Role::Admin;
        account.viewer = role == Role::Viewer;
        self.kv
            .put(ACCOUNTS_TREE, login.as_bytes(), &encode(&account)?)?;
        self.kv.flush()?;
        Ok(account)
    }

    /// Delete `login`'s account durably, returning it (`None` if there was
    /// none). `FAILED_PRECONDITION` if it is the last admin.
    pub fn delete(&self, login: &str) -> Result<Option<Account>> {
        let _guard = self.write.lock().expect("accounts lock poisoned");
        if self.get(login)?.is_some_and(|account| account.admin) {
            self.keep_an_admin(login, "delete")?;
        }
        let old = self.kv.delete(ACCOUNTS_TREE, login.as_bytes())?;
        self.kv.flush()?;
        old.map(|b| decode(&b)).transpose()
    }

    /// Refuse to `what` the admin `login` unless another account is an admin
    /// too, so some account can always administer the others. Called with
    /// `write` held, so two admins cannot demote each other at once.
    /// (`dupla-manager admin grant|revoke`, [`Accounts::set_admin`], is the
    /// operator's way round it and stays unchecked.)
    fn keep_an_admin(&self, login: &str, what: &str) -> Result<()> {
        let another = self
            .all()?
            .iter()
            .any(|account| account.admin && account.login != login);
        if another {
            return Ok(());
        }
        Err(Error::Stale(format!(
            "cannot {what} {:?}: it is the last admin account; give another account the admin role first",
            dupla::name::excerpt(login)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupla::kv::{MemoryKv, SledKv};

    fn new(login: &str) -> NewAccount {
        NewAccount {
            login: login.into(),
            first_names: "Ada".into(),
            last_names: "Lovelace".into(),
            age: 36,
            gender: "female".into(),
            password: "correct horse".into(),
        }
    }

    fn stored(login: &str) -> Account {
        Account {
            login: login.into(),
            first_names: "Ada".into(),
            last_names: "Lovelace".into(),
            age: 36,
            gender: "female".into(),
            password_hash: "not-a-real-hash".into(),
            admin: false,
            viewer: false,
            registered_unix_ms: 1,
        }
    }

    #[test]
    fn field_rules() {
        assert!(validate(&new("ada")).is_ok());
        assert!(validate(&new("a.b-c_9")).is_ok());
        for bad in ["ab", "Ada", "a b", "ñandú", "x/y", &"a".repeat(33), ""] {
            let err = validate(&new(bad)).unwrap_err();
            assert!(err.to_string().starts_with("login"), "{bad}: {err}");
        }
        let with = |f: fn(&mut NewAccount)| {
            let mut n = new("ada");
            f(&mut n);
            validate(&n).unwrap_err().to_string()
        };
        assert!(with(|n| n.first_names = "  ".into()).starts_with("first names"));
        assert!(with(|n| n.last_names = "x".repeat(101)).starts_with("last names"));
        assert!(with(|n| n.last_names = "a\nb".into()).starts_with("last names"));
        assert!(with(|n| n.age = 151).starts_with("age"));
        assert!(with(|n| n.gender = "x".repeat(33)).starts_with("gender"));
        // The profile is optional (the social shell gives only a login and
        // a password): empty text and age 0 mean "not given".
        let bare = NewAccount {
            login: "ada".into(),
            password: "correct horse".into(),
            ..Default::default()
        };
        assert!(validate(&bare).is_ok());
        assert!(with(|n| n.password = "short".into()).starts_with("password"));
        assert!(with(|n| n.password = "p".repeat(1025)).starts_with("password"));
        assert!(!format!("{:?}", new("ada")).contains("correct horse"));
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "garbage"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
        assert!(!verify_password("", decoy_hash()));
    }

    fn suite(accounts: &Accounts) {
        assert_eq!(accounts.get("ada").unwrap(), None);
        let first = accounts.create(stored("ada")).unwrap();
        assert!(!first.admin, "registering first grants nothing");
        let second = accounts.create(stored("bob")).unwrap();
        assert!(!second.admin);
        let err = accounts.create(stored("ada")).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)));
        assert_eq!(accounts.logins().unwrap(), ["ada", "bob"]);
        assert!(accounts.exists("bob").unwrap());
        assert_eq!(accounts.delete("bob").unwrap(), Some(second));
        assert_eq!(accounts.delete("bob").unwrap(), None);
        assert_eq!(accounts.all().unwrap(), vec![first]);
        assert!(accounts.set_admin("ada", true).unwrap().admin);
        assert!(matches!(
            accounts.set_admin("bob", true),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn the_last_admin_can_be_neither_demoted_nor_deleted() {
        let accounts = Accounts::new(Arc::new(MemoryKv::new()));
        let admin = |login: &str| Account {
            admin: true,
            ..stored(login)
        };
        accounts.create(admin("root")).unwrap();
        accounts.create(stored("bob")).unwrap();
        for role in [Role::User, Role::Viewer] {
            let err = accounts.set_role("root", role).unwrap_err();
            assert!(matches!(err, Error::Stale(_)), "{err:?}");
            assert!(err.to_string().contains("last admin"), "{err}");
        }
        let err = accounts.delete("root").unwrap_err();
        assert!(matches!(err, Error::Stale(_)), "{err:?}");
        assert!(accounts.get("root").unwrap().unwrap().admin, "unchanged");
        // Others come and go; an admin may stay an admin.
        assert_eq!(
            accounts.set_role("root", Role::Admin).unwrap().role(),
            Role::Admin
        );
        assert_eq!(
            accounts.set_role("bob", Role::Viewer).unwrap().role(),
            Role::Viewer
        );
        assert!(accounts.delete("nobody").unwrap().is_none());
        // With a second admin either may go, but not both.
        accounts.set_role("bob", Role::Admin).unwrap();
        assert_eq!(
            accounts.set_role("root", Role::User).unwrap().role(),
            Role::User
        );
        assert!(matches!(
            accounts.set_role("bob", Role::User),
            Err(Error::Stale(_))
        ));
        assert!(matches!(accounts.delete("bob"), Err(Error::Stale(_))));
        accounts.set_role("root", Role::Admin).unwrap();
        assert!(accounts.delete("bob").unwrap().unwrap().admin);
        assert!(matches!(accounts.delete("root"), Err(Error::Stale(_))));
        // The operator's tool is the way round it.
        assert!(!accounts.set_admin("root", false).unwrap().admin);
    }

    #[test]
    fn memory_accounts() {
        suite(&Accounts::new(Arc::new(MemoryKv::new())));
    }

    #[test]
    fn sled_accounts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        suite(&Accounts::new(Arc::new(SledKv::open(dir.path()).unwrap())));
        let reopened = Accounts::new(Arc::new(SledKv::open(dir.path()).unwrap()));
        assert!(reopened.get("ada").unwrap().unwrap().admin);
    }
}
