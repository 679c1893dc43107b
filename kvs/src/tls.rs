//! The cluster's certificate authority and the TLS configurations of nodes and clients.
//!
//! A cluster has its own CA, and every connection is mutual TLS: both ends present a
//! certificate the CA issued, and the certificate says what its holder is ([`Role`]):
//!
//! - a **node** certificate ([`issue`]) names [`SERVER_NAME`] (plus the node's own name and
//!   loopback addresses), so clients verify the node they reach against the CA and that
//!   name; nodes also present it when they connect to each other;
//! - a **client** certificate ([`issue_client`]) names a user and can only authenticate a
//!   client: it cannot serve as a node, and a node refuses peer messages from it.
//!
//! A node refuses a connection with no certificate, or one from another CA, during the
//! handshake, before it reads any request. There is no "accept any certificate" path.

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

/// Where a certificate (a node's or a client's) and its private key live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

impl CertFiles {
    /// The files for `name` in `dir`: `NAME.pem` and `NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// Whether both files exist.
    pub fn exist(&self) -> bool {
        self.cert.is_file() && self.key.is_file()
    }
}

/// What a process presents and trusts on a cluster's connections: the cluster's CA
/// certificate, and its own certificate and key issued by that CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The cluster CA certificate (PEM): the other end must hold a certificate it issued.
    pub ca: PathBuf,
    /// This end's certificate and key.
    pub cert: CertFiles,
}

impl Credentials {
    /// The CA certificate at `ca` with the certificate and key at `cert` and `key`.
    pub fn new(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Credentials {
        Credentials {
            ca: ca.into(),
            cert: CertFiles {
                cert: cert.into(),
                key: key.into(),
            },
        }
    }
}

/// What a certificate lets its holder be on a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A node: it serves, and may send peer messages (membership, replication, hand-offs).
    Node,
    /// A client: it sends requests, never peer messages.
    Client,
}

impl Role {
    fn unit(self) -> &'static str {
        match self {
            Role::Node => "calm node",
            Role::Client => "calm client",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Node => "node",
            Role::Client => "client",
        })
    }
}

/// Who is at the other end of a connection, as its certificate says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// What the certificate was issued for.
    pub role: Role,
    /// The name it was issued to (the node's or the user's).
    pub name: String,
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} '{}'", self.role, self.name)
    }
}

/// The role and name a certificate (DER) carries. The chain must already be verified
/// against the cluster CA: this only reads the certificate. Node certificates issued
/// before roles existed (no organizational unit, naming [`SERVER_NAME`]) count as nodes.
pub fn principal(cert_der: &[u8]) -> Result<Principal, KvsError> {
    use x509_cert::der::Decode;
    use x509_cert::der::oid::db::rfc4519::{COMMON_NAME, ORGANIZATIONAL_UNIT_NAME};
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| KvsError::Tls(format!("the peer's certificate cannot be read: {e}")))?;
    let tbs = &cert.tbs_certificate;
    // The first attribute of the subject with `oid` that is text.
    let first = |oid| {
        tbs.subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|a| a.oid == oid)
            .find_map(|a| text(&a.value))
    };
    let name = first(COMMON_NAME).unwrap_or_default();
    let role = match first(ORGANIZATIONAL_UNIT_NAME).as_deref() {
        Some(u) if u == Role::Node.unit() => Role::Node,
        Some(u) if u == Role::Client.unit() => Role::Client,
        Some(other) => {
            return Err(KvsError::Tls(format!(
                "certificate of '{name}' names an unknown role '{other}'"
            )));
        }
        None => {
            if !names_server(tbs) {
                return Err(KvsError::Tls(format!(
                    "certificate of '{name}' names no role; issue it with calm ca issue --node or --client"
                )));
            }
            Role::Node
        }
    };
    Ok(Principal { role, name })
}

/// An attribute's value as text, if it is one of the string types certificates use.
fn text(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    use x509_cert::der::{Tag, Tagged};
    let text = match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value).ok()?.as_str(),
        Tag::PrintableString => PrintableStringRef::try_from(value).ok()?.as_str(),
        Tag::Ia5String => Ia5StringRef::try_from(value).ok()?.as_str(),
        _ => return None,
    };
    Some(text.to_owned())
}

/// Whether the certificate's subject alternative names include [`SERVER_NAME`].
fn names_server(tbs: &x509_cert::TbsCertificate) -> bool {
    use x509_cert::der::Decode;
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    tbs.extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == SubjectAltName::OID)
        .filter_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
        .any(|san| {
            san.0
                .iter()
                .any(|n| matches!(n, GeneralName::DnsName(d) if d.as_str() == SERVER_NAME))
        })
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

fn check_name(role: Role, name: &str) -> Result<(), KvsError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        || name.starts_with('.')
    {
        return Err(KvsError::Tls(format!(
            "{role} name '{name}' must be letters, digits, '-', '.' or '_', not starting with '.' (it becomes a file name{})",
            if role == Role::Node {
                " and a DNS name"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// The parameters of a certificate for `name` in `role`.
fn leaf_params(role: Role, name: &str) -> Result<CertificateParams, KvsError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(tls_err("certificate parameters"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.unit());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Signs `params` with the CA and writes `NAME.pem` and `NAME.key` into `out_dir`.
fn sign(
    ca: &CaFiles,
    params: CertificateParams,
    name: &str,
    out_dir: &Path,
) -> Result<CertFiles, KvsError> {
    let ca_key = KeyPair::from_pem(&read(&ca.key)?).map_err(tls_err("reading the CA key"))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate().map_err(tls_err("generating the key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(tls_err("signing the certificate"))?;
    std::fs::create_dir_all(out_dir).map_err(|e| KvsError::io(out_dir, e))?;
    let files = CertFiles::in_dir(out_dir, name);
    write_private(&files.key, &key.serialize_pem())?;
    write_public(&files.cert, &cert.pem())?;
    Ok(files)
}

/// Issues a client certificate for user `name`, signed by the CA, into `out_dir`
/// (`NAME.pem`, `NAME.key`). It authenticates a client only: it names no server, so it
/// cannot pass for a node, and nodes refuse peer messages from it.
pub fn issue_client(ca: &CaFiles, name: &str, out_dir: &Path) -> Result<CertFiles, KvsError> {
    check_name(Role::Client, name)?;
    let mut params = leaf_params(Role::Client, name)?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    sign(ca, params, name, out_dir)
}

/// The client certificate of user `name` in `out_dir`, issued now if absent (`calm up`
/// makes one for its user, `admin`, and names it in the cluster file).
pub fn ensure_client(ca: &CaFiles, name: &str, out_dir: &Path) -> Result<CertFiles, KvsError> {
    let files = CertFiles::in_dir(out_dir, name);
    if files.exist() {
        Ok(files)
    } else {
        issue_client(ca, name, out_dir)
    }
}

/// Issues a certificate for node `name`, signed by the CA, into `out_dir` (`NAME.pem`,
/// `NAME.key`). It is valid for [`SERVER_NAME`], `name`, `localhost`, 127.0.0.1 and ::1,
/// and as a client certificate when the node connects to its peers.
pub fn issue(ca: &CaFiles, name: &str, out_dir: &Path) -> Result<CertFiles, KvsError> {
    check_name(Role::Node, name)?;
    let mut params = leaf_params(Role::Node, name)?;
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
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sign(ca, params, name, out_dir)
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

/// The certificate chain and key in `files`.
fn load_identity(
    files: &CertFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), KvsError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| KvsError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(KvsError::Tls(format!(
            "{}: no certificate in the file",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| KvsError::Tls(format!("{}: {e}", files.key.display())))?;
    Ok((certs, key))
}

/// The CA certificates in the PEM file `ca_cert`.
fn load_roots(ca_cert: &Path) -> Result<Arc<rustls::RootCertStore>, KvsError> {
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
    Ok(Arc::new(roots))
}

/// Checks client certificates against the CA at `ca_cert`; with `required`, a connection
/// without one is refused in the handshake.
fn client_verifier(
    ca_cert: &Path,
    required: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, KvsError> {
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        load_roots(ca_cert)?,
        provider(),
    );
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| KvsError::Tls(format!("{}: {e}", ca_cert.display())))
}

/// The QUIC server configuration of a node: it presents `node.cert` and accepts only
/// connections whose certificate the CA at `node.ca` issued (a client's or a node's).
pub fn server_config(node: &Credentials) -> Result<quinn::ServerConfig, KvsError> {
    let (certs, key) = load_identity(&node.cert)?;
    let verifier = client_verifier(&node.ca, true)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| KvsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| KvsError::Tls(format!("{}: {e}", node.cert.cert.display())))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| KvsError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The TLS configuration of a node's Redis port (`redis-cli --tls --cacert ca.pem`): it
/// presents the node's certificate; client certificates from the CA are accepted but not
/// required (Redis users authenticate with `AUTH`), TLS 1.2 or 1.3.
pub fn resp_server_config(node: &Credentials) -> Result<Arc<rustls::ServerConfig>, KvsError> {
    let (certs, key) = load_identity(&node.cert)?;
    let verifier = client_verifier(&node.ca, false)?;
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| KvsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| KvsError::Tls(format!("{}: {e}", node.cert.cert.display())))?;
    Ok(Arc::new(tls))
}

/// The QUIC client configuration that presents `creds.cert` and trusts nodes the CA at
/// `creds.ca` issued.
pub fn client_config(creds: &Credentials) -> Result<quinn::ClientConfig, KvsError> {
    let (certs, key) = load_identity(&creds.cert)?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| KvsError::Tls(e.to_string()))?
        .with_root_certificates(load_roots(&creds.ca)?)
        .with_client_auth_cert(certs, key)
        .map_err(|e| KvsError::Tls(format!("{}: {e}", creds.cert.cert.display())))?;
    finish_client(tls)
}

/// A QUIC client configuration that trusts nodes the CA at `ca_cert` issued but presents
/// no certificate: every node refuses it. Only for tests of that refusal.
#[doc(hidden)]
pub fn anonymous_client_config(ca_cert: &Path) -> Result<quinn::ClientConfig, KvsError> {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| KvsError::Tls(e.to_string()))?
        .with_root_certificates(load_roots(ca_cert)?)
        .with_no_client_auth();
    finish_client(tls)
}

fn finish_client(mut tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, KvsError> {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| KvsError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

#[cfg(test)]
mod test {
    use super::*;

    fn der(files: &CertFiles) -> Vec<u8> {
        let pem = std::fs::read(&files.cert).unwrap();
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn certificates_carry_their_role_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(&dir.path().join("ca")).unwrap();
        let node = issue(&ca, "db1.example", &dir.path().join("nodes")).unwrap();
        let alice = issue_client(&ca, "alice", &dir.path().join("clients")).unwrap();
        assert_eq!(
            principal(&der(&node)).unwrap(),
            Principal {
                role: Role::Node,
                name: "db1.example".into()
            }
        );
        assert_eq!(
            principal(&der(&alice)).unwrap(),
            Principal {
                role: Role::Client,
                name: "alice".into()
            }
        );
        assert_eq!(
            principal(&der(&alice)).unwrap().to_string(),
            "client 'alice'"
        );
        // A second ensure_client keeps the certificate it finds.
        let again = ensure_client(&ca, "alice", &dir.path().join("clients")).unwrap();
        assert_eq!(der(&again), der(&alice));
        assert!(issue_client(&ca, "../evil", &dir.path().join("clients")).is_err());
        assert!(principal(b"not a certificate").is_err());
    }

    #[test]
    fn node_certificates_from_before_roles_count_as_nodes_and_unknown_roles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(&dir.path().join("ca")).unwrap();
        let sign_with = |unit: Option<&str>, san: bool| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "old");
            if let Some(u) = unit {
                dn.push(DnType::OrganizationalUnitName, u);
            }
            params.distinguished_name = dn;
            if san {
                params.subject_alt_names = vec![SanType::DnsName(SERVER_NAME.try_into().unwrap())];
            }
            let files = sign(&ca, params, "old", &dir.path().join("old")).unwrap();
            der(&files)
        };
        assert_eq!(principal(&sign_with(None, true)).unwrap().role, Role::Node);
        let err = principal(&sign_with(None, false)).unwrap_err().to_string();
        assert!(err.contains("names no role"), "{err}");
        let err = principal(&sign_with(Some("admins"), true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown role 'admins'"), "{err}");
    }

    #[test]
    fn names_and_roles_are_read_in_any_string_type_certificates_use() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(&dir.path().join("ca")).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            rcgen::DnValue::PrintableString("bob".try_into().unwrap()),
        );
        dn.push(
            DnType::OrganizationalUnitName,
            rcgen::DnValue::PrintableString(Role::Client.unit().try_into().unwrap()),
        );
        params.distinguished_name = dn;
        let files = sign(&ca, params, "bob", &dir.path().join("bob")).unwrap();
        assert_eq!(
            principal(&der(&files)).unwrap(),
            Principal {
                role: Role::Client,
                name: "bob".into()
            }
        );
        // A certificate cut short, or with bytes after it, is refused with a reason.
        let whole = der(&files);
        for bad in [
            &whole[..whole.len() / 2],
            &[whole.as_slice(), &[0]].concat()[..],
        ] {
            let err = principal(bad).unwrap_err().to_string();
            assert!(err.contains("cannot be read"), "{err}");
        }
    }
}
