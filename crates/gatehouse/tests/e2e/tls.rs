//! TLS at the entrance (issue 16): versions and ALPN, SNI, certificates replaced while serving,
//! client certificates (mTLS) and the route policies that read them, the handshake deadline, the
//! HSTS header and the plain-HTTP redirect, and hostile bytes on the TLS port. Every certificate
//! is made here (rcgen), every client is rustls on a real socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway::clock::{Clock, ManualClock};
use gateway::entrance::{CertificateFiles, CertificatesLook};
use http_body_util::{BodyExt, Full};
use hyper::http;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kit::shutdown::Shutdown;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::harness::upstreams::spawn_echo;
use crate::harness::{client, wait_until};

// ---- certificates made for the test ----

/// A certificate authority of the test's, and the files it issued, in the test's folder.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    dir: PathBuf,
}

/// A certificate and its key as a client holds them.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Self {
            ca,
            ca_key,
            dir: dir.to_owned(),
        }
    }

    /// The CA certificate as a PEM file (a client CA bundle).
    fn ca_file(&self, file: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// A server certificate for `names`, as PEM text (certificate, key) and its DER.
    fn server(&self, names: &[&str]) -> (String, String, CertificateDer<'static>) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (
            certificate.pem(),
            key.serialize_pem(),
            certificate.der().clone(),
        )
    }

    /// A server certificate for `names` written as `<stem>.pem` and `<stem>.key`.
    fn server_files(
        &self,
        stem: &str,
        names: &[&str],
    ) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let (cert, key, der) = self.server(names);
        let (cert_path, key_path) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path, der)
    }

    /// A client certificate whose subject is `CN=<common_name>`, with `uri` as a SAN if given.
    fn client(&self, common_name: &str, uri: Option<&str>) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Identity {
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

/// Replaces `path` at once (write aside, then rename), as certificate tools should.
fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

// ---- a gateway with TLS, in this process ----

/// The settle time of the certificate files the gateways here are configured with.
const SETTLE: Duration = Duration::from_secs(3);

/// A gateway on `tls:`, its public (TLS), admin and plain-HTTP redirect listeners on port 0.
/// Its file watch's timer is off (`watch: off` reads the certificate files once an hour): a test
/// takes the looks itself, through `certificates`.
struct TlsGate {
    address: SocketAddr,
    admin_url: String,
    redirect: SocketAddr,
    certificates: CertificateFiles,
    shutdown: Shutdown,
}

impl Drop for TlsGate {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl TlsGate {
    /// `tls` is the `tls:` section's body (indented by two), `rest` what follows `services:`'s
    /// users entry (more services, routes, limits).
    async fn start(dir: &Path, tls: &str, rest: &str) -> Self {
        Self::start_at(Clock::System, dir, tls, rest).await
    }

    /// As [`TlsGate::start`], the gateway reading the time from `clock`.
    async fn start_at(clock: Clock, dir: &Path, tls: &str, rest: &str) -> Self {
        let text = format!(
            "listen: 127.0.0.1:0\n\
             admin_listen: \"127.0.0.1:0\"\n\
             access_log: \"off\"\n\
             store: \"sqlite://{data}/data/gateway.db\"\n\
             watch: off\n\
             watch_settle: {settle}s\n\
             tls:\n{tls}\n\
             {rest}",
            data = dir.display(),
            settle = SETTLE.as_secs(),
        );
        let config = gateway::config::parse(&text, "gateway.yaml", &gateway::config::Vars::new())
            .unwrap_or_else(|error| panic!("{error}\n{text}"));
        let gateway = gateway::Gateway::build_at(config, clock).await.unwrap();
        let certificates = gateway.certificate_files().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redirect = plain.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(gateway.serve_admin(admin, shutdown.clone()));
        tokio::spawn(gateway.serve_redirect(plain, address.port(), shutdown.clone()));
        tokio::spawn(gateway.serve(listener, shutdown.clone()));
        Self {
            address,
            admin_url,
            redirect,
            certificates,
            shutdown,
        }
    }

    async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A gateway section with no routes but the gateway's own endpoints.
fn no_routes() -> String {
    format!(
        "services:\n  users: {{ upstreams: [\"http://{}\"], required: false }}\nroutes: []\n",
        crate::harness::dead_address()
    )
}

fn certificate_entry(cert: &Path, key: &Path) -> String {
    format!(
        "    - {{ cert: \"{}\", key: \"{}\" }}\n",
        cert.display(),
        key.display()
    )
}

// ---- a rustls client ----

/// How a test client dials: whom it trusts, what it offers, who it is.
struct Dial {
    roots: RootCertStore,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    alpn: Vec<&'static [u8]>,
    identity: Option<Identity>,
    server_name: String,
}

impl Dial {
    fn trusting(pki: &Pki) -> Self {
        Self {
            roots: pki.roots(),
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![b"h2", b"http/1.1"],
            identity: None,
            server_name: "localhost".into(),
        }
    }

    fn versions(mut self, versions: &[&'static rustls::SupportedProtocolVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    fn alpn(mut self, alpn: &[&'static [u8]]) -> Self {
        self.alpn = alpn.to_vec();
        self
    }

    fn presenting(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    fn name(mut self, name: &str) -> Self {
        self.server_name = name.into();
        self
    }

    async fn connect(&self, address: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.versions)
            .unwrap()
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::try_from(self.server_name.clone()).unwrap();
        connector.connect(name, tcp).await
    }

    /// One GET over a new connection: the answer's status, version and headers, or why there
    /// was none (the handshake or the request failed).
    async fn get(&self, address: SocketAddr, path: &str) -> Result<Answer, String> {
        let stream = self.connect(address).await.map_err(|e| e.to_string())?;
        let (_, session) = stream.get_ref();
        let negotiated = Negotiated {
            alpn: session.alpn_protocol().map(|p| p.to_vec()),
            version: session.protocol_version(),
        };
        let mut sender = Sender::open(stream).await?;
        let mut answer = sender.get(&self.server_name, path).await?;
        answer.negotiated = Some(negotiated);
        Ok(answer)
    }
}

/// What the handshake settled.
#[derive(Debug)]
struct Negotiated {
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    version: http::Version,
    headers: http::HeaderMap,
    body: Bytes,
    negotiated: Option<Negotiated>,
}

/// An HTTP client on one TLS connection: HTTP/2 when ALPN said h2, else HTTP/1.1.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn open(stream: TlsStream<TcpStream>) -> Result<Self, String> {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(Self::Http2(sender))
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(Self::Http1(sender))
        }
    }

    async fn get(&mut self, host: &str, path: &str) -> Result<Answer, String> {
        let request = http::Request::get(path).header(http::header::HOST, host);
        self.send(request, Bytes::new()).await
    }

    /// Sends `request` (its URI a path) with `body`: over HTTP/2 the URI is made absolute.
    async fn send(
        &mut self,
        request: http::request::Builder,
        body: Bytes,
    ) -> Result<Answer, String> {
        let mut request = request.body(Full::new(body)).unwrap();
        let response = match self {
            Self::Http1(sender) => sender.send_request(request).await,
            Self::Http2(sender) => {
                let host = request.headers()[http::header::HOST]
                    .to_str()
                    .unwrap()
                    .to_owned();
                *request.uri_mut() = format!("https://{host}{}", request.uri()).parse().unwrap();
                sender.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
            negotiated: None,
        })
    }
}

// ---- versions, ALPN, trust ----

#[tokio::test]
async fn a_client_trusting_the_ca_gets_200_over_tls_1_3_and_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let tls = format!("  certificates:\n{}", certificate_entry(&cert, &key));
    let gate = TlsGate::start(dir.path(), &tls, &no_routes()).await;

    let answer = Dial::trusting(&pki)
        .versions(&[&rustls::version::TLS13])
        .get(gate.address, "/healthz")
        .await
        .unwrap();

    assert_eq!(answer.status, 200);
    assert_eq!(answer.version, http::Version::HTTP_2);
    let negotiated = answer.negotiated.unwrap();
    assert_eq!(negotiated.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(negotiated.version, Some(rustls::ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn a_tls_1_2_client_offering_only_http1_gets_200_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let tls = format!("  certificates:\n{}", certificate_entry(&cert, &key));
    let gate = TlsGate::start(dir.path(), &tls, &no_routes()).await;

    let answer = Dial::trusting(&pki)
        .versions(&[&rustls::version::TLS12])
        .alpn(&[b"http/1.1"])
        .get(gate.address, "/healthz")
        .await
        .unwrap();

    assert_eq!(answer.status, 200);
    assert_eq!(answer.version, http::Version::HTTP_11);
    let negotiated = answer.negotiated.unwrap();
    assert_eq!(negotiated.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(negotiated.version, Some(rustls::ProtocolVersion::TLSv1_2));
}

#[tokio::test]
async fn a_gateway_set_to_tls_1_3_refuses_a_client_that_speaks_only_1_2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let tls = format!(
        "  min_version: \"1.3\"\n  certificates:\n{}",
        certificate_entry(&cert, &key)
    );
    let gate = TlsGate::start(dir.path(), &tls, &no_routes()).await;

    let refused = Dial::trusting(&pki)
        .versions(&[&rustls::version::TLS12])
        .get(gate.address, "/healthz")
        .await;
    assert!(refused.is_err(), "a TLS 1.2 client was served: {refused:?}");

    let served = Dial::trusting(&pki).get(gate.address, "/healthz").await;
    assert_eq!(served.unwrap().status, 200, "TLS 1.3 is still served");
}

#[tokio::test]
async fn tls_1_0_and_1_1_cannot_be_configured_and_the_mistake_is_placed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    for version in ["1.0", "1.1", "ssl3"] {
        let text = format!(
            "tls:\n  min_version: \"{version}\"\n  certificates:\n{}{}",
            certificate_entry(&cert, &key),
            no_routes()
        );
        let error = gateway::config::parse(&text, "gateway.yaml", &gateway::config::Vars::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("gateway.yaml:2:") && error.contains(": tls.min_version:"),
            "{version}: {error}"
        );
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let stranger = Pki::new(dir.path(), "stranger");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let tls = format!("  certificates:\n{}", certificate_entry(&cert, &key));
    let gate = TlsGate::start(dir.path(), &tls, &no_routes()).await;

    let error = Dial::trusting(&stranger)
        .connect(gate.address)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("UnknownIssuer"),
        "the client refuses the unknown issuer: {error}"
    );
}

// ---- SNI ----

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_and_the_first_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (api_cert, api_key, api) = pki.server_files("api", &["api.example.test"]);
    let (shop_cert, shop_key, shop) = pki.server_files("shop", &["*.shop.example.test"]);
    let tls = format!(
        "  certificates:\n{}{}",
        certificate_entry(&api_cert, &api_key),
        certificate_entry(&shop_cert, &shop_key)
    );
    let gate = TlsGate::start(dir.path(), &tls, &no_routes()).await;

    let served = |name: &'static str| {
        let dial = Dial::trusting(&pki).name(name);
        async move {
            let stream = dial.connect(gate.address).await;
            stream.map(|s| {
                s.get_ref().1.peer_certificates().unwrap()[0]
                    .clone()
                    .into_owned()
            })
        }
    };
    assert_eq!(served("api.example.test").await.unwrap(), api);
    assert_eq!(served("eu.shop.example.test").await.unwrap(), shop);
    assert_eq!(
        served("EU.Shop.Example.Test").await.unwrap(),
        shop,
        "names compare without case"
    );
    // A name no certificate has gets the first one, which the client then refuses.
    let unknown = served("other.example.test").await;
    assert!(unknown.is_err(), "{unknown:?}");
}

// ---- certificates replaced while serving ----

/// One look at `gate`'s certificate files finds a change that settles `left` from now.
fn assert_settling(gate: &TlsGate, left: Duration, when: &str) {
    let look = gate.certificates.look();
    assert!(
        matches!(look, CertificatesLook::Settling(found) if found == left),
        "{when}: {look:?}, not settling in {left:?}"
    );
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_once_settled_open_ones_finish_and_a_corrupt_one_changes_nothing(
) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, first) = pki.server_files("localhost", &["localhost"]);
    let tls = format!("  certificates:\n{}", certificate_entry(&cert, &key));
    // The test takes the watch's looks and moves the gateway's clock between them, so the
    // renewal's pause between its two files is exactly as long as the scenario says.
    let time = ManualClock::starting_now();
    let gate = TlsGate::start_at(Clock::from(&time), dir.path(), &tls, &no_routes()).await;
    let dial = Dial::trusting(&pki).alpn(&[b"http/1.1"]);
    let mut open = Sender::open(dial.connect(gate.address).await.unwrap())
        .await
        .unwrap();
    assert_eq!(open.get("localhost", "/healthz").await.unwrap().status, 200);
    let served = || async {
        let stream = dial.connect(gate.address).await.ok()?;
        Some(
            stream.get_ref().1.peer_certificates()?[0]
                .clone()
                .into_owned(),
        )
    };

    // A renewal replaces the key, then the certificate a second later: the new key with the old
    // certificate does not load, and is never tried.
    let (new_cert, new_key, second) = pki.server(&["localhost"]);
    assert_ne!(first, second);
    replace(&key, &new_key);
    assert_settling(&gate, SETTLE, "the key replaced alone");
    time.advance(Duration::from_secs(1));
    replace(&cert, &new_cert);
    assert_settling(
        &gate,
        SETTLE,
        "the certificate too: the settle time starts over",
    );
    time.advance(SETTLE - Duration::from_millis(1));
    assert_settling(
        &gate,
        Duration::from_millis(1),
        "a millisecond before the pair settles",
    );
    assert_eq!(
        served().await,
        Some(first),
        "the running certificate until then"
    );

    time.advance(Duration::from_millis(1));
    let look = gate.certificates.look();
    assert!(matches!(look, CertificatesLook::Applied), "{look:?}");
    assert_eq!(
        served().await,
        Some(second.clone()),
        "new connections get the new certificate"
    );
    assert_eq!(
        open.get("localhost", "/healthz").await.unwrap().status,
        200,
        "the connection opened before the change is still served"
    );
    assert_eq!(
        refused_reloads(&gate.metrics().await),
        0,
        "the half-replaced pair was never tried"
    );

    replace(&cert, "-----BEGIN CERTIFICATE-----\ncut short");
    assert_settling(&gate, SETTLE, "a corrupt certificate");
    time.advance(SETTLE);
    let look = gate.certificates.look();
    assert!(matches!(look, CertificatesLook::Refused(_)), "{look:?}");
    assert_eq!(refused_reloads(&gate.metrics().await), 1, "counted");
    let look = gate.certificates.look();
    assert!(
        matches!(look, CertificatesLook::Unchanged),
        "refused once, not at every look: {look:?}"
    );
    assert_eq!(
        served().await,
        Some(second),
        "the running certificate stays"
    );
}

/// `gatehouse_tls_reloads_total{outcome="refused"}` in an exposition (0 before the first).
fn refused_reloads(exposition: &str) -> u64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix("gatehouse_tls_reloads_total{outcome=\"refused\"} "))
        .map_or(0, |count| count.trim().parse().unwrap())
}

// ---- client certificates (mTLS) ----

/// A route for machine clients by certificate, and a public one, both to an echo.
async fn machine_routes(echo: SocketAddr) -> String {
    format!(
        "services:\n  users: {{ upstreams: [\"http://{dead}\"], required: false }}\n  \
         batch: {{ upstreams: [\"http://{echo}\"] }}\n\
         routes:\n  \
         - {{ path: /api/batch, methods: [GET], service: batch, auth: public, client_cert: {{ subject: \"CN=orders-batch\" }} }}\n  \
         - {{ path: /api/spiffe, methods: [GET], service: batch, auth: public, client_cert: {{ uri: [\"spiffe://shop/batch\"] }} }}\n  \
         - {{ path: /api/open, methods: [GET], service: batch, auth: public }}\n",
        dead = crate::harness::dead_address(),
    )
}

#[tokio::test]
async fn with_client_certificates_required_none_or_another_cas_is_refused_and_the_right_one_passes_the_policy(
) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let clients = Pki::new(dir.path(), "clients");
    let other = Pki::new(dir.path(), "other");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let tls = format!(
        "  client_ca: \"{}\"\n  certificates:\n{}",
        clients.ca_file("clients.pem").display(),
        certificate_entry(&cert, &key)
    );
    let echo = spawn_echo(Arc::new(AtomicUsize::new(0))).await;
    let gate = TlsGate::start(dir.path(), &tls, &machine_routes(echo).await).await;

    let anonymous = Dial::trusting(&pki).get(gate.address, "/api/open").await;
    assert!(anonymous.is_err(), "no certificate: {anonymous:?}");
    let foreign = Dial::trusting(&pki)
        .presenting(other.client("orders-batch", None))
        .get(gate.address, "/api/batch")
        .await;
    assert!(foreign.is_err(), "another CA's certificate: {foreign:?}");

    let batch = Dial::trusting(&pki)
        .presenting(clients.client("orders-batch", None))
        .get(gate.address, "/api/batch")
        .await
        .unwrap();
    assert_eq!(batch.status, 200);
    let echoed: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
    assert_eq!(echoed["path"], "/api/batch");

    let someone_else = Dial::trusting(&pki)
        .presenting(clients.client("reports", None))
        .get(gate.address, "/api/batch")
        .await
        .unwrap();
    assert_eq!(
        someone_else.status, 403,
        "a valid certificate the route does not admit"
    );
    let problem: serde_json::Value = serde_json::from_slice(&someone_else.body).unwrap();
    assert_eq!(problem["reason"], "client_cert_refused");
}

#[tokio::test]
async fn with_client_certificates_optional_no_certificate_is_anonymous_and_a_route_that_needs_one_answers_401(
) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let clients = Pki::new(dir.path(), "clients");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let tls = format!(
        "  client_ca: {{ file: \"{}\", mode: optional }}\n  certificates:\n{}",
        clients.ca_file("clients.pem").display(),
        certificate_entry(&cert, &key)
    );
    let echo = spawn_echo(Arc::new(AtomicUsize::new(0))).await;
    let gate = TlsGate::start(dir.path(), &tls, &machine_routes(echo).await).await;
    let anonymous = Dial::trusting(&pki);

    assert_eq!(
        anonymous
            .get(gate.address, "/api/open")
            .await
            .unwrap()
            .status,
        200
    );
    let refused = anonymous.get(gate.address, "/api/batch").await.unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    let problem: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(problem["reason"], "client_cert_missing");

    let by_uri = Dial::trusting(&pki)
        .presenting(clients.client("anything", Some("spiffe://shop/batch")))
        .get(gate.address, "/api/spiffe")
        .await
        .unwrap();
    assert_eq!(
        by_uri.status, 200,
        "the route admits the certificate by its URI SAN"
    );
}

#[tokio::test]
async fn a_route_asking_for_a_client_certificate_needs_a_client_ca_and_bad_files_are_named_where_given(
) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let (_, other_key, _) = pki.server_files("other", &["other"]);
    let text = format!(
        "tls:\n  certificates:\n{}{}\
         services:\n  users: {{ upstreams: [\"http://127.0.0.1:9\"] }}\n\
         routes:\n  - {{ path: /a, methods: [GET], service: users, auth: public, client_cert: {{ subject: \"CN=x\" }} }}\n",
        certificate_entry(&cert, &other_key),
        certificate_entry(&dir.path().join("missing.pem"), &key),
    );
    let error = gateway::config::parse(&text, "gateway.yaml", &gateway::config::Vars::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tls.certificates[0].key:"),
        "a key that is not the certificate's: {error}"
    );
    assert!(
        error.contains("tls.certificates[1].cert:") && error.contains("cannot read"),
        "{error}"
    );
    assert!(
        error.contains("routes[0].client_cert: needs tls.client_ca"),
        "{error}"
    );
}

// ---- the handshake deadline, hostile bytes ----

#[tokio::test]
async fn a_handshake_that_never_finishes_is_closed_at_the_deadline_and_holds_its_addresss_slot_meanwhile(
) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost"]);
    let tls = format!("  certificates:\n{}", certificate_entry(&cert, &key));
    // Long enough for the test to see the slots held on a busy machine; the wait is polled.
    let limits = "limits: { header_read_timeout: 5s, max_connections_per_ip: 2 }\n";
    let gate = TlsGate::start(dir.path(), &tls, &format!("{limits}{}", no_routes())).await;

    // Two clients that open a connection and say half a hello, then nothing.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(gate.address).await.unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        stalled.push(tcp);
    }
    let dial = Dial::trusting(&pki);
    wait_until(
        "the stalled handshakes hold the address's two slots",
        || async { dial.get(gate.address, "/healthz").await.is_err() },
    )
    .await;

    for mut tcp in stalled {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buffer))
            .await
            .expect("the stalled handshake was never closed");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed, not answered: {read:?}"
        );
    }
    wait_until(
        "a handshake gets through once the stalled ones are closed",
        || async {
            dial.get(gate.address, "/healthz")
                .await
                .is_ok_and(|a| a.status == 200)
        },
    )
    .await;
}

#[tokio::test]
async fn garbage_plain_http_and_odd_names_on_the_tls_port_are_closed_and_the_port_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost", "127.0.0.1"]);
    let tls = format!("  certificates:\n{}", certificate_entry(&cert, &key));
    let gate = TlsGate::start(dir.path(), &tls, &no_routes()).await;

    let hostile: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[
            0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xfc, 0x03, 0x03,
        ],
        &[0x16, 0x03, 0x03, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00],
        &[0u8; 4096],
    ];
    for bytes in hostile {
        let mut tcp = TcpStream::connect(gate.address).await.unwrap();
        let _ = tcp.write_all(bytes).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer)).await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plain HTTP is never spoken on the TLS port: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Names a client may send: long, unknown, an address (rustls sends no SNI for it).
    let long = format!("{}.example.test", "a".repeat(60));
    for name in [long.as_str(), "xn--nxasmq6b.test", "127.0.0.1"] {
        let _ = Dial::trusting(&pki)
            .name(name)
            .get(gate.address, "/healthz")
            .await;
    }
    let answer = Dial::trusting(&pki)
        .get(gate.address, "/healthz")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "the port serves on");
}

// ---- HSTS and the plain-HTTP redirect ----

#[tokio::test]
async fn answers_over_tls_carry_hsts_and_plain_http_is_redirected_to_https_for_served_hosts_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entrance");
    let (cert, key, _) = pki.server_files("localhost", &["localhost", "*.shop.example.test"]);
    let tls = format!(
        "  certificates:\n{}  hsts: {{ max_age: 365d, include_subdomains: true }}\n  redirect_http: 127.0.0.1:0\n",
        certificate_entry(&cert, &key)
    );
    let gate = TlsGate::start(dir.path(), &tls, &no_routes()).await;

    let answer = Dial::trusting(&pki)
        .get(gate.address, "/healthz")
        .await
        .unwrap();
    assert_eq!(
        answer.headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = |host: &'static str, path: &'static str| {
        let request = plain
            .get(format!("http://{}{path}", gate.redirect))
            .header("host", host);
        async move { request.send().await.unwrap() }
    };
    let moved = redirect("localhost:8080", "/api/orders/7?page=2&q=a%20b").await;
    assert_eq!(moved.status(), 308);
    assert_eq!(
        moved.headers()["location"],
        format!(
            "https://localhost:{}/api/orders/7?page=2&q=a%20b",
            gate.address.port()
        )
        .as_str()
    );
    assert!(
        moved.headers().get("strict-transport-security").is_none(),
        "HSTS is never sent over plain HTTP"
    );
    let wildcard = redirect("EU.shop.example.test", "//evil.example/x").await;
    assert_eq!(
        wildcard.headers()["location"],
        format!(
            "https://eu.shop.example.test:{}//evil.example/x",
            gate.address.port()
        )
        .as_str(),
        "the host is the served one whatever the path says"
    );
    for host in [
        "evil.example",
        "localhost.evil.example",
        "localhost@evil.example",
        "a.eu.shop.example.test",
    ] {
        let refused = redirect(host, "/").await;
        assert!(
            refused.status() == 421 || refused.status() == 400,
            "{host}: {}",
            refused.status()
        );
        assert!(refused.headers().get("location").is_none(), "{host}");
    }
}

// ---- gatehouse up --tls ----

#[tokio::test]
async fn up_with_tls_serves_https_with_a_localhost_certificate_made_once_and_the_services_still_verify_identities(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || gatehouse::up::UpOptions {
        host: "127.0.0.1".parse().unwrap(),
        gateway_port: 0,
        users_port: 0,
        orders_port: 0,
        clock_port: 0,
        admin_port: Some(0),
        data_dir: data.clone(),
        config: None,
        clock: gateway::clock::Clock::System,
        tls: true,
    };
    let shutdown = Shutdown::new();
    let running = gatehouse::up::start(start(), shutdown.clone())
        .await
        .unwrap();
    let ca = running.trust.clone().expect("the CA to trust is named");
    let mut roots = RootCertStore::empty();
    roots
        .add(rustls_pki_types::pem::PemObject::from_pem_file(&ca).unwrap())
        .unwrap();
    let dial = Dial {
        roots,
        versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
        alpn: vec![b"h2", b"http/1.1"],
        identity: None,
        server_name: "localhost".into(),
    };
    let stream = dial.connect(running.gateway).await.unwrap();
    let served = stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let mut https = Sender::open(stream).await.unwrap();

    let login = http::Request::post("/api/login")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json");
    let signed_in = https
        .send(
            login,
            Bytes::from_static(br#"{"username":"admin","password":"a"}"#),
        )
        .await
        .unwrap();
    assert_eq!(signed_in.status, 200, "{:?}", signed_in.body);
    let tokens: serde_json::Value = serde_json::from_slice(&signed_in.body).unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let time = http::Request::get("/api/time")
        .header(http::header::HOST, "localhost")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    let answer = https.send(time, Bytes::new()).await.unwrap();
    assert_eq!(
        answer.status, 200,
        "the clock service verified the identity: {:?}",
        answer.body
    );

    drop(https);
    shutdown.trigger();
    running.wait().await.unwrap();
    let again = Shutdown::new();
    let restarted = gatehouse::up::start(start(), again.clone()).await.unwrap();
    let stream = dial.connect(restarted.gateway).await.unwrap();
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0],
        served,
        "the certificate made at the first start is reused"
    );
    again.trigger();
    restarted.wait().await.unwrap();
}
