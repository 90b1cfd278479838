//! Round trips: rows for a signature, written as every body mlapp accepts, read back as the
//! same values (floats bit for bit, strings as text), or refused where a string holds a NUL.

use proptest::prelude::*;

use super::{cases, signatures};
use crate::codec::{decode, Column, Frame, InputFormat};
use crate::model::{ElemType, ModelSignature};

/// One feature's value in a generated row.
#[derive(Clone, Debug)]
enum V {
    F32(f32),
    F64(f64),
    I64(i64),
    I32(i32),
    Bool(bool),
    Str(String),
}

fn value(elem: ElemType) -> BoxedStrategy<V> {
    use proptest::num::{f32 as f4, f64 as f8};
    match elem {
        ElemType::Float32 => (f4::POSITIVE | f4::NEGATIVE | f4::NORMAL | f4::SUBNORMAL | f4::ZERO)
            .prop_map(V::F32)
            .boxed(),
        ElemType::Float64 => (f8::POSITIVE | f8::NEGATIVE | f8::NORMAL | f8::SUBNORMAL | f8::ZERO)
            .prop_map(V::F64)
            .boxed(),
        ElemType::Int64 => any::<i64>().prop_map(V::I64).boxed(),
        ElemType::Int32 => any::<i32>().prop_map(V::I32).boxed(),
        ElemType::Bool => any::<bool>().prop_map(V::Bool).boxed(),
        // Any text but the byte-order mark, which a CSV body may start with and which is then
        // not data. Now and then a NUL, which string features refuse.
        ElemType::String => prop_oneof![
            9 => "[^\u{0}\u{feff}]{0,10}",
            1 => "[^\u{feff}]{0,4}\u{0}[^\u{feff}]{0,4}",
            // Trailing zeros, which reading the number as a double would lose.
            1 => "-?(0|[1-9][0-9]{0,3})\\.[0-9]{0,2}0",
        ]
        .prop_map(V::Str)
        .boxed(),
    }
}

/// Rows for one of the signatures, and a column order for CSV headers and JSON records.
fn table() -> impl Strategy<Value = (usize, Vec<Vec<V>>, Vec<usize>)> {
    (0..signatures().len()).prop_flat_map(|s| {
        let sig = &signatures()[s];
        let row: Vec<BoxedStrategy<V>> = sig.features.iter().map(|f| value(f.elem)).collect();
        let order: Vec<usize> = (0..sig.features.len()).collect();
        (
            Just(s),
            prop::collection::vec(row, 1..5),
            Just(order).prop_shuffle(),
        )
    })
}

/// A value as the encoders write it: shortest float text, plain integers, true/false.
fn text(v: &V) -> String {
    let mut buf = ryu::Buffer::new();
    match v {
        V::F32(x) => buf.format_finite(*x).to_owned(),
        V::F64(x) => buf.format_finite(*x).to_owned(),
        V::I64(x) => x.to_string(),
        V::I32(x) => x.to_string(),
        V::Bool(b) => b.to_string(),
        V::Str(s) => s.clone(),
    }
}

/// A category that looks like a decimal (a float column turned into strings) is sent as a JSON
/// number, whose text the string feature must keep.
fn json(v: &V) -> String {
    let decimal = |s: &str| {
        s.contains('.') && serde_json::from_str::<serde_json::Value>(s).is_ok_and(|v| v.is_number())
    };
    match v {
        V::Str(s) if decimal(s) => s.clone(),
        V::Str(s) => serde_json::to_string(s).unwrap(),
        other => text(other),
    }
}

/// The frame the rows should decode to.
fn expected(sig: &ModelSignature, rows: &[Vec<V>]) -> Frame {
    let mut columns: Vec<Column> = sig
        .inputs
        .iter()
        .map(|i| match i.elem {
            ElemType::Float32 => Column::F32(vec![]),
            ElemType::Float64 => Column::F64(vec![]),
            ElemType::Int64 => Column::I64(vec![]),
            ElemType::Int32 => Column::I32(vec![]),
            ElemType::Bool => Column::Bool(vec![]),
            ElemType::String => Column::Str(vec![]),
        })
        .collect();
    for row in rows {
        for (f, v) in row.iter().enumerate() {
            match (&mut columns[sig.features[f].input], v) {
                (Column::F32(c), V::F32(x)) => c.push(*x),
                (Column::F64(c), V::F64(x)) => c.push(*x),
                (Column::I64(c), V::I64(x)) => c.push(*x),
                (Column::I32(c), V::I32(x)) => c.push(*x),
                (Column::Bool(c), V::Bool(x)) => c.push(*x),
                (Column::Str(c), V::Str(x)) => c.push(x.clone()),
                other => unreachable!("{other:?}"),
            }
        }
    }
    Frame {
        rows: rows.len(),
        columns,
    }
}

fn csv_body(sig: &ModelSignature, rows: &[Vec<V>], order: Option<&[usize]>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(vec![]);
    let identity: Vec<usize> = (0..sig.features.len()).collect();
    let cols = order.unwrap_or(&identity);
    if order.is_some() {
        w.write_record(cols.iter().map(|&f| &sig.features[f].name))
            .unwrap();
    }
    for row in rows {
        w.write_record(cols.iter().map(|&f| text(&row[f]))).unwrap();
    }
    w.into_inner().unwrap()
}

/// Every JSON and JSON Lines body that carries these rows.
fn json_bodies(
    sig: &ModelSignature,
    rows: &[Vec<V>],
    order: &[usize],
) -> Vec<(InputFormat, String)> {
    let array = |row: &Vec<V>| format!("[{}]", row.iter().map(json).collect::<Vec<_>>().join(","));
    let record = |row: &Vec<V>| {
        let fields: Vec<String> = order
            .iter()
            .map(|&f| format!("{:?}:{}", sig.features[f].name, json(&row[f])))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let list = |each: &dyn Fn(&Vec<V>) -> String, sep: &str| {
        rows.iter().map(each).collect::<Vec<_>>().join(sep)
    };
    let arrays = list(&array, ",");
    let records = list(&record, ",");
    let named: Vec<String> = sig
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let feats: Vec<usize> = (0..sig.features.len())
                .filter(|&f| sig.features[f].input == i)
                .collect();
            let per_row: Vec<String> = rows
                .iter()
                .map(|row| {
                    let cells: Vec<String> = feats.iter().map(|&f| json(&row[f])).collect();
                    if input.width == 1 {
                        cells.join(",")
                    } else {
                        format!("[{}]", cells.join(","))
                    }
                })
                .collect();
            format!("{:?}:[{}]", input.name, per_row.join(","))
        })
        .collect();
    let mut bodies = vec![
        (InputFormat::Json, format!("[{arrays}]")),
        (InputFormat::Json, format!("{{\"instances\":[{arrays}]}}")),
        (InputFormat::Json, format!("[{records}]")),
        (InputFormat::Json, format!("{{\"instances\": [{records}]}}")),
        (InputFormat::Json, format!("{{\"inputs\":[{arrays}]}}")),
        (
            InputFormat::Json,
            format!("{{\"inputs\":{{{}}}}}", named.join(",")),
        ),
        (InputFormat::JsonLines, list(&array, "\n")),
        (InputFormat::JsonLines, list(&record, "\r\n") + "\n"),
    ];
    if let [row] = rows {
        bodies.push((InputFormat::Json, array(row)));
        bodies.push((InputFormat::Json, record(row)));
    }
    bodies
}

fn npy_f32_bodies(rows: &[Vec<V>], width: usize) -> Vec<Vec<u8>> {
    let values: Vec<f32> = rows
        .iter()
        .flatten()
        .map(|v| match v {
            V::F32(x) => *x,
            other => unreachable!("{other:?}"),
        })
        .collect();
    let with = |descr: &str, data: Vec<u8>| {
        let header = format!(
            "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {width}), }}\n",
            rows.len()
        );
        let mut out = crate::codec::npy::MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    };
    vec![
        with("<f4", values.iter().flat_map(|x| x.to_le_bytes()).collect()),
        with(
            "<f8",
            values
                .iter()
                .flat_map(|x| f64::from(*x).to_le_bytes())
                .collect(),
        ),
    ]
}

proptest! {
    #![proptest_config(cases(32))]

    #[test]
    fn rows_read_back_the_same_in_every_format((s, rows, order) in table()) {
        let sig = &signatures()[s];
        // Debug text compares floats bit for bit (-0.0 is not 0.0) and is readable on failure.
        let want = format!("{:?}", expected(sig, &rows));
        let mut bodies = vec![
            (InputFormat::Csv { header: false }, csv_body(sig, &rows, None)),
            (InputFormat::Csv { header: true }, csv_body(sig, &rows, Some(&order))),
        ];
        for (format, body) in json_bodies(sig, &rows, &order) {
            bodies.push((format, body.into_bytes()));
        }
        if sig.features.iter().all(|f| f.elem == ElemType::Float32) && sig.inputs.len() == 1 {
            for body in npy_f32_bodies(&rows, sig.features.len()) {
                bodies.push((InputFormat::Npy, body));
            }
        }
        // The first string with a NUL, in the order cells are pushed (row by row, in feature
        // order), is the one every decoder must name.
        let nul = rows.iter().enumerate().find_map(|(r, row)| {
            row.iter()
                .position(|v| matches!(v, V::Str(t) if t.contains('\0')))
                .map(|f| (r + 1, &sig.features[f].name))
        });
        for (format, body) in bodies {
            let got = decode(format, &body, sig);
            let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            match (got, nul) {
                (Ok(frame), None) => {
                    prop_assert_eq!(format!("{:?}", frame), want.clone(), "{:?} {}", format, shown)
                }
                (Err(e), Some((row, feature))) => {
                    let text = e.to_string();
                    prop_assert_eq!(e.code(), "invalid_value", "{}", text);
                    prop_assert!(text.starts_with(&format!("row {row}, ")), "{}", text);
                    prop_assert!(text.contains(&format!("(feature {feature:?})")), "{}", text);
                }
                (got, _) => prop_assert!(false, "{:?} {}: {:?}", format, shown, got),
            }
        }
    }
}
