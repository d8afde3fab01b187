//! Fault injection on the write path, for tests only.
//!
//! Compiled in only with the `faults` cargo feature, which the testkit's
//! tests enable (its dev-dependency on this crate): without it
//! ([`ENABLED`] is false) every plan is empty, every hook is a constant
//! `Ok(())` the compiler removes, and the server accepts connections
//! without the kill wrapper, so a release binary pays nothing for it.
//!
//! A [`FaultPlan`] is a list of rules, each a [`Step`] of the write path and
//! the [`Action`] to take there. The upload and pipeline code calls hooks
//! at those steps ([`FaultPlan::hit`] at a point, a [`Tap`] on each chunk of
//! a stream); with no plan (the default, and the only possibility from
//! `node.toml` or flags) every hook returns after one `is_empty` check.
//!
//! Each rule fires once: the first time its step is reached, later hits go
//! through, so a test can retry and expect success. Rules can be added while
//! the server runs ([`FaultPlan::add`]), because servers' ids, and so the
//! placement of a name, are known only once they have started. A plan
//! belongs to one server: [`Action::Kill`] and [`FaultPlan::kill`] stop the
//! server it was started with.
//!
//! A kill is as close to a crash as one process allows: every connection
//! the server accepted is shut down at once (its peers see the connection
//! close mid-call), it accepts no new one (the listening socket is closed),
//! it stops heartbeating, it sends no `Abort`, and every hook on it fails from
//! then on, so no call it was serving goes on. What it had made durable stays
//! on its disk, as after a crash; its `tmp/` is emptied when it is started
//! again.

use dupla::shutdown::Shutdown;
use dupla::{Error, Result};
use futures::StreamExt;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::server::{Connected, Router, TcpConnectInfo, TcpIncoming};

/// Whether fault injection is compiled in (the `faults` feature). Without
/// it a plan's rules never fire and [`FaultPlan::kill`] does nothing.
pub const ENABLED: bool = cfg!(feature = "faults");

/// A point of the write path where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// On a hop that keeps a copy (the primary, the replica, or an entry
    /// that is one of them): chunk `chunk` of the file (0-based) and every
    /// chunk before it were just made durable here, by the batch commit
    /// that covered it (every `DURABLE_BATCH_CHUNKS` chunks, and at the end
    /// of the stream). The hop has not passed the next chunk on nor
    /// answered yet: on the primary, the chunk is written and not yet
    /// acknowledged by the replica.
    AfterWrite {
        /// The chunk index the rule waits for.
        chunk: u64,
    },
    /// On a hop serving a `Store` call (the replica; the primary too when
    /// the entry only forwards; a substitute): its copy is durable and the
    /// rest of its chain answered; its `StoreReceipt` is not sent yet.
    BeforeStoreReceipt,
    /// On the entry: every holder answered that its copy is durable and the
    /// whole-file hash matched; `Manager/Commit` is not sent yet.
    BeforeCommit,
    /// On the entry, on each chunk of the client's `Upload` stream, before
    /// it is verified or passed on.
    ClientStream,
    /// On any hop, on each chunk it sends on its `Store` stream to the next
    /// node (entry → primary, primary → replica, a substitute's copy).
    Forward,
}

impl Step {
    fn is_stream(&self) -> bool {
        matches!(self, Step::ClientStream | Step::Forward)
    }

    /// Whether a rule at `self` is due when the path reached `at`.
    fn due(&self, at: &Step) -> bool {
        match (self, at) {
            (Step::AfterWrite { chunk: wanted }, Step::AfterWrite { chunk }) => chunk >= wanted,
            _ => self == at,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AfterWrite { chunk } => write!(f, "after chunk {chunk} was made durable"),
            Step::BeforeStoreReceipt => f.write_str("before the Store receipt"),
            Step::BeforeCommit => f.write_str("before Manager/Commit"),
            Step::ClientStream => f.write_str("on the client's upload stream"),
            Step::Forward => f.write_str("on the stream to the next node"),
        }
    }
}

/// What happens when a rule's step is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The hop fails as if the one that crashed were this one: the call it
    /// serves ends with `UNAVAILABLE`. On a stream step: the stream breaks
    /// at its first chunk (as `DropAfterBytes(0)`).
    Fail,
    /// Wait this long, then go on.
    Delay(Duration),
    /// Crash this server (see the module's documentation).
    Kill,
    /// Stream steps only: the connection drops once this many bytes of
    /// chunk data went through it. Whole chunks are passed on until the
    /// one that would go past `n`, which is lost with the connection. On
    /// [`Step::Forward`] the call to the next node is cancelled (that node
    /// sees its stream reset); on [`Step::ClientStream`] the entry fails
    /// the upload as a broken client stream does.
    DropAfterBytes(u64),
    /// Wait until the test calls [`Trigger::release`] (or the server is
    /// killed), then go on: a deterministic point to act from.
    Hold,
}

/// The handle of one rule: when it fired, and the release of a
/// [`Action::Hold`].
#[derive(Clone, Debug)]
pub struct Trigger(Arc<TriggerState>);

#[derive(Debug)]
struct TriggerState {
    fired: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Trigger {
    fn new() -> Trigger {
        Trigger(Arc::new(TriggerState {
            fired: watch::channel(false).0,
            released: watch::channel(false).0,
        }))
    }

    /// Resolves once the rule fired (for a `Hold`: once a hook is held).
    pub async fn fired(&self) {
        let mut fired = self.0.fired.subscribe();
        let _ = fired.wait_for(|f| *f).await;
    }

    /// Whether the rule fired.
    pub fn has_fired(&self) -> bool {
        *self.0.fired.borrow()
    }

    /// Let a held hook go on (a no-op for the other actions).
    pub fn release(&self) {
        self.0.released.send_replace(true);
    }

    async fn released(&self) {
        let mut released = self.0.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }
}

/// The faults one server injects; none by default.
#[derive(Clone, Default)]
pub struct FaultPlan(Option<Arc<Inner>>);

struct Inner {
    rules: Mutex<Vec<Rule>>,
    killed: watch::Sender<bool>,
    /// Accepted connections still open, by id: shut down on a kill.
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    next: u64,
    open: HashMap<u64, RawFd>,
}

struct Rule {
    step: Step,
    action: Action,
    trigger: Trigger,
    spent: bool,
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("FaultPlan(none)"),
            Some(inner) => {
                let rules = inner.rules.lock().expect("fault rules lock poisoned");
                let list: Vec<_> = rules
                    .iter()
                    .map(|r| (r.step, r.action.clone(), r.spent))
                    .collect();
                write!(
                    f,
                    "FaultPlan(killed: {}, rules: {list:?})",
                    self.is_killed()
                )
            }
        }
    }
}

impl FaultPlan {
    /// No faults: every hook returns at once.
    pub fn none() -> FaultPlan {
        FaultPlan(None)
    }

    /// An active plan with no rule yet: the server it is given to can take
    /// rules while it runs ([`FaultPlan::add`]) and be killed.
    pub fn new() -> FaultPlan {
        FaultPlan(Some(Arc::new(Inner {
            rules: Mutex::new(Vec::new()),
            killed: watch::channel(false).0,
            connections: Mutex::new(Connections::default()),
        })))
    }

    /// Whether there is no plan at all (the production case).
    #[inline]
    pub fn is_empty(&self) -> bool {
        !ENABLED || self.0.is_none()
    }

    /// This plan with one more rule (a builder for plans made before the
    /// server starts).
    pub fn on(self, step: Step, action: Action) -> FaultPlan {
        let plan = if self.is_empty() {
            FaultPlan::new()
        } else {
            self
        };
        plan.add(step, action);
        plan
    }

    /// Add a rule, also while the server runs. Panics on a plan made with
    /// [`FaultPlan::none`] (the server would not see it) and on
    /// `DropAfterBytes` at a step that is not a stream.
    pub fn add(&self, step: Step, action: Action) -> Trigger {
        let inner = self
            .0
            .as_ref()
            .expect("FaultPlan::none() takes no rules: start the server with FaultPlan::new()");
        assert!(
            step.is_stream() || !matches!(action, Action::DropAfterBytes(_)),
            "DropAfterBytes applies to Step::ClientStream and Step::Forward, not {step:?}"
        );
        let trigger = Trigger::new();
        inner
            .rules
            .lock()
            .expect("fault rules lock poisoned")
            .push(Rule {
                step,
                action,
                trigger: trigger.clone(),
                spent: false,
            });
        trigger
    }

    /// Crash the server now (see the module's documentation). Panics on a
    /// plan made with [`FaultPlan::none`].
    pub fn kill(&self) {
        let inner = self
            .0
            .as_ref()
            .expect("FaultPlan::none() cannot kill: start the server with FaultPlan::new()");
        let connections = inner.connections.lock().expect("connections lock poisoned");
        if inner.killed.send_replace(true) {
            return;
        }
        tracing::warn!(
            connections = connections.open.len(),
            "injected fault: this server is killed"
        );
        for fd in connections.open.values() {
            // SAFETY: the fd is open: a connection leaves the map (under
            // this lock) before its socket is closed.
            unsafe {
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
    }

    /// Whether the server was killed.
    pub fn is_killed(&self) -> bool {
        ENABLED && self.0.as_ref().is_some_and(|inner| *inner.killed.borrow())
    }

    /// Resolves once the server is killed (never without a plan).
    pub async fn killed(&self) {
        match self.0.as_ref().filter(|_| ENABLED) {
            Some(inner) => {
                let mut killed = inner.killed.subscribe();
                let _ = killed.wait_for(|k| *k).await;
            }
            None => std::future::pending().await,
        }
    }

    /// The hook at a point step: act on the first unspent rule due there.
    #[inline]
    pub async fn hit(&self, step: Step) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        self.fire(step, |_| true, 0).await
    }

    /// A counter for one stream at a stream step ([`Step::ClientStream`],
    /// [`Step::Forward`]); call [`Tap::pass`] on each chunk.
    pub fn tap(&self, step: Step) -> Tap {
        Tap {
            plan: self.clone(),
            step,
            chunks: 0,
            bytes: 0,
        }
    }

    async fn fire(&self, at: Step, wanted: impl Fn(&Action) -> bool, bytes: u64) -> Result<()> {
        let Some(inner) = self.0.as_ref().filter(|_| ENABLED) else {
            return Ok(());
        };
        if self.is_killed() {
            return Err(killed(at));
        }
        let rule = {
            let mut rules = inner.rules.lock().expect("fault rules lock poisoned");
            rules
                .iter_mut()
                .find(|r| !r.spent && r.step.due(&at) && wanted(&r.action))
                .map(|r| {
                    r.spent = true;
                    (r.action.clone(), r.trigger.clone())
                })
        };
        let Some((action, trigger)) = rule else {
            return Ok(());
        };
        tracing::warn!(step = %at, ?action, "injected fault");
        trigger.0.fired.send_replace(true);
        match action {
            Action::Fail => Err(Error::Unavailable(format!("injected fault {at}"))),
            Action::DropAfterBytes(n) => Err(Error::Unavailable(format!(
                "connection dropped after {bytes} bytes (injected fault: drop after {n} bytes {at})"
            ))),
            Action::Kill => {
                self.kill();
                Err(killed(at))
            }
            Action::Delay(delay) => tokio::select! {
                _ = tokio::time::sleep(delay) => Ok(()),
                _ = self.killed() => Err(killed(at)),
            },
            Action::Hold => tokio::select! {
                _ = trigger.released() => Ok(()),
                _ = self.killed() => Err(killed(at)),
            },
        }
    }

    /// A shutdown signal for the server's tasks that also fires when it is
    /// killed (the signal itself when there is no plan).
    pub(crate) fn shutdown(&self, outer: Shutdown) -> Shutdown {
        if self.is_empty() {
            return outer;
        }
        let (handle, shutdown) = dupla::shutdown::channel();
        let plan = self.clone();
        let mut outer = outer;
        tokio::spawn(async move {
            tokio::select! {
                _ = outer.wait() => {}
                _ = plan.killed() => {}
            }
            handle.trigger();
        });
        shutdown
    }

    /// Serve like [`dupla::rpc::serve`], with every accepted connection
    /// registered so that a kill can shut it down, and no connection
    /// accepted after a kill.
    pub(crate) async fn serve(
        &self,
        router: Router,
        listener: TcpListener,
        mut shutdown: Shutdown,
    ) -> Result<()> {
        let Some(inner) = self.0.clone().filter(|_| ENABLED) else {
            return dupla::rpc::serve(router, listener, shutdown).await;
        };
        let plan = self.clone();
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(30)))
            .take_until(async move { plan.killed().await })
            .filter_map(move |accepted| {
                let inner = inner.clone();
                async move {
                    match accepted {
                        Ok(tcp) => KillableStream::register(inner, tcp).map(Ok),
                        Err(e) => Some(Err(e)),
                    }
                }
            });
        let incoming = dupla::connections::limit(incoming, dupla::connections::MAX_CONNECTIONS);
        router
            .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
            .await
            .map_err(|e| Error::Internal(format!("gRPC server failed: {e}")))
    }
}

fn killed(at: Step) -> Error {
    Error::Unavailable(format!("this server was killed (injected fault {at})"))
}

/// The hook on one stream: counts its chunks and bytes.
pub struct Tap {
    plan: FaultPlan,
    step: Step,
    chunks: u64,
    bytes: u64,
}

impl Tap {
    /// A chunk of `len` bytes is about to go through: `Err` when the
    /// stream breaks here (or the server was killed).
    #[inline]
    pub async fn pass(&mut self, len: usize) -> Result<()> {
        if self.plan.is_empty() {
            return Ok(());
        }
        let (first, before) = (self.chunks == 0, self.bytes);
        self.chunks += 1;
        self.bytes += len as u64;
        let after = self.bytes;
        self.plan
            .fire(
                self.step,
                |action| match action {
                    Action::DropAfterBytes(n) => after > *n,
                    _ => first,
                },
                before,
            )
            .await
    }
}

/// An accepted connection that a kill can shut down.
struct KillableStream {
    tcp: TcpStream,
    id: u64,
    inner: Arc<Inner>,
}

impl KillableStream {
    /// `None` (the connection is closed at once) after a kill.
    fn register(inner: Arc<Inner>, tcp: TcpStream) -> Option<KillableStream> {
        let id = {
            let mut connections = inner.connections.lock().expect("connections lock poisoned");
            if *inner.killed.borrow() {
                return None;
            }
            connections.next += 1;
            let id = connections.next;
            connections.open.insert(id, tcp.as_raw_fd());
            id
        };
        Some(KillableStream { tcp, id, inner })
    }
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        // Runs before `tcp` closes its socket, so a kill never shuts down
        // a reused descriptor.
        self.inner
            .connections
            .lock()
            .expect("connections lock poisoned")
            .open
            .remove(&self.id);
    }
}

impl Connected for KillableStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(all(test, feature = "faults"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_plan_lets_everything_through() {
        let plan = FaultPlan::none();
        assert!(plan.is_empty());
        plan.hit(Step::BeforeCommit).await.unwrap();
        let mut tap = plan.tap(Step::Forward);
        tap.pass(1 << 20).await.unwrap();
    }

    #[tokio::test]
    async fn a_rule_fires_once_at_its_step() {
        let plan = FaultPlan::new();
        let trigger = plan.add(Step::AfterWrite { chunk: 5 }, Action::Fail);
        plan.hit(Step::BeforeCommit).await.unwrap();
        plan.hit(Step::AfterWrite { chunk: 4 }).await.unwrap();
        assert!(!trigger.has_fired());
        let err = plan.hit(Step::AfterWrite { chunk: 15 }).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        assert!(trigger.has_fired());
        plan.hit(Step::AfterWrite { chunk: 31 }).await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_drops_once_past_its_byte_count() {
        let plan = FaultPlan::new().on(Step::Forward, Action::DropAfterBytes(25));
        let mut other = plan.tap(Step::ClientStream);
        let mut tap = plan.tap(Step::Forward);
        for _ in 0..3 {
            other.pass(10).await.unwrap();
        }
        tap.pass(10).await.unwrap();
        tap.pass(10).await.unwrap();
        let err = tap.pass(10).await.unwrap_err();
        assert!(err.to_string().contains("after 20 bytes"), "{err}");
        // Spent: the next stream goes through.
        let mut again = plan.tap(Step::Forward);
        again.pass(100).await.unwrap();
    }

    #[tokio::test]
    async fn a_hold_waits_for_its_release_and_a_kill_fails_every_later_hook() {
        let plan = FaultPlan::new();
        let hold = plan.add(Step::BeforeCommit, Action::Hold);
        let held = tokio::spawn({
            let plan = plan.clone();
            async move { plan.hit(Step::BeforeCommit).await }
        });
        hold.fired().await;
        assert!(!held.is_finished());
        hold.release();
        held.await.unwrap().unwrap();
        plan.kill();
        assert!(plan.is_killed());
        assert!(plan.hit(Step::BeforeStoreReceipt).await.is_err());
    }

    #[test]
    #[should_panic(expected = "DropAfterBytes applies to")]
    fn drop_after_bytes_needs_a_stream_step() {
        FaultPlan::new().add(Step::BeforeCommit, Action::DropAfterBytes(1));
    }
}
