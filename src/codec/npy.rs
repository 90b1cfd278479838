//! `application/x-npy`: a NumPy `.npy` array, 1-D (one row) or 2-D (rows × features), of
//! floats, integers or booleans, little-endian, C order.

use super::frame::{Cell, FrameBuilder};
use super::{Column, DecodeError, Frame};
use crate::model::{ElemType, ModelSignature};

pub const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F4,
    F8,
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
    U8,
    B1,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Self> {
        // By chars: the header is any UTF-8, and a byte index could fall inside a character.
        let mut chars = descr.chars();
        if !matches!(chars.next(), Some('<' | '|' | '=')) {
            return None; // big-endian arrays are rare enough to refuse with a clear message
        }
        Some(match chars.as_str() {
            "f4" => Self::F4,
            "f8" => Self::F8,
            "i1" => Self::I1,
            "i2" => Self::I2,
            "i4" => Self::I4,
            "i8" => Self::I8,
            "u1" => Self::U1,
            "u2" => Self::U2,
            "u4" => Self::U4,
            "u8" => Self::U8,
            "b1" => Self::B1,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I1 | Self::U1 | Self::B1 => 1,
            Self::I2 | Self::U2 => 2,
            Self::F4 | Self::I4 | Self::U4 => 4,
            Self::F8 | Self::I8 | Self::U8 => 8,
        }
    }

    fn cell(self, b: &[u8]) -> Cell<'static> {
        let arr = |n: usize| {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(&b[..n]);
            a
        };
        match self {
            Self::F4 => Cell::Num(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Self::F8 => Cell::Num(f64::from_le_bytes(arr(8))),
            Self::I1 => Cell::Int(i64::from(b[0] as i8)),
            Self::I2 => Cell::Int(i64::from(i16::from_le_bytes([b[0], b[1]]))),
            Self::I4 => Cell::Int(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Self::I8 => Cell::Int(i64::from_le_bytes(arr(8))),
            Self::U1 => Cell::Int(i64::from(b[0])),
            Self::U2 => Cell::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))),
            Self::U4 => Cell::Int(i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Self::U8 => match i64::try_from(u64::from_le_bytes(arr(8))) {
                Ok(v) => Cell::Int(v),
                Err(_) => Cell::Num(u64::from_le_bytes(arr(8)) as f64),
            },
            Self::B1 => Cell::Bool(b[0] != 0),
        }
    }
}

struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
    data_start: usize,
}

fn bad(detail: impl Into<String>) -> DecodeError {
    DecodeError::syntax("npy", format!("invalid .npy body: {}", detail.into()))
}

fn parse_header(body: &[u8]) -> Result<Header, DecodeError> {
    if !body.starts_with(MAGIC) {
        return Err(bad("it does not start with the NumPy magic \\x93NUMPY"));
    }
    let byte = |i: usize| {
        body.get(i)
            .copied()
            .ok_or_else(|| bad("the preamble is truncated"))
    };
    let (len, start): (usize, usize) = match byte(6)? {
        1 => (usize::from(u16::from_le_bytes([byte(8)?, byte(9)?])), 10),
        2 | 3 => (
            u32::from_le_bytes([byte(8)?, byte(9)?, byte(10)?, byte(11)?]) as usize,
            12,
        ),
        v => return Err(bad(format!("unknown format version {v}"))),
    };
    let text = body
        .get(start..start.saturating_add(len))
        .ok_or_else(|| bad("the header is truncated"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("the header is not text"))?;
    let dict = HeaderDict::parse(text)?;
    let descr = dict.descr;
    let dtype = Dtype::parse(descr).ok_or_else(|| {
        bad(format!(
            "dtype {} is not supported; send little-endian float32/float64/int/bool",
            short(descr)
        ))
    })?;
    if dict.fortran_order {
        return Err(bad(
            "Fortran-order arrays are not supported; use np.ascontiguousarray",
        ));
    }
    Ok(Header {
        dtype,
        shape: dict.shape,
        data_start: start + len,
    })
}

/// A header value quoted for a message, cut so that a long one cannot fill the error budget.
fn short(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("'{}...'", &text[..cut]),
        None => format!("'{text}'"),
    }
}

/// The header's Python dict literal, read the way numpy's `ast.literal_eval` reads it: by
/// tokens, so that a key spelled inside another value is a string, not a key. numpy writes
/// exactly the keys `descr`, `fortran_order` and `shape` and refuses any other set; so does
/// this.
struct HeaderDict<'a> {
    descr: &'a str,
    fortran_order: bool,
    shape: Vec<usize>,
}

enum Literal<'a> {
    Str(&'a str),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl<'a> HeaderDict<'a> {
    fn parse(text: &'a str) -> Result<Self, DecodeError> {
        let mut p = Parser { text, at: 0 };
        p.expect(b'{')?;
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        loop {
            if p.eat(b'}') {
                break;
            }
            let key = match p.literal()? {
                Literal::Str(key) => key,
                _ => return Err(p.error("expected a quoted key")),
            };
            p.expect(b':')?;
            let value = p.literal()?;
            let slot_taken = match (key, value) {
                ("descr", Literal::Str(s)) => descr.replace(s).is_some(),
                ("fortran_order", Literal::Bool(b)) => fortran_order.replace(b).is_some(),
                ("shape", Literal::Tuple(t)) => shape.replace(t).is_some(),
                ("descr" | "fortran_order" | "shape", _) => {
                    return Err(bad(format!("the header's '{key}' has the wrong type")))
                }
                (other, _) => {
                    return Err(bad(format!(
                        "the header has key {}; numpy writes 'descr', 'fortran_order', 'shape'",
                        short(other)
                    )))
                }
            };
            if slot_taken {
                return Err(bad(format!("the header has '{key}' twice")));
            }
            if !p.eat(b',') {
                p.expect(b'}')?;
                break;
            }
        }
        if !text.get(p.at..).unwrap_or("").trim().is_empty() {
            return Err(p.error("text after the header's dict"));
        }
        let missing = |k: &str| bad(format!("the header has no '{k}'"));
        Ok(Self {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, what: &str) -> DecodeError {
        bad(format!(
            "cannot read the header at byte {}: {what}",
            self.at
        ))
    }

    fn skip_space(&mut self) {
        let rest = self.text.get(self.at..).unwrap_or("");
        self.at += rest.len() - rest.trim_start().len();
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let found = self.peek() == Some(c);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, c: u8) -> Result<(), DecodeError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", char::from(c))))
        }
    }

    /// A string, True/False, or a tuple of non-negative integers: all a valid header holds.
    fn literal(&mut self) -> Result<Literal<'a>, DecodeError> {
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                let from = self.at + 1;
                let len = self
                    .text
                    .get(from..)
                    .and_then(|rest| rest.find(char::from(q)))
                    .ok_or_else(|| self.error("a string is not closed"))?;
                let s = self.text.get(from..from + len).unwrap_or("");
                if s.contains('\\') {
                    return Err(self.error("escapes are not supported in header strings"));
                }
                self.at = from + len + 1;
                Ok(Literal::Str(s))
            }
            Some(b'(') => {
                self.at += 1;
                let mut dims = Vec::new();
                loop {
                    if self.eat(b')') {
                        break;
                    }
                    dims.push(self.dimension()?);
                    if !self.eat(b',') {
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(Literal::Tuple(dims))
            }
            Some(b'[') => Err(bad(
                "structured (record) dtypes are not supported; send a plain 2-D array",
            )),
            _ => {
                let word = self.word();
                match word {
                    "True" => Ok(Literal::Bool(true)),
                    "False" => Ok(Literal::Bool(false)),
                    _ => Err(self.error("expected a string, True, False or a tuple")),
                }
            }
        }
    }

    /// An integer written by Python: digits, with Python 2's `L` suffix allowed.
    fn dimension(&mut self) -> Result<usize, DecodeError> {
        let word = self.word();
        word.strip_suffix('L')
            .unwrap_or(word)
            .parse()
            .map_err(|_| self.error(&format!("{} is not a dimension", short(word))))
    }

    fn word(&mut self) -> &'a str {
        self.skip_space();
        let rest = self.text.get(self.at..).unwrap_or("");
        let len = rest
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-' && c != '+')
            .unwrap_or(rest.len());
        self.at += len;
        rest.get(..len).unwrap_or("")
    }
}

pub fn decode(body: &[u8], sig: &ModelSignature) -> Result<Frame, DecodeError> {
    let h = parse_header(body)?;
    let nfeat = sig.features.len();
    let (rows, width) = match h.shape.as_slice() {
        [n] if nfeat == 1 => (*n, 1),
        [f] => (1, *f),
        [n, f] => (*n, *f),
        other => {
            return Err(DecodeError::Shape(format!(
                "the array has shape {other:?}; send a 1-D row or a 2-D rows × features array"
            )))
        }
    };
    if width != nfeat {
        return Err(DecodeError::FeatureCount {
            row: 1,
            expected: nfeat,
            got: width,
            features: sig.feature_list(),
        });
    }
    if let Some(f) = sig.features.iter().find(|f| f.elem == ElemType::String) {
        return Err(DecodeError::Shape(format!(
            "feature \"{}\" is a string; numeric .npy arrays cannot carry it, send CSV or JSON",
            f.name
        )));
    }
    let need = rows
        .checked_mul(width)
        .and_then(|n| n.checked_mul(h.dtype.size()))
        .ok_or_else(|| bad("the shape is too large"))?;
    let data = &body[h.data_start.min(body.len())..];
    if data.len() != need {
        return Err(bad(format!(
            "shape {:?} needs {need} bytes of data, the body has {}",
            h.shape,
            data.len()
        )));
    }
    // The common case, float32 rows for one float32 input, is a straight copy.
    if h.dtype == Dtype::F4 && sig.inputs.len() == 1 && sig.inputs[0].elem == ElemType::Float32 {
        let v = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        return Ok(Frame {
            rows,
            columns: vec![Column::F32(v)],
        });
    }
    let mut b = FrameBuilder::new(sig, rows);
    let size = h.dtype.size();
    for (r, row) in data.chunks_exact(size * width.max(1)).enumerate() {
        for (f, cell) in row.chunks_exact(size).enumerate() {
            b.push(r + 1, f + 1, f, h.dtype.cell(cell))?;
        }
        b.end_row();
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_sig::tensor3;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn float32_and_float64_and_int_arrays() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f = decode(&npy("<f4", "(2, 3)", &data), &tensor3()).unwrap();
        assert_eq!(f.columns[0], Column::F32(vec![1., 2., 3., 4., 5., 6.]));
        let data: Vec<u8> = [1f64, 2., 3.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f = decode(&npy("<f8", "(3,)", &data), &tensor3()).unwrap();
        assert_eq!(f.columns[0], Column::F32(vec![1., 2., 3.]));
        let data: Vec<u8> = [7i64, 8, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
        let f = decode(&npy("<i8", "(1, 3)", &data), &tensor3()).unwrap();
        assert_eq!(f.columns[0], Column::F32(vec![7., 8., 9.]));
    }

    #[test]
    fn truncated_and_wrong_width_arrays_are_refused() {
        let data: Vec<u8> = [1f32, 2.].iter().flat_map(|x| x.to_le_bytes()).collect();
        let err = decode(&npy("<f4", "(1, 3)", &data), &tensor3()).unwrap_err();
        assert!(err.to_string().contains("needs 12 bytes"), "{err}");
        let err = decode(&npy("<f4", "(1, 2)", &data), &tensor3()).unwrap_err();
        assert!(err.to_string().contains("expected 3 values"), "{err}");
        let err = decode(&npy(">f4", "(1, 2)", &data), &tensor3()).unwrap_err();
        assert!(err.to_string().contains("'>f4' is not supported"), "{err}");
        assert!(decode(b"\x93NUMPY\x01", &tensor3()).is_err());
        assert!(decode(b"\x93NUMPY\x01\x00\xff\xff", &tensor3()).is_err());
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn f32_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn a_non_ascii_descr_is_refused_not_a_panic() {
        // Review H2: split_at(1) cut inside the 2-byte 'é' and panicked.
        for descr in ["é4", "<é", "€f4", "\u{1F600}"] {
            let body = npy(descr, "(1, 3)", &f32_bytes(&[1., 2., 3.]));
            let err = decode(&body, &tensor3()).unwrap_err();
            assert!(err.is_malformed(), "{err}");
            assert_eq!(err.code(), "invalid_npy");
            assert!(err.to_string().contains("is not supported"), "{err}");
        }
    }

    #[test]
    fn keys_inside_other_values_do_not_fool_the_header_parser() {
        // A string value that spells out another key: the old parser took the first
        // "'shape'" it found, read (2, 3) and decoded two rows of the model's width.
        let data = f32_bytes(&[1., 2., 3., 4., 5., 6.]);
        let fake = with_header(
            "{'note': \"'shape': (2, 3)\", 'descr': '<f4', 'fortran_order': False, 'shape': (1, 6), }\n",
            &data,
        );
        let err = decode(&fake, &tensor3()).unwrap_err();
        assert_eq!(err.code(), "invalid_npy", "{err}");
        assert!(err.to_string().contains("'note'"), "{err}");
        // What numpy's literal_eval accepts is read: double quotes, any key order, no
        // trailing comma, Python 2's 1L.
        let ok = with_header(
            "{\"shape\": (2L,3), \"fortran_order\": False, \"descr\": \"<f4\"}   \n",
            &data,
        );
        let f = decode(&ok, &tensor3()).unwrap();
        assert_eq!(f.rows, 2);
        assert_eq!(f.columns[0], Column::F32(vec![1., 2., 3., 4., 5., 6.]));
    }

    #[test]
    fn malformed_headers_are_invalid_npy() {
        let data = f32_bytes(&[1., 2., 3.]);
        for header in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), 'descr': '<f8'}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 3)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3)} trailing",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -3)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 99999999999999999999999)}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1, 3)}",
            "{'descr': '<f4\\', 'fortran_order': False, 'shape': (1, 3)}",
            "{'descr: '<f4', 'fortran_order': False, 'shape': (1, 3)}",
            "",
            "{",
            "'descr'",
        ] {
            let err = decode(&with_header(header, &data), &tensor3()).unwrap_err();
            assert_eq!(err.code(), "invalid_npy", "{header}: {err}");
        }
        // Versions 2 and 3 have a 4-byte header length: a body that stops inside it.
        for body in [
            &b"\x93NUMPY\x02\x00\x01\x00"[..],
            b"\x93NUMPY\x03\x00\x01\x00\x00",
        ] {
            assert_eq!(decode(body, &tensor3()).unwrap_err().code(), "invalid_npy");
        }
    }
}
