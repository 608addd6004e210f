//! Party 0's session start-up, run beside the secure forward instead of
//! before it: the `Session` call to party 1 and party 1's two
//! acknowledgements (it matched the session with its client's request; it
//! took the batch party 0 named) are checked on a task of their own while
//! the forward computes and sends its first message. Waiting for each of
//! them first cost a round trip apiece, about 80 ms per request on the
//! paper's WAN (40 ms round trip). The acknowledgements come ahead of
//! party 1's first protocol message on the same stream, so the forward's
//! first receive first waits for the handshake (then a step's usual wait
//! for the message); if the handshake fails, the forward's receive fails
//! and the handshake's error is the session's.

use std::time::Duration;

use mpcvit_proto::v1::PeerFrame;
use mpcvit_proto::v1::peer_link_client::PeerLinkClient;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Status;
use tonic::transport::Channel;

use super::session::{Acked, expect_ack};
use crate::bridge::{self, FRAME_BUFFER, FrameOut};
use crate::error::ServerError;
use crate::tls::Role;

/// Frames from party 1, as the forward reads them.
pub(super) type Incoming = mpsc::Receiver<Result<PeerFrame, Status>>;

/// What the forward waits for before its first receive: sent once both
/// acknowledgements came (dropped if the handshake failed).
pub(super) type Passed = oneshot::Receiver<()>;

/// The handshake's settings.
pub(super) struct StartUp {
    /// Party 0's client of party 1's peer service.
    pub client: PeerLinkClient<Channel>,
    /// The session's id (for the duplicate-session error).
    pub sid: [u8; 16],
    /// How long party 1 may take to match the session.
    pub session_wait: Duration,
    /// How long party 1 may take to take the batch, from when it was named.
    pub batch_wait: Duration,
}

/// A running handshake: its verdict, and the task (aborted when dropped).
pub(super) struct Handshake {
    verdict: oneshot::Receiver<Result<(), ServerError>>,
    task: JoinHandle<()>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Handshake {
    /// Resolves only if the handshake failed, with its error (never, once
    /// it passed): for racing party 0's own waits against it.
    pub async fn failed(&mut self) -> ServerError {
        match (&mut self.verdict).await {
            Ok(Err(e)) => e,
            _ => std::future::pending().await,
        }
    }

    /// After the forward: `Some(Ok)` if party 1 acknowledged the batch,
    /// `Some(Err)` with the handshake's error if it failed, `None` if it
    /// is still going on (the forward failed on its own).
    pub fn outcome(&mut self) -> Option<Result<(), ServerError>> {
        self.verdict.try_recv().ok()
    }
}

impl StartUp {
    /// Start the handshake on the outgoing stream `out` (the session
    /// header already in it); `batch_named` resolves once party 0 sent the
    /// batch it took. Returns the frames for the forward, what its first
    /// receive waits for, and the running handshake.
    pub fn spawn(
        self,
        out: FrameOut,
        batch_named: oneshot::Receiver<()>,
    ) -> (Incoming, Passed, Handshake) {
        let (forward_tx, forward_rx) = mpsc::channel(FRAME_BUFFER);
        let (verdict_tx, verdict) = oneshot::channel();
        let (passed_tx, passed) = oneshot::channel();
        let task = tokio::spawn(async move {
            match self.run(out, batch_named).await {
                Err(e) => {
                    // the verdict first: the forward, seeing the handshake
                    // fail, then finds the reason
                    let _ = verdict_tx.send(Err(e));
                    drop(passed_tx);
                    drop(forward_tx);
                }
                Ok(mut rx) => {
                    let _ = verdict_tx.send(Ok(()));
                    let _ = passed_tx.send(());
                    while let Some(item) = rx.recv().await {
                        if forward_tx.send(item).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        (forward_rx, passed, Handshake { verdict, task })
    }

    async fn run(
        self,
        out: FrameOut,
        batch_named: oneshot::Receiver<()>,
    ) -> Result<Incoming, ServerError> {
        let sid = self.sid;
        let mut client = self.client;
        let resp =
            client
                .session(out.map_while(Result::ok))
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::AlreadyExists => ServerError::DuplicateSession { session: sid },
                    _ => ServerError::Unreachable {
                        peer: Role::Party(1),
                        rpc: "Session",
                        status,
                    },
                })?;
        let mut rx = bridge::pump(resp.into_inner());
        expect_ack(&mut rx, self.session_wait, Acked::Session).await?;
        batch_named.await.map_err(|_| ServerError::ChannelClosed {
            op: "naming the batch",
        })?;
        expect_ack(&mut rx, self.batch_wait, Acked::Batch).await?;
        Ok(rx)
    }
}
