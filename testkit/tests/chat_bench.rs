//! `dupla bench chat` in-process against a lone manager: a short run at a
//! low rate delivers every message to every client, and a second run
//! reuses the accounts the first one registered; afterwards nobody is left
//! in the chat. No timing assertions.

use dupla::v1::{ListUsersRequest, LoginRequest};
use dupla_client::chat_bench;
use dupla_client::cli::ChatBenchArgs;
use dupla_client::Client;
use dupla_testkit::chat::{accounts, authed, LoneManager, TEST_PASSWORD};
use dupla_testkit::TEST_TIMEOUT;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_clients_for_a_second_lose_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let manager = LoneManager::start_with(|c| {
            dupla_manager::identity::admin::create(c, "root", TEST_PASSWORD).unwrap();
        })
        .await;
        let root = tempfile::tempdir().unwrap();
        let client = Client::new(manager.addr(), None);
        // 10 messages/s per client: well under the flood control.
        let args = ChatBenchArgs {
            clients: 5,
            rate: 50,
            seconds: 1,
            ..ChatBenchArgs::default()
        };
        let report = chat_bench::run(&client, root.path(), &args, false)
            .await
            .unwrap();
        assert_eq!(report.sent, 50, "{report:?}");
        assert_eq!(report.throttled, 0, "{report:?}");
        assert_eq!(report.expected, 250, "{report:?}");
        assert_eq!(report.received, 250, "{report:?}");
        assert_eq!(report.lost, 0, "{report:?}");
        assert_eq!(report.disconnected, 0, "{report:?}");
        assert_eq!((report.accounts_registered, report.accounts_reused), (5, 0));
        assert!(report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms);

        // Again from the same root: the same accounts log in again.
        let again = chat_bench::run(&client, root.path(), &args, false)
            .await
            .unwrap();
        assert_eq!((again.accounts_registered, again.accounts_reused), (0, 5));
        assert_eq!((again.received, again.lost), (250, 0), "{again:?}");
        assert_ne!(again.room, report.room);

        // The admin sees every benchmark session ended.
        let mut accounts = accounts(&manager.addr()).await;
        let token = accounts
            .login(LoginRequest {
                login: "root".into(),
                password: TEST_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let users = accounts
                .list_users(authed(&token, ListUsersRequest {}))
                .await
                .unwrap()
                .into_inner()
                .users;
            assert_eq!(users.len(), 6);
            if users.iter().all(|u| !u.online) {
                break;
            }
            assert!(Instant::now() < deadline, "still online: {users:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the chat benchmark test finishes in time");
}
