//! Decimal text to floats, exactly as `str::parse` would round them, faster for the plain
//! decimals that CSV exports are made of.
//!
//! Fast path (Clinger's): a decimal without exponent and with a mantissa below 2^53 and at
//! most 22 fraction digits is `m / 10^k` with both operands exact in f64, so one IEEE
//! division gives the correctly rounded f64. For f32, rounding that f64 again is correct
//! unless the f64 sits exactly on a midpoint between two f32s (the only way a second
//! rounding can go the other way, since the f64 is the nearest double to the exact value);
//! that case, and everything else, falls back to `str::parse`.

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The correctly rounded f64 of a plain decimal, or None when the fast path does not apply.
fn fast_f64(text: &[u8]) -> Option<f64> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let mut mantissa: u64 = 0;
    let mut fraction_digits = 0usize;
    let mut seen_digit = false;
    let mut seen_dot = false;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                seen_digit = true;
                fraction_digits += usize::from(seen_dot);
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return None,
        }
    }
    if !seen_digit {
        return None;
    }
    decimal(negative, mantissa, fraction_digits)
}

/// `±mantissa / 10^fraction_digits`, correctly rounded, when both are exact in f64.
pub fn decimal(negative: bool, mantissa: u64, fraction_digits: usize) -> Option<f64> {
    if mantissa >= 1 << 53 || fraction_digits >= POW10.len() {
        return None;
    }
    let value = mantissa as f64 / POW10[fraction_digits];
    Some(if negative { -value } else { value })
}

/// 10^-k as f64, correctly rounded by the compiler.
const NEG_POW10: [f64; 23] = [
    1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13, 1e-14,
    1e-15, 1e-16, 1e-17, 1e-18, 1e-19, 1e-20, 1e-21, 1e-22,
];

/// `±mantissa / 10^fraction_digits` correctly rounded to f32, or None when neither fast
/// path can tell. A product by 10^-k is a few f64 ulps from the exact value (two roundings of
/// at most half an ulp, relative), so it rounds to the same f32 unless it lies near a midpoint
/// between two f32s; only then is the exact division (`decimal`, then `narrow`) paid for, which
/// is the slowest step of reading a number otherwise.
pub fn decimal_f32(negative: bool, mantissa: u64, fraction_digits: usize) -> Option<f32> {
    const BELOW: u64 = (1 << 29) - 1;
    const MIDPOINT: u64 = 1 << 28;
    if mantissa >= 1 << 53 || fraction_digits >= NEG_POW10.len() {
        return None;
    }
    let approx = mantissa as f64 * NEG_POW10[fraction_digits];
    if (approx.to_bits() & BELOW).abs_diff(MIDPOINT) <= 64 {
        return decimal(negative, mantissa, fraction_digits).and_then(narrow);
    }
    let value = approx as f32;
    Some(if negative { -value } else { value })
}

/// A correctly rounded f64 from `decimal` narrowed to f32, unless it lies exactly on an f32
/// midpoint, where a second rounding could differ from rounding the decimal directly.
pub fn narrow(wide: f64) -> Option<f32> {
    // Bits an f64 has below an f32's last mantissa bit (normal range, which every value
    // `decimal` gives other than zero is in: 1e-22 <= |v| < 2^53).
    const BELOW: u64 = (1 << 29) - 1;
    const MIDPOINT: u64 = 1 << 28;
    (wide == 0.0 || wide.to_bits() & BELOW != MIDPOINT).then_some(wide as f32)
}

pub fn parse_f64(text: &str) -> Option<f64> {
    fast_f64(text.as_bytes()).or_else(|| text.parse().ok())
}

pub fn parse_f32(text: &str) -> Option<f32> {
    fast_f64(text.as_bytes())
        .and_then(narrow)
        .or_else(|| text.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_str_parse() {
        let cases = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "+1",
            "1.",
            ".5",
            "-.5",
            "3.14159",
            "0.2754864",
            "0.031328026",
            "123456789.123",
            "9007199254740991",
            "9007199254740993",
            "0.1000000000000000000001",
            "1e5",
            "1E-3",
            "inf",
            "-infinity",
            "NaN",
            "",
            ".",
            "-",
            "1.2.3",
            "12a",
            "0x10",
            "99999999999999999999999",
            "16777217",
            "33554435",
        ];
        for c in cases {
            assert_eq!(
                parse_f32(c).map(f32::to_bits),
                c.parse::<f32>().ok().map(f32::to_bits),
                "f32 {c:?}"
            );
            assert_eq!(
                parse_f64(c).map(f64::to_bits),
                c.parse::<f64>().ok().map(f64::to_bits),
                "f64 {c:?}"
            );
        }
    }

    #[test]
    fn agrees_with_str_parse_on_many_decimals() {
        // Pseudo-random decimals of 1 to 16 digits with 0 to 12 fraction digits, and every
        // f32's shortest text; a splitmix64 sequence keeps the test reproducible.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut buf = ryu::Buffer::new();
        for _ in 0..300_000 {
            let r = next();
            let digits = 1 + (r % 16) as u32;
            let mantissa = next() % 10u64.pow(digits);
            let frac = ((r >> 8) % 13) as usize;
            let mut text = mantissa.to_string();
            if frac > 0 {
                while text.len() <= frac {
                    text.insert(0, '0');
                }
                text.insert(text.len() - frac, '.');
            }
            assert_eq!(
                parse_f32(&text).map(f32::to_bits),
                text.parse::<f32>().ok().map(f32::to_bits),
                "{text}"
            );
            assert_eq!(parse_f64(&text), text.parse::<f64>().ok(), "{text}");
            let x = f32::from_bits(next() as u32);
            if x.is_finite() {
                let shortest = buf.format_finite(x);
                assert_eq!(
                    parse_f32(shortest).map(f32::to_bits),
                    Some(x.to_bits()),
                    "{shortest}"
                );
            }
        }
    }

    /// Every finite f32: its shortest text (what the encoders write) reads back as the same
    /// f32. CSV cells and JSON numbers (kept as text) both go through `parse_f32`. Reading
    /// through a float64 first would fail this, at 7.038531e-26 for one. Minutes of CPU, so
    /// run on demand: `cargo test --release -- --ignored every_f32`.
    #[test]
    #[ignore]
    fn every_f32_round_trips_through_text() {
        let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
        let span = (1u64 << 32).div_ceil(threads);
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    let mut buf = ryu::Buffer::new();
                    let end = ((t + 1) * span).min(1 << 32);
                    for bits in t * span..end {
                        let x = f32::from_bits(bits as u32);
                        if x.is_finite() {
                            let text = buf.format_finite(x);
                            assert_eq!(
                                parse_f32(text).map(f32::to_bits),
                                Some(bits as u32),
                                "{text}"
                            );
                        }
                    }
                });
            }
        });
    }
}

#[cfg(test)]
mod decimal_props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The product-by-10^-k path gives the f32 that `str::parse` gives, whatever the
        /// mantissa and the count of fraction digits (near midpoints it defers to the division).
        #[test]
        fn decimal_f32_rounds_as_str_parse(
            mantissa in 0u64..(1 << 53),
            k in 0usize..23,
            negative in any::<bool>(),
        ) {
            let text = format!("{}{mantissa}e-{k}", if negative { "-" } else { "" });
            let want: f32 = text.parse().unwrap();
            if let Some(got) = decimal_f32(negative, mantissa, k) {
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{}", text);
            }
        }

        /// Decimals within a few units of their last digit of a midpoint between two f32s,
        /// where a product's error could round the wrong way: still the f32 of `str::parse`.
        #[test]
        fn decimal_f32_near_midpoints(bits in 0x3000_0000u32..0x4E00_0000, delta in -3i64..4) {
            let (x, next) = (f32::from_bits(bits), f32::from_bits(bits + 1));
            let mid = (f64::from(x) + f64::from(next)) / 2.0;
            let mut k = (15.0 - mid.log10()).floor().clamp(0.0, 22.0) as i32;
            while k > 0 && mid * 10f64.powi(k) >= (1u64 << 53) as f64 {
                k -= 1;
            }
            let mantissa = ((mid * 10f64.powi(k)).round() as i64 + delta).max(0) as u64;
            let text = format!("{mantissa}e-{k}");
            let want: f32 = text.parse().unwrap();
            if let Some(got) = decimal_f32(false, mantissa, k as usize) {
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{}", text);
            }
        }
    }
}
