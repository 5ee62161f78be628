//! Results as JSON lines (one object per metric, printed as soon as it is measured so a
//! failed phase keeps the earlier ones), and the side-by-side table the driver prints.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Throughputs are in decimal megabytes.
pub const MB: f64 = 1_000_000.0;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    /// Which registry (`berth`, `distribution`): the driver's `--label`.
    pub registry: String,
    /// Stable identifier, the join key between the two files.
    pub metric: String,
    /// What a reader sees in the table.
    pub title: String,
    pub value: f64,
    pub unit: String,
    pub better: Better,
    /// Anything else worth keeping (sizes, counts, percentiles).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// Prints metrics to stdout as they come.
pub struct Emitter {
    pub registry: String,
}

impl Emitter {
    pub fn emit(
        &self,
        metric: &str,
        title: &str,
        value: f64,
        unit: &str,
        better: Better,
        detail: serde_json::Value,
    ) {
        let m = Metric {
            registry: self.registry.clone(),
            metric: metric.into(),
            title: title.into(),
            value,
            unit: unit.into(),
            better,
            detail,
        };
        eprintln!("  {title}: {} {unit}", format_value(value, unit));
        let line = serde_json::to_string(&m).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

pub fn read_jsonl(path: &Path) -> Result<Vec<Metric>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a metric", path.display(), i + 1))
        })
        .collect()
}

pub fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "req/s" | "errors" | "count" => format!("{value:.0}"),
        "ms" if value < 10.0 => format!("{value:.2}"),
        "ms" => format!("{value:.1}"),
        "s" => format!("{value:.2}"),
        _ => format!("{value:.1}"),
    }
}

/// Which measured figures each machine ceiling (see `ceilings`) bounds from above.
const BOUNDS: &[(&str, &[&str])] = &[
    (
        "ceiling_sha256",
        &["push_monolithic", "push_chunked", "pull"],
    ),
    ("ceiling_loopback", &["pull_unverified"]),
    (
        "ceiling_disk",
        &["push_monolithic", "push_chunked", "push_concurrent"],
    ),
];

/// The ceilings table: for each figure a ceiling bounds, Distribution's figure and the best
/// ratio to it any registry could reach on this machine (ceiling / Distribution).
pub fn ceilings_table(ceilings: &[Metric], b: &[Metric], b_name: &str) -> String {
    let mut rows = vec![[
        "machine ceiling".to_string(),
        "MB/s".to_string(),
        "bounds".to_string(),
        format!("{b_name} there"),
        format!("best possible ratio to {b_name}"),
    ]];
    for (id, bounded) in BOUNDS {
        let Some(c) = ceilings.iter().find(|m| m.metric == *id) else {
            continue;
        };
        for metric in *bounded {
            let Some(m) = b.iter().find(|m| m.metric == *metric) else {
                continue;
            };
            rows.push([
                c.title.clone(),
                format_value(c.value, &c.unit),
                m.title.clone(),
                format_value(m.value, &m.unit),
                format!("{:.2}", c.value / m.value),
            ]);
        }
    }
    render(&rows, &[false, true, false, true, true])
}

/// The table: one row per metric in the order of `a`, with `a`'s and `b`'s values and the
/// ratio a/b.
pub fn table(a: &[Metric], b: &[Metric], a_name: &str, b_name: &str) -> String {
    let mut rows = vec![[
        "metric".to_string(),
        a_name.to_string(),
        b_name.to_string(),
        format!("ratio {a_name}/{b_name}"),
    ]];
    let mut seen = Vec::new();
    for m in a.iter().chain(b.iter()) {
        if seen.contains(&m.metric) {
            continue;
        }
        seen.push(m.metric.clone());
        let va = a.iter().find(|x| x.metric == m.metric);
        let vb = b.iter().find(|x| x.metric == m.metric);
        let cell = |v: Option<&Metric>| {
            v.map(|v| format_value(v.value, &v.unit))
                .unwrap_or_else(|| "—".into())
        };
        let ratio = match (va, vb) {
            (Some(x), Some(y)) if y.value != 0.0 => format!("{:.2}", x.value / y.value),
            (Some(x), Some(y)) if x.value == 0.0 && y.value == 0.0 => "=".into(),
            _ => "—".into(),
        };
        let note = match m.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        rows.push([
            format!("{} ({})", m.title, m.unit),
            cell(va),
            cell(vb),
            format!("{ratio} ({note})"),
        ]);
    }
    render(&rows, &[false, true, true, false])
}

/// A Markdown table; columns flagged in `right` are right-aligned.
fn render<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (s, w))| {
                let pad = " ".repeat(w - s.chars().count());
                if right[c] {
                    format!("{pad}{s}")
                } else {
                    format!("{s}{pad}")
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            let dashes: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, w)| {
                    if right[c] {
                        format!("{}:", "-".repeat(w.saturating_sub(1)))
                    } else {
                        "-".repeat(*w)
                    }
                })
                .collect();
            out.push_str(&format!("| {} |\n", dashes.join(" | ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(reg: &str, id: &str, v: f64, better: Better) -> Metric {
        Metric {
            registry: reg.into(),
            metric: id.into(),
            title: id.into(),
            value: v,
            unit: "MB/s".into(),
            better,
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn table_has_ratio_and_direction() {
        let a = [
            m("a", "push", 500.0, Better::Higher),
            m("a", "rss", 0.0, Better::Lower),
        ];
        let b = [
            m("b", "push", 100.0, Better::Higher),
            m("b", "rss", 0.0, Better::Lower),
        ];
        let t = table(&a, &b, "berth", "distribution");
        assert!(t.contains("5.00 (higher is better)"), "{t}");
        assert!(t.contains("= (lower is better)"), "{t}");
        assert_eq!(t.lines().count(), 4);
    }

    #[test]
    fn metric_round_trips() {
        let x = m("a", "push", 1.5, Better::Higher);
        let s = serde_json::to_string(&x).unwrap();
        let y: Metric = serde_json::from_str(&s).unwrap();
        assert_eq!(y.value, 1.5);
        assert_eq!(y.better, Better::Higher);
    }
}
