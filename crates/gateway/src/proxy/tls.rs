//! How the gateway speaks TLS to a service's `https://` instances: the certificates it trusts
//! (the system's roots, or the service's own CA bundle instead), the client certificate it
//! presents when the service asks for one (mTLS), and the name it expects the instance's
//! certificate to carry.
//!
//! A [`TlsClient`] is made once when the configuration is loaded, so a missing or broken file is
//! a configuration mistake at its field rather than a failing request later, and its rustls
//! configurations are shared by every connection to every instance of the service.
//! rustls' safe defaults hold: TLS 1.2 and 1.3 only, certificates checked against the roots and
//! the name (and their validity dates), no option to turn verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A service's `tls:` as written, the files not yet read.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// A PEM bundle of the certificate authorities to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// The client certificate chain (PEM) and its private key, for services that require one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name the instances' certificates must carry, when it is not their host.
    pub server_name: Option<String>,
}

/// Which of the `tls:` fields a [`TlsSetupError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    Ca,
    ClientCert,
    ClientKey,
    ServerName,
    /// No `tls.ca` was given and the system's roots could not be read.
    SystemRoots,
}

/// Why a service's TLS client could not be made, and at which field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TlsSetupError {
    pub field: TlsField,
    pub message: String,
}

impl TlsSetupError {
    fn at(field: TlsField, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The application protocol a connection asks for in its TLS handshake (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`: pooled HTTP/1.1 connections and WebSocket upgrades.
    Http1,
    /// `h2`: the instance must agree to it, or the connection is refused.
    Http2,
}

/// The TLS side of a service's connections.
pub struct TlsClient {
    /// Offers ALPN `http/1.1`.
    http1: Arc<ClientConfig>,
    /// Offers ALPN `h2`.
    http2: Arc<ClientConfig>,
    /// The name the instances' certificates must carry, when it is not their host.
    server_name: Option<ServerName<'static>>,
    /// SHA-256 of the files it was made from: a reload that changed one makes a new client, and
    /// the service's connections are opened again with it.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key; the fingerprint is enough to tell two apart in a log.
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("fingerprint", &hex(&self.fingerprint[..8]))
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.server_name == other.server_name
    }
}

impl TlsClient {
    /// Reads the files `files` names and makes the client; each failure names its field.
    pub fn build(files: &TlsFiles) -> Result<Self, TlsSetupError> {
        let mut digest = Sha256::new();
        let roots = match &files.ca {
            Some(path) => {
                let pem = read(path, TlsField::Ca, &mut digest)?;
                Arc::new(ca_bundle(&pem)?)
            }
            None => system_roots()?,
        };
        let client_auth = match (&files.client_cert, &files.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(&read(cert, TlsField::ClientCert, &mut digest)?)
                    .map_err(|message| TlsSetupError::at(TlsField::ClientCert, message))?;
                let key =
                    PrivateKeyDer::from_pem_slice(&read(key, TlsField::ClientKey, &mut digest)?)
                        .map_err(|error| {
                            TlsSetupError::at(
                                TlsField::ClientKey,
                                format!("no private key in PEM: {error}"),
                            )
                        })?;
                Some((chain, key))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsSetupError::at(
                    TlsField::ClientCert,
                    "a client certificate needs its key: give `client_key` too",
                ))
            }
            (None, Some(_)) => {
                return Err(TlsSetupError::at(
                    TlsField::ClientKey,
                    "a client key needs its certificate: give `client_cert` too",
                ))
            }
        };
        let server_name = files
            .server_name
            .as_deref()
            .map(|name| {
                server_name(name)
                    .map_err(|message| TlsSetupError::at(TlsField::ServerName, message))
            })
            .transpose()?;
        if let Some(name) = &files.server_name {
            digest.update(name.as_bytes());
        }

        // ring, explicitly: the workspace's one crypto backend, whatever a process default says.
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|error| TlsSetupError::at(TlsField::Ca, error.to_string()))?
                .with_root_certificates(roots);
        let config = match client_auth {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|error| {
                TlsSetupError::at(
                    TlsField::ClientKey,
                    format!("the key does not go with the client certificate: {error}"),
                )
            })?,
            None => builder.with_no_client_auth(),
        };
        let with_alpn = |protocol: &[u8]| {
            let mut config = config.clone();
            config.alpn_protocols = vec![protocol.to_vec()];
            Arc::new(config)
        };
        Ok(Self {
            http1: with_alpn(b"http/1.1"),
            http2: with_alpn(b"h2"),
            server_name,
            fingerprint: digest.finalize().into(),
        })
    }

    /// The name an instance at `host` must prove: the configured `server_name`, else the host
    /// itself (a DNS name, sent as SNI, or an IP address, checked against the certificate's IP
    /// names and never sent).
    pub fn name_for(&self, host: &str) -> std::io::Result<ServerName<'static>> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => server_name(host).map_err(std::io::Error::other),
        }
    }

    /// The TLS handshake on `tcp`, asking for `alpn`: fails unless the instance proves `name` with
    /// a certificate from a trusted root (and, for [`Alpn::Http2`], agrees to `h2`).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
        alpn: Alpn,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let config = match alpn {
            Alpn::Http1 => &self.http1,
            Alpn::Http2 => &self.http2,
        };
        let stream = TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await?;
        if alpn == Alpn::Http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::other(
                "the instance did not agree to HTTP/2 in the TLS handshake (ALPN h2); \
                 set `protocol: http1` or enable HTTP/2 on it",
            ));
        }
        Ok(stream)
    }
}

fn read(path: &Path, field: TlsField, digest: &mut Sha256) -> Result<Vec<u8>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|error| {
        TlsSetupError::at(field, format!("cannot read {}: {error}", path.display()))
    })?;
    digest.update((bytes.len() as u64).to_be_bytes());
    digest.update(&bytes);
    Ok(bytes)
}

/// Every certificate in a PEM text; none is a mistake.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("not a PEM certificate file: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".to_owned());
    }
    Ok(certificates)
}

/// The roots of a CA bundle: every certificate in it must be usable as one.
fn ca_bundle(pem: &[u8]) -> Result<RootCertStore, TlsSetupError> {
    let at = |message: String| TlsSetupError::at(TlsField::Ca, message);
    let mut roots = RootCertStore::empty();
    for (n, certificate) in certificates(pem).map_err(at)?.into_iter().enumerate() {
        roots.add(certificate).map_err(|error| {
            at(format!(
                "certificate {} is not usable as a root: {error}",
                n + 1
            ))
        })?;
    }
    Ok(roots)
}

/// The operating system's trusted roots, read once for the whole process (they change with
/// the system's packages, not while the gateway runs).
fn system_roots() -> Result<Arc<RootCertStore>, TlsSetupError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's root certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::info!(
                    added,
                    ignored,
                    "some of the system's root certificates are not usable"
                );
            }
            if added == 0 {
                return Err("no root certificate found in the system's trust store; \
                            name the CA that signs the instances' certificates in `tls.ca`"
                    .to_owned());
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(|message| TlsSetupError::at(TlsField::SystemRoots, message))
}

/// A DNS name or an IP address (an authority's `[::1]` is the address `::1`).
fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("{name:?} is neither a DNS name nor an IP address"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a certificate for `name` it signed, in PEM files under `dir`: the CA's, the
    /// certificate's and its key's paths.
    pub(crate) fn files_in(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let write = |file: &str, text: String| {
            let path = dir.join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        (
            write("ca.pem", ca.pem()),
            write("client.pem", cert.pem()),
            write("client.key", key.serialize_pem()),
        )
    }

    fn failure(files: &TlsFiles) -> TlsSetupError {
        match TlsClient::build(files) {
            Ok(client) => panic!("built {client:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_ca_bundle_and_a_client_certificate_make_a_client() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = files_in(dir.path(), "client.test");
        let files = TlsFiles {
            ca: Some(ca),
            client_cert: Some(cert),
            client_key: Some(key),
            server_name: Some("api.internal".to_owned()),
        };

        let client = TlsClient::build(&files).unwrap();

        assert_eq!(
            client.name_for("10.0.0.7").unwrap(),
            ServerName::try_from("api.internal").unwrap(),
            "the configured name wins over the host"
        );
        assert_eq!(
            client,
            TlsClient::build(&files).unwrap(),
            "same files, same client"
        );
    }

    #[test]
    fn each_broken_file_is_named_by_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = files_in(dir.path(), "client.test");
        let other_key = dir.path().join("other.key");
        std::fs::write(
            &other_key,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let files = |ca: &Path, cert: &Path, key: &Path| TlsFiles {
            ca: Some(ca.to_owned()),
            client_cert: Some(cert.to_owned()),
            client_key: Some(key.to_owned()),
            server_name: None,
        };
        let missing = dir.path().join("missing.pem");

        // One line a case: the files, the field blamed, what its message says, what is wrong.
        #[rustfmt::skip]
        let cases = [
            (files(&missing, &cert, &key), TlsField::Ca, "cannot read", "a CA file that is not there"),
            (files(&not_pem, &cert, &key), TlsField::Ca, "no PEM certificate", "a CA file without a certificate"),
            (files(&ca, &not_pem, &key), TlsField::ClientCert, "no PEM certificate", "a client certificate file without one"),
            (files(&ca, &cert, &not_pem), TlsField::ClientKey, "no private key", "a key file without a key"),
            (files(&ca, &cert, &other_key), TlsField::ClientKey, "does not go with", "a key of another certificate"),
            (TlsFiles { client_cert: None, ..files(&ca, &cert, &key) }, TlsField::ClientKey, "needs its certificate", "a key alone"),
            (TlsFiles { client_key: None, ..files(&ca, &cert, &key) }, TlsField::ClientCert, "needs its key", "a certificate alone"),
            (TlsFiles { server_name: Some("not a name!".to_owned()), ..files(&ca, &cert, &key) }, TlsField::ServerName, "neither a DNS name", "a server name that is no name"),
        ];
        for (files, field, says, case) in cases {
            let error = failure(&files);
            assert_eq!(error.field, field, "{case}: {error}");
            assert!(error.message.contains(says), "{case}: {error}");
        }
    }

    #[test]
    fn a_changed_file_makes_a_different_client() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, _) = files_in(dir.path(), "a.test");
        let files = TlsFiles {
            ca: Some(ca.clone()),
            ..TlsFiles::default()
        };
        let before = TlsClient::build(&files).unwrap();
        let other = tempfile::tempdir().unwrap();
        let (other_ca, _, _) = files_in(other.path(), "a.test");
        std::fs::copy(other_ca, &ca).unwrap();

        assert_ne!(before, TlsClient::build(&files).unwrap());
    }

    #[test]
    fn hosts_become_dns_names_or_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let client = TlsClient::build(&TlsFiles {
            ca: Some(files_in(dir.path(), "x").0),
            ..TlsFiles::default()
        })
        .unwrap();
        assert!(matches!(
            client.name_for("api.example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            client.name_for("[::1]"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            client.name_for("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
    }
}
