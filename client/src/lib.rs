//! # mpcvit-client
//!
//! Image → normalised input → two additive shares → one share to each party
//! (same random session id) → two output shares → logits → labels.
//!
//! Neither party sees the image or the logits: each receives a uniformly
//! random share. The public manifest (architecture, normalisation, labels)
//! comes from the parties' `ListModels`; both must agree on it.

pub mod accuracy;
pub mod fashion_mnist;
pub mod page;

use std::time::{Duration, Instant};

use model::ModelConfig;
use mpc_core::{FixedPoint, Prg, Seed, Share};
use mpcvit_proto::v1::inference_client::InferenceClient;
use mpcvit_proto::v1::{InferRequest, ListModelsRequest, ModelInfo, SessionStats};
use mpcvit_server::tls::{Role, TlsMaterial};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// The model local mode serves when given none: `fashion-mnist-mu0.5`,
/// trained by this project's search on Fashion-MNIST (half the heads
/// ReLU-softmax, half ScaleAttn; `models/README.md`), embedded in the binary.
pub const BUNDLED_MODEL: &str = "fashion-mnist-mu0.5";

const BUNDLED_MANIFEST: &str = include_str!("../../models/fashion-mnist-mu0.5/manifest.json");
const BUNDLED_WEIGHTS: &[u8] = include_bytes!("../../models/fashion-mnist-mu0.5/model.safetensors");

/// The bundled model ([`BUNDLED_MODEL`]), checked like any loaded model.
pub fn bundled_model() -> Result<model::Model, model::ModelError> {
    let config = ModelConfig::from_manifest_json(BUNDLED_MANIFEST)?;
    model::Model::from_safetensors(config, BUNDLED_WEIGHTS)
}

/// The ring elements this client shares for an image: the model's
/// preprocessing ([`model::preprocess()`]), then each value encoded in fixed
/// point (`round(x · 2^f)`, ties away from zero, as a two's-complement
/// `u64`).
pub fn fixed_point_input(
    config: &ModelConfig,
    bytes: &[u8],
    fp: FixedPoint,
) -> Result<Vec<u64>, ClientError> {
    let input = model::preprocess(config, bytes)?;
    Ok(input.iter().map(|x| fp.encode(f64::from(*x))).collect())
}

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A party answered with an error status.
    #[error("party {party}: {code:?}: {message}")]
    Party {
        /// 0 or 1.
        party: usize,
        /// The gRPC code.
        code: Code,
        /// The party's message.
        message: String,
    },
    /// The image could not be read or preprocessed.
    #[error("{0}")]
    Image(#[from] model::ModelError),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Connecting failed (the causes and, for a refused certificate, what
    /// it means, follow the transport's message).
    #[error("cannot connect to party {party}: {}", connect_problem(*.party, .source))]
    Connect {
        /// 0 or 1.
        party: usize,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The parties disagree or answered something unusable.
    #[error("{0}")]
    Protocol(String),
    /// Invalid settings.
    #[error("{0}")]
    Config(String),
    /// The parties did not answer within the client's deadline.
    #[error("{what}: no answer within {after:?} (the client's --timeout)")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
    },
}

impl ClientError {
    /// A party's status. A broken connection means that party is
    /// unavailable: tonic reports `UNKNOWN: transport error`, or `CANCELLED`
    /// when the connection closes under a request in flight (a party never
    /// answers `CANCELLED`; only this client's own [`NOT_WAITED`] keeps it).
    fn party(party: usize, s: Status) -> Self {
        let code = match s.code() {
            Code::Unknown if s.message().contains("transport error") => Code::Unavailable,
            Code::Cancelled if s.message() != NOT_WAITED => Code::Unavailable,
            c => c,
        };
        ClientError::Party {
            party,
            code,
            message: s.message().to_string(),
        }
    }

    /// The gRPC code when a party answered with an error; UNAUTHENTICATED
    /// when this client refused a party's certificate.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Party { code, .. } => Some(*code),
            ClientError::Timeout { .. } => Some(Code::DeadlineExceeded),
            ClientError::Connect { source, .. } if certificate_refused(source).is_some() => {
                Some(Code::Unauthenticated)
            }
            _ => None,
        }
    }
}

/// The messages of `e` and of its causes, joined by `: ` (tonic's transport
/// error alone says only "transport error").
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let m = c.to_string();
        if !out.contains(&m) {
            out += ": ";
            out += &m;
        }
        next = c.source();
    }
    out
}

/// What a refused server certificate means, if that is why connecting failed.
fn certificate_refused(e: &tonic::transport::Error) -> Option<&'static str> {
    let all = causes(e);
    if all.contains("UnknownIssuer") || all.contains("BadSignature") {
        Some(
            "its certificate is not signed by the CA in this client's ca.pem: the client's certificates are of another deployment?",
        )
    } else if all.contains("NotValidForName") {
        Some("its certificate is not that party's: is the address another party's or the dealer's?")
    } else if all.contains("invalid peer certificate") {
        Some("its certificate was refused")
    } else {
        None
    }
}

fn connect_problem(party: usize, e: &tonic::transport::Error) -> String {
    match certificate_refused(e) {
        Some(meaning) => format!("{} (party {party}: {meaning})", causes(e)),
        None => causes(e),
    }
}

/// The message of the `CANCELLED` status this client gives a party it
/// stopped waiting for after the other party failed.
const NOT_WAITED: &str = "not waited for after the other party failed";

/// How long [`Client::connect`] waits for each party (TCP, TLS and HTTP/2
/// handshakes): a server that accepts but never answers must not hang the
/// client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `fut`, or [`ClientError::Timeout`] after `after` (no deadline if `None`).
async fn within<T>(
    after: Option<Duration>,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match after {
        None => fut.await,
        Some(after) => tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                what: what(),
                after,
            })
        }),
    }
}

/// How the client authenticates to the parties.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// A client certificate (and the CA that signed the parties' certificates).
    Cert(TlsMaterial),
    /// No certificate: the CA to verify the parties, and a bearer token.
    Token {
        /// CA certificate, PEM.
        ca_pem: String,
        /// The token.
        token: String,
    },
}

/// A model as both parties describe it.
#[derive(Clone, Debug)]
pub struct RemoteModel {
    /// What party 0 said (party 1 said the same manifest); `ready` and
    /// `pool_available` cover both parties.
    pub info: ModelInfo,
    /// The parsed public manifest.
    pub config: ModelConfig,
}

/// One inference's result and costs.
#[derive(Clone, Debug)]
pub struct Inference {
    /// Reconstructed logits.
    pub logits: Vec<f32>,
    /// Wall time from sharing to reconstruction.
    pub elapsed: Duration,
    /// Each party's online costs.
    pub stats: [SessionStats; 2],
    /// Bytes the client sent (both input shares).
    pub client_bytes_sent: u64,
}

impl Inference {
    /// The `k` best classes: (index, label, softmax probability).
    pub fn top(&self, config: &ModelConfig, k: usize) -> Vec<(usize, String, f32)> {
        let max = self
            .logits
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = self.logits.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let mut idx: Vec<usize> = (0..self.logits.len()).collect();
        idx.sort_by(|a, b| self.logits[*b].total_cmp(&self.logits[*a]));
        idx.into_iter()
            .take(k)
            .map(|i| {
                let label = config
                    .labels
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("class {i}"));
                (i, label, exps[i] / sum)
            })
            .collect()
    }
}

/// A connection to both parties.
#[derive(Clone, Debug)]
pub struct Client {
    parties: [InferenceClient<Channel>; 2],
    token: Option<String>,
    /// Deadline of each call to the parties ([`Client::with_timeout`]).
    timeout: Option<Duration>,
}

fn add_token<T>(req: &mut tonic::Request<T>, token: &Option<String>) {
    if let Some(t) = token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        req.metadata_mut().insert("authorization", v);
    }
}

impl Client {
    /// Connect to party 0 at `addrs[0]` and party 1 at `addrs[1]`, waiting
    /// at most [`CONNECT_TIMEOUT`] for each.
    pub async fn connect(addrs: [&str; 2], auth: &ClientAuth) -> Result<Self, ClientError> {
        Self::connect_within(addrs, auth, CONNECT_TIMEOUT).await
    }

    /// Every later call (listing models, an inference) fails with
    /// [`ClientError::Timeout`] when the parties have not answered within
    /// `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// [`Client::connect`], waiting at most `timeout` for each party.
    pub async fn connect_within(
        addrs: [&str; 2],
        auth: &ClientAuth,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut parties = Vec::with_capacity(2);
        for (p, addr) in addrs.iter().enumerate() {
            let role = Role::Party(p as u8);
            let tls = match auth {
                ClientAuth::Cert(m) => m.client(role),
                ClientAuth::Token { ca_pem, .. } => ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .domain_name(role.dns_name()),
            };
            let ep = Endpoint::from_shared(mpcvit_server::https_url(addr))
                .map_err(|e| ClientError::Config(format!("address {addr:?}: {e}")))?
                .tls_config(tls)
                .map_err(|source| ClientError::Connect { party: p, source })?
                .connect_timeout(timeout)
                .tcp_nodelay(true);
            let ch = within(
                Some(timeout),
                || format!("connecting to party {p} at {addr}"),
                async {
                    ep.connect()
                        .await
                        .map_err(|source| ClientError::Connect { party: p, source })
                },
            )
            .await?;
            parties.push(
                InferenceClient::new(ch)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        }
        let token = match auth {
            ClientAuth::Token { token, .. } => Some(token.clone()),
            ClientAuth::Cert(_) => None,
        };
        let [a, b]: [InferenceClient<Channel>; 2] = parties.try_into().expect("two parties");
        Ok(Client {
            parties: [a, b],
            token,
            timeout: None,
        })
    }

    /// The models both parties serve, with the same public manifest.
    pub async fn models(&self) -> Result<Vec<RemoteModel>, ClientError> {
        within(
            self.timeout,
            || "listing the parties' models".into(),
            self.models_now(),
        )
        .await
    }

    async fn models_now(&self) -> Result<Vec<RemoteModel>, ClientError> {
        let mut lists = Vec::new();
        for (p, c) in self.parties.iter().enumerate() {
            let mut req = tonic::Request::new(ListModelsRequest {});
            add_token(&mut req, &self.token);
            let r = c
                .clone()
                .list_models(req)
                .await
                .map_err(|s| ClientError::party(p, s))?
                .into_inner();
            if r.party as usize != p {
                return Err(ClientError::Protocol(format!(
                    "the server given as party {p} says it is party {}",
                    r.party
                )));
            }
            lists.push(r.models);
        }
        let mut out = Vec::new();
        for m in &lists[0] {
            let Some(other) = lists[1].iter().find(|o| o.name == m.name) else {
                continue;
            };
            if other.manifest_json != m.manifest_json || other.frac_bits != m.frac_bits {
                return Err(ClientError::Protocol(format!(
                    "the parties hold different manifests for model {}",
                    m.name
                )));
            }
            let mut info = m.clone();
            info.ready = m.ready && other.ready;
            info.pool_available = m.pool_available.min(other.pool_available);
            out.push(RemoteModel {
                config: ModelConfig::from_manifest_json(&m.manifest_json)?,
                info,
            });
        }
        Ok(out)
    }

    /// The model called `name` (or the only model when `None`).
    pub async fn model(&self, name: Option<&str>) -> Result<RemoteModel, ClientError> {
        let models = self.models().await?;
        match name {
            Some(n) => models
                .into_iter()
                .find(|m| m.info.name == n)
                .ok_or_else(|| ClientError::Party {
                    party: 0,
                    code: Code::NotFound,
                    message: format!("no model {n:?} served by both parties"),
                }),
            None if models.len() == 1 => Ok(models.into_iter().next().expect("one")),
            None => Err(ClientError::Config(format!(
                "the parties serve {} models; choose one with --model ({})",
                models.len(),
                models
                    .iter()
                    .map(|m| m.info.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Wait until both parties are paired for `name` (polling `ListModels`;
    /// a party that is not up yet counts as not ready).
    pub async fn wait_ready(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<RemoteModel, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.model(Some(name)).await {
                Ok(m) if m.info.ready => return Ok(m),
                Ok(_) => ClientError::Protocol(format!(
                    "model {name} is not ready at both parties after {timeout:?}"
                )),
                Err(e) if e.code() == Some(Code::Unavailable) => e,
                Err(e) => return Err(e),
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Share a normalised CHW input, send one share to each party, and
    /// reconstruct the logits.
    pub async fn infer(
        &self,
        model: &RemoteModel,
        input: &[f32],
    ) -> Result<Inference, ClientError> {
        let fp = FixedPoint::new(model.info.frac_bits);
        let mut prg = Prg::new(&Seed::random());
        let [s0, s1] = model::split_input(input, fp, &mut prg);
        let sid = Seed::random().to_bytes()[..16].to_vec();
        self.infer_shares(model, [s0, s1], sid).await
    }

    /// Send raw shares (tests use this to send malformed ones).
    pub async fn infer_shares(
        &self,
        model: &RemoteModel,
        shares: [Share; 2],
        session_id: Vec<u8>,
    ) -> Result<Inference, ClientError> {
        within(
            self.timeout,
            || format!("inference with model {}", model.info.name),
            self.infer_shares_now(model, shares, session_id),
        )
        .await
    }

    async fn infer_shares_now(
        &self,
        model: &RemoteModel,
        shares: [Share; 2],
        session_id: Vec<u8>,
    ) -> Result<Inference, ClientError> {
        let t = Instant::now();
        let fp = FixedPoint::new(model.info.frac_bits);
        let reqs = shares.map(|s| {
            let bytes: Vec<u8> = s.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut r = tonic::Request::new(InferRequest {
                model: model.info.name.clone(),
                session_id: session_id.clone(),
                input_share: bytes,
            });
            add_token(&mut r, &self.token);
            r
        });
        let client_bytes_sent = reqs
            .iter()
            .map(|r| r.get_ref().input_share.len() as u64)
            .sum();
        let [r0, r1] = reqs;
        let (mut c0, mut c1) = (self.parties[0].clone(), self.parties[1].clone());
        // When one party fails, give the other a moment to report its own
        // error (the root cause may be there), then stop waiting for it.
        let grace = Duration::from_millis(300);
        let cancelled = || Err(Status::cancelled(NOT_WAITED));
        let (mut f0, mut f1) = (Box::pin(c0.infer(r0)), Box::pin(c1.infer(r1)));
        let (a, b) = tokio::select! {
            a = &mut f0 => match a {
                Ok(a) => (Ok(a), f1.await),
                Err(e) => (Err(e), tokio::time::timeout(grace, f1).await.unwrap_or_else(|_| cancelled())),
            },
            b = &mut f1 => match b {
                Ok(b) => (f0.await, Ok(b)),
                Err(e) => (tokio::time::timeout(grace, f0).await.unwrap_or_else(|_| cancelled()), Err(e)),
            },
        };
        // Report the root cause: a party's own error rather than the other's
        // "aborted", and either rather than this client's cancellation of
        // its wait (never a cause); party 0's on a tie.
        let rank = |e: &ClientError| match e.code() {
            Some(Code::Cancelled) => 0,
            Some(Code::Aborted) => 1,
            _ => 2,
        };
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a.into_inner(), b.into_inner()),
            (Err(e), Ok(_)) => return Err(ClientError::party(0, e)),
            (Ok(_), Err(e)) => return Err(ClientError::party(1, e)),
            (Err(e0), Err(e1)) => {
                let (c0, c1) = (ClientError::party(0, e0), ClientError::party(1, e1));
                return Err(if rank(&c1) > rank(&c0) { c1 } else { c0 });
            }
        };
        let n = model.info.output_len as usize;
        let words = |b: &[u8]| -> Result<Share, ClientError> {
            if b.len() != 8 * n {
                return Err(ClientError::Protocol(format!(
                    "output share of {} bytes, expected {}",
                    b.len(),
                    8 * n
                )));
            }
            Ok(Share::new(
                b.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ))
        };
        let (o0, o1) = (words(&a.output_share)?, words(&b.output_share)?);
        let logits = fp
            .decode_all(&mpc_core::reconstruct(&o0, &o1))
            .into_iter()
            .map(|v| v as f32)
            .collect();
        Ok(Inference {
            logits,
            elapsed: t.elapsed(),
            stats: [a.stats.unwrap_or_default(), b.stats.unwrap_or_default()],
            client_bytes_sent,
        })
    }

    /// Decode and preprocess an image file's bytes, then [`Client::infer`].
    pub async fn infer_image(
        &self,
        model: &RemoteModel,
        bytes: &[u8],
    ) -> Result<Inference, ClientError> {
        let input = model::preprocess(&model.config, bytes)?;
        self.infer(model, &input).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_under_a_request_is_unavailable_but_not_waiting_stays_cancelled() {
        // hyper's message when the connection closes with the request in flight
        let lost = ClientError::party(0, Status::cancelled("operation was canceled"));
        assert_eq!(lost.code(), Some(Code::Unavailable));
        let broken = ClientError::party(1, Status::unknown("transport error"));
        assert_eq!(broken.code(), Some(Code::Unavailable));
        let not_waited = ClientError::party(1, Status::cancelled(NOT_WAITED));
        assert_eq!(not_waited.code(), Some(Code::Cancelled));
        let refused = ClientError::party(0, Status::invalid_argument("bad image"));
        assert_eq!(refused.code(), Some(Code::InvalidArgument));
    }
}
