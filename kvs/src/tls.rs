//! The cluster's certificate authority and the TLS configurations of nodes and clients.
//!
//! A cluster has its own CA. Every node certificate is issued by it and names
//! [`SERVER_NAME`] (plus the node's own name and loopback addresses); clients verify the
//! node they reach against the CA and that name. There is no "accept any certificate"
//! path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::KvsError;

/// The name every node certificate carries and every client checks.
pub const SERVER_NAME: &str = "calm-node";

/// The ALPN protocol id of calm's native protocol.
pub const ALPN: &[u8] = b"calm/1";

const CA_COMMON_NAME: &str = "calm cluster CA";

/// Where a CA's certificate and key live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate (PEM); clients need only this.
    pub cert: PathBuf,
    /// The CA private key (PEM); needed to issue node certificates. Keep it private.
    pub key: PathBuf,
}

impl CaFiles {
    /// The CA files in `dir`: `ca.pem` and `ca.key`.
    pub fn in_dir(dir: &Path) -> Self {
        CaFiles {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        }
    }

    /// Whether both files exist.
    pub fn exist(&self) -> bool {
        self.cert.is_file() && self.key.is_file()
    }
}

/// Where a node's certificate and key live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertFiles {
    /// The node certificate (PEM).
    pub cert: PathBuf,
    /// The node private key (PEM).
    pub key: PathBuf,
}

impl NodeCertFiles {
    /// The files for node `name` in `dir`: `NAME.pem` and `NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        NodeCertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// Whether both files exist.
    pub fn exist(&self) -> bool {
        self.cert.is_file() && self.key.is_file()
    }
}

fn tls_err(what: &str) -> impl Fn(rcgen::Error) -> KvsError + '_ {
    move |e| KvsError::Tls(format!("{what}: {e}"))
}

/// The CA's parameters. They are fixed, so an issuer can be rebuilt from the key alone.
fn ca_params() -> Result<CertificateParams, KvsError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA parameters"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write_private(path: &Path, contents: &str) -> Result<(), KvsError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| KvsError::io(path, e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| KvsError::io(path, e))
}

fn write_public(path: &Path, contents: &str) -> Result<(), KvsError> {
    std::fs::write(path, contents).map_err(|e| KvsError::io(path, e))
}

fn read(path: &Path) -> Result<String, KvsError> {
    std::fs::read_to_string(path).map_err(|e| KvsError::io(path, e))
}

/// Creates a new CA in `dir`. Refuses to replace an existing one: every certificate it
/// issued would stop being trusted.
pub fn init_ca(dir: &Path) -> Result<CaFiles, KvsError> {
    let files = CaFiles::in_dir(dir);
    if files.cert.exists() || files.key.exists() {
        return Err(KvsError::Tls(format!(
            "a CA already exists in {}; remove it first if you really want a new one (every certificate it issued will stop working)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| KvsError::io(dir, e))?;
    let key = KeyPair::generate().map_err(tls_err("generating the CA key"))?;
    let cert = ca_params()?
        .self_signed(&key)
        .map_err(tls_err("signing the CA certificate"))?;
    write_private(&files.key, &key.serialize_pem())?;
    write_public(&files.cert, &cert.pem())?;
    Ok(files)
}

/// The CA in `dir`, created if absent.
pub fn ensure_ca(dir: &Path) -> Result<CaFiles, KvsError> {
    let files = CaFiles::in_dir(dir);
    if files.exist() {
        Ok(files)
    } else {
        init_ca(dir)
    }
}

/// Issues a certificate for node `name`, signed by the CA, into `out_dir`. It is valid for
/// [`SERVER_NAME`], `name`, `localhost`, 127.0.0.1 and ::1.
pub fn issue(ca: &CaFiles, name: &str, out_dir: &Path) -> Result<NodeCertFiles, KvsError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(KvsError::Tls(format!(
            "node name '{name}' must be letters, digits, '-', '.' or '_' (it becomes a file name and a DNS name)"
        )));
    }
    let ca_key = KeyPair::from_pem(&read(&ca.key)?).map_err(tls_err("reading the CA key"))?;
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(tls_err("node parameters"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let mut sans = vec![
        SanType::DnsName(SERVER_NAME.try_into().map_err(tls_err("server name"))?),
        SanType::DnsName("localhost".try_into().map_err(tls_err("localhost"))?),
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => sans.push(SanType::IpAddress(ip)),
        Err(_) => sans.push(SanType::DnsName(
            name.try_into().map_err(tls_err("node name"))?,
        )),
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(tls_err("generating the node key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(tls_err("signing the node certificate"))?;

    std::fs::create_dir_all(out_dir).map_err(|e| KvsError::io(out_dir, e))?;
    let files = NodeCertFiles::in_dir(out_dir, name);
    write_private(&files.key, &key.serialize_pem())?;
    write_public(&files.cert, &cert.pem())?;
    Ok(files)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(30)
            .try_into()
            .expect("30 s is a valid QUIC idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    Arc::new(t)
}

/// The QUIC server configuration of a node with this certificate and key.
pub fn server_config(node: &NodeCertFiles) -> Result<quinn::ServerConfig, KvsError> {
    let cert_pem = read(&node.cert)?;
    let key_pem = read(&node.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| KvsError::Tls(format!("{}: {e}", node.cert.display())))?;
    if certs.is_empty() {
        return Err(KvsError::Tls(format!(
            "{}: no certificate in the file",
            node.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| KvsError::Tls(format!("{}: {e}", node.key.display())))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| KvsError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| KvsError::Tls(format!("{}: {e}", node.cert.display())))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| KvsError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The QUIC client configuration that trusts nodes issued by the CA in `ca_cert` (PEM).
pub fn client_config(ca_cert: &Path) -> Result<quinn::ClientConfig, KvsError> {
    let pem = read(ca_cert)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| KvsError::Tls(format!("{}: {e}", ca_cert.display())))?;
        roots
            .add(cert)
            .map_err(|e| KvsError::Tls(format!("{}: {e}", ca_cert.display())))?;
    }
    if roots.is_empty() {
        return Err(KvsError::Tls(format!(
            "{}: no CA certificate in the file",
            ca_cert.display()
        )));
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| KvsError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| KvsError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}
