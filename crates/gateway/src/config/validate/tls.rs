//! `tls:` checked at load: every certificate and key is read, parsed and paired (the key must be
//! its certificate's), the CA bundle holds a CA, the version is one TLS still trusts, and the
//! redirect listener is an address of its own. A file that fails is named at the field giving it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kit::config::{Mistakes, Spanned};
use kit::tls::{CertificateFiles, MinVersion, TlsError, TlsFiles};

use super::super::schema;
use super::super::values::NonEmpty;
use super::super::{ClientCertRule, TlsSettings};

/// HSTS preload lists ask for at least a year (hstspreload.org).
const PRELOAD_MIN_AGE: u64 = 365 * 24 * 3600;

pub(super) fn tls(
    raw: Option<schema::Tls>,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    mistakes: &mut Mistakes,
) -> Option<TlsSettings> {
    let raw = raw?;
    let min_version = match &raw.min_version {
        None => MinVersion::default(),
        Some(text) => text.parse().unwrap_or_else(|message: String| {
            mistakes.at("tls.min_version", text, message);
            MinVersion::default()
        }),
    };
    if raw.certificates.is_empty() {
        mistakes.at(
            "tls.certificates",
            &raw.certificates,
            "list at least one { cert, key }; the first is the default",
        );
    }
    let certificates: Vec<CertificateFiles> = raw
        .certificates
        .iter()
        .map(|pair| CertificateFiles {
            cert: PathBuf::from(pair.cert.as_str()),
            key: PathBuf::from(pair.key.as_str()),
        })
        .collect();
    // Each pair alone first, so that every bad one is named in one run.
    let mut names = Vec::new();
    let mut pairs_load = true;
    for (index, (pair, raw_pair)) in certificates.iter().zip(raw.certificates.iter()).enumerate() {
        let alone = TlsFiles {
            certificates: vec![pair.clone()],
            client_ca: None,
            min_version,
        };
        match kit::tls::load(&alone) {
            Ok(loaded) => names.extend(loaded.names),
            Err(error) => {
                pairs_load = false;
                let (field, at) = if failed_file(&error) == Some(pair.key.as_path()) {
                    ("key", &raw_pair.key)
                } else {
                    ("cert", &raw_pair.cert)
                };
                mistakes.at(
                    format!("tls.certificates[{index}].{field}"),
                    at,
                    error.to_string(),
                );
            }
        }
    }
    let client_ca = raw.client_ca.as_ref().map(|ca| kit::tls::ClientCa {
        bundle: PathBuf::from(ca.file.as_str()),
        mode: ca.mode,
    });
    let files = TlsFiles {
        certificates,
        client_ca,
        min_version,
    };
    if let (Some(ca), true) = (&raw.client_ca, pairs_load && !files.certificates.is_empty()) {
        if let Err(error) = kit::tls::load(&files) {
            mistakes.at("tls.client_ca", &ca.file, error.to_string());
        }
    }
    if let Some(redirect) = raw.redirect_http {
        // Port 0 (a free port, as tests bind) never collides.
        if redirect.port() != 0 && (redirect == listen || redirect == admin_listen) {
            mistakes.push(
                "tls.redirect_http".to_owned(),
                None,
                format!("{redirect} is already the public or the admin listener; give the plain-HTTP listener its own address"),
            );
        }
    }
    let hsts = raw
        .hsts
        .as_ref()
        .and_then(|hsts| hsts_header(hsts, mistakes));
    Some(TlsSettings {
        files,
        names,
        hsts,
        redirect_http: raw.redirect_http,
    })
}

fn failed_file(error: &TlsError) -> Option<&Path> {
    match error {
        TlsError::Read { file, .. }
        | TlsError::Content { file, .. }
        | TlsError::Rustls { file, .. } => Some(file),
        TlsError::NoCertificate => None,
    }
}

fn hsts_header(raw: &schema::Hsts, mistakes: &mut Mistakes) -> Option<http::HeaderValue> {
    let max_age = raw.max_age.0.as_secs();
    if raw.preload && (!raw.include_subdomains || max_age < PRELOAD_MIN_AGE) {
        mistakes.at(
            "tls.hsts.preload",
            &raw.max_age,
            "preload needs include_subdomains: true and a max_age of at least 365d",
        );
    }
    let mut value = format!("max-age={max_age}");
    if raw.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if raw.preload {
        value.push_str("; preload");
    }
    http::HeaderValue::from_str(&value).ok()
}

/// A route's `client_cert:`, which only a listener that asks for client certificates can honour.
pub(super) fn client_cert(
    field: &str,
    raw: Option<&Spanned<schema::ClientCertRule>>,
    asks_for_certificates: bool,
    mistakes: &mut Mistakes,
) -> Option<ClientCertRule> {
    let raw = raw?;
    if !asks_for_certificates {
        mistakes.at(
            format!("{field}.client_cert"),
            raw,
            "needs tls.client_ca: without it no client sends a certificate",
        );
    }
    if raw.subject.is_none() && raw.dns.is_empty() && raw.uri.is_empty() {
        mistakes.at(
            format!("{field}.client_cert"),
            raw,
            "give subject, dns, uri, or several",
        );
    }
    let texts = |values: &[NonEmpty]| values.iter().map(|v| v.0.clone()).collect();
    Some(ClientCertRule {
        subject: raw.subject.as_ref().map(|subject| subject.0.clone()),
        dns: texts(&raw.dns),
        uri: texts(&raw.uri),
    })
}
