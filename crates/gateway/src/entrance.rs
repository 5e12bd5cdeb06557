//! The entrance over TLS (`tls:`): the certificates loaded at start and kept current while
//! serving, `Strict-Transport-Security` on every answer over TLS, and the plain-HTTP listener that
//! sends clients to HTTPS.
//!
//! The certificate files are watched like the configuration file (read every `watch`, applied
//! once they stayed the same for `watch_settle`, and on SIGHUP), but apart from it: renewing a
//! certificate is replacing its files, not editing the configuration. The settle time is what
//! lets a certificate and its key, replaced one after the other, both land before either is
//! loaded; it is measured on the app's [`Clock`](crate::clock::Clock) between two looks, by the
//! rules the configuration watch follows (`settle`): the watch looks again when it ends, and a
//! test takes the looks itself ([`CertificateFiles::look`]) and moves a manual clock between
//! them. A new set applies to new connections; open ones keep the session they negotiated. A
//! set that does not load (a key that is not the certificate's, a file cut short) is refused,
//! logged and counted in `gatehouse_tls_reloads_total{outcome="refused"}`, and the running
//! certificates stay. Which files (and the versions, the client CA mode) are read at start:
//! changing `tls:` in the file needs a restart, as `/readyz` reports.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use hyper::body::Incoming;
use kit::shutdown::Shutdown;
use kit::tls::{Acceptor, CertificateWatch, Looked, TlsError};
use kit::Problem;

use crate::app::App;
use crate::config::TlsSettings;
use crate::reload::{hangups, next_hangup};
use crate::settle::{next_look, Settled, Settling};

/// How often the certificate files are read when the configuration's `watch` is off: they still
/// reload on SIGHUP, and a renewal must never wait for a restart.
const WATCH_WHEN_OFF: Duration = Duration::from_secs(3600);

/// The TLS of the public listener, loaded.
pub struct Entrance {
    pub acceptor: Acceptor,
    watch: Arc<CertificateWatch>,
    /// A change of the files waiting to settle (each file's bytes, in the watch's order).
    settling: Arc<Mutex<Settling<Vec<Vec<u8>>>>>,
    hsts: Option<HeaderValue>,
}

impl Entrance {
    /// Loads the certificates `settings` name (checked at load already; a file changed since
    /// fails the start here, naming it).
    pub fn open(settings: &TlsSettings) -> Result<Self, TlsError> {
        let loaded = kit::tls::load(&settings.files)?;
        let acceptor = Acceptor::new(Arc::clone(&loaded.server));
        let watch = CertificateWatch::new(settings.files.clone(), &loaded, acceptor.clone());
        Ok(Self {
            acceptor,
            watch: Arc::new(watch),
            settling: Arc::new(Mutex::new(Settling::new("the TLS certificate files"))),
            hsts: settings.hsts.clone(),
        })
    }

    /// The handler of the certificate files for the gateway `app`: the watch's looks, or a
    /// test's.
    pub fn files(&self, app: App) -> CertificateFiles {
        CertificateFiles {
            app,
            watch: Arc::clone(&self.watch),
            settling: Arc::clone(&self.settling),
        }
    }

    /// The public listener's handler: `inner`, with HSTS on its answers when configured.
    pub fn secure<H: kit::listener::Handler>(&self, inner: H) -> Secure<H> {
        Secure {
            inner,
            hsts: self.hsts.clone(),
        }
    }

    /// Keeps the certificates current until `shutdown` (see the module docs). SIGHUP is taken
    /// over at once, before the returned future first runs.
    pub fn watch(&self, app: App, shutdown: Shutdown) -> impl Future<Output = ()> + Send {
        let files = self.files(app);
        let mut hangups = hangups();
        async move {
            // The settle time left for a change the last look found.
            let mut settling: Option<Duration> = None;
            loop {
                let every = files.app.config().watch.unwrap_or(WATCH_WHEN_OFF);
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = next_hangup(&mut hangups) => files.reload("SIGHUP"),
                    () = tokio::time::sleep(next_look(every, settling)) => {
                        settling = match files.look() {
                            CertificatesLook::Settling(left) => Some(left),
                            _ => None,
                        };
                    }
                }
            }
        }
    }
}

/// The certificate files of a running gateway, as its watch looks at them.
#[derive(Clone)]
pub struct CertificateFiles {
    app: App,
    watch: Arc<CertificateWatch>,
    settling: Arc<Mutex<Settling<Vec<Vec<u8>>>>>,
}

/// What one look at the certificate files found.
#[derive(Debug)]
pub enum CertificatesLook {
    /// The files in force, or the set refused last: nothing to do.
    Unchanged,
    /// A change, not yet the same for `watch_settle`: loaded by a look this much later (on the
    /// app's clock) if it stays so.
    Settling(Duration),
    /// A settled change, now served to new connections.
    Applied,
    /// A settled change that does not load; the running certificates stay.
    Refused(TlsError),
}

impl CertificateFiles {
    /// One look, as the watch takes one: a change is loaded once a look finds the same files
    /// `watch_settle` after a look first found them, on the app's clock; a set refused once is
    /// not tried again until the files change. An unreadable file (being replaced) counts as
    /// no change, and the change pending before it starts over.
    pub fn look(&self) -> CertificatesLook {
        let contents = self.watch.changed();
        let now = self.app.clock.monotonic_ms();
        let settle = self.app.config().watch_settle;
        let contents = {
            let mut settling = self.settling.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(contents) = contents else {
                settling.unchanged();
                return CertificatesLook::Unchanged;
            };
            match settling.found(contents, now, settle) {
                Settled::Left(left) => return CertificatesLook::Settling(left),
                Settled::Now(contents) => contents,
            }
        };
        let looked = self.watch.apply(contents);
        report(&self.app, "files changed", &looked);
        match looked {
            Looked::Unchanged => CertificatesLook::Unchanged,
            Looked::Applied => CertificatesLook::Applied,
            Looked::Refused(error) => CertificatesLook::Refused(error),
        }
    }

    /// Loads the files now, unsettled (SIGHUP: whoever sent it says they are in place).
    fn reload(&self, cause: &str) {
        let looked = self.watch.look();
        report(&self.app, cause, &looked);
    }
}

fn report(app: &App, cause: &str, looked: &Looked) {
    match looked {
        Looked::Unchanged => {}
        Looked::Applied => {
            app.observe.gateway.tls_reload("applied");
            tracing::info!(cause, "TLS certificates reloaded; new connections get them");
        }
        Looked::Refused(error) => {
            app.observe.gateway.tls_reload("refused");
            tracing::error!(cause, %error, "TLS certificates refused; the running ones stay");
        }
    }
}

/// A handler whose answers carry `Strict-Transport-Security` (when configured): only ever on
/// the TLS listener, since a browser ignores the header over plain HTTP (RFC 6797 §8.1).
#[derive(Clone)]
pub struct Secure<H> {
    inner: H,
    hsts: Option<HeaderValue>,
}

impl<H> Secure<H> {
    /// `inner` as it is, for a listener without TLS.
    pub fn plain(inner: H) -> Self {
        Self { inner, hsts: None }
    }
}

impl<H: kit::listener::Handler> kit::listener::Handler for Secure<H> {
    fn handle(
        self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static {
        let answer = self.inner.handle(request, peer);
        let hsts = self.hsts;
        async move {
            let mut response = answer.await;
            if let Some(hsts) = hsts {
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            response
        }
    }
}

/// Where the plain-HTTP listener sends clients: the hosts the certificates are for, on the
/// HTTPS listener's port.
struct RedirectTarget {
    names: Vec<String>,
    https_port: u16,
}

/// The plain-HTTP listener's application: every request → 308 to the same path and query over
/// HTTPS, on a host the certificates are for. Any other Host answers 421: the redirect never
/// sends a client to a host the gateway does not serve, so it cannot be an open redirect.
pub fn redirect_router(settings: &TlsSettings, https_port: u16) -> Router {
    let target = Arc::new(RedirectTarget {
        names: settings.names.clone(),
        https_port,
    });
    Router::new().fallback(redirect).with_state(target)
}

async fn redirect(State(target): State<Arc<RedirectTarget>>, request: Request) -> Response {
    let authority = request.uri().authority().cloned().or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<http::uri::Authority>().ok())
    });
    let Some(authority) = authority else {
        return Problem::new(StatusCode::BAD_REQUEST)
            .with_detail("A Host header naming this gateway is required.")
            .into_response();
    };
    let host = authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if !kit::tls::is_served(&target.names, bare) {
        return Problem::new(StatusCode::MISDIRECTED_REQUEST)
            .with_detail("This gateway has no certificate for that host; it redirects only to hosts it serves over HTTPS.")
            .into_response();
    }
    let port = match target.https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    // `OPTIONS *` and the like have no path to keep.
    let path = if path.starts_with('/') { path } else { "/" };
    let location = format!("https://{}{port}{path}", host.to_ascii_lowercase());
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => Problem::new(StatusCode::BAD_REQUEST)
            .with_detail("The request target cannot be redirected.")
            .into_response(),
    }
}
