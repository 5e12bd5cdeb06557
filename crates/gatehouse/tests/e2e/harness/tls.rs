//! TLS for the upstream tests: certificate authorities made in the test ([`TestCa`]), and an
//! HTTPS (or h2c) instance ([`TlsInstance`]) that answers with what it saw, counts its
//! connections, and may require a client certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Barrier;

/// A certificate authority of the test's, its certificate in `ca.pem` under its directory.
pub struct TestCa {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    pub dir: tempfile::TempDir,
}

/// A certificate and its key, in PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gatehouse test CA");
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Self { key, cert, dir }
    }

    /// The CA's own certificate (PEM): what a client that trusts it names.
    pub fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this CA, written as
    /// `file.pem` and `file.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// How a [`TlsInstance`] listens.
pub struct Listening<'a> {
    /// Its certificate; `None`: plain HTTP/2 (h2c, prior knowledge).
    pub cert: Option<&'a Issued>,
    /// Clients must present a certificate from this CA.
    pub client_ca: Option<&'a Path>,
    /// Each request waits until this many are in flight at once before it is answered: only a
    /// client that sends them side by side gets answers.
    pub together: usize,
    /// Offers only `http/1.1` in the TLS handshake.
    pub http1_only: bool,
}

impl Default for Listening<'_> {
    fn default() -> Self {
        Self {
            cert: None,
            client_ca: None,
            together: 1,
            http1_only: false,
        }
    }
}

/// An instance that answers every request with its HTTP version, path and headers as JSON.
pub struct TlsInstance {
    pub address: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsInstance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsInstance {
    pub async fn start(listening: Listening<'_>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = listening.cert.map(|cert| {
            let chain = CertificateDer::pem_file_iter(&cert.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .unwrap();
            let builder = match listening.client_ca {
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                        roots.add(cert.unwrap()).unwrap();
                    }
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .unwrap();
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_single_cert(chain, key).unwrap();
            config.alpn_protocols = if listening.http1_only {
                vec![b"http/1.1".to_vec()]
            } else {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            };
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let barrier = Arc::new(Barrier::new(listening.together));
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let answer = service_fn(move |request: Request<Incoming>| {
                        let barrier = Arc::clone(&barrier);
                        async move {
                            barrier.wait().await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                seen(&request).to_string(),
                            ))))
                        }
                    });
                    // HTTP/1.1 or HTTP/2, whichever the client speaks (ALPN, or the h2 preface).
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            // A client the handshake refuses simply goes away.
                            if let Ok(stream) = acceptor.accept(socket).await {
                                let _ = server.serve_connection(TokioIo::new(stream), answer).await;
                            }
                        }
                        None => {
                            let _ = server.serve_connection(TokioIo::new(socket), answer).await;
                        }
                    }
                });
            }
        });
        Self {
            address,
            connections,
            task,
        }
    }

    /// TCP connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// What an instance tells about a request it got.
fn seen(request: &Request<Incoming>) -> Value {
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                json!(value.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    json!({
        "version": format!("{:?}", request.version()),
        "path": request.uri().path(),
        "authority": request.uri().authority().map(|a| a.to_string()),
        "headers": headers,
    })
}
