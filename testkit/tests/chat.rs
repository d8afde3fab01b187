//! The chat rooms with several clients in one process: every command of
//! the table, the creator-disconnect rule, private messages across rooms,
//! `#show users`, flood and size limits, sequence numbers, a slow consumer
//! that never reads, and the clock synchronisation `dupla chat` starts with.

use dupla::v1::{chat_event, LogoutRequest};
use dupla_testkit::bounded;
use dupla_testkit::chat::{accounts, authed, user, ChatClient, LoneManager};
use std::time::{Duration, Instant};

/// A connection whose HTTP/2 windows are the protocol's minimum default
/// (64 KiB), so a client that stops reading stops the server's sends soon.
async fn small_window_channel(manager: &LoneManager) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", manager.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap()
}

/// Register and log in `login`, then open a chat and wait for the welcome.
async fn join(manager: &LoneManager, login: &str) -> ChatClient {
    let token = user(&manager.addr(), login).await;
    let mut chat = ChatClient::connect(&manager.addr(), login, &token)
        .await
        .unwrap();
    chat.expect_prefix(&format!("* welcome {login}; you are in lobby"))
        .await;
    chat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_with_three_clients() {
    bounded(async {
        let manager = LoneManager::start().await;
        let mut alice = join(&manager, "alice").await;
        let mut bob = join(&manager, "bob").await;
        alice.expect("* bob joined lobby").await;
        let mut carol = join(&manager, "carol").await;
        user(&manager.addr(), "dave").await; // registered, never online
        alice.expect("* carol joined lobby").await;
        bob.expect("* carol joined lobby").await;

        // A plain line reaches everyone in the room, the sender included.
        alice.send("hello everyone").await;
        for c in [&mut alice, &mut bob, &mut carol] {
            c.expect("alice: hello everyone").await;
        }

        // #cR creates and enters; an existing name is refused.
        alice.send("#cR games").await;
        alice.expect("* you are now in games (1 here)").await;
        bob.expect("* alice left lobby").await;
        bob.send("#cR games").await;
        bob.expect("* room games already exists; #gR games enters it")
            .await;

        // #gR enters; the room hears it; a room's messages stay in it.
        bob.send("#gR games").await;
        bob.expect("* you are now in games (2 here)").await;
        alice.expect("* bob joined games").await;
        carol.expect("* bob left lobby").await;
        bob.send("only for games").await;
        carol.send("only for the lobby").await;
        alice.expect("bob: only for games").await;
        carol.expect("carol: only for the lobby").await;
        alice.send("#lR").await;
        let listing = alice.expect_prefix("* rooms:").await;
        assert!(
            !alice.seen.iter().any(|l| l.contains("only for the lobby")),
            "{:?}",
            alice.seen
        );
        assert_eq!(listing.text, "rooms: lobby (1), games (2)");

        // #eR goes back; a second #eR has no effect.
        bob.send("#eR").await;
        bob.expect("* you are now in lobby (2 here)").await;
        alice.expect("* bob left games").await;
        bob.send("#eR").await;
        bob.expect("* you are already in lobby").await;

        // #dR: only the creator.
        bob.send("#gR games").await;
        bob.expect("* you are now in games (2 here)").await;
        bob.send("#dR games").await;
        bob.expect("* only alice, who created games, may delete it")
            .await;
        alice.send("#dR games").await;
        alice.expect("* deleted room games").await;
        for c in [&mut alice, &mut bob] {
            c.expect("* room games was removed (alice deleted it); you are back in lobby")
                .await;
        }
        carol.expect("* bob joined lobby").await;
        carol.send("#lR").await;
        carol.expect("* rooms: lobby (3)").await;

        // #show users: every registered user, online or not.
        carol.send("#show users").await;
        carol
            .expect("* users: alice (online), bob (online), carol (online), dave (offline)")
            .await;

        // Unknown commands and bad arguments get an answer, not silence.
        carol.send("#nope").await;
        carol.expect_prefix("* unknown command #nope").await;
        carol.send("#gR nowhere").await;
        carol.expect_prefix("* no room named nowhere").await;

        // #exit says goodbye and ends the stream; the others hear it.
        carol.send("#exit").await;
        let last = carol.until_closed().await;
        assert!(last.contains(&"* bye".to_string()), "{last:?}");
        alice.expect("* carol left lobby").await;
        alice.send("#show users").await;
        alice
            .expect("* users: alice (online), bob (online), carol (offline), dave (offline)")
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rooms_creator_disconnecting_sends_its_members_to_the_lobby() {
    bounded(async {
        let manager = LoneManager::start().await;
        let mut alice = join(&manager, "alice").await;
        let mut bob = join(&manager, "bob").await;
        let mut carol = join(&manager, "carol").await;
        alice.send("#cR chess").await;
        alice.expect("* you are now in chess (1 here)").await;
        for c in [&mut bob, &mut carol] {
            c.send("#gR chess").await;
            c.expect_prefix("* you are now in chess").await;
        }
        alice.expect("* carol joined chess").await;
        // The creator's connection goes away without a word.
        drop(alice);
        for c in [&mut bob, &mut carol] {
            c.expect("* alice left chess").await;
            c.expect(
                "* room chess was removed (its creator alice disconnected); you are back in lobby",
            )
            .await;
        }
        bob.send("#lR").await;
        bob.expect("* rooms: lobby (2)").await;
        bob.send("#gR chess").await;
        bob.expect_prefix("* no room named chess").await;
        // Messages flow in the lobby again, between the two.
        carol.send("back home").await;
        bob.expect("carol: back home").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_messages_reach_users_in_other_rooms() {
    bounded(async {
        let manager = LoneManager::start().await;
        let mut alice = join(&manager, "alice").await;
        let mut bob = join(&manager, "bob").await;
        let mut carol = join(&manager, "carol").await;
        user(&manager.addr(), "dave").await;
        alice.send("#cR quiet").await;
        alice.expect("* you are now in quiet (1 here)").await;

        // From the lobby to a user in another room.
        bob.send("#\\private alice are you there?").await;
        bob.expect("* private to alice: are you there?").await;
        let private = alice.expect("[private] bob: are you there?").await;
        assert_eq!(private.kind, chat_event::Kind::Private as i32);
        assert_eq!(private.room, "quiet", "shown in the receiver's room");
        // And back; carol, in the same room as bob, sees nothing of it.
        alice.send("#\\private bob yes").await;
        bob.expect("[private] alice: yes").await;
        carol.send("#lR").await;
        carol.expect_prefix("* rooms:").await;
        assert!(
            !carol.seen.iter().any(|l| l.contains("private")),
            "{:?}",
            carol.seen
        );

        // Offline and unknown users get a clear answer.
        bob.send("#\\private dave hi").await;
        bob.expect("* dave is offline; private messages are not kept, try again later")
            .await;
        bob.send("#\\private zed hi").await;
        bob.expect("* no user named zed; #show users lists them")
            .await;
        bob.send("#\\private alice").await;
        bob.expect("* usage: #\\private <user> <message>").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_events_carry_sequence_numbers_and_server_time() {
    bounded(async {
        let manager = LoneManager::start().await;
        let mut alice = join(&manager, "alice").await;
        let mut bob = join(&manager, "bob").await;
        alice.expect("* bob joined lobby").await;
        let before = dupla::clock::unix_ms();
        let mut last = 0;
        for i in 0..5 {
            alice.send(&format!("m{i}")).await;
            let seen = bob.expect(&format!("alice: m{i}")).await;
            assert_eq!(seen.room, "lobby");
            assert!(seen.seq > last, "{} after {last}", seen.seq);
            if last != 0 {
                assert_eq!(seen.seq, last + 1, "no gaps for a client that keeps up");
            }
            last = seen.seq;
            assert!(
                seen.server_unix_ms >= before - 1000
                    && seen.server_unix_ms <= dupla::clock::unix_ms() + 1000
            );
        }
        // Alice sees the same numbers for the same messages.
        let mine = alice.expect("alice: m4").await;
        assert_eq!(mine.seq, last);
        // A new room counts from 1.
        bob.send("#cR fresh").await;
        let joined = bob.expect("* bob joined fresh").await;
        assert_eq!(joined.seq, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_is_throttled_and_long_lines_are_refused() {
    bounded(async {
        // A burst of 5 and (practically) no refill: exactly 5 lines get through.
        let manager = LoneManager::start_with(|c| {
            c.chat.burst = 5.0;
            c.chat.lines_per_sec = 0.001;
        })
        .await;
        let mut alice = join(&manager, "alice").await;
        let mut bob = join(&manager, "bob").await;
        for i in 0..10 {
            alice.send(&format!("flood {i}")).await;
        }
        for i in 0..5 {
            bob.expect(&format!("alice: flood {i}")).await;
        }
        for _ in 5..10 {
            alice.expect_prefix("* slow down: at most").await;
        }
        // Nothing more reached bob: his next room message is a fresh one.
        let mut carol = join(&manager, "carol").await;
        carol.send("x".repeat(4097).as_str()).await;
        carol.expect_prefix("* message too long (4097 bytes").await;
        carol.send("x".repeat(4096).as_str()).await;
        let next = bob
            .expect_where("a message", |e| e.kind == chat_event::Kind::Message as i32)
            .await;
        assert_eq!(next.from, "carol");
        assert_eq!(next.text.len(), 4096);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_never_delays_the_others() {
    bounded(async {
        const SLOW_TIMEOUT: Duration = Duration::from_secs(5);
        let manager = LoneManager::start_with(|c| {
            c.chat.lines_per_sec = 1e6;
            c.chat.burst = 1e6;
            c.chat.slow_client_timeout = SLOW_TIMEOUT;
        })
        .await;
        let mut alice = join(&manager, "alice").await;
        let mut bob = join(&manager, "bob").await;
        // The slow client has 64 KiB HTTP/2 windows and never reads after
        // its welcome, so the server soon cannot send it
        // anything more.
        let token = user(&manager.addr(), "slow").await;
        let channel = small_window_channel(&manager).await;
        let mut slow = ChatClient::connect_on(channel, "slow", &token)
            .await
            .unwrap();
        slow.expect_prefix("* welcome slow").await;
        alice.expect("* slow joined lobby").await;

        // Lock step: each 1 KiB message must reach bob before the next is
        // sent. 3 MB in all, far past what the slow client's connection
        // buffers, so it is stuck long before the end.
        let payload = "x".repeat(1000);
        let mut worst = Duration::ZERO;
        for i in 0..3000 {
            let text = format!("{i:05} {payload}");
            let sent = Instant::now();
            alice.send(&text).await;
            bob.expect(&format!("alice: {text}")).await;
            worst = worst.max(sent.elapsed());
        }
        assert!(
            worst < SLOW_TIMEOUT / 2,
            "a round took {worst:?}: the slow client held the room up"
        );
        // The stuck client is cut off (and the room told), not waited for.
        bob.expect_seen_or_next("* slow left lobby").await;
        drop(slow);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_too_far_behind_is_told_and_disconnected() {
    bounded(async {
        // A small room buffer, and patience long enough that the lag, not
        // the send timeout, is what ends the laggard.
        let manager = LoneManager::start_with(|c| {
            c.chat.lines_per_sec = 1e6;
            c.chat.burst = 1e6;
            c.chat.room_capacity = 16;
            c.chat.client_queue = 1;
            c.chat.slow_client_timeout = Duration::from_secs(600);
        })
        .await;
        let mut alice = join(&manager, "alice").await;
        let token = user(&manager.addr(), "late").await;
        let channel = small_window_channel(&manager).await;
        let mut late = ChatClient::connect_on(channel, "late", &token)
            .await
            .unwrap();
        late.expect_prefix("* welcome late").await;
        alice.expect("* late joined lobby").await;
        // 2000 × 1 KiB while `late` reads nothing: its connection fills,
        // its session stops taking room events, and the room moves on.
        // Alice waits for each echo, so she never falls behind herself.
        let payload = "y".repeat(1000);
        for i in 0..2000 {
            alice.send(&format!("{i} {payload}")).await;
            alice.expect(&format!("alice: {i} {payload}")).await;
        }
        // Now `late` reads: what was buffered, then the reason, then the end.
        let rest = late.until_closed().await;
        let told = rest.iter().any(|l| {
            l.starts_with("* you fell") && l.contains("events behind in the room; disconnected")
        });
        assert!(told, "{:?}", &rest[rest.len().saturating_sub(3)..]);
        // When `late` is cut off, against alice's echoes, depends on timing.
        alice.expect_seen_or_next("* late left lobby").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_ends_an_open_chat_and_shutdown_ends_them_all() {
    bounded(async {
        let mut manager = LoneManager::start().await;
        let token = user(&manager.addr(), "alice").await;
        let mut alice = ChatClient::connect(&manager.addr(), "alice", &token)
            .await
            .unwrap();
        alice.expect_prefix("* welcome alice").await;
        let mut bob = join(&manager, "bob").await;
        accounts(&manager.addr())
            .await
            .logout(authed(&token, LogoutRequest {}))
            .await
            .unwrap();
        let last = alice.until_closed().await;
        assert!(last.contains(&"* you logged out".to_string()), "{last:?}");
        bob.expect("* alice left lobby").await;

        // A manager shutting down tells its chats and does not wait on them.
        manager.stop().await;
        let last = bob.until_closed().await;
        assert!(
            last.contains(&"* the manager is shutting down".to_string()),
            "{last:?}"
        );
    })
    .await;
}

/// The machine's clock, read `skew_ns` off (a badly set clock, on purpose).
struct Skewed {
    clock: dupla_client::time::SystemClock,
    skew_ns: i128,
}

impl dupla_client::time::LocalClock for Skewed {
    fn unix_nanos(&self) -> i128 {
        self.clock.unix_nanos() + self.skew_ns
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chat_clock_sync_measures_a_skewed_clock_within_the_round_trip() {
    bounded(async {
        let manager = LoneManager::start().await;
        let client = dupla_client::Client::new(manager.addr(), None);
        for skew_ms in [-3_000i128, 0, 45_000] {
            let clock = Skewed {
                clock: dupla_client::time::SystemClock::new(),
                skew_ns: skew_ms * 1_000_000,
            };
            let report = dupla_client::chat::sync_clock(&client, &clock, 5)
                .await
                .unwrap();
            // The manager runs on the same machine: the true offset is -skew.
            let error_ms = (report.offset_ms + skew_ms as f64).abs();
            assert!(
                error_ms <= report.rtt_ms,
                "skew {skew_ms} ms: offset {} ms, rtt {} ms",
                report.offset_ms,
                report.rtt_ms
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lines_cannot_forge_other_users_lines_or_drive_terminals() {
    bounded(async {
        let manager = LoneManager::start().await;
        let mut mallory = join(&manager, "mallory").await;
        let mut bob = join(&manager, "bob").await;
        mallory.expect("* bob joined lobby").await;
        for forged in [
            "hi\n<alice> send me your password",
            "hi\r\x1b[2K<alice> fake",
            "\u{202e}txt.exe",
        ] {
            mallory.send(forged).await;
            mallory
                .expect_prefix("* control and bidirectional-override characters")
                .await;
        }
        mallory.send("plain").await;
        // The first message bob sees is the plain one: nothing forged got through.
        let next = bob
            .expect_where("a message", |e| e.kind == chat_event::Kind::Message as i32)
            .await;
        assert_eq!(
            (next.from.as_str(), next.text.as_str()),
            ("mallory", "plain")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_flood_limit_is_per_user_not_per_connection() {
    bounded(async {
        let manager = LoneManager::start_with(|c| {
            c.chat.burst = 4.0;
            c.chat.lines_per_sec = 0.001;
        })
        .await;
        let token = user(&manager.addr(), "alice").await;
        let mut first = ChatClient::connect(&manager.addr(), "alice", &token)
            .await
            .unwrap();
        first.expect_prefix("* welcome alice").await;
        let mut second = ChatClient::connect(&manager.addr(), "alice", &token)
            .await
            .unwrap();
        second.expect_prefix("* welcome alice").await;
        for i in 0..4 {
            first.send(&format!("one {i}")).await;
            first.expect(&format!("alice: one {i}")).await;
        }
        // The second connection shares alice's empty bucket.
        second.send("two").await;
        second.expect_prefix("* slow down: at most").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnecting_in_a_loop_is_throttled() {
    bounded(async {
        let manager = LoneManager::start().await;
        let token = user(&manager.addr(), "alice").await;
        let mut refused = None;
        for _ in 0..50 {
            match ChatClient::connect(&manager.addr(), "alice", &token).await {
                Ok(mut chat) => {
                    chat.expect_prefix("* welcome alice").await;
                    chat.close_input();
                }
                Err(status) => {
                    refused = Some(status);
                    break;
                }
            }
        }
        let status = refused.expect("50 connections in a row are throttled");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("too often"), "{status:?}");
    })
    .await;
}
