//! `text/csv`: one row per line, RFC 4180 quoting, an optional header row naming features.

use super::frame::{Cell, FrameBuilder};
use super::{Column, DecodeError, Frame};
use crate::model::{ElemType, ModelSignature};

pub fn decode(body: &[u8], sig: &ModelSignature, header: bool) -> Result<Frame, DecodeError> {
    // Excel's "CSV UTF-8" starts with a byte-order mark. The csv crate drops it; the plain
    // reader must too, or the first string cell carries it to the model.
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    if !header && memchr::memchr(b'"', body).is_none() {
        if let Some(frame) = decode_plain(body, sig) {
            return Ok(frame);
        }
    }
    decode_full(body, sig, header)
}

/// Bodies without quotes or a header, split by hand: building csv's reader (a DFA) took more
/// time than everything else in a one-row request, and most bodies need none of what it
/// offers. Values are parsed straight from the body into the input buffer. Anything odd
/// (a wrong width, a bad value) returns None, and the full reader then decodes the body
/// again and reports the problem with its row, column and feature.
fn decode_plain(body: &[u8], sig: &ModelSignature) -> Option<Frame> {
    let nfeat = sig.features.len();
    let one_f32_input = sig.inputs.len() == 1
        && sig.inputs[0].elem == ElemType::Float32
        && sig.inputs[0].width == nfeat;
    if one_f32_input {
        // Bytes, not text: a byte that is not part of a number fails the scan anyway.
        let (rows, values) = super::scan::scan_f32(body, nfeat)?;
        return Some(Frame {
            rows,
            columns: vec![Column::F32(values)],
        });
    }
    let text = std::str::from_utf8(body).ok()?;
    let lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty());
    let mut builder = FrameBuilder::new(sig, body.len() / (nfeat * 4).max(1));
    for (r, line) in lines.enumerate() {
        let mut width = 0;
        for (c, field) in line.split(',').enumerate() {
            if c >= nfeat {
                return None;
            }
            builder.push(r + 1, c + 1, c, Cell::Text(field)).ok()?;
            width += 1;
        }
        if width != nfeat {
            return None;
        }
        builder.end_row();
    }
    Some(builder.finish())
}

fn decode_full(body: &[u8], sig: &ModelSignature, header: bool) -> Result<Frame, DecodeError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let nfeat = sig.features.len();
    // A rough row count from the body size saves regrowing the buffers.
    let rows_hint = body.len() / (nfeat * 4).max(1);
    let mut builder = FrameBuilder::new(sig, rows_hint);
    let mut record = csv::ByteRecord::new();
    // With a header, column_of[f] is the CSV column (0-based) that holds feature f.
    let mut column_of: Option<Vec<usize>> = None;
    let mut row = 0usize;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(syntax(&e, row + 1)),
        }
        if header && column_of.is_none() {
            column_of = Some(header_columns(&record, sig)?);
            continue;
        }
        row += 1;
        if record.len() != nfeat {
            return Err(DecodeError::FeatureCount {
                row,
                expected: nfeat,
                got: record.len(),
                features: sig.feature_list(),
            });
        }
        // Cells are pushed in feature order, each read straight from its column.
        for f in 0..nfeat {
            let c = column_of.as_ref().map_or(f, |cols| cols[f]);
            let field = record.get(c).unwrap_or_default();
            builder.push(row, c + 1, f, Cell::Text(utf8(field, row, c + 1)?))?;
        }
        builder.end_row();
    }
    Ok(builder.finish())
}

/// For each feature, the column of the header that names it. Every feature must be named
/// exactly once, and nothing else, so the result is a permutation of the columns.
fn header_columns(
    record: &csv::ByteRecord,
    sig: &ModelSignature,
) -> Result<Vec<usize>, DecodeError> {
    let mut column_of = vec![0; sig.features.len()];
    let mut seen = vec![false; sig.features.len()];
    for (c, field) in record.iter().enumerate() {
        let name = utf8(field, 0, c + 1)?.trim();
        let f = sig.feature_index(name).ok_or_else(|| {
            DecodeError::Shape(format!(
                "CSV header, column {}: unknown feature \"{name}\"; the model takes: {}",
                c + 1,
                sig.feature_list()
            ))
        })?;
        if std::mem::replace(&mut seen[f], true) {
            return Err(DecodeError::Shape(format!(
                "CSV header, column {}: feature \"{name}\" appears twice",
                c + 1
            )));
        }
        column_of[f] = c;
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(DecodeError::Shape(format!(
            "CSV header lacks feature \"{}\"",
            sig.features[missing].name
        )));
    }
    Ok(column_of)
}

fn utf8(field: &[u8], row: usize, column: usize) -> Result<&str, DecodeError> {
    std::str::from_utf8(field).map_err(|_| {
        let place = if row == 0 {
            format!("CSV header, column {column}")
        } else {
            format!("row {row}, column {column}")
        };
        DecodeError::syntax("csv", format!("{place}: the text is not valid UTF-8"))
    })
}

fn syntax(e: &csv::Error, row: usize) -> DecodeError {
    let line = e.position().map(|p| p.line()).unwrap_or(row as u64);
    DecodeError::syntax("csv", format!("CSV line {line}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_sig::{mixed, tensor3};
    use crate::codec::Column;

    #[test]
    fn rows_with_crlf_and_a_trailing_blank_line() {
        let f = decode(b"1,2,3\r\n4,5.5,-6e1\r\n\r\n", &tensor3(), false).unwrap();
        assert_eq!(f.rows, 2);
        assert_eq!(
            f.columns[0],
            Column::F32(vec![1.0, 2.0, 3.0, 4.0, 5.5, -60.0])
        );
    }

    #[test]
    fn empty_cells_are_missing_values() {
        let f = decode(b"1,,3\n", &tensor3(), false).unwrap();
        let Column::F32(v) = &f.columns[0] else {
            panic!()
        };
        assert!(v[1].is_nan());
    }

    #[test]
    fn wrong_width_names_the_row_and_counts() {
        let err = decode(b"1,2,3\n1,2\n", &tensor3(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 2: expected 3 values (one per feature: a, b, c), got 2"
        );
    }

    #[test]
    fn bad_number_names_row_column_and_feature() {
        let err = decode(b"1,2,3\n1,abc,3\n", &tensor3(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 2, column 2 (feature \"b\"): expected a number (float32), got \"abc\""
        );
    }

    #[test]
    fn header_reorders_columns_by_name() {
        let f = decode(b"c,a,b\n3,1,2\n", &tensor3(), true).unwrap();
        assert_eq!(f.columns[0], Column::F32(vec![1.0, 2.0, 3.0]));
        let err = decode(b"c,a,x\n3,1,2\n", &tensor3(), true).unwrap_err();
        assert!(err.to_string().contains("unknown feature \"x\""), "{err}");
    }

    #[test]
    fn mixed_types_and_quoted_commas() {
        let f = decode(
            b"\"Washington, D.C.\",3,1.5\nM\xc3\xbcnchen,2.0,2\n",
            &mixed(),
            false,
        )
        .unwrap();
        assert_eq!(
            f.columns[0],
            Column::Str(vec!["Washington, D.C.".into(), "München".into()])
        );
        assert_eq!(f.columns[1], Column::I64(vec![3, 2]));
        assert_eq!(f.columns[2], Column::F32(vec![1.5, 2.0]));
        let err = decode(b"x,2.5,1\n", &mixed(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected an integer (int64), got \"2.5\""),
            "{err}"
        );
    }

    #[test]
    fn the_plain_and_full_readers_agree() {
        let bodies: [&[u8]; 8] = [
            b"1,2,3\n4,5.5,-6e1",
            b" 1 ,2,3\r\n\r\n4,,inf\n\n",
            b"0.1,1e-7,340282350000000000000000000000000000000\n",
            b"-0,3.4028235e38,1.17549435e-38\n",
            b"1,2,3\r\n4,5,6\r\n",
            b"1,2,\r\n,,\n",
            b"1.5,-2.25,3\r",
            b"00001.000,12345678901234567890,0.1234567890123456789\n",
        ];
        for body in bodies {
            let plain = decode_plain(body, &tensor3()).expect("plain body");
            let full = decode_full(body, &tensor3(), false).unwrap();
            assert_eq!(format!("{plain:?}"), format!("{full:?}"));
        }
        let body = b"x,3,1.5\ny,2.0,2\n";
        let plain = decode_plain(body, &mixed()).expect("plain body");
        assert_eq!(plain, decode_full(body, &mixed(), false).unwrap());
        // What the plain reader gives up on, the full one reports.
        assert!(decode_plain(b"1,2\n", &tensor3()).is_none());
        assert!(decode_plain(b"1,x,3\n", &tensor3()).is_none());
        assert!(decode_plain(b"1,2,3,4\n", &tensor3()).is_none());
        assert!(decode_plain(b"1,2,3\r4,5,6\n", &tensor3()).is_none());
    }

    #[test]
    fn float32_values_round_trip_exactly_through_text() {
        // Every 9973rd f32 bit pattern, written by the encoder's formatter and read back.
        let mut buf = ryu::Buffer::new();
        let mut body = String::new();
        let mut expected = Vec::new();
        for bits in (0..=u32::MAX).step_by(9973 * 3) {
            let x = f32::from_bits(bits);
            if !x.is_finite() {
                continue;
            }
            for _ in 0..3 {
                body.push_str(buf.format_finite(x));
                body.push(',');
                expected.push(x);
            }
            body.pop();
            body.push('\n');
        }
        let f = decode(body.as_bytes(), &tensor3(), false).unwrap();
        let Column::F32(got) = &f.columns[0] else {
            panic!()
        };
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.to_bits(), e.to_bits(), "{e:e} read back as {g:e}");
        }
    }

    #[test]
    fn a_nul_in_a_string_feature_is_an_invalid_value() {
        // Review M7: ONNX Runtime builds a C string per element, so a NUL used to end in a
        // 500 from the engine instead of a 422 naming the cell.
        let cases: [(&[u8], bool, usize); 3] = [
            (b"Lagos,1,2\nLa\0gos,1,2\n", false, 1),
            (b"Lagos,1,2\n\"La\0gos\",1,2\n", false, 1),
            (b"hours,city,tier\n2,Lagos,1\n2,La\0gos,1\n", true, 2),
        ];
        for (body, header, column) in cases {
            let err = decode(body, &mixed(), header).unwrap_err();
            assert_eq!(err.code(), "invalid_value", "{err}");
            assert!(!err.is_malformed());
            assert_eq!(
                err.to_string(),
                format!(
                    "row 2, column {column} (feature \"city\"): expected a string without NUL \
                     characters, got \"La\\0gos\""
                )
            );
        }
    }

    #[test]
    fn header_order_names_the_csv_column_of_a_bad_value() {
        // Features a..e of a float model, sent in the order e,c,a,d,b: a bad "d" is in CSV
        // column 4, a bad "b" in column 5.
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let sig = crate::codec::test_sig::floats(&names);
        let f = decode(b"e,c,a,d,b\n5,3,1,4,2\n", &sig, true).unwrap();
        assert_eq!(f.columns[0], Column::F32(vec![1., 2., 3., 4., 5.]));
        let err = decode(b"e,c,a,d,b\n5,3,1,4,2\n5,3,1,x,2\n", &sig, true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("row 2, column 4 (feature \"d\")"),
            "{err}"
        );
        let err = decode(b"e,c,a,d,b\n5,3,1,4,y\n", &sig, true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("row 1, column 5 (feature \"b\")"),
            "{err}"
        );
        let err = decode(b"e,c,a,d,b\n5,3,1,4,\xff\n", &sig, true).unwrap_err();
        assert!(err.to_string().contains("row 1, column 5"), "{err}");
    }

    #[test]
    fn a_byte_order_mark_is_not_data() {
        // Found by codec::props: Excel's "CSV UTF-8" starts with a BOM. The csv crate drops it,
        // but the plain reader kept it in the first string cell, so a body without quotes
        // sent the category "\u{feff}Lagos" to the model.
        for body in [
            &b"\xef\xbb\xbfLagos,1,2\n"[..],
            b"\xef\xbb\xbf\"Lagos\",1,2\n",
        ] {
            let f = decode(body, &mixed(), false).unwrap();
            assert_eq!(f.columns[0], Column::Str(vec!["Lagos".into()]));
        }
        let f = decode(b"\xef\xbb\xbf1,2,3\n", &tensor3(), false).unwrap();
        assert_eq!(f.columns[0], Column::F32(vec![1., 2., 3.]));
    }

    #[test]
    fn invalid_utf8_is_a_syntax_error() {
        let err = decode(b"\xff,1,2\n", &mixed(), false).unwrap_err();
        assert!(err.is_malformed());
        assert!(err.to_string().contains("row 1, column 1"), "{err}");
    }
}
