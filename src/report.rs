//! `glue report`: the study's tables and plots from its evaluation and training records.
//!
//! Reads `STUDY/eval/*/eval.json` ([`EvalReport`], written by `glue eval`) and `STUDY/runs/*/` (`train.json`,
//! `metrics.csv`, written by `glue train`) and writes `OUT/tables.md` (success per task, policy and condition with
//! 95% Wilson intervals; the key-patch ablation; the training runs) and one bar chart per task,
//! `OUT/success-TASK.png`. Several evaluations of one cell (e.g. one per training seed) are pooled into it, as
//! `glue compare` pools them ([`Pooled`]), and the cell says how many. `scripts/study.sh` produces the inputs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use eyre::{Result, WrapErr, ensure};

use crate::compare::Pooled;
use crate::eval::EvalReport;
use crate::plot::BarChart;
use crate::sim::ood::Variant;
use crate::train::{EpochRow, TrainConfig, read_metrics};

/// The policies in table order (the paper's: GLUE, its ablation GLUE-S, the Diffusion Policy baseline).
const POLICIES: [&str; 3] = ["glue", "glue-s", "dp"];
/// The keypoint count of the main runs (the paper's default; the ablation varies it).
pub const MAIN_K: usize = 15;

/// One training run's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub name: String,
    pub policy: String,
    pub epochs: usize,
    pub steps: usize,
    pub final_train_loss: f64,
    pub best_val_loss: Option<f64>,
    pub minutes: f64,
}

/// Everything the report is made of.
#[derive(Debug, Clone)]
pub struct Study {
    pub evals: Vec<EvalReport>,
    pub runs: Vec<RunSummary>,
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .wrap_err_with(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Reads the records under `study` (see the module doc). Folders without a finished record are skipped.
pub fn load(study: &Path) -> Result<Study> {
    let mut evals = Vec::new();
    for dir in subdirs(&study.join("eval"))? {
        if dir.join("eval.json").is_file() {
            evals.push(EvalReport::read(&dir)?);
        }
    }
    let mut runs = Vec::new();
    for dir in subdirs(&study.join("runs"))? {
        let (config, metrics) = (dir.join("train.json"), dir.join("metrics.csv"));
        if !(config.is_file() && metrics.is_file()) {
            continue;
        }
        let config: TrainConfig = serde_json::from_str(&std::fs::read_to_string(&config)?)
            .wrap_err_with(|| format!("bad {}", config.display()))?;
        runs.push(summarise_run(&dir, &config, &read_metrics(&dir)?));
    }
    Ok(Study { evals, runs })
}

/// A run's summary from its epoch history (`metrics.csv`).
fn summarise_run(dir: &Path, config: &TrainConfig, rows: &[EpochRow]) -> RunSummary {
    let last = rows.last().expect("read_metrics returns at least one epoch");
    RunSummary {
        name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        policy: config.policy.policy.name().to_string(),
        epochs: last.epoch,
        steps: last.step,
        final_train_loss: last.train_loss,
        best_val_loss: rows.iter().filter_map(|r| r.val_loss).min_by(f64::total_cmp),
        minutes: rows.iter().map(|r| r.seconds).sum::<f64>() / 60.0,
    }
}

/// A table cell: the episodes of one or more evaluations, pooled, and how many evaluations that was.
#[derive(Debug, Clone, Copy)]
struct Cell {
    pooled: Pooled,
    runs: usize,
}

impl Cell {
    /// `successes/episodes (rate, Wilson interval)`, and the number of pooled evaluations when more than one.
    fn text(&self) -> String {
        let Self { pooled, runs } = *self;
        let [lo, hi] = pooled.wilson_95();
        let runs = if runs > 1 { format!(", {runs} runs") } else { String::new() };
        format!("{}/{} ({:.0}%, {:.0}-{:.0}%{runs})", pooled.successes, pooled.episodes, 100.0 * pooled.rate(), 100.0 * lo, 100.0 * hi)
    }
}

impl Study {
    /// The main-run evaluations of (`task`, `policy`, `variant`) pooled into one cell, if there are any.
    fn cell(&self, task: &str, policy: &str, variant: &str) -> Option<Cell> {
        let found: Vec<&EvalReport> =
            self.evals.iter().filter(|r| r.task == task && r.policy == policy && r.variant == variant && main_run(r)).collect();
        (!found.is_empty()).then(|| Cell { pooled: Pooled::of(found.iter().copied()), runs: found.len() })
    }

    fn tasks(&self) -> Vec<String> {
        let mut tasks: Vec<String> = self.evals.iter().map(|r| r.task.clone()).collect();
        tasks.sort();
        tasks.dedup();
        tasks
    }

    /// `tables.md`: the success table, the key-patch ablation and the training runs.
    pub fn tables(&self) -> String {
        let variants: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        let mut md = String::from("### Success rate (successes/episodes, rate, 95% Wilson interval)\n\n");
        let _ = writeln!(md, "| task | policy | {} |", variants.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---|".repeat(variants.len()));
        for task in self.tasks() {
            for policy in POLICIES {
                let cells: Vec<String> =
                    variants.iter().map(|v| self.cell(&task, policy, v).map_or("-".into(), |c| c.text())).collect();
                if cells.iter().any(|c| c != "-") {
                    let _ = writeln!(md, "| {task} | {policy} | {} |", cells.join(" | "));
                }
            }
        }
        let mut ablation: Vec<&EvalReport> = self.evals.iter().filter(|r| r.policy == "glue" && r.variant == "none").collect();
        ablation.sort_by_key(|r| (r.task.clone(), r.k));
        if ablation.iter().any(|r| r.k != MAIN_K) {
            md.push_str("\n### Key-patch count (GLUE, in-domain)\n\n| task | K | success |\n|---|---|---|\n");
            for r in ablation {
                let _ = writeln!(md, "| {} | {} | {} |", r.task, r.k, Cell { pooled: Pooled::of([r]), runs: 1 }.text());
            }
        }
        if !self.runs.is_empty() {
            md.push_str("\n### Training runs\n\n| run | policy | epochs | steps | final train loss | best validation loss | minutes |\n|---|---|---|---|---|---|---|\n");
            for r in &self.runs {
                let val = r.best_val_loss.map_or("-".into(), |v| format!("{v:.4}"));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {:.4} | {val} | {:.1} |",
                    r.name, r.policy, r.epochs, r.steps, r.final_train_loss, r.minutes
                );
            }
        }
        md
    }

    /// One bar chart of `task`: success rate per condition and policy, with the Wilson intervals as whiskers.
    pub fn chart(&self, task: &str) -> BarChart {
        let variants: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        let (mut series, mut intervals) = (Vec::new(), Vec::new());
        for policy in POLICIES {
            let found: Vec<Option<Cell>> = variants.iter().map(|v| self.cell(task, policy, v)).collect();
            if found.iter().all(Option::is_none) {
                continue;
            }
            series.push((policy.to_string(), found.iter().map(|c| c.map_or(f64::NAN, |c| c.pooled.rate())).collect()));
            intervals.push(found.iter().map(|c| c.map_or([f64::NAN; 2], |c| c.pooled.wilson_95())).collect());
        }
        BarChart {
            title: format!("{task}: success rate (95% Wilson interval)"),
            y_label: "success rate".into(),
            groups: variants.iter().map(|v| v.to_string()).collect(),
            series,
            intervals,
        }
    }
}

/// Whether an evaluation belongs to the main comparison (not the key-patch ablation).
fn main_run(r: &EvalReport) -> bool {
    r.policy != "glue" || r.k == MAIN_K
}

/// Writes `out/tables.md` and `out/success-TASK.png`; returns the tables.
pub fn write(study: &Path, out: &Path) -> Result<String> {
    let study = load(study)?;
    ensure!(!study.evals.is_empty(), "no eval/*/eval.json under the study folder");
    std::fs::create_dir_all(out).wrap_err_with(|| format!("cannot create {}", out.display()))?;
    let tables = study.tables();
    std::fs::write(out.join("tables.md"), &tables)?;
    for task in study.tasks() {
        study.chart(&task).save_png(&out.join(format!("success-{task}.png")))?;
    }
    Ok(tables)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::eval::{Keypoints, Latency, wilson_95};

    /// A 50-episode evaluation with the given cell and success count (also used by `compare`'s tests).
    pub(crate) fn report(task: &str, policy: &str, variant: &str, k: usize, successes: usize) -> EvalReport {
        EvalReport {
            checkpoint: "c".into(),
            policy: policy.into(),
            task: task.into(),
            variant: variant.into(),
            strength: 0.5,
            keypoints: Keypoints::Tracker,
            k,
            episodes: 50,
            successes,
            success_rate: successes as f64 / 50.0,
            wilson_95: wilson_95(successes, 50),
            parallel: 10,
            temporal_ensemble: None,
            keypoint_seed: 0,
            unseen_at: None,
            object_pose_error: 0.0,
            force_visible: None,
            unlit_encoder: None,
            key_patches: crate::eval::KeyPatches::Live,
            key_positions: crate::eval::KeyPositions::Live,
            latency: Latency::default(),
            per_episode: Vec::new(),
        }
    }

    #[test]
    fn tables_place_each_evaluation_in_its_cell_and_keep_the_ablation_apart() {
        let study = Study {
            evals: vec![
                report("push-button", "glue", "none", 15, 40),
                report("push-button", "glue", "none", 10, 30),
                report("push-button", "dp", "clutter", 15, 5),
            ],
            runs: Vec::new(),
        };
        let md = study.tables();
        assert!(md.contains("| push-button | glue | 40/50 (80%, 67-89%) | - | - | - |"), "{md}");
        assert!(md.contains("| push-button | dp | - | 5/50 (10%, 4-21%) | - | - |"), "{md}");
        assert!(md.contains("| push-button | 10 | 30/50"), "{md}");
        assert!(!md.contains("| push-button | glue-s |"), "a policy without evaluations gets no row: {md}");
        let chart = study.chart("push-button");
        assert_eq!(chart.series.len(), 2);
        assert_eq!(chart.series[0].1[0], 0.8, "the ablation's K=10 run must not replace the main cell");
        assert_eq!(chart.intervals[1][1], wilson_95(5, 50));
    }

    #[test]
    fn evaluations_of_one_cell_are_pooled() {
        let study = Study {
            evals: vec![
                report("push-button", "dp", "none", 15, 20),
                report("push-button", "dp", "none", 15, 30),
                report("push-button", "dp", "lighting", 15, 10),
            ],
            runs: Vec::new(),
        };
        let md = study.tables();
        assert!(md.contains("| push-button | dp | 50/100 (50%, 40-60%, 2 runs) | - | - | 10/50 (20%, 11-33%) |"), "{md}");
        let chart = study.chart("push-button");
        assert_eq!(chart.series[0].1[0], 0.5);
        assert_eq!(chart.intervals[0][0], wilson_95(50, 100));
    }

    #[test]
    fn run_summary_reads_metrics() {
        let row = |epoch, step, train_loss, val_loss| EpochRow { epoch, step, train_loss, val_loss, lr: 1e-4, seconds: 60.0 };
        let rows = [row(1, 10, 1.0, Some(0.9)), row(2, 20, 0.5, Some(0.95))];
        let config = TrainConfig::new(crate::policy::PolicyConfig::new(crate::policy::PolicyKind::Dp, crate::policy::ModelSize::Small), vec![]);
        let r = summarise_run(Path::new("runs/push-button-dp"), &config, &rows);
        assert_eq!((r.name.as_str(), r.policy.as_str(), r.epochs, r.steps), ("push-button-dp", "dp", 2, 20));
        assert_eq!((r.final_train_loss, r.best_val_loss, r.minutes), (0.5, Some(0.9), 2.0));
    }
}
