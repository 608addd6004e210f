//! The plaintext health port (`--health-listen`) and the `health` probe.
//!
//! The TLS client API already serves `grpc.health.v1.Health`, but an
//! orchestrator's probes (Kubernetes' `grpc:` probes, Docker's
//! `HEALTHCHECK`) hold no client certificate. So a party or the dealer can
//! also serve the same health service without TLS on a separate port. It
//! answers only status words; no share, seed or weight ever passes it.
//!
//! | service | party | dealer |
//! |---|---|---|
//! | `""` | SERVING while the process runs (liveness) | same |
//! | `mpcvit.v1.Inference` | SERVING when every model is paired with the other party (readiness) | — |
//! | `mpcvit.v1.Dealer` | — | SERVING while it runs |

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tracing::info;

use crate::ServerError;
use crate::limits::ConnLimits;

/// Serve `health` without TLS on `listener` until `stop` resolves.
pub async fn serve_plain<H: Health>(
    listener: tokio::net::TcpListener,
    health: HealthServer<H>,
    limits: ConnLimits,
    stop: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    info!(addr = ?listener.local_addr().ok(), "health port listening (plaintext, status only)");
    limits
        .server_builder()
        .add_service(health)
        .serve_with_incoming_shutdown(crate::listen::plain(listener, limits, "health"), stop)
        .await?;
    Ok(())
}

/// Ask the plaintext health port at `addr` whether `service` is SERVING.
///
/// `Ok(())` when it is; otherwise an error that says what was answered (or
/// that nothing was), for `mpcvit-server health` to print.
pub async fn probe(addr: &str, service: &str, timeout: Duration) -> Result<(), ServerError> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let unreachable = |reason: String| ServerError::HealthUnreachable {
        addr: addr.to_string(),
        reason,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| ServerError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let reply = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| unreachable(format!("{}: {}", s.code(), s.message())))?
        .into_inner();
    let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        let name = if service.is_empty() {
            "the server"
        } else {
            service
        };
        Err(ServerError::NotServing {
            service: name.to_string(),
            addr: addr.to_string(),
            status: status.as_str_name(),
        })
    }
}
