//! The social network in process: the graph and presence on the manager,
//! `Social` on the servers, messages between servers through a broker —
//! the manager's embedded one, then a real Mosquitto (killed and restarted
//! mid-conversation; with a password file; with TLS).

use dupla::broker::{BrokerAuth, BrokerUrl};
use dupla::v1::{self as pb};
use dupla_testkit::mosquitto::{self, Mosquitto};
use dupla_testkit::social::{
    bearer, one_user_per_server, wait_for_social, SocialUser, SOCIAL_PASSWORD,
};
use dupla_testkit::{bounded, TestCluster};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn dial(addr: &str) -> Channel {
    dupla::rpc::connect_lazy(addr).expect("address")
}

async fn join(cluster: &TestCluster, login: &str) -> SocialUser {
    SocialUser::join(dial(&cluster.manager_addr()), login, dial).await
}

/// `a` invites `b`, who accepts.
async fn befriend(a: &mut SocialUser, b: &mut SocialUser) {
    let reply = a
        .social
        .invite(a.req(pb::InviteRequest {
            id: b.login.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outcome, pb::Outcome::Ok as i32);
    let reply = b
        .social
        .accept_invite(b.req(pb::AcceptInviteRequest {
            id: a.login.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outcome, pb::Outcome::Ok as i32);
}

/// ann and bob, friends, on two servers (`max_sessions = 1`), once every
/// server is connected to the broker.
async fn friends_apart(cluster: &TestCluster) -> (SocialUser, SocialUser) {
    wait_for_social(cluster).await;
    let mut ann = join(cluster, "ann").await;
    let mut bob = join(cluster, "bob").await;
    assert_ne!(ann.server, bob.server, "max_sessions = 1 spreads them");
    befriend(&mut ann, &mut bob).await;
    (ann, bob)
}

async fn send(from: &mut SocialUser, to: &str, text: &str) -> Result<pb::SendReply, tonic::Status> {
    let request = from.req(pb::SendRequest {
        to: to.into(),
        text: text.into(),
    });
    from.social.send(request).await.map(|r| r.into_inner())
}

async fn send_group(
    from: &mut SocialUser,
    group: &str,
    text: &str,
) -> Result<pb::SendReply, tonic::Status> {
    let request = from.req(pb::SendGroupRequest {
        group: group.into(),
        text: text.into(),
    });
    from.social
        .send_group(request)
        .await
        .map(|r| r.into_inner())
}

/// Send, retrying while the sender's server answers UNAVAILABLE (a
/// refused send sends nothing): after a manager restart, servers find its
/// embedded broker again by themselves, some time later.
async fn send_when_ready(from: &mut SocialUser, to: &str, text: &str) -> pb::SendReply {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match send(from, to, text).await {
            Err(status)
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result.unwrap(),
        }
    }
}

async fn friends(user: &mut SocialUser) -> Vec<String> {
    let request = user.req(pb::SocialListRequest {});
    user.social
        .list_friends(request)
        .await
        .unwrap()
        .into_inner()
        .names
}

#[tokio::test]
async fn graph_and_messages_across_servers_with_the_embedded_broker() {
    bounded(async {
        let mut cluster = TestCluster::start_configured(2, |c| c.max_sessions = 1).await;
        let (mut ann, mut bob) = friends_apart(&cluster).await;

        let reply = send(&mut ann, "bob", "hello world").await.unwrap();
        assert_eq!(reply.outcome, pb::Outcome::Ok as i32);
        assert_eq!(reply.recipients, ["bob"]);
        let got = bob.next_message().await;
        assert_eq!(
            (
                got.kind,
                got.from.as_str(),
                got.to.as_str(),
                got.text.as_str()
            ),
            (
                pb::message::Kind::Direct as i32,
                "ann",
                "bob",
                "hello world"
            )
        );
        assert_eq!(got.id, reply.id);

        // A group spread over both servers: one publish, both get it.
        let create = ann.req(pb::GroupRequest { group: "g".into() });
        ann.social.create_group(create).await.unwrap();
        let join_g = bob.req(pb::GroupRequest { group: "g".into() });
        bob.social.join_group(join_g).await.unwrap();
        let reply = send_group(&mut ann, "g", "to all").await.unwrap();
        assert_eq!(reply.recipients, ["ann", "bob"]);
        for user in [&mut ann, &mut bob] {
            let got = user.next_message().await;
            assert_eq!(
                (got.from.as_str(), got.group.as_str(), got.text.as_str()),
                ("ann", "g", "to all")
            );
        }

        // Refusals, worded by outcome.
        let reply = send(&mut ann, "nobody", "x").await.unwrap();
        assert_eq!(reply.outcome, pb::Outcome::NoSuchUser as i32);
        let err = send(&mut ann, "bob", "").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        // The manager restarts: the graph and the presence survive it.
        cluster.restart_manager().await;
        cluster.wait_for_up(2).await;
        // Its embedded broker listens on a new port: both servers (the
        // recipient's too) must have found it before a message can cross.
        // They saw the old one close long before their heartbeats returned,
        // so SERVING here is the new connection.
        wait_for_social(&cluster).await;
        assert_eq!(friends(&mut ann).await, ["bob"]);
        let reply = send_when_ready(&mut ann, "bob", "still there?").await;
        assert_eq!(reply.outcome, pb::Outcome::Ok as i32);
        assert_eq!(bob.next_message().await.text, "still there?");

        // Logout takes bob offline at once; deleting him undoes the friendship.
        let mut accounts =
            dupla::v1::accounts_client::AccountsClient::new(dial(&cluster.manager_addr()));
        accounts
            .logout(bob.req(pb::LogoutRequest {}))
            .await
            .unwrap();
        let reply = send(&mut ann, "bob", "gone?").await.unwrap();
        assert_eq!(reply.outcome, pb::Outcome::NotOnline as i32);
        let login = accounts
            .login(pb::LoginRequest {
                login: "bob".into(),
                password: SOCIAL_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner();
        accounts
            .unregister(bearer(
                &login.token,
                pb::UnregisterRequest {
                    password: SOCIAL_PASSWORD.into(),
                },
            ))
            .await
            .unwrap();
        assert!(friends(&mut ann).await.is_empty());
        let members = ann.req(pb::SocialListRequest {});
        let groups = ann
            .social
            .list_groups(members)
            .await
            .unwrap()
            .into_inner()
            .names;
        assert_eq!(groups, ["g"]);
    })
    .await
}

#[tokio::test]
async fn cross_server_delivery_through_mosquitto() {
    let Some(broker) = Mosquitto::start("cross_server_delivery_through_mosquitto") else {
        return;
    };
    bounded(async {
        let url = broker.url();
        let cluster = one_user_per_server(3, url).await;
        let mut users = Vec::new();
        for login in ["ann", "bob", "cat"] {
            users.push(join(&cluster, login).await);
        }
        let servers: std::collections::HashSet<_> =
            users.iter().map(|u| u.server.clone()).collect();
        assert_eq!(servers.len(), 3, "each user on their own server");
        let [mut ann, mut bob, mut cat] = <[SocialUser; 3]>::try_from(users).ok().unwrap();
        befriend(&mut ann, &mut bob).await;
        befriend(&mut cat, &mut ann).await;
        send(&mut ann, "bob", "via mosquitto").await.unwrap();
        assert_eq!(bob.next_message().await.text, "via mosquitto");
        send(&mut ann, "cat", "you too").await.unwrap();
        assert_eq!(cat.next_message().await.text, "you too");
        let create = cat.req(pb::GroupRequest {
            group: "trio".into(),
        });
        cat.social.create_group(create).await.unwrap();
        for user in [&mut ann, &mut bob] {
            let request = user.req(pb::GroupRequest {
                group: "trio".into(),
            });
            user.social.join_group(request).await.unwrap();
        }
        let reply = send_group(&mut bob, "trio", "all three").await.unwrap();
        assert_eq!(reply.recipients, ["ann", "bob", "cat"]);
        for user in [&mut ann, &mut bob, &mut cat] {
            let got = user.next_message().await;
            assert_eq!((got.from.as_str(), got.text.as_str()), ("bob", "all three"));
        }
    })
    .await
}

#[tokio::test]
async fn broker_killed_and_restarted_mid_conversation() {
    let Some(mut broker) = Mosquitto::start("broker_killed_and_restarted_mid_conversation") else {
        return;
    };
    bounded(async {
        let url = broker.url();
        let cluster = one_user_per_server(2, url).await;
        let (mut ann, mut bob) = friends_apart(&cluster).await;
        let create = ann.req(pb::GroupRequest { group: "g".into() });
        ann.social.create_group(create).await.unwrap();
        let join_g = bob.req(pb::GroupRequest { group: "g".into() });
        bob.social.join_group(join_g).await.unwrap();
        send(&mut ann, "bob", "before").await.unwrap();
        assert_eq!(bob.next_message().await.text, "before");

        broker.kill();
        for text in ["during 1", "during 2"] {
            let err = send(&mut ann, "bob", text).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            assert!(err.message().contains("broker"), "{err:?}");
        }
        let err = send_group(&mut bob, "g", "during group").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

        broker.restart();
        wait_for_social(&cluster).await;
        send(&mut ann, "bob", "after").await.unwrap();
        // Nothing refused during the outage turns up late: the next message
        // bob sees is the one sent after the restart.
        assert_eq!(bob.next_message().await.text, "after");
        send_group(&mut bob, "g", "group after").await.unwrap();
        assert_eq!(ann.next_message().await.text, "group after");
        assert_eq!(bob.next_message().await.text, "group after");
    })
    .await
}

#[tokio::test]
async fn a_full_cluster_refuses_logins_when_told_to() {
    bounded(async {
        let cluster = TestCluster::start_configured(1, |c| {
            c.max_sessions = 1;
            c.refuse_over_capacity = true;
        })
        .await;
        wait_for_social(&cluster).await;
        let ann = join(&cluster, "ann").await;
        let mut accounts =
            dupla::v1::accounts_client::AccountsClient::new(dial(&cluster.manager_addr()));
        accounts
            .register(pb::RegisterRequest {
                login: "bob".into(),
                password: SOCIAL_PASSWORD.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let login = || pb::LoginRequest {
            login: "bob".into(),
            password: SOCIAL_PASSWORD.into(),
        };
        let status = accounts.login(login()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("max_sessions"), "{status:?}");
        // A session that ends makes room.
        accounts
            .logout(ann.req(pb::LogoutRequest {}))
            .await
            .unwrap();
        let reply = accounts.login(login()).await.unwrap().into_inner();
        assert!(!reply.over_capacity);
    })
    .await
}

/// The `dupla.v1.Social` health of the server at `addr`.
async fn social_health(addr: &str) -> i32 {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let request = HealthCheckRequest {
        service: "dupla.v1.Social".into(),
    };
    HealthClient::new(dial(addr))
        .check(request)
        .await
        .unwrap()
        .into_inner()
        .status
}

/// Send from `from`, whose server cannot use the broker, until the refusal
/// (UNAVAILABLE) explains why with `reason`: the first sends may only know
/// that the broker is not connected yet. Returns the message.
async fn refused_because(from: &mut SocialUser, to: &str, reason: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let err = send(from, to, "refused").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        if err.message().contains(reason) {
            return err.message().to_string();
        }
        assert!(Instant::now() < deadline, "never explained: {err:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Add a server set up by `setup` and log `login` in there: every other
/// server already holds a session (`max_sessions = 1`).
async fn join_new_server(
    cluster: &mut TestCluster,
    login: &str,
    setup: impl Fn(&mut dupla_server::Config) + Send + Sync + 'static,
) -> SocialUser {
    cluster.server_setup = Some(std::sync::Arc::new(setup));
    let i = cluster.add_server().await;
    cluster.wait_for_up(i + 1).await;
    let user = join(cluster, login).await;
    assert_eq!(user.server, cluster.server_addr(i));
    user
}

#[tokio::test]
async fn broker_credentials_in_the_url_or_a_password_file_and_refused_ones() {
    let options = mosquitto::Options {
        users: vec![("dupla".into(), "right pass@".into())],
        ..Default::default()
    };
    let Some(broker) = Mosquitto::start_with("broker_credentials", options) else {
        return;
    };
    bounded(async {
        let files = tempfile::tempdir().unwrap();
        let (right, wrong) = (files.path().join("right"), files.path().join("wrong"));
        std::fs::write(&right, "right pass@\n").unwrap();
        std::fs::write(&wrong, "wrong pass\n").unwrap();
        // Server 0 takes the user and password from the URL the manager
        // names (percent-encoded), server 1 from its own settings.
        let url = format!("mqtt://dupla:right%20pass%40@127.0.0.1:{}", broker.port);
        let mut cluster = TestCluster::start_configured(1, move |c| {
            c.max_sessions = 1;
            c.broker = Some(BrokerUrl::parse(&url).unwrap());
        })
        .await;
        let mut ann = join(&cluster, "ann").await;
        let mut bob = join_new_server(&mut cluster, "bob", move |c| {
            c.broker_auth = BrokerAuth::load(Some("dupla".into()), Some(&right), None).unwrap();
        })
        .await;
        wait_for_social(&cluster).await;
        befriend(&mut ann, &mut bob).await;
        send(&mut ann, "bob", "with a password").await.unwrap();
        assert_eq!(bob.next_message().await.text, "with a password");
        send(&mut bob, "ann", "and back").await.unwrap();
        assert_eq!(ann.next_message().await.text, "and back");

        // A server with the wrong password: its sends are refused, saying
        // why, and its Social health says NOT_SERVING; the others carry on.
        let mut cat = join_new_server(&mut cluster, "cat", move |c| {
            c.broker_auth = BrokerAuth::load(Some("dupla".into()), Some(&wrong), None).unwrap();
        })
        .await;
        befriend(&mut cat, &mut ann).await;
        let why = refused_because(&mut cat, "ann", "refused this server's credentials").await;
        assert!(!why.contains("wrong pass"), "{why}");
        let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing;
        assert_eq!(social_health(&cat.server).await, not_serving as i32);
        send(&mut ann, "bob", "still fine").await.unwrap();
        assert_eq!(bob.next_message().await.text, "still fine");
    })
    .await
}

#[tokio::test]
async fn broker_over_tls_trusting_its_ca_and_refusing_without_it() {
    let options = mosquitto::Options {
        tls: true,
        ..Default::default()
    };
    let Some(broker) = Mosquitto::start_with("broker_over_tls", options) else {
        return;
    };
    bounded(async {
        let url = broker.url();
        assert!(url.starts_with("mqtts://"), "{url}");
        let ca = broker.ca_file();
        let mut cluster = TestCluster::start_configured_servers(
            2,
            move |c| {
                c.max_sessions = 1;
                c.broker = Some(BrokerUrl::parse(&url).unwrap());
            },
            move |c| c.broker_auth = BrokerAuth::load(None, None, Some(&ca)).unwrap(),
        )
        .await;
        let (mut ann, mut bob) = friends_apart(&cluster).await;
        send(&mut ann, "bob", "over TLS").await.unwrap();
        assert_eq!(bob.next_message().await.text, "over TLS");

        // Without broker_ca, the system's roots do not vouch for the test
        // CA: the handshake fails and the server says to set broker_ca.
        let mut cat = join_new_server(&mut cluster, "cat", |_| {}).await;
        befriend(&mut cat, &mut ann).await;
        let why = refused_because(&mut cat, "ann", "broker_ca").await;
        // Whether the machine has system roots (the handshake then fails
        // on the unknown issuer) or none at all.
        assert!(
            why.contains("UnknownIssuer") || why.contains("no system CA certificates"),
            "{why}"
        );
        let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing;
        assert_eq!(social_health(&cat.server).await, not_serving as i32);
    })
    .await
}
