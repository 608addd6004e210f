//! The parties' web listeners (in-process cluster, loopback plain HTTP as
//! the local mode serves them): web tokens, CORS for the configured origin
//! only, gRPC-web translation, the client API's size limit, and a full
//! inference through both web listeners matching the native client's.

use std::sync::Arc;
use std::time::Duration;

use mpc_core::{FixedPoint, Prg, Seed};
use mpcvit_e2e::{cluster, max_diff, png, small_model, test_options};
use mpcvit_proto::v1::inference_client::InferenceClient;
use mpcvit_proto::v1::{InferRequest, ListModelsRequest};
use mpcvit_server::local::LocalWeb;
use mpcvit_server::web::WebTokens;
use mpcvit_server::web::tokens::issue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

const ORIGIN: &str = "http://page.test:8080";

async fn web_client(addr: &str) -> InferenceClient<Channel> {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    InferenceClient::new(ch).max_decoding_message_size(64 << 20)
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// One HTTP/1.1 exchange on a fresh connection; the raw response.
async fn http1(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

fn head(resp: &[u8]) -> String {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_listeners_need_a_token_allow_one_origin_and_serve_inferences() {
    let model = small_model();
    let issued = issue("test");
    let token = issued.token.as_str();
    let mut opts = test_options();
    opts.web = Some(LocalWeb {
        tokens: Arc::new(WebTokens::from_tokens(&[token])),
        origins: vec![ORIGIN.into()],
    });
    let (c, native, m) = cluster(&model, opts).await;
    let web = c.web_addrs.clone().expect("web listeners");

    // Tokens: none or a wrong one is UNAUTHENTICATED, the issued one works.
    for (p, addr) in web.iter().enumerate() {
        let mut client = web_client(addr).await;
        for bad in [None, Some("mpcvit_00"), Some(&token[..token.len() - 1])] {
            let e = client
                .list_models(with_token(ListModelsRequest {}, bad))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        }
        let r = client
            .list_models(with_token(ListModelsRequest {}, Some(token)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.party as usize, p);
        assert_eq!(r.models[0].name, m.info.name);
    }

    // A full inference through both web listeners, as a browser sends it.
    let bytes = png(16, 7);
    let input = model::preprocess(model.config(), &bytes).unwrap();
    let fp = FixedPoint::new(m.info.frac_bits);
    let [s0, s1] = model::split_input(&input, fp, &mut Prg::new(&Seed::random()));
    let sid = Seed::random().to_bytes()[..16].to_vec();
    let send = |addr: String, share: mpc_core::Share, sid: Vec<u8>, name: String| async move {
        let req = InferRequest {
            model: name,
            session_id: sid,
            input_share: share
                .as_slice()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        web_client(&addr)
            .await
            .infer(with_token(req, Some(token)))
            .await
    };
    let (a, b) = tokio::join!(
        send(web[0].clone(), s0, sid.clone(), m.info.name.clone()),
        send(web[1].clone(), s1, sid, m.info.name.clone())
    );
    let word = |b: &[u8]| -> Vec<u64> {
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (a, b) = (a.unwrap().into_inner(), b.unwrap().into_inner());
    let sum: Vec<u64> = word(&a.output_share)
        .iter()
        .zip(word(&b.output_share))
        .map(|(x, y)| x.wrapping_add(y))
        .collect();
    let logits: Vec<f32> = fp.decode_all(&sum).into_iter().map(|v| v as f32).collect();
    let via_native = native.infer_image(&m, &bytes).await.unwrap().logits;
    assert!(max_diff(&logits, &via_native) < 0.05);

    // The client API's size limit holds on the web listener too.
    let big = InferRequest {
        model: m.info.name.clone(),
        session_id: vec![1; 16],
        input_share: vec![0; 5 << 20],
    };
    let e = web_client(&web[0])
        .await
        .infer(with_token(big, Some(token)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    // gRPC-web over HTTP/1.1, with CORS for the configured origin only.
    let grpc_web = |origin: &str, auth: &str| {
        format!(
            "POST /mpcvit.v1.Inference/ListModels HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
             Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n{auth}\
             Content-Length: 5\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
        .into_iter()
        .chain([0u8; 5])
        .collect::<Vec<u8>>()
    };
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let ok = http1(&web[1], &grpc_web(ORIGIN, &bearer)).await;
    let h = head(&ok);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains("content-type: application/grpc-web+proto"),
        "{h}"
    );
    assert!(
        h.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{h}"
    );
    assert!(
        h.contains("access-control-expose-headers: grpc-status"),
        "{h}"
    );
    let trailer = String::from_utf8_lossy(&ok);
    assert!(trailer.contains("grpc-status:0"), "{trailer}");
    let other = head(&http1(&web[1], &grpc_web("http://evil.test", &bearer)).await);
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    let no_token = http1(&web[1], &grpc_web(ORIGIN, "")).await;
    let text = String::from_utf8_lossy(&no_token).to_ascii_lowercase();
    assert!(
        text.contains("grpc-status: 16") || text.contains("grpc-status:16"),
        "{text}"
    );
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /mpcvit.v1.Inference/Infer HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization,content-type,x-grpc-web\r\n\
             Connection: close\r\n\r\n"
        )
    };
    let allowed = head(&http1(&web[0], preflight(ORIGIN).as_bytes()).await);
    assert!(
        allowed.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{allowed}"
    );
    assert!(allowed.contains("authorization"), "{allowed}");
    let refused = head(&http1(&web[0], preflight("http://evil.test").as_bytes()).await);
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );

    c.shutdown().await;
}
