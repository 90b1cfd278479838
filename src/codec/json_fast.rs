//! The common JSON shapes decoded while they are parsed, with no `serde_json::Value` tree:
//! `{"instances": [row, ...]}`, a bare `[row, ...]`, and JSON Lines rows, where a row is an
//! array of values or a record of named values. Strings are borrowed from the body and
//! numbers go straight to the feature's buffer; building the tree (a map and a `String` per
//! key) was most of the cost of a one-record request.
//!
//! Anything else (other keys, `inputs`, escaped strings, nested values, any error) returns
//! None, and `json::decode` decodes the body again through the tree, which also writes the
//! precise error message.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::frame::{Cell, FrameBuilder};
use super::Frame;
use crate::model::ModelSignature;

/// Why the fast path gave up; never shown, the tree path reports instead.
#[derive(Debug)]
struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a fast-path shape")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

pub fn decode(body: &[u8], sig: &ModelSignature) -> Option<Frame> {
    let mut rows = Rows::new(sig, body.len());
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_any(Top(&mut rows)).ok()?;
    de.end().ok()?;
    Some(rows.builder.finish())
}

pub fn decode_lines(body: &[u8], sig: &ModelSignature) -> Option<Frame> {
    let mut rows = Rows::new(sig, body.len());
    for line in body.split(|&c| c == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut de = serde_json::Deserializer::from_slice(line);
        rows.row(&mut de).ok()?;
        de.end().ok()?;
    }
    Some(rows.builder.finish())
}

struct Rows<'s, 'de> {
    builder: FrameBuilder<'s>,
    /// One row's cells by feature, reused from row to row.
    slots: Vec<Option<Cell<'de>>>,
}

impl<'s, 'de> Rows<'s, 'de> {
    fn new(sig: &'s ModelSignature, body_len: usize) -> Self {
        Self {
            builder: FrameBuilder::new(sig, body_len / (sig.features.len() * 8).max(1)),
            slots: vec![None; sig.features.len()],
        }
    }

    /// Reads one row (an array or a record) and appends it in feature order.
    fn row<D: Deserializer<'de>>(&mut self, d: D) -> Result<(), D::Error> {
        self.slots.iter_mut().for_each(|s| *s = None);
        d.deserialize_any(RowVisitor {
            slots: &mut self.slots,
            sig: self.builder.signature(),
        })?;
        let row = self.builder.rows() + 1;
        for (f, slot) in self.slots.iter().enumerate() {
            let cell = slot.ok_or_else(|| de::Error::custom(GiveUp))?;
            self.builder
                .push(row, f + 1, f, cell)
                .map_err(|_| de::Error::custom(GiveUp))?;
        }
        self.builder.end_row();
        Ok(())
    }
}

struct Top<'r, 's, 'de>(&'r mut Rows<'s, 'de>);

impl<'de> Visitor<'de> for Top<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rows")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match map.next_key::<&'de str>()? {
            Some("instances") => map.next_value_seed(RowList(self.0))?,
            _ => return Err(de::Error::custom(GiveUp)),
        }
        match map.next_key::<&'de str>()? {
            None => Ok(()),
            Some(_) => Err(de::Error::custom(GiveUp)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        RowList(self.0).visit_seq(seq)
    }
}

struct RowList<'r, 's, 'de>(&'r mut Rows<'s, 'de>);

impl<'de> DeserializeSeed<'de> for RowList<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowList<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(OneRow(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct OneRow<'r, 's, 'de>(&'r mut Rows<'s, 'de>);

impl<'de> DeserializeSeed<'de> for OneRow<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.row(d)
    }
}

struct RowVisitor<'r, 'de> {
    slots: &'r mut [Option<Cell<'de>>],
    sig: &'r ModelSignature,
}

impl<'de> Visitor<'de> for RowVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(cell) = seq.next_element_seed(CellSeed)? {
            *self
                .slots
                .get_mut(i)
                .ok_or_else(|| de::Error::custom(GiveUp))? = Some(cell);
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<&'de str>()? {
            let f = self
                .sig
                .feature_index(name)
                .ok_or_else(|| de::Error::custom(GiveUp))?;
            let cell = map.next_value_seed(CellSeed)?;
            if self.slots[f].replace(cell).is_some() {
                return Err(de::Error::custom(GiveUp));
            }
        }
        Ok(())
    }
}

struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell<'de>;

    /// The value's raw text: numbers stay decimals (see `Cell::Decimal`), strings are
    /// borrowed when they hold no escape.
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cell<'de>, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let text = raw.get().trim();
        Ok(match text.as_bytes().first() {
            Some(b'"') => {
                let inner = &text[1..text.len() - 1];
                if inner.contains('\\') {
                    return Err(de::Error::custom(GiveUp));
                }
                Cell::Text(inner)
            }
            Some(b't') => Cell::Bool(true),
            Some(b'f') => Cell::Bool(false),
            Some(b'n') => Cell::Missing,
            Some(b'-' | b'0'..=b'9') => Cell::Decimal(text),
            _ => return Err(de::Error::custom(GiveUp)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json;
    use crate::codec::test_sig::{mixed, tensor3};

    #[test]
    fn agrees_with_the_tree_decoder() {
        let bodies: [&[u8]; 6] = [
            br#"{"instances": [[1, 2.5, -3e2], [4, null, 6]]}"#,
            br#"[[1, 2, 3]]"#,
            br#"{"instances": [{"c": 3, "a": 1, "b": 2}]}"#,
            br#"[{"a": 1, "b": 2, "c": 3}, [4, 5, 6]]"#,
            br#"{"instances": []}"#,
            b" [ [0.1, 0.2, 0.30000001] ] \n",
        ];
        for body in bodies {
            let fast = decode(body, &tensor3()).expect("fast shape");
            let tree = json::decode_tree(body, &tensor3()).unwrap();
            // Debug text, since NaN (a null) is not equal to itself.
            assert_eq!(
                format!("{fast:?}"),
                format!("{tree:?}"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let body =
            br#"{"instances": [["Berlin", 3, 1.5], {"hours": 2, "city": "Lyon", "tier": 2}]}"#;
        let fast = decode(body, &mixed()).expect("fast shape");
        assert_eq!(fast, json::decode_tree(body, &mixed()).unwrap());
    }

    #[test]
    fn gives_up_on_what_the_tree_decoder_handles_or_reports() {
        let sig = tensor3();
        for body in [
            &br#"[1, 2, 3]"#[..],
            br#"{"a": 1, "b": 2, "c": 3}"#,
            br#"{"inputs": {"x": [[1, 2, 3]]}}"#,
            br#"{"instances": [[1, 2, 3]], "other": 1}"#,
            br#"{"instances": [[1, 2]]}"#,
            br#"{"instances": [[1, 2, 3, 4]]}"#,
            br#"{"instances": [{"a": 1, "b": 2}]}"#,
            br#"{"instances": [{"a": 1, "a": 1, "b": 2, "c": 3}]}"#,
            br#"{"instances": [[1, [2], 3]]}"#,
            br#"{"instances": [[1, "x", 3]]}"#,
            br#"{"instances": [[1, 2, 3]]"#,
        ] {
            assert!(
                decode(body, &sig).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // An escaped string cannot be borrowed from the body.
        assert!(decode(br#"[["a\"b", 1, 2]]"#, &mixed()).is_none());
    }

    #[test]
    fn float32_values_round_trip_exactly_through_json() {
        // 7.038531e-26 read as a float64 and then narrowed comes out one ulp off.
        let xs = [
            7.038_531e-26_f32,
            0.1,
            16_777_217.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
        ];
        let mut buf = ryu::Buffer::new();
        let rows: Vec<String> = xs
            .iter()
            .map(|x| format!("[{0}, {0}, {0}]", buf.format_finite(*x)))
            .collect();
        let body = format!("[{}]", rows.join(","));
        for frame in [
            decode(body.as_bytes(), &tensor3()).expect("fast shape"),
            json::decode_tree(body.as_bytes(), &tensor3()).unwrap(),
        ] {
            let crate::codec::Column::F32(got) = &frame.columns[0] else {
                panic!()
            };
            for (i, x) in xs.iter().enumerate() {
                assert_eq!(got[3 * i].to_bits(), x.to_bits(), "{x:e}");
            }
        }
    }

    #[test]
    fn json_lines_rows() {
        let body = b"[1, 2, 3]\r\n\n{\"a\": 4, \"b\": 5, \"c\": 6}\n";
        let fast = decode_lines(body, &tensor3()).expect("fast shape");
        assert_eq!(fast, json::decode_lines_tree(body, &tensor3()).unwrap());
    }
}
