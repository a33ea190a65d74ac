//! `--backend all`: the same workloads on every backend enabled in the build, one after the
//! other in one process, and one table with a column per backend and each one's speed against
//! the first (ndarray).
//!
//! Every benchmark turns its own rows into [`Figure`]s: a workload, its unit and its value on
//! one backend. Figures that do not depend on the backend (the `gemm` ceiling, PyTorch's
//! figures) are left out of the side-by-side table; each backend's full table follows it.

use crate::measure::{format_ratio, format_seconds};
use focal::backend::BackendKind;
use serde::Serialize;

/// One figure of one workload on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What ran, the same text on every backend.
    pub workload: String,
    /// `"time"` (seconds, shown as ms or µs), `"ms"`, or a rate such as `"tokens/s"`.
    pub unit: String,
    /// The figure; `None` when the workload was not run at that size.
    pub value: Option<f64>,
}

impl Figure {
    /// A time in seconds.
    pub fn time(workload: String, seconds: Option<f64>) -> Self {
        Self {
            workload,
            unit: "time".to_string(),
            value: seconds,
        }
    }

    fn lower_is_better(&self) -> bool {
        self.unit == "time" || self.unit == "ms"
    }

    fn cell(&self) -> String {
        match self.value {
            None => "–".to_string(),
            Some(v) if self.unit == "time" => format_seconds(v),
            Some(v) => format!("{v:.1}"),
        }
    }

    /// How many times faster `self` ran than `baseline` (above 1: faster).
    fn speed_vs(&self, baseline: &Figure) -> Option<f64> {
        let (ours, theirs) = (self.value?, baseline.value?);
        let ratio = if self.lower_is_better() {
            theirs / ours
        } else {
            ours / theirs
        };
        ratio.is_finite().then_some(ratio)
    }
}

/// What one backend measured.
#[derive(Debug, Serialize)]
pub struct Measured {
    /// The backend.
    pub backend: &'static str,
    /// The device it ran on (for wgpu, the adapter).
    pub device: String,
    /// Its figures, for the side-by-side table.
    pub figures: Vec<Figure>,
    /// Its own table.
    #[serde(skip)]
    pub table: String,
    /// Its own figures as the single-backend JSON has them.
    pub report: serde_json::Value,
}

/// The device a backend runs on: the CPU's threads, or wgpu's adapter (lavapipe on a machine
/// without a GPU).
pub fn device_name(kind: BackendKind) -> String {
    match kind {
        BackendKind::NdArray => format!("the CPU, {} rayon threads", rayon::current_num_threads()),
        BackendKind::Wgpu => match focal::backend::wgpu_adapter_info() {
            Ok(adapter) => format!("wgpu adapter {adapter}"),
            Err(e) => format!("no wgpu adapter ({e})"),
        },
    }
}

/// The side-by-side table, then each backend's own.
pub fn markdown<'a>(title: &str, runs: &'a [Measured]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let mut out = format!("{title}, on every enabled backend in one process.\n\n");
    for run in runs {
        out += &format!("- {}: {}\n", run.backend, run.device);
    }
    out += "\n| workload | unit |";
    for run in runs {
        out += &format!(" {} |", run.backend);
    }
    for run in &runs[1..] {
        out += &format!(" {} speed vs {} |", run.backend, first.backend);
    }
    out += "\n|---|---|";
    out += &"---:|".repeat(2 * runs.len() - 1);
    out += "\n";
    for figure in &first.figures {
        let same = |run: &'a Measured| run.figures.iter().find(|f| f.workload == figure.workload);
        out += &format!("| {} | {} |", figure.workload, figure.unit);
        for run in runs {
            let cell = same(run).map_or("–".to_string(), |f| f.cell());
            out += &format!(" {cell} |");
        }
        for run in &runs[1..] {
            let ratio = same(run).and_then(|f| f.speed_vs(figure));
            out += &ratio.map_or(" – |".to_string(), |r| format!(" {} |", format_ratio(r)));
        }
        out += "\n";
    }
    out += &format!(
        "\nA speed above 1× means faster than on {}. \"–\": not run there (the backend's own \
         table below says why).\n",
        first.backend
    );
    for run in runs {
        out += &format!("\n### {} ({})\n\n{}\n", run.backend, run.device, run.table);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(backend: &'static str, figures: Vec<Figure>) -> Measured {
        Measured {
            backend,
            device: "test".to_string(),
            figures,
            table: String::new(),
            report: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_table_puts_backends_side_by_side_with_their_speed() {
        let rate = |value| Figure {
            workload: "decoding".to_string(),
            unit: "tokens/s".to_string(),
            value: Some(value),
        };
        let cpu = run(
            "ndarray",
            vec![Figure::time("attention".into(), Some(0.004)), rate(10.0)],
        );
        let gpu = run(
            "wgpu",
            vec![Figure::time("attention".into(), Some(0.001)), rate(5.0)],
        );
        let table = markdown("Test", &[cpu, gpu]);
        assert!(
            table.contains("| attention | time | 4.0 ms | 1.0 ms | 4.00× |"),
            "{table}"
        );
        assert!(
            table.contains("| decoding | tokens/s | 10.0 | 5.0 | 0.50× |"),
            "{table}"
        );
        assert!(table.contains("| workload | unit | ndarray | wgpu | wgpu speed vs ndarray |"));
    }

    #[test]
    fn a_workload_not_run_has_no_ratio() {
        let cpu = run("ndarray", vec![Figure::time("long".into(), Some(1.0))]);
        let gpu = run("wgpu", vec![Figure::time("long".into(), None)]);
        let table = markdown("Test", &[cpu, gpu]);
        assert!(
            table.contains("| long | time | 1.00 s | – | – |"),
            "{table}"
        );
    }
}
