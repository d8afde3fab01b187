//! `dupla register`, `login`, `logout`, `unregister`, `whoami` and `users`
//! (administration): the client side of `dupla.v1.Accounts`.
//!
//! Passwords are read without echo from the terminal (rpassword), or as the
//! first line of standard input with `--password-stdin`, for scripts. They
//! are sent to the manager once and never stored; what `login` keeps is the
//! token, in `ROOT/.dupla/session.json` (see [`crate::session_store`]).

use crate::cli::{RegisterArgs, UsersArgs};
use crate::output::{format_unix_ms, table, Output};
use crate::session::Client;
use crate::session_store::{self, SavedSession};
use anyhow::{bail, Context};
use dupla::v1::{
    DeleteUserRequest, GetUserRequest, ListUsersRequest, LoginReply, LoginRequest, LogoutRequest,
    RegisterRequest, UnregisterRequest, User, WhoAmIReply, WhoAmIRequest,
};
use dupla::{Error, Result};
use serde::Serialize;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

impl Client {
    /// Create an account.
    pub async fn register(&self, request: RegisterRequest) -> Result<User> {
        let mut accounts = self.manager_accounts().await?;
        let reply = accounts
            .register(self.request(request))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner();
        reply
            .user
            .ok_or_else(|| Error::Internal("the manager's reply has no user".into()))
    }

    /// Trade `login` and `password` for a token and an assigned server.
    pub async fn login(&self, login: &str, password: &str) -> Result<LoginReply> {
        let mut accounts = self.manager_accounts().await?;
        Ok(accounts
            .login(self.request(LoginRequest {
                login: login.into(),
                password: password.into(),
            }))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner())
    }

    /// Revoke this client's token.
    pub async fn logout(&self) -> Result<()> {
        let mut accounts = self.manager_accounts().await?;
        accounts
            .logout(self.request(LogoutRequest {}))
            .await
            .map_err(|s| self.manager_error(s))?;
        Ok(())
    }

    /// Delete this client's account, checking `password` again.
    pub async fn unregister(&self, password: &str) -> Result<()> {
        let mut accounts = self.manager_accounts().await?;
        accounts
            .unregister(self.request(UnregisterRequest {
                password: password.into(),
            }))
            .await
            .map_err(|s| self.manager_error(s))?;
        Ok(())
    }

    /// Who this client's token belongs to.
    pub async fn whoami(&self) -> Result<WhoAmIReply> {
        let mut accounts = self.manager_accounts().await?;
        Ok(accounts
            .who_am_i(self.request(WhoAmIRequest {}))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner())
    }

    /// Every account (admins only).
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let mut accounts = self.manager_accounts().await?;
        Ok(accounts
            .list_users(self.request(ListUsersRequest {}))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner()
            .users)
    }

    /// One account (admins only).
    pub async fn get_user(&self, login: &str) -> Result<User> {
        let mut accounts = self.manager_accounts().await?;
        Ok(accounts
            .get_user(self.request(GetUserRequest {
                login: login.into(),
            }))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner())
    }

    /// Delete another account (admins only).
    pub async fn delete_user(&self, login: &str) -> Result<()> {
        let mut accounts = self.manager_accounts().await?;
        accounts
            .delete_user(self.request(DeleteUserRequest {
                login: login.into(),
            }))
            .await
            .map_err(|s| self.manager_error(s))?;
        Ok(())
    }
}

/// An account for `--json` output.
#[derive(Debug, Serialize)]
pub struct UserJson {
    /// Login.
    pub login: String,
    /// First names.
    pub first_names: String,
    /// Last names.
    pub last_names: String,
    /// Age.
    pub age: u32,
    /// Gender.
    pub gender: String,
    /// Has the admin role.
    pub admin: bool,
    /// In the chat now.
    pub online: bool,
    /// Registration time, ms since the Unix epoch.
    pub registered_unix_ms: i64,
}

impl From<&User> for UserJson {
    fn from(u: &User) -> Self {
        UserJson {
            login: u.login.clone(),
            first_names: u.first_names.clone(),
            last_names: u.last_names.clone(),
            age: u.age,
            gender: u.gender.clone(),
            admin: u.admin,
            online: u.online,
            registered_unix_ms: u.registered_unix_ms,
        }
    }
}

/// `dupla register`: flags, or questions for what is missing.
pub async fn register(client: &Client, args: &RegisterArgs, out: Output) -> anyhow::Result<()> {
    let ask = !args.password_stdin && std::io::stdin().is_terminal();
    let field = |value: &Option<String>, flag: &str, question: &str| -> anyhow::Result<String> {
        match value {
            Some(v) => Ok(v.clone()),
            None if ask => prompt(question),
            None => bail!("missing --{flag} (there is no terminal to ask)"),
        }
    };
    let login = field(&args.login, "login", "login (3-32 of a-z 0-9 _ . -): ")?;
    let first_names = field(&args.first_names, "first-names", "first names: ")?;
    let last_names = field(&args.last_names, "last-names", "last names: ")?;
    let age = match args.age {
        Some(age) => age,
        None => parse_age(&field(&None, "age", "age: ")?).map_err(anyhow::Error::msg)?,
    };
    let gender = field(&args.gender, "gender", "gender: ")?;
    let password = read_password(args.password_stdin, "password: ", true)?;
    let user = client
        .register(RegisterRequest {
            first_names,
            last_names,
            login,
            password,
            age,
            gender,
        })
        .await
        .map_err(|e| match e {
            // Plain text: the generic hint for "already exists" is about uploads.
            Error::AlreadyExists(message) => anyhow::anyhow!(message),
            other => other.into(),
        })?;
    let role = if user.admin { " (admin)" } else { "" };
    let human = format!(
        "registered {}{role}; now `dupla login {}`",
        user.login, user.login
    );
    out.emit(human, &UserJson::from(&user))
}

/// What `dupla login --json` prints.
#[derive(Debug, Serialize)]
struct LoginJson<'a> {
    login: &'a str,
    expires_unix_ms: i64,
    server: Option<&'a str>,
    over_capacity: bool,
    session_file: String,
}

/// `dupla login USER`: get a token and keep it under the root.
pub async fn login(
    client: &Client,
    root: &Path,
    user: &str,
    password_stdin: bool,
    out: Output,
) -> anyhow::Result<()> {
    let password = read_password(password_stdin, &format!("password for {user}: "), false)?;
    let reply = client.login(user, &password).await?;
    let server = reply.server.as_ref().map(|n| n.addr.clone());
    let saved = SavedSession {
        login: user.to_string(),
        token: reply.token.clone(),
        expires_unix_ms: reply.expires_unix_ms,
        manager: client.manager_addr().to_string(),
        server: server.clone(),
    };
    let path = session_store::save(root, &saved)
        .with_context(|| format!("saving the session under {}", root.display()))?;
    let assigned = match (&server, reply.over_capacity) {
        (Some(addr), false) => format!("storage server {addr}"),
        (Some(addr), true) => {
            format!("storage server {addr} (every server is full: over capacity)")
        }
        (None, _) => "no storage server is up yet".into(),
    };
    let human = format!(
        "logged in as {user} until {} UTC; {assigned}; session saved in {}",
        format_unix_ms(reply.expires_unix_ms),
        path.display()
    );
    out.emit(
        human,
        &LoginJson {
            login: user,
            expires_unix_ms: reply.expires_unix_ms,
            server: server.as_deref(),
            over_capacity: reply.over_capacity,
            session_file: path.display().to_string(),
        },
    )
}

/// `dupla logout`: revoke the token and forget it.
pub async fn logout(
    client: &Client,
    root: &Path,
    session: Option<&SavedSession>,
    out: Output,
) -> anyhow::Result<()> {
    let Some(session) = session else {
        bail!(
            "not logged in here (no {})",
            session_store::path(root).display()
        );
    };
    let note = match client.logout().await {
        Ok(()) => "",
        // Expired or already revoked: the manager has nothing to revoke.
        Err(Error::Unauthenticated(_)) => " (the token had already expired or been revoked)",
        Err(e) => return Err(e.into()),
    };
    session_store::remove(root)?;
    let human = format!("logged out {}{note}", session.login);
    out.emit(human, &serde_json::json!({ "logged_out": session.login }))
}

/// `dupla unregister`: delete the account after the password again.
pub async fn unregister(
    client: &Client,
    root: &Path,
    session: Option<&SavedSession>,
    password_stdin: bool,
    out: Output,
) -> anyhow::Result<()> {
    let Some(session) = session else {
        bail!("log in first: `dupla login USER`, then `dupla unregister`");
    };
    let question = format!("password for {} (to delete the account): ", session.login);
    let password = read_password(password_stdin, &question, false)?;
    client.unregister(&password).await?;
    session_store::remove(root)?;
    let human = format!("deleted the account {}", session.login);
    out.emit(human, &serde_json::json!({ "deleted": session.login }))
}

/// `dupla whoami`.
pub async fn whoami(client: &Client, out: Output) -> anyhow::Result<()> {
    let reply = client.whoami().await?;
    let user = reply.user.unwrap_or_default();
    let server = reply.server.map(|n| n.addr);
    let human = format!(
        "{} ({} {}){}; token valid until {} UTC; storage server {}",
        user.login,
        user.first_names,
        user.last_names,
        if user.admin { ", admin" } else { "" },
        format_unix_ms(reply.expires_unix_ms),
        server.as_deref().unwrap_or("none assigned")
    );
    out.emit(
        human,
        &serde_json::json!({
            "user": UserJson::from(&user),
            "expires_unix_ms": reply.expires_unix_ms,
            "server": server,
        }),
    )
}

/// `dupla users [LOGIN] [--delete]`: user administration.
pub async fn users(client: &Client, args: &UsersArgs, out: Output) -> anyhow::Result<()> {
    match (&args.login, args.delete) {
        (Some(login), true) => {
            client.delete_user(login).await?;
            out.emit(
                format!("deleted the account {login}"),
                &serde_json::json!({ "deleted": login }),
            )
        }
        (None, true) => bail!("name the account to delete: `dupla users LOGIN --delete`"),
        (Some(login), false) => {
            let user = client.get_user(login).await?;
            out.emit(
                users_table(std::slice::from_ref(&user)),
                &UserJson::from(&user),
            )
        }
        (None, false) => {
            let users = client.list_users().await?;
            let json: Vec<UserJson> = users.iter().map(UserJson::from).collect();
            out.emit_each(users_table(&users), &json)
        }
    }
}

/// Accounts as a text table.
fn users_table(users: &[User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.login.clone(),
                format!("{} {}", u.first_names, u.last_names),
                u.age.to_string(),
                u.gender.clone(),
                if u.admin { "admin" } else { "user" }.into(),
                if u.online { "online" } else { "offline" }.into(),
                format_unix_ms(u.registered_unix_ms),
            ]
        })
        .collect();
    table(
        &[
            "LOGIN",
            "NAME",
            "AGE",
            "GENDER",
            "ROLE",
            "CHAT",
            "REGISTERED (UTC)",
        ],
        &rows,
    )
}

/// An age: a whole number from 1 to 150.
pub fn parse_age(text: &str) -> std::result::Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(age) if (1..=150).contains(&age) => Ok(age),
        _ => Err(format!("age: a whole number from 1 to 150, not {text:?}")),
    }
}

/// Ask `question` on the terminal and read one answer.
fn prompt(question: &str) -> anyhow::Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim_end_matches(['\n', '\r']).to_string())
}

/// The password: the first line of stdin with `from_stdin`, else asked on
/// the terminal without echo (twice when `confirm`, for a new password).
pub fn read_password(from_stdin: bool, question: &str, confirm: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("--password-stdin: the first line of standard input is empty");
        }
        return Ok(password);
    }
    let password = rpassword::prompt_password(question).map_err(|e| {
        anyhow::anyhow!(
            "cannot ask for the password ({e}); with no terminal, pass it as the first line of standard input with --password-stdin"
        )
    })?;
    if confirm && rpassword::prompt_password("password again: ")? != password {
        bail!("the two passwords differ; nothing was registered");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_whole_numbers_in_range() {
        assert_eq!(parse_age("36"), Ok(36));
        assert_eq!(parse_age(" 1 "), Ok(1));
        for bad in ["0", "151", "-3", "thirty", "", "3.5"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
