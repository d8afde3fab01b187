//! A global cap on the connections one node serves at once.
//!
//! Per connection, HTTP/2 settings already bound what a peer can make a
//! node hold: [`crate::rpc::MAX_STREAMS_PER_CONNECTION`] streams and
//! [`crate::rpc::CONNECTION_WINDOW_BYTES`] of unread data. Without a cap on
//! connections, an outsider that opens thousands of them multiplies those
//! bounds. With it, a node holds at most `MAX_CONNECTIONS ×
//! MAX_STREAMS_PER_CONNECTION` streams and `MAX_CONNECTIONS ×
//! CONNECTION_WINDOW_BYTES` of unread request data, whoever calls. At the
//! cap the node stops accepting: new connections wait in the kernel's
//! backlog until one closes, rather than being served half.

use futures::{Stream, StreamExt};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// Connections one node serves at once (clients, servers and the manager
/// alike). A cluster of hundreds of servers and clients fits well within.
pub const MAX_CONNECTIONS: usize = 1024;

/// `incoming` with at most `max` of its connections open at a time: the
/// next one is accepted only when one of those closes.
pub fn limit<S, E>(
    incoming: impl Stream<Item = Result<S, E>>,
    max: usize,
) -> impl Stream<Item = Result<Limited<S>, E>> {
    let slots = Arc::new(Semaphore::new(max));
    incoming.then(move |accepted| {
        let slots = slots.clone();
        async move {
            let stream = accepted?;
            // Holding up this stream holds up the accept loop: later peers
            // wait in the backlog, not in memory.
            let permit = slots
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            Ok(Limited {
                inner: stream,
                _slot: permit,
            })
        }
    })
}

/// A connection holding one of the node's slots until it closes.
pub struct Limited<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
}

impl<S: Connected> Connected for Limited<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// An echo server of one byte per connection behind the cap.
    async fn echo_server(max: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            let mut accepted = std::pin::pin!(limit(incoming, max));
            while let Some(Ok(mut conn)) = accepted.next().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while conn.read_exact(&mut byte).await.is_ok() {
                        if conn.write_all(&byte).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echo(conn: &mut TcpStream, byte: u8) -> u8 {
        conn.write_all(&[byte]).await.unwrap();
        let mut back = [0u8; 1];
        conn.read_exact(&mut back).await.unwrap();
        back[0]
    }

    #[tokio::test]
    async fn a_connection_past_the_cap_is_served_once_another_closes() {
        let addr = echo_server(2).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(echo(&mut first, 1).await, 1);
        assert_eq!(echo(&mut second, 2).await, 2);
        // The third connects (the kernel's backlog) but is not served...
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(&[3]).await.unwrap();
        let mut back = [0u8; 1];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(300), third.read(&mut back))
                .await;
        assert!(
            early.is_err(),
            "a third connection was served past a cap of 2"
        );
        // ...until one of the first two closes.
        drop(first);
        third.read_exact(&mut back).await.unwrap();
        assert_eq!(back[0], 3);
        assert_eq!(echo(&mut second, 4).await, 4);
    }
}
