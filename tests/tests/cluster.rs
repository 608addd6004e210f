//! The dealer and both parties on loopback (one process, real gRPC with
//! mutual TLS): correctness against the plaintext model, 16 concurrent
//! clients, bad input, and refused certificates.

use std::time::{Duration, Instant};

use mpc_core::{Seed, Share};
use mpcvit_client::{Client, ClientAuth, ClientError};
use mpcvit_e2e::{argmax, cluster, max_diff, png, small_model, test_options};
use mpcvit_proto::v1::dealer_client::DealerClient;
use mpcvit_proto::v1::inference_client::InferenceClient;
use mpcvit_proto::v1::peer_link_client::PeerLinkClient;
use mpcvit_proto::v1::{InferRequest, InferResponse, PeerFrame, ProvisionRequest};
use mpcvit_server::tls::{CertBundle, Role, TlsMaterial};
use tonic::Code;
use tonic::transport::Endpoint;

/// The secure logits match the plaintext model's (top-1 and within 0.05).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_inference_matches_plaintext() {
    let model = small_model();
    let (c, client, m) = cluster(&model, test_options()).await;
    for seed in 0..3 {
        let bytes = png(16 + 8 * seed as u32, seed);
        let r = client.infer_image(&m, &bytes).await.unwrap();
        let input = model::preprocess(model.config(), &bytes).unwrap();
        let plain = model.forward(&input).unwrap();
        let d = max_diff(&plain, &r.logits);
        assert!(d < 0.05, "logits differ by {d}");
        assert_eq!(argmax(&plain), argmax(&r.logits));
        for s in &r.stats {
            assert!(s.rounds > 10 && s.bytes_sent > 0 && s.online_micros > 0);
        }
        assert_eq!(r.stats[0].rounds, r.stats[1].rounds);
        assert_eq!(r.stats[0].bytes_sent, r.stats[1].bytes_received);
    }
    c.shutdown().await;
}

/// 16 clients at once, each with its own image, all get their own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_clients() {
    let model = small_model();
    let mut opts = test_options();
    opts.pool_target = 4;
    let (c, client, m) = cluster(&model, opts).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16u64 {
        // Each task its own connection, as separate clients would have.
        let auth = ClientAuth::Cert(c.client_tls.clone());
        let addrs = c.party_addrs.clone();
        let m = m.clone();
        tasks.spawn(async move {
            let client = Client::connect([&addrs[0], &addrs[1]], &auth)
                .await
                .unwrap();
            let bytes = png(16, 100 + i);
            (i, bytes.clone(), client.infer_image(&m, &bytes).await)
        });
    }
    let mut n = 0;
    while let Some(j) = tasks.join_next().await {
        let (i, bytes, r) = j.unwrap();
        let r = r.unwrap_or_else(|e| panic!("client {i}: {e}"));
        let plain = model
            .forward(&model::preprocess(model.config(), &bytes).unwrap())
            .unwrap();
        let d = max_diff(&plain, &r.logits);
        assert!(d < 0.05, "client {i}: logits differ by {d}");
        assert_eq!(argmax(&plain), argmax(&r.logits), "client {i}");
        n += 1;
    }
    assert_eq!(n, 16);
    drop(client);
    c.shutdown().await;
}

fn code(e: &ClientError) -> Option<Code> {
    e.code()
}

/// Malformed requests get clear statuses; the parties keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_statuses() {
    let model = small_model();
    let (c, client, m) = cluster(&model, test_options()).await;
    let n = m.info.input_len as usize;
    let sid = || Seed::random().to_bytes()[..16].to_vec();
    let t = Instant::now();
    // A share of the wrong length.
    let e = client
        .infer_shares(&m, [Share::zeros(n - 1), Share::zeros(n - 1)], sid())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("ring elements"), "{e}");
    // A session id of the wrong length.
    let e = client
        .infer_shares(&m, [Share::zeros(n), Share::zeros(n)], vec![1, 2, 3])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(Code::InvalidArgument), "{e}");
    // An unknown model.
    let mut other = m.clone();
    other.info.name = "no-such-model".into();
    let e = client
        .infer_shares(&other, [Share::zeros(n), Share::zeros(n)], sid())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(Code::NotFound), "{e}");
    // An oversized message (the client API takes 4 MiB).
    let big = Share::zeros(600_000);
    let e = client
        .infer_shares(&m, [big.clone(), big], sid())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(Code::ResourceExhausted), "{e}");
    // An undecodable image: refused before anything is sent.
    let e = client.infer_image(&m, b"not an image").await.unwrap_err();
    assert!(matches!(e, ClientError::Image(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "errors must be quick");
    // The parties still serve, and say so on the health service.
    let r = client.infer_image(&m, &png(16, 5)).await.unwrap();
    assert_eq!(r.logits.len(), 10);
    for addr in &c.party_addrs {
        let ch = connect_raw(
            addr,
            &c.client_tls,
            Role::Party((addr == &c.party_addrs[1]) as u8),
        )
        .await
        .unwrap();
        let h = tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "mpcvit.v1.Inference".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            h.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    c.shutdown().await;
}

/// A session id already in progress at a party is ALREADY_EXISTS there, as
/// the README's table says: at party 0 too, not UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_session_id_is_already_exists_at_both_parties() {
    let model = small_model();
    let (c, _client, m) = cluster(&model, test_options()).await;
    let n = m.info.input_len as usize;
    for p in 0..2 {
        let ch = connect_raw(&c.party_addrs[p], &c.client_tls, Role::Party(p as u8))
            .await
            .unwrap();
        let raw = InferenceClient::new(ch);
        let req = || InferRequest {
            model: m.info.name.clone(),
            // Another id per party: party 0's stays announced at party 1.
            session_id: vec![0x50 + p as u8; 16],
            input_share: vec![0; 8 * n],
        };
        let (mut a, mut b) = (raw.clone(), raw.clone());
        // The other party never hears of this session, so the first of the
        // two requests to answer is the duplicate.
        let first = tokio::select! {
            r = a.infer(req()) => r,
            r = b.infer(req()) => r,
        };
        let e = first.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "party {p}: {e:?}");
    }
    c.shutdown().await;
}

/// A client that reaches party 0 only. Party 0 starts its forward beside
/// the session's handshake with party 1, so the handshake's failure is
/// what the client hears (UNAVAILABLE, naming party 1), within the join
/// timeout and a slack; and the session gives back its compute slot and
/// its batch (party 1 is told to drop it), so with a single slot the
/// requests after it are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_party_1_never_hears_of_fails_clearly_and_frees_its_slot() {
    let model = small_model();
    let mut opts = test_options();
    opts.max_sessions = 1;
    let join = opts.join_timeout;
    let (c, client, m) = cluster(&model, opts).await;
    let n = m.info.input_len as usize;
    let ch = connect_raw(&c.party_addrs[0], &c.client_tls, Role::Party(0))
        .await
        .unwrap();
    let t = Instant::now();
    let e = InferenceClient::new(ch)
        .infer(InferRequest {
            model: m.info.name.clone(),
            session_id: vec![0x61; 16],
            input_share: vec![0; 8 * n],
        })
        .await
        .unwrap_err();
    let took = t.elapsed();
    println!(
        "party 0 alone: {:?} after {took:?}: {}",
        e.code(),
        e.message()
    );
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("party 1"), "{e:?}");
    assert!(took < join + Duration::from_secs(5), "took {took:?}");
    for i in 0..3 {
        let bytes = png(16, 40 + i);
        let r = tokio::time::timeout(Duration::from_secs(30), client.infer_image(&m, &bytes))
            .await
            .expect("served after the failed session")
            .unwrap();
        let plain = model
            .forward(&model::preprocess(model.config(), &bytes).unwrap())
            .unwrap();
        assert_eq!(argmax(&plain), argmax(&r.logits), "request {i}");
    }
    c.shutdown().await;
}

#[derive(Clone, PartialEq, prost::Message)]
struct NotUtf8Name {
    /// `InferRequest.model` is a string: these bytes are not UTF-8.
    #[prost(bytes = "vec", tag = "1")]
    model: Vec<u8>,
}

/// Echoed request fields are bounded: a 1 MiB model name gets NOT_FOUND
/// with a short message (not a 1 MiB header, which a standard client
/// refuses as RESOURCE_EXHAUSTED); bytes that are no protobuf message are
/// INVALID_ARGUMENT, not INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_names_and_corrupt_messages_get_the_tables_codes() {
    let model = small_model();
    let (c, client, m) = cluster(&model, test_options()).await;
    let ch = connect_raw(&c.party_addrs[0], &c.client_tls, Role::Party(0))
        .await
        .unwrap();
    let e = InferenceClient::new(ch.clone())
        .infer(InferRequest {
            model: "m".repeat(1 << 20),
            session_id: vec![1; 16],
            input_share: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().len() < 1024, "{} bytes", e.message().len());
    assert!(e.message().contains("1048576 bytes"), "{}", e.message());

    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let e = grpc
        .unary(
            tonic::Request::new(NotUtf8Name {
                model: vec![0xff, 0xfe, 0xfd],
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/mpcvit.v1.Inference/Infer"),
            tonic_prost::ProstCodec::<NotUtf8Name, InferResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Still serving.
    let r = client.infer_image(&m, &png(16, 6)).await.unwrap();
    assert_eq!(r.logits.len(), 10);
    c.shutdown().await;
}

async fn connect_raw(
    addr: &str,
    tls: &TlsMaterial,
    server: Role,
) -> Result<tonic::transport::Channel, String> {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls.client(server))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// Without a certificate from the cluster's CA nothing connects; with one of
/// the wrong role, every service refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_checked_on_every_link() {
    let model = small_model();
    let (c, _client, m) = cluster(&model, test_options()).await;
    let n = m.info.input_len as usize;
    // A client certificate from another CA: the handshake fails.
    let foreign = CertBundle::generate().unwrap();
    let mut forged = foreign.material(Role::Client);
    forged.ca_pem = c.certs.ca_pem.clone(); // trusts the servers, but is not trusted
    let auth = ClientAuth::Cert(forged);
    let r = async {
        let cl = Client::connect([&c.party_addrs[0], &c.party_addrs[1]], &auth).await?;
        cl.models().await
    }
    .await;
    assert!(r.is_err(), "a foreign client certificate must be refused");
    // No client certificate at all (token mode, but no token configured).
    let auth = ClientAuth::Token {
        ca_pem: c.certs.ca_pem.clone(),
        token: "guess".into(),
    };
    let r = async {
        let cl = Client::connect([&c.party_addrs[0], &c.party_addrs[1]], &auth).await?;
        cl.infer_shares(&m, [Share::zeros(n), Share::zeros(n)], vec![0; 16])
            .await
    }
    .await;
    assert!(r.is_err(), "a client without a certificate must be refused");
    // A party's certificate on the client API: valid chain, wrong role.
    let auth = ClientAuth::Cert(c.certs.material(Role::Party(1)));
    let cl = Client::connect([&c.party_addrs[0], &c.party_addrs[1]], &auth)
        .await
        .unwrap();
    let e = cl.models().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated), "{e}");
    // A client certificate on party 1's peer link.
    let [peer_addr, dealer_addr] = &c.internal_addrs;
    let ch = connect_raw(peer_addr, &c.client_tls, Role::Party(1))
        .await
        .unwrap();
    let frames = tokio_stream::iter(vec![PeerFrame::default()]);
    let e = PeerLinkClient::new(ch).session(frames).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    // Party 1's own certificate on its peer link (only party 0 may connect).
    let ch = connect_raw(peer_addr, &c.certs.material(Role::Party(1)), Role::Party(1))
        .await
        .unwrap();
    let frames = tokio_stream::iter(vec![PeerFrame::default()]);
    let e = PeerLinkClient::new(ch).pair(frames).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    // A client certificate on the dealer.
    let ch = connect_raw(dealer_addr, &c.client_tls, Role::Dealer)
        .await
        .unwrap();
    let reqs = tokio_stream::iter(vec![ProvisionRequest::default()]);
    let e = DealerClient::new(ch).provision(reqs).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    // A foreign party certificate on the peer link: no handshake.
    let mut fp = foreign.material(Role::Party(0));
    fp.ca_pem = c.certs.ca_pem.clone();
    let r = async {
        let ch = connect_raw(peer_addr, &fp, Role::Party(1)).await?;
        let frames = tokio_stream::iter(vec![PeerFrame::default()]);
        PeerLinkClient::new(ch)
            .session(frames)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    assert!(r.is_err(), "a foreign party certificate must be refused");
    c.shutdown().await;
}

/// With a configured token, a client without a certificate gets in with the
/// token and only with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_stands_in_for_a_client_certificate() {
    let model = small_model();
    let mut opts = test_options();
    opts.client_token = Some("s3cret-token".into());
    let (c, _client, m) = cluster(&model, opts).await;
    let with = |token: &str| ClientAuth::Token {
        ca_pem: c.certs.ca_pem.clone(),
        token: token.into(),
    };
    let cl = Client::connect(
        [&c.party_addrs[0], &c.party_addrs[1]],
        &with("s3cret-token"),
    )
    .await
    .unwrap();
    let r = cl.infer_image(&m, &png(16, 77)).await.unwrap();
    assert_eq!(r.logits.len(), 10);
    let cl = Client::connect([&c.party_addrs[0], &c.party_addrs[1]], &with("wrong"))
        .await
        .unwrap();
    let e = cl.models().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated), "{e}");
    c.shutdown().await;
}
