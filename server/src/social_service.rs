//! `dupla.v1.Social` on a storage server, the application server of the
//! social network. The graph (invitations, friends, posts, groups) lives in
//! the manager's database: those calls go on to `SocialGraph` with the
//! user's token and the cluster secret. Messages do not touch the manager:
//! it only answers whether and where (friend? online? on which servers?),
//! then this server publishes the message to the broker, and the
//! recipients' servers push it down their `Messages` streams.

use crate::broker::{self, BrokerLink};
use crate::node::StorageNode;
use crate::social_hub::{Hub, STREAM_QUEUE};
use dupla::rpc::UserCredentials;
use dupla::shutdown::Shutdown;
use dupla::v1::social_graph_client::SocialGraphClient;
use dupla::v1::social_server::Social;
use dupla::v1::{self as pb};
use dupla::Error;
use futures::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// Largest Social request: a message of at most 4 KiB and a name.
pub const MAX_SOCIAL_REQUEST_BYTES: usize = 16 << 10;

/// The Social service.
#[derive(Clone)]
pub struct SocialService {
    node: Arc<StorageNode>,
    hub: Arc<Hub>,
    link: Arc<BrokerLink>,
    shutdown: Shutdown,
}

impl SocialService {
    /// Serve users of `node`, their streams in `hub`, messages through
    /// `link`; streams end at `shutdown`.
    pub fn new(
        node: Arc<StorageNode>,
        hub: Arc<Hub>,
        link: Arc<BrokerLink>,
        shutdown: Shutdown,
    ) -> Self {
        SocialService {
            node,
            hub,
            link,
            shutdown,
        }
    }

    /// A request to the manager's graph, as the user behind `creds`.
    fn as_user<T>(&self, creds: &UserCredentials, message: T) -> Request<T> {
        let mut request = self.node.secret.request(message);
        creds.attach(&mut request);
        request
    }

    /// Pass a graph call on to the manager, as the caller.
    async fn forward<Q, R, F, Fut>(&self, request: Request<Q>, call: F) -> Reply<R>
    where
        F: FnOnce(SocialGraphClient<Channel>, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let creds = UserCredentials::of(&request)?;
        let outgoing = self.as_user(&creds, request.into_inner());
        Ok(Response::new(
            call(self.node.social_graph(), outgoing).await?.into_inner(),
        ))
    }

    /// Publish `message` to `recipients` through the broker: one PUBLISH,
    /// on the one server's topic when they all are on one server.
    async fn publish(
        &self,
        message: pb::Message,
        recipients: &[pb::Recipient],
    ) -> Result<Vec<String>, Status> {
        let topic = match recipients.split_first() {
            Some((first, rest)) if rest.iter().all(|r| r.server_id == first.server_id) => {
                broker::server_topic(&first.server_id)
            }
            _ => broker::BROADCAST_TOPIC.to_string(),
        };
        let mut logins: Vec<String> = recipients.iter().map(|r| r.login.clone()).collect();
        logins.sort();
        logins.dedup();
        let envelope = pb::BrokerEnvelope {
            message: Some(message),
            recipients: logins.clone(),
        };
        self.link.publish(topic, &envelope).await?;
        Ok(logins)
    }

    /// Route a message at the manager, then publish it.
    async fn send_message(
        &self,
        outcome: pb::RouteReply,
        mut message: pb::Message,
    ) -> Reply<pb::SendReply> {
        if outcome.outcome != pb::Outcome::Ok as i32 {
            return Ok(Response::new(pb::SendReply {
                outcome: outcome.outcome,
                ..Default::default()
            }));
        }
        message.id = hex::encode(rand::random::<[u8; 12]>());
        message.from = outcome.sender;
        message.sent_unix_ms = dupla::clock::unix_ms();
        let id = message.id.clone();
        let recipients = self.publish(message, &outcome.recipients).await?;
        Ok(Response::new(pb::SendReply {
            outcome: pb::Outcome::Ok as i32,
            id,
            recipients,
        }))
    }
}

/// Ends a stream's presence when the stream goes: out of the hub at once,
/// and at the manager in the background.
struct StreamGuard {
    hub: Arc<Hub>,
    node: Arc<StorageNode>,
    login: String,
    stream_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.hub.unregister(&self.login, &self.stream_id);
        let request = self.node.secret.request(pb::AttachRequest {
            server_id: self.node.id.clone(),
            stream_id: self.stream_id.clone(),
            login: self.login.clone(),
        });
        let mut graph = self.node.social_graph();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = graph.detach(request).await {
                    tracing::debug!(error = %e, "could not tell the manager a stream closed");
                }
            });
        }
    }
}

/// The stream type of `Messages`.
pub type MessagesStream = Pin<Box<dyn Stream<Item = Result<pb::Message, Status>> + Send>>;

#[tonic::async_trait]
impl Social for SocialService {
    async fn invite(&self, request: Request<pb::InviteRequest>) -> Reply<pb::SocialReply> {
        self.forward(request, |mut g, r| async move { g.invite(r).await })
            .await
    }

    async fn list_invites(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        self.forward(request, |mut g, r| async move { g.list_invites(r).await })
            .await
    }

    async fn accept_invite(
        &self,
        request: Request<pb::AcceptInviteRequest>,
    ) -> Reply<pb::SocialReply> {
        self.forward(request, |mut g, r| async move { g.accept_invite(r).await })
            .await
    }

    async fn list_friends(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        self.forward(request, |mut g, r| async move { g.list_friends(r).await })
            .await
    }

    async fn post(&self, request: Request<pb::PostRequest>) -> Reply<pb::SocialReply> {
        self.forward(request, |mut g, r| async move { g.post(r).await })
            .await
    }

    async fn receive_posts(
        &self,
        request: Request<pb::SocialListRequest>,
    ) -> Reply<pb::PostsReply> {
        self.forward(request, |mut g, r| async move { g.receive_posts(r).await })
            .await
    }

    async fn send(&self, request: Request<pb::SendRequest>) -> Reply<pb::SendReply> {
        let creds = UserCredentials::of(&request)?;
        let req = request.into_inner();
        let message = pb::Message {
            kind: pb::message::Kind::Direct as i32,
            to: req.to.clone(),
            text: req.text.clone(),
            ..Default::default()
        };
        let route = self
            .node
            .social_graph()
            .route_direct(self.as_user(&creds, req))
            .await?
            .into_inner();
        self.send_message(route, message).await
    }

    async fn create_group(&self, request: Request<pb::GroupRequest>) -> Reply<pb::SocialReply> {
        self.forward(request, |mut g, r| async move { g.create_group(r).await })
            .await
    }

    async fn list_groups(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        self.forward(request, |mut g, r| async move { g.list_groups(r).await })
            .await
    }

    async fn list_joined(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        self.forward(request, |mut g, r| async move { g.list_joined(r).await })
            .await
    }

    async fn join_group(&self, request: Request<pb::GroupRequest>) -> Reply<pb::SocialReply> {
        self.forward(request, |mut g, r| async move { g.join_group(r).await })
            .await
    }

    async fn send_group(&self, request: Request<pb::SendGroupRequest>) -> Reply<pb::SendReply> {
        let creds = UserCredentials::of(&request)?;
        let req = request.into_inner();
        let message = pb::Message {
            kind: pb::message::Kind::Group as i32,
            group: req.group.clone(),
            text: req.text.clone(),
            ..Default::default()
        };
        let route = self
            .node
            .social_graph()
            .route_group(self.as_user(&creds, req))
            .await?
            .into_inner();
        self.send_message(route, message).await
    }

    type MessagesStream = MessagesStream;

    async fn messages(&self, request: Request<pb::MessagesRequest>) -> Reply<MessagesStream> {
        if !self.link.accepts_streams() {
            return Err(Error::Unavailable(
                "this server is still starting (it has not reached the manager yet); try again"
                    .into(),
            )
            .into());
        }
        let creds = UserCredentials::of(&request)?;
        let login = self.node.check_user(&creds).await?;
        let stream_id = hex::encode(rand::random::<[u8; 12]>());
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        // In the hub before the manager counts the user online, so a
        // message routed here right after finds the stream.
        self.hub.register(&login, &stream_id, sender.clone());
        let guard = StreamGuard {
            hub: self.hub.clone(),
            node: self.node.clone(),
            login: login.clone(),
            stream_id: stream_id.clone(),
        };
        let attach = pb::AttachRequest {
            server_id: self.node.id.clone(),
            stream_id,
            login: String::new(),
        };
        self.node
            .social_graph()
            .attach(self.as_user(&creds, attach))
            .await?;
        let ready = pb::Message {
            kind: pb::message::Kind::Ready as i32,
            to: login,
            sent_unix_ms: dupla::clock::unix_ms(),
            ..Default::default()
        };
        sender
            .try_send(Ok(ready))
            .map_err(|_| Status::internal("invariant: a new stream's queue has room"))?;
        let mut shutdown = self.shutdown.clone();
        let stopped = Box::pin(async move { shutdown.wait().await });
        let stream = ReceiverStream::new(receiver)
            .take_until(stopped)
            .map(move |event| {
                // The guard lives as long as the stream.
                let _ = &guard;
                event
            });
        Ok(Response::new(Box::pin(stream)))
    }
}
