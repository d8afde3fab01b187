//! `dupla.v1.SocialGraph`: the social graph and presence, for the storage
//! servers that serve `dupla.v1.Social`. Every call carries the cluster
//! secret (checked by the gate); graph calls also carry the user's token,
//! checked here, and act as that user. Message bodies never come here:
//! servers ask only whether and where to send, then publish to the broker.

use crate::cluster::membership::Liveness;
use crate::identity::auth::Authenticator;
use crate::identity::tokens::Tokens;
use crate::social::graph::{self, Outcome, Social};
use crate::social::presence::{Presence, Stream};
use crate::state::State;
use dupla::v1::social_graph_server::SocialGraph;
use dupla::v1::{self as pb};
use dupla::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::{Request, Response, Status};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The SocialGraph service.
#[derive(Clone)]
pub struct SocialGraphService {
    social: Arc<Social>,
    presence: Arc<Presence>,
    auth: Authenticator,
    tokens: Arc<Mutex<Tokens>>,
    state: Arc<State>,
    /// The broker servers use when they have none configured.
    broker_url: String,
}

/// An outcome as the wire says it.
pub fn outcome(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Ok => pb::Outcome::Ok,
        Outcome::SelfInvite => pb::Outcome::SelfInvite,
        Outcome::AlreadyFriend => pb::Outcome::AlreadyFriend,
        Outcome::AlreadyInvited => pb::Outcome::AlreadyInvited,
        Outcome::InvitedYou => pb::Outcome::InvitedYou,
        Outcome::NoSuchUser => pb::Outcome::NoSuchUser,
        Outcome::NotInvited => pb::Outcome::NotInvited,
        Outcome::NotFriend => pb::Outcome::NotFriend,
        Outcome::NotOnline => pb::Outcome::NotOnline,
        Outcome::GroupExists => pb::Outcome::GroupExists,
        Outcome::NoSuchGroup => pb::Outcome::NoSuchGroup,
        Outcome::AlreadyMember => pb::Outcome::AlreadyMember,
        Outcome::NotMember => pb::Outcome::NotMember,
    }
}

fn reply(o: Outcome) -> Reply<pb::SocialReply> {
    Ok(Response::new(pb::SocialReply {
        outcome: outcome(o) as i32,
    }))
}

fn names(names: Vec<String>) -> Reply<pb::NamesReply> {
    Ok(Response::new(pb::NamesReply { names }))
}

fn route(o: Outcome, sender: String, recipients: Vec<pb::Recipient>) -> Reply<pb::RouteReply> {
    Ok(Response::new(pb::RouteReply {
        outcome: outcome(o) as i32,
        sender,
        recipients,
    }))
}

impl SocialGraphService {
    /// Serve `social` and `presence`; tokens say who calls and whether a
    /// stream's token still works, `state` which servers are up.
    pub fn new(
        social: Arc<Social>,
        presence: Arc<Presence>,
        tokens: Arc<Mutex<Tokens>>,
        state: Arc<State>,
        broker_url: String,
    ) -> Self {
        SocialGraphService {
            social,
            presence,
            auth: Authenticator::new(tokens.clone()),
            tokens,
            state,
            broker_url,
        }
    }

    /// The login of the user the server calls for.
    fn user<T>(&self, request: &Request<T>) -> Result<String> {
        Ok(self.auth.check(request.metadata())?.login)
    }

    /// Where `login`'s live streams are: open under a token that still
    /// works, on a server that is up. One entry per server.
    fn online(&self, login: &str) -> Result<Vec<pb::Recipient>> {
        let streams = self.presence.streams(login)?;
        let now = Instant::now();
        // One lock at a time: login takes the tokens lock, then the
        // membership's; taking them the other way round could deadlock.
        let live: Vec<Stream> = {
            let tokens = self.tokens.lock().expect("tokens lock poisoned");
            streams
                .into_iter()
                .filter(|s| tokens.is_known(&s.token_key))
                .collect()
        };
        let membership = self.state.lock_membership();
        let mut servers: Vec<String> = live
            .iter()
            .filter(|s| {
                membership
                    .get(&s.server_id)
                    .is_some_and(|m| membership.liveness(m, now) == Liveness::Up)
            })
            .map(|s| s.server_id.clone())
            .collect();
        drop(membership);
        servers.sort();
        servers.dedup();
        Ok(servers
            .into_iter()
            .map(|server_id| pb::Recipient {
                login: login.to_string(),
                server_id,
            })
            .collect())
    }

    fn check_direct(
        &self,
        me: String,
        req: pb::SendRequest,
    ) -> Result<(Outcome, String, Vec<pb::Recipient>)> {
        graph::validate_text(&req.text)?;
        if !self.social.user_exists(&req.to)? {
            return Ok((Outcome::NoSuchUser, me, vec![]));
        }
        if !self.social.are_friends(&me, &req.to)? {
            return Ok((Outcome::NotFriend, me, vec![]));
        }
        let recipients = self.online(&req.to)?;
        if recipients.is_empty() {
            return Ok((Outcome::NotOnline, me, vec![]));
        }
        Ok((Outcome::Ok, me, recipients))
    }

    fn check_group(
        &self,
        me: String,
        req: pb::SendGroupRequest,
    ) -> Result<(Outcome, String, Vec<pb::Recipient>)> {
        graph::validate_text(&req.text)?;
        if !self.social.group_exists(&req.group)? {
            return Ok((Outcome::NoSuchGroup, me, vec![]));
        }
        if !self.social.is_member(&me, &req.group)? {
            return Ok((Outcome::NotMember, me, vec![]));
        }
        let mut recipients = Vec::new();
        for member in self.social.members(&req.group)? {
            recipients.extend(self.online(&member)?);
        }
        Ok((Outcome::Ok, me, recipients))
    }
}

#[tonic::async_trait]
impl SocialGraph for SocialGraphService {
    async fn invite(&self, request: Request<pb::InviteRequest>) -> Reply<pb::SocialReply> {
        let me = self.user(&request)?;
        reply(self.social.invite(&me, &request.into_inner().id)?)
    }

    async fn list_invites(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        names(self.social.invitations(&self.user(&request)?)?)
    }

    async fn accept_invite(
        &self,
        request: Request<pb::AcceptInviteRequest>,
    ) -> Reply<pb::SocialReply> {
        let me = self.user(&request)?;
        reply(self.social.accept(&me, &request.into_inner().id)?)
    }

    async fn list_friends(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        names(self.social.friends(&self.user(&request)?)?)
    }

    async fn post(&self, request: Request<pb::PostRequest>) -> Reply<pb::SocialReply> {
        let me = self.user(&request)?;
        reply(self.social.post(&me, &request.into_inner().text)?)
    }

    async fn receive_posts(
        &self,
        request: Request<pb::SocialListRequest>,
    ) -> Reply<pb::PostsReply> {
        let posts = self
            .social
            .friends_posts(&self.user(&request)?)?
            .into_iter()
            .map(|p| pb::Post {
                author: p.author,
                text: p.text,
                posted_unix_ms: p.posted_unix_ms,
            })
            .collect();
        Ok(Response::new(pb::PostsReply { posts }))
    }

    async fn create_group(&self, request: Request<pb::GroupRequest>) -> Reply<pb::SocialReply> {
        let me = self.user(&request)?;
        reply(self.social.create_group(&me, &request.into_inner().group)?)
    }

    async fn list_groups(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        self.user(&request)?;
        names(self.social.groups()?)
    }

    async fn list_joined(&self, request: Request<pb::SocialListRequest>) -> Reply<pb::NamesReply> {
        names(self.social.joined(&self.user(&request)?)?)
    }

    async fn join_group(&self, request: Request<pb::GroupRequest>) -> Reply<pb::SocialReply> {
        let me = self.user(&request)?;
        reply(self.social.join(&me, &request.into_inner().group)?)
    }

    async fn route_direct(&self, request: Request<pb::SendRequest>) -> Reply<pb::RouteReply> {
        let me = self.user(&request)?;
        let (o, me, recipients) = self.check_direct(me, request.into_inner())?;
        route(o, me, recipients)
    }

    async fn route_group(&self, request: Request<pb::SendGroupRequest>) -> Reply<pb::RouteReply> {
        let me = self.user(&request)?;
        let (o, me, recipients) = self.check_group(me, request.into_inner())?;
        route(o, me, recipients)
    }

    async fn attach(&self, request: Request<pb::AttachRequest>) -> Reply<pb::AttachReply> {
        let session = self.auth.check(request.metadata())?;
        let req = request.into_inner();
        if req.server_id.is_empty() || req.stream_id.is_empty() {
            return Err(Error::InvalidInput("attach needs a server and a stream id".into()).into());
        }
        let stream = Stream {
            server_id: req.server_id,
            stream_id: req.stream_id,
            token_key: session.token_key,
        };
        self.presence.attach(&session.login, &stream)?;
        tracing::debug!(login = %session.login, server = %stream.server_id, "online");
        Ok(Response::new(pb::AttachReply {
            login: session.login,
        }))
    }

    async fn detach(&self, request: Request<pb::AttachRequest>) -> Reply<pb::DetachReply> {
        let req = request.into_inner();
        self.presence
            .detach(&req.login, &req.server_id, &req.stream_id)?;
        Ok(Response::new(pb::DetachReply {}))
    }

    async fn reset_server(
        &self,
        request: Request<pb::ResetServerRequest>,
    ) -> Reply<pb::DetachReply> {
        let server_id = request.into_inner().server_id;
        if server_id.is_empty() {
            return Err(Error::InvalidInput("reset needs a server id".into()).into());
        }
        self.presence.forget(&server_id, "")?;
        Ok(Response::new(pb::DetachReply {}))
    }

    async fn broker(&self, _request: Request<pb::BrokerRequest>) -> Reply<pb::BrokerReply> {
        Ok(Response::new(pb::BrokerReply {
            url: self.broker_url.clone(),
        }))
    }
}
