//! The relay over real loopback sockets: delay and bandwidth are applied,
//! bytes arrive intact and in order both ways, closing one side closes the
//! other. Lower bounds are exact consequences of the link model; upper
//! bounds are generous (a busy 2-core machine).

use std::time::{Duration, Instant};

use mpcvit_bench::{LinkSpec, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GENEROUS: Duration = Duration::from_secs(20);

fn spec(delay_ms: f64, mbit: Option<f64>) -> LinkSpec {
    LinkSpec {
        one_way_delay: Duration::from_secs_f64(delay_ms / 1e3),
        bits_per_second: mbit.map(|m| m * 1e6),
    }
}

/// An upstream listener, a relay in front of it, a connected client and
/// the upstream's side of that connection.
async fn pair(link: LinkSpec) -> (Relay, TcpStream, TcpStream) {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap().to_string();
    let relay = Relay::start("127.0.0.1:0", &up_addr, link).await.unwrap();
    let client = TcpStream::connect(relay.local_addr()).await.unwrap();
    client.set_nodelay(true).unwrap();
    let (server, _) = tokio::time::timeout(GENEROUS, upstream.accept())
        .await
        .expect("the relay dials the upstream")
        .unwrap();
    server.set_nodelay(true).unwrap();
    (relay, client, server)
}

/// Deterministic bytes (xorshift) so corruption or reordering shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn a_ping_through_a_20_ms_relay_takes_two_delays() {
    let (relay, mut client, mut server) = pair(spec(20.0, None)).await;
    let echo = tokio::spawn(async move {
        let mut b = [0u8; 1];
        for _ in 0..3 {
            server.read_exact(&mut b).await.unwrap();
            server.write_all(&b).await.unwrap();
        }
    });
    for i in 0..3u8 {
        let t = Instant::now();
        client.write_all(&[i]).await.unwrap();
        let mut b = [0u8; 1];
        client.read_exact(&mut b).await.unwrap();
        let rtt = t.elapsed();
        assert_eq!(b[0], i);
        assert!(rtt >= Duration::from_millis(40), "round trip {rtt:?}");
        assert!(rtt < GENEROUS, "round trip {rtt:?}");
    }
    echo.await.unwrap();
    let s = relay.stats();
    assert_eq!((s.forward.bytes, s.backward.bytes), (3, 3));
    assert_eq!(s.connections, 1);
    // Three pings, each 20 ms in flight each way, one way at a time.
    assert!(
        s.in_flight >= Duration::from_millis(120),
        "in flight {:?}",
        s.in_flight
    );
}

#[tokio::test]
async fn one_megabyte_at_80_mbit_takes_100_ms() {
    let (relay, mut client, mut server) = pair(spec(0.0, Some(80.0))).await;
    let data = pattern(7, 1_000_000);
    let t = Instant::now();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client
    });
    let mut got = vec![0u8; data.len()];
    server.read_exact(&mut got).await.unwrap();
    let took = t.elapsed();
    assert!(got == data, "bytes changed on the way");
    // 8 Mbit at 80 Mbit/s; the serialiser never starts before `t`.
    assert!(took >= Duration::from_millis(99), "1 MB in {took:?}");
    assert!(took < GENEROUS, "1 MB in {took:?}");
    let _client = writer.await.unwrap();
    let s = relay.stats();
    assert_eq!(s.forward.bytes, 1_000_000);
    let ser = s.forward.serialisation.as_secs_f64();
    assert!((ser - 0.1).abs() < 1e-3, "serialisation {ser}");
}

#[tokio::test]
async fn bytes_arrive_intact_and_in_order_in_both_directions() {
    let (relay, client, server) = pair(spec(1.0, Some(1000.0))).await;
    let a = pattern(1, 3 << 20);
    let b = pattern(2, (2 << 20) + 12345);
    // Each side writes its stream while reading the other's, in odd-sized
    // writes, so both directions are busy at once.
    async fn side(s: TcpStream, out: Vec<u8>, expect: usize) -> Vec<u8> {
        let (mut rd, mut wr) = s.into_split();
        let w = tokio::spawn(async move {
            for piece in out.chunks(7919) {
                wr.write_all(piece).await.unwrap();
            }
            wr
        });
        let mut got = vec![0u8; expect];
        rd.read_exact(&mut got).await.unwrap();
        let _wr = w.await.unwrap();
        got
    }
    let (got_b, got_a) = tokio::time::timeout(GENEROUS * 3, async {
        tokio::join!(
            side(client, a.clone(), b.len()),
            side(server, b.clone(), a.len())
        )
    })
    .await
    .expect("both streams delivered");
    assert!(got_a == a, "party 0 → party 1 stream changed");
    assert!(got_b == b, "party 1 → party 0 stream changed");
    let s = relay.stats();
    assert_eq!(s.forward.bytes, a.len() as u64);
    assert_eq!(s.backward.bytes, b.len() as u64);
}

#[tokio::test]
async fn closing_one_side_closes_the_other() {
    // The dialer closes: the upstream sees EOF after the data before it.
    let (_relay, mut client, mut server) = pair(spec(5.0, None)).await;
    client.write_all(b"last words").await.unwrap();
    drop(client);
    let mut got = Vec::new();
    tokio::time::timeout(GENEROUS, server.read_to_end(&mut got))
        .await
        .expect("EOF reaches the upstream")
        .unwrap();
    assert_eq!(got, b"last words");

    // The upstream closes: the dialer sees EOF.
    let (_relay, mut client, mut server) = pair(spec(5.0, None)).await;
    server.write_all(b"bye").await.unwrap();
    drop(server);
    let mut got = Vec::new();
    tokio::time::timeout(GENEROUS, client.read_to_end(&mut got))
        .await
        .expect("EOF reaches the dialer")
        .unwrap();
    assert_eq!(got, b"bye");
}

#[tokio::test]
async fn data_keeps_flowing_while_earlier_bytes_are_delayed() {
    // Ten writes 5 ms apart through a 200 ms relay: a relay that slept per
    // chunk before reading the next would take ≥ 10 × 200 ms; a link takes
    // about 45 ms of sending plus one delay.
    let (_relay, mut client, mut server) = pair(spec(200.0, None)).await;
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..10u8 {
            client.write_all(&[i]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client
    });
    let mut got = [0u8; 10];
    server.read_exact(&mut got).await.unwrap();
    let took = t.elapsed();
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(took >= Duration::from_millis(245), "{took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "the relay stalled: {took:?}"
    );
    let _ = writer.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_dialer() {
    // A port nobody listens on (bound, then closed).
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let relay = Relay::start("127.0.0.1:0", &addr, LinkSpec::LAN)
        .await
        .unwrap();
    let mut client = TcpStream::connect(relay.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(GENEROUS, client.read_to_end(&mut buf))
        .await
        .expect("closed");
    assert!(r.is_err() || buf.is_empty());
}
