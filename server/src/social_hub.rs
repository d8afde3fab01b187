//! The `Social/Messages` streams open on this server, by login, and the
//! delivery of what the broker brings to them. A stream's queue is bounded:
//! a client that stops reading loses its stream (it ends; the client can
//! open another), never the server's memory or the other users' messages.

use dupla::v1::{self as pb};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;
use tonic::Status;

/// Messages queued for one stream on their way to the client.
pub const STREAM_QUEUE: usize = 256;

/// Where a stream's events go.
pub type StreamSender = mpsc::Sender<Result<pb::Message, Status>>;

/// The open streams.
#[derive(Default)]
pub struct Hub {
    /// login → (stream id, queue) of each of its streams here.
    streams: Mutex<HashMap<String, Vec<(String, StreamSender)>>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(String, StreamSender)>>> {
        self.streams.lock().expect("social hub lock poisoned")
    }

    /// `login` opened stream `stream_id`.
    pub fn register(&self, login: &str, stream_id: &str, sender: StreamSender) {
        self.lock()
            .entry(login.to_string())
            .or_default()
            .push((stream_id.to_string(), sender));
    }

    /// Stream `stream_id` of `login` closed.
    pub fn unregister(&self, login: &str, stream_id: &str) {
        let mut streams = self.lock();
        if let Some(list) = streams.get_mut(login) {
            list.retain(|(id, _)| id != stream_id);
            if list.is_empty() {
                streams.remove(login);
            }
        }
    }

    /// Users with a stream open here.
    pub fn online(&self) -> usize {
        self.lock().len()
    }

    /// Hand `envelope`'s message to every stream here of its recipients;
    /// how many streams got it. A stream whose queue is full is dropped.
    pub fn deliver(&self, envelope: pb::BrokerEnvelope) -> usize {
        let Some(message) = envelope.message else {
            return 0;
        };
        let mut delivered = 0;
        let mut streams = self.lock();
        for login in &envelope.recipients {
            let Some(list) = streams.get_mut(login) else {
                continue;
            };
            list.retain(|(id, sender)| match sender.try_send(Ok(message.clone())) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%login, stream = %id, "a message stream fell too far behind; closing it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        streams.retain(|_, list| !list.is_empty());
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(to: &[&str]) -> pb::BrokerEnvelope {
        pb::BrokerEnvelope {
            message: Some(pb::Message {
                text: "hi".into(),
                ..Default::default()
            }),
            recipients: to.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn delivers_to_every_stream_of_each_recipient_and_drops_laggards() {
        let hub = Hub::new();
        let (a1, mut r1) = mpsc::channel(STREAM_QUEUE);
        let (a2, mut r2) = mpsc::channel(1);
        let (b, _rb) = mpsc::channel(STREAM_QUEUE);
        hub.register("ann", "1", a1);
        hub.register("ann", "2", a2);
        hub.register("bob", "3", b);
        assert_eq!(hub.deliver(envelope(&["ann", "zed"])), 2);
        assert_eq!(r1.recv().await.unwrap().unwrap().text, "hi");
        assert_eq!(r2.recv().await.unwrap().unwrap().text, "hi");
        hub.deliver(envelope(&["ann"]));
        // Stream 2 (queue of one) is full now: the next message drops it.
        assert_eq!(hub.deliver(envelope(&["ann"])), 1);
        assert_eq!(hub.online(), 2);
        hub.unregister("bob", "3");
        assert_eq!(hub.online(), 1);
    }
}
