//! A service's `https://` instances and its `tls:` (issue 16): a service's instances are all
//! `http://` or all `https://`; `tls:` belongs to `https://` ones; a client certificate comes
//! with its key. Every file is read here, at load, so a missing or broken one is a mistake at
//! its field (`tls.ca`, `tls.client_cert`, `tls.client_key`) rather than failing requests later.

use std::path::PathBuf;
use std::sync::Arc;

use kit::config::{Mistakes, Position, Spanned};

use crate::config::schema;
use crate::config::values::{NonEmpty, Upstream};
use crate::proxy::tls::{TlsClient, TlsField, TlsFiles};

/// The TLS client of a service whose instances are `https://` (they all must be, or none);
/// `None` for `http://` ones. Every file is read now, so a missing or broken one is a mistake at
/// its field rather than a failing request later.
pub(super) fn client(
    field: &str,
    service: &schema::Service,
    mistakes: &mut Mistakes,
) -> Option<Arc<TlsClient>> {
    let https = |upstream: &Spanned<Upstream>| upstream.0.scheme_str() == Some("https");
    let first = service.upstreams.first()?;
    for (i, upstream) in service.upstreams.iter().enumerate() {
        if https(upstream) != https(first) {
            mistakes.at(
                format!("{field}.upstreams[{i}]"),
                upstream,
                "a service's instances are all http:// or all https://, not both",
            );
        }
    }
    let written = service.tls.as_ref();
    if !https(first) {
        if let Some(tls) = written {
            mistakes.at(
                format!("{field}.tls"),
                tls,
                "only https:// instances use TLS: make the upstreams https:// or remove `tls`",
            );
        }
        return None;
    }
    let path = |value: Option<&Spanned<NonEmpty>>| value.map(|v| PathBuf::from(&v.0));
    let mut files = TlsFiles {
        ca: path(written.and_then(|tls| tls.ca.as_ref())),
        client_cert: path(written.and_then(|tls| tls.client_cert.as_ref())),
        client_key: path(written.and_then(|tls| tls.client_key.as_ref())),
        server_name: written
            .and_then(|tls| tls.server_name.as_ref())
            .map(|name| name.0.clone()),
    };
    // An unpaired certificate or key is its own mistake; the other files are still checked.
    if let Some(tls) = written {
        match (&tls.client_cert, &tls.client_key) {
            (Some(cert), None) => mistakes.at(
                format!("{field}.tls.client_cert"),
                cert,
                "a client certificate needs its key: give `client_key` too",
            ),
            (None, Some(key)) => mistakes.at(
                format!("{field}.tls.client_key"),
                key,
                "a client key needs its certificate: give `client_cert` too",
            ),
            _ => {}
        }
        if files.client_cert.is_none() || files.client_key.is_none() {
            files.client_cert = None;
            files.client_key = None;
        }
    }
    match TlsClient::build(&files) {
        Ok(client) => Some(Arc::new(client)),
        Err(error) => {
            let written_at = |field: &str, name: &str, value: Option<&Spanned<NonEmpty>>| {
                let at = value.and_then(|v| Position::of(v.span()));
                (format!("{field}.tls.{name}"), at)
            };
            let (at, span) = match (error.field, written) {
                (TlsField::Ca, Some(tls)) => written_at(field, "ca", tls.ca.as_ref()),
                (TlsField::ClientCert, Some(tls)) => {
                    written_at(field, "client_cert", tls.client_cert.as_ref())
                }
                (TlsField::ClientKey, Some(tls)) => {
                    written_at(field, "client_key", tls.client_key.as_ref())
                }
                (TlsField::ServerName, Some(tls)) => {
                    written_at(field, "server_name", tls.server_name.as_ref())
                }
                _ => (
                    format!("{field}.upstreams"),
                    Position::of(service.upstreams.span()),
                ),
            };
            mistakes.push(at, span, error.message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, UpstreamProtocol, Vars};
    use crate::proxy::tls::tests::files_in;

    fn mistakes_of(text: &str) -> String {
        parse(text, "gateway.yaml", &Vars::new())
            .unwrap_err()
            .to_string()
    }

    /// The mistake reported for `field`, with its place: `gateway.yaml:line:column: field: …`.
    fn line_naming<'a>(error: &'a str, field: &str) -> &'a str {
        error
            .lines()
            .find(|line| line.contains(&format!(": {field}: ")))
            .unwrap_or_else(|| panic!("no mistake at {field} in:\n{error}"))
    }

    #[test]
    fn an_https_service_gets_its_tls_client_and_the_protocol_it_asks_for() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = files_in(dir.path(), "gateway.test");
        let text = format!(
            "services:\n  \
             users: {{ upstreams: [\"http://10.0.0.1:8080\"] }}\n  \
             secure: {{ upstreams: [\"https://api.internal\"], protocol: http2, tls: {{ ca: \"{}\", client_cert: \"{}\", client_key: \"{}\", server_name: api.example.com }} }}\n\
             routes: []\n",
            ca.display(),
            cert.display(),
            key.display()
        );

        let config = parse(&text, "gateway.yaml", &Vars::new()).unwrap();

        let plain = &config.services["users"];
        assert!(plain.tls.is_none());
        assert_eq!(plain.protocol, UpstreamProtocol::Http1, "the default");
        let secure = &config.services["secure"];
        assert!(secure.tls.is_some());
        assert_eq!(secure.protocol, UpstreamProtocol::Http2);
    }

    #[test]
    fn every_tls_mistake_is_reported_at_its_place_in_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, key) = files_in(dir.path(), "gateway.test");
        let missing = dir.path().join("missing.pem");
        let text = format!(
            "services:\n  \
             a: {{ upstreams: [\"https://a.internal\"], tls: {{ ca: \"{missing}\" }} }}\n  \
             b: {{ upstreams: [\"https://b.internal\"], tls: {{ ca: \"{ca}\", client_key: \"{key}\" }} }}\n  \
             c: {{ upstreams: [\"http://c.internal\"], tls: {{ ca: \"{ca}\" }} }}\n  \
             d: {{ upstreams: [\"https://d.internal\", \"http://d2.internal\"], tls: {{ ca: \"{ca}\" }} }}\n  \
             e: {{ upstreams: [\"https://e.internal\"], tls: {{ ca: \"{ca}\", server_name: \"no such name!\" }} }}\n\
             routes: []\n",
            missing = missing.display(),
            ca = ca.display(),
            key = key.display(),
        );

        let error = mistakes_of(&text);

        for (field, line, says) in [
            ("services.a.tls.ca", 2, "cannot read"),
            ("services.b.tls.client_key", 3, "needs its certificate"),
            ("services.c.tls", 4, "only https:// instances use TLS"),
            ("services.d.upstreams[1]", 5, "all http:// or all https://"),
            ("services.e.tls.server_name", 6, "neither a DNS name"),
        ] {
            let mistake = line_naming(&error, field);
            assert!(
                mistake.starts_with(&format!("gateway.yaml:{line}:")),
                "{field} is placed on line {line}: {mistake}"
            );
            assert!(mistake.contains(says), "{mistake}");
        }
    }

    #[test]
    fn an_unknown_protocol_is_refused_at_its_place() {
        let error = mistakes_of(
            "services:\n  users: { upstreams: [\"http://127.0.0.1:8101\"], protocol: http3 }\nroutes: []\n",
        );

        let mistake = line_naming(&error, "services.users.protocol");
        assert!(mistake.starts_with("gateway.yaml:2:"), "{mistake}");
        assert!(mistake.contains("http2"), "names what it may be: {mistake}");
    }

    #[test]
    fn a_url_of_another_scheme_is_refused() {
        let error = mistakes_of(
            "services:\n  users: { upstreams: [\"ftp://127.0.0.1:8101\"] }\nroutes: []\n",
        );

        assert!(
            error.contains("must be an http:// or https:// URL"),
            "{error}"
        );
    }
}
