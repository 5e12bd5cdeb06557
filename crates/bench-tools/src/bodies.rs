//! What the fixed upstream answers, by path. The sizes are part of the benchmark's definition:
//! changing them changes every number, so they are fixed here and printed by the harness.

use bytes::Bytes;

/// `GET /small`: a typical small JSON answer.
pub const SMALL: &[u8] =
    br#"{"id":"0190f3c2-7d2e-7a51-9b7e-3c1d2a4b5c6d","status":"ok","items":3}"#;

/// Size of the `GET /large` answer.
pub const LARGE_BYTES: usize = 64 * 1024;

/// `GET /large`: a JSON document of exactly [`LARGE_BYTES`] bytes.
pub fn large() -> Bytes {
    let prefix = br#"{"data":""#;
    let suffix = br#""}"#;
    let mut body = Vec::with_capacity(LARGE_BYTES);
    body.extend_from_slice(prefix);
    body.resize(LARGE_BYTES - suffix.len(), b'x');
    body.extend_from_slice(suffix);
    Bytes::from(body)
}

/// `GET /internal/token-cutoffs`: the gateway polls its credentials service for per-user
/// cut-offs in the background; the bench upstream stands in for it with "none".
pub const NO_CUTOFFS: &[u8] = br#"{"cutoffs":[]}"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_large_body_has_its_advertised_size_and_is_json() {
        let body = super::large();
        assert_eq!(body.len(), super::LARGE_BYTES);
        assert!(body.starts_with(b"{\"data\":\"") && body.ends_with(b"\"}"));
    }
}
