//! A job's evaluation as one self-contained HTML page: the metrics, the confusion matrix, and
//! the ROC and precision-recall curves drawn as inline SVG. No script, no font or style from
//! the network: it opens the same from a Jenkins artefact or an air-gapped laptop.

use std::fmt::Write;

use serde_json::Value;

pub fn page(name: &str, model: &str, eval: &Value) -> String {
    let m = &eval["metrics"]["binary_classification_metrics"];
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Evaluation of {job}</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}\
         th{{background:#eee}}td:first-child{{text-align:left}}.curves{{display:flex;gap:2em;flex-wrap:wrap}}\
         figure{{margin:0}}figcaption{{font-weight:bold;margin-bottom:.5em}}</style></head><body>\
         <h1>Evaluation of job {job}</h1>\
         <p>Model <code>{model}</code>. Ground truth <code>{truth}</code>, positive label <b>{positive}</b>. \
         Status <b>{status}</b>; {matched} answers matched, {unmatched} ground-truth ids not found.</p>",
        job = esc(name),
        model = esc(model),
        truth = esc(eval["ground_truth"].as_str().unwrap_or("")),
        positive = esc(eval["positive_label"].as_str().unwrap_or("")),
        status = esc(eval["status"].as_str().unwrap_or("")),
        matched = eval["matched"],
        unmatched = eval["unmatched_truth"],
    );
    if let Some(reason) = eval["reason"].as_str() {
        let _ = write!(html, "<p><b>Failed:</b> {}</p>", esc(reason));
    }
    if m.is_object() {
        html.push_str("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>standard deviation</th></tr>");
        for key in [
            "accuracy",
            "precision",
            "recall",
            "f1",
            "f0_5",
            "f2",
            "auc",
            "true_positive_rate",
            "true_negative_rate",
            "false_positive_rate",
            "false_negative_rate",
            "accuracy_best_constant_classifier",
            "precision_best_constant_classifier",
            "recall_best_constant_classifier",
            "f1_best_constant_classifier",
        ] {
            let _ = write!(
                html,
                "<tr><td>{key}</td><td>{}</td><td>{}</td></tr>",
                number(&m[key]["value"]),
                number(&m[key]["standard_deviation"])
            );
        }
        html.push_str("</table>");
        if let Some(c) = m["confusion_matrix"].as_object() {
            let labels: Vec<&String> = c.keys().collect();
            html.push_str("<h2>Confusion matrix</h2><table><tr><th>actual \\ predicted</th>");
            for l in &labels {
                let _ = write!(html, "<th>{}</th>", esc(l));
            }
            html.push_str("</tr>");
            for a in &labels {
                let _ = write!(html, "<tr><td>{}</td>", esc(a));
                for p in &labels {
                    let _ = write!(html, "<td>{}</td>", c[a.as_str()][p.as_str()]);
                }
                html.push_str("</tr>");
            }
            html.push_str("</table>");
        }
        let roc = &m["receiver_operating_characteristic_curve"];
        let pr = &m["precision_recall_curve"];
        html.push_str("<div class=\"curves\">");
        html.push_str(&curve(
            "ROC curve",
            "false positive rate",
            "true positive rate",
            &roc["false_positive_rates"],
            &roc["true_positive_rates"],
            true,
        ));
        html.push_str(&curve(
            "Precision-recall curve",
            "recall",
            "precision",
            &pr["recalls"],
            &pr["precisions"],
            false,
        ));
        html.push_str("</div>");
    }
    html.push_str("</body></html>\n");
    html
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.4}"),
        None => esc(&v.to_string().replace('"', "")),
    }
}

/// One curve in a 320×320 plot over [0, 1]².
fn curve(
    title: &str,
    x_label: &str,
    y_label: &str,
    xs: &Value,
    ys: &Value,
    diagonal: bool,
) -> String {
    let (size, pad) = (320.0, 40.0);
    let xs: Vec<f64> = xs
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let ys: Vec<f64> = ys
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let point = |x: f64, y: f64| {
        (
            pad + x.clamp(0.0, 1.0) * size,
            pad + (1.0 - y.clamp(0.0, 1.0)) * size,
        )
    };
    let mut points = String::new();
    for (&x, &y) in xs.iter().zip(&ys) {
        let (px, py) = point(x, y);
        let _ = write!(points, "{px:.1},{py:.1} ");
    }
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{w}\" \
         role=\"img\" aria-label=\"{title}\"><rect x=\"{pad}\" y=\"{pad}\" width=\"{size}\" height=\"{size}\" \
         fill=\"none\" stroke=\"#888\"/>",
        w = size + 2.0 * pad
    );
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let (x, y) = point(t, t);
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{t}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{t}</text>",
            pad + size + 14.0,
            pad - 4.0,
            y + 3.0
        );
    }
    if diagonal {
        let (a, b) = (point(0.0, 0.0), point(1.0, 1.0));
        let _ = write!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ccc\" stroke-dasharray=\"4\"/>",
            a.0, a.1, b.0, b.1
        );
    }
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{points}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{x_label}</text>\
         <text x=\"12\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">{y_label}</text>\
         </svg></figure>",
        pad + size / 2.0,
        pad + size + 32.0,
        pad + size / 2.0,
        pad + size / 2.0
    );
    svg
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_it_shows_and_loads_nothing() {
        let eval = serde_json::json!({"status": "Completed", "ground_truth": "<x>", "positive_label": "m",
            "matched": 4, "unmatched_truth": 0,
            "metrics": super::super::evaluate::metrics(&[(true, true, 0.9), (false, false, 0.2), (true, false, 0.4), (false, true, 0.6)], "m", "f")});
        let html = page("j", "m&m", &eval);
        assert!(html.contains("&lt;x&gt;") && html.contains("m&amp;m"));
        assert!(html.contains("<polyline"));
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }
}
