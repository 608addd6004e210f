//! A userspace TCP relay that emulates a network link between two parties,
//! needing no privileges: it accepts on one address, dials an upstream for
//! each accepted connection, and forwards both directions with a one-way
//! delay and a bandwidth limit of its own per direction.
//!
//! The link model, per direction: a chunk read at `t` leaves the serialiser
//! at `d = max(t, d_prev) + len·8/bandwidth` (a token bucket without burst:
//! the serialiser is busy for `len/bandwidth` per chunk, in order) and is
//! written to the far side at `d + delay`. Reading never waits for a chunk's
//! delivery: chunks wait in a timestamped queue (at most
//! [`QUEUE_CHUNKS`] × [`CHUNK_BYTES`] bytes in flight per direction, beyond
//! which the relay stops reading and TCP's flow control holds the sender),
//! so data keeps flowing while earlier bytes are delayed, as on a real link.
//!
//! The relay counts bytes and chunks per direction, the serialisation time
//! it imposed, and the *in-flight time*: how long at least one chunk was
//! inside the relay (read and not yet delivered), in either direction, over
//! all connections. When both parties send in the same round the two
//! directions overlap and that round adds one delay, not two, which is the
//! time the computation spends waiting on the link.
//!
//! A relay can be *paused* ([`Relay::pause`]): it then delivers nothing in
//! either direction on any connection, and closes none, as a link that goes
//! silent (a cut cable, a firewall dropping packets); what it reads
//! meanwhile waits in its queues, then TCP's flow control holds the
//! senders. [`Relay::resume`] delivers what waited, in order.
//!
//! Sleeps are precise below a millisecond (tokio's timer has a 1 ms tick):
//! the last 1.5 ms before a delivery is slept on a blocking thread, so the
//! LAN delay of 0.25 ms is 0.25 ms and not the timer's tick.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Bytes read from a socket at once (one queue entry at most).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Queue entries per direction and connection before the relay stops reading.
pub const QUEUE_CHUNKS: usize = 256;

/// One direction's link: a one-way delay and a bandwidth (both directions
/// get the same, independently: a full-duplex link).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// Added to every byte's trip, after serialisation.
    pub one_way_delay: Duration,
    /// Bits per second; `None` is no limit.
    pub bits_per_second: Option<f64>,
}

impl LinkSpec {
    /// The benchmark's LAN: 1 Gbit/s, 0.25 ms each way.
    pub const LAN: LinkSpec = LinkSpec {
        one_way_delay: Duration::from_micros(250),
        bits_per_second: Some(1e9),
    };
    /// The paper's WAN (as in Cheetah): 400 Mbit/s, 20 ms each way (40 ms RTT).
    pub const WAN: LinkSpec = LinkSpec {
        one_way_delay: Duration::from_millis(20),
        bits_per_second: Some(400e6),
    };

    /// How long the serialiser is busy with `bytes`.
    pub fn serialisation(&self, bytes: usize) -> Duration {
        match self.bits_per_second {
            Some(bps) => Duration::from_secs_f64(bytes as f64 * 8.0 / bps),
            None => Duration::ZERO,
        }
    }

    /// The first-order estimate of the time a protocol spends on this link:
    /// one one-way delay per round (both parties send in the same round) plus
    /// serialising the larger party's bytes.
    pub fn estimate(&self, rounds: u64, bytes_per_party: u64) -> Duration {
        self.one_way_delay * rounds as u32 + self.serialisation(bytes_per_party as usize)
    }

    /// `0.25 ms, 1000 Mbit/s`-style description.
    pub fn describe(&self) -> String {
        let ms = self.one_way_delay.as_secs_f64() * 1e3;
        match self.bits_per_second {
            Some(bps) => format!("{ms} ms each way, {} Mbit/s", bps / 1e6),
            None => format!("{ms} ms each way, no bandwidth limit"),
        }
    }
}

/// What `--link` names: no relay at all, or a relay with a [`LinkSpec`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// The parties talk directly (loopback).
    None,
    /// Through a relay.
    Relay(LinkSpec),
}

impl Link {
    /// The spec, if there is a relay.
    pub fn spec(&self) -> Option<LinkSpec> {
        match self {
            Link::None => None,
            Link::Relay(s) => Some(*s),
        }
    }
}

/// Why a `--link` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParseError(String);

impl fmt::Display for LinkParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected lan, wan, none or DELAY_MS,MBIT (MBIT 0 = no limit)",
            self.0
        )
    }
}

impl std::error::Error for LinkParseError {}

impl FromStr for Link {
    type Err = LinkParseError;

    /// `lan`, `wan`, `none`, or `DELAY_MS,MBIT` (one-way delay in
    /// milliseconds, bandwidth in Mbit/s per direction; `0` = unlimited).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LinkParseError(format!("bad --link {s:?}"));
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Link::None),
            "lan" => Ok(Link::Relay(LinkSpec::LAN)),
            "wan" => Ok(Link::Relay(LinkSpec::WAN)),
            other => {
                let (d, m) = other.split_once(',').ok_or_else(bad)?;
                let d: f64 = d.trim().parse().map_err(|_| bad())?;
                let m: f64 = m.trim().parse().map_err(|_| bad())?;
                if !((0.0..1e6).contains(&d) && m.is_finite() && m >= 0.0) {
                    return Err(bad());
                }
                Ok(Link::Relay(LinkSpec {
                    one_way_delay: Duration::from_secs_f64(d / 1e3),
                    bits_per_second: (m > 0.0).then_some(m * 1e6),
                }))
            }
        }
    }
}

/// One direction's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct DirectionStats {
    /// Bytes delivered or queued.
    pub bytes: u64,
    /// Socket reads (queue entries).
    pub chunks: u64,
    /// Serialisation time imposed (`bytes / bandwidth`).
    pub serialisation: Duration,
}

impl DirectionStats {
    fn minus(&self, o: &DirectionStats) -> DirectionStats {
        DirectionStats {
            bytes: self.bytes - o.bytes,
            chunks: self.chunks - o.chunks,
            serialisation: self.serialisation.saturating_sub(o.serialisation),
        }
    }
}

/// A snapshot of a relay's counters (cumulative since it started; subtract
/// two snapshots with [`RelayStats::since`]).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RelayStats {
    /// From the dialer (the accepted side) to the upstream.
    pub forward: DirectionStats,
    /// From the upstream back to the dialer.
    pub backward: DirectionStats,
    /// Time with at least one chunk inside the relay, either direction.
    pub in_flight: Duration,
    /// Connections accepted.
    pub connections: u64,
}

impl RelayStats {
    /// The counters between `earlier` and `self`.
    pub fn since(&self, earlier: &RelayStats) -> RelayStats {
        RelayStats {
            forward: self.forward.minus(&earlier.forward),
            backward: self.backward.minus(&earlier.backward),
            in_flight: self.in_flight.saturating_sub(earlier.in_flight),
            connections: self.connections - earlier.connections,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Forward,
    Backward,
}

#[derive(Debug)]
struct Counters {
    stats: RelayStats,
    /// Chunks read and not yet delivered (or dropped).
    inside: u64,
    /// When `inside` last went from 0 to 1.
    busy_since: Instant,
}

#[derive(Debug)]
struct Shared(Mutex<Counters>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves plain counters behind:
        // keep counting.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arrive(&self, dir: Dir, bytes: usize, ser: Duration, now: Instant) {
        let mut c = self.lock();
        let d = match dir {
            Dir::Forward => &mut c.stats.forward,
            Dir::Backward => &mut c.stats.backward,
        };
        d.bytes += bytes as u64;
        d.chunks += 1;
        d.serialisation += ser;
        if c.inside == 0 {
            c.busy_since = now;
        }
        c.inside += 1;
    }

    fn leave(&self) {
        let mut c = self.lock();
        c.inside -= 1;
        if c.inside == 0 {
            let busy = c.busy_since.elapsed();
            c.stats.in_flight += busy;
        }
    }

    fn snapshot(&self) -> RelayStats {
        let c = self.lock();
        let mut s = c.stats;
        if c.inside > 0 {
            s.in_flight += c.busy_since.elapsed();
        }
        s
    }
}

/// A running relay; dropping it stops accepting and closes every relayed
/// connection.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    spec: LinkSpec,
    shared: Arc<Shared>,
    /// True while paused: every writer holds its next chunk.
    paused: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listen on `listen` (port 0 picks one) and relay each connection to
    /// `upstream` (dialled when a connection arrives) over `spec`. Must be
    /// called within a tokio runtime with time and I/O enabled.
    pub async fn start(listen: &str, upstream: &str, spec: LinkSpec) -> io::Result<Relay> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared(Mutex::new(Counters {
            stats: RelayStats::default(),
            inside: 0,
            busy_since: Instant::now(),
        })));
        let upstream = upstream.to_string();
        let sh = shared.clone();
        let (paused, gate) = watch::channel(false);
        let task = tokio::spawn(async move {
            // Owned here: aborting the accept loop drops every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else {
                            // Out of descriptors or similar: do not spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        sh.lock().stats.connections += 1;
                        conns.spawn(relay_connection(
                            inbound,
                            upstream.clone(),
                            spec,
                            sh.clone(),
                            gate.clone(),
                        ));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Relay {
            addr,
            spec,
            shared,
            paused,
            task,
        })
    }

    /// The address to dial instead of the upstream.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The emulated link.
    pub fn spec(&self) -> LinkSpec {
        self.spec
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        self.shared.snapshot()
    }

    /// Stop delivering, both directions, on every connection (those open
    /// and those accepted later), closing none: the link goes silent. Data
    /// read meanwhile waits in the queues (then TCP's flow control holds
    /// the senders). New connections are still accepted and dialled, but
    /// no byte crosses them.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Deliver again: what waited first, in order, then as before.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Whether the relay is paused.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connection(
    inbound: TcpStream,
    upstream: String,
    spec: LinkSpec,
    sh: Arc<Shared>,
    gate: watch::Receiver<bool>,
) {
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        // Closing the inbound connection tells the dialer the far side is
        // not there, as a refused connection would.
        return;
    };
    // Small messages (a round's openings) must not wait for Nagle.
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_rd, in_wr) = inbound.into_split();
    let (out_rd, out_wr) = outbound.into_split();
    tokio::join!(
        pump(in_rd, out_wr, spec, sh.clone(), gate.clone(), Dir::Forward),
        pump(out_rd, in_wr, spec, sh, gate, Dir::Backward),
    );
}

struct Chunk {
    data: Vec<u8>,
    deliver: Instant,
}

/// One direction: a reader that timestamps chunks into a queue and a writer
/// that delivers each at its time, or once the relay is no longer paused
/// (`gate` true), whichever is later. EOF is passed on (after the data
/// before it) as a write shutdown; a failed write ends this direction and
/// drops the reader, which closes the source's read side.
async fn pump(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    spec: LinkSpec,
    sh: Arc<Shared>,
    mut gate: watch::Receiver<bool>,
    dir: Dir,
) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(QUEUE_CHUNKS);
    let sh_r = sh.clone();
    let reader = async move {
        let mut serialiser_free = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            let now = Instant::now();
            let ser = spec.serialisation(n);
            let departs = serialiser_free.max(now) + ser;
            serialiser_free = departs;
            sh_r.arrive(dir, n, ser, now);
            let chunk = Chunk {
                data: buf,
                deliver: departs + spec.one_way_delay,
            };
            if tx.send(chunk).await.is_err() {
                // The writer is gone: this chunk never entered the queue.
                sh_r.leave();
                break;
            }
        }
    };
    let writer = async move {
        while let Some(c) = rx.recv().await {
            sleep_until_precise(c.deliver).await;
            // Paused: hold the chunk (the relay's end drops this task).
            let _ = gate.wait_for(|paused| !*paused).await;
            let ok = wr.write_all(&c.data).await.is_ok();
            sh.leave();
            if !ok {
                // The far side is gone: drop what is queued, stop the reader.
                rx.close();
                while rx.recv().await.is_some() {
                    sh.leave();
                }
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Sleep until `deadline`, to well below a millisecond: the timer for all
/// but the last 1.5 ms, a blocking thread's `sleep` for the rest.
async fn sleep_until_precise(deadline: Instant) {
    const FINE: Duration = Duration::from_micros(1500);
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > FINE {
        tokio::time::sleep_until((deadline - FINE).into()).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_links() {
        assert_eq!("lan".parse::<Link>().unwrap(), Link::Relay(LinkSpec::LAN));
        assert_eq!("WAN".parse::<Link>().unwrap(), Link::Relay(LinkSpec::WAN));
        assert_eq!("none".parse::<Link>().unwrap(), Link::None);
        assert_eq!(
            "20,400".parse::<Link>().unwrap(),
            Link::Relay(LinkSpec::WAN),
            "DELAY_MS,MBIT is the spelled-out WAN"
        );
        let l = "0.5, 0".parse::<Link>().unwrap().spec().unwrap();
        assert_eq!(l.one_way_delay, Duration::from_micros(500));
        assert_eq!(l.bits_per_second, None);
        for bad in ["", "fast", "20", "20,", "-1,10", "1,-10", "nan,1", "1,inf"] {
            assert!(bad.parse::<Link>().is_err(), "{bad:?} accepted");
        }
    }

    /// An echo server behind a relay: paused, nothing comes back and the
    /// connection stays open; resumed, what was sent meanwhile arrives, in
    /// order, on the same connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_relay_delivers_nothing_and_closes_nothing() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut rd, mut wr) = s.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        let spec = LinkSpec {
            one_way_delay: Duration::ZERO,
            bits_per_second: None,
        };
        let relay = Relay::start("127.0.0.1:0", &echo_addr, spec).await.unwrap();
        let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
        let mut buf = [0u8; 5];
        s.write_all(b"hello").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        relay.pause();
        assert!(relay.is_paused());
        s.write_all(b"world").await.unwrap();
        let silent = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(silent.is_err(), "a paused relay delivered {silent:?}");
        // A connection opened while paused gets nothing either.
        let mut late = TcpStream::connect(relay.local_addr()).await.unwrap();
        late.write_all(b"later").await.unwrap();
        let silent = tokio::time::timeout(Duration::from_millis(200), late.read(&mut buf)).await;
        assert!(silent.is_err(), "a paused relay delivered {silent:?}");

        relay.resume();
        assert!(!relay.is_paused());
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");
        late.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"later");
        let st = relay.stats();
        assert_eq!(st.connections, 2);
        assert_eq!(st.forward.bytes, 15);
    }

    #[test]
    fn estimate_is_rounds_times_delay_plus_serialisation() {
        // 218 rounds at 20 ms + 26 MB at 400 Mbit/s = 4.36 s + 0.52 s.
        let e = LinkSpec::WAN.estimate(218, 26_000_000).as_secs_f64();
        assert!((e - 4.88).abs() < 1e-9, "{e}");
        assert_eq!(
            LinkSpec::LAN.serialisation(125_000),
            Duration::from_millis(1)
        );
    }
}
