//! `dupla bench chat` in-process against a lone manager: a short run at a
//! low rate delivers every message to every client, and a second run
//! reuses the accounts the first one registered; afterwards nobody is left
//! in the chat. `dupla bench social` over two servers and the embedded
//! broker: group and direct runs deliver everything they were due. No
//! timing assertions.

use dupla::v1::{ListUsersRequest, LoginRequest};
use dupla_client::chat_bench;
use dupla_client::cli::{ChatBenchArgs, FanoutMode, SocialBenchArgs};
use dupla_client::Client;
use dupla_testkit::chat::{accounts, authed, LoneManager, TEST_PASSWORD};
use dupla_testkit::social::wait_for_social;
use dupla_testkit::{TestCluster, TEST_TIMEOUT};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn social_fanout_over_two_servers_loses_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let cluster = TestCluster::start_without_user(2).await;
        wait_for_social(&cluster).await;
        let root = tempfile::tempdir().unwrap();
        let client = Client::new(cluster.manager_addr(), None);
        // Four users in one group: each message reaches all four.
        let group = SocialBenchArgs {
            mode: FanoutMode::Group,
            clients: 4,
            rate: 20,
            seconds: 1,
            ..SocialBenchArgs::default()
        };
        let report = chat_bench::run_social(&client, root.path(), &group, false)
            .await
            .unwrap();
        assert_eq!((report.sent, report.refused), (20, 0), "{report:?}");
        assert_eq!(report.expected, 80, "{report:?}");
        assert_eq!((report.received, report.lost), (80, 0), "{report:?}");
        assert_eq!(report.disconnected, 0, "{report:?}");
        assert_eq!(report.accounts_registered, 4);
        // Logins spread the users over both servers (fewest sessions first).
        assert_eq!(report.servers.len(), 2, "{report:?}");
        assert_eq!(report.servers.values().sum::<u32>(), 4);
        // The CPU of this process is always reported.
        assert!(report.cpu.iter().any(|c| c.name == "bench"));

        // Direct messages around the ring of friends, the accounts reused.
        let direct = SocialBenchArgs {
            mode: FanoutMode::Direct,
            ..group
        };
        let again = chat_bench::run_social(&client, root.path(), &direct, false)
            .await
            .unwrap();
        assert_eq!(again.accounts_registered, 0);
        assert_eq!((again.sent, again.refused), (20, 0), "{again:?}");
        assert_eq!(
            (again.expected, again.received, again.lost),
            (20, 20, 0),
            "{again:?}"
        );
    })
    .await
    .expect("the social benchmark test finishes in time");
}
