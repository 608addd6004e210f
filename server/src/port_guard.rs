//! Calls that reached the wrong port: a client on party 1's peer port, a
//! party on a client API, either on the dealer's. Each listener knows the
//! services it serves; a call to one of mpcvit's other services is answered
//! PERMISSION_DENIED, naming this port and the port that serves it, and
//! logged with the caller's address (throttled, as refused connections
//! are: `listen::Throttle`). Paths of no mpcvit service pass on to
//! tonic (UNIMPLEMENTED).

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::warn;

use crate::listen::Throttle;

/// mpcvit's services (and gRPC health), with the port that serves each.
const SERVICES: [(&str, &str); 4] = [
    (
        "/mpcvit.v1.Inference/",
        "a party's client API (its --listen address)",
    ),
    (
        "/mpcvit.v1.PeerLink/",
        "party 1's peer port (its --peer-listen address), for party 0 only",
    ),
    (
        "/mpcvit.v1.Dealer/",
        "the dealer's port (the parties' --dealer address)",
    ),
    (
        "/grpc.health.v1.Health/",
        "a client API, the dealer's port, or a --health-listen port",
    ),
];

/// A listener's guard: which port this is and the service paths it serves.
#[derive(Clone, Debug)]
pub struct PortGuardLayer {
    port: &'static str,
    serves: &'static [&'static str],
    log: Arc<Throttle>,
}

impl PortGuardLayer {
    /// The guard of `port` (for messages: "party 1's peer port"), serving
    /// the services whose paths start with one of `serves`.
    pub fn new(port: &'static str, serves: &'static [&'static str]) -> Self {
        PortGuardLayer {
            port,
            serves,
            log: Arc::default(),
        }
    }

    /// The refusal of a call to `path` on this port, if it is one of
    /// mpcvit's services served elsewhere.
    pub fn refusal(&self, path: &str) -> Option<Status> {
        if self.serves.iter().any(|s| path.starts_with(s)) {
            return None;
        }
        let (service, served_on) = SERVICES.iter().find(|(s, _)| path.starts_with(s))?;
        let service = service.trim_matches('/');
        Some(Status::permission_denied(format!(
            "wrong port: this is {}; {service} is served on {served_on}",
            self.port
        )))
    }
}

impl<S> Layer<S> for PortGuardLayer {
    type Service = PortGuard<S>;

    fn layer(&self, inner: S) -> PortGuard<S> {
        PortGuard {
            inner,
            guard: self.clone(),
        }
    }
}

/// The guard around a listener's services ([`PortGuardLayer`]).
#[derive(Clone, Debug)]
pub struct PortGuard<S> {
    inner: S,
    guard: PortGuardLayer,
}

impl<S, B, R> Service<http::Request<B>> for PortGuard<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let Some(status) = self.guard.refusal(path) else {
            return Box::pin(self.inner.call(req));
        };
        if let Some(suppressed) = self.guard.log.allow() {
            let remote = req
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr());
            warn!(
                listener = self.guard.port,
                rpc = %crate::error::clip(path),
                remote = ?remote,
                code = ?status.code(),
                error = %status.message(),
                suppressed,
                "request refused"
            );
        }
        let resp = status.into_http::<R>();
        Box::pin(async move { Ok(resp) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn other_mpcvit_services_are_refused_naming_both_ports() {
        let peer = PortGuardLayer::new("party 1's peer port", &["/mpcvit.v1.PeerLink/"]);
        assert!(peer.refusal("/mpcvit.v1.PeerLink/Pair").is_none());
        let s = peer.refusal("/mpcvit.v1.Inference/ListModels").unwrap();
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(
            s.message().contains("party 1's peer port") && s.message().contains("client API"),
            "{}",
            s.message()
        );
        assert!(peer.refusal("/no.such.Service/Call").is_none());
        let api = PortGuardLayer::new(
            "party 0's client API",
            &["/mpcvit.v1.Inference/", "/grpc.health.v1.Health/"],
        );
        let s = api.refusal("/mpcvit.v1.PeerLink/Pair").unwrap();
        assert!(s.message().contains("peer port"), "{}", s.message());
        assert!(api.refusal("/grpc.health.v1.Health/Check").is_none());
    }
}
