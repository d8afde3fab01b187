//! This server's link to the MQTT broker that carries social messages
//! between servers (Mosquitto, ActiveMQ, or the manager's embedded one).
//!
//! Topics: `dupla/v1/servers/<server id>` for messages whose recipients
//! all have their streams on one server, `dupla/v1/broadcast` for the rest
//! (a group spread over several servers): every message is one PUBLISH, so
//! the broker takes it whole or not at all, and each server hands it to the
//! streams of the recipients it holds.
//!
//! A send succeeds only once the broker acknowledged the PUBLISH (QoS 1).
//! While the broker is unreachable, sends fail at once with UNAVAILABLE,
//! the server's `dupla.v1.Social` health says NOT_SERVING, and the link
//! reconnects by itself (with back-off), subscribing again each time: the
//! sessions are clean, so nothing queued during an outage is sent later
//! behind the sender's back.

use crate::social_hub::Hub;
use dupla::broker::{redact, BrokerAuth, BrokerUrl};
use dupla::shutdown::Shutdown;
use dupla::v1::{self as pb};
use dupla::{Error, Result};
use prost::Message as _;
use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
    TlsConfiguration, Transport,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The topic every server subscribes to.
pub const BROADCAST_TOPIC: &str = "dupla/v1/broadcast";
/// How long a send waits for the broker's acknowledgement.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest MQTT packet either way: a message is a few KiB.
pub const MAX_PACKET_BYTES: usize = 1 << 20;
/// Requests (publishes, subscriptions) queued for the MQTT event loop.
const REQUEST_QUEUE: usize = 1024;
/// Keep-alive pings: a broker that vanished without closing the
/// connection is noticed within about 1.5 times this.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Pause before reconnecting, doubled after each failure up to the max.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Failed reconnections after which a server that took its broker from
/// the manager asks the manager again.
const RECHECK_AFTER_FAILURES: u32 = 3;

/// The topic of messages for the streams on server `id`.
pub fn server_topic(id: &str) -> String {
    format!("dupla/v1/servers/{id}")
}

/// The current MQTT client, and the senders waiting for the broker's
/// acknowledgement.
#[derive(Default)]
struct Waiters {
    /// The client of the current connection (replaced when the manager
    /// names another broker).
    client: Option<AsyncClient>,
    /// Its broker's URL, password hidden (for messages).
    url: String,
    /// Why the last connection attempt failed, while it does (for the
    /// message of a refused send: bad credentials, an untrusted
    /// certificate...).
    problem: Option<String>,
    /// Publishes handed to the event loop, not yet given a packet id, in
    /// the order the loop sends them.
    queued: VecDeque<oneshot::Sender<Result<()>>>,
    /// Publishes sent, by packet id.
    sent: HashMap<u16, oneshot::Sender<Result<()>>>,
}

impl Waiters {
    /// Fail every waiting send (the connection dropped: their fate is
    /// unknown, and a clean session will not resend them).
    fn fail_all(&mut self, why: &str) {
        for waiter in self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, w)| w))
        {
            let _ = waiter.send(Err(Error::Unavailable(why.to_string())));
        }
    }
}

/// The link, shared by the Social service (which publishes) and the worker
/// (which runs the connection).
#[derive(Default)]
pub struct BrokerLink {
    /// Connected and subscribed.
    ready: AtomicBool,
    /// This server's stale presence was cleared at the manager: streams
    /// may be opened.
    reset: AtomicBool,
    waiters: Mutex<Waiters>,
}

impl BrokerLink {
    /// A link not yet connected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the broker is connected and subscribed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The URL of the broker in use (empty before the first connection).
    pub fn url(&self) -> String {
        self.lock().url.clone()
    }

    /// Whether Messages streams may be opened.
    pub fn accepts_streams(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().expect("broker waiters lock poisoned")
    }

    /// Publish `envelope` on `topic` and wait for the broker to take it.
    /// `Unavailable` (nothing was sent, or its fate is unknown) otherwise.
    pub async fn publish(&self, topic: String, envelope: &pb::BrokerEnvelope) -> Result<()> {
        self.publish_bytes(topic, envelope.encode_to_vec()).await
    }

    /// Subscribe to `topic` on the current connection, if any (an
    /// [`Inbound`]'s topics are subscribed again at every connection).
    /// Queued behind what this server sent before, so the broker applies it
    /// before any later PUBLISH of this server.
    pub fn subscribe(&self, topic: &str) {
        if let Some(client) = &self.lock().client {
            if let Err(e) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                tracing::debug!(%topic, error = %e, "could not subscribe");
            }
        }
    }

    /// Stop receiving `topic` on the current connection.
    pub fn unsubscribe(&self, topic: &str) {
        if let Some(client) = &self.lock().client {
            if let Err(e) = client.try_unsubscribe(topic) {
                tracing::debug!(%topic, error = %e, "could not unsubscribe");
            }
        }
    }

    /// Publish `payload` on `topic` (QoS 1) and wait for the broker to
    /// take it; as [`BrokerLink::publish`].
    pub async fn publish_bytes(&self, topic: String, payload: Vec<u8>) -> Result<()> {
        let down = |url: &str, problem: &Option<String>| {
            let why = match problem {
                Some(problem) => format!("is unavailable ({problem})"),
                None => "is unreachable".to_string(),
            };
            Error::Unavailable(format!(
                "the message broker {url} {why}: nothing was sent; try again in a moment"
            ))
        };
        let (tx, rx) = oneshot::channel();
        let url = {
            // Queued under the lock, so the queue's order is the order in
            // which the event loop sends and numbers the publishes.
            let mut waiters = self.lock();
            let url = waiters.url.clone();
            let client = waiters
                .client
                .as_ref()
                .filter(|_| self.is_ready())
                .ok_or_else(|| down(&url, &waiters.problem))?;
            client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|_| down(&url, &waiters.problem))?;
            waiters.queued.push_back(tx);
            url
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(down(&url, &None)),
            Err(_) => Err(Error::Unavailable(format!(
                "the message broker {url} did not acknowledge the message in {} s; it may not have been delivered",
                PUBLISH_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Another user of the link (the chat rooms): the topics it needs, and
/// what arrives on them.
pub trait Inbound: Send + Sync {
    /// Topics to subscribe to at every (re)connection.
    fn topics(&self) -> Vec<String>;
    /// Take a message that arrived on `topic`; `false` if it is not one of
    /// this user's topics.
    fn deliver(&self, topic: &str, payload: &[u8]) -> bool;
}

/// What the worker needs besides the link.
pub struct Worker {
    /// The shared link.
    pub link: Arc<BrokerLink>,
    /// Where incoming messages go.
    pub hub: Arc<Hub>,
    /// This server's id (its topic, its MQTT client id).
    pub server_id: String,
    /// The broker from node.toml (password included), if any; else the
    /// manager says.
    pub configured: Option<String>,
    /// This server's user, password and CA for the broker.
    pub auth: BrokerAuth,
    /// The node, to ask the manager.
    pub node: Arc<crate::node::StorageNode>,
    /// Health of `dupla.v1.Social` follows the link.
    pub health: tonic_health::server::HealthReporter,
    /// Other topics and their handler (the chat rooms).
    pub inbound: Option<Arc<dyn Inbound>>,
}

/// Name of the service whose health follows the broker link.
pub const SOCIAL_SERVICE: &str = "dupla.v1.Social";

impl Worker {
    /// Clear stale presence, learn the broker, then keep connected until
    /// `shutdown`. A broker named by the manager is asked for again after
    /// a few failed reconnections (a restarted manager's embedded broker
    /// may listen on another port).
    pub async fn run(self, mut shutdown: Shutdown) {
        let status = tonic_health::ServingStatus::NotServing;
        self.health.set_service_status(SOCIAL_SERVICE, status).await;
        let mut url = tokio::select! {
            _ = shutdown.wait() => return,
            url = self.prepare() => url,
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.wait() => None,
                next = self.connection(&url) => next,
            };
            match next {
                Some(other) => {
                    tracing::info!(old = %redact(&url), new = %redact(&other), "the manager names another message broker");
                    url = other;
                }
                None => break,
            }
        }
        self.link.ready.store(false, Ordering::SeqCst);
        self.link.lock().fail_all("this server is shutting down");
    }

    /// Keep connected to `url` (forever), or return the other broker the
    /// manager names after repeated failures.
    async fn connection(&self, url: &str) -> Option<String> {
        let (options, shown) = match self.options(url) {
            Ok(options) => options,
            Err(e) => {
                // A setting of this server was checked at startup: this is
                // the URL the manager names, which may change.
                tracing::error!(error = %e, "no social messages on this server until the manager names a usable broker");
                {
                    let mut waiters = self.link.lock();
                    waiters.url = redact(url);
                    waiters.problem = Some(e.to_string());
                }
                return loop {
                    tokio::time::sleep(RECONNECT_MAX * RECHECK_AFTER_FAILURES).await;
                    if self.configured.is_none() {
                        match self.manager_broker().await {
                            Ok(other) if other != url => break Some(other),
                            _ => {}
                        }
                    }
                };
            }
        };
        let url = shown.as_str();
        let (client, mut events) = AsyncClient::new(options, REQUEST_QUEUE);
        // Nagle's algorithm would hold a small PUBLISH (or PUBACK) until
        // the previous segment is acknowledged, and the peer delays that
        // acknowledgement: tens of ms per message at low rates
        // (docs/performance.md, "Social fan-out through Mosquitto").
        let mut network = events.network_options();
        network.set_tcp_nodelay(true);
        events.set_network_options(network);
        {
            let mut waiters = self.link.lock();
            waiters.client = Some(client.clone());
            waiters.url = url.to_string();
            waiters.problem = None;
        }
        tracing::info!(broker = %url, "connecting to the message broker");
        let mut pause = RECONNECT_MIN;
        let mut failures = 0u32;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let mut topics =
                        vec![server_topic(&self.server_id), BROADCAST_TOPIC.to_string()];
                    topics.extend(self.inbound.iter().flat_map(|i| i.topics()));
                    let filters = topics
                        .into_iter()
                        .map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::warn!(error = %e, "could not subscribe to the broker");
                    }
                }
                // Later SubAcks (rooms subscribed on the way) change nothing.
                Ok(Event::Incoming(Packet::SubAck(_))) if self.link.is_ready() => {}
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    pause = RECONNECT_MIN;
                    failures = 0;
                    self.link.lock().problem = None;
                    self.link.ready.store(true, Ordering::SeqCst);
                    let status = tonic_health::ServingStatus::Serving;
                    self.health.set_service_status(SOCIAL_SERVICE, status).await;
                    tracing::info!(broker = %url, "message broker connected");
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let mut waiters = self.link.lock();
                    if let Some(waiter) = waiters.queued.pop_front() {
                        waiters.sent.insert(pkid, waiter);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(waiter) = self.link.lock().sent.remove(&ack.pkid) {
                        let _ = waiter.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish)))
                    if self
                        .inbound
                        .as_ref()
                        .is_some_and(|i| i.deliver(&publish.topic, &publish.payload)) => {}
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    match pb::BrokerEnvelope::decode(publish.payload) {
                        Ok(envelope) => {
                            self.hub.deliver(envelope);
                        }
                        Err(e) => {
                            tracing::warn!(topic = %publish.topic, error = %e, "ignoring a broker message that is not a Dupla envelope")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was_ready = self.link.ready.swap(false, Ordering::SeqCst);
                    let problem = describe(&e);
                    let new_problem = {
                        let mut waiters = self.link.lock();
                        waiters.fail_all(&format!(
                            "the connection to the message broker {url} dropped: {e}"
                        ));
                        let new = waiters.problem.as_deref() != Some(problem.as_str());
                        waiters.problem = Some(problem.clone());
                        new
                    };
                    if was_ready {
                        tracing::warn!(broker = %url, error = %problem, "message broker lost; reconnecting");
                        let status = tonic_health::ServingStatus::NotServing;
                        self.health.set_service_status(SOCIAL_SERVICE, status).await;
                    } else if new_problem {
                        // Once per cause, not once per retry: a broker that
                        // refuses the credentials is retried every 2 s.
                        tracing::warn!(broker = %url, error = %problem, "cannot connect to the message broker; retrying");
                    } else {
                        tracing::debug!(broker = %url, error = %problem, "message broker still unreachable");
                    }
                    failures += 1;
                    if self.configured.is_none() && failures.is_multiple_of(RECHECK_AFTER_FAILURES)
                    {
                        if let Ok(other) = self.manager_broker().await {
                            if other != url {
                                return Some(other);
                            }
                        }
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// The MQTT options for `url` (with this server's credentials and,
    /// for `mqtts://`, TLS), and the URL to show (password hidden).
    fn options(&self, url: &str) -> Result<(MqttOptions, String)> {
        let broker = self.auth.apply(BrokerUrl::parse(url)?);
        let shown = broker.to_string();
        let mut options = MqttOptions::new(
            format!("dupla-server-{}", self.server_id),
            broker.host.clone(),
            broker.port,
        );
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(username) = &broker.username {
            let password = broker.password.as_deref().unwrap_or_default();
            options.set_credentials(username.clone(), password.to_string());
            if !broker.tls {
                tracing::warn!(broker = %shown, "the broker credentials travel in plain text: use mqtts:// outside a trusted network");
            }
        }
        if broker.tls {
            let config = self.auth.tls_config()?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Ok((options, shown))
    }

    /// Clear this server's stale presence at the manager and learn the
    /// broker's URL (its own setting, else the manager's), retrying until
    /// the manager answers.
    async fn prepare(&self) -> String {
        let mut pause = RECONNECT_MIN;
        loop {
            match self.ask_manager().await {
                Ok(url) => {
                    self.link.reset.store(true, Ordering::SeqCst);
                    return url;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "social setup: the manager did not answer yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    async fn ask_manager(&self) -> Result<String> {
        let mut graph = self.node.social_graph();
        let request = self.node.secret.request(pb::ResetServerRequest {
            server_id: self.server_id.clone(),
        });
        graph.reset_server(request).await?;
        match &self.configured {
            Some(url) => Ok(url.clone()),
            None => self.manager_broker().await,
        }
    }

    /// The broker the manager names.
    async fn manager_broker(&self) -> Result<String> {
        let request = self.node.secret.request(pb::BrokerRequest {});
        let reply = self.node.social_graph().broker(request).await?;
        Ok(reply.into_inner().url)
    }
}

/// What went wrong with the broker, in an operator's words: a refusal of
/// the credentials or of the certificate says which setting to look at.
fn describe(e: &ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as Code;
    match e {
        ConnectionError::ConnectionRefused(code @ (Code::BadUserNamePassword | Code::NotAuthorized)) => {
            format!("the broker refused this server's credentials ({code:?}); check broker_username and broker_password_file, or the user and password in the broker URL")
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        ConnectionError::Tls(e) => format!(
            "TLS with the broker failed ({e}); if its certificate is not signed by a CA of the system, set broker_ca to the PEM file of the CA that did"
        ),
        other => other.to_string(),
    }
}
