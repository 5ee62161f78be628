//! Results as JSON lines (one object per metric, printed as soon as it is measured so a
//! failed phase keeps the earlier ones), and the side-by-side table the driver prints.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

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
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (s, w))| {
                let pad = w - s.chars().count();
                if c == 0 || c == 3 {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            let dashes: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, w)| {
                    if c == 1 || c == 2 {
                        format!("{}:", "-".repeat(w - 1))
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
