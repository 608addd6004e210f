//! Mutual TLS on every link (rustls through tonic).
//!
//! One CA signs every certificate; a certificate's role is its DNS subject
//! alternative name: `dealer.mpcvit`, `party0.mpcvit`, `party1.mpcvit`,
//! `client.mpcvit`. On the internal links (party 1's peer port, the dealer)
//! a TLS handshake without a certificate signed by the CA fails; then each
//! service checks the caller's role ([`require_role`]): party 1's peer link
//! accepts only party 0, the dealer only the parties. The client API takes
//! the handshake with any certificate whose key the caller proves it holds,
//! and verifies the chain against the CA per request ([`ClientCertCheck`],
//! [`require_client`]): a refused certificate gets UNAUTHENTICATED with the
//! reason (unknown CA, bad signature, expired, wrong role) instead of a
//! connection closed under the client; only clients (or a configured bearer
//! token) are served. Clients check a server's role through the TLS server
//! name.
//!
//! `mpcvit-server certs --out DIR` writes `ca.pem` and `<role>.pem` /
//! `<role>.key` for every role ([`CertBundle`]); the local mode makes the
//! same bundle in memory.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::ServerError;
use crate::files::write_file;

/// Who holds a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The dealer of correlated randomness.
    Dealer,
    /// Computing party 0 or 1.
    Party(u8),
    /// A client of the inference API.
    Client,
}

impl Role {
    /// Every role, in file order.
    pub const ALL: [Role; 4] = [Role::Dealer, Role::Party(0), Role::Party(1), Role::Client];

    /// The DNS name in the role's certificate (and the TLS server name).
    pub fn dns_name(self) -> &'static str {
        match self {
            Role::Dealer => "dealer.mpcvit",
            Role::Party(0) => "party0.mpcvit",
            Role::Party(_) => "party1.mpcvit",
            Role::Client => "client.mpcvit",
        }
    }

    /// The party index of a party's role.
    pub fn party_index(self) -> Option<u8> {
        match self {
            Role::Party(i) => Some(i),
            _ => None,
        }
    }

    /// The file stem of the role's certificate and key.
    pub fn file_stem(self) -> &'static str {
        match self {
            Role::Dealer => "dealer",
            Role::Party(0) => "party0",
            Role::Party(_) => "party1",
            Role::Client => "client",
        }
    }
}

/// How errors name the other end of a link: `the dealer`, `party 0`,
/// `party 1`, `the client`.
impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Dealer => f.write_str("the dealer"),
            Role::Party(i) => write!(f, "party {i}"),
            Role::Client => f.write_str("the client"),
        }
    }
}

/// A certificate and its private key, PEM. `Debug` never shows the key;
/// the key is wiped (zeroize) when dropped.
#[derive(Clone)]
pub struct KeyedCert {
    /// The certificate chain, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl Drop for KeyedCert {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_pem);
    }
}

impl KeyedCert {
    /// The certificate chain and the key, parsed.
    fn parse(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ServerError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error("certificate", &e))?;
        // Never the key's bytes in an error: only the parser's message.
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| tls_error("private key", &e))?;
        Ok((chain, key))
    }

    /// Server side of a party's web listener: this certificate, no client
    /// certificate asked for (browsers authenticate with a web token), and
    /// HTTP/2 or HTTP/1.1, whichever the browser offers.
    pub fn web_server(&self) -> Result<Arc<ServerConfig>, ServerError> {
        let (chain, key) = self.parse()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("protocol versions", &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls_error("web certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedCert(<private key>)")
    }
}

/// One node's TLS material: the CA to trust and its own certificate.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// This node's certificate and key.
    pub identity: KeyedCert,
}

impl TlsMaterial {
    /// Read `ca.pem`, `<role>.pem` and `<role>.key` from `dir`.
    pub fn load(dir: &Path, role: Role) -> Result<Self, ServerError> {
        let stem = role.file_stem();
        Self::load_files(
            &dir.join("ca.pem"),
            &dir.join(format!("{stem}.pem")),
            &dir.join(format!("{stem}.key")),
        )
    }

    /// Read a CA, a certificate and a key from explicit paths.
    pub fn load_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, ServerError> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| ServerError::io("reading", p, e));
        Ok(TlsMaterial {
            ca_pem: read(ca)?,
            identity: KeyedCert {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
            },
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.identity.cert_pem, &self.identity.key_pem)
    }

    /// The CA's verifier of client certificates.
    fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, ServerError> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let c = c.map_err(|e| tls_error("CA certificate", &e))?;
            roots.add(c).map_err(|e| tls_error("CA certificate", &e))?;
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| tls_error("client verifier", &e))
    }

    /// Server side of an internal link: require a client certificate signed
    /// by the CA. For [`crate::listen::tls`]; offers HTTP/2 only, as tonic's
    /// own would.
    pub fn server(&self) -> Result<Arc<ServerConfig>, ServerError> {
        self.server_with(self.client_verifier()?)
    }

    /// Server side of the client API: the handshake takes any client
    /// certificate (or none), and the returned check verifies it against
    /// the CA per request ([`require_client`]).
    pub fn client_api_server(&self) -> Result<(Arc<ServerConfig>, ClientCertCheck), ServerError> {
        let check = ClientCertCheck {
            verifier: self.client_verifier()?,
        };
        let config = self.server_with(Arc::new(Deferred(check.verifier.clone())))?;
        Ok((config, check))
    }

    fn server_with(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
    ) -> Result<Arc<ServerConfig>, ServerError> {
        let bad = tls_error;
        let (chain, key) = self.identity.parse()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| bad("certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Client side, connecting to a server of role `server`.
    pub fn client(&self, server: Role) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(server.dns_name())
    }
}

fn tls_error(what: &'static str, e: &dyn std::fmt::Display) -> ServerError {
    ServerError::Tls {
        what,
        reason: e.to_string(),
    }
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The client API's handshake: offers client authentication, takes a
/// certificate without verifying its chain (the service does, per request,
/// with [`ClientCertCheck`]), but checks the handshake's signature, so the
/// caller holds the certificate's key.
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, tokio_rustls::rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Verifies a client API caller's certificate chain against the CA (the
/// handshake took it unverified: [`TlsMaterial::client_api_server`]).
#[derive(Clone)]
pub struct ClientCertCheck {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ClientCertCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCertCheck")
    }
}

impl ClientCertCheck {
    /// `None` if the caller sent no certificate; else its role once its
    /// chain verifies, or [`ServerError::BadCertificate`] with the reason.
    pub fn verify<T>(&self, req: &tonic::Request<T>) -> Option<Result<Role, ServerError>> {
        let certs = req.peer_certs()?;
        let (leaf, rest) = certs.split_first()?;
        let verified = self
            .verifier
            .verify_client_cert(leaf, rest, UnixTime::now())
            .map_err(|e| ServerError::BadCertificate {
                reason: certificate_problem(&e),
            })
            .and_then(|_| {
                role_of(leaf).ok_or(ServerError::BadCertificate {
                    reason: "it names none of the mpcvit roles".into(),
                })
            });
        Some(verified)
    }
}

/// Why a certificate was refused, in words.
fn certificate_problem(e: &tokio_rustls::rustls::Error) -> String {
    use tokio_rustls::rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "it is not signed by this deployment's CA (unknown issuer): certificates of another deployment?".into()
            }
            CertificateError::BadSignature => {
                "it is not signed by this deployment's CA: its signature does not verify with the CA's key (bad signature: another CA of the same name?)".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet".into()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "it is not issued for client authentication".into()
            }
            CertificateError::BadEncoding => "it is not a well-formed certificate".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// A CA and a certificate for every role.
#[derive(Clone, Debug)]
pub struct CertBundle {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA's key (to sign more clients later), PEM.
    pub ca: KeyedCert,
    /// Certificates in the order of [`Role::ALL`].
    pub nodes: Vec<(Role, KeyedCert)>,
}

fn tls_err(e: rcgen::Error) -> ServerError {
    ServerError::Tls {
        what: "generating certificates",
        reason: e.to_string(),
    }
}

impl CertBundle {
    /// A fresh CA (valid 10 years from now in rcgen's default window) and
    /// one certificate per role.
    pub fn generate() -> Result<Self, ServerError> {
        Self::generate_with_web_hosts(&[])
    }

    /// [`CertBundle::generate`], with `web_hosts` (host names or IP
    /// addresses browsers dial) added to both party certificates, for their
    /// web listeners. The role names stay, so role checks are unchanged.
    pub fn generate_with_web_hosts(web_hosts: &[String]) -> Result<Self, ServerError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mpcvit CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err)?;
        let mut nodes = Vec::new();
        for role in Role::ALL {
            let mut names = vec![role.dns_name().to_string()];
            if role.party_index().is_some() {
                names.extend(web_hosts.iter().cloned());
            }
            let mut p = CertificateParams::new(names).map_err(tls_err)?;
            p.distinguished_name
                .push(DnType::CommonName, role.dns_name());
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().map_err(tls_err)?;
            let cert = p.signed_by(&key, &ca).map_err(tls_err)?;
            nodes.push((
                role,
                KeyedCert {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                },
            ));
        }
        Ok(CertBundle {
            ca_pem: ca.pem(),
            ca: KeyedCert {
                cert_pem: ca.pem(),
                key_pem: ca_key_pem,
            },
            nodes,
        })
    }

    /// The TLS material of `role`.
    pub fn material(&self, role: Role) -> TlsMaterial {
        let identity = self
            .nodes
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, c)| c.clone())
            .expect("every role is in the bundle");
        TlsMaterial {
            ca_pem: self.ca_pem.clone(),
            identity,
        }
    }

    /// Write `ca.pem`, `ca.key` and `<role>.{pem,key}` into `dir`; keys are
    /// created readable by the owner only (on Unix).
    pub fn write_dir(&self, dir: &Path) -> Result<(), ServerError> {
        std::fs::create_dir_all(dir).map_err(|e| ServerError::io("creating", dir, e))?;
        let write = |name: String, text: &str, secret: bool| -> Result<(), ServerError> {
            let path = dir.join(name);
            write_file(&path, text.as_bytes(), secret)
        };
        write("ca.key".into(), &self.ca.key_pem, true)?;
        for (role, c) in &self.nodes {
            write(format!("{}.pem", role.file_stem()), &c.cert_pem, false)?;
            write(format!("{}.key", role.file_stem()), &c.key_pem, true)?;
        }
        // Last: its presence means the set is complete (`certs --keep-existing`).
        write("ca.pem".into(), &self.ca_pem, false)
    }

    /// Write `ca.pem` and `ca.key` into `dir`, and for every role a
    /// directory `dir/<role>/` with `ca.pem`, `<role>.pem` and `<role>.key`:
    /// exactly what that role's holder needs ([`TlsMaterial::load`]).
    pub fn write_role_dirs(&self, dir: &Path) -> Result<(), ServerError> {
        std::fs::create_dir_all(dir).map_err(|e| ServerError::io("creating", dir, e))?;
        write_file(&dir.join("ca.key"), self.ca.key_pem.as_bytes(), true)?;
        for (role, c) in &self.nodes {
            let sub = dir.join(role.file_stem());
            std::fs::create_dir_all(&sub).map_err(|e| ServerError::io("creating", &sub, e))?;
            write_file(&sub.join("ca.pem"), self.ca_pem.as_bytes(), false)?;
            let stem = role.file_stem();
            write_file(
                &sub.join(format!("{stem}.pem")),
                c.cert_pem.as_bytes(),
                false,
            )?;
            write_file(&sub.join(format!("{stem}.key")), c.key_pem.as_bytes(), true)?;
        }
        // Last: its presence means the set is complete (`certs --keep-existing`).
        write_file(&dir.join("ca.pem"), self.ca_pem.as_bytes(), false)
    }
}

/// The role a certificate names, if it has one of the roles' DNS names.
fn role_of(leaf: &CertificateDer<'_>) -> Option<Role> {
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    Role::ALL.into_iter().find(|r| {
        let name = rustls_pki_types::ServerName::try_from(r.dns_name()).expect("valid DNS name");
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    })
}

/// The role of the caller's certificate (leaf of the chain) on an internal
/// link, whose handshake verified the chain against the CA
/// ([`TlsMaterial::server`]).
pub fn caller_role<T>(req: &tonic::Request<T>) -> Option<Role> {
    role_of(req.peer_certs()?.first()?)
}

/// Internal links: check that the caller holds a certificate of one of
/// `allowed`; `service` names this service in the refusal.
pub fn require_role<T>(
    req: &tonic::Request<T>,
    allowed: &[Role],
    service: &'static str,
) -> Result<Role, ServerError> {
    match caller_role(req) {
        Some(r) if allowed.contains(&r) => Ok(r),
        Some(caller) => Err(ServerError::WrongRole { caller, service }),
        None => Err(ServerError::NoCredential {
            needed: "a client certificate with an mpcvit role",
        }),
    }
}

/// Party 1's peer port, in refusals.
pub const PEER_PORT: &str = "party 1's peer port (it serves party 0 only)";
/// The dealer's port, in refusals.
pub const DEALER_PORT: &str = "the dealer (it serves the parties only)";

/// What the client API says it accepts, in refusals.
pub const CLIENT_API: &str = "the client API (it serves client certificates)";

/// Client API check: a web token that the web listener checked
/// ([`crate::web::WebClient`]), a client certificate that verifies against
/// the CA (`check`), or the configured bearer token. A certificate that does
/// not verify is refused with the reason, token or not.
pub fn require_client<T>(
    req: &tonic::Request<T>,
    token: Option<&str>,
    check: &ClientCertCheck,
) -> Result<(), ServerError> {
    if req.extensions().get::<crate::web::WebClient>().is_some() {
        return Ok(());
    }
    let role = match check.verify(req) {
        Some(Ok(Role::Client)) => return Ok(()),
        Some(Ok(role)) => Some(role),
        Some(Err(e)) => return Err(e),
        None => None,
    };
    if let Some(token) = token {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return Ok(());
        }
    }
    match (role, token) {
        (Some(caller), _) => Err(ServerError::WrongRole {
            caller,
            service: CLIENT_API,
        }),
        (None, Some(_)) => Err(ServerError::NoCredential {
            needed: "a client certificate or a valid bearer token is required",
        }),
        (None, None) => Err(ServerError::NoCredential {
            needed: "a client certificate is required",
        }),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
