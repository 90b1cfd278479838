//! The numbers of a plain CSV body (no quotes, no header, every feature a float), in one
//! pass over the bytes. Most of a large body's bytes are digits, and parsing them is the
//! largest cost of scoring it after ONNX Runtime itself, so the loop that reads them is kept
//! short: a digit is one subtraction and compare, the mantissa is checked for overflow once
//! per field (by its count of digits), and the result comes from `number::decimal_f32`
//! (correctly rounded, mostly without a division). A field that is not a plain decimal (an
//! empty cell, spaces, an exponent, `nan`, a `+`) is read by `number::parse_f32`, so the
//! result is always what `str::parse` gives. (Reading eight bytes at a time was tried and was
//! slower: its data-dependent branches mispredict more than this loop's.)

use super::number;

/// Rows of float fields: the values in row order and the count of rows, or None when a row
/// does not have `nfeat` fields or a field is not a number. Blank lines (empty, or a lone `\r`
/// before `\n`) are skipped; `\r\n` ends a line as `\n` does.
pub(super) fn scan_f32(body: &[u8], nfeat: usize) -> Option<(usize, Vec<f32>)> {
    let mut values = Vec::with_capacity(body.len() / 4);
    let (mut rows, mut i, n) = (0, 0, body.len());
    while i < n {
        match body[i] {
            b'\n' => {
                i += 1;
                continue;
            }
            // A blank line: `\r\n`, or a lone `\r` that ends the body.
            b'\r' if matches!(body.get(i + 1), None | Some(b'\n')) => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let first = values.len();
        loop {
            let (value, end) = field(body, i)?;
            values.push(value);
            match body.get(end) {
                Some(b',') => i = end + 1,
                Some(b'\r') => {
                    i = end + 2;
                    break;
                }
                Some(_) => {
                    i = end + 1;
                    break;
                }
                None => {
                    i = n;
                    break;
                }
            }
        }
        if values.len() - first != nfeat {
            return None;
        }
        rows += 1;
    }
    Some((rows, values))
}

/// Reads the digits at `b[i..]` into `m` (wrapping: the caller checks the count); the index
/// after them.
#[inline(always)]
fn run(b: &[u8], mut i: usize, m: &mut u64) -> usize {
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        *m = m.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    i
}

/// The field starting at `start` and the index of what ends it (`,`, `\n`, the `\r` of
/// `\r\n`, or the end of the body).
fn field(b: &[u8], start: usize) -> Option<(f32, usize)> {
    let n = b.len();
    let negative = b.get(start) == Some(&b'-');
    let first = start + usize::from(negative);
    let mut mantissa = 0u64;
    let mut i = run(b, first, &mut mantissa);
    let int_end = i;
    let dot = b.get(i) == Some(&b'.');
    if dot {
        i = run(b, i + 1, &mut mantissa);
    }
    let fraction = (i - int_end).saturating_sub(1);
    // At most 19 digits: the mantissa did not wrap (10^19 < 2^64).
    let digits = i - first - usize::from(dot);
    let ends = match b.get(i) {
        None | Some(b',') | Some(b'\n') => true,
        Some(b'\r') => matches!(b.get(i + 1), None | Some(b'\n')),
        Some(_) => false,
    };
    if ends && (1..=19).contains(&digits) {
        if let Some(v) = number::decimal_f32(negative, mantissa, fraction) {
            return Some((v, i));
        }
    }
    let end = b[start..]
        .iter()
        .position(|&c| c == b',' || c == b'\n')
        .map_or(n, |p| start + p);
    // A `\r` may end the field only as the `\r` of a `\r\n` or the body's last byte. Any
    // other ends a record for the CSV reader (and where pieces are cut): the full reader, not
    // a trim here, then decides what the body holds.
    let field = &b[start..end];
    let (text, term) = match field.strip_suffix(b"\r") {
        Some(text) if end == n || b[end] == b'\n' => (text, end - 1),
        _ => (field, end),
    };
    if text.contains(&b'\r') {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?.trim();
    let value = if text.is_empty() {
        f32::NAN
    } else {
        number::parse_f32(text)?
    };
    Some((value, term))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the scanner must give, the plain way: lines split at `\n` (one trailing `\r`
    /// dropped), blank ones skipped, fields split at `,`, trimmed, parsed by `str::parse`.
    fn reference(body: &[u8], nfeat: usize) -> Option<(usize, Vec<f32>)> {
        let text = std::str::from_utf8(body).ok()?;
        let mut values = Vec::new();
        let mut rows = 0;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if line.contains('\r') {
                return None; // a record end of the CSV reader's: not for the fast scanner
            }
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != nfeat {
                return None;
            }
            for f in fields {
                let f = f.trim();
                values.push(if f.is_empty() {
                    f32::NAN
                } else {
                    f.parse().ok()?
                });
            }
            rows += 1;
        }
        Some((rows, values))
    }

    fn bits(r: Option<(usize, Vec<f32>)>) -> Option<(usize, Vec<u32>)> {
        r.map(|(n, v)| (n, v.iter().map(|x| x.to_bits()).collect()))
    }

    #[test]
    fn plain_rows_blank_lines_and_line_ends() {
        let body = b"1.5,-2,0.031328026\r\n\r\n\n3,4.25,5.\n6,,7e1";
        assert_eq!(bits(scan_f32(body, 3)), bits(reference(body, 3)));
        let (rows, v) = scan_f32(body, 3).unwrap();
        assert_eq!(rows, 3);
        assert_eq!(v[..3], [1.5, -2.0, 0.031_328_026]);
        assert!(v[7].is_nan() && v[8] == 70.0);
        assert_eq!(scan_f32(b"1,2\n3\n", 2), None);
        assert_eq!(scan_f32(b"1,2\n3,x\n", 2), None);
        assert_eq!(scan_f32(b"1.2.3,4\n", 2), None);
        assert_eq!(scan_f32(b"", 2), Some((0, vec![])));
    }

    /// A field: a plain decimal of any length, or something the slow path must read.
    fn field_text() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => ("-?", "[0-9]{0,12}", proptest::option::of("[0-9]{0,20}")).prop_map(
                |(s, i, f)| match f {
                    Some(f) => format!("{s}{i}.{f}"),
                    None => format!("{s}{i}"),
                }
            ),
            1 => "[ +.eE0-9a-z\r-]{0,6}",
        ]
    }

    proptest! {
        #[test]
        fn the_scanner_reads_what_str_parse_reads(
            rows in proptest::collection::vec(
                (proptest::collection::vec(field_text(), 1..5), prop_oneof!["\n", "\r\n", "\n\n", "\r"]),
                0..6),
            nfeat in 1usize..5,
            last_eol in any::<bool>(),
        ) {
            let mut body = String::new();
            for (i, (fields, eol)) in rows.iter().enumerate() {
                body.push_str(&fields.join(","));
                if i + 1 < rows.len() || last_eol {
                    body.push_str(eol);
                }
            }
            let got = bits(scan_f32(body.as_bytes(), nfeat));
            let want = bits(reference(body.as_bytes(), nfeat));
            prop_assert_eq!(got, want, "{:?}", body);
        }
    }
}
