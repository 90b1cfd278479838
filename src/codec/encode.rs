//! Response bodies. One entry per input row, in order:
//!
//! - JSON: `{"predictions": [entry, ...]}`
//! - JSON Lines: one entry per line
//! - CSV: one line per row
//!
//! A classifier's entry is `{"label": L, "probabilities": {"class": p, ...}}` (CSV:
//! `label,p_class0,p_class1,...`); a regressor's is its value; any other model's is an object
//! of every returned output by name (CSV: their values in output order). Lines are joined by
//! `\n` with no trailing newline, so a body of N rows has exactly N lines (what SageMaker's
//! `AssembleWith=Line` expects).
//!
//! A `top_k` step writes a classifier's k most probable classes in place of every class:
//! `"top_k": [{"class": c, "probability": p}, ...]` (CSV: `label,c1,p1,...,ck,pk`). A
//! `fields` step's constants follow the entry's own members (CSV: its own values); a
//! regressor's entry is then `{"value": v, ...}`.

use std::io::Write;

use super::OutputFormat;
use crate::model::{Label, OutputData, OutputTensor, Predictions};

pub fn encode(p: &Predictions, format: OutputFormat) -> Vec<u8> {
    let mut w = Writer::new(format, p.rows());
    w.append(p);
    w.finish()
}

/// A response body written piece by piece, for bodies scored in chunks: the predictions of
/// each chunk are appended in order, and the result is the same bytes `encode` gives for
/// all of them at once.
pub struct Writer {
    out: Vec<u8>,
    format: OutputFormat,
    rows: usize,
}

impl Writer {
    pub fn new(format: OutputFormat, rows_hint: usize) -> Self {
        let mut w = Self::fragment(format, rows_hint);
        w.out.extend_from_slice(opening(format));
        w
    }

    /// A writer of one piece of a body whose pieces are written apart (in parallel) and
    /// joined in order with `separator`, between `opening` and `closing`.
    pub fn fragment(format: OutputFormat, rows_hint: usize) -> Self {
        Self {
            out: Vec::with_capacity(64 + rows_hint.min(1 << 22) * 48),
            format,
            rows: 0,
        }
    }

    pub fn append(&mut self, p: &Predictions) {
        for r in 0..p.rows() {
            self.append_row(p, r);
        }
    }

    /// Row `r` of `p` alone.
    pub fn append_row(&mut self, p: &Predictions, r: usize) {
        self.separate();
        match self.format {
            OutputFormat::Csv => csv_row(&mut self.out, p, r),
            OutputFormat::Json | OutputFormat::JsonLines => json_row(&mut self.out, p, r),
        }
    }

    /// A placeholder for a record that could not be scored: `ERROR: reason` in CSV,
    /// `{"error": "reason"}` in JSON, on one line either way.
    pub fn append_error(&mut self, reason: &str) {
        self.separate();
        let reason = reason.replace(['\n', '\r'], " ");
        match self.format {
            OutputFormat::Csv => {
                self.out.extend_from_slice(b"ERROR: ");
                self.out.extend_from_slice(reason.as_bytes());
            }
            OutputFormat::Json | OutputFormat::JsonLines => {
                self.out.extend_from_slice(b"{\"error\":");
                json_str(&mut self.out, &reason);
                self.out.push(b'}');
            }
        }
    }

    fn separate(&mut self) {
        if self.rows > 0 {
            self.out.push(separator(self.format));
        }
        self.rows += 1;
    }

    /// The answers of `total` records in order: record `i` gets the placeholder of its entry
    /// in `bad` (which is sorted by `i`), or else the next row of `predictions`. `first_row`
    /// is the 0-based row of record 0 in the whole body, for the placeholders' reasons.
    pub fn append_records(
        &mut self,
        predictions: Option<&Predictions>,
        bad: &[(usize, String)],
        total: usize,
        first_row: usize,
    ) -> Result<(), String> {
        let mut bad = bad.iter().peekable();
        let mut good = 0;
        for i in 0..total {
            match (bad.next_if(|(at, _)| *at == i), predictions) {
                (Some((_, reason)), _) => {
                    self.append_error(&super::records::reason_at(first_row + i, reason))
                }
                (None, Some(p)) if good < p.rows() => {
                    self.append_row(p, good);
                    good += 1;
                }
                _ => return Err(format!("record {i} has no prediction")),
            }
        }
        Ok(())
    }

    /// The bytes written so far, handed over; what follows continues the same body.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(closing(self.format));
        self.out
    }
}

/// What a body of this format starts with, before its first entry.
pub fn opening(format: OutputFormat) -> &'static [u8] {
    match format {
        OutputFormat::Json => b"{\"predictions\":[",
        OutputFormat::Csv | OutputFormat::JsonLines => b"",
    }
}

/// What separates two entries (so two non-empty fragments).
pub fn separator(format: OutputFormat) -> u8 {
    match format {
        OutputFormat::Json => b',',
        OutputFormat::Csv | OutputFormat::JsonLines => b'\n',
    }
}

/// What a body of this format ends with, after its last entry.
pub fn closing(format: OutputFormat) -> &'static [u8] {
    match format {
        OutputFormat::Json => b"]}",
        OutputFormat::Csv | OutputFormat::JsonLines => b"",
    }
}

fn json_row(out: &mut Vec<u8>, p: &Predictions, r: usize) {
    match p {
        Predictions::Classifier {
            labels,
            classes,
            probabilities,
            shown,
        } => {
            out.extend_from_slice(b"{\"label\":");
            json_label(out, &labels[r]);
            let c = classes.len();
            let row = &probabilities[r * c..(r + 1) * c];
            match shown.as_deref().filter(|s| s.top_k.is_some()) {
                Some(s) => {
                    out.extend_from_slice(b",\"top_k\":[");
                    for (i, k) in s.top(row).into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(b"{\"class\":");
                        json_str(out, &classes[k]);
                        out.extend_from_slice(b",\"probability\":");
                        json_f32(out, row[k]);
                        out.push(b'}');
                    }
                    out.push(b']');
                }
                None => {
                    out.extend_from_slice(b",\"probabilities\":{");
                    for (k, class) in classes.iter().enumerate() {
                        if k > 0 {
                            out.push(b',');
                        }
                        json_str(out, class);
                        out.push(b':');
                        json_f32(out, row[k]);
                    }
                    out.push(b'}');
                }
            }
            json_fields(out, p);
            out.push(b'}');
        }
        Predictions::Regressor {
            values,
            float32,
            shown,
        } => match shown {
            Some(_) => {
                out.extend_from_slice(b"{\"value\":");
                json_num(out, values[r], *float32);
                json_fields(out, p);
                out.push(b'}');
            }
            None => json_num(out, values[r], *float32),
        },
        Predictions::Raw { rows, tensors, .. } => {
            out.push(b'{');
            for (i, t) in tensors.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, &t.name);
                out.push(b':');
                json_tensor_row(out, t, *rows, r);
            }
            json_fields(out, p);
            out.push(b'}');
        }
    }
}

/// The `fields` step's constants, after an entry's own members.
fn json_fields(out: &mut Vec<u8>, p: &Predictions) {
    if let Some(s) = p.shown() {
        out.extend_from_slice(&s.json);
    }
}

fn json_tensor_row(out: &mut Vec<u8>, t: &OutputTensor, rows: usize, r: usize) {
    let w = t.row_width(rows);
    let scalar = t.shape.len() <= 1 && w == 1;
    let (lo, hi) = (r * w, (r + 1) * w);
    if !scalar {
        out.push(b'[');
    }
    for i in lo..hi {
        if i > lo {
            out.push(b',');
        }
        match &t.data {
            OutputData::F32(v) => json_f32(out, v[i]),
            OutputData::F64(v) => json_num(out, v[i], false),
            OutputData::I64(v) => int(out, v[i]),
            OutputData::I32(v) => int(out, i64::from(v[i])),
            OutputData::Bool(v) => out.extend_from_slice(if v[i] { b"true" } else { b"false" }),
            OutputData::Str(v) => json_str(out, &v[i]),
            OutputData::MapI64(maps) => json_map(out, &maps[i], |out, k| {
                out.push(b'"');
                int(out, *k);
                out.push(b'"');
            }),
            OutputData::MapStr(maps) => json_map(out, &maps[i], |out, k| json_str(out, k)),
        }
    }
    if !scalar {
        out.push(b']');
    }
}

fn json_map<K>(out: &mut Vec<u8>, m: &[(K, f32)], key: impl Fn(&mut Vec<u8>, &K)) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, k);
        out.push(b':');
        json_f32(out, *v);
    }
    out.push(b'}');
}

fn csv_row(out: &mut Vec<u8>, p: &Predictions, r: usize) {
    csv_values(out, p, r);
    if let Some(s) = p.shown() {
        out.extend_from_slice(&s.csv);
    }
}

fn csv_values(out: &mut Vec<u8>, p: &Predictions, r: usize) {
    match p {
        Predictions::Classifier {
            labels,
            classes,
            probabilities,
            shown,
        } => {
            match &labels[r] {
                Label::Int(v) => int(out, *v),
                Label::Str(s) => csv_str(out, s),
            }
            let c = classes.len();
            let row = &probabilities[r * c..(r + 1) * c];
            match shown.as_deref().filter(|s| s.top_k.is_some()) {
                Some(s) => {
                    for k in s.top(row) {
                        out.push(b',');
                        csv_str(out, &classes[k]);
                        out.push(b',');
                        csv_f32(out, row[k]);
                    }
                }
                None => {
                    for &p in row {
                        out.push(b',');
                        csv_f32(out, p);
                    }
                }
            }
        }
        Predictions::Regressor {
            values, float32, ..
        } => csv_num(out, values[r], *float32),
        Predictions::Raw { rows, tensors, .. } => {
            let mut first = true;
            for t in tensors {
                let w = t.row_width(*rows);
                for i in r * w..(r + 1) * w {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    match &t.data {
                        OutputData::F32(v) => csv_f32(out, v[i]),
                        OutputData::F64(v) => csv_num(out, v[i], false),
                        OutputData::I64(v) => int(out, v[i]),
                        OutputData::I32(v) => int(out, i64::from(v[i])),
                        OutputData::Bool(v) => out.push(if v[i] { b'1' } else { b'0' }),
                        OutputData::Str(v) => csv_str(out, &v[i]),
                        OutputData::MapI64(maps) => csv_map_values(out, &maps[i]),
                        OutputData::MapStr(maps) => csv_map_values(out, &maps[i]),
                    }
                }
            }
        }
    }
}

fn csv_map_values<K>(out: &mut Vec<u8>, m: &[(K, f32)]) {
    for (i, (_, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_f32(out, *v);
    }
}

fn json_label(out: &mut Vec<u8>, l: &Label) {
    match l {
        Label::Int(v) => int(out, *v),
        Label::Str(s) => json_str(out, s),
    }
}

fn int(out: &mut Vec<u8>, v: i64) {
    let _ = write!(out, "{v}");
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is correct for every string; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub(crate) fn csv_str(out: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// JSON has no NaN or infinity: those become null.
fn json_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn json_num(out: &mut Vec<u8>, v: f64, float32: bool) {
    if float32 {
        json_f32(out, v as f32);
    } else if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn csv_f32(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes());
}

fn csv_num(out: &mut Vec<u8>, v: f64, float32: bool) {
    if float32 {
        csv_f32(out, v as f32);
    } else {
        out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier() -> Predictions {
        Predictions::Classifier {
            labels: vec![Label::Str("male".into()), Label::Str("fe,male".into())],
            classes: vec!["female".into(), "male".into()],
            probabilities: vec![0.25, 0.75, 0.5, 0.5],
            shown: None,
        }
    }

    /// How answers are written under these `after` steps.
    fn shown(kind: &str, steps: &str) -> Option<std::sync::Arc<crate::pipeline::after::Shown>> {
        let steps: crate::pipeline::Steps =
            serde_json::from_str(&format!(r#"{{"after": {steps}}}"#)).unwrap();
        crate::pipeline::After::compile(&steps.after, kind)
            .unwrap()
            .shown()
            .cloned()
    }

    #[test]
    fn top_k_and_fields_shape_every_format() {
        let three = |shown| Predictions::Classifier {
            labels: vec![Label::Int(2), Label::Int(0)],
            classes: vec!["a".into(), "b,c".into(), "d".into()],
            probabilities: vec![0.1, 0.3, 0.6, 0.4, 0.4, 0.2],
            shown,
        };
        let p = three(shown(
            "classifier",
            r#"[{"step": "top_k", "k": 2}, {"step": "fields", "fields": {"version": "v1,2", "live": true, "n": 3}}]"#,
        ));
        // Row 2 ties a and b,c at 0.4: the model's class order breaks it.
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Json)).unwrap(),
            r#"{"predictions":[{"label":2,"top_k":[{"class":"d","probability":0.6},{"class":"b,c","probability":0.3}],"live":true,"n":3,"version":"v1,2"},{"label":0,"top_k":[{"class":"a","probability":0.4},{"class":"b,c","probability":0.4}],"live":true,"n":3,"version":"v1,2"}]}"#
        );
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Csv)).unwrap(),
            "2,d,0.6,\"b,c\",0.3,true,3,\"v1,2\"\n0,a,0.4,\"b,c\",0.4,true,3,\"v1,2\""
        );
        // k above the number of classes lists them all; fields alone keep every probability.
        let p = three(shown("classifier", r#"[{"step": "top_k", "k": 9}]"#));
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Csv)).unwrap(),
            "2,d,0.6,\"b,c\",0.3,a,0.1\n0,a,0.4,\"b,c\",0.4,d,0.2"
        );
        let p = three(shown(
            "classifier",
            r#"[{"step": "fields", "fields": {"m": "x"}}]"#,
        ));
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::JsonLines))
                .unwrap()
                .lines()
                .next(),
            Some(r#"{"label":2,"probabilities":{"a":0.1,"b,c":0.3,"d":0.6},"m":"x"}"#)
        );
    }

    #[test]
    fn fields_make_a_regressor_entry_an_object_and_join_raw_outputs() {
        let shown = shown(
            "regressor",
            r#"[{"step": "fields", "fields": {"model": "m-7"}}]"#,
        );
        let p = Predictions::Regressor {
            values: vec![1.5, -2.0],
            float32: false,
            shown: shown.clone(),
        };
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Json)).unwrap(),
            r#"{"predictions":[{"value":1.5,"model":"m-7"},{"value":-2.0,"model":"m-7"}]}"#
        );
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Csv)).unwrap(),
            "1.5,m-7\n-2.0,m-7"
        );
        let p = Predictions::Raw {
            rows: 1,
            tensors: vec![OutputTensor {
                name: "y".into(),
                shape: vec![1, 2],
                data: OutputData::I64(vec![4, 5]),
            }],
            shown,
        };
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Json)).unwrap(),
            r#"{"predictions":[{"y":[4,5],"model":"m-7"}]}"#
        );
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Csv)).unwrap(),
            "4,5,m-7"
        );
    }

    #[test]
    fn classifier_in_every_format() {
        let p = classifier();
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Json)).unwrap(),
            r#"{"predictions":[{"label":"male","probabilities":{"female":0.25,"male":0.75}},{"label":"fe,male","probabilities":{"female":0.5,"male":0.5}}]}"#
        );
        assert_eq!(
            String::from_utf8(encode(&p, OutputFormat::Csv)).unwrap(),
            "male,0.25,0.75\n\"fe,male\",0.5,0.5"
        );
        let lines = String::from_utf8(encode(&p, OutputFormat::JsonLines)).unwrap();
        assert_eq!(lines.lines().count(), 2);
        assert!(!lines.ends_with('\n'));
    }

    #[test]
    fn floats_round_trip_and_nan_is_null_in_json() {
        let v = 0.1f32 + 0.2f32;
        let p = Predictions::Regressor {
            values: vec![f64::from(v), f64::NAN],
            float32: true,
            shown: None,
        };
        let json = String::from_utf8(encode(&p, OutputFormat::Json)).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"predictions\":[{},null]}}",
                ryu::Buffer::new().format(v)
            )
        );
        let csv = String::from_utf8(encode(&p, OutputFormat::Csv)).unwrap();
        let back: f32 = csv.lines().next().unwrap().parse().unwrap();
        assert_eq!(back, v);
    }
}
