//! The link between the two parties.
//!
//! Protocol code talks to its peer only through [`Channel`]: send a message,
//! receive the peer's. Every opening in this crate is symmetric (both parties
//! send, then both receive), so one `recv` is one communication round.
//! [`MemChannel`] pairs two parties in memory (tests, benchmarks, the local
//! mode), [`CountingChannel`] counts bytes and rounds, and [`EchoChannel`]
//! answers each message with itself (used to record a program's correlation
//! plan without a peer).

use crate::error::{ChannelError, MpcError, Result};
use std::sync::mpsc;

/// A reliable, ordered, message-oriented link to the other party.
pub trait Channel: Send {
    /// Send one message.
    fn send(&mut self, msg: Vec<u8>) -> std::result::Result<(), ChannelError>;
    /// Receive the peer's next message.
    fn recv(&mut self) -> std::result::Result<Vec<u8>, ChannelError>;
}

impl<C: Channel + ?Sized> Channel for &mut C {
    fn send(&mut self, msg: Vec<u8>) -> std::result::Result<(), ChannelError> {
        (**self).send(msg)
    }
    fn recv(&mut self) -> std::result::Result<Vec<u8>, ChannelError> {
        (**self).recv()
    }
}

impl<C: Channel + ?Sized> Channel for Box<C> {
    fn send(&mut self, msg: Vec<u8>) -> std::result::Result<(), ChannelError> {
        (**self).send(msg)
    }
    fn recv(&mut self) -> std::result::Result<Vec<u8>, ChannelError> {
        (**self).recv()
    }
}

/// One end of an in-memory pair.
#[derive(Debug)]
pub struct MemChannel {
    tx: mpsc::Sender<Vec<u8>>,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl MemChannel {
    /// Two connected ends: what one sends the other receives.
    pub fn pair() -> (MemChannel, MemChannel) {
        let (t0, r1) = mpsc::channel();
        let (t1, r0) = mpsc::channel();
        (MemChannel { tx: t0, rx: r0 }, MemChannel { tx: t1, rx: r1 })
    }
}

impl Channel for MemChannel {
    fn send(&mut self, msg: Vec<u8>) -> std::result::Result<(), ChannelError> {
        self.tx.send(msg).map_err(|_| ChannelError::Disconnected)
    }
    fn recv(&mut self) -> std::result::Result<Vec<u8>, ChannelError> {
        self.rx.recv().map_err(|_| ChannelError::Disconnected)
    }
}

/// A channel whose peer mirrors every message back: used to run a program
/// once without a peer and record which correlations it asks for.
#[derive(Debug, Default)]
pub struct EchoChannel {
    last: Vec<Vec<u8>>,
}

impl Channel for EchoChannel {
    fn send(&mut self, msg: Vec<u8>) -> std::result::Result<(), ChannelError> {
        self.last.push(msg);
        Ok(())
    }
    fn recv(&mut self) -> std::result::Result<Vec<u8>, ChannelError> {
        if self.last.is_empty() {
            return Err(ChannelError::Transport("echo: nothing was sent".into()));
        }
        Ok(self.last.remove(0))
    }
}

/// Bytes and rounds a party has used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommStats {
    /// Bytes this party sent.
    pub bytes_sent: u64,
    /// Bytes this party received.
    pub bytes_received: u64,
    /// Messages this party sent.
    pub messages: u64,
    /// Communication rounds: the number of messages received (openings are symmetric).
    pub rounds: u64,
}

impl std::ops::Sub for CommStats {
    type Output = CommStats;
    fn sub(self, o: CommStats) -> CommStats {
        CommStats {
            bytes_sent: self.bytes_sent - o.bytes_sent,
            bytes_received: self.bytes_received - o.bytes_received,
            messages: self.messages - o.messages,
            rounds: self.rounds - o.rounds,
        }
    }
}

/// Wraps a channel and counts what passes.
#[derive(Debug)]
pub struct CountingChannel<C> {
    inner: C,
    stats: CommStats,
}

impl<C: Channel> CountingChannel<C> {
    /// Count the traffic of `inner`.
    pub fn new(inner: C) -> Self {
        CountingChannel {
            inner,
            stats: CommStats::default(),
        }
    }
    /// What has passed so far.
    pub fn stats(&self) -> CommStats {
        self.stats
    }
    /// The wrapped channel.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C: Channel> Channel for CountingChannel<C> {
    fn send(&mut self, msg: Vec<u8>) -> std::result::Result<(), ChannelError> {
        self.stats.bytes_sent += msg.len() as u64;
        self.stats.messages += 1;
        self.inner.send(msg)
    }
    fn recv(&mut self) -> std::result::Result<Vec<u8>, ChannelError> {
        let m = self.inner.recv()?;
        self.stats.bytes_received += m.len() as u64;
        self.stats.rounds += 1;
        Ok(m)
    }
}

/// Send `msg`, receive the peer's message of the same length: one round.
pub(crate) fn exchange_bytes(
    ch: &mut dyn Channel,
    op: &'static str,
    msg: Vec<u8>,
) -> Result<Vec<u8>> {
    let expected = msg.len();
    ch.send(msg)
        .map_err(|source| MpcError::Channel { op, source })?;
    let got = ch
        .recv()
        .map_err(|source| MpcError::Channel { op, source })?;
    if got.len() != expected {
        return Err(MpcError::Malformed {
            op,
            expected,
            got: got.len(),
        });
    }
    Ok(got)
}

/// Bytes needed to send `n` values of `bits` bits each, packed.
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Pack the low `bits` bits of each value, little-endian, densely
/// (`bits` in 0..=64; 0 packs nothing).
pub fn pack(values: &[u64], bits: u32) -> Vec<u8> {
    assert!(bits <= 64, "pack: {bits} bits");
    if bits == 64 {
        return values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    let mut out = Vec::with_capacity(packed_len(values.len(), bits));
    if bits == 0 {
        return out;
    }
    let mask = (1u64 << bits) - 1;
    // bits not yet written, lowest first; never more than 7 + 63 of them
    let (mut acc, mut held) = (0u128, 0u32);
    for v in values {
        acc |= u128::from(v & mask) << held;
        held += bits;
        while held >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            held -= 8;
        }
    }
    if held > 0 {
        out.push(acc as u8);
    }
    out
}

/// Inverse of [`pack`] for `n` values (`bytes` at least
/// [`packed_len`]`(n, bits)` long).
pub fn unpack(bytes: &[u8], n: usize, bits: u32) -> Vec<u64> {
    assert!(bits <= 64, "unpack: {bits} bits");
    if bits == 64 {
        return bytes
            .chunks_exact(8)
            .take(n)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
            .collect();
    }
    if bits == 0 {
        return vec![0; n];
    }
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(n);
    let mut next = bytes.iter();
    let (mut acc, mut held) = (0u128, 0u32);
    for _ in 0..n {
        while held < bits {
            acc |= u128::from(*next.next().expect("unpack: too few bytes")) << held;
            held += 8;
        }
        out.push(acc as u64 & mask);
        acc >>= bits;
        held -= bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_all_widths() {
        let vals: Vec<u64> = (0..37u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for bits in 0..=64 {
            let mask = match bits {
                64 => u64::MAX,
                b => (1u64 << b) - 1,
            };
            let p = pack(&vals, bits);
            assert_eq!(p.len(), packed_len(vals.len(), bits));
            let back = unpack(&p, vals.len(), bits);
            for (a, b) in vals.iter().zip(&back) {
                assert_eq!(a & mask, *b);
            }
        }
    }

    #[test]
    fn short_message_is_an_error_not_a_panic() {
        let (mut a, mut b) = MemChannel::pair();
        b.send(vec![1, 2, 3]).unwrap();
        let err = exchange_bytes(&mut a, "test", vec![0; 8]).unwrap_err();
        assert!(matches!(
            err,
            MpcError::Malformed {
                expected: 8,
                got: 3,
                ..
            }
        ));
        drop(b);
        let err = exchange_bytes(&mut a, "test", vec![0; 8]).unwrap_err();
        assert!(matches!(err, MpcError::Channel { .. }));
    }
}
