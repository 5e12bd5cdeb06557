//! TLS at a listener: the certificates a server presents (several, chosen by the name the client
//! asks for), the versions it speaks, and the client certificates it asks for (mTLS).
//!
//! Everything is rustls with the ring provider, named explicitly rather than taken from a
//! process-wide default, so the workspace has exactly one crypto backend and no start-up order
//! to get right. Only TLS 1.2 and 1.3 exist here (rustls implements nothing older), with rustls'
//! default cipher suites: there is no knob that can make them weaker.
//!
//! The listener reads the configuration in force at each handshake from an [`Acceptor`], which a
//! [`CertificateWatch`] replaces when the files change: new connections get the new certificate,
//! open ones keep the session they negotiated. A set of files that does not load is refused and
//! the running configuration stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// What the server presents and accepts, as files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Chosen by SNI; the first answers a client that names none, or a name no certificate has.
    pub certificates: Vec<CertificateFiles>,
    /// Client certificates signed by this bundle's CAs authenticate the client (mTLS).
    pub client_ca: Option<ClientCa>,
    pub min_version: MinVersion,
}

/// A certificate chain (leaf first) and its private key, each a PEM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCa {
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub bundle: PathBuf,
    pub mode: ClientAuth,
}

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate (or one from another CA): the handshake fails.
    Required,
    /// No certificate: the connection is anonymous (routes that need one answer 401); a
    /// certificate from another CA still fails the handshake, since it is not anonymous but
    /// wrong.
    Optional,
}

/// The oldest TLS version offered. Nothing older than 1.2 can be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl std::str::FromStr for MinVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            "1.0" | "1.1" => Err(format!(
                "{text:?}: TLS {text} is broken and not offered; use \"1.2\" or \"1.3\""
            )),
            other => Err(format!("{other:?}: expected \"1.2\" or \"1.3\"")),
        }
    }
}

/// Why a set of TLS files cannot be served; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: cannot read: {cause}")]
    Read {
        file: PathBuf,
        cause: std::io::Error,
    },
    #[error("{file}: {problem}")]
    Content { file: PathBuf, problem: String },
    #[error("{file}: {problem}")]
    Rustls {
        file: PathBuf,
        problem: rustls::Error,
    },
    #[error("no certificate configured")]
    NoCertificate,
}

/// A loaded TLS configuration: what the listener serves, and what it was made from.
pub struct Loaded {
    pub server: Arc<ServerConfig>,
    /// The DNS names and IP addresses the certificates are for (lower case), in order.
    pub names: Vec<String>,
    /// The files' contents, to notice when they change.
    contents: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Loaded")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// The provider every TLS configuration of the workspace uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The protocols offered by ALPN, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Reads and checks `files`: every chain parses, every key is its certificate's, the CA bundle
/// holds at least one CA.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let contents = read_all(files)?;
    build(files, &contents)
}

fn read_all(files: &TlsFiles) -> Result<Vec<Vec<u8>>, TlsError> {
    files
        .certificates
        .iter()
        .flat_map(|pair| [&pair.cert, &pair.key])
        .chain(files.client_ca.as_ref().map(|ca| &ca.bundle))
        .map(|file| {
            std::fs::read(file).map_err(|cause| TlsError::Read {
                file: file.clone(),
                cause,
            })
        })
        .collect()
}

fn build(files: &TlsFiles, contents: &[Vec<u8>]) -> Result<Loaded, TlsError> {
    let provider = provider();
    let mut resolver = BySni::default();
    let mut names = Vec::new();
    for (index, pair) in files.certificates.iter().enumerate() {
        let (cert_pem, key_pem) = (&contents[2 * index], &contents[2 * index + 1]);
        let chain = certificates(&pair.cert, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| TlsError::Content {
            file: pair.key.clone(),
            problem: format!("no private key in PEM form ({error})"),
        })?;
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|problem| TlsError::Rustls {
                file: pair.key.clone(),
                problem,
            })?;
        let served = served_names(&pair.cert, certified.end_entity_cert().ok())?;
        resolver.add(&served, Arc::new(certified));
        names.extend(served);
    }
    if resolver.default.is_none() {
        return Err(TlsError::NoCertificate);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match files.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|problem| TlsError::Rustls {
            file: PathBuf::new(),
            problem,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let bundle = &contents[contents.len() - 1];
            let mut roots = RootCertStore::empty();
            for certificate in certificates(&ca.bundle, bundle)? {
                roots.add(certificate).map_err(|problem| TlsError::Rustls {
                    file: ca.bundle.clone(),
                    problem,
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = match ca.mode {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|error| TlsError::Content {
                file: ca.bundle.clone(),
                problem: format!("not a usable CA bundle: {error}"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Loaded {
        server: Arc::new(server),
        names,
        contents: contents.to_vec(),
    })
}

/// The certificates of a PEM file, in order; at least one.
fn certificates(file: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Content {
            file: file.to_owned(),
            problem: format!("not a PEM certificate file ({error})"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Content {
            file: file.to_owned(),
            problem: "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(chain)
}

/// The DNS names (and IP addresses) in a certificate's subject alternative names.
fn served_names(file: &Path, leaf: Option<&CertificateDer<'_>>) -> Result<Vec<String>, TlsError> {
    let unreadable = |problem: String| TlsError::Content {
        file: file.to_owned(),
        problem,
    };
    let leaf = leaf.ok_or_else(|| unreadable("no certificate in it".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|error| unreadable(format!("not an X.509 certificate ({error})")))?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|error| unreadable(format!("unreadable subject alternative names ({error})")))?
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => ip_text(bytes),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|v4| std::net::Ipv4Addr::from(v4).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|v6| std::net::Ipv6Addr::from(v6).to_string()),
        _ => None,
    }
}

/// Whether `host` (a DNS name or IP address, any case) is one of `names`, a certificate's
/// names: exactly, or under a wildcard `*.example.com` for one label.
pub fn is_served(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|name| {
        name == &host
            || name.strip_prefix("*.").is_some_and(|parent| {
                host.split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
            })
    })
}

/// Picks the certificate for the name a client asks for (SNI): exact names first, then
/// wildcards, else the first certificate configured. A name two certificates share is the
/// first's.
#[derive(Debug, Default)]
struct BySni {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the parent of the wildcard: `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl BySni {
    fn add(&mut self, names: &[String], key: Arc<CertifiedKey>) {
        if self.default.is_none() {
            self.default = Some(Arc::clone(&key));
        }
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_owned()),
                None => self.exact.entry(name.clone()),
            }
            .or_insert_with(|| Arc::clone(&key));
        }
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls has checked that the name is a syntactically valid DNS name.
        let chosen = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact
                .get(&name)
                .or_else(|| {
                    name.split_once('.')
                        .and_then(|(_, parent)| self.wildcard.get(parent))
                })
                .cloned()
        });
        chosen.or_else(|| self.default.clone())
    }
}

/// The TLS configuration a listener accepts with, replaceable while it serves.
#[derive(Clone)]
pub struct Acceptor {
    current: Arc<ArcSwap<ServerConfig>>,
}

impl Acceptor {
    pub fn new(server: Arc<ServerConfig>) -> Self {
        Self {
            current: Arc::new(ArcSwap::new(server)),
        }
    }

    /// The configuration new connections get from now on.
    pub fn replace(&self, server: Arc<ServerConfig>) {
        self.current.store(server);
    }

    /// A handshake with the configuration in force now.
    pub fn accept<IO>(&self, stream: IO) -> tokio_rustls::Accept<IO>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        tokio_rustls::TlsAcceptor::from(self.current.load_full()).accept(stream)
    }
}

/// Keeps an [`Acceptor`] serving what its files hold now: [`CertificateWatch::look`] reads them,
/// and when they differ from the ones in force, loads them and swaps them in, or refuses them.
pub struct CertificateWatch {
    files: TlsFiles,
    acceptor: Acceptor,
    seen: Mutex<Seen>,
}

/// The files' contents (each file's bytes, in [`TlsFiles`] order) the watch has met.
struct Seen {
    in_force: Vec<Vec<u8>>,
    /// The last refused: not tried again until the files change.
    refused: Option<Vec<Vec<u8>>>,
}

/// What a look at the certificate files found.
#[derive(Debug)]
pub enum Looked {
    Unchanged,
    Applied,
    Refused(TlsError),
}

impl CertificateWatch {
    /// Watches `files`, whose contents `loaded` was made from, for `acceptor`.
    pub fn new(files: TlsFiles, loaded: &Loaded, acceptor: Acceptor) -> Self {
        Self {
            files,
            acceptor,
            seen: Mutex::new(Seen {
                in_force: loaded.contents.clone(),
                refused: None,
            }),
        }
    }

    /// The files' contents now, if they differ from those in force and from the last refused.
    /// An unreadable file (being replaced) counts as unchanged: the next look decides.
    pub fn changed(&self) -> Option<Vec<Vec<u8>>> {
        let contents = read_all(&self.files).ok()?;
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        (seen.in_force != contents && seen.refused.as_ref() != Some(&contents)).then_some(contents)
    }

    /// Applies `contents` (from [`CertificateWatch::changed`]) if they load; else keeps the
    /// running configuration and remembers them as refused.
    pub fn apply(&self, contents: Vec<Vec<u8>>) -> Looked {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match build(&self.files, &contents) {
            Ok(loaded) => {
                self.acceptor.replace(loaded.server);
                *seen = Seen {
                    in_force: contents,
                    refused: None,
                };
                Looked::Applied
            }
            Err(error) => {
                seen.refused = Some(contents);
                Looked::Refused(error)
            }
        }
    }

    /// One look: changed files are applied or refused at once (callers that want the files to
    /// settle first use [`CertificateWatch::changed`] and [`CertificateWatch::apply`]).
    pub fn look(&self) -> Looked {
        match self.changed() {
            None => Looked::Unchanged,
            Some(contents) => self.apply(contents),
        }
    }
}

/// What a request knows of the TLS session it came on; in its extensions on a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsSession {
    /// The verified client certificate, when the client presented one (mTLS).
    pub client_certificate: Option<Arc<ClientCertificate>>,
}

impl TlsSession {
    /// The session of a completed handshake.
    pub fn of(connection: &ServerConnection) -> Self {
        let client_certificate = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(ClientCertificate::parse)
            .map(Arc::new);
        Self { client_certificate }
    }
}

/// A client certificate the listener verified against its CA bundle: who it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's distinguished name as RFC 4514 writes it, e.g. `CN=orders-batch,O=Shop`.
    pub subject: String,
    /// Subject alternative names: DNS names, URIs (SPIFFE IDs), e-mail addresses.
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
}

impl ClientCertificate {
    /// `None` for bytes that are not a certificate (the verifier has parsed it already, so
    /// this does not happen for a verified one).
    pub fn parse(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = rfc4514(parsed.subject());
        let mut certificate = Self {
            subject,
            dns_names: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
        };
        if let Ok(Some(names)) = parsed.subject_alternative_name() {
            for name in &names.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => certificate.dns_names.push((*dns).to_owned()),
                    GeneralName::URI(uri) => certificate.uris.push((*uri).to_owned()),
                    GeneralName::RFC822Name(email) => certificate.emails.push((*email).to_owned()),
                    _ => {}
                }
            }
        }
        Some(certificate)
    }
}

/// A distinguished name as RFC 4514 writes it: the most specific part first (`CN=…,O=…`), with
/// `,` `+` `"` `\` `<` `>` `;` escaped, so that a subject cannot pass for another by holding a
/// comma.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter().collect();
    let parts: Vec<String> = rdns
        .iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let key = x509_parser::objects::oid2abbrev(
                        attribute.attr_type(),
                        x509_parser::objects::oid_registry(),
                    )
                    .map_or_else(|_| attribute.attr_type().to_id_string(), str::to_owned);
                    let value = attribute
                        .as_str()
                        .map_or_else(|_| "#".to_owned() + &hex(attribute.as_slice()), escape);
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    parts.join(",")
}

fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for (index, character) in value.chars().enumerate() {
        let edge = (index == 0 && matches!(character, ' ' | '#'))
            || (index + 1 == value.chars().count() && character == ' ');
        if edge || matches!(character, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            escaped.push('\\');
        }
        if character.is_control() {
            escaped.push_str(&format!("\\{:02x}", u32::from(character)));
        } else {
            escaped.push(character);
        }
    }
    escaped
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_versions_below_1_2_cannot_be_configured() {
        assert_eq!("1.2".parse(), Ok(MinVersion::Tls12));
        assert_eq!("1.3".parse(), Ok(MinVersion::Tls13));
        for refused in ["1.0", "1.1", "1", "TLSv1.2", ""] {
            assert!(refused.parse::<MinVersion>().is_err(), "{refused:?}");
        }
    }

    #[test]
    fn a_wildcard_serves_one_label_and_names_compare_without_case() {
        let names = vec!["api.example.com".to_owned(), "*.shop.example".to_owned()];
        assert!(is_served(&names, "API.example.com"));
        assert!(is_served(&names, "eu.shop.example"));
        assert!(!is_served(&names, "a.eu.shop.example"), "one label only");
        assert!(!is_served(&names, "shop.example"));
        assert!(!is_served(&names, ".shop.example"));
        assert!(!is_served(&names, "evil.com"));
    }

    #[test]
    fn a_subject_holding_a_comma_cannot_pass_for_another() {
        assert_eq!(escape("a,O=admins"), "a\\,O\\=admins");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("plain-name"), "plain-name");
    }
}
