//! `mlapp inspect MODEL_DIR`: what the model takes and gives, and what mlapp will accept and
//! return for it.

use std::fmt::Write;

use crate::codec::media::{ACCEPTED_ACCEPT_TYPES, ACCEPTED_CONTENT_TYPES};
use crate::engine::{warmup, Opened};
use crate::model::{ModelError, OutputPlan, OutputType};

/// The whole chain, from what a request carries through the steps and the graph to the
/// answer. `warmup`: one warm-up run as `serve` does it, so that a model `serve` would refuse
/// (or serve without batching) says so here too.
pub fn describe(
    opened: &Opened,
    warmup: &Result<(warmup::Report, Option<usize>), ModelError>,
) -> String {
    let (source, plan) = (&opened.source, &opened.plan);
    let sig = &opened.graph_signature;
    let mut s = String::new();
    let _ = writeln!(s, "model:   {}", source.file.display());
    let config = source.config_file.as_ref().map_or_else(
        || "none (defaults)".to_string(),
        |p| p.display().to_string(),
    );
    let _ = writeln!(s, "config:  {config}");
    if let Some(graphs) = opened.layout.describe() {
        let _ = writeln!(s, "graphs:  {graphs}");
    }
    let steps = &source.config.steps;
    if !steps.before.is_empty() {
        let request = &opened.signature;
        let _ = writeln!(s, "\nrequest features ({}):", request.features.len());
        let names: Vec<String> = request
            .features
            .iter()
            .map(|f| format!("{} ({})", f.name, f.elem))
            .collect();
        let _ = writeln!(s, "  {}", names.join(", "));
        let _ = writeln!(s, "\nsteps before the graph ({}):", steps.before.len());
        for (i, step) in steps.before.iter().enumerate() {
            let _ = writeln!(s, "  [{i}] {}", one_line(step));
        }
    }
    let _ = writeln!(s, "\ninputs ({}):", sig.inputs.len());
    for i in &sig.inputs {
        let _ = writeln!(s, "  {:<24} {:<8} {}", i.name, i.elem, shape(&i.shape));
    }
    let _ = writeln!(s, "\noutputs ({}):", sig.outputs.len());
    for o in &sig.outputs {
        let ty = match &o.ty {
            OutputType::Tensor { elem, shape: dims } => format!("{elem:<8} {}", shape(dims)),
            OutputType::SeqMap { key } => format!("seq(map({key}, float32)) (ZipMap)"),
            OutputType::Other { description } => description.clone(),
        };
        let _ = writeln!(s, "  {:<24} {ty}", o.name);
    }
    if let Some(k) = sig.fixed_batch {
        let _ = writeln!(
            s,
            "  (the graph fixes the batch at {k} rows: requests are run {k} rows at a time)"
        );
    }
    let _ = writeln!(s, "\nfeatures per row: {}", sig.features.len());
    let names: Vec<String> = sig
        .features
        .iter()
        .map(|f| format!("{} ({})", f.name, f.elem))
        .collect();
    let _ = writeln!(s, "  {}", names.join(", "));
    if !steps.after.is_empty() {
        let _ = writeln!(s, "\nsteps after the graph ({}):", steps.after.len());
        for (i, step) in steps.after.iter().enumerate() {
            let _ = writeln!(s, "  [{i}] {}", one_line(step));
        }
    }
    let _ = writeln!(s, "\nanswers as: {}", plan.kind());
    match plan {
        OutputPlan::Classifier {
            label,
            probabilities,
            class_labels,
            threshold,
            after,
        } => {
            let _ = writeln!(
                s,
                "  label from \"{}\", probabilities from \"{}\"",
                sig.outputs[*label].name, sig.outputs[*probabilities].name
            );
            if !class_labels.is_empty() {
                let _ = writeln!(s, "  classes: {}", class_labels.join(", "));
            }
            if let Some(t) = threshold {
                let _ = writeln!(s, "  threshold: second class when its probability >= {t}");
            }
            match after.shown().and_then(|s| s.top_k) {
                Some(k) => {
                    let _ = writeln!(
                        s,
                        "  JSON entry: {{\"label\": L, \"top_k\": [{{\"class\": c, \"probability\": p}}, ... ({k} most probable)]}}; CSV line: label,c1,p1,...,c{k},p{k}"
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  JSON entry: {{\"label\": L, \"probabilities\": {{class: p, ...}}}}; CSV line: label,p_class0,p_class1,..."
                    );
                }
            }
            fields(&mut s, after);
        }
        OutputPlan::Regressor { value, after } => {
            let entry = match after.shown() {
                Some(_) => "{\"value\": v, ...}",
                None => "a number",
            };
            let _ = writeln!(
                s,
                "  value from \"{}\"; JSON entry: {entry}; CSV line: the value",
                sig.outputs[*value].name
            );
            fields(&mut s, after);
        }
        OutputPlan::Raw { outputs, after } => {
            let names: Vec<&str> = outputs
                .iter()
                .map(|&i| sig.outputs[i].name.as_str())
                .collect();
            let _ = writeln!(s, "  every output by name: {}", names.join(", "));
            fields(&mut s, after);
        }
    }
    let _ = writeln!(s, "\naccepts (Content-Type): {ACCEPTED_CONTENT_TYPES}");
    if sig.features.iter().any(|f| !f.elem.is_numeric()) {
        let _ = writeln!(
            s,
            "  (application/x-npy cannot carry this model's string features)"
        );
    }
    let _ = writeln!(s, "returns (Accept):       {ACCEPTED_ACCEPT_TYPES}");
    match warmup {
        Ok((report, parity)) => {
            let _ = writeln!(s, "\nwarm-up: {report}");
            let _ = writeln!(s, "  batching {}", report.batching(report.follows_rows));
            match parity {
                Some(n) => {
                    let _ = writeln!(s, "parity: its {n} sample rows give their expected answers");
                }
                None => {
                    let _ = writeln!(
                        s,
                        "parity: no sample rows with expected answers (`mlapp package` adds them)"
                    );
                }
            }
        }
        Err(e) => {
            let _ = writeln!(
                s,
                "\nwarm-up: FAILED, `mlapp serve` would not load this model: {e}"
            );
        }
    }
    s
}

/// The `fields` step's constants, as every answer carries them.
fn fields(s: &mut String, after: &crate::pipeline::After) {
    let Some(shown) = after.shown().filter(|x| !x.fields.is_empty()) else {
        return;
    };
    let listed: Vec<String> = shown
        .fields
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let _ = writeln!(
        s,
        "  and in every answer (JSON members, CSV columns at the end; V2 parameters): {}",
        listed.join(", ")
    );
}

fn one_line(step: &impl serde::Serialize) -> String {
    crate::pipeline::step_json(step).map_or_else(|e| e.to_string(), |v| v.to_string())
}

fn shape(dims: &[i64]) -> String {
    let d: Vec<String> = dims
        .iter()
        .map(|&x| {
            if x < 0 {
                "N".to_string()
            } else {
                x.to_string()
            }
        })
        .collect();
    format!("[{}]", d.join(", "))
}
