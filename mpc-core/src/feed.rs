//! Correlated randomness that arrives while the computation runs.
//!
//! A [`Pool`](crate::Pool) holds a whole plan's material, expanded, before
//! the online phase starts: fine for a small model, but the material of one
//! `vit_9_12_64` inference is gigabytes. A [`StreamedPool`] instead reads
//! this party's dealer bytes from a [`DealerFeed`] in plan order and expands
//! each request's material only when the operator takes it. The driver
//! bounds the feed's buffer (and with it the dealer, by backpressure), so a
//! party holds at most that buffer plus one request's material, whatever the
//! model's depth; the dealer holds one request's answer per party.
//!
//! Running out is an error, never a fallback: a feed that ends or stalls
//! gives [`MpcError::MaterialUnavailable`], and a program that asks for
//! something else than the plan gives [`MpcError::OutOfStep`].

use std::sync::Arc;

use crate::dealer::{CorrelationSource, Material, MaterialGen, Request};
use crate::error::{MpcError, Result};

/// This party's dealer byte stream for one batch, in pieces as they arrive.
pub trait DealerFeed: Send {
    /// The next piece (any length); an error once the stream ended early,
    /// broke or stalled past the driver's deadline.
    fn next_piece(&mut self) -> std::result::Result<Vec<u8>, String>;
}

/// A feed over a `std` channel of pieces, each awaited at most `wait`.
#[derive(Debug)]
pub struct ChannelFeed {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    wait: std::time::Duration,
}

impl ChannelFeed {
    /// Read pieces from `rx`, waiting at most `wait` for each.
    pub fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>, wait: std::time::Duration) -> Self {
        ChannelFeed { rx, wait }
    }
}

impl DealerFeed for ChannelFeed {
    fn next_piece(&mut self) -> std::result::Result<Vec<u8>, String> {
        use std::sync::mpsc::RecvTimeoutError;
        self.rx.recv_timeout(self.wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!("nothing from the dealer within {:?}", self.wait),
            RecvTimeoutError::Disconnected => "the dealer's stream ended".to_string(),
        })
    }
}

/// Material for a plan, expanded request by request from a [`DealerFeed`].
pub struct StreamedPool<F> {
    generator: MaterialGen,
    plan: Arc<Vec<Request>>,
    next: usize,
    feed: F,
    /// Received bytes not yet expanded: `pending[at..]`.
    pending: Vec<u8>,
    at: usize,
}

impl<F> std::fmt::Debug for StreamedPool<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StreamedPool({} of {} requests taken)",
            self.next,
            self.plan.len()
        )
    }
}

impl<F: DealerFeed> StreamedPool<F> {
    /// Expand `plan`'s material with `generator` (which must be this batch's)
    /// from the dealer bytes that `feed` delivers.
    pub fn new(generator: MaterialGen, plan: Arc<Vec<Request>>, feed: F) -> Self {
        StreamedPool {
            generator,
            plan,
            next: 0,
            feed,
            pending: Vec::new(),
            at: 0,
        }
    }

    /// Requests taken so far.
    pub fn taken(&self) -> usize {
        self.next
    }

    /// The plan this pool answers.
    pub fn plan(&self) -> Arc<Vec<Request>> {
        self.plan.clone()
    }

    /// The next `n` bytes of the stream.
    fn read(&mut self, op: &'static str, n: usize) -> Result<Vec<u8>> {
        while self.pending.len() - self.at < n {
            let piece = self
                .feed
                .next_piece()
                .map_err(|reason| MpcError::MaterialUnavailable { op, reason })?;
            if self.at > 0 {
                self.pending.drain(..self.at);
                self.at = 0;
            }
            if self.pending.is_empty() && piece.len() >= n {
                self.pending = piece;
            } else {
                self.pending.extend_from_slice(&piece);
            }
        }
        let out = self.pending[self.at..self.at + n].to_vec();
        self.at += n;
        Ok(out)
    }
}

impl<F: DealerFeed> CorrelationSource for StreamedPool<F> {
    fn take(&mut self, op: &'static str, req: Request) -> Result<Material> {
        check_plan(&self.plan, self.next, op, &req)?;
        let bytes = self.read(op, req.dealer_bytes(self.generator.party()))?;
        self.next += 1;
        self.generator.expand(&req, &bytes)
    }
}

/// Requests a [`Prefetch`] holds expanded ahead of the program by default.
pub const PREFETCH_AHEAD: usize = 2;

/// A correlation source whose material is expanded ahead of the program on
/// a thread of its own: the thread takes the plan's requests in order from
/// the inner source (a [`StreamedPool`]: PRG expansion, the dealer bytes'
/// parsing) and holds at most `ahead` expanded answers, so the program's
/// thread finds each request's material ready instead of expanding it
/// between two rounds. On a link with delay the expansion runs while the
/// program waits for the peer (about 60 ms per party and `vit_7_4_32`
/// inference); memory grows by at most `ahead` requests' material. It
/// gains on a LAN or WAN link; on loopback both parties compute at once
/// and the thread competes with them for the cores.
///
/// The program's order is checked against the plan here, as by the inner
/// source; an error of the inner source reaches the program at the request
/// it concerns, with the asking operator's name. Dropping a `Prefetch`
/// stops its thread at its next answer (the thread is not joined: it may
/// first finish the request it is expanding).
pub struct Prefetch {
    plan: Arc<Vec<Request>>,
    next: usize,
    ready: std::sync::mpsc::Receiver<Result<Material>>,
}

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Prefetch({} of {} requests taken)",
            self.next,
            self.plan.len()
        )
    }
}

impl Prefetch {
    /// Expand `plan`'s material from `source` on a new thread, at most
    /// `ahead` (at least 1) requests ahead of the program.
    pub fn spawn<S>(source: S, plan: Arc<Vec<Request>>, ahead: usize) -> Self
    where
        S: CorrelationSource + 'static,
    {
        let (tx, ready) = std::sync::mpsc::sync_channel(ahead.max(1));
        let requests = plan.clone();
        let mut source = source;
        std::thread::Builder::new()
            .name("mpc-prefetch".into())
            .spawn(move || {
                for req in requests.iter() {
                    let material = source.take("prefetch", req.clone());
                    let failed = material.is_err();
                    if tx.send(material).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the prefetch thread");
        Prefetch {
            plan,
            next: 0,
            ready,
        }
    }
}

impl CorrelationSource for Prefetch {
    fn take(&mut self, op: &'static str, req: Request) -> Result<Material> {
        check_plan(&self.plan, self.next, op, &req)?;
        self.next += 1;
        match self.ready.recv() {
            Ok(Ok(material)) => Ok(material),
            Ok(Err(MpcError::MaterialUnavailable { reason, .. })) => {
                Err(MpcError::MaterialUnavailable { op, reason })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MpcError::MaterialUnavailable {
                op,
                reason: "the prefetching thread stopped after an earlier error".into(),
            }),
        }
    }
}

/// That `req`, asked by `op`, is request `next` of `plan`: else the plan
/// ran out ([`MpcError::PoolExhausted`]) or the program left it
/// ([`MpcError::OutOfStep`]).
fn check_plan(plan: &[Request], next: usize, op: &'static str, req: &Request) -> Result<()> {
    match plan.get(next) {
        None => Err(MpcError::PoolExhausted {
            op,
            needed: format!("{req:?}"),
        }),
        Some(r) if r != req => Err(MpcError::OutOfStep {
            op,
            needed: format!("{req:?}"),
            found: format!("{r:?}"),
        }),
        Some(_) => Ok(()),
    }
}
