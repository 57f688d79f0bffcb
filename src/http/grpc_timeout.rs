//! The `grpc-timeout` header: a caller's time budget, in gRPC's wire form.
//!
//! gRPC carries a deadline from service to service as a relative timeout in
//! the `grpc-timeout` request header: at most 8 ASCII digits and one unit,
//! `H` (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u`
//! (microseconds) or `n` (nanoseconds) — `250m`, `3S`, `99999999H`. Every
//! gRPC stack (grpc-go, grpc-java, tonic, Envoy) reads and writes it, so
//! plain HTTP services that speak it share one budget with them.
//!
//! [`decode`] turns a header value into a [`Duration`];
//! [`ContextLayer`](super::ContextLayer) uses it to give each request a
//! deadline. [`encode`] goes the other way;
//! [`propagate_deadline`](super::propagate_deadline) uses it to stamp an
//! outgoing request with the time a [`Context`](crate::Context) has left.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use taskgroup::http::grpc_timeout;
//!
//! let value = grpc_timeout::encode(Duration::from_millis(250));
//! assert_eq!(value, "250000u");
//! assert_eq!(grpc_timeout::decode(&value).unwrap(), Duration::from_millis(250));
//! assert_eq!(grpc_timeout::decode(&"3S".parse().unwrap()).unwrap(), Duration::from_secs(3));
//! assert!(grpc_timeout::decode(&"-1m".parse().unwrap()).is_err());
//! ```

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// The header's name, `grpc-timeout`.
///
/// # Examples
///
/// ```
/// use taskgroup::http::grpc_timeout;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(grpc_timeout::HEADER, "5S".parse().unwrap());
/// assert_eq!(headers["grpc-timeout"], "5S");
/// ```
// The `http` crate declares its standard header names the same way.
#[allow(
    clippy::declare_interior_mutable_const,
    reason = "a HeaderName made by from_static holds only a &'static str"
)]
pub const HEADER: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest value the wire form can hold: 8 digits.
const MAX_VALUE: u128 = 99_999_999;

/// The units, finest first, with their length in nanoseconds.
const UNITS: [(u128, u8); 6] = [
    (1, b'n'),
    (1_000, b'u'),
    (1_000_000, b'm'),
    (1_000_000_000, b'S'),
    (60 * 1_000_000_000, b'M'),
    (3_600 * 1_000_000_000, b'H'),
];

/// Encodes `timeout` as a `grpc-timeout` value: the finest unit whose value
/// fits in 8 digits, rounded down.
///
/// The finest unit that fits keeps the error below one part in 100,000: a
/// budget under 0.1 s is exact, one under 100 s exact to the microsecond. Rounding goes down,
/// never up: the callee may get up to one unit less than the caller has
/// left, never more, so a chain of services never stretches the caller's
/// budget. (grpc-go rounds up instead, to avoid sending zero for a tiny
/// positive budget; with the nanosecond unit available for budgets under
/// 0.1 s, rounding down here never turns a positive budget into zero.)
///
/// A timeout beyond the largest the header can carry, `99999999H` (about
/// 11,400 years, `Duration::MAX` included), is sent as `99999999H`.
/// `Duration::ZERO` is `0n`: a budget already spent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::http::grpc_timeout::encode;
///
/// assert_eq!(encode(Duration::from_nanos(1)), "1n");
/// assert_eq!(encode(Duration::from_millis(250)), "250000u");
/// assert_eq!(encode(Duration::from_secs(3)), "3000000u");
/// assert_eq!(encode(Duration::from_secs(3600)), "3600000m");
/// // Rounded down: the callee never gets more than the caller has.
/// assert_eq!(encode(Duration::new(100, 999)), "100000m");
/// assert_eq!(encode(Duration::MAX), "99999999H");
/// ```
pub fn encode(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    let (value, unit) = UNITS
        .iter()
        .map(|&(unit_nanos, unit)| (nanos / unit_nanos, unit))
        .find(|&(value, _)| value <= MAX_VALUE)
        .unwrap_or((MAX_VALUE, b'H'));
    let mut text = value.to_string();
    text.push(char::from(unit));
    HeaderValue::try_from(text).expect("digits and a unit letter make a valid header value")
}

/// Decodes a `grpc-timeout` value into the timeout it carries.
///
/// Strict, as the gRPC spec is: 1 to 8 ASCII digits, then exactly one of
/// `H`, `M`, `S`, `m`, `u`, `n`. Leading zeros are fine (`0005S`), and so is
/// zero (`0n`: no time left).
///
/// # Errors
///
/// A [`DecodeError`] naming what is wrong: an empty value, a sign (`-1m`,
/// `+5S`), a fraction (`1.5S`), more than 8 digits (`123456789S`), no
/// digits, a missing or unknown unit (`5`, `5x`), or any other character.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::HeaderValue;
/// use taskgroup::http::grpc_timeout::decode;
///
/// let decode_str = |s: &'static str| decode(&HeaderValue::from_static(s));
/// assert_eq!(decode_str("250m").unwrap(), Duration::from_millis(250));
/// assert_eq!(decode_str("99999999H").unwrap(), Duration::from_secs(99_999_999 * 3600));
/// assert_eq!(
///     decode_str("5x").unwrap_err().to_string(),
///     "invalid grpc-timeout \"5x\": unknown unit 'x' (expected H, M, S, m, u or n)"
/// );
/// assert!(decode_str("123456789S").is_err());
/// assert!(decode_str("").is_err());
/// ```
pub fn decode(value: &HeaderValue) -> Result<Duration, DecodeError> {
    decode_bytes(value.as_bytes()).map_err(|reason| DecodeError {
        value: value.as_bytes().escape_ascii().to_string(),
        reason,
    })
}

fn decode_bytes(bytes: &[u8]) -> Result<Duration, Reason> {
    let Some((&unit, digits)) = bytes.split_last() else {
        return Err(Reason::Empty);
    };
    if matches!(bytes[0], b'+' | b'-') {
        return Err(Reason::Sign);
    }
    if bytes.contains(&b'.') {
        return Err(Reason::Fraction);
    }
    if unit.is_ascii_digit() {
        return Err(Reason::MissingUnit);
    }
    if let Some(&other) = digits.iter().find(|b| !b.is_ascii_digit()) {
        return Err(Reason::NotADigit(other));
    }
    if digits.is_empty() {
        return Err(Reason::NoDigits);
    }
    if digits.len() > 8 {
        return Err(Reason::TooManyDigits(digits.len()));
    }
    // At most 8 digits: fits in a u64 with room for the hour multiplier.
    let value = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(value * 3_600),
        b'M' => Duration::from_secs(value * 60),
        b'S' => Duration::from_secs(value),
        b'm' => Duration::from_millis(value),
        b'u' => Duration::from_micros(value),
        b'n' => Duration::from_nanos(value),
        other => return Err(Reason::UnknownUnit(other)),
    })
}

/// Why a `grpc-timeout` value was rejected by [`decode`].
///
/// Its `Display` quotes the value and says what is wrong with it, so it can
/// go back to the client as is: [`ContextLayer`](super::ContextLayer) sends
/// it as the body of its `400 Bad Request`.
///
/// # Examples
///
/// ```
/// use http::HeaderValue;
/// use taskgroup::http::grpc_timeout::decode;
///
/// let err = decode(&HeaderValue::from_static("1.5S")).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid grpc-timeout \"1.5S\": a fraction is not allowed (use a finer unit)"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    value: String,
    reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Empty,
    Sign,
    Fraction,
    MissingUnit,
    NotADigit(u8),
    NoDigits,
    TooManyDigits(usize),
    UnknownUnit(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid grpc-timeout \"{}\": ", self.value)?;
        let printable = |b: u8| b.escape_ascii().to_string();
        match self.reason {
            Reason::Empty => write!(f, "the value is empty"),
            Reason::Sign => write!(f, "a sign is not allowed"),
            Reason::Fraction => write!(f, "a fraction is not allowed (use a finer unit)"),
            Reason::MissingUnit => write!(f, "no unit (expected H, M, S, m, u or n)"),
            Reason::NotADigit(b) => write!(f, "'{}' is not a digit", printable(b)),
            Reason::NoDigits => write!(f, "no digits before the unit"),
            Reason::TooManyDigits(n) => write!(f, "{n} digits, at most 8 are allowed"),
            Reason::UnknownUnit(b) => write!(
                f,
                "unknown unit '{}' (expected H, M, S, m, u or n)",
                printable(b)
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_str(s: &str) -> Result<Duration, DecodeError> {
        decode(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn every_unit_decodes() {
        assert_eq!(decode_str("2H").unwrap(), Duration::from_secs(7200));
        assert_eq!(decode_str("2M").unwrap(), Duration::from_secs(120));
        assert_eq!(decode_str("2S").unwrap(), Duration::from_secs(2));
        assert_eq!(decode_str("2m").unwrap(), Duration::from_millis(2));
        assert_eq!(decode_str("2u").unwrap(), Duration::from_micros(2));
        assert_eq!(decode_str("2n").unwrap(), Duration::from_nanos(2));
        assert_eq!(decode_str("0n").unwrap(), Duration::ZERO);
        assert_eq!(
            decode_str("000000005S").unwrap_err().reason,
            Reason::TooManyDigits(9)
        );
        assert_eq!(decode_str("00000005S").unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn malformed_values_say_why() {
        let reason = |s: &str| decode_str(s).unwrap_err().reason;
        assert_eq!(
            decode(&HeaderValue::from_static("")).unwrap_err().reason,
            Reason::Empty
        );
        assert_eq!(reason("-1m"), Reason::Sign);
        assert_eq!(reason("+5S"), Reason::Sign);
        assert_eq!(reason("1.5S"), Reason::Fraction);
        assert_eq!(reason("5"), Reason::MissingUnit);
        assert_eq!(reason("5x"), Reason::UnknownUnit(b'x'));
        assert_eq!(reason("5 S"), Reason::NotADigit(b' '));
        assert_eq!(reason("S"), Reason::NoDigits);
        assert_eq!(reason("123456789S"), Reason::TooManyDigits(9));
        assert_eq!(reason("1e3m"), Reason::NotADigit(b'e'));
        assert_eq!(reason("5SS"), Reason::NotADigit(b'S'));
    }

    #[test]
    fn the_largest_value_does_not_overflow() {
        let max = decode_str("99999999H").unwrap();
        assert_eq!(max, Duration::from_secs(99_999_999 * 3600));
        assert_eq!(encode(max), "99999999H");
        assert_eq!(encode(Duration::MAX), "99999999H");
        assert_eq!(encode(max + Duration::from_secs(3600)), "99999999H");
    }

    #[test]
    fn encode_picks_the_finest_unit_that_fits() {
        assert_eq!(encode(Duration::ZERO), "0n");
        assert_eq!(encode(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(encode(Duration::from_nanos(100_000_000)), "100000u");
        assert_eq!(encode(Duration::from_micros(99_999_999)), "99999999u");
        assert_eq!(encode(Duration::from_micros(100_000_000)), "100000m");
        assert_eq!(encode(Duration::from_millis(99_999_999)), "99999999m");
        assert_eq!(encode(Duration::from_millis(100_000_000)), "100000S");
        assert_eq!(encode(Duration::from_secs(99_999_999)), "99999999S");
        assert_eq!(encode(Duration::from_secs(100_000_000)), "1666666M");
        assert_eq!(encode(Duration::from_secs(60 * 99_999_999)), "99999999M");
        assert_eq!(encode(Duration::from_secs(60 * 100_000_000)), "1666666H");
    }

    /// Round trip over a deterministic spread of durations, from
    /// nanoseconds to millennia: the decoded budget is never longer than
    /// the original, never shorter by a full unit, and the value is always
    /// legal.
    #[test]
    fn round_trip_never_extends_the_budget() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for i in 0..20_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Spread over every magnitude: shift a random value down.
            let nanos = u128::from(state) >> (i % 64);
            let secs = u64::try_from(nanos / 1_000_000_000).unwrap();
            let timeout = Duration::new(secs, u32::try_from(nanos % 1_000_000_000).unwrap());
            let value = encode(timeout);
            let bytes = value.as_bytes();
            assert!(bytes.len() <= 9, "{value:?}");
            let decoded = decode(&value).unwrap();
            assert!(
                decoded <= timeout,
                "{timeout:?} -> {value:?} -> {decoded:?}"
            );
            let unit = UNITS
                .iter()
                .find(|(_, u)| *u == *bytes.last().unwrap())
                .unwrap()
                .0;
            assert!(
                timeout.as_nanos() - decoded.as_nanos() < unit,
                "{timeout:?} -> {value:?}"
            );
            // Exact below 0.1 s; relative error below 1e-5 above.
            let lost = timeout.as_nanos() - decoded.as_nanos();
            if timeout < Duration::from_millis(100) {
                assert_eq!(lost, 0, "{timeout:?}");
            } else {
                assert!(
                    lost as f64 / timeout.as_nanos() as f64 <= 1e-5,
                    "{timeout:?}"
                );
            }
        }
    }
}
