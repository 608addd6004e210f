//! A party's web listener: the client API for browsers.
//!
//! Browsers speak gRPC-web (HTTP/1.1 or HTTP/2, `application/grpc-web+proto`)
//! and present no client certificate, so a party that is given a web
//! listener ([`WebConfig`]) serves its one `Inference` implementation
//! there a second time, behind three layers:
//!
//! - **CORS** (tower-http): the preflight and the response headers allow the
//!   configured origins only (`--web-origin`); a page from any other origin
//!   cannot read an answer.
//! - **gRPC-web** (tonic-web): translated to gRPC for the service.
//! - **Web tokens** ([`tokens`]): every call needs `authorization: Bearer
//!   <token>` with a token whose hash is in the party's token file; a missing
//!   or wrong one is UNAUTHENTICATED before the service runs. An admitted
//!   request carries [`WebClient`], which the service's client check
//!   ([`crate::tls::require_client`]) accepts in place of a client certificate.
//!
//! Everything else is the native client API's: the same accept loop and
//! [`ConnLimits`] (TLS handshake timeout, idle timeout, connection bound),
//! the same largest request, the same compute slots, pools and timeouts
//! (the service and its state are shared). The listener serves TLS with the
//! certificate it is given ([`WebTls::Certificate`]); plain HTTP
//! ([`WebTls::LoopbackPlaintext`]) is refused on any address but a loopback
//! one, where browsers count `http://127.0.0.1` as a secure origin (the
//! client's `mpcvit-client web` local mode). Web access is off unless a web
//! listener is configured; native clients keep mutual TLS on the client API.

pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Method};
use mpcvit_proto::v1::inference_server::InferenceServer;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tonic::service::interceptor::InterceptedService;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::info;

use crate::defaults::MAX_INTERNAL_MESSAGE;
use crate::error::ServerError;
use crate::limits::ConnLimits;
use crate::party::PartyService;
use crate::tls::KeyedCert;
pub use tokens::WebTokens;

/// Marks a request that the web listener admitted with a valid web token.
#[derive(Clone, Copy, Debug)]
pub struct WebClient;

/// How the web listener speaks to browsers.
#[derive(Clone, Debug)]
pub enum WebTls {
    /// HTTPS with this certificate (a browser must trust its issuer and
    /// find the address it dials among its names).
    Certificate(KeyedCert),
    /// Plain HTTP, on a loopback address only.
    LoopbackPlaintext,
}

/// A party's web listener settings.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The accepted tokens (hashes).
    pub tokens: Arc<WebTokens>,
    /// Origins whose pages may call the listener (`https://host[:port]`).
    pub origins: Vec<String>,
    /// TLS or loopback plain HTTP.
    pub tls: WebTls,
}

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer: `origins` only, POST, the headers a gRPC-web client sends
/// and the status headers it must read.
fn cors(origins: &[String]) -> Result<CorsLayer, ServerError> {
    if origins.is_empty() {
        return Err(ServerError::Config(
            "the web listener needs at least one allowed origin (--web-origin)".into(),
        ));
    }
    let values = origins
        .iter()
        .map(|o| {
            let o = o.trim_end_matches('/');
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.contains(['*', ' ']) {
                return Err(ServerError::Config(format!(
                    "--web-origin {o:?}: give an origin as scheme://host[:port]"
                )));
            }
            HeaderValue::from_str(o)
                .map_err(|e| ServerError::Config(format!("--web-origin {o:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let h = HeaderName::from_static;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(values))
        .allow_methods([Method::POST])
        .allow_headers([
            CONTENT_TYPE,
            AUTHORIZATION,
            h("x-grpc-web"),
            h("x-user-agent"),
            h("grpc-timeout"),
        ])
        .expose_headers([
            h("grpc-status"),
            h("grpc-message"),
            h("grpc-status-details-bin"),
        ])
        .max_age(PREFLIGHT_MAX_AGE))
}

/// A web listener whose settings were checked: its origins, its
/// certificate and key, or its loopback address for plain HTTP. Made
/// before the party serves anything, so a bad setting stops it at start.
pub struct WebListener {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    cors: CorsLayer,
    web: WebConfig,
}

impl std::fmt::Debug for WebListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebListener({})", self.addr)
    }
}

impl WebListener {
    /// Check `web` for `listener`.
    pub fn new(listener: TcpListener, web: &WebConfig) -> Result<Self, ServerError> {
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Config(format!("web listener: {e}")))?;
        let tls = match &web.tls {
            WebTls::Certificate(cert) => Some(cert.web_server()?),
            WebTls::LoopbackPlaintext if addr.ip().is_loopback() => None,
            WebTls::LoopbackPlaintext => {
                return Err(ServerError::Config(format!(
                    "the web listener serves plain HTTP on a loopback address only, not {addr}"
                )));
            }
        };
        Ok(WebListener {
            listener,
            addr,
            tls,
            cors: cors(&web.origins)?,
            web: web.clone(),
        })
    }

    /// Serve `service`'s client API to browsers until `shutdown`.
    pub async fn serve(
        self,
        service: PartyService,
        max_message_bytes: usize,
        limits: ConnLimits,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let tokens = self.web.tokens.clone();
        let admit = move |mut req: tonic::Request<()>| {
            let remote = req.remote_addr();
            tokens
                .check(req.metadata())
                .map_err(|e| e.refuse("web", remote))?;
            req.extensions_mut().insert(WebClient);
            Ok(req)
        };
        let inference = InterceptedService::new(
            InferenceServer::new(service)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(MAX_INTERNAL_MESSAGE),
            admit,
        );
        let router = limits
            .server_builder()
            .accept_http1(true)
            .layer(self.cors)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(tower::util::MapResponseLayer::new(
                crate::error::fix_transport_status,
            ))
            .add_service(inference);
        info!(addr = %self.addr, origins = ?self.web.origins, tokens = self.web.tokens.len(),
            tls = self.tls.is_some(), "web listener");
        match self.tls {
            Some(tls) => {
                let incoming = crate::listen::tls(self.listener, tls, limits, "web");
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
            None => {
                let incoming = crate::listen::plain(self.listener, limits, "web");
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
        }
        Ok(())
    }
}
