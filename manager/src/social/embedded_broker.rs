//! A small MQTT 3.1.1 broker the manager runs when the cluster has no
//! broker configured, so a one-machine cluster passes messages between
//! servers with nothing else installed. It is a separate listener with its
//! own port (`broker_listen`): the manager's gRPC services never see a
//! message, and pointing `broker = "mqtt://..."` at Mosquitto or ActiveMQ
//! turns it off.
//!
//! What it does: CONNECT, SUBSCRIBE/UNSUBSCRIBE with `+` and `#` filters,
//! PUBLISH at QoS 0 and 1 (acknowledged to the publisher once routed to
//! every matching subscriber's queue), PINGREQ, DISCONNECT. What it does
//! not: QoS 2, retained messages, persistent sessions, wills, TLS,
//! authentication — it listens on loopback by default for that reason.
//! Packets are encoded and decoded by rumqttc's MQTT codec.

use bytes::BytesMut;
use dupla::shutdown::Shutdown;
use dupla::Result;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{matches, valid_filter, QoS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// Largest MQTT packet accepted or sent: a social message is at most a few
/// KiB, so 1 MiB bounds what a client can make the broker buffer.
pub const MAX_PACKET_BYTES: usize = 1 << 20;
/// Packets queued for one subscriber; a subscriber this far behind loses
/// what does not fit (logged), so a stuck one never slows the others.
pub const SUBSCRIBER_QUEUE: usize = 4096;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Subscriptions and the queues of connected clients.
#[derive(Default)]
struct Router {
    queues: HashMap<u64, mpsc::Sender<Packet>>,
    /// (connection, filter, granted QoS).
    subscriptions: Vec<(u64, String, QoS)>,
    next_id: u64,
}

type Shared = Arc<Mutex<Router>>;

fn lock(router: &Shared) -> std::sync::MutexGuard<'_, Router> {
    router.lock().expect("broker router lock poisoned")
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Resolves when it has stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// The URL servers are told to use for a broker bound to `addr`: on an
/// unspecified address (0.0.0.0), the manager's first TLS name (what other
/// machines reach it by) stands for the host.
pub fn advertised(addr: SocketAddr, tls_names: &[String]) -> String {
    match tls_names.first() {
        Some(name) if addr.ip().is_unspecified() => {
            format!("mqtt://{}:{}", dupla::tls::host_of(name), addr.port())
        }
        _ => format!("mqtt://{addr}"),
    }
}

/// Bind `listen` and serve until `shutdown`.
pub async fn start(listen: &str, shutdown: Shutdown) -> Result<EmbeddedBroker> {
    let listener = dupla::rpc::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "embedded MQTT broker listening");
    let task = tokio::spawn(accept_loop(listener, shutdown));
    Ok(EmbeddedBroker { addr, task })
}

async fn accept_loop(listener: TcpListener, mut shutdown: Shutdown) {
    let router: Shared = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "embedded broker: accept failed");
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "embedded broker: too many connections, refusing one");
            continue;
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve(socket, router, shutdown).await {
                tracing::debug!(%peer, error = %e, "embedded broker: connection ended");
            }
        });
    }
    tracing::info!("embedded MQTT broker stopped");
}

/// Read one packet, waiting for more bytes as needed; `None` at a clean EOF.
async fn read_packet(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Packet>> {
    loop {
        match Packet::read(buf, MAX_PACKET_BYTES) {
            Ok(packet) => return Ok(Some(packet)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ))
            }
        }
        if socket.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn write_packet(socket: &mut TcpStream, packet: &Packet) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, MAX_PACKET_BYTES)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    socket.write_all(&out).await
}

/// One client connection: CONNECT, then packets both ways until either
/// side closes.
async fn serve(
    mut socket: TcpStream,
    router: Shared,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    match tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut socket, &mut buf)).await {
        Ok(Ok(Some(Packet::Connect(_)))) => {}
        _ => return Ok(()),
    }
    write_packet(
        &mut socket,
        &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
    )
    .await?;
    let (tx, mut rx) = mpsc::channel(SUBSCRIBER_QUEUE);
    let id = {
        let mut r = lock(&router);
        r.next_id += 1;
        let id = r.next_id;
        r.queues.insert(id, tx.clone());
        id
    };
    let _gone = Gone(router.clone(), id);
    let mut next_pkid: u16 = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            outgoing = rx.recv() => {
                let Some(mut packet) = outgoing else { return Ok(()) };
                if let Packet::Publish(publish) = &mut packet {
                    if publish.qos != QoS::AtMostOnce {
                        next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                        publish.pkid = next_pkid;
                    }
                }
                write_packet(&mut socket, &packet).await?;
            }
            incoming = read_packet(&mut socket, &mut buf) => {
                let Some(packet) = incoming? else { return Ok(()) };
                if !handle(&router, id, &tx, packet) {
                    return Ok(());
                }
            }
        }
    }
}

/// Act on one packet from connection `id`; false to close it.
fn handle(router: &Shared, id: u64, own: &mpsc::Sender<Packet>, packet: Packet) -> bool {
    // Answers to this client go through its own queue, after what is
    // already there, so acknowledgements never overtake deliveries.
    let answer = |packet: Packet| own.try_send(packet).is_ok();
    match packet {
        Packet::Publish(publish) => {
            if publish.qos == QoS::ExactlyOnce {
                tracing::warn!("embedded broker: QoS 2 is not supported; closing the connection");
                return false;
            }
            route(router, &publish);
            publish.qos == QoS::AtMostOnce || answer(Packet::PubAck(PubAck::new(publish.pkid)))
        }
        Packet::Subscribe(subscribe) => {
            let mut codes = Vec::with_capacity(subscribe.filters.len());
            let mut r = lock(router);
            for filter in subscribe.filters {
                if valid_filter(&filter.path) {
                    let qos = match filter.qos {
                        QoS::AtMostOnce => QoS::AtMostOnce,
                        _ => QoS::AtLeastOnce,
                    };
                    r.subscriptions
                        .retain(|(c, f, _)| !(*c == id && *f == filter.path));
                    r.subscriptions.push((id, filter.path, qos));
                    codes.push(SubscribeReasonCode::Success(qos));
                } else {
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
            drop(r);
            answer(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
        }
        Packet::Unsubscribe(unsubscribe) => {
            lock(router)
                .subscriptions
                .retain(|(c, f, _)| !(*c == id && unsubscribe.topics.contains(f)));
            answer(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
        }
        Packet::PingReq => answer(Packet::PingResp),
        // Subscribers' acknowledgements: nothing is redelivered here.
        Packet::PubAck(_) => true,
        Packet::Disconnect => false,
        other => {
            tracing::debug!(?other, "embedded broker: unexpected packet; closing");
            false
        }
    }
}

/// Queue `publish` for every subscription that matches its topic (once per
/// connection, at the lower of the two QoS).
fn route(router: &Shared, publish: &Publish) {
    let r = lock(router);
    let mut sent: Vec<u64> = Vec::new();
    for (conn, filter, qos) in &r.subscriptions {
        if sent.contains(conn) || !matches(&publish.topic, filter) {
            continue;
        }
        sent.push(*conn);
        let Some(queue) = r.queues.get(conn) else {
            continue;
        };
        let mut copy = Publish::from_bytes(
            publish.topic.clone(),
            if *qos == QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                publish.qos
            },
            publish.payload.clone(),
        );
        copy.retain = false;
        if queue.try_send(Packet::Publish(copy)).is_err() {
            tracing::warn!(topic = %publish.topic, "embedded broker: a subscriber is too far behind; dropped a message for it");
        }
    }
}

/// Removes a closed connection's queue and subscriptions.
struct Gone(Shared, u64);

impl Drop for Gone {
    fn drop(&mut self) {
        // Never panic here: this runs while a connection task unwinds too,
        // and a second panic would abort the whole manager. Removing a
        // connection's entries is safe even if a panic poisoned the lock.
        let mut r = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.queues.remove(&self.1);
        r.subscriptions.retain(|(c, _, _)| *c != self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions};

    /// A client of `addr` and its event loop, driven by a task that hands
    /// every incoming publish and acknowledgement to the returned channel.
    fn client(id: &str, addr: SocketAddr) -> (AsyncClient, mpsc::Receiver<Packet>) {
        let options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        let (client, mut events) = AsyncClient::new(options, 16);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(packet) = event {
                    if tx.send(packet).await.is_err() {
                        return;
                    }
                }
            }
        });
        (client, rx)
    }

    /// The next packet matching `wanted`, skipping the others.
    async fn next(rx: &mut mpsc::Receiver<Packet>, wanted: fn(&Packet) -> bool) -> Packet {
        let wait = async {
            loop {
                let packet = rx.recv().await.expect("the client's event loop ended");
                if wanted(&packet) {
                    return packet;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("no packet in 10 s")
    }

    #[tokio::test]
    async fn routes_by_filter_and_acknowledges_qos1() {
        let (_handle, shutdown) = dupla::shutdown::channel();
        let broker = start("127.0.0.1:0", shutdown).await.unwrap();
        let (sub, mut sub_rx) = client("sub", broker.addr);
        sub.subscribe("a/+/c", QoS::AtLeastOnce).await.unwrap();
        next(&mut sub_rx, |p| matches!(p, Packet::SubAck(_))).await;
        let (publisher, mut pub_rx) = client("pub", broker.addr);
        publisher
            .publish("a/b/d", QoS::AtLeastOnce, false, b"no".to_vec())
            .await
            .unwrap();
        publisher
            .publish("a/b/c", QoS::AtLeastOnce, false, b"yes".to_vec())
            .await
            .unwrap();
        // Both publishes are acknowledged to the publisher...
        for _ in 0..2 {
            next(&mut pub_rx, |p| matches!(p, Packet::PubAck(_))).await;
        }
        // ...and only the matching one reaches the subscriber.
        let Packet::Publish(got) = next(&mut sub_rx, |p| matches!(p, Packet::Publish(_))).await
        else {
            unreachable!()
        };
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("a/b/c", &b"yes"[..])
        );
    }
}
