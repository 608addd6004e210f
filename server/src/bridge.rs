//! The bridge between mpc-core's synchronous [`Channel`] and a gRPC stream
//! of [`PeerFrame`]s.
//!
//! A pump task copies the incoming gRPC stream into a bounded tokio channel;
//! outgoing frames go into another bounded channel that feeds the outgoing
//! gRPC stream. Protocol code runs on a blocking thread
//! (`tokio::task::spawn_blocking`) and uses [`BlockingChannel`], which sends
//! with `blocking_send` and receives with a deadline, so a silent peer turns
//! into an error after a bounded time instead of a hung thread.
//! [`TokioFeed`] does the same for a batch of dealer material.

use std::time::Duration;

use mpc_core::{Channel, ChannelError, DealerFeed};
use mpcvit_proto::v1::{PeerFrame, peer_frame::Kind};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Frames buffered per direction ([`crate::defaults::FRAME_BUFFER`]).
pub const FRAME_BUFFER: usize = crate::defaults::FRAME_BUFFER;

/// Both directions of a peer stream, as tokio channels.
#[derive(Debug)]
pub struct PeerStream {
    /// Outgoing frames (an `Err` ends the stream with that status, on the
    /// serving side).
    pub tx: mpsc::Sender<Result<PeerFrame, Status>>,
    /// Incoming frames; `None` once the other side closed the stream.
    pub rx: mpsc::Receiver<Result<PeerFrame, Status>>,
}

/// Copy `incoming` into a bounded channel until it ends.
pub fn pump<S>(mut incoming: S) -> mpsc::Receiver<Result<PeerFrame, Status>>
where
    S: Stream<Item = Result<PeerFrame, Status>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    tokio::spawn(async move {
        while let Some(item) = incoming.next().await {
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                break;
            }
        }
    });
    rx
}

/// The sending half of a peer stream.
pub type FrameTx = mpsc::Sender<Result<PeerFrame, Status>>;
/// The stream tonic sends from.
pub type FrameOut = tokio_stream::wrappers::ReceiverStream<Result<PeerFrame, Status>>;

/// An outgoing channel and the stream to hand to tonic for it.
pub fn outgoing() -> (FrameTx, FrameOut) {
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    (tx, tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A frame carrying one protocol message.
pub fn data(bytes: Vec<u8>) -> PeerFrame {
    PeerFrame {
        kind: Some(Kind::Data(bytes)),
    }
}

/// mpc-core's [`DealerFeed`] over a tokio channel of dealer chunks, for use
/// on a blocking thread: each piece is awaited at most `wait`, and its bytes
/// are given back to the sender's `budget` (one permit per byte, at most
/// the budget's size per chunk) once read.
#[derive(Debug)]
pub struct TokioFeed {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    budget: Arc<Semaphore>,
    size: usize,
    handle: tokio::runtime::Handle,
    wait: Duration,
}

impl TokioFeed {
    /// Read chunks from `rx`, waiting at most `wait` for each; `budget` has
    /// `size` permits in all.
    pub fn new(
        rx: mpsc::UnboundedReceiver<Vec<u8>>,
        budget: Arc<Semaphore>,
        size: usize,
        handle: tokio::runtime::Handle,
        wait: Duration,
    ) -> Self {
        TokioFeed {
            rx,
            budget,
            size,
            handle,
            wait,
        }
    }
}

impl DealerFeed for TokioFeed {
    fn next_piece(&mut self) -> Result<Vec<u8>, String> {
        let rx = &mut self.rx;
        match self
            .handle
            .block_on(async { tokio::time::timeout(self.wait, rx.recv()).await })
        {
            Ok(Some(piece)) => {
                self.budget.add_permits(piece.len().min(self.size));
                Ok(piece)
            }
            Ok(None) => Err("the dealer's stream for this batch ended (dealer link lost?)".into()),
            Err(_) => Err(format!("nothing from the dealer within {:?}", self.wait)),
        }
    }
}

/// [`Channel`] over a [`PeerStream`], for use on a blocking thread.
#[derive(Debug)]
pub struct BlockingChannel {
    stream: PeerStream,
    handle: tokio::runtime::Handle,
    recv_timeout: Duration,
    /// A start-up handshake the first `recv` waits for first, and how long.
    start_up: Option<(oneshot::Receiver<()>, Duration)>,
}

impl BlockingChannel {
    /// Wrap `stream`; `recv` fails after `recv_timeout` without a message.
    pub fn new(stream: PeerStream, handle: tokio::runtime::Handle, recv_timeout: Duration) -> Self {
        BlockingChannel {
            stream,
            handle,
            recv_timeout,
            start_up: None,
        }
    }

    /// Let the first `recv` wait up to `wait` for `passed` (a start-up
    /// handshake with the other party, run beside the protocol's first
    /// step, whose end sends it) before its usual wait for the message: a
    /// failed handshake (`passed` dropped) is `Disconnected`, and the
    /// handshake's owner tells why.
    pub fn after(mut self, passed: oneshot::Receiver<()>, wait: Duration) -> Self {
        self.start_up = Some((passed, wait));
        self
    }

    /// The stream back, to keep watching it after the protocol ran.
    pub fn into_inner(self) -> PeerStream {
        self.stream
    }
}

impl Channel for BlockingChannel {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.stream
            .tx
            .blocking_send(Ok(data(msg)))
            .map_err(|_| ChannelError::Disconnected)
    }

    fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        if let Some((passed, wait)) = self.start_up.take() {
            match self
                .handle
                .block_on(async { tokio::time::timeout(wait, passed).await })
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ChannelError::Disconnected),
                Err(_) => {
                    return Err(ChannelError::Transport(format!(
                        "the session's start-up with the other party took over {wait:?}"
                    )));
                }
            }
        }
        let rx = &mut self.stream.rx;
        let got = self
            .handle
            .block_on(async { tokio::time::timeout(self.recv_timeout, rx.recv()).await });
        match got {
            Err(_) => Err(ChannelError::Transport(format!(
                "no message from the other party within {:?}",
                self.recv_timeout
            ))),
            Ok(None) => Err(ChannelError::Disconnected),
            Ok(Some(Err(status))) => Err(ChannelError::Transport(format!(
                "the other party ended the stream: {}: {}",
                status.code(),
                status.message()
            ))),
            Ok(Some(Ok(PeerFrame {
                kind: Some(Kind::Data(bytes)),
            }))) => Ok(bytes),
            Ok(Some(Ok(_))) => Err(ChannelError::Transport(
                "unexpected control frame in the middle of a protocol".into(),
            )),
        }
    }
}
