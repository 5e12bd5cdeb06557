//! Content codings a transformed answer may come in (gzip, br, zstd): which one a response is
//! in, which ones a client accepts, decoding with a cap on what it yields (a few kilobytes of
//! gzip can claim gigabytes: the cap, not the claim, decides what is read), and encoding again.

use std::io::{Read, Write};

use http::header::{self, HeaderMap, HeaderValue};

/// A coding the gateway can undo and redo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
    Zstd,
}

/// What the gateway asks a service for on a route that rewrites JSON answers: only codings it
/// can decode, so an answer never comes in one it would have to pass through unfiltered.
pub const DECODABLE: [Coding; 3] = [Coding::Gzip, Coding::Br, Coding::Zstd];

/// A `Content-Encoding` the gateway cannot undo (`deflate`, `compress`, a stack of codings,
/// bytes that are no token).
#[derive(Debug, thiserror::Error)]
#[error("the content coding {0:?} cannot be decoded")]
pub struct UnknownCoding(pub String);

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The decoded body would be larger than the cap.
    #[error("the decoded body is larger than {cap} bytes")]
    TooLarge { cap: u64 },
    /// The bytes are not in the coding the response claims.
    #[error("the body is not valid {coding}: {cause}")]
    Corrupt {
        coding: &'static str,
        cause: std::io::Error,
    },
}

impl Coding {
    pub fn token(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Br => "br",
            Self::Zstd => "zstd",
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        let token = token.trim();
        [Self::Identity, Self::Gzip, Self::Br, Self::Zstd]
            .into_iter()
            .find(|coding| coding.token().eq_ignore_ascii_case(token))
            // `x-gzip` is gzip (RFC 9110 §8.4.1.3).
            .or_else(|| token.eq_ignore_ascii_case("x-gzip").then_some(Self::Gzip))
    }

    /// The coding of a response with `headers`: identity without `Content-Encoding`.
    pub fn of_response(headers: &HeaderMap) -> Result<Self, UnknownCoding> {
        let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Ok(Self::Identity);
        };
        let unknown = || UnknownCoding(String::from_utf8_lossy(value.as_bytes()).into_owned());
        if values.next().is_some() {
            return Err(unknown());
        }
        let text = value.to_str().map_err(|_| unknown())?;
        if text.contains(',') {
            return Err(unknown());
        }
        Self::from_token(text).ok_or_else(unknown)
    }

    /// Whether a client sending `accept` (its `Accept-Encoding`) takes this coding: listed (or
    /// `*` is) without `q=0`. Identity is always taken: RFC 9110 §12.5.3 lets a server send it
    /// whatever the header says, and it is what a client that takes nothing else gets.
    pub fn accepted_by(self, accept: Option<&HeaderValue>) -> bool {
        if self == Self::Identity {
            return true;
        }
        let Some(text) = accept.and_then(|value| value.to_str().ok()) else {
            return false;
        };
        let mut wildcard = false;
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|parameter| {
                let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
                key.trim().eq_ignore_ascii_case("q") && is_zero_weight(value.trim())
            });
            if Self::from_token(name) == Some(self) {
                return !refused;
            }
            if name == "*" {
                wildcard = !refused;
            }
        }
        wildcard
    }

    /// `data` decoded, at most `cap` bytes of it.
    pub fn decode(self, data: &[u8], cap: u64) -> Result<Vec<u8>, DecodeError> {
        let corrupt = |cause| DecodeError::Corrupt {
            coding: self.token(),
            cause,
        };
        let reader: Box<dyn Read + '_> = match self {
            Self::Identity => return Ok(data.to_vec()),
            Self::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
            Self::Br => Box::new(brotli::Decompressor::new(data, 8 * 1024)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(data).map_err(corrupt)?),
        };
        // One byte past the cap tells a body of exactly `cap` from a larger one.
        let mut decoded = Vec::with_capacity(usize::try_from(cap.min(64 * 1024)).unwrap_or(0));
        reader
            .take(cap.saturating_add(1))
            .read_to_end(&mut decoded)
            .map_err(corrupt)?;
        if decoded.len() as u64 > cap {
            return Err(DecodeError::TooLarge { cap });
        }
        Ok(decoded)
    }

    /// `data` in this coding, at a level that keeps the gateway's CPU for proxying (gzip 6,
    /// brotli 5, zstd 3: the defaults a web server compresses dynamic answers with).
    pub fn encode(self, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Identity => Ok(data),
            Self::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::new(6),
                );
                encoder.write_all(&data)?;
                encoder.finish()
            }
            Self::Br => {
                let mut encoded = Vec::with_capacity(data.len() / 4);
                {
                    let mut encoder = brotli::CompressorWriter::new(&mut encoded, 8 * 1024, 5, 22);
                    encoder.write_all(&data)?;
                    encoder.flush()?;
                }
                Ok(encoded)
            }
            Self::Zstd => zstd::stream::encode_all(data.as_slice(), 3),
        }
    }
}

/// `q=0`, `q=0.`, `q=0.000`: a weight of zero (RFC 9110 §12.4.2).
fn is_zero_weight(value: &str) -> bool {
    let Some(rest) = value.strip_prefix('0') else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix('.')
            .is_some_and(|fraction| fraction.bytes().all(|b| b == b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(header: &str, coding: Coding) -> bool {
        coding.accepted_by(Some(&HeaderValue::from_str(header).unwrap()))
    }

    #[test]
    fn a_coding_is_accepted_when_listed_or_wildcarded_without_a_zero_weight() {
        assert!(accepts("gzip, br", Coding::Br));
        assert!(accepts("GZIP;q=0.5", Coding::Gzip));
        assert!(accepts("x-gzip", Coding::Gzip));
        assert!(accepts("*", Coding::Zstd));
        assert!(!accepts("gzip;q=0", Coding::Gzip));
        assert!(!accepts("gzip; q=0.000, *", Coding::Gzip), "named beats *");
        assert!(!accepts("*;q=0", Coding::Br));
        assert!(!accepts("gzip, deflate", Coding::Zstd));
        assert!(!Coding::Gzip.accepted_by(None));
        assert!(Coding::Identity.accepted_by(None));
        assert!(accepts("identity;q=0", Coding::Identity), "the fallback");
    }

    #[test]
    fn a_response_names_one_coding_the_gateway_knows_or_none() {
        let mut headers = HeaderMap::new();
        assert_eq!(Coding::of_response(&headers).unwrap(), Coding::Identity);
        for (value, coding) in [
            ("gzip", Coding::Gzip),
            ("br", Coding::Br),
            (" zstd ", Coding::Zstd),
        ] {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
            assert_eq!(Coding::of_response(&headers).unwrap(), coding);
        }
        for value in ["deflate", "gzip, br", "compress", ""] {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
            assert!(Coding::of_response(&headers).is_err(), "{value:?}");
        }
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(Coding::of_response(&headers).is_err(), "two lines");
    }

    #[test]
    fn every_coding_comes_back_as_it_went_in() {
        let text = br#"{"items":[{"id":1,"secret":"s"}]}"#.repeat(50);
        for coding in DECODABLE {
            let encoded = coding.encode(text.clone()).unwrap();
            assert_ne!(encoded, text, "{coding:?} encodes");
            assert_eq!(
                coding.decode(&encoded, 1 << 20).unwrap(),
                text,
                "{coding:?}"
            );
        }
    }

    #[test]
    fn a_bomb_is_read_only_up_to_the_cap() {
        // 64 MiB of zeros in every coding: a few kilobytes each.
        let zeros = vec![0u8; 64 << 20];
        for coding in DECODABLE {
            let bomb = coding.encode(zeros.clone()).unwrap();
            assert!(bomb.len() < 1 << 20, "{coding:?}: {}", bomb.len());
            let refused = coding.decode(&bomb, 1 << 20);
            assert!(
                matches!(refused, Err(DecodeError::TooLarge { cap }) if cap == 1 << 20),
                "{coding:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_in_the_claimed_coding_are_corrupt() {
        for coding in DECODABLE {
            let refused = coding.decode(br#"{"plain":"json"}"#, 1 << 20);
            assert!(
                matches!(refused, Err(DecodeError::Corrupt { .. })),
                "{coding:?}: {refused:?}"
            );
        }
        let truncated = Coding::Gzip.encode(b"{\"a\":1}".repeat(100)).unwrap();
        let refused = Coding::Gzip.decode(&truncated[..truncated.len() / 2], 1 << 20);
        assert!(
            matches!(refused, Err(DecodeError::Corrupt { .. })),
            "{refused:?}"
        );
    }
}
