//! Exact Kubernetes quantities.
//!
//! Requests are compared against ceilings and summed against Quotas, so the arithmetic must
//! be exact: floating point would let `0.1 + 0.2` CPU exceed `0.3`, or a large memory sum
//! slip under a limit by rounding. A quantity is therefore parsed into an integer number of
//! milli-units (`i128`): `500m` CPU is 500, `2` is 2000, `8Gi` of memory is 8 * 2^30 * 1000.
//! Milli-units are the finest unit Kubernetes itself uses for CPU, and every byte count is
//! a whole number of them; finer values (`1n`, `0.0001`) are rounded up, away from zero, as
//! Kubernetes' own `MilliValue` does.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Significant digits an `i128` always holds (its maximum is about 1.7e38).
const MAX_SIGNIFICANT_DIGITS: usize = 38;

/// A quantity that cannot be parsed or computed with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not in Kubernetes' quantity syntax.
    #[error(
        "{0:?} is not a quantity: expected a number with an optional suffix, e.g. 500m, 2, 1.5, 8Gi, 100M or 1e3"
    )]
    Malformed(String),
    /// Syntactically valid but above what Kubernetes represents (2^63 - 1 units).
    #[error("{0:?} is too large a quantity")]
    Overflow(String),
    /// Below zero where only amounts make sense (a request, a limit, a size): a negative
    /// request would give its owner Quota credit.
    #[error("{0:?} is negative: use a quantity of at least 0, e.g. 500m or 1Gi")]
    Negative(String),
}

/// How [`format_milli`] writes a quantity back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantityStyle {
    /// Cores and other counts: `2`, `1500m`.
    DecimalSI,
    /// Bytes: the largest exact binary suffix, `8Gi`, `1536Mi`, else the plain number.
    BinarySI,
}

impl QuantityStyle {
    /// How amounts of `resource` read best: bytes for memory, storage and hugepages, counts
    /// for CPU, GPUs and other devices.
    pub fn of_resource(resource: &str) -> Self {
        match resource {
            "memory" | "storage" | "ephemeral-storage" => Self::BinarySI,
            hugepages if hugepages.starts_with("hugepages-") => Self::BinarySI,
            _ => Self::DecimalSI,
        }
    }
}

/// Parses a quantity string (`500m`, `2`, `1.5`, `8Gi`, `1e3`, `100M`, `1k`, `-1`) into
/// exact milli-units.
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    let malformed = || QuantityError::Malformed(s.to_owned());
    let (negative, rest) = split_sign(s);
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (significand, fraction_digits) = parse_number(number).ok_or_else(malformed)?;
    let (decimal_exponent, binary_exponent) = parse_suffix(suffix, s)?;
    let magnitude = scale_to_milli(
        significand,
        fraction_digits,
        decimal_exponent,
        binary_exponent,
    )
    .filter(|milli| *milli <= MAX_MILLI)
    .ok_or_else(|| QuantityError::Overflow(s.to_owned()))?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// The largest quantity Kubernetes represents, 2^63 - 1 units, in milli-units: anything
/// above it is refused, so every accepted amount can be written back and read again
/// (found by the property test `quantities_parse_exactly_or_are_refused`).
const MAX_MILLI: i128 = i64::MAX as i128 * 1000;

/// Parses a [`Quantity`] into exact milli-units.
pub fn quantity_milli(quantity: &Quantity) -> Result<i128, QuantityError> {
    parse_milli(&quantity.0)
}

/// Writes milli-units back as a [`Quantity`] that parses to the same value.
pub fn format_milli(milli: i128, style: QuantityStyle) -> Quantity {
    if milli % 1000 != 0 {
        return Quantity(format!("{milli}m"));
    }
    let units = milli / 1000;
    let text = match style {
        QuantityStyle::DecimalSI => units.to_string(),
        QuantityStyle::BinarySI => binary_si(units),
    };
    Quantity(text)
}

/// The largest binary suffix that divides `units` exactly, so `8Gi` is not shown as
/// `8589934592`.
fn binary_si(units: i128) -> String {
    const SUFFIXES: [&str; 6] = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
    if units == 0 {
        return "0".to_owned();
    }
    SUFFIXES
        .iter()
        .zip((1..=6).rev())
        .map(|(suffix, power)| (suffix, 1i128 << (10 * power)))
        .find(|(_, size)| units % size == 0)
        .map_or_else(
            || units.to_string(),
            |(suffix, size)| format!("{}{suffix}", units / size),
        )
}

/// Splits an optional leading `+` or `-` off.
fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

/// Parses `digits`, `digits.digits`, `digits.` or `.digits` into the significand (without
/// leading zeros or trailing fractional zeros) and the count of fractional digits it has.
/// `None` when there is no digit or more than one point.
fn parse_number(number: &str) -> Option<(String, i64)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.len() + fraction.len() == 0 || fraction.contains('.') {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    let digits = format!("{whole}{fraction}");
    let significand = digits.trim_start_matches('0').to_owned();
    Some((significand, i64::try_from(fraction.len()).ok()?))
}

/// The powers of ten and of two a suffix stands for.
fn parse_suffix(suffix: &str, whole: &str) -> Result<(i64, u32), QuantityError> {
    let decimal = |exponent| Ok((exponent, 0));
    let binary = |exponent| Ok((0, exponent));
    match suffix {
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => parse_exponent(suffix, whole).map(|exponent| (exponent, 0)),
    }
}

/// Parses a decimal exponent suffix, `e3`, `E-2`, `e+6`.
fn parse_exponent(suffix: &str, whole: &str) -> Result<i64, QuantityError> {
    let malformed = || QuantityError::Malformed(whole.to_owned());
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .filter(|rest| !rest.is_empty())
        .ok_or_else(malformed)?;
    let (negative, digits) = split_sign(exponent);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let value: i64 = digits
        .parse::<i32>()
        .map_err(|_| QuantityError::Overflow(whole.to_owned()))?
        .into();
    Ok(if negative { -value } else { value })
}

/// `significand * 10^(decimal_exponent - fraction_digits) * 2^binary_exponent * 1000`,
/// rounded up to a whole milli-unit. `None` on overflow.
fn scale_to_milli(
    significand: String,
    fraction_digits: i64,
    decimal_exponent: i64,
    binary_exponent: u32,
) -> Option<i128> {
    if significand.is_empty() {
        return Some(0);
    }
    if significand.len() > MAX_SIGNIFICANT_DIGITS {
        return None;
    }
    let value = significand
        .parse::<i128>()
        .ok()?
        .checked_mul(1i128.checked_shl(binary_exponent)?)?;
    let power_of_ten = decimal_exponent + 3 - fraction_digits;
    let ten_to = |power: i64| 10i128.checked_pow(u32::try_from(power).ok()?);
    if power_of_ten >= 0 {
        return value.checked_mul(ten_to(power_of_ten)?);
    }
    // A divisor beyond i128 exceeds the value, so the quotient is a positive fraction that
    // rounds up to one milli-unit.
    Some(ten_to(-power_of_ten).map_or(1, |divisor| div_round_up(value, divisor)))
}

/// `value / divisor` for positive operands, rounded up.
fn div_round_up(value: i128, divisor: i128) -> i128 {
    value / divisor + i128::from(value % divisor != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: i128 = 1 << 10;
    const MI: i128 = 1 << 20;
    const GI: i128 = 1 << 30;

    #[test]
    fn parses_exact_milli_units() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("-0", 0),
            ("500m", 500),
            ("2", 2_000),
            ("+2", 2_000),
            ("-2", -2_000),
            ("1.5", 1_500),
            ("0.1", 100),
            (".5", 500),
            ("1.", 1_000),
            ("007", 7_000),
            ("1.500000000000000000000000000000000000000000000", 1_500),
            ("8Gi", 8 * GI * 1_000),
            ("1.5Gi", 3 * GI / 2 * 1_000),
            ("1Ki", KI * 1_000),
            ("512Mi", 512 * MI * 1_000),
            ("1Ei", (1i128 << 60) * 1_000),
            ("100M", 100_000_000_000),
            ("1k", 1_000_000),
            ("1G", 1_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e+3", 1_000_000),
            ("1e-3", 1),
            ("2.5e-1", 250),
            ("1e0", 1_000),
            ("250m", 250),
            ("0.25", 250),
            ("1500000u", 1_500),
            ("1000000n", 1),
            // Finer than a milli-unit rounds up, away from zero, as Kubernetes does.
            ("1n", 1),
            ("0.0001", 1),
            ("1.0005", 1_001),
            ("-1n", -1),
            ("1e-100", 1),
            ("0e-100", 0),
            ("0Ei", 0),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_milli(input), Ok(*expected), "{input}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        let cases = [
            "", " ", "1 ", " 1", "abc", "m", "Gi", ".", "-", "+", "1..2", "1.2.3", "1mm", "1gi",
            "1GI", "1K", "1Kb", "1e", "1E+", "1e1.5", "1ee3", "1e3m", "--1", "+-1", "1,5", "0x10",
            "1_000", "∞", "1Ki ",
        ];
        for input in cases {
            assert_eq!(
                parse_milli(input),
                Err(QuantityError::Malformed(input.to_owned())),
                "{input:?}"
            );
        }
    }

    #[test]
    fn reports_overflow_instead_of_wrapping() {
        let cases = [
            "1e100",
            "1000000000000000000000Ei",
            "123456789012345678901234567890123456789",
            "1e99999999999",
            // Found by the property test: parsed, but its milli form could not be read back.
            "100000000000000000.1Ei",
            "9223372036854775808",
        ];
        for input in cases {
            assert_eq!(
                parse_milli(input),
                Err(QuantityError::Overflow(input.to_owned())),
                "{input}"
            );
        }
    }

    #[test]
    fn the_largest_kubernetes_quantity_is_accepted() {
        assert_eq!(
            parse_milli("9223372036854775807"),
            Ok(i64::MAX as i128 * 1000)
        );
        assert!(parse_milli("7Ei").is_ok());
        assert!(parse_milli("8Ei").is_err(), "2^63 is one above the largest");
    }

    #[test]
    fn parses_a_quantity_value() {
        assert_eq!(quantity_milli(&Quantity("4".into())), Ok(4_000));
    }

    #[test]
    fn sums_exactly_where_floating_point_would_not() {
        let sum: i128 = ["0.1", "0.2"].iter().map(|q| parse_milli(q).unwrap()).sum();
        assert_eq!(sum, parse_milli("0.3").unwrap());
        let bytes: i128 = ["100M", "1Gi"]
            .iter()
            .map(|q| parse_milli(q).unwrap())
            .sum();
        assert_eq!(bytes, (100_000_000 + GI) * 1_000);
    }

    #[test]
    fn formats_back_to_an_equal_quantity() {
        let cases: &[(i128, QuantityStyle, &str)] = &[
            (0, QuantityStyle::DecimalSI, "0"),
            (2_000, QuantityStyle::DecimalSI, "2"),
            (1_500, QuantityStyle::DecimalSI, "1500m"),
            (-250, QuantityStyle::DecimalSI, "-250m"),
            (0, QuantityStyle::BinarySI, "0"),
            (8 * GI * 1_000, QuantityStyle::BinarySI, "8Gi"),
            (1_536 * MI * 1_000, QuantityStyle::BinarySI, "1536Mi"),
            (KI * 1_000, QuantityStyle::BinarySI, "1Ki"),
            (100_000_000_000, QuantityStyle::BinarySI, "100000000"),
            (1_500, QuantityStyle::BinarySI, "1500m"),
        ];
        for (milli, style, expected) in cases {
            let formatted = format_milli(*milli, *style);
            assert_eq!(formatted.0, *expected);
            assert_eq!(quantity_milli(&formatted), Ok(*milli), "{expected}");
        }
    }
}
