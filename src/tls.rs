//! TLS on every link (see docs/operations.md, "Certificates and
//! enrolment"): the cluster CA the manager keeps, the certificates it
//! issues, how a node or client dials and serves with them ([`Transport`]),
//! and the trust-on-first-use fetch of a CA a client or a new server does
//! not know yet.
//!
//! Certificates name a storage server by its id (the subject's common
//! name) and the host it is reached at (subject alternative names), so a
//! peer's certificate proves which server it is: the manager checks it on
//! heartbeats that move a server to a new address.

use crate::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server, ServerTlsConfig};

/// The cluster CA's certificate, in the manager's data directory (and a
/// server's `tls/` folder, a client's `.dupla/`).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The cluster CA's private key, in the manager's data directory only
/// (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// A node's own certificate (followed by the CA's: the chain it serves).
pub const NODE_CERT_FILE: &str = "node.pem";
/// A node's private key (mode 0600).
pub const NODE_KEY_FILE: &str = "node.key";
/// Where a storage server keeps its certificate, key and CA, in its data
/// directory.
pub const SERVER_TLS_DIR: &str = "tls";
/// Label of an enrolment request's proof of the secret.
pub const ENROL_REQUEST_LABEL: &[u8] = b"enrol-request";
/// Label of an enrolment reply's proof of the secret.
pub const ENROL_REPLY_LABEL: &[u8] = b"enrol-reply";
/// Common name of the manager's certificate.
pub const MANAGER_NAME: &str = "dupla-manager";

/// How a node or client talks to others: TLS with the cluster CA (and,
/// for nodes, their own certificate, presented both as a server and as a
/// client), or plain text when the operator said `--insecure`.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plain text: anyone on the path can read and change the traffic.
    Insecure,
    /// TLS, verifying peers against the cluster CA.
    Tls(Arc<TlsSettings>),
}

/// What a TLS [`Transport`] trusts and presents.
#[derive(Debug)]
pub struct TlsSettings {
    /// The cluster CA, PEM: the only issuer trusted.
    pub ca_pem: String,
    /// This node's certificate and key; clients have none.
    pub identity: Option<NodeIdentity>,
}

/// A node's certificate chain and private key, PEM. Debug hides the key.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The node's certificate followed by the CA's.
    pub chain_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("name", &common_name(self.chain_pem.as_bytes()))
            .field("key_pem", &"..")
            .finish()
    }
}

impl NodeIdentity {
    /// Load `node.pem` and `node.key` from `dir`, if both are there.
    pub fn load(dir: &Path) -> Result<Option<NodeIdentity>> {
        let (Some(chain_pem), Some(key_pem)) = (
            read_optional(&dir.join(NODE_CERT_FILE))?,
            read_optional(&dir.join(NODE_KEY_FILE))?,
        ) else {
            return Ok(None);
        };
        Ok(Some(NodeIdentity { chain_pem, key_pem }))
    }

    /// Save it in `dir` as `node.pem` and `node.key` (0600).
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_durably(&dir.join(NODE_KEY_FILE), self.key_pem.as_bytes(), true)?;
        write_durably(&dir.join(NODE_CERT_FILE), self.chain_pem.as_bytes(), false)
    }

    /// The common name of its certificate (a server's id).
    pub fn name(&self) -> Option<String> {
        common_name(self.chain_pem.as_bytes())
    }
}

impl Transport {
    /// TLS trusting `ca_pem`, presenting `identity` if given.
    pub fn tls(ca_pem: String, identity: Option<NodeIdentity>) -> Transport {
        Transport::Tls(Arc::new(TlsSettings { ca_pem, identity }))
    }

    /// Whether traffic is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The CA this transport trusts, if it speaks TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        match self {
            Transport::Insecure => None,
            Transport::Tls(tls) => Some(&tls.ca_pem),
        }
    }

    /// An endpoint to `addr` with Dupla's settings ([`crate::rpc::endpoint`])
    /// and, for TLS, the CA to verify it against and this node's certificate.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        match self {
            Transport::Insecure => crate::rpc::endpoint(addr),
            Transport::Tls(tls) => {
                install_crypto_provider();
                // The handshake is bounded here too, not only in
                // `connect`: a lazy channel (re)connects on its own, and a
                // node that accepts TCP but never answers must not stall
                // its calls forever.
                let mut config = ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
                    .timeout(crate::rpc::SETUP_TIMEOUT);
                if let Some(identity) = &tls.identity {
                    config = config.identity(tonic::transport::Identity::from_pem(
                        &identity.chain_pem,
                        &identity.key_pem,
                    ));
                }
                crate::rpc::endpoint(&format!("https://{}", host_port(addr)))?
                    .tls_config(config)
                    .map_err(|e| Error::InvalidInput(format!("TLS settings for {addr}: {e}")))
            }
        }
    }

    /// Connect to `addr` now, failing with `Unavailable` (the message names
    /// a TLS failure, such as an unknown CA) if it does not answer, and
    /// with [`crate::rpc::no_answer`] if it has not answered within
    /// [`crate::rpc::SETUP_TIMEOUT`]: TCP, the TLS handshake and, in plain
    /// text, a first answer over HTTP/2 (a health check).
    pub async fn connect(&self, addr: &str) -> Result<Channel> {
        crate::rpc::connect_within(self.endpoint(addr)?, addr, !self.is_tls()).await
    }

    /// A channel to `addr` that connects on first use. Its TCP connection
    /// and TLS handshake are bounded ([`crate::rpc::CONNECT_TIMEOUT`],
    /// [`crate::rpc::SETUP_TIMEOUT`]); in plain text a node that accepts
    /// TCP and then never answers is noticed by HTTP/2 keepalive instead.
    pub fn connect_lazy(&self, addr: &str) -> Result<Channel> {
        Ok(self.endpoint(addr)?.connect_lazy())
    }

    /// `server` serving TLS with this node's certificate. Client
    /// certificates are asked for and verified against the CA, but
    /// optional: users have none (they carry tokens), nodes present theirs.
    pub fn secure(&self, server: Server) -> Result<Server> {
        let Transport::Tls(tls) = self else {
            return Ok(server);
        };
        let identity = tls
            .identity
            .as_ref()
            .ok_or_else(|| Error::Internal("a TLS server needs a certificate of its own".into()))?;
        install_crypto_provider();
        server
            .tls_config(
                ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(
                        &identity.chain_pem,
                        &identity.key_pem,
                    ))
                    .client_ca_root(tonic::transport::Certificate::from_pem(&tls.ca_pem))
                    .client_auth_optional(true),
            )
            .map_err(|e| Error::InvalidInput(format!("TLS server settings: {e}")))
    }

    /// Log, once at start, that this node runs without TLS.
    pub fn warn_if_insecure(&self, who: &str) {
        if !self.is_tls() {
            tracing::warn!(
                "{who} runs with --insecure: TLS is OFF, traffic (including tokens and the cluster secret) travels in plain text"
            );
        }
    }
}

/// `addr` without an `http://` or `https://` prefix.
pub fn host_port(addr: &str) -> &str {
    addr.strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr)
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let hp = host_port(addr);
    let host = hp.rsplit_once(':').map(|(h, _)| h).unwrap_or(hp);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `addr`'s host is a loopback address or `localhost`.
pub fn is_loopback(addr: &str) -> bool {
    let host = host_of(addr);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error and its sources, joined: tonic's own Display says only
/// "transport error", the cause (such as an unknown issuer) is deeper.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether an error text says the peer's certificate was not accepted.
pub fn is_certificate_error(text: &str) -> bool {
    text.contains("invalid peer certificate") || text.contains("UnknownIssuer")
}

/// The cluster CA: the manager's, in its data directory.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &fingerprint(&self.cert_pem))
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Load `ca.pem` and `ca.key` from `dir`, creating them on first start
    /// (the key with mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if let (Some(cert_pem), Some(key_pem)) =
            (read_optional(&cert_path)?, read_optional(&key_path)?)
        {
            let key = KeyPair::from_pem(&key_pem).map_err(|e| bad_file(&key_path, e))?;
            let issuer =
                Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| bad_file(&cert_path, e))?;
            return Ok(Ca { cert_pem, issuer });
        }
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            format!(
                "Dupla cluster CA {}",
                hex::encode(rand::random::<[u8; 6]>())
            ),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(tls_error)?;
        let cert_pem = cert.pem();
        std::fs::create_dir_all(dir)?;
        write_durably(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_durably(&cert_path, cert_pem.as_bytes(), false)?;
        tracing::info!(
            fingerprint = %fingerprint(&cert_pem),
            path = %cert_path.display(),
            "created the cluster CA"
        );
        let issuer = Issuer::new(params, key);
        Ok(Ca { cert_pem, issuer })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for the public key of `csr_pem`, named `name` and
    /// valid for `hosts`. Nothing else of the request is used.
    pub fn sign_request(&self, csr_pem: &str, name: &str, hosts: &[String]) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::InvalidInput(format!("not a certificate request: {e}")))?;
        let cert = node_params(name, hosts)?
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(tls_error)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }

    /// A fresh key and certificate for a node this CA's holder runs itself
    /// (the manager), named `name` and valid for `hosts`.
    pub fn issue(&self, name: &str, hosts: &[String]) -> Result<NodeIdentity> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = node_params(name, hosts)?
            .signed_by(&key, &self.issuer)
            .map_err(tls_error)?;
        Ok(NodeIdentity {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new key and a certificate request for it, named `name`: the key stays
/// with the caller, the request goes to the CA.
pub fn new_request(name: &str) -> Result<(KeyPair, String)> {
    let key = KeyPair::generate().map_err(tls_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params.serialize_request(&key).map_err(tls_error)?;
    Ok((key, csr.pem().map_err(tls_error)?))
}

/// The names a node's certificate is valid for: `hosts` plus the loopback
/// names, without duplicates or unspecified addresses.
pub fn cert_hosts(hosts: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for host in hosts
        .iter()
        .copied()
        .chain(["localhost", "127.0.0.1", "::1"])
    {
        let unspecified = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if !host.is_empty() && !unspecified && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    names
}

fn node_params(name: &str, hosts: &[String]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| Error::InvalidInput(format!("certificate names {hosts:?}: {e}")))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// The common name of the first certificate in `pem_or_der` (PEM text, or
/// one DER certificate).
pub fn common_name(pem_or_der: &[u8]) -> Option<String> {
    let der = match pem::parse(pem_or_der) {
        Ok(block) => block.into_contents(),
        Err(_) => pem_or_der.to_vec(),
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(name)
}

/// The identity a TLS peer proved: the common name of its certificate
/// (a storage server's id), if it presented one.
pub fn peer_name<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    common_name(certs.first()?.as_ref())
}

/// A short fingerprint of a CA (blake3 of its DER), for messages and logs.
pub fn fingerprint(ca_pem: &str) -> String {
    let der = pem::parse(ca_pem)
        .map(|b| b.into_contents())
        .unwrap_or_else(|_| ca_pem.as_bytes().to_vec());
    let hash = blake3::hash(&der).to_hex();
    hash[..16].to_string()
}

/// Whether two PEM certificates are the same certificate.
pub fn same_certificate(a: &str, b: &str) -> bool {
    fingerprint(a) == fingerprint(b)
}

/// Trust on first use: connect to `addr` without verifying it and return
/// the CA at the end of the certificate chain it presents (Dupla nodes
/// serve their certificate followed by the CA's). The caller must then
/// authenticate that CA some other way (a server: the enrolment proof) or
/// pin it and refuse any other later (a client).
pub async fn fetch_ca(addr: &str) -> Result<String> {
    // One bound on the whole set-up, as for any connection.
    tokio::time::timeout(crate::rpc::SETUP_TIMEOUT, fetch_ca_unbounded(addr))
        .await
        .map_err(|_| crate::rpc::no_answer(addr))?
}

/// [`fetch_ca`] without its bound on the time it may take.
async fn fetch_ca_unbounded(addr: &str) -> Result<String> {
    let target = host_port(addr);
    let tcp = tokio::time::timeout(
        crate::rpc::CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(target),
    )
    .await
    .map_err(|_| Error::Unavailable(format!("cannot reach {addr}: timed out")))?
    .map_err(|e| Error::Unavailable(format!("cannot reach {addr}: {e}")))?;
    let provider = Arc::new(crypto_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(host_of(addr).to_string())
        .unwrap_or_else(|_| ServerName::try_from("dupla").expect("invariant: a valid DNS name"));
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
        Error::Unavailable(format!(
            "{addr} does not speak TLS ({e}); if the cluster runs with --insecure, pass --insecure too"
        ))
    })?;
    let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
    let ca = match chain {
        [_leaf, .., ca] => ca,
        _ => {
            return Err(Error::Unavailable(format!(
                "{addr} presented no CA certificate: it is not a Dupla node"
            )))
        }
    };
    Ok(pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        ca.as_ref().to_vec(),
    )))
}

/// ring, with AES-128-GCM first: in TLS 1.3 a link uses the first suite of
/// the client's list that the server has, and AES-128 takes 10 rounds a
/// block where AES-256 takes 14. Every byte of an upload is sealed and
/// opened twice (client → primary → replica), and on a machine whose cores
/// are the limit that is a few percent of the throughput, for a key size
/// that is still far beyond reach.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// Make [`crypto_provider`] the process's default, which tonic's TLS
/// settings use; once, before the first TLS endpoint or server.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Another default installed first (an embedding program's) is kept.
    ONCE.call_once(|| drop(crypto_provider().install_default()));
}

/// A verifier that accepts any certificate (signatures are still checked,
/// so the handshake is with the key the certificate names): used only by
/// [`fetch_ca`], whose caller authenticates the CA afterwards.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Read a file, `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::InvalidInput(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Write `bytes` to `path` durably: a temporary file (mode 0600 when
/// `private`), fsync, rename over `path`, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("TLS: {e}"))
}

fn bad_file(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "{} is not usable ({e}); restore it from a backup, or remove ca.pem and ca.key to create a new cluster CA (every node and client must then enrol or pin again)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_prefer_aes_128_gcm_and_still_offer_the_other_suites() {
        let suites: Vec<_> = crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(suites.contains(&rustls::CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert!(suites.contains(&rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256));
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }

    #[test]
    fn ca_is_created_once_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert!(same_certificate(ca.pem(), again.pem()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = Ca::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(!same_certificate(ca.pem(), other.pem()));
    }

    #[test]
    fn a_signed_request_names_the_server_not_what_it_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let (_key, csr) = new_request("srv-evil").unwrap();
        let chain = ca
            .sign_request(&csr, "srv-1", &cert_hosts(&["10.0.0.5"]))
            .unwrap();
        assert_eq!(common_name(chain.as_bytes()).as_deref(), Some("srv-1"));
        assert!(ca.sign_request("garbage", "srv-1", &[]).is_err());
        let identity = ca.issue(MANAGER_NAME, &cert_hosts(&["0.0.0.0"])).unwrap();
        assert_eq!(identity.name().as_deref(), Some(MANAGER_NAME));
        assert!(!format!("{identity:?}").contains("PRIVATE"));
    }

    #[test]
    fn hosts_and_loopback() {
        assert_eq!(host_of("https://10.1.2.3:5"), "10.1.2.3");
        assert_eq!(host_of("[::1]:5"), "::1");
        assert!(is_loopback("127.0.0.1:50050"));
        assert!(is_loopback("localhost:1"));
        assert!(!is_loopback("0.0.0.0:1"));
        assert!(!is_loopback("192.168.1.2:1"));
        assert_eq!(
            cert_hosts(&["0.0.0.0", "127.0.0.1"]),
            ["127.0.0.1", "localhost", "::1"]
        );
    }
}
