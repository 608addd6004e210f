//! Secure operators as values.
//!
//! An [`Op<T>`] is a secure computation that has not run yet: a state
//! machine that either has its result, or holds the message it must send
//! next and what to do with the peer's reply. Operators are built by
//! methods on [`Ctx`] (which takes their correlated randomness as they are
//! built) and composed before anything is sent:
//!
//! - [`Op::join`] and [`Op::all`] run independent operators side by side:
//!   while several are waiting, their messages travel as one message each
//!   way, so `k` joined operators of `r` rounds cost `r` rounds, not `k·r`.
//! - [`Op::then`] feeds one operator's result into the next (no round of
//!   its own); [`Op::map`] and [`Op::try_map`] post-process a result locally.
//!
//! One synchronous driver, [`crate::Session::run`], exchanges the messages
//! over a [`crate::Channel`]. Both parties build the same operators in the
//! same order (everything that steers an `Op` is public), so their messages
//! pair up and their correlated randomness is taken in the same order; the
//! plan recorder runs the same program against placeholder material.
//!
//! The rounds of a composed operator are those of its longest chain of
//! [`Op::then`]s; the bytes are the sums of its parts'.

use crate::ctx::Ctx;
use crate::error::{MpcError, Result};

/// What turns the peer's message into the operator's next state.
type Next<T> = Box<dyn FnOnce(&mut Ctx<'_>, &[u8]) -> Op<T> + Send>;

/// A computation that needs the context before its next message exists.
type Defer<T> = Box<dyn FnOnce(&mut Ctx<'_>) -> Op<T> + Send>;

/// The operators whose messages travel in one exchange: each one's name and
/// bytes, in message order (one entry unless operators were joined).
pub(crate) type Parts = Vec<(&'static str, usize)>;

/// A secure computation yet to run (see the module doc).
#[must_use = "an Op does nothing until it is run by Session::run"]
pub struct Op<T> {
    state: State<T>,
}

enum State<T> {
    /// Finished.
    Ready(T),
    /// Failed before or after sending (shapes, material, a peer's message).
    Failed(MpcError),
    /// Not started: building it needs the context (for example its
    /// correlated randomness) once the operator before it has finished.
    Defer(Defer<T>),
    /// Waiting on one exchange: `msg` goes out, the peer's message of the
    /// same length comes back and goes to `next`.
    Wait {
        parts: Parts,
        msg: Vec<u8>,
        next: Next<T>,
    },
}

impl<T> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Ready(_) => write!(f, "Op(ready)"),
            State::Failed(e) => write!(f, "Op(failed: {e})"),
            State::Defer(_) => write!(f, "Op(deferred)"),
            State::Wait { parts, msg, .. } => {
                let names: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
                write!(f, "Op({}: {} bytes out)", names.join("+"), msg.len())
            }
        }
    }
}

/// One step of an [`Op`] as the driver sees it.
pub(crate) enum Step<T> {
    /// The result.
    Done(Result<T>),
    /// Send `msg` (made of `parts`), hand the reply to `next`.
    Exchange {
        parts: Parts,
        msg: Vec<u8>,
        next: Next<T>,
    },
}

impl<T: Send + 'static> Op<T> {
    /// An operator that has its result already (no round).
    pub fn ready(v: T) -> Self {
        Op {
            state: State::Ready(v),
        }
    }

    /// An operator that failed.
    pub fn fail(e: MpcError) -> Self {
        Op {
            state: State::Failed(e),
        }
    }

    /// One exchange: send `msg`, then `next` turns the peer's message (of
    /// the same length) into the rest of the computation.
    pub(crate) fn exchange(
        op: &'static str,
        msg: Vec<u8>,
        next: impl FnOnce(&mut Ctx<'_>, &[u8]) -> Op<T> + Send + 'static,
    ) -> Self {
        Op {
            state: State::Wait {
                parts: vec![(op, msg.len())],
                msg,
                next: Box::new(next),
            },
        }
    }

    /// A waiting operator made of several joined ones.
    fn waiting(
        parts: Parts,
        msg: Vec<u8>,
        next: impl FnOnce(&mut Ctx<'_>, &[u8]) -> Op<T> + Send + 'static,
    ) -> Self {
        Op {
            state: State::Wait {
                parts,
                msg,
                next: Box::new(next),
            },
        }
    }

    /// Build the operator when the driver (or a join) reaches it.
    pub fn deferred(build: impl FnOnce(&mut Ctx<'_>) -> Op<T> + Send + 'static) -> Self {
        Op {
            state: State::Defer(Box::new(build)),
        }
    }

    /// True when the result is there without any exchange.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready(_))
    }

    /// Apply `f` to the result (local, no round).
    pub fn map<U: Send + 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Op<U> {
        self.try_map(|v| Ok(f(v)))
    }

    /// Apply a fallible `f` to the result (local, no round).
    pub fn try_map<U: Send + 'static>(
        self,
        f: impl FnOnce(T) -> Result<U> + Send + 'static,
    ) -> Op<U> {
        match self.state {
            State::Ready(v) => f(v).into(),
            State::Failed(e) => Op::fail(e),
            State::Defer(d) => Op::deferred(move |c| d(c).try_map(f)),
            State::Wait { parts, msg, next } => {
                Op::waiting(parts, msg, move |c, peer| next(c, peer).try_map(f))
            }
        }
    }

    /// Continue with the operator `f` builds from the result: `f` runs once
    /// this one has finished, with the context, so the next operator takes
    /// its randomness then. Costs no round of its own.
    pub fn then<U: Send + 'static>(
        self,
        f: impl FnOnce(&mut Ctx<'_>, T) -> Op<U> + Send + 'static,
    ) -> Op<U> {
        match self.state {
            State::Ready(v) => Op::deferred(move |c| f(c, v)),
            State::Failed(e) => Op::fail(e),
            State::Defer(d) => Op::deferred(move |c| d(c).then(f)),
            State::Wait { parts, msg, next } => {
                Op::waiting(parts, msg, move |c, peer| next(c, peer).then(f))
            }
        }
    }

    /// Run `self` and `other` side by side: in each round, both messages
    /// travel as one. Rounds: the larger of the two.
    pub fn join<U: Send + 'static>(self, other: Op<U>) -> Op<(T, U)> {
        use State::*;
        match (self.state, other.state) {
            (Failed(e), _) | (_, Failed(e)) => Op::fail(e),
            (Ready(a), Ready(b)) => Op::ready((a, b)),
            (Ready(a), s) => Op { state: s }.map(move |b| (a, b)),
            (s, Ready(b)) => Op { state: s }.map(move |a| (a, b)),
            (a @ Defer(_), b) | (a, b @ Defer(_)) => {
                let (a, b) = (Op { state: a }, Op { state: b });
                Op::deferred(move |c| {
                    let a = a.force(c);
                    let b = b.force(c);
                    a.join(b)
                })
            }
            (
                Wait {
                    parts: mut pa,
                    msg: ma,
                    next: na,
                },
                Wait {
                    parts: pb,
                    msg: mb,
                    next: nb,
                },
            ) => {
                let split = ma.len();
                let mut msg = ma;
                msg.extend(mb);
                pa.extend(pb);
                Op::waiting(pa, msg, move |c, peer| {
                    let (pa, pb) = peer.split_at(split);
                    let a = na(c, pa);
                    let b = nb(c, pb);
                    a.join(b)
                })
            }
        }
    }

    /// Run every operator of `ops` side by side (see [`Op::join`]); the
    /// results keep their order. Rounds: the largest of theirs.
    pub fn all(ops: Vec<Op<T>>) -> Op<Vec<T>> {
        let mut done: Vec<Option<T>> = Vec::with_capacity(ops.len());
        let mut waiting: Vec<(usize, Op<T>)> = Vec::new();
        let mut deferred = false;
        for (i, op) in ops.into_iter().enumerate() {
            match op.state {
                State::Ready(v) => done.push(Some(v)),
                State::Failed(e) => return Op::fail(e),
                s => {
                    deferred |= matches!(s, State::Defer(_));
                    done.push(None);
                    waiting.push((i, Op { state: s }));
                }
            }
        }
        if waiting.is_empty() {
            return Op::ready(
                done.into_iter()
                    .map(|v| v.expect("every op ready"))
                    .collect(),
            );
        }
        if deferred {
            return Op::deferred(move |c| {
                let ops = reassemble(done, waiting.into_iter().map(|(i, op)| (i, op.force(c))));
                Op::all(ops)
            });
        }
        let mut msg = Vec::new();
        let mut parts = Vec::with_capacity(waiting.len());
        let mut names = Parts::new();
        for (i, op) in waiting {
            let State::Wait {
                parts: p,
                msg: m,
                next,
            } = op.state
            else {
                unreachable!("only waiting ops are left")
            };
            names.extend(p);
            parts.push((i, m.len(), next));
            msg.extend(m);
        }
        Op::waiting(names, msg, move |c, peer| {
            let mut at = 0;
            let mut stepped = Vec::with_capacity(parts.len());
            for (i, len, next) in parts {
                stepped.push((i, next(c, &peer[at..at + len])));
                at += len;
            }
            Op::all(reassemble(done, stepped.into_iter()))
        })
    }

    /// Resolve deferred construction until the operator is ready, failed or
    /// waiting on an exchange.
    fn force(mut self, c: &mut Ctx<'_>) -> Op<T> {
        while let State::Defer(d) = self.state {
            self = d(c);
        }
        self
    }

    /// The next step for the driver, building deferred parts with `c`.
    pub(crate) fn step(self, c: &mut Ctx<'_>) -> Step<T> {
        match self.force(c).state {
            State::Ready(v) => Step::Done(Ok(v)),
            State::Failed(e) => Step::Done(Err(e)),
            State::Wait { parts, msg, next } => Step::Exchange { parts, msg, next },
            State::Defer(_) => unreachable!("forced"),
        }
    }
}

/// The results so far with the still-running operators put back in place.
fn reassemble<T: Send + 'static>(
    done: Vec<Option<T>>,
    running: impl Iterator<Item = (usize, Op<T>)>,
) -> Vec<Op<T>> {
    let mut ops: Vec<Option<Op<T>>> = done.into_iter().map(|v| v.map(Op::ready)).collect();
    for (i, op) in running {
        ops[i] = Some(op);
    }
    ops.into_iter()
        .map(|op| op.expect("every slot filled"))
        .collect()
}

impl<T: Send + 'static> From<Result<T>> for Op<T> {
    fn from(r: Result<T>) -> Self {
        match r {
            Ok(v) => Op::ready(v),
            Err(e) => Op::fail(e),
        }
    }
}

impl<T: Send + 'static> From<Result<Op<T>>> for Op<T> {
    fn from(r: Result<Op<T>>) -> Self {
        r.unwrap_or_else(Op::fail)
    }
}

/// The value of a `Result`, or return the error as a failed [`Op`] from
/// the enclosing operator constructor.
macro_rules! attempt {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::op::Op::fail(e.into()),
        }
    };
}
pub(crate) use attempt;
