//! `glue losses`: the validation loss of several training runs against the optimiser step, on one chart and in a
//! table, to compare runs at equal steps where their lengths differ. Runs trained on the same data and split (the
//! same `--data` and `--seed`) share their validation samples, so their losses are comparable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use eyre::{Result, ensure};

use crate::plot::{LineChart, Series};
use crate::train::{EpochRow, read_metrics};

/// One run to compare: its legend label and its epoch history.
#[derive(Debug, Clone)]
pub struct LabelledRun {
    pub label: String,
    pub rows: Vec<EpochRow>,
}

/// Parses `LABEL:DIR` (a run folder holding `metrics.csv`) and reads the run.
pub fn read_run(arg: &str) -> Result<LabelledRun> {
    let Some((label, dir)) = arg.split_once(':') else {
        eyre::bail!("run {arg:?}: expected LABEL:DIR (a training run's folder)")
    };
    ensure!(!label.is_empty(), "run {arg:?}: the label before ':' is empty");
    Ok(LabelledRun { label: label.to_owned(), rows: read_metrics(&PathBuf::from(dir))? })
}

/// The validation loss of the last epoch that ended at or before `step`, with that epoch's step.
fn val_loss_at(rows: &[EpochRow], step: usize) -> Option<(usize, f64)> {
    rows.iter().filter(|r| r.step <= step).filter_map(|r| r.val_loss.map(|v| (r.step, v))).next_back()
}

/// The markdown table: each run's length, its validation loss at the shortest run's last step (the equal-steps
/// comparison), and its final and best validation loss.
pub fn table(runs: &[LabelledRun]) -> String {
    let common = runs.iter().filter_map(|r| r.rows.last().map(|l| l.step)).min().unwrap_or(0);
    let mut md = format!(
        "| run | epochs | steps | validation loss at step <= {common} (the shortest run's length) | final validation loss | best validation loss |\n|---|---|---|---|---|---|\n"
    );
    let loss = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for run in runs {
        let last = run.rows.last().expect("read_metrics returns at least one epoch");
        let at = val_loss_at(&run.rows, common).map_or("-".to_owned(), |(s, v)| format!("{v:.4} (step {s})"));
        let best = run.rows.iter().filter_map(|r| r.val_loss).min_by(f64::total_cmp);
        let _ = writeln!(md, "| {} | {} | {} | {at} | {} | {} |", run.label, last.epoch, last.step, loss(last.val_loss), loss(best));
    }
    md
}

/// The chart: one validation-loss curve per run against the step, log-scale loss.
pub fn chart(runs: &[LabelledRun]) -> LineChart {
    LineChart {
        title: "Validation loss (EMA weights)".into(),
        x_label: "optimiser step".into(),
        y_label: "loss".into(),
        series: runs
            .iter()
            .map(|r| Series::new(&r.label, r.rows.iter().filter_map(|e| e.val_loss.map(|v| (e.step as f64, v))).collect()))
            .collect(),
        log_y: true,
    }
}

/// `glue losses`: reads the runs, writes the chart to `out` and returns the table.
pub fn run(args: &[String], out: &Path) -> Result<String> {
    ensure!(!args.is_empty(), "no runs: pass LABEL:DIR for each training run");
    let runs = args.iter().map(|a| read_run(a)).collect::<Result<Vec<_>>>()?;
    chart(&runs).save_png(out)?;
    Ok(table(&runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(points: &[(usize, Option<f64>)]) -> Vec<EpochRow> {
        points
            .iter()
            .enumerate()
            .map(|(i, &(step, val_loss))| EpochRow { epoch: i + 1, step, train_loss: 1.0, val_loss, lr: 1e-4, seconds: 1.0 })
            .collect()
    }

    #[test]
    fn runs_are_compared_at_the_shortest_runs_length() {
        let runs = [
            LabelledRun { label: "long".into(), rows: rows(&[(300, Some(0.5)), (600, Some(0.25)), (900, Some(0.125))]) },
            LabelledRun { label: "short".into(), rows: rows(&[(250, Some(0.75)), (500, None), (750, Some(0.3))]) },
        ];
        let md = table(&runs);
        assert!(md.contains("at step <= 750"), "{md}");
        assert!(md.contains("| long | 3 | 900 | 0.2500 (step 600) | 0.1250 | 0.1250 |"), "{md}");
        assert!(md.contains("| short | 3 | 750 | 0.3000 (step 750) | 0.3000 | 0.3000 |"), "{md}");
        let chart = chart(&runs);
        assert_eq!(chart.series[1].points, vec![(250.0, 0.75), (750.0, 0.3)], "epochs without validation are left out");
    }

    #[test]
    fn a_run_argument_without_a_label_is_refused() {
        let err = read_run("out/runs/x").unwrap_err().to_string();
        assert!(err.contains("expected LABEL:DIR"), "{err}");
        assert!(read_run(":out/runs/x").unwrap_err().to_string().contains("label before ':' is empty"));
    }
}
