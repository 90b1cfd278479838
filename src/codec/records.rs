//! Line-oriented bodies (CSV without header or quotes, JSON Lines) as records: one per
//! non-blank line. What chunked scoring and `mlapp transform` share: counting records, and
//! decoding a piece with bad records set aside (placeholder mode) instead of failing it.

use super::lines::LineEnds;
use super::{decode as decode_body, DecodeError, Frame, InputFormat};
use crate::model::ModelSignature;

/// A piece's records: the good ones as one frame, and the reasons of the bad ones by their
/// index among the piece's records.
pub struct Rows {
    pub frame: Option<Frame>,
    pub bad: Vec<(usize, String)>,
    pub total: usize,
}

/// Lines the decoders skip: they are not records.
pub fn is_blank(format: InputFormat, line: &[u8]) -> bool {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    match format {
        InputFormat::JsonLines => text.iter().all(u8::is_ascii_whitespace),
        _ => text.is_empty(),
    }
}

/// The lines of a piece, split where the format's records end: `\n` (so `\r\n` too) for
/// JSON Lines, and `\n`, `\r\n` or a lone `\r` for CSV, as the CSV decoder reads them (so a
/// CR-only file gets one answer line per record in placeholder mode too).
fn lines(format: InputFormat, piece: &[u8]) -> Vec<&[u8]> {
    match LineEnds::of(format) {
        LineEnds::Lf => piece.split(|&b| b == b'\n').collect(),
        LineEnds::LfOrCr => {
            let mut out = Vec::new();
            let mut start = 0;
            let mut ends = memchr::memchr2_iter(b'\n', b'\r', piece).peekable();
            while let Some(at) = ends.next() {
                out.push(&piece[start..at]);
                // A \r\n is one line end.
                let crlf = piece[at] == b'\r' && piece.get(at + 1) == Some(&b'\n');
                if crlf {
                    ends.next();
                }
                start = at + 1 + usize::from(crlf);
            }
            out.push(&piece[start..]);
            out
        }
    }
}

/// Decodes a piece. With `placeholders`, a piece that fails is decoded line by line, and
/// its bad records are set aside with their reasons; without, the error is returned.
pub fn decode(
    format: InputFormat,
    piece: &[u8],
    sig: &ModelSignature,
    placeholders: bool,
) -> Result<Rows, DecodeError> {
    match decode_body(format, piece, sig) {
        Ok(frame) => Ok(Rows {
            total: frame.rows,
            frame: Some(frame),
            bad: Vec::new(),
        }),
        Err(DecodeError::Empty) => Ok(Rows {
            frame: None,
            bad: Vec::new(),
            total: 0,
        }),
        Err(_) if placeholders => Ok(line_by_line(format, piece, sig)),
        Err(e) => Err(e),
    }
}

/// Each line decoded alone, the good ones then decoded together. Only pieces with a bad
/// record pay for this.
fn line_by_line(format: InputFormat, piece: &[u8], sig: &ModelSignature) -> Rows {
    let mut good = Vec::with_capacity(piece.len());
    let mut bad = Vec::new();
    let mut total = 0;
    for line in lines(format, piece) {
        if is_blank(format, line) {
            continue;
        }
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        match decode_body(format, text, sig) {
            Ok(_) => {
                good.extend_from_slice(text);
                good.push(b'\n');
            }
            Err(e) => bad.push((total, e.to_string())),
        }
        total += 1;
    }
    // Every good line decoded alone, so together they decode too.
    let frame = (!good.is_empty())
        .then(|| decode_body(format, &good, sig).ok())
        .flatten();
    Rows { frame, bad, total }
}

/// A bad record's reason with the row it has in the whole body (0-based `row`). The reason
/// of a record decoded alone says "row 1" or "line 1"; that is replaced.
pub fn reason_at(row: usize, reason: &str) -> String {
    let detail = ["row 1: ", "row 1, ", "line 1: ", "CSV line 1: "]
        .iter()
        .find_map(|p| {
            reason
                .strip_prefix(p)
                .map(|rest| (p.starts_with("row 1, "), rest))
        });
    match detail {
        Some((true, rest)) => format!("row {}, {rest}", row + 1),
        Some((false, rest)) => format!("row {}: {rest}", row + 1),
        None => format!("row {}: {reason}", row + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_sig::tensor3;

    #[test]
    fn bad_records_are_set_aside_with_their_rows() {
        let csv = InputFormat::Csv { header: false };
        let body = b"1,2,3\r\n\r\n4,5\n6,x,8\n9,10,11\n";
        assert!(decode(csv, body, &tensor3(), false).is_err());
        let rows = decode(csv, body, &tensor3(), true).unwrap();
        assert_eq!(rows.total, 4);
        assert_eq!(rows.frame.unwrap().rows, 2);
        let reasons: Vec<String> = rows.bad.iter().map(|(i, r)| reason_at(10 + i, r)).collect();
        assert_eq!(
            reasons,
            [
                "row 12: expected 3 values (one per feature: a, b, c), got 2",
                "row 13, column 2 (feature \"b\"): expected a number (float32), got \"x\"",
            ]
        );
        let jsonl = decode(
            InputFormat::JsonLines,
            b"[1,2,3]\n  \n[1,\n",
            &tensor3(),
            true,
        )
        .unwrap();
        assert_eq!((jsonl.total, jsonl.bad.len()), (2, 1));
        // CSV records end at a lone \r too, as the CSV decoder reads them.
        let cr = decode(csv, b"1,2,3\r4,x,6\r\r7,8,9\r\n1,2,3", &tensor3(), true).unwrap();
        assert_eq!((cr.total, cr.bad.len()), (4, 1));
        assert_eq!(cr.bad[0].0, 1);

        assert!(reason_at(1, &jsonl.bad[0].1).starts_with("row 2: invalid JSON"));
    }
}
