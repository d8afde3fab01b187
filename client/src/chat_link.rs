//! Where a chat stream opens: on the user's assigned storage server, which
//! serves the chat of its users and carries room messages through the
//! message broker (then on the other `up` servers, as transfers do, or on
//! late ones when none is up); on the manager's own chat only when no
//! server is up or late, or the server is of a version without chat.
//! Shared by `dupla chat` and `dupla bench chat`.

use crate::session::{rpc_error, Client, Role};
use dupla::v1::rooms_client::RoomsClient;
use dupla::v1::{ChatEvent, ChatInput};
use dupla::{Error, Result};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

/// The events of an open chat (its lines go in the sender returned with it).
pub(crate) struct ChatStream {
    /// Events for this connection.
    pub events: Streaming<ChatEvent>,
    /// The storage server serving it, or `None` for the manager.
    pub server: Option<String>,
}

impl ChatStream {
    /// A failed call on this stream as an [`Error`] naming the node.
    pub fn error(&self, client: &Client, status: Status) -> Error {
        match &self.server {
            Some(addr) => rpc_error(Role::Server, addr, status),
            None => client.manager_error(status),
        }
    }
}

impl Client {
    /// Open a chat; `queue` lines may wait ahead of the network. Dropping
    /// the sender closes the client's side.
    pub(crate) async fn open_chat(
        &self,
        queue: usize,
    ) -> Result<(mpsc::Sender<ChatInput>, ChatStream)> {
        let candidates = match self.entry_servers().await {
            Err(e) => match self.late_servers().await {
                Ok(late) if !late.is_empty() => Ok(late),
                _ => Err(e),
            },
            found => found,
        };
        match candidates {
            Ok(candidates) => {
                let (addr, channel) = self.connect_first(Role::Server, &candidates).await?;
                let (input, rx) = mpsc::channel(queue);
                match RoomsClient::new(channel)
                    .chat(self.request(ReceiverStream::new(rx)))
                    .await
                {
                    Ok(events) => {
                        let events = events.into_inner();
                        return Ok((
                            input,
                            ChatStream {
                                events,
                                server: Some(addr),
                            },
                        ));
                    }
                    Err(status) if status.code() == Code::Unimplemented => {
                        tracing::debug!(%addr, "this server has no chat; using the manager's");
                    }
                    Err(status) => return Err(rpc_error(Role::Server, &addr, status)),
                }
            }
            Err(e) => tracing::debug!(error = %e, "no server up; using the manager's chat"),
        }
        let (input, rx) = mpsc::channel(queue);
        let events = self
            .manager_rooms()
            .await?
            .chat(self.request(ReceiverStream::new(rx)))
            .await
            .map_err(|s| self.manager_error(s))?
            .into_inner();
        Ok((
            input,
            ChatStream {
                events,
                server: None,
            },
        ))
    }
}
