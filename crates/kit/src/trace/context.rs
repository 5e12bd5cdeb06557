//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` and `tracestate`
//! a request arrives with, read strictly, and the ones a server sends on.
//!
//! Strict because the value ends up in log lines, problem bodies and other services' headers: a
//! `traceparent` that is not exactly version `00`, 55 characters of lowercase hex with non-zero
//! ids, is not continued (a new trace starts) and never echoed. A `tracestate` is passed on only
//! beside a valid `traceparent` and only when every member follows the spec's grammar.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanId, TraceId};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LENGTH: usize = 55;
/// The spec's limits on `tracestate`: 32 members, and 512 characters are what a vendor may cut to.
const TRACESTATE_MAX_MEMBERS: usize = 32;
const TRACESTATE_MAX_LENGTH: usize = 512;
/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;

/// The caller's span, as its `traceparent` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller recorded its span (the `sampled` flag): the trace is being exported.
    pub sampled: bool,
}

impl Parent {
    /// The `traceparent` in `headers`, if there is exactly one and it is valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            // Two traceparents: which one is the caller's is anyone's guess.
            return None;
        }
        Self::parse(value.as_bytes())
    }

    /// `value` read as a version-00 `traceparent`; `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() != TRACEPARENT_LENGTH
            || &value[..3] != b"00-"
            || value[35] != b'-'
            || value[52] != b'-'
        {
            return None;
        }
        let trace_id = u128::from_be_bytes(lower_hex(&value[3..35])?);
        let span_id = u64::from_be_bytes(lower_hex(&value[36..52])?);
        let [flags] = lower_hex::<1>(&value[53..55])?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id: TraceId::from(trace_id),
            span_id: SpanId::from(span_id),
            sampled: flags & SAMPLED != 0,
        })
    }
}

/// `N` bytes from `2 * N` lowercase hexadecimal digits (upper case is invalid in Trace Context).
fn lower_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

/// The `traceparent` naming `span_id` of `trace_id` as the parent of the next hop's span.
///
/// Written digit by digit rather than through `fmt`: it goes on every forwarded request.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    let mut buffer = [b'-'; TRACEPARENT_LENGTH];
    buffer[..2].copy_from_slice(b"00");
    hex_into(&mut buffer[3..35], &trace_id.to_bytes());
    hex_into(&mut buffer[36..52], &span_id.to_bytes());
    hex_into(&mut buffer[53..55], &[if sampled { SAMPLED } else { 0 }]);
    HeaderValue::from_bytes(&buffer).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000000-0000000000000000-00",
    ))
}

/// `bytes` as lowercase hex into `out` (twice as long).
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// The `tracestate` in `headers` (its values joined as one list) when it follows the spec's
/// grammar and limits; `None` when absent or invalid (an invalid one is dropped, not repaired).
pub fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let joined;
    let value = match values.next() {
        None => first.clone(),
        Some(second) => {
            // Several fields are one list (RFC 9110 §5.3).
            let mut list = first.as_bytes().to_vec();
            for more in std::iter::once(second).chain(values) {
                list.push(b',');
                list.extend_from_slice(more.as_bytes());
            }
            joined = HeaderValue::from_bytes(&list).ok()?;
            joined
        }
    };
    is_valid_tracestate(value.as_bytes()).then_some(value)
}

/// `key=value` members separated by commas (optional spaces around them, empty members allowed),
/// at most 32, keys unique, keys and values as the spec's grammar says.
pub fn is_valid_tracestate(list: &[u8]) -> bool {
    if list.len() > TRACESTATE_MAX_LENGTH {
        return false;
    }
    let mut keys: Vec<&[u8]> = Vec::new();
    for member in list.split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        let Some(equals) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (key, value) = (&member[..equals], &member[equals + 1..]);
        if !is_valid_key(key) || !is_valid_value(value) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() > TRACESTATE_MAX_MEMBERS {
            return false;
        }
    }
    true
}

/// `simple-key` or `tenant@system`: lowercase letters, digits, `_ - * /`, starting with a letter
/// or digit (the tenant part) or a letter (the simple key and the system part).
fn is_valid_key(key: &[u8]) -> bool {
    let body = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(b);
    let part = |part: &[u8], max: usize, digit_first: bool| {
        !part.is_empty()
            && part.len() <= max
            && (part[0].is_ascii_lowercase() || (digit_first && part[0].is_ascii_digit()))
            && part[1..].iter().all(body)
    };
    match key.iter().position(|&b| b == b'@') {
        None => part(key, 256, false),
        Some(at) => part(&key[..at], 241, true) && part(&key[at + 1..], 14, false),
    }
}

/// Up to 256 printable characters other than `,` and `=`, not ending in a space.
fn is_valid_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_names_the_callers_trace_span_and_sampling() {
        let parent = Parent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        let unsampled = Parent::parse(&VALID.replace("-01", "-00").into_bytes()).unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn every_malformed_traceparent_is_refused() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "upper-case trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                "upper-case span id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all-zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all-zero span id",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "a version we do not read",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "the forbidden version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "trailing data",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "a short trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
                "a misplaced dash",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                "a wrong separator",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                "not hex",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                "flags not hex",
            ),
            (
                "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "a sign",
            ),
            (
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                "leading space",
            ),
        ];
        for (value, why) in cases {
            assert_eq!(Parent::parse(value.as_bytes()), None, "{why}: {value:?}");
        }
    }

    #[test]
    fn two_traceparent_fields_are_not_continued() {
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(Parent::from_headers(&headers).is_some());
        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(Parent::from_headers(&headers), None);
    }

    #[test]
    fn the_traceparent_sent_on_reads_back_as_it_was_made() {
        let parent = Parent::parse(VALID.as_bytes()).unwrap();
        let span = SpanId::from(0x0102_0304_0506_0708_u64);
        let sent = traceparent(parent.trace_id, span, true);
        assert_eq!(
            sent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
        let unsampled = traceparent(parent.trace_id, span, false);
        assert!(unsampled.to_str().unwrap().ends_with("-00"));
        assert_eq!(Parent::parse(sent.as_bytes()).unwrap().span_id, span);
    }

    #[test]
    fn a_tracestate_is_kept_only_when_every_member_is_well_formed() {
        let valid = [
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE",
            "tenant1@vendor=value,,other=x",
            "a*b/c_d-e=v v",
        ];
        for list in valid {
            assert!(is_valid_tracestate(list.as_bytes()), "{list:?}");
        }
        let too_many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let invalid: &[(&str, &str)] = &[
            ("Congo=x", "upper-case key"),
            ("congo", "no value"),
            ("congo=", "empty value"),
            ("congo=a,congo=b", "a repeated key"),
            ("congo=a=b", "an equals sign in the value"),
            ("congo=x\ty", "a tab in the value"),
            ("1abc=x", "a simple key starting with a digit"),
            ("t@1v=x", "a system starting with a digit"),
            ("congo=\u{7f}", "a control character"),
            (&too_many, "33 members"),
        ];
        for (list, why) in invalid {
            assert!(!is_valid_tracestate(list.as_bytes()), "{why}: {list:?}");
        }
        assert!(!is_valid_tracestate(&[b'a'; 513]), "over 512 characters");
    }

    #[test]
    fn several_tracestate_fields_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(TRACESTATE, HeaderValue::from_static("rojo=1"));
        headers.append(TRACESTATE, HeaderValue::from_static("congo=2"));
        assert_eq!(tracestate(&headers).unwrap(), "rojo=1,congo=2");
        headers.append(TRACESTATE, HeaderValue::from_static("rojo=3"));
        assert_eq!(tracestate(&headers), None, "a key repeated across fields");
    }
}
