//! `glue curve`: success rate against one numeric evaluation setting (`eval.json` files of one sweep), as a table
//! with 95% Wilson intervals and a [`LineChart`] PNG, one curve per task and policy. The settings it plots are the
//! OOD `strength` and the privileged-state diagnostic's `object_pose_error` (in cm).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use eyre::{Result, ensure};

use crate::eval::EvalReport;
use crate::plot::{LineChart, Series};

/// The setting on the x axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Axis {
    /// The OOD condition's strength (`--strength`).
    Strength,
    /// The privileged-state policy's localisation error (`--object-pose-error`), in cm.
    ObjectPoseError,
}

impl Axis {
    fn of(self, report: &EvalReport) -> f64 {
        match self {
            Axis::Strength => f64::from(report.strength),
            Axis::ObjectPoseError => f64::from(report.object_pose_error) * 100.0,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Axis::Strength => "OOD strength",
            Axis::ObjectPoseError => "object pose error, cm (std per axis)",
        }
    }
}

/// Reads `evals` (files or folders holding `eval.json`), prints one row per file sorted by curve and x, and saves the
/// chart to `out`. Two files of one curve at one x are refused (pool them with `glue compare` instead).
pub fn run(evals: &[PathBuf], axis: Axis, out: &Path) -> Result<String> {
    ensure!(!evals.is_empty(), "glue curve: no eval.json given");
    let mut curves: BTreeMap<String, Vec<(f64, EvalReport)>> = BTreeMap::new();
    for path in evals {
        let report = EvalReport::read(path)?;
        let label = format!("{} {}", report.policy, report.task);
        let x = axis.of(&report);
        let curve = curves.entry(label.clone()).or_default();
        ensure!(!curve.iter().any(|(other, _)| *other == x), "{}: a second {label} evaluation at {x}", path.display());
        curve.push((x, report));
    }
    let mut table = format!("{:<24} {:>8} {:>12} {:>16}\n", "curve", "x", "success", "95% interval");
    let mut series = Vec::new();
    for (label, mut points) in curves {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (x, r) in &points {
            let [lo, hi] = r.wilson_95;
            table += &format!("{label:<24} {x:>8.2} {:>5}/{:<3} {:>3.0}% {:>9.0}-{:.0}%\n", r.successes, r.episodes, 100.0 * r.success_rate, 100.0 * lo, 100.0 * hi);
        }
        series.push(Series::new(label, points.iter().map(|(x, r)| (*x, 100.0 * r.success_rate)).collect()));
    }
    let chart = LineChart { title: "Success rate".into(), x_label: axis.label().into(), y_label: "success, %".into(), series, log_y: false };
    chart.save_png(out)?;
    table += &format!("chart: {}\n", out.display());
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared test evaluation (`report::tests::report`) of the state policy at localisation error `error` (m).
    fn report(task: &str, error: f32, successes: usize) -> EvalReport {
        let mut r = crate::report::tests::report(task, "state", "none", 15, successes);
        (r.strength, r.object_pose_error) = (0.0, error);
        r
    }

    #[test]
    fn curves_are_sorted_by_x_and_drawn() {
        let dir = std::env::temp_dir().join(format!("glue-curve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut files = Vec::new();
        for (i, (task, error, successes)) in [("stack-block", 0.02, 11), ("stack-block", 0.0, 24), ("place-fruit", 0.01, 36)].into_iter().enumerate() {
            let path = dir.join(format!("{i}/eval.json"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string(&report(task, error, successes)).unwrap()).unwrap();
            files.push(path);
        }
        let table = run(&files, Axis::ObjectPoseError, &dir.join("curve.png")).unwrap();
        let rows: Vec<&str> = table.lines().skip(1).take(3).collect();
        assert!(rows[0].starts_with("state place-fruit") && rows[0].contains("36/50"), "{table}");
        assert!(rows[1].contains(" 0.00 ") && rows[1].contains("24/50") && rows[2].contains(" 2.00 ") && rows[2].contains("11/50"), "{table}");
        assert!(image::open(dir.join("curve.png")).is_ok(), "no chart");
        files.push(files[1].clone());
        let err = run(&files, Axis::ObjectPoseError, &dir.join("again.png")).unwrap_err().to_string();
        assert!(err.contains("a second state stack-block evaluation at 0"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
