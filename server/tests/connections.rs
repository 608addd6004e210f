//! Connection limits of a party process (`--handshake-timeout`,
//! `--max-connections`): idle connections and stalled TLS handshakes are
//! closed, a listener holds no more than its limit, an honest client still
//! gets through, and refused handshakes and requests leave a log line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::deploy::Deployment;
use mpcvit_client::{Client, ClientAuth};
use mpcvit_proto::v1::ListModelsRequest;
use mpcvit_proto::v1::inference_client::InferenceClient;
use mpcvit_server::tls::{CertBundle, Role, TlsMaterial};
use tonic::Code;

/// Whether the server closed `s` within `within` (a read returns end of
/// file or an error rather than timing out).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_connections_are_bounded_and_closed() {
    let d = Deployment::new("conns");
    let _p0 = d.party(0, &["--handshake-timeout", "1", "--max-connections", "8"]);
    d.wait_health(1, "", true).await;
    let api = d.addr(1);

    // Idle connections (no ClientHello) and a stalled ClientHello fill the
    // listener's 8 slots; a ninth connection is closed at once.
    let mut held: Vec<TcpStream> = (0..7).map(|_| TcpStream::connect(&api).unwrap()).collect();
    let mut stalled = TcpStream::connect(&api).unwrap();
    // The first bytes of a TLS record header: a handshake that never ends.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    held.push(stalled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = TcpStream::connect(&api).unwrap();
    assert!(
        closed_within(&mut ninth, Duration::from_millis(900)),
        "a connection over the limit must be closed at once"
    );
    // The held ones are closed by the handshake timeout (1 s).
    let t = Instant::now();
    for s in &mut held {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "an idle connection was held for {:?}",
            t.elapsed()
        );
    }
    // The health port (plaintext) closes idle connections too.
    let mut idle = TcpStream::connect(d.addr(common::deploy::HEALTH + 1)).unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(10)));

    // An honest client gets through.
    let list_models = |tls: TlsMaterial| {
        let api = api.clone();
        async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("https://{api}"))
                .unwrap()
                .tls_config(tls.client(Role::Party(0)))
                .unwrap()
                .connect()
                .await
                .unwrap();
            InferenceClient::new(ch)
                .list_models(ListModelsRequest {})
                .await
        }
    };
    let tls = TlsMaterial::load(&d.dir.join("certs/client"), Role::Client).unwrap();
    assert_eq!(list_models(tls).await.unwrap().into_inner().party, 0);

    // A client certificate from another CA: the handshake is refused, and
    // logged. A party's certificate on the client API: the request is
    // refused, and logged.
    let foreign = CertBundle::generate().unwrap();
    let mut forged = foreign.material(Role::Client);
    forged.ca_pem = std::fs::read_to_string(d.dir.join("certs/client/ca.pem")).unwrap();
    let r = async {
        let c = Client::connect([&api, &api], &ClientAuth::Cert(forged)).await?;
        c.models().await
    }
    .await;
    assert!(r.is_err());
    let party_cert = TlsMaterial::load(&d.dir.join("certs/party0"), Role::Party(0)).unwrap();
    let e = list_models(party_cert).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = d.logs("party0");
        let want = [
            "no TLS handshake within",
            "connection limit reached",
            "TLS handshake refused",
            "request refused",
        ];
        if want.iter().all(|w| log.contains(w)) {
            break;
        }
        assert!(Instant::now() < deadline, "missing log lines: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
