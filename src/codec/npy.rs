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
        let (order, code) = descr.split_at(descr.len().min(1));
        if !matches!(order, "<" | "|" | "=") {
            return None; // big-endian arrays are rare enough to refuse with a clear message
        }
        Some(match code {
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
    if !body.starts_with(MAGIC) || body.len() < 10 {
        return Err(bad("it does not start with the NumPy magic \\x93NUMPY"));
    }
    let (len, start): (usize, usize) = match body[6] {
        1 => (usize::from(u16::from_le_bytes([body[8], body[9]])), 10),
        2 | 3 if body.len() >= 12 => (
            u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unknown format version {v}"))),
    };
    let text = body
        .get(start..start.saturating_add(len))
        .ok_or_else(|| bad("the header is truncated"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("the header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = text.find(&format!("'{key}'"))? + key.len() + 2;
        Some(text[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad("the header has no 'descr'"))?;
    let dtype = Dtype::parse(descr).ok_or_else(|| {
        bad(format!(
            "dtype '{descr}' is not supported; send little-endian float32/float64/int/bool"
        ))
    })?;
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad(
            "Fortran-order arrays are not supported; use np.ascontiguousarray",
        ));
    }
    let shape_text = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("the header has no 'shape'"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("cannot read shape ({shape_text})")))?;
    Ok(Header {
        dtype,
        shape,
        data_start: start + len,
    })
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
}
