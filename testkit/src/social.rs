//! Helpers for the social tests: a user logged in with their Social client
//! on the server the manager assigned, and their open message stream.

use dupla::v1::accounts_client::AccountsClient;
use dupla::v1::social_client::SocialClient;
use dupla::v1::{self as pb, LoginRequest, RegisterRequest};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

/// Password of the social test users.
pub const SOCIAL_PASSWORD: &str = "social password";

/// How long a test waits for one message before failing.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in user of the social network.
pub struct SocialUser {
    /// Their login.
    pub login: String,
    /// Their bearer token.
    pub token: String,
    /// The server the manager assigned them.
    pub server: String,
    /// Social on that server.
    pub social: SocialClient<Channel>,
    /// Their open message stream (past READY).
    pub messages: Streaming<pb::Message>,
}

impl SocialUser {
    /// Register `login` (login and password only) at the manager `manager`,
    /// log in, and open the message stream on the assigned server; `dial`
    /// makes channels (plain text or TLS).
    pub async fn join(manager: Channel, login: &str, dial: impl Fn(&str) -> Channel) -> SocialUser {
        let mut accounts = AccountsClient::new(manager);
        accounts
            .register(RegisterRequest {
                login: login.into(),
                password: SOCIAL_PASSWORD.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("register {login}: {s:?}"));
        let reply = accounts
            .login(LoginRequest {
                login: login.into(),
                password: SOCIAL_PASSWORD.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("login {login}: {s:?}"))
            .into_inner();
        let server = reply.server.expect("a server is assigned").addr;
        let mut social = SocialClient::new(dial(&server));
        let mut messages = social
            .messages(bearer(&reply.token, pb::MessagesRequest {}))
            .await
            .unwrap_or_else(|s| panic!("{login}'s message stream: {s:?}"))
            .into_inner();
        let ready = messages.message().await.expect("READY").expect("READY");
        assert_eq!(ready.kind, pb::message::Kind::Ready as i32);
        SocialUser {
            login: login.into(),
            token: reply.token,
            server,
            social,
            messages,
        }
    }

    /// `message` with this user's token.
    pub fn req<T>(&self, message: T) -> Request<T> {
        bearer(&self.token, message)
    }

    /// The next message on the stream (fails the test after
    /// [`MESSAGE_TIMEOUT`]).
    pub async fn next_message(&mut self) -> pb::Message {
        tokio::time::timeout(MESSAGE_TIMEOUT, self.messages.message())
            .await
            .unwrap_or_else(|_| panic!("{} got no message in {MESSAGE_TIMEOUT:?}", self.login))
            .unwrap_or_else(|s| panic!("{}'s stream failed: {s:?}", self.login))
            .unwrap_or_else(|| panic!("{}'s stream ended", self.login))
    }
}

/// `message` carrying `token` as a bearer token.
pub fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("token metadata"),
    );
    request
}

/// `n` servers of one session each at most (so users land on different
/// servers) on the broker at `url`, every server's broker link up.
pub async fn one_user_per_server(n: usize, url: String) -> crate::TestCluster {
    let cluster = crate::TestCluster::start_configured(n, move |c| {
        c.max_sessions = 1;
        c.broker = Some(dupla::broker::BrokerUrl::parse(&url).expect("a broker URL"));
    })
    .await;
    wait_for_social(&cluster).await;
    cluster
}

/// Wait until every server of `cluster` says its Social service is SERVING
/// (its broker link is up and subscribed) — polled, since health has no
/// push here.
pub async fn wait_for_social(cluster: &crate::TestCluster) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for server in &cluster.servers {
        let channel = dupla::rpc::connect_lazy(&server.addr.to_string()).expect("address");
        let mut health = HealthClient::new(channel);
        loop {
            let request = HealthCheckRequest {
                service: "dupla.v1.Social".into(),
            };
            let status = health.check(request).await.map(|r| r.into_inner().status);
            if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never served Social: {status:?}",
                server.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
