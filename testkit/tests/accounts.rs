//! Accounts over gRPC against a real manager in this process: the
//! register/login/logout/unregister round trip, wrong passwords, expired
//! and revoked tokens, duplicate logins, bad fields, the failed-login
//! lockout, administration, and the storage server a login is assigned.

use dupla::v1::accounts_client::AccountsClient;
use dupla::v1::{
    DeleteUserRequest, GetUserRequest, ListUsersRequest, LoginRequest, LogoutRequest,
    UnregisterRequest, WhoAmIRequest,
};
use dupla_testkit::chat::{
    accounts, authed, login, registration, user, ChatClient, LoneManager, TEST_PASSWORD,
};
use dupla_testkit::{bounded, TestCluster};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

async fn whoami(addr: &str, token: &str) -> Result<dupla::v1::WhoAmIReply, Status> {
    accounts(addr)
        .await
        .who_am_i(authed(token, WhoAmIRequest {}))
        .await
        .map(|r| r.into_inner())
}

fn assert_code(result: Result<impl std::fmt::Debug, Status>, code: Code, words: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "{words:?} not in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_login_logout_unregister_round_trip() {
    bounded(async {
        let manager = LoneManager::start().await;
        let addr = manager.addr();
        let mut client = accounts(&addr).await;
        let registered = client
            .register(registration("alice"))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(registered.login, "alice");
        assert_eq!(registered.age, 30);
        assert!(
            !registered.admin,
            "registering, even first, never grants the admin role"
        );

        // Login, then the token works.
        let reply = login(&addr, "alice").await.unwrap();
        assert_eq!(reply.token.len(), 64, "256 bits in hex");
        assert!(reply.expires_unix_ms > dupla::clock::unix_ms() + 23 * 3_600_000);
        assert!(reply.server.is_none(), "no storage server is up");
        let me = whoami(&addr, &reply.token).await.unwrap();
        assert_eq!(me.user.unwrap().last_names, "User alice");

        // Logout revokes it.
        client
            .logout(authed(&reply.token, LogoutRequest {}))
            .await
            .unwrap();
        assert_code(
            whoami(&addr, &reply.token).await,
            Code::Unauthenticated,
            "revoked",
        );
        assert_code(
            client.logout(authed(&reply.token, LogoutRequest {})).await,
            Code::Unauthenticated,
            "revoked",
        );

        // Unregister needs the right password, then the account is gone.
        let token = login(&addr, "alice").await.unwrap().token;
        let wrong = UnregisterRequest {
            password: "not the password".into(),
        };
        assert_code(
            client.unregister(authed(&token, wrong)).await,
            Code::Unauthenticated,
            "wrong login or password",
        );
        assert!(whoami(&addr, &token).await.is_ok(), "still registered");
        let right = UnregisterRequest {
            password: TEST_PASSWORD.into(),
        };
        client.unregister(authed(&token, right)).await.unwrap();
        assert_code(
            whoami(&addr, &token).await,
            Code::Unauthenticated,
            "revoked",
        );
        assert_code(
            login(&addr, "alice").await,
            Code::Unauthenticated,
            "wrong login",
        );
        // The login is free again.
        client.register(registration("alice")).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_and_unknown_login_get_the_same_answer() {
    bounded(async {
        let manager = LoneManager::start().await;
        let addr = manager.addr();
        user(&addr, "alice").await;
        let mut client = accounts(&addr).await;
        let wrong = client
            .login(LoginRequest {
                login: "alice".into(),
                password: "wrong password".into(),
            })
            .await
            .unwrap_err();
        let unknown = client
            .login(LoginRequest {
                login: "nobody".into(),
                password: TEST_PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        assert_eq!(
            (wrong.code(), wrong.message()),
            (unknown.code(), unknown.message())
        );
        assert!(!wrong.message().contains(TEST_PASSWORD));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_without_a_valid_token_are_unauthenticated() {
    bounded(async {
        let manager = LoneManager::start().await;
        let addr = manager.addr();
        let mut client = accounts(&addr).await;
        assert_code(
            client.who_am_i(Request::new(WhoAmIRequest {})).await,
            Code::Unauthenticated,
            "dupla login",
        );
        assert_code(whoami(&addr, "00").await, Code::Unauthenticated, "unknown");
        assert_code(
            client.list_users(Request::new(ListUsersRequest {})).await,
            Code::Unauthenticated,
            "not logged in",
        );
        let Err(status) = ChatClient::connect(&addr, "nobody", "00").await else {
            panic!("a chat without a valid token must be refused");
        };
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_tokens_are_refused_everywhere() {
    bounded(async {
        // A zero lifetime: every token is born expired, no waiting needed.
        let manager = LoneManager::start_with(|c| c.token_ttl = Duration::ZERO).await;
        let addr = manager.addr();
        let token = user(&addr, "alice").await;
        assert_code(
            whoami(&addr, &token).await,
            Code::Unauthenticated,
            "expired",
        );
        let Err(status) = ChatClient::connect(&addr, "alice", &token).await else {
            panic!("an expired token must not open a chat");
        };
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("expired"), "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taken_login_is_refused() {
    bounded(async {
        let manager = LoneManager::start().await;
        let mut client = accounts(&manager.addr()).await;
        client.register(registration("alice")).await.unwrap();
        let mut again = registration("alice");
        again.first_names = "Another".into();
        assert_code(client.register(again).await, Code::AlreadyExists, "taken");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_fields_are_refused_naming_the_field() {
    bounded(async {
        let manager = LoneManager::start().await;
        let mut client = accounts(&manager.addr()).await;
        type Edit = fn(&mut dupla::v1::RegisterRequest);
        let cases: [(Edit, &str); 11] = [
            (|r| r.login = "ab".into(), "login"),
            (|r| r.login = "Alice".into(), "login"),
            (|r| r.login = "a b c".into(), "login"),
            (|r| r.login = "x".repeat(33), "login"),
            (|r| r.first_names = " ".into(), "first names"),
            (|r| r.last_names = "x".repeat(101), "last names"),
            (|r| r.first_names = "a\u{7}b".into(), "first names"),
            (|r| r.age = 151, "age"),
            (|r| r.gender = "x".repeat(33), "gender"),
            (|r| r.password = "short".into(), "password"),
            (|r| r.password = "p".repeat(2000), "password"),
        ];
        for (edit, field) in cases {
            let mut request = registration("carol");
            edit(&mut request);
            let status = client.register(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().starts_with(field), "{field}: {status:?}");
        }
        // Nothing was stored: the login is still free.
        client.register(registration("carol")).await.unwrap();
        // The profile is optional: a login and a password are enough.
        let bare = dupla::v1::RegisterRequest {
            login: "dave".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        };
        client.register(bare).await.unwrap();
    })
    .await;
}

/// An Accounts client whose connection comes from `local_ip` (any
/// 127.0.0.0/8 address reaches a manager on 127.0.0.1): another source.
async fn accounts_from(addr: &str, local_ip: &str) -> AccountsClient<Channel> {
    let channel = dupla::rpc::endpoint(addr)
        .unwrap()
        .local_address(Some(local_ip.parse().unwrap()))
        .connect()
        .await
        .expect("manager reachable");
    AccountsClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_guesses_are_refused_before_hashing_and_do_not_lock_the_owner_out() {
    bounded(async {
        let manager = LoneManager::start().await;
        let addr = manager.addr();
        user(&addr, "alice").await;
        user(&addr, "bob").await;
        let guesser = accounts_from(&addr, "127.0.0.1").await;
        let guesses: Vec<_> = (0..50)
            .map(|i| {
                let mut client = guesser.clone();
                tokio::spawn(async move {
                    client
                        .login(LoginRequest {
                            login: "alice".into(),
                            password: format!("guess {i:04}"),
                        })
                        .await
                        .unwrap_err()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for guess in guesses {
            statuses.push(guess.await.unwrap());
        }
        let refused = statuses
            .iter()
            .filter(|s| s.code() == Code::ResourceExhausted)
            .count();
        let checked = statuses
            .iter()
            .filter(|s| s.code() == Code::Unauthenticated)
            .count();
        assert_eq!(refused + checked, 50, "{statuses:?}");
        // Five free attempts and one more; a slow machine that spreads the
        // calls over seconds lets through a few more, never most.
        assert!(
            checked <= 10,
            "{checked} of 50 parallel guesses were checked"
        );
        let status = statuses
            .iter()
            .find(|s| s.code() == Code::ResourceExhausted)
            .unwrap();
        assert!(
            status.message().contains("too many failed logins"),
            "{status:?}"
        );
        // From another address, bob is not affected at all, and alice waits
        // at most a minute (never a lockout only the guesser controls).
        let mut elsewhere = accounts_from(&addr, "127.0.0.2").await;
        let bob = LoginRequest {
            login: "bob".into(),
            password: TEST_PASSWORD.into(),
        };
        elsewhere.login(bob).await.unwrap();
        let alice = LoginRequest {
            login: "alice".into(),
            password: TEST_PASSWORD.into(),
        };
        if let Err(status) = elsewhere.login(alice).await {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            let secs: u64 = status
                .message()
                .split("try again in ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no wait in {status:?}"));
            assert!(secs <= 60, "{status:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_list_show_and_delete_users() {
    bounded(async {
        // carol is the admin the operator created; the others registered.
        let manager = LoneManager::start_with(|c| {
            dupla_manager::identity::admin::create(c, "carol", TEST_PASSWORD).unwrap();
        })
        .await;
        let addr = manager.addr();
        let alice = user(&addr, "alice").await;
        let bob = user(&addr, "bob").await;
        let carol = login(&addr, "carol").await.unwrap().token;
        let mut client = accounts(&addr).await;

        let users = client
            .list_users(authed(&carol, ListUsersRequest {}))
            .await
            .unwrap()
            .into_inner()
            .users;
        let logins: Vec<&str> = users.iter().map(|u| u.login.as_str()).collect();
        assert_eq!(logins, ["alice", "bob", "carol"]);
        let roles: Vec<bool> = users.iter().map(|u| u.admin).collect();
        assert_eq!(roles, [false, false, true], "only the operator's grant");

        for token in [&alice, &bob] {
            assert_code(
                client.list_users(authed(token, ListUsersRequest {})).await,
                Code::PermissionDenied,
                "not an admin",
            );
        }
        let shown = client
            .get_user(authed(
                &carol,
                GetUserRequest {
                    login: "bob".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(shown.first_names, "Test");
        assert_code(
            client
                .get_user(authed(
                    &carol,
                    GetUserRequest {
                        login: "zed".into(),
                    },
                ))
                .await,
            Code::NotFound,
            "zed",
        );

        // Deleting bob revokes his token and ends his chat.
        let mut bob_chat = ChatClient::connect(&addr, "bob", &bob).await.unwrap();
        bob_chat.expect_prefix("* welcome bob").await;
        client
            .delete_user(authed(
                &carol,
                DeleteUserRequest {
                    login: "bob".into(),
                },
            ))
            .await
            .unwrap();
        let last = bob_chat.until_closed().await;
        assert!(
            last.iter().any(|l| l.contains("deleted by carol")),
            "{last:?}"
        );
        assert_code(whoami(&addr, &bob).await, Code::Unauthenticated, "revoked");
        assert_code(login(&addr, "bob").await, Code::Unauthenticated, "wrong");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_spread_over_servers_up_to_max_sessions() {
    bounded(async {
        let cluster = TestCluster::start_without_user(2).await;
        let addr = cluster.manager_addr();
        user(&addr, "alice").await; // one session already, on some server
        assert!(!cluster.status().await.over_capacity);
        let mut per_server = std::collections::HashMap::<String, usize>::new();
        for _ in 0..19 {
            let reply = login(&addr, "alice").await.unwrap();
            assert!(!reply.over_capacity);
            *per_server.entry(reply.server.unwrap().addr).or_default() += 1;
        }
        // With equal (zero) transfers, sessions fill both servers evenly:
        // 20 sessions, 10 each.
        let counts: Vec<usize> = per_server.values().copied().collect();
        assert_eq!(counts.len(), 2, "{per_server:?}");
        assert!(counts.iter().all(|&n| n == 9 || n == 10), "{per_server:?}");
        let servers: Vec<String> = (0..2).map(|i| cluster.server_addr(i)).collect();
        assert!(per_server.keys().all(|a| servers.contains(a)));
        // Every server is full: the cluster status says so, and login still
        // works, over capacity.
        assert!(cluster.status().await.over_capacity);
        let reply = login(&addr, "alice").await.unwrap();
        assert!(reply.over_capacity);
        assert!(reply.server.is_some());
        let status = cluster.status().await;
        assert!(status.over_capacity);
        assert_eq!(status.sessions, 21);
        assert_eq!(status.max_sessions, 10);
        let per_server: Vec<u32> = status.servers.iter().map(|s| s.sessions).collect();
        assert_eq!(per_server.iter().sum::<u32>(), 21, "{per_server:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_and_revocations_survive_a_manager_restart() {
    bounded(async {
        let mut manager = LoneManager::start().await;
        let addr = manager.addr();
        let kept = user(&addr, "alice").await;
        let revoked = login(&addr, "alice").await.unwrap().token;
        accounts(&addr)
            .await
            .logout(authed(&revoked, LogoutRequest {}))
            .await
            .unwrap();
        manager.restart().await;
        let addr = manager.addr();
        assert_eq!(
            whoami(&addr, &kept).await.unwrap().user.unwrap().login,
            "alice"
        );
        assert_code(
            whoami(&addr, &revoked).await,
            Code::Unauthenticated,
            "revoked",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registering_the_configured_admin_name_gives_no_rights() {
    bounded(async {
        let manager = LoneManager::start_with(|c| c.admin = Some("root".into())).await;
        let addr = manager.addr();
        let mut client = accounts(&addr).await;
        assert_code(
            client.register(registration("root")).await,
            Code::PermissionDenied,
            "dupla-manager admin create",
        );
        // The first account registered is no admin either.
        let first = user(&addr, "alice").await;
        let me = whoami(&addr, &first).await.unwrap().user.unwrap();
        assert!(!me.admin);
        assert_code(
            client.list_users(authed(&first, ListUsersRequest {})).await,
            Code::PermissionDenied,
            "not an admin",
        );
    })
    .await;
}
