//! `dupla shell HOST PORT`: the social network's scripted client. One
//! command a line on stdin, in the assignment's syntax, one reply a line on
//! stdout (docs/social.md has the table); received messages print as
//! `<<<alice->bob: hi>>>` and `<<<alice->GROUP<friends>: hi>>>`.
//!
//! One process holds several users: `login` keeps each one's token and
//! opens their message stream on the server the manager assigned them; the
//! first word after a command names the acting user. Output is
//! deterministic for a script: a message sent by one line is printed (by
//! every recipient logged in here) before the next line is read, because
//! the server says who it went to and the shell waits for those deliveries.
//! At end of input it waits up to a second for deliveries still due, logs
//! its users out and exits 0.

use crate::session::{Client, Role};
use dupla::v1::social_client::SocialClient;
use dupla::v1::{self as pb};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long a line waits for its message to reach the recipients logged in
/// here before the next line runs anyway. A delivery takes milliseconds;
/// the margin keeps a script's output in order on a loaded machine.
pub const LINE_DELIVERY_WAIT: Duration = Duration::from_secs(5);
/// At end of input, how long messages still due are waited for (and each
/// user's logout may take).
pub const DELIVERY_WAIT: Duration = Duration::from_secs(1);
/// How long login waits for the message stream to open.
pub const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries remembered for lines still waiting on them.
const DELIVERIES_REMEMBERED: usize = 10_000;

/// Messages received and not yet printed, and which deliveries arrived.
#[derive(Default)]
struct InboxState {
    lines: VecDeque<String>,
    /// (message id, recipient), oldest first.
    delivered: VecDeque<(String, String)>,
}

/// What the stream tasks fill and the main loop prints.
struct Inbox {
    state: Mutex<InboxState>,
    /// Bumped on every arrival.
    changed: watch::Sender<u64>,
}

impl Inbox {
    fn new() -> Arc<Self> {
        Arc::new(Inbox {
            state: Mutex::default(),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().expect("inbox lock poisoned")
    }

    /// A message for `login` arrived.
    fn arrive(&self, login: &str, message: &pb::Message) {
        let line = match pb::message::Kind::try_from(message.kind) {
            Ok(pb::message::Kind::Direct) => {
                format!("<<<{}->{}: {}>>>", message.from, message.to, message.text)
            }
            Ok(pb::message::Kind::Group) => format!(
                "<<<{}->GROUP<{}>: {}>>>",
                message.from, message.group, message.text
            ),
            _ => return,
        };
        let mut state = self.lock();
        state.lines.push_back(line);
        state
            .delivered
            .push_back((message.id.clone(), login.to_string()));
        if state.delivered.len() > DELIVERIES_REMEMBERED {
            state.delivered.pop_front();
        }
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The deliveries of `due` that have not arrived yet.
    fn missing(&self, due: &[(String, String)]) -> Vec<(String, String)> {
        let state = self.lock();
        due.iter()
            .filter(|d| !state.delivered.contains(d))
            .cloned()
            .collect()
    }

    /// Wait until every delivery of `due` arrived, or `limit` passed; the
    /// ones still missing.
    async fn wait_for(&self, due: Vec<(String, String)>, limit: Duration) -> Vec<(String, String)> {
        let mut changes = self.changed.subscribe();
        let waiting = async {
            loop {
                changes.borrow_and_update();
                if self.missing(&due).is_empty() {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, waiting).await;
        self.missing(&due)
    }

    fn take_lines(&self) -> Vec<String> {
        self.lock().lines.drain(..).collect()
    }
}

/// A user logged in in this shell.
struct User {
    client: Client,
    social: SocialClient<Channel>,
    /// Asked again by `Accounts/Unregister` when the user types `delete`:
    /// kept in this process only, never written anywhere.
    password: String,
    stream: JoinHandle<()>,
}

impl Drop for User {
    fn drop(&mut self) {
        self.stream.abort();
    }
}

/// The shell's state.
struct Shell {
    anonymous: Client,
    users: HashMap<String, User>,
    inbox: Arc<Inbox>,
    /// Deliveries a line gave up waiting for: waited for again at the end.
    overdue: Vec<(String, String)>,
}

/// The syntax of each command that names a user: (fixed words after the
/// command, whether a message follows).
fn syntax(command: &str) -> Option<(&'static str, usize, bool)> {
    Some(match command {
        "logout" => ("logout <user>", 1, false),
        "delete" => ("delete <user>", 1, false),
        "invite" => ("invite <user> <id>", 2, false),
        "list-invite" => ("list-invite <user>", 1, false),
        "accept-invite" => ("accept-invite <user> <id>", 2, false),
        "list-friend" => ("list-friend <user>", 1, false),
        "post" => ("post <user> <message>", 1, true),
        "receive-post" => ("receive-post <user>", 1, false),
        "send" => ("send <user> <friend> <message>", 2, true),
        "create-group" => ("create-group <user> <group>", 2, false),
        "list-group" => ("list-group <user>", 1, false),
        "list-joined" => ("list-joined <user>", 1, false),
        "join-group" => ("join-group <user> <group>", 2, false),
        "send-group" => ("send-group <user> <group> <message>", 2, true),
        _ => return None,
    })
}

/// The first `n` words of `text` and the rest (trimmed), or `None` when
/// there are fewer than `n` words.
fn split_words(text: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut words = Vec::with_capacity(n);
    let mut rest = text.trim_start();
    while words.len() < n {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        words.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Some((words, rest.trim_end()))
}

/// A listing, or `empty` when there is nothing.
fn listing(names: Vec<String>, empty: &str) -> Vec<String> {
    if names.is_empty() {
        vec![empty.to_string()]
    } else {
        names
    }
}

/// The reply to a refused social request, worded as the assignment does.
fn refusal(outcome: pb::Outcome, id: &str) -> String {
    use pb::Outcome as O;
    match outcome {
        O::Ok => "Success!".into(),
        O::SelfInvite => "You cannot invite yourself".into(),
        O::AlreadyFriend => format!("{id} is already your friend"),
        O::AlreadyInvited => "Already invited".into(),
        O::InvitedYou => format!("{id} has invited you"),
        O::NoSuchUser => format!("{id} does not exist"),
        O::NotInvited => format!("{id} did not invite you"),
        O::NotFriend => format!("{id} is not your friend"),
        O::NotOnline => format!("{id} is not online"),
        O::GroupExists => format!("{id} already exist"),
        O::NoSuchGroup => format!("{id} does not exist"),
        O::AlreadyMember => format!("Already a member of {id}"),
        O::NotMember => format!("You are not the member of {id}"),
        O::Unspecified => "the server gave no answer".into(),
    }
}

fn outcome_of(code: i32) -> pb::Outcome {
    pb::Outcome::try_from(code).unwrap_or(pb::Outcome::Unspecified)
}

/// Print `lines` on stdout; false when stdout is gone (stop quietly).
fn print(lines: &[String]) -> bool {
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

impl Shell {
    /// Run one line; its reply lines.
    async fn execute(&mut self, line: &str) -> Vec<String> {
        let Some((command, rest)) = split_words(line, 1) else {
            return vec![];
        };
        let command = command[0];
        match command {
            "register" => return self.register(rest).await,
            "login" => return self.login(rest).await,
            _ => {}
        }
        let Some((usage, fixed, with_message)) = syntax(command) else {
            return vec![format!("Unknown command {command}")];
        };
        // Priority: not logged in, then usage.
        let Some((user, _)) = split_words(rest, 1) else {
            return vec![format!("Usage: {usage}")];
        };
        let user = user[0].to_string();
        if !self.users.contains_key(&user) {
            return vec!["Not login yet".into()];
        }
        let args = match split_words(rest, fixed) {
            Some((words, message)) if with_message && !message.is_empty() => {
                let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
                args.push(message.to_string());
                args
            }
            Some((words, "")) if !with_message => words.iter().map(|w| w.to_string()).collect(),
            _ => return vec![format!("Usage: {usage}")],
        };
        match self.run_user_command(command, &user, &args).await {
            Ok(lines) => lines,
            Err(status) if status.code() == Code::Unauthenticated => {
                self.users.remove(&user);
                vec!["Not login yet".into()]
            }
            Err(status) => vec![status.message().to_string()],
        }
    }

    async fn register(&self, rest: &str) -> Vec<String> {
        let usage = || vec!["Usage: register <id> <password>".to_string()];
        let Some((words, "")) = split_words(rest, 2) else {
            return usage();
        };
        let request = pb::RegisterRequest {
            login: words[0].to_string(),
            password: words[1].to_string(),
            ..Default::default()
        };
        let result = match self.anonymous.manager_accounts().await {
            Ok(mut accounts) => accounts.register(request).await,
            Err(e) => return vec![e.to_string()],
        };
        match result {
            Ok(_) => vec!["Success!".into()],
            Err(status) if status.code() == Code::AlreadyExists => {
                vec![format!("{} is already used", words[0])]
            }
            Err(status) => vec![status.message().to_string()],
        }
    }

    async fn login(&mut self, rest: &str) -> Vec<String> {
        let Some((words, "")) = split_words(rest, 2) else {
            return vec!["Usage: login <id> <password>".to_string()];
        };
        let (login, password) = (words[0], words[1]);
        let request = pb::LoginRequest {
            login: login.to_string(),
            password: password.to_string(),
        };
        let result = match self.anonymous.manager_accounts().await {
            Ok(mut accounts) => accounts.login(request).await,
            Err(e) => return vec![e.to_string()],
        };
        let reply = match result {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == Code::Unauthenticated => {
                return vec!["No such user or password error".into()]
            }
            Err(status) => return vec![status.message().to_string()],
        };
        let Some(server) = reply.server else {
            return vec!["no application server is up; try again in a moment".into()];
        };
        let client = self.anonymous.clone().with_token(reply.token);
        match self.open_stream(&client, login, &server.addr).await {
            Ok((social, stream)) => {
                // A second login of the same user replaces the first, whose
                // token is logged out in the background.
                let user = User {
                    client,
                    social,
                    password: password.to_string(),
                    stream,
                };
                if let Some(old) = self.users.insert(login.to_string(), user) {
                    let client = old.client.clone();
                    drop(old);
                    tokio::spawn(async move {
                        if let Ok(mut accounts) = client.manager_accounts().await {
                            let _ = accounts.logout(client.request(pb::LogoutRequest {})).await;
                        }
                    });
                }
                vec!["Success!".into()]
            }
            Err(message) => vec![message],
        }
    }

    /// Open `login`'s message stream on `addr` and wait for READY; a task
    /// then moves its messages to the inbox.
    async fn open_stream(
        &self,
        client: &Client,
        login: &str,
        addr: &str,
    ) -> Result<(SocialClient<Channel>, JoinHandle<()>), String> {
        let channel = client
            .open(Role::Server, addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut social = SocialClient::new(channel);
        let opened = tokio::time::timeout(STREAM_OPEN_TIMEOUT, async {
            let mut stream = social
                .messages(client.request(pb::MessagesRequest {}))
                .await?
                .into_inner();
            match stream.message().await? {
                Some(m) if m.kind == pb::message::Kind::Ready as i32 => Ok(stream),
                _ => Err(Status::unavailable(
                    "the message stream closed as it opened",
                )),
            }
        })
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(status)) => return Err(status.message().to_string()),
            Err(_) => return Err(format!("the server {addr} did not open the message stream")),
        };
        let inbox = self.inbox.clone();
        let login = login.to_string();
        let task = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(message)) => inbox.arrive(&login, &message),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%login, %status, "message stream ended");
                        break;
                    }
                }
            }
        });
        Ok((social, task))
    }

    /// A command of a logged-in user; `args` are the words after the
    /// command, the message last.
    async fn run_user_command(
        &mut self,
        command: &str,
        user: &str,
        args: &[String],
    ) -> Result<Vec<String>, Status> {
        let (client, mut social, password) = {
            let me = self.users.get(user).expect("invariant: checked by execute");
            (me.client.clone(), me.social.clone(), me.password.clone())
        };
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let list = pb::SocialListRequest {};
        let said = |outcome: i32, id: &str| vec![refusal(outcome_of(outcome), id)];
        Ok(match command {
            "logout" => {
                let mut accounts = client.manager_accounts().await.map_err(status)?;
                accounts
                    .logout(client.request(pb::LogoutRequest {}))
                    .await?;
                self.users.remove(user);
                vec!["Bye!".into()]
            }
            "delete" => {
                let mut accounts = client.manager_accounts().await.map_err(status)?;
                accounts
                    .unregister(client.request(pb::UnregisterRequest { password }))
                    .await?;
                self.users.remove(user);
                vec!["Success!".into()]
            }
            "invite" => {
                let request = pb::InviteRequest { id: arg(1) };
                let reply = social.invite(client.request(request)).await?;
                said(reply.into_inner().outcome, &arg(1))
            }
            "list-invite" => {
                let reply = social.list_invites(client.request(list)).await?;
                listing(reply.into_inner().names, "No invitations")
            }
            "accept-invite" => {
                let request = pb::AcceptInviteRequest { id: arg(1) };
                let reply = social.accept_invite(client.request(request)).await?;
                said(reply.into_inner().outcome, &arg(1))
            }
            "list-friend" => {
                let reply = social.list_friends(client.request(list)).await?;
                listing(reply.into_inner().names, "No friends")
            }
            "post" => {
                let request = pb::PostRequest { text: arg(1) };
                let reply = social.post(client.request(request)).await?;
                said(reply.into_inner().outcome, "")
            }
            "receive-post" => {
                let reply = social.receive_posts(client.request(list)).await?;
                let posts = reply.into_inner().posts;
                let lines = posts
                    .into_iter()
                    .map(|p| format!("{}: {}", p.author, p.text))
                    .collect();
                listing(lines, "No posts")
            }
            "send" => {
                let request = pb::SendRequest {
                    to: arg(1),
                    text: arg(2),
                };
                let reply = social.send(client.request(request)).await?.into_inner();
                match outcome_of(reply.outcome) {
                    pb::Outcome::NoSuchUser => vec!["No such user exist".into()],
                    pb::Outcome::Ok => self.sent(reply).await,
                    other => vec![refusal(other, &arg(1))],
                }
            }
            "create-group" => {
                let request = pb::GroupRequest { group: arg(1) };
                let reply = social.create_group(client.request(request)).await?;
                said(reply.into_inner().outcome, &arg(1))
            }
            "list-group" => {
                let reply = social.list_groups(client.request(list)).await?;
                listing(reply.into_inner().names, "No groups")
            }
            "list-joined" => {
                let reply = social.list_joined(client.request(list)).await?;
                listing(reply.into_inner().names, "No groups")
            }
            "join-group" => {
                let request = pb::GroupRequest { group: arg(1) };
                let reply = social.join_group(client.request(request)).await?;
                said(reply.into_inner().outcome, &arg(1))
            }
            "send-group" => {
                let request = pb::SendGroupRequest {
                    group: arg(1),
                    text: arg(2),
                };
                let reply = social
                    .send_group(client.request(request))
                    .await?
                    .into_inner();
                match outcome_of(reply.outcome) {
                    pb::Outcome::NoSuchGroup => vec!["No such group exist".into()],
                    pb::Outcome::Ok => self.sent(reply).await,
                    other => vec![refusal(other, &arg(1))],
                }
            }
            _ => unreachable!("invariant: syntax() knows every command routed here"),
        })
    }

    /// A message went out: wait until the recipients logged in here got it,
    /// so it prints before the next line's output.
    async fn sent(&mut self, reply: pb::SendReply) -> Vec<String> {
        let due: Vec<(String, String)> = reply
            .recipients
            .into_iter()
            .filter(|r| self.users.contains_key(r))
            .map(|r| (reply.id.clone(), r))
            .collect();
        let missing = self.inbox.wait_for(due, LINE_DELIVERY_WAIT).await;
        self.overdue.extend(missing);
        vec!["Success!".into()]
    }

    /// End of input: wait a little for deliveries still due, then log every
    /// user out (their tokens lived in this process only).
    async fn finish(&mut self) {
        let overdue = std::mem::take(&mut self.overdue);
        self.inbox.wait_for(overdue, DELIVERY_WAIT).await;
        for (_, user) in self.users.drain() {
            let client = user.client.clone();
            drop(user);
            let logout = async {
                if let Ok(mut accounts) = client.manager_accounts().await {
                    let _ = accounts.logout(client.request(pb::LogoutRequest {})).await;
                }
            };
            let _ = tokio::time::timeout(DELIVERY_WAIT, logout).await;
        }
    }
}

/// A client error as a status, for the one error path.
fn status(e: dupla::Error) -> Status {
    e.into()
}

/// Run the shell against the manager `anonymous` talks to, until end of
/// input.
pub async fn run(anonymous: Client) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut shell = Shell {
        anonymous,
        users: HashMap::new(),
        inbox: Inbox::new(),
        overdue: Vec::new(),
    };
    let mut changes = shell.inbox.changed.subscribe();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0u64;
    let prompt = || {
        if interactive {
            print!("> ");
            let _ = std::io::stdout().flush();
        }
    };
    prompt();
    loop {
        let line = tokio::select! {
            // Not UTF-8 (a Latin-1 `café`): read lossily, so the line still
            // gets its one reply and the rest of the script runs.
            line = crate::chat::next_line_lossy(&mut lines) => line?,
            // Messages from users elsewhere, while this shell waits for input.
            _ = changes.changed() => {
                let received = shell.inbox.take_lines();
                if interactive && !received.is_empty() {
                    println!();
                }
                if !print(&received) {
                    return Ok(());
                }
                if !received.is_empty() {
                    prompt();
                }
                continue;
            }
        };
        let Some(line) = line else { break };
        number += 1;
        if line.lossy {
            // On stderr: stdout carries one reply per command line.
            eprintln!(
                "warning: input line {number} is not valid UTF-8; its invalid bytes were read as U+FFFD"
            );
        }
        let line = line.text;
        let mut output = shell.execute(&line).await;
        output.extend(shell.inbox.take_lines());
        changes.borrow_and_update();
        if !print(&output) {
            return Ok(());
        }
        prompt();
    }
    shell.finish().await;
    let received = shell.inbox.take_lines();
    print(&received);
    if interactive {
        println!();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_the_rest() {
        assert_eq!(
            split_words("  alice bob  hello   world ", 2),
            Some((vec!["alice", "bob"], "hello   world"))
        );
        assert_eq!(split_words("alice", 2), None);
        assert_eq!(
            split_words("alice bob", 2),
            Some((vec!["alice", "bob"], ""))
        );
        assert_eq!(split_words("", 1), None);
    }

    #[test]
    fn refusals_are_worded_as_the_assignment() {
        assert_eq!(
            refusal(pb::Outcome::AlreadyFriend, "bob"),
            "bob is already your friend"
        );
        assert_eq!(
            refusal(pb::Outcome::NotMember, "g"),
            "You are not the member of g"
        );
        assert_eq!(refusal(pb::Outcome::GroupExists, "g"), "g already exist");
    }

    #[test]
    fn messages_print_in_the_assignment_format() {
        let inbox = Inbox::new();
        let direct = pb::Message {
            kind: pb::message::Kind::Direct as i32,
            id: "1".into(),
            from: "alice".into(),
            to: "bob".into(),
            text: "hello world".into(),
            ..Default::default()
        };
        let group = pb::Message {
            kind: pb::message::Kind::Group as i32,
            id: "2".into(),
            from: "alice".into(),
            group: "friends".into(),
            text: "hello world".into(),
            ..Default::default()
        };
        inbox.arrive("bob", &direct);
        inbox.arrive("carol", &group);
        assert_eq!(
            inbox.take_lines(),
            [
                "<<<alice->bob: hello world>>>",
                "<<<alice->GROUP<friends>: hello world>>>"
            ]
        );
        assert!(inbox.missing(&[("2".into(), "carol".into())]).is_empty());
        assert_eq!(inbox.missing(&[("2".into(), "bob".into())]).len(), 1);
    }
}
