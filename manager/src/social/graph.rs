//! The social graph: invitations, friendships, posts, groups and group
//! memberships, kept in the manager's database behind the [`Kv`] trait, so
//! it survives restarts and every storage server sees the same graph
//! whichever one a user is assigned to. Each rule of the assignment's
//! command table is one method returning an [`Outcome`]; the wire lives in
//! `social_service.rs`.
//!
//! Every write goes through one lock and one [`Batch`], so a record and its
//! reverse index never disagree. Keys join logins and group names with a
//! NUL byte, which neither may contain.

use crate::identity::accounts::Accounts;
use dupla::kv::{Batch, Kv};
use dupla::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Invitations received: `to \0 from` → when.
const INVITES: &str = "social_invites";
/// Invitations sent (reverse index): `from \0 to` → when.
const INVITED: &str = "social_invited";
/// Friendships, both directions: `a \0 b` → since when.
const FRIENDS: &str = "social_friends";
/// Posts: `author \0 seq` (big-endian) → [`StoredPost`].
const POSTS: &str = "social_posts";
/// Groups: `name` → [`Group`].
const GROUPS: &str = "social_groups";
/// Members: `group \0 login` → when they joined.
const MEMBERS: &str = "social_members";
/// Groups joined (reverse index): `login \0 group` → when.
const JOINED: &str = "social_joined";
/// Counters: `post_seq` → the last post's sequence number.
const META: &str = "social_meta";
const POST_SEQ_KEY: &[u8] = b"post_seq";

/// Longest post or message, in bytes: a chat line, not a document.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest group name, in characters.
pub const MAX_GROUP_CHARS: usize = 64;
/// Posts one `receive-post` answers with at most (the newest ones): a
/// reply stays small whatever the friends wrote over the years.
pub const MAX_POSTS_LISTED: usize = 1000;

/// How a social request ended (see the command table in docs/social.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// An invitation to oneself.
    SelfInvite,
    /// They are friends already.
    AlreadyFriend,
    /// The caller invited them already.
    AlreadyInvited,
    /// They invited the caller: accepting is the way.
    InvitedYou,
    /// No account has that login.
    NoSuchUser,
    /// There is no invitation to accept.
    NotInvited,
    /// A message to someone who is not a friend.
    NotFriend,
    /// A message to a friend with no open message stream.
    NotOnline,
    /// The group name is taken.
    GroupExists,
    /// No group has that name.
    NoSuchGroup,
    /// The caller is a member already.
    AlreadyMember,
    /// A group message from someone outside the group.
    NotMember,
}

/// A post as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPost {
    /// Global sequence number: the order posts were made in.
    pub seq: u64,
    /// Who posted it.
    pub author: String,
    /// The text.
    pub text: String,
    /// When, ms since the Unix epoch.
    pub posted_unix_ms: i64,
}

/// A group as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Group {
    creator: String,
    created_unix_ms: i64,
}

/// The social graph.
pub struct Social {
    kv: Arc<dyn Kv>,
    accounts: Arc<Accounts>,
    /// Serialises writes, so check-then-write rules (one invitation per
    /// pair, unique group names) hold under concurrent calls.
    writes: Mutex<()>,
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn prefix(part: &str) -> Vec<u8> {
    let mut key = part.as_bytes().to_vec();
    key.push(0);
    key
}

/// The second part of a `a \0 b` key.
fn second(key: &[u8]) -> String {
    let at = key
        .iter()
        .position(|b| *b == 0)
        .map_or(key.len(), |i| i + 1);
    String::from_utf8_lossy(&key[at..]).into_owned()
}

fn now_ms() -> Vec<u8> {
    dupla::clock::unix_ms().to_be_bytes().to_vec()
}

/// Check a post's or message's text: non-empty, bounded, printable.
pub fn validate_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::InvalidInput("the message is empty".into()));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::InvalidInput(format!(
            "the message is longer than {MAX_TEXT_BYTES} bytes"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "the message has control characters".into(),
        ));
    }
    Ok(())
}

/// Check a group name: 1–64 characters, no spaces or control characters
/// (the shell splits on spaces; NUL separates key parts).
pub fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() || group.chars().count() > MAX_GROUP_CHARS {
        return Err(Error::InvalidInput(format!(
            "a group name has 1 to {MAX_GROUP_CHARS} characters"
        )));
    }
    if group.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::InvalidInput(
            "a group name has no spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// A login as a key part: shaped like a login, else it cannot exist (and
/// must not reach a key).
fn plausible_login(login: &str) -> bool {
    crate::identity::accounts::validate_login(login).is_ok()
}

impl Social {
    /// The graph in `kv`; `accounts` says which logins exist.
    pub fn new(kv: Arc<dyn Kv>, accounts: Arc<Accounts>) -> Self {
        Social {
            kv,
            accounts,
            writes: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().expect("social writes lock poisoned")
    }

    fn has(&self, tree: &str, key: &[u8]) -> Result<bool> {
        Ok(self.kv.get(tree, key)?.is_some())
    }

    /// The second parts of every `of \0 x` key of `tree`, in order.
    fn seconds(&self, tree: &str, of: &str) -> Result<Vec<String>> {
        Ok(self
            .kv
            .scan_prefix(tree, &prefix(of))?
            .iter()
            .map(|(k, _)| second(k))
            .collect())
    }

    /// Whether an account named `login` exists.
    pub fn user_exists(&self, login: &str) -> Result<bool> {
        Ok(plausible_login(login) && self.accounts.exists(login)?)
    }

    /// Whether `a` and `b` are friends.
    pub fn are_friends(&self, a: &str, b: &str) -> Result<bool> {
        self.has(FRIENDS, &key(&[a, b]))
    }

    /// `me` invites `id`.
    pub fn invite(&self, me: &str, id: &str) -> Result<Outcome> {
        if me == id {
            return Ok(Outcome::SelfInvite);
        }
        if !self.user_exists(id)? {
            return Ok(Outcome::NoSuchUser);
        }
        let _writes = self.lock();
        if self.are_friends(me, id)? {
            return Ok(Outcome::AlreadyFriend);
        }
        if self.has(INVITES, &key(&[id, me]))? {
            return Ok(Outcome::AlreadyInvited);
        }
        if self.has(INVITES, &key(&[me, id]))? {
            return Ok(Outcome::InvitedYou);
        }
        let mut batch = Batch::new();
        batch.put(INVITES, key(&[id, me]), now_ms());
        batch.put(INVITED, key(&[me, id]), now_ms());
        self.kv.apply(&batch)?;
        self.kv.flush()?;
        Ok(Outcome::Ok)
    }

    /// Who invited `me`, in name order.
    pub fn invitations(&self, me: &str) -> Result<Vec<String>> {
        self.seconds(INVITES, me)
    }

    /// `me` accepts `id`'s invitation.
    pub fn accept(&self, me: &str, id: &str) -> Result<Outcome> {
        if !plausible_login(id) {
            return Ok(Outcome::NotInvited);
        }
        let _writes = self.lock();
        if !self.has(INVITES, &key(&[me, id]))? {
            return Ok(Outcome::NotInvited);
        }
        let mut batch = Batch::new();
        batch.delete(INVITES, key(&[me, id]));
        batch.delete(INVITED, key(&[id, me]));
        batch.put(FRIENDS, key(&[me, id]), now_ms());
        batch.put(FRIENDS, key(&[id, me]), now_ms());
        self.kv.apply(&batch)?;
        self.kv.flush()?;
        Ok(Outcome::Ok)
    }

    /// `me`'s friends, in name order.
    pub fn friends(&self, me: &str) -> Result<Vec<String>> {
        self.seconds(FRIENDS, me)
    }

    /// `me` posts `text`.
    pub fn post(&self, me: &str, text: &str) -> Result<Outcome> {
        validate_text(text)?;
        let _writes = self.lock();
        let seq = self
            .kv
            .get(META, POST_SEQ_KEY)?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_be_bytes)
            + 1;
        let post = StoredPost {
            seq,
            author: me.to_string(),
            text: text.to_string(),
            posted_unix_ms: dupla::clock::unix_ms(),
        };
        let value = serde_json::to_vec(&post).map_err(|e| Error::Internal(format!("post: {e}")))?;
        let mut post_key = prefix(me);
        post_key.extend_from_slice(&seq.to_be_bytes());
        let mut batch = Batch::new();
        batch.put(META, POST_SEQ_KEY.to_vec(), seq.to_be_bytes().to_vec());
        batch.put(POSTS, post_key, value);
        self.kv.apply(&batch)?;
        self.kv.flush()?;
        Ok(Outcome::Ok)
    }

    /// The posts of `me`'s friends, oldest first, the newest
    /// [`MAX_POSTS_LISTED`] at most.
    pub fn friends_posts(&self, me: &str) -> Result<Vec<StoredPost>> {
        let mut posts = Vec::new();
        for friend in self.friends(me)? {
            for (_, value) in self.kv.scan_prefix(POSTS, &prefix(&friend))? {
                match serde_json::from_slice::<StoredPost>(&value) {
                    Ok(post) => posts.push(post),
                    Err(e) => tracing::warn!(%friend, error = %e, "skipping an unreadable post"),
                }
            }
        }
        posts.sort_by_key(|p| p.seq);
        let skip = posts.len().saturating_sub(MAX_POSTS_LISTED);
        Ok(posts.split_off(skip))
    }

    /// `me` creates `group` and joins it.
    pub fn create_group(&self, me: &str, group: &str) -> Result<Outcome> {
        validate_group(group)?;
        let _writes = self.lock();
        if self.has(GROUPS, group.as_bytes())? {
            return Ok(Outcome::GroupExists);
        }
        let record = Group {
            creator: me.to_string(),
            created_unix_ms: dupla::clock::unix_ms(),
        };
        let value =
            serde_json::to_vec(&record).map_err(|e| Error::Internal(format!("group: {e}")))?;
        let mut batch = Batch::new();
        batch.put(GROUPS, group.as_bytes().to_vec(), value);
        batch.put(MEMBERS, key(&[group, me]), now_ms());
        batch.put(JOINED, key(&[me, group]), now_ms());
        self.kv.apply(&batch)?;
        self.kv.flush()?;
        Ok(Outcome::Ok)
    }

    /// Every group, in name order.
    pub fn groups(&self) -> Result<Vec<String>> {
        Ok(self
            .kv
            .scan_prefix(GROUPS, b"")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    /// `me`'s groups, in name order.
    pub fn joined(&self, me: &str) -> Result<Vec<String>> {
        self.seconds(JOINED, me)
    }

    /// Whether `group` exists.
    pub fn group_exists(&self, group: &str) -> Result<bool> {
        Ok(validate_group(group).is_ok() && self.has(GROUPS, group.as_bytes())?)
    }

    /// Whether `me` is a member of `group`.
    pub fn is_member(&self, me: &str, group: &str) -> Result<bool> {
        self.has(MEMBERS, &key(&[group, me]))
    }

    /// The members of `group`, in name order.
    pub fn members(&self, group: &str) -> Result<Vec<String>> {
        self.seconds(MEMBERS, group)
    }

    /// `me` joins `group`.
    pub fn join(&self, me: &str, group: &str) -> Result<Outcome> {
        let _writes = self.lock();
        if !self.group_exists(group)? {
            return Ok(Outcome::NoSuchGroup);
        }
        if self.is_member(me, group)? {
            return Ok(Outcome::AlreadyMember);
        }
        let mut batch = Batch::new();
        batch.put(MEMBERS, key(&[group, me]), now_ms());
        batch.put(JOINED, key(&[me, group]), now_ms());
        self.kv.apply(&batch)?;
        self.kv.flush()?;
        Ok(Outcome::Ok)
    }

    /// Remove everything of `login`: invitations both ways, friendships,
    /// posts and group memberships (its groups stay, for their other
    /// members). Called when the account is deleted.
    pub fn forget_user(&self, login: &str) -> Result<()> {
        let _writes = self.lock();
        let mut batch = Batch::new();
        for from in self.seconds(INVITES, login)? {
            batch.delete(INVITES, key(&[login, &from]));
            batch.delete(INVITED, key(&[&from, login]));
        }
        for to in self.seconds(INVITED, login)? {
            batch.delete(INVITED, key(&[login, &to]));
            batch.delete(INVITES, key(&[&to, login]));
        }
        for friend in self.friends(login)? {
            batch.delete(FRIENDS, key(&[login, &friend]));
            batch.delete(FRIENDS, key(&[&friend, login]));
        }
        for (post_key, _) in self.kv.scan_prefix(POSTS, &prefix(login))? {
            batch.delete(POSTS, post_key);
        }
        for group in self.joined(login)? {
            batch.delete(JOINED, key(&[login, &group]));
            batch.delete(MEMBERS, key(&[&group, login]));
        }
        self.kv.apply(&batch)?;
        self.kv.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::accounts::NewAccount;
    use dupla::kv::MemoryKv;

    fn graph(users: &[&str]) -> Social {
        let kv: Arc<dyn Kv> = Arc::new(MemoryKv::new());
        let accounts = Arc::new(Accounts::new(kv.clone()));
        for login in users {
            let new = NewAccount {
                login: login.to_string(),
                ..Default::default()
            };
            accounts
                .create(new.into_account("x".into(), false))
                .unwrap();
        }
        Social::new(kv, accounts)
    }

    #[test]
    fn invitations_follow_the_table() {
        let g = graph(&["ann", "bob", "cat"]);
        assert_eq!(g.invite("ann", "ann").unwrap(), Outcome::SelfInvite);
        assert_eq!(g.invite("ann", "zed").unwrap(), Outcome::NoSuchUser);
        assert_eq!(g.invite("ann", "BAD name").unwrap(), Outcome::NoSuchUser);
        assert_eq!(g.invite("ann", "bob").unwrap(), Outcome::Ok);
        assert_eq!(g.invite("ann", "bob").unwrap(), Outcome::AlreadyInvited);
        assert_eq!(g.invite("bob", "ann").unwrap(), Outcome::InvitedYou);
        assert_eq!(g.invitations("bob").unwrap(), vec!["ann"]);
        assert_eq!(g.accept("bob", "cat").unwrap(), Outcome::NotInvited);
        assert_eq!(g.accept("bob", "ann").unwrap(), Outcome::Ok);
        assert!(g.invitations("bob").unwrap().is_empty());
        assert_eq!(g.invite("bob", "ann").unwrap(), Outcome::AlreadyFriend);
        assert_eq!(g.friends("ann").unwrap(), vec!["bob"]);
        assert_eq!(g.friends("bob").unwrap(), vec!["ann"]);
    }

    #[test]
    fn posts_of_friends_come_oldest_first() {
        let g = graph(&["ann", "bob", "cat"]);
        for (a, b) in [("ann", "bob"), ("ann", "cat")] {
            g.invite(a, b).unwrap();
            g.accept(b, a).unwrap();
        }
        g.post("cat", "one").unwrap();
        g.post("bob", "two").unwrap();
        g.post("ann", "mine").unwrap();
        g.post("cat", "three").unwrap();
        let texts: Vec<_> = g
            .friends_posts("ann")
            .unwrap()
            .into_iter()
            .map(|p| format!("{}: {}", p.author, p.text))
            .collect();
        assert_eq!(texts, ["cat: one", "bob: two", "cat: three"]);
        assert!(g.post("ann", " ").is_err());
        assert!(g.post("ann", "a\u{7}b").is_err());
    }

    #[test]
    fn groups_and_members() {
        let g = graph(&["ann", "bob"]);
        assert_eq!(g.create_group("ann", "g1").unwrap(), Outcome::Ok);
        assert_eq!(g.create_group("bob", "g1").unwrap(), Outcome::GroupExists);
        assert_eq!(g.join("bob", "nope").unwrap(), Outcome::NoSuchGroup);
        assert_eq!(g.join("ann", "g1").unwrap(), Outcome::AlreadyMember);
        assert_eq!(g.join("bob", "g1").unwrap(), Outcome::Ok);
        assert_eq!(g.members("g1").unwrap(), vec!["ann", "bob"]);
        assert_eq!(g.joined("bob").unwrap(), vec!["g1"]);
        assert!(g.create_group("ann", "two words").is_err());
    }

    #[test]
    fn a_forgotten_user_leaves_no_trace() {
        let g = graph(&["ann", "bob", "cat"]);
        g.invite("ann", "bob").unwrap();
        g.accept("bob", "ann").unwrap();
        g.invite("ann", "cat").unwrap();
        g.invite("cat", "bob").unwrap();
        g.post("ann", "hello").unwrap();
        g.create_group("ann", "g").unwrap();
        g.join("bob", "g").unwrap();
        g.forget_user("ann").unwrap();
        assert!(g.friends("bob").unwrap().is_empty());
        assert!(g.invitations("cat").unwrap().is_empty());
        assert_eq!(g.invitations("bob").unwrap(), vec!["cat"]);
        assert!(g.friends_posts("bob").unwrap().is_empty());
        assert_eq!(g.members("g").unwrap(), vec!["bob"]);
        assert_eq!(g.groups().unwrap(), vec!["g"]);
    }
}
