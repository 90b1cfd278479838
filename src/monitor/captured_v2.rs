//! Captured Open Inference Protocol (V2) bodies, read back by `mlapp monitor`: a request's
//! tensors as rows of cells in the baseline's feature order, an answer's as predictions.

use serde_json::Value;

use crate::codec::v2::{self, TextTensor};

/// Where the JSON object of a captured V2 body ends (None: it is the whole body), or None
/// when the body is not a V2 request or answer.
pub fn header(content_type: &str, body: &[u8], key: &str) -> Option<Option<usize>> {
    if let Some(n) = content_type.strip_prefix(v2::CAPTURED_BINARY) {
        return n.trim().parse().ok().map(Some);
    }
    // Most JSON captures are /invocations bodies: not parsed twice.
    memchr::memmem::find(body, b"\"datatype\"")?;
    let doc: Value = serde_json::from_slice(body).ok()?;
    let first = doc.get(key)?.as_array()?.first()?;
    let tensor = ["name", "datatype", "shape"]
        .iter()
        .all(|k| first.get(k).is_some())
        && (first.get("data").is_some() || first.pointer("/parameters/binary_data_size").is_some());
    tensor.then_some(None)
}

/// The rows a request's tensors hold: the first's first dimension, never more than it has
/// cells for (a capture file is not trusted to be one mlapp wrote).
fn rows(tensors: &[TextTensor]) -> usize {
    tensors.first().map_or(0, |t| {
        t.shape.first().copied().unwrap_or(1).min(t.cells.len())
    })
}

/// Values per row of a tensor: 1 for `[N]`, F for `[N, F]`.
fn width(t: &TextTensor) -> usize {
    t.shape.iter().skip(1).product()
}

/// A request's rows. When every tensor holds one value per row and some are named as
/// features, each is its feature's column (a scikit-learn pipeline's inputs, in any order);
/// otherwise the tensors' columns are laid side by side in the order they were sent (a model
/// with one `[N, F]` input, whose features are its F columns).
pub fn input_rows(
    body: &[u8],
    header_len: Option<usize>,
    features: &[String],
) -> Result<Vec<Vec<String>>, String> {
    let tensors = v2::text_tensors(body, header_len, false).map_err(|e| e.to_string())?;
    let rows = rows(&tensors);
    let by_name =
        tensors.iter().all(|t| width(t) == 1) && tensors.iter().any(|t| features.contains(&t.name));
    let cell = |t: &TextTensor, i: usize| t.cells.get(i).cloned().unwrap_or_default();
    // Each feature's tensor, found once for all the rows.
    let columns: Vec<Option<&TextTensor>> = features
        .iter()
        .map(|f| tensors.iter().find(|t| t.name == *f))
        .collect();
    Ok((0..rows)
        .map(|r| match by_name {
            true => columns
                .iter()
                .map(|t| t.map(|t| cell(t, r)).unwrap_or_default())
                .collect(),
            false => tensors
                .iter()
                .flat_map(|t| {
                    let w = width(t);
                    (r * w..(r + 1) * w).map(move |i| cell(t, i))
                })
                .collect(),
        })
        .collect())
}

/// One answered row: its label, the second class's probability, or a regressor's value.
pub type Answered = (Option<String>, Option<f64>, Option<f64>);

/// An answer's rows: the label is the one-value-per-row tensor that is not a float, the
/// probabilities the float tensor of two or more columns, and a lone float tensor of one
/// value per row a regressor's values.
pub fn answers(body: &[u8], header_len: Option<usize>) -> Result<Vec<Answered>, String> {
    let tensors = v2::text_tensors(body, header_len, true).map_err(|e| e.to_string())?;
    let float = |t: &&TextTensor| t.datatype.starts_with("FP");
    // Only a classifier's or a regressor's answer is read: with several candidates for a
    // part (a raw model's outputs), that part is not guessed.
    fn only<'t>(mut found: impl Iterator<Item = &'t TextTensor>) -> Option<&'t TextTensor> {
        let one = found.next()?;
        found.next().is_none().then_some(one)
    }
    let pair = tensors.len() == 2;
    // A top_k answer's `<probability>:<index>:<class>` cells are not labels.
    let ranked = |t: &TextTensor| {
        t.cells.first().is_some_and(|c| {
            let mut parts = c.splitn(3, ':');
            parts.next().is_some_and(|p| p.parse::<f64>().is_ok())
                && parts.next().is_some_and(|i| i.parse::<usize>().is_ok())
                && parts.next().is_some()
        })
    };
    let label = only(tensors.iter().filter(|t| {
        width(t) == 1
            && (t.datatype == "BYTES" || t.datatype.starts_with("INT"))
            && !(t.datatype == "BYTES" && ranked(t))
    }))
    .filter(|_| pair);
    let proba = only(tensors.iter().filter(|t| width(t) >= 2 && float(t))).filter(|_| pair);
    let value = match tensors.as_slice() {
        [only] if width(only) == 1 && float(&only) => Some(only),
        _ => None,
    };
    let rows = rows(&tensors);
    let number = |t: Option<&TextTensor>, i: usize| {
        t.and_then(|t| t.cells.get(i)).and_then(|c| c.parse().ok())
    };
    Ok((0..rows)
        .map(|r| {
            (
                label.and_then(|t| t.cells.get(r).filter(|c| !c.is_empty()).cloned()),
                proba.and_then(|t| number(Some(t), r * width(t) + 1)),
                number(value, r),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rows_by_feature_name_or_side_by_side() {
        let pipeline = br#"{"inputs": [
            {"name": "tier", "datatype": "INT64", "shape": [2, 1], "data": [3, 1]},
            {"name": "city", "datatype": "BYTES", "shape": [2, 1], "data": ["Lagos", "Abuja"]}]}"#;
        assert_eq!(header("application/json", pipeline, "inputs"), Some(None));
        let rows = input_rows(pipeline, None, &names(&["city", "tier", "hours"])).unwrap();
        assert_eq!(rows, vec![vec!["Lagos", "3", ""], vec!["Abuja", "1", ""]]);

        let mut wide = br#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 2],
            "parameters": {"binary_data_size": 16}}]}"#
            .to_vec();
        let n = wide.len();
        for x in [1.5f32, f32::NAN, 3.0, 0.25] {
            wide.extend_from_slice(&x.to_le_bytes());
        }
        let ty = format!("{}{n}", v2::CAPTURED_BINARY);
        assert_eq!(header(&ty, &wide, "inputs"), Some(Some(n)));
        let rows = input_rows(&wide, Some(n), &names(&["a", "b"])).unwrap();
        assert_eq!(rows, vec![vec!["1.5", ""], vec!["3", "0.25"]]);
        assert_eq!(
            header("application/json", br#"{"instances": [[1]]}"#, "inputs"),
            None
        );
    }

    #[test]
    fn requests_naming_outputs_in_any_order_and_odd_bodies() {
        // tritonclient names the outputs it wants; the inputs come in any order.
        let asked = br#"{"inputs": [
            {"name": "hours", "datatype": "FP32", "shape": [1, 1], "data": [2.5]},
            {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["Lagos"]}],
            "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": true}}]}"#;
        assert_eq!(header("application/json", asked, "inputs"), Some(None));
        let rows = input_rows(asked, None, &names(&["city", "hours"])).unwrap();
        assert_eq!(rows, vec![vec!["Lagos", "2.5"]]);
        // A single [N, 1] input not named as a feature: its column, by position.
        let one = br#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1], "data": [1, 2]}]}"#;
        assert_eq!(
            input_rows(one, None, &names(&["age"])).unwrap(),
            vec![vec!["1"], vec!["2"]]
        );
        // A shape that claims rows it has no cells for: no rows, not a huge allocation.
        let empty = br#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [4611686018427387904, 0], "data": []}]}"#;
        assert_eq!(
            input_rows(empty, None, &names(&["x"])).unwrap(),
            Vec::<Vec<String>>::new()
        );
        // An /invocations record with a feature named "datatype" is not a V2 body.
        let record = br#"{"inputs": [{"datatype": "a", "name": "b"}]}"#;
        assert_eq!(header("application/json", record, "inputs"), None);
    }

    #[test]
    fn answers_give_labels_scores_and_values() {
        // Binary data: length-prefixed BYTES labels, then FP32 probabilities.
        let mut body = br#"{"outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 8}},
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]}"#
            .to_vec();
        let n = body.len();
        body.extend_from_slice(&4u32.to_le_bytes());
        body.extend_from_slice(b"male");
        for p in [0.25f32, 0.75] {
            body.extend_from_slice(&p.to_le_bytes());
        }
        let ty = format!("{}{n}", v2::CAPTURED_BINARY);
        assert_eq!(header(&ty, &body, "outputs"), Some(Some(n)));
        assert_eq!(
            answers(&body, Some(n)).unwrap(),
            vec![(Some("male".into()), Some(0.75), None)]
        );
        let classifier = br#"{"model_name": "m", "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["male", "female"]},
            {"name": "probabilities", "datatype": "FP32", "shape": [2, 2],
             "data": [0.25, 0.75, 0.5, 0.5]}]}"#;
        assert_eq!(
            answers(classifier, None).unwrap(),
            vec![
                (Some("male".into()), Some(0.75), None),
                (Some("female".into()), Some(0.5), None)
            ]
        );
        let regressor = br#"{"outputs": [{"name": "age", "datatype": "FP64", "shape": [1, 1],
            "data": [18.5]}]}"#;
        assert_eq!(
            answers(regressor, None).unwrap(),
            vec![(None, None, Some(18.5))]
        );
        // top_k 1: two BYTES tensors of one column; the ranked one is not the label.
        let top = br#"{"outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["gamer"]},
            {"name": "probabilities", "datatype": "BYTES", "shape": [1, 1],
             "data": ["0.61:1:gamer"]}]}"#;
        assert_eq!(
            answers(top, None).unwrap(),
            vec![(Some("gamer".into()), None, None)]
        );
    }
}
