//! `glue bench`: throughput of the simulator and the recorder, printed as a table.
//!
//! Everything here runs on one thread (rapier without its `parallel` feature, the software rasterizer), so the
//! figures are per core. The dora image hop is measured by `dataflow.bench-hop.yml` (see the README).

use std::time::Instant;

use crate::collect::{record_expert, run_expert};
use crate::sim::ood::Condition;
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, SimConfig};

/// One benchmark result row.
pub struct Row {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub goal: &'static str,
}

/// Min / median / max of repeated timings (seconds).
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2], xs[xs.len() - 1])
}

/// Simulator ticks per second with rendering (observe + expert + step), for `task` at `size`x`size`, median over
/// `repeats` episodes.
fn sim_steps_per_s(task: TaskKind, size: u32, repeats: u32) -> eyre::Result<f64> {
    let config = SimConfig { width: size, height: size, ..SimConfig::default() };
    let mut rates = Vec::new();
    for seed in 0..repeats as u64 {
        let t = Instant::now();
        let outcome = run_expert(&config, EpisodeSpec { task, seed, condition: Condition::IN_DOMAIN }, |_, _, _| Ok(()))?;
        rates.push(outcome.ticks as f64 / t.elapsed().as_secs_f64());
    }
    Ok(spread(rates).1)
}

/// Runs every in-process benchmark; `repeats` episodes per figure.
pub fn run(repeats: u32) -> eyre::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for task in TaskKind::ALL {
        rows.push(Row {
            name: format!("sim steps/s with rendering, 224x224, {task}"),
            value: sim_steps_per_s(task, 224, repeats)?,
            unit: "steps/s",
            goal: ">= 100",
        });
    }
    rows.push(Row {
        name: "sim steps/s with rendering, 512x512, stack-block".into(),
        value: sim_steps_per_s(TaskKind::StackBlock, 512, repeats)?,
        unit: "steps/s",
        goal: "",
    });
    let dir = std::env::temp_dir().join(format!("glue-bench-{}", std::process::id()));
    let mut rates = Vec::new();
    let mut bytes = 0u64;
    for seed in 0..repeats as u64 {
        let spec = EpisodeSpec { task: TaskKind::StackBlock, seed, condition: Condition::IN_DOMAIN };
        let t = Instant::now();
        let (path, outcome) = record_expert(&SimConfig::default(), spec, seed, &dir)?;
        rates.push(outcome.ticks as f64 / t.elapsed().as_secs_f64());
        bytes += std::fs::metadata(&path)?.len() / outcome.ticks as u64;
    }
    std::fs::remove_dir_all(&dir).ok();
    rows.push(Row {
        name: "record: sim + expert + Arrow IPC (zstd) writer, stack-block".into(),
        value: spread(rates).1,
        unit: "ticks/s",
        goal: "",
    });
    rows.push(Row { name: "recording size per tick (224x224 rgb + segmentation)".into(), value: bytes as f64 / repeats as f64 / 1024.0, unit: "KiB", goal: "" });
    Ok(rows)
}

/// Formats rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from("| benchmark | value | unit | goal |\n|---|---:|---|---|\n");
    for r in rows {
        s.push_str(&format!("| {} | {:.1} | {} | {} |\n", r.name, r.value, r.unit, r.goal));
    }
    s
}
