//! The data-quality report as one self-contained HTML page: the violations, the predictions'
//! distributions, and one card per feature, worst first, with its baseline and current
//! distributions drawn as inline SVG over the same bins. No script, font, image or link: it
//! opens the same from a file on an air-gapped laptop as from a CI artefact.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use super::check::{Evaluation, FeatureCheck};
use super::files::{FeatureStatistics, NumericalStatistics, Statistics};
use super::sketch::Kll;
use crate::portal::results::Tally;

pub struct ReportInput<'a> {
    pub title: &'a str,
    pub baseline: &'a Statistics,
    pub current: &'a Statistics,
    pub evaluation: &'a Evaluation,
    /// The current data's predicted labels and score histogram, when known.
    pub predictions: Option<&'a Tally>,
    pub baseline_predictions: Option<&'a Tally>,
    pub generated_at: &'a str,
}

/// The two series' colors: saturated and far apart, so that they read apart for most color
/// vision and a screenshot test can find them exactly.
pub const BASELINE_COLOR: &str = "#1f77b4";
pub const CURRENT_COLOR: &str = "#ff7f0e";

/// Categories drawn from the side that leads (baseline when it has any), and categories only
/// the other side has; the rest is one "other" bar, so 10,000 categories draw as ~20 bars.
const TOP_CATEGORIES: usize = 12;
const UNSEEN_CATEGORIES: usize = 8;
/// The page stays readable and small (a few hundred KB) whatever the inputs hold.
const MAX_VIOLATION_ROWS: usize = 200;
const MAX_CARDS: usize = 500;
const NUMERIC_BINS: usize = 10;
const PLOT_HEIGHT: f64 = 150.0;

pub fn render(input: &ReportInput) -> String {
    let ev = input.evaluation;
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:sans-serif;margin:1.5em 2em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}}\
         th{{background:#eee}}.ok{{color:#2a7d2a;font-weight:bold}}\
         .card{{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:1em 0}}\
         .card h3{{display:inline;margin:0 .5em 0 0;word-break:break-all}}.nodata{{opacity:.55;background:#f2f2f2}}\
         .badge,.tag{{display:inline-block;border-radius:3px;padding:1px 6px;margin:0 3px;font-size:.85em}}\
         .badge{{background:#d62728;color:#fff}}.tag{{background:#ddd;color:#333}}\
         .row{{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start;margin-top:.5em}}\
         .kv td{{border:none;border-bottom:1px solid #eee}}.kv td:first-child{{color:#555}}\
         .meter{{display:inline-block;position:relative;width:120px;height:10px;background:#eee;border:1px solid #bbb;vertical-align:middle;margin-right:6px}}\
         .meter i{{position:absolute;left:0;top:0;bottom:0}}.meter b{{position:absolute;left:50%;top:-3px;bottom:-3px;border-left:2px solid #222}}\
         .over{{background:#d62728}}.under{{background:#2ca02c}}\
         svg text{{font-size:10px;fill:#333}}.b{{fill:{BASELINE_COLOR}}}.c{{fill:{CURRENT_COLOR}}}.ax{{stroke:#888;fill:none}}.grid{{stroke:#e6e6e6}}\
         .charts{{display:flex;flex-wrap:wrap;gap:2em}}.note{{font-size:.85em;color:#555;margin:0}}</style></head><body>\
         <h1>{title}</h1><p>Generated {at}. Rows: baseline <b>{brows}</b>, current <b>{crows}</b>. \
         Violations: <b>{nv}</b>.</p>",
        title = esc(input.title),
        at = esc(input.generated_at),
        brows = input.baseline.dataset.item_count,
        crows = input.current.dataset.item_count,
        nv = ev.violations.violations.len(),
    );
    let violations = &ev.violations.violations;
    if violations.is_empty() {
        h.push_str("<p class=\"ok\">No violations.</p>");
    } else {
        h.push_str("<table class=\"violations\"><tr><th>feature</th><th>check</th><th>description</th></tr>");
        for v in violations.iter().take(MAX_VIOLATION_ROWS) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.feature_name),
                esc(&v.constraint_check_type),
                esc(&v.description)
            );
        }
        h.push_str("</table>");
        if violations.len() > MAX_VIOLATION_ROWS {
            let _ = write!(
                h,
                "<p>… and {} more violations.</p>",
                violations.len() - MAX_VIOLATION_ROWS
            );
        }
    }
    if let Some(p) = input.predictions {
        predictions(&mut h, p, input.baseline_predictions);
    }
    h.push_str("<h2>Features, worst first</h2>");
    let cards = cards(input);
    for c in cards.iter().take(MAX_CARDS) {
        card(&mut h, input, c);
    }
    if cards.len() > MAX_CARDS {
        let _ = write!(
            h,
            "<p>… and {} more features not shown.</p>",
            cards.len() - MAX_CARDS
        );
    }
    h.push_str("</body></html>\n");
    h
}

struct Card<'a> {
    name: &'a str,
    check: Option<&'a FeatureCheck>,
    violations: Vec<&'a str>,
}

/// The checked features in `worst_first` order, with the features only one side has (missing
/// and extra columns, which carry their violations only in the list) placed by their count of
/// violations, so a missing column is not buried under clean features.
fn cards<'a>(input: &ReportInput<'a>) -> Vec<Card<'a>> {
    let ev: &'a Evaluation = input.evaluation;
    let checked: Vec<Card<'a>> = ev
        .worst_first()
        .into_iter()
        .map(|c| Card {
            name: &c.name,
            check: Some(c),
            violations: c.violations.clone(),
        })
        .collect();
    let mut seen: HashSet<&str> = checked.iter().map(|c| c.name).collect();
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for v in &ev.violations.violations {
        by_name
            .entry(&v.feature_name)
            .or_default()
            .push(&v.constraint_check_type);
    }
    let mut others: Vec<Card<'a>> = Vec::new();
    for f in input
        .baseline
        .features
        .iter()
        .chain(&input.current.features)
    {
        if seen.insert(&f.name) {
            others.push(Card {
                name: &f.name,
                check: None,
                violations: by_name.remove(f.name.as_str()).unwrap_or_default(),
            });
        }
    }
    // Stable, and by worst_first's first key: the checked features keep its order.
    let mut out = checked;
    out.extend(others);
    out.sort_by_key(|c| std::cmp::Reverse(c.violations.len()));
    out
}

fn find<'a>(s: &'a Statistics, name: &str) -> Option<&'a FeatureStatistics> {
    s.features.iter().find(|f| f.name == name)
}

fn card(h: &mut String, input: &ReportInput, c: &Card) {
    let base = find(input.baseline, c.name);
    let cur = find(input.current, c.name);
    let present = cur.map_or(0, |f| f.common().num_present);
    let ty = c
        .check
        .map(|k| k.inferred_type)
        .or(base.map(|f| f.inferred_type))
        .or(cur.map(|f| f.inferred_type));
    let _ = write!(
        h,
        "<section class=\"card{}\"><h3>{}</h3><span class=\"tag\">{}</span>",
        if present == 0 { " nodata" } else { "" },
        esc(c.name),
        ty.map_or_else(|| "unknown".to_owned(), |t| format!("{t:?}"))
    );
    if present == 0 {
        h.push_str("<span class=\"tag\">no values</span>");
    }
    for v in &c.violations {
        let _ = write!(h, "<span class=\"badge\">{}</span>", esc(v));
    }
    let mut rows: Vec<(&str, String)> = Vec::new();
    if base.is_none() {
        rows.push(("column", "not in the baseline".into()));
    }
    if cur.is_none() {
        rows.push(("column", "missing from the current data".into()));
    }
    let completeness = |f: Option<&FeatureStatistics>| f.map(|f| f.common().completeness());
    let was = c
        .check
        .and_then(|k| k.baseline_completeness)
        .or(completeness(base));
    let now = c.check.map(|k| k.completeness).or(completeness(cur));
    let (now, was) = (opt_pct(now), opt_pct(was));
    rows.push(("completeness", format!("{now} now, baseline {was}")));
    let was = base.map_or(0, |f| f.common().num_present);
    rows.push(("values present", format!("{present} now, baseline {was}")));
    if let Some(k) = c.check {
        let code = |u: &String| format!("<code>{}</code>", esc(u));
        let unseen = k.unseen.iter().map(code).collect::<Vec<_>>().join(", ");
        let unseen = Some(unseen)
            .filter(|u| !u.is_empty())
            .unwrap_or("none".into());
        rows.extend([
            ("drift distance", meter(k.distance, k.threshold)),
            ("raw L∞", k.distance_raw.map_or("not compared".into(), num)),
            ("type match", pct(k.type_match)),
            (
                "domain match",
                k.domain_match.map_or("no domain".into(), pct),
            ),
            ("unseen values", unseen),
        ]);
    }
    h.push_str("<div class=\"row\"><table class=\"kv\">");
    for (k, v) in rows {
        let _ = write!(h, "<tr><td>{k}</td><td>{v}</td></tr>");
    }
    h.push_str("</table>");
    let numeric = ty.is_some_and(|t| t.is_numeric());
    let aria = format!("{}: baseline and current distribution", c.name);
    h.push_str(&if numeric {
        numeric_chart(&aria, base, cur)
    } else {
        let (labels, values) = categories(side(base), side(cur));
        bar_chart(
            &aria,
            &SERIES,
            &values,
            &Labels::Centered(labels),
            "category",
        )
    });
    h.push_str("</div></section>");
}

/// The distance on a bar twice the threshold wide, the threshold marked in the middle: how
/// close to or past it a feature is reads at a glance.
fn meter(distance: Option<f64>, threshold: f64) -> String {
    let Some(d) = distance else {
        return format!("not compared (threshold {})", num(threshold));
    };
    let r = d / threshold / 2.0;
    // 0 / 0 draws an empty bar, d / 0 a full one.
    let width = if r.is_nan() {
        0.0
    } else {
        100.0 * r.clamp(0.0, 1.0)
    };
    let class = if d > threshold { "over" } else { "under" };
    format!(
        "<span class=\"meter\"><i class=\"{class}\" style=\"width:{width:.1}%\"></i><b></b></span>{} / threshold {}",
        num(d),
        num(threshold)
    )
}

fn kll_of(n: &NumericalStatistics) -> Option<Kll> {
    let sketch = n.distribution.as_ref()?.kll.sketch.as_ref()?;
    let present = n.common.num_present > 0;
    Some(Kll::from_levels(
        sketch.data.clone(),
        sketch.parameters.k as usize,
        sketch.parameters.c,
        present.then_some(n.min),
        present.then_some(n.max),
    ))
}

/// Counts between consecutive edges by rank differences; the last bin is closed, as Model
/// Monitor's buckets are.
fn counts_in(k: &Kll, edges: &[f64]) -> Vec<f64> {
    let n = edges.len().saturating_sub(1);
    (0..n)
        .map(|i| {
            let top = if i + 1 == n {
                k.rank_inclusive(edges[i + 1])
            } else {
                k.rank_exclusive(edges[i + 1])
            };
            finite(top - k.rank_exclusive(edges[i])).max(0.0)
        })
        .collect()
}

/// Both sides over the baseline's bucket edges (the current sketch's when the baseline has
/// none), so the two histograms share bins; current values outside them are noted.
fn numeric_chart(
    aria: &str,
    base: Option<&FeatureStatistics>,
    cur: Option<&FeatureStatistics>,
) -> String {
    let bn = base.and_then(|f| f.numerical_statistics.as_ref());
    let cn = cur.and_then(|f| f.numerical_statistics.as_ref());
    let buckets = bn
        .and_then(|n| n.distribution.as_ref())
        .map_or(&[][..], |d| &d.kll.buckets[..]);
    let valid = !buckets.is_empty()
        && buckets.iter().all(|b| {
            b.lower_bound.is_finite() && b.upper_bound.is_finite() && b.lower_bound <= b.upper_bound
        })
        && buckets
            .windows(2)
            .all(|w| w[0].upper_bound <= w[1].lower_bound);
    let base_kll = bn.and_then(kll_of).filter(|k| !k.is_empty());
    let cur_kll = cn.and_then(kll_of).filter(|k| !k.is_empty());
    let edges_of = |b: Vec<(f64, f64)>| -> Vec<f64> {
        let last = b.last().map(|b| b.1);
        b.iter().map(|b| b.0).chain(last).collect()
    };
    let edges = if valid {
        edges_of(
            buckets
                .iter()
                .map(|b| (b.lower_bound, b.upper_bound))
                .collect(),
        )
    } else if let Some(k) = base_kll.as_ref().or(cur_kll.as_ref()) {
        edges_of(
            k.buckets(NUMERIC_BINS)
                .iter()
                .map(|b| (b.lower, b.upper))
                .collect(),
        )
    } else {
        Vec::new()
    };
    let shares = |counts: Vec<f64>, total| counts.into_iter().map(|c| ratio(c, total)).collect();
    let base_counts: Vec<f64> = if valid {
        buckets.iter().map(|b| finite(b.count).max(0.0)).collect()
    } else {
        base_kll
            .as_ref()
            .map_or_else(Vec::new, |k| counts_in(k, &edges))
    };
    let base_total = base_counts.iter().sum::<f64>();
    let base_shares: Vec<f64> = shares(base_counts, base_total);
    let (cur_shares, note) = match &cur_kll {
        Some(k) if !edges.is_empty() => {
            let total = k.count() as f64;
            let (lo, hi) = (edges[0], edges[edges.len() - 1]);
            let below = k.rank_exclusive(lo) / total;
            let above = (total - k.rank_inclusive(hi)) / total;
            let note = (below > 0.0 || above > 0.0).then(|| {
                format!(
                    "current outside the baseline's range: {} below, {} above",
                    pct(below),
                    pct(above)
                )
            });
            (shares(counts_in(k, &edges), total), note)
        }
        _ => (Vec::new(), None),
    };
    let groups = edges.len().saturating_sub(1);
    let values: Vec<Vec<f64>> = (0..groups)
        .map(|i| {
            vec![
                base_shares.get(i).copied().unwrap_or(0.0),
                cur_shares.get(i).copied().unwrap_or(0.0),
            ]
        })
        .collect();
    // A constant feature has one bucket of zero width: one bar labelled with its value.
    let labels = if groups == 1 && edges[0] == edges[1] {
        Labels::Centered(vec![num(edges[0])])
    } else {
        Labels::Edges(edges.iter().map(|&e| num(e)).collect())
    };
    let mut svg = bar_chart(
        aria,
        &SERIES,
        &values,
        &labels,
        if valid || base_kll.is_some() {
            "value (the baseline's bins)"
        } else {
            "value"
        },
    );
    if let Some(n) = note {
        let _ = write!(svg, "<p class=\"note\">{}</p>", esc(&n));
    }
    format!("<div>{svg}</div>")
}

const SERIES: [(&str, &str); 2] = [("baseline", "b"), ("current", "c")];

type Counts<'a> = (Vec<(&'a str, u64)>, f64);

/// A string feature's category counts and its count of values.
fn side(f: Option<&FeatureStatistics>) -> Counts<'_> {
    let Some(s) = f.and_then(|f| f.string_statistics.as_ref()) else {
        return (Vec::new(), 0.0);
    };
    let counts: Vec<(&str, u64)> = s
        .distribution
        .as_ref()
        .map(|d| {
            d.categorical
                .buckets
                .iter()
                .map(|b| (b.value.as_str(), b.count))
                .collect()
        })
        .unwrap_or_default();
    let sum: f64 = counts.iter().map(|c| c.1 as f64).sum();
    (counts, sum.max(s.common.num_present as f64))
}

fn label_counts(t: &Tally) -> Counts<'_> {
    let v: Vec<(&str, u64)> = t.labels.iter().map(|(k, &n)| (k.as_str(), n)).collect();
    let total = v.iter().map(|x| x.1 as f64).sum();
    (v, total)
}

fn by_count<'a>(v: &[(&'a str, u64)]) -> Vec<(&'a str, u64)> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

fn count_map<'a>(v: &[(&'a str, u64)]) -> HashMap<&'a str, u64> {
    let mut m: HashMap<&str, u64> = HashMap::new();
    for &(k, n) in v {
        *m.entry(k).or_default() += n;
    }
    m
}

/// The categories to draw and each side's shares of them: the leading side's top categories,
/// then those only the other side has, then "other" for the rest of either side.
fn categories(base: Counts, cur: Counts) -> (Vec<String>, Vec<Vec<f64>>) {
    let (b, c) = (by_count(&base.0), by_count(&cur.0));
    let (lead, follow) = if b.is_empty() { (&c, &b) } else { (&b, &c) };
    let known: HashSet<&str> = lead.iter().map(|x| x.0).collect();
    let mut shown: Vec<&str> = lead.iter().take(TOP_CATEGORIES).map(|x| x.0).collect();
    let mut drawn: HashSet<&str> = shown.iter().copied().collect();
    for &(v, _) in follow.iter().filter(|x| !known.contains(x.0)) {
        if shown.len() >= TOP_CATEGORIES + UNSEEN_CATEGORIES {
            break;
        }
        if drawn.insert(v) {
            shown.push(v);
        }
    }
    let (bm, cm) = (count_map(&b), count_map(&c));
    let share =
        |m: &HashMap<&str, u64>, total, v| ratio(m.get(v).copied().unwrap_or(0) as f64, total);
    let mut values: Vec<Vec<f64>> = shown
        .iter()
        .map(|v| vec![share(&bm, base.1, v), share(&cm, cur.1, v)])
        .collect();
    let mut labels: Vec<String> = shown.iter().map(|v| (*v).to_owned()).collect();
    let rest = |total, i: usize| {
        ratio(
            total - values.iter().map(|v| v[i] * total).sum::<f64>(),
            total,
        )
        .max(0.0)
    };
    let other = vec![rest(base.1, 0), rest(cur.1, 1)];
    if other.iter().any(|&o| o > 5e-4) {
        values.push(other);
        labels.push("other".to_owned());
    }
    (labels, values)
}

fn predictions(h: &mut String, cur: &Tally, base: Option<&Tally>) {
    h.push_str("<h2>Predictions</h2><div class=\"charts\">");
    let (names, values) = categories(
        base.map(label_counts).unwrap_or_default(),
        label_counts(cur),
    );
    // Without a baseline only the current series is drawn, in the current color.
    let first = usize::from(base.is_none());
    let series = &SERIES[first..];
    let pick = |v: &[f64]| v[first..].to_vec();
    let values: Vec<Vec<f64>> = values.iter().map(|v| pick(v)).collect();
    let _ = write!(
        h,
        "<figure><figcaption>Predicted labels ({} rows)</figcaption>{}</figure>",
        cur.rows,
        bar_chart(
            "predicted label shares",
            series,
            &values,
            &Labels::Centered(names),
            "predicted label"
        )
    );
    let bins = |t: Option<&Tally>| t.and_then(|t| t.score.as_ref()).map(|s| s.bins.clone());
    let (bb, cb) = (bins(base), bins(Some(cur)));
    if bb.is_some() || cb.is_some() {
        let n = bb
            .as_ref()
            .map_or(0, Vec::len)
            .max(cb.as_ref().map_or(0, Vec::len));
        let shares = |b: &Option<Vec<u64>>| -> Vec<f64> {
            let b = b.clone().unwrap_or_default();
            let total = b.iter().map(|&x| x as f64).sum::<f64>();
            (0..n)
                .map(|i| ratio(b.get(i).copied().unwrap_or(0) as f64, total))
                .collect()
        };
        let (bs, cs) = (shares(&bb), shares(&cb));
        let values: Vec<Vec<f64>> = (0..n).map(|i| pick(&[bs[i], cs[i]])).collect();
        let step = n.div_ceil(4).max(1);
        let edges = (0..=n)
            .map(|i| {
                if i % step == 0 || i == n {
                    num(i as f64 / n as f64)
                } else {
                    String::new()
                }
            })
            .collect();
        let of = cur.score.as_ref().or(base.and_then(|b| b.score.as_ref()));
        let _ = write!(
            h,
            "<figure><figcaption>Score of {}</figcaption>{}</figure>",
            esc(of.map_or("", |s| s.score_of.as_str())),
            bar_chart(
                "score histogram",
                series,
                &values,
                &Labels::Edges(edges),
                "score"
            )
        );
    }
    h.push_str("</div>");
    if let Some(v) = cur.values.as_ref().filter(|v| v.count > 0) {
        let _ = write!(
            h,
            "<p>Predicted values: {} values, mean {}, min {}, max {}.</p>",
            v.count,
            num(v.sum / v.count as f64),
            num(v.min),
            num(v.max)
        );
    }
}

enum Labels {
    /// One label under each group (categories).
    Centered(Vec<String>),
    /// A label at each boundary between groups, one more than the groups; empty ones skipped.
    Edges(Vec<String>),
}

/// Grouped bars of shares in [0, 1], one bar per series in each group, with a percent axis and
/// a legend.
fn bar_chart(
    aria: &str,
    series: &[(&str, &str)],
    values: &[Vec<f64>],
    labels: &Labels,
    x_title: &str,
) -> String {
    let groups = values.len();
    let (left, top) = (44.0, 24.0);
    let bottom = if matches!(labels, Labels::Centered(_)) {
        70.0
    } else {
        36.0
    };
    // At least 200 wide in all, for the legend and the axis title however few the groups.
    let g = groups.max(1) as f64;
    let gw = (480.0 / g).clamp(24.0, 56.0).max(200.0 / g);
    let pw = gw * g;
    let (w, ht) = (left + pw + 12.0, top + PLOT_HEIGHT + bottom);
    let clean = |x: f64| finite(x).clamp(0.0, 1.0);
    let max = values
        .iter()
        .flatten()
        .map(|&x| clean(x))
        .fold(0.0, f64::max);
    // Tops whose halves are round percentages.
    let ymax = [0.01, 0.02, 0.04, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0]
        .into_iter()
        .find(|&t| t >= max)
        .unwrap_or(1.0);
    let y = |v: f64| top + PLOT_HEIGHT * (1.0 - clean(v) / ymax);
    let mut s = format!(
        "<svg width=\"{w:.0}\" height=\"{ht:.0}\" viewBox=\"0 0 {w:.0} {ht:.0}\" role=\"img\" aria-label=\"{}\">",
        esc(aria)
    );
    for t in [0.0, 0.5, 1.0] {
        let (v, py) = (ymax * t, y(ymax * t));
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + pw,
            left - 4.0,
            py + 3.0,
            pct(v)
        );
    }
    let mut lx = left;
    for (name, class) in series {
        let _ = write!(
            s,
            "<rect class=\"{class}\" x=\"{lx:.0}\" y=\"6\" width=\"10\" height=\"10\"/><text x=\"{:.0}\" y=\"15\">{}</text>",
            lx + 14.0,
            esc(name)
        );
        lx += 90.0;
    }
    let n = series.len().max(1) as f64;
    let bw = ((gw - 6.0) / n).clamp(1.0, 40.0);
    for (g, vs) in values.iter().enumerate() {
        let gx = left + gw * g as f64 + (gw - bw * n) / 2.0;
        for (i, ((name, class), &v)) in series.iter().zip(vs).enumerate() {
            let py = y(v);
            let _ = write!(
                s,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{py:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
                gx + bw * i as f64,
                top + PLOT_HEIGHT - py,
                esc(name),
                pct(v)
            );
        }
    }
    let base_y = top + PLOT_HEIGHT;
    let _ = write!(
        s,
        "<path class=\"ax\" d=\"M{left} {top}V{base_y}H{:.1}\"/>",
        left + pw
    );
    match labels {
        Labels::Centered(names) => {
            for (g, name) in names.iter().enumerate().take(groups) {
                let (x, ly) = (left + gw * (g as f64 + 0.5), base_y + 12.0);
                let _ = write!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-35 {x:.1} {ly:.1})\"><title>{}</title>{}</text>",
                    esc(name),
                    esc(&short(name, 14))
                );
            }
        }
        Labels::Edges(edges) => {
            for (i, e) in edges.iter().enumerate().filter(|(_, e)| !e.is_empty()) {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    left + gw * i as f64,
                    base_y + 13.0,
                    esc(e)
                );
            }
        }
    }
    if groups == 0 {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no values</text>",
            left + pw / 2.0,
            top + PLOT_HEIGHT / 2.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></svg>",
        left + pw / 2.0,
        ht - 4.0,
        esc(x_title)
    );
    s
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// A share, 0 of nothing.
fn ratio(n: f64, total: f64) -> f64 {
    let r = if total > 0.0 { n / total } else { 0.0 };
    finite(r)
}

/// A number short enough for an axis label.
fn num(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "∞" } else { "-∞" }.into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let s = if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    };
    let t = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if t == "-0" {
        "0".into()
    } else {
        t.to_owned()
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        num(x * 100.0) + "%"
    } else {
        "–".into()
    }
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("–".into(), pct)
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::check::{evaluate, Baseline, Columns};
    use crate::monitor::files::{Dataset, InferredType};
    use crate::monitor::profile::{FeatureProfile, Profile};
    use crate::portal::results::Histogram;

    const EVIL: &str = "<script>alert(1)</script>";

    fn profile(features: Vec<(&str, Vec<String>)>) -> Profile {
        let rows = features.first().map_or(0, |f| f.1.len() as u64);
        let mut p = Profile::new(
            features
                .into_iter()
                .map(|(name, cells)| {
                    let mut f = FeatureProfile::new(name, None);
                    cells.iter().for_each(|c| f.cell(c));
                    f
                })
                .collect(),
        );
        p.rows = rows;
        p
    }

    /// A stable numeric feature, a shifted one, and a string feature with a hostile name and
    /// category.
    fn example() -> (Statistics, Statistics, Evaluation) {
        let cells = |f: &dyn Fn(usize) -> String| (0..600).map(f).collect::<Vec<_>>();
        let base = profile(vec![
            ("stable", cells(&|i| (i % 50).to_string())),
            ("shifted", cells(&|i| format!("{}.5", i % 40))),
            (EVIL, cells(&|i| ["\"&<>", "b", "c"][i % 3].to_owned())),
        ]);
        let b = Baseline::new(base.statistics(), base.constraints());
        let mut cur = b.profile();
        for i in 0..400 {
            let row = [
                (i % 50).to_string(),
                format!("{}.5", i % 40 + 30),
                ["\"&<>", "new"][i % 2].to_owned(),
            ];
            cur.rows += 1;
            for (f, c) in cur.features.iter_mut().zip(&row) {
                f.cell(c);
            }
        }
        let ev = evaluate(&b, &cur, Columns::default());
        (base.statistics(), cur.statistics(), ev)
    }

    fn tally() -> Tally {
        Tally {
            rows: 10,
            labels: [("F".to_owned(), 4), ("M".to_owned(), 6)]
                .into_iter()
                .collect(),
            score: Some(Histogram {
                score_of: "M".into(),
                bins: (0..20).collect(),
            }),
            values: None,
            layout: None,
        }
    }

    fn input<'a>(
        b: &'a Statistics,
        c: &'a Statistics,
        e: &'a Evaluation,
        p: Option<&'a Tally>,
    ) -> ReportInput<'a> {
        ReportInput {
            title: "mlapp data-quality report",
            baseline: b,
            current: c,
            evaluation: e,
            predictions: p,
            baseline_predictions: None,
            generated_at: "2025-01-01T00:00:00Z",
        }
    }

    #[test]
    fn escapes_data_and_loads_nothing() {
        let (b, c, e) = example();
        let t = tally();
        let html = render(&input(&b, &c, &e, Some(&t)));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&amp;&lt;&gt;"));
        assert!(!html.contains(EVIL) && !html.contains("\"&<>"));
        for banned in ["http://", "https://", "<script", "src=", "href=", "url("] {
            assert!(!html.contains(banned), "{banned}");
        }
        assert!(html.contains(BASELINE_COLOR) && html.contains(CURRENT_COLOR));
    }

    #[test]
    fn one_chart_per_feature_plus_the_predictions_worst_first() {
        let (b, c, e) = example();
        let t = tally();
        let html = render(&input(&b, &c, &e, Some(&t)));
        assert_eq!(html.matches("<svg").count(), 3 + 2);
        assert_eq!(render(&input(&b, &c, &e, None)).matches("<svg").count(), 3);
        let at = |name: &str| html.find(&format!("<h3>{}</h3>", esc(name))).unwrap();
        assert!(at("shifted") < at("stable"), "{e:?}");
        assert!(at(EVIL) < at("stable"));
        assert!(html.contains("<table class=\"violations\">"));
        assert!(html.contains("baseline_drift_check"));
    }

    #[test]
    fn empty_and_hostile_inputs_render() {
        let empty = Statistics {
            version: 0.0,
            dataset: Dataset { item_count: 0 },
            features: Vec::new(),
        };
        let ev = Evaluation {
            rows: 0,
            columns: Columns::default(),
            features: Vec::new(),
            violations: Default::default(),
        };
        let html = render(&input(&empty, &empty, &ev, Some(&Tally::default())));
        assert!(html.contains("No violations") && html.ends_with("</html>\n"));

        // NaN and infinite numbers everywhere, a constant feature, features on one side only,
        // and 10,000 categories.
        let stats = |name: &str, cells: Vec<String>| profile(vec![(name, cells)]).statistics();
        let mut nan = stats("nan", vec!["1".into(), "2".into()]).features;
        let n = nan[0].numerical_statistics.as_mut().unwrap();
        (n.mean, n.min, n.max) = (f64::NAN, f64::NEG_INFINITY, f64::NAN);
        let kll = &mut n.distribution.as_mut().unwrap().kll;
        (kll.buckets[0].lower_bound, kll.buckets[0].count) = (f64::NAN, f64::INFINITY);
        let sketch = kll.sketch.as_mut().unwrap();
        sketch.data.push(vec![f64::NAN, f64::INFINITY, 2.0]);
        (sketch.parameters.k, sketch.parameters.c) = (f64::NAN, f64::INFINITY);
        let mut one_side = nan.clone();
        let mut base = stats("k", vec!["7".into(); 50]);
        base.features
            .extend(stats("many", (0..10_000).map(|i| format!("v{i}")).collect()).features);
        let mut cur = base.clone();
        base.features.extend(nan.iter().cloned());
        cur.features.append(&mut nan);
        one_side[0].name = "base only".into();
        base.features.extend(one_side.clone());
        one_side[0].name = "current only".into();
        cur.features.extend(one_side);
        let mut check = FeatureCheck {
            name: "nan".into(),
            inferred_type: InferredType::Fractional,
            present: 3,
            completeness: f64::NAN,
            baseline_completeness: Some(f64::INFINITY),
            type_match: f64::NAN,
            domain_match: Some(f64::NEG_INFINITY),
            distance_raw: Some(f64::NAN),
            distance: Some(f64::INFINITY),
            threshold: 0.0,
            unseen: vec![EVIL.into()],
            violations: vec!["baseline_drift_check"],
        };
        let mut ev = ev.clone();
        ev.features.push(check.clone());
        check.name = "k".into();
        check.distance = Some(f64::NAN);
        ev.features.push(check);
        let html = render(&input(&base, &cur, &ev, Some(&tally())));
        assert_eq!(html.matches("<svg").count(), 5 + 2);
        assert!(!html.contains(EVIL) && !html.contains("NaN\""));
        assert!(html.len() < 200_000, "{}", html.len());
        let at = |name: &str| html.find(&format!("<h3>{name}</h3>")).unwrap();
        assert!(at("nan") < at("many"));
        assert!(html.contains("<section class=\"card nodata\"><h3>base only</h3>"));
        assert!(html.contains("no values"));
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(num(6.355), "6.355");
        assert_eq!(num(46.0), "46");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(1234.56), "1235");
        assert_eq!(num(2.5e7), "2.50e7");
        assert_eq!(pct(f64::NAN), "–");
        assert_eq!(short("abcdefgh", 4), "abc…");
    }
}
