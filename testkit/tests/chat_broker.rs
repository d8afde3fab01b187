//! Chat rooms through a real Mosquitto: users on different storage servers
//! chat in one room, their servers carrying the lines through the broker;
//! every member sees the room in one order; the manager carries no line
//! (its `/metrics` counter stays 0, and the same counter does count the
//! lines of the manager's own chat); a line sent while the broker is down
//! gets a clear answer, and lines flow again once it is back.

use dupla::v1::chat_event;
use dupla_testkit::chat::{user_on_server, ChatClient};
use dupla_testkit::mosquitto::Mosquitto;
use dupla_testkit::social::{one_user_per_server, wait_for_social};
use dupla_testkit::{bounded, TestCluster};

/// Log `login` in and open its chat on its assigned server.
async fn chat_on_server(cluster: &TestCluster, login: &str) -> (ChatClient, String) {
    let (token, server) = user_on_server(&cluster.manager_addr(), login).await;
    let mut chat = ChatClient::connect(&server, login, &token)
        .await
        .unwrap_or_else(|s| panic!("{login}'s chat on {server}: {s:?}"));
    chat.expect_prefix(&format!("* welcome {login}; you are in lobby"))
        .await;
    (chat, server)
}

/// The manager's `chat_lines_relayed_total`, from its `/metrics`.
async fn lines_relayed_by_manager(cluster: &TestCluster) -> u64 {
    let text = reqwest::get(format!("{}/metrics", cluster.manager_http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("dupla_chat_lines_relayed_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no chat_lines_relayed_total in:\n{text}"))
        .parse()
        .unwrap()
}

/// The next `n` room messages `chat` sees, as `(from: text, seq)`.
async fn messages(chat: &mut ChatClient, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let event = chat
            .expect_where("a room message", |e| {
                e.kind == chat_event::Kind::Message as i32
            })
            .await;
        got.push((format!("{}: {}", event.from, event.text), event.seq));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_across_two_servers_through_mosquitto() {
    let Some(broker) = Mosquitto::start("a_room_across_two_servers_through_mosquitto") else {
        return;
    };
    bounded(async {
        let cluster = one_user_per_server(2, broker.url()).await;
        let (mut alice, alice_server) = chat_on_server(&cluster, "alice").await;
        let (mut bob, bob_server) = chat_on_server(&cluster, "bob").await;
        assert_ne!(alice_server, bob_server, "max_sessions = 1 spreads them");
        alice.expect("* bob joined lobby").await;

        alice.send("#cR games").await;
        alice.expect("* you are now in games (1 here)").await;
        alice.expect("* alice joined games").await;
        bob.expect("* alice left lobby").await;
        bob.send("#gR games").await;
        bob.expect("* you are now in games (2 here)").await;
        bob.expect("* bob joined games").await;
        alice.expect("* bob joined games").await;

        // Both talk at once: each sees every line, in one order for both,
        // each sender's own lines in the order sent, numbered without gaps.
        const EACH: usize = 20;
        for i in 0..EACH {
            alice.send(&format!("a{i}")).await;
            bob.send(&format!("b{i}")).await;
        }
        let seen_by_alice = messages(&mut alice, 2 * EACH).await;
        let seen_by_bob = messages(&mut bob, 2 * EACH).await;
        let lines = |seen: &[(String, u64)]| -> Vec<String> {
            seen.iter().map(|(line, _)| line.clone()).collect()
        };
        assert_eq!(lines(&seen_by_alice), lines(&seen_by_bob), "one order");
        for who in ["alice: a", "bob: b"] {
            let own: Vec<String> = lines(&seen_by_alice)
                .into_iter()
                .filter(|l| l.starts_with(who))
                .collect();
            let sent: Vec<String> = (0..EACH).map(|i| format!("{who}{i}")).collect();
            assert_eq!(own, sent);
        }
        for seen in [&seen_by_alice, &seen_by_bob] {
            for pair in seen.windows(2) {
                assert_eq!(pair[1].1, pair[0].1 + 1, "no gaps: {seen:?}");
            }
        }
        // Commands still answer after the lines that came before them.
        bob.send("#lR").await;
        bob.expect("* rooms: lobby (0), games (2)").await;
        alice.send("#\\private bob psst").await;
        alice.expect("* private to bob: psst").await;
        bob.expect("[private] alice: psst").await;

        // The manager carried none of those lines…
        assert_eq!(lines_relayed_by_manager(&cluster).await, 0);
        // …though it counts the lines of its own chat.
        let (token, _) = user_on_server(&cluster.manager_addr(), "carol").await;
        let mut carol = ChatClient::connect(&cluster.manager_addr(), "carol", &token)
            .await
            .unwrap();
        carol.expect_prefix("* welcome carol").await;
        carol.send("on the manager").await;
        carol.expect("carol: on the manager").await;
        assert_eq!(lines_relayed_by_manager(&cluster).await, 1);

        // The creator leaves: bob, on the other server, is sent back.
        drop(alice);
        bob.expect("* alice left games").await;
        bob.expect(
            "* room games was removed (its creator alice disconnected); you are back in lobby",
        )
        .await;
        bob.expect("* bob joined lobby").await;
        bob.send("back home").await;
        bob.expect("bob: back home").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_killed_and_restarted_mid_chat() {
    let Some(mut broker) = Mosquitto::start("broker_killed_and_restarted_mid_chat") else {
        return;
    };
    bounded(async {
        let cluster = one_user_per_server(2, broker.url()).await;
        let (mut alice, alice_server) = chat_on_server(&cluster, "alice").await;
        let (mut bob, bob_server) = chat_on_server(&cluster, "bob").await;
        assert_ne!(alice_server, bob_server);
        alice.expect("* bob joined lobby").await;
        alice.send("before").await;
        bob.expect("alice: before").await;

        broker.kill();
        alice.send("during").await;
        let refused = alice.expect_prefix("* the message broker").await;
        // "…: nothing was sent", or "…: your line was probably not
        // delivered" when the connection dropped with the line in flight.
        assert!(
            refused.text.contains("message broker")
                && refused.text.ends_with("try again in a moment"),
            "{refused:?}"
        );
        bob.send("during too").await;
        bob.expect_prefix("* the message broker").await;

        broker.restart();
        wait_for_social(&cluster).await;
        alice.send("after").await;
        // Nothing refused during the outage turns up late: the next line
        // bob hears is the one sent after the restart.
        let next = bob
            .expect_where("a room message", |e| {
                e.kind == chat_event::Kind::Message as i32
            })
            .await;
        assert_eq!((next.from.as_str(), next.text.as_str()), ("alice", "after"));
        bob.send("and back").await;
        alice.expect("bob: and back").await;
        bob.send("#lR").await;
        bob.expect("* rooms: lobby (2)").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lines_flow_while_the_manager_restarts_and_chats_it_forgot_end_saying_why() {
    let Some(broker) = Mosquitto::start("lines_flow_while_the_manager_restarts") else {
        return;
    };
    bounded(async {
        let mut cluster = one_user_per_server(2, broker.url()).await;
        let (mut alice, _) = chat_on_server(&cluster, "alice").await;
        let (bob, _) = chat_on_server(&cluster, "bob").await;
        alice.expect("* bob joined lobby").await;

        cluster.restart_manager().await;
        // The manager is not on the message path: lines still flow.
        bob.send("still here").await;
        alice.expect("bob: still here").await;
        // Its rooms lived in memory: a command says so and ends the chat.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            alice.send("#lR").await;
            let said = alice
                .expect_where("an answer", |e| e.kind != chat_event::Kind::Message as i32)
                .await;
            // Until the server's channel to the manager is back.
            if said.text.starts_with("the manager could not run") {
                assert!(std::time::Instant::now() < deadline, "{said:?}");
                continue;
            }
            assert!(
                said.text
                    .starts_with("the manager no longer knows this chat"),
                "{said:?}"
            );
            break;
        }
        assert!(alice.until_closed().await.is_empty(), "the chat ended");
    })
    .await
}
