//! `glue bench`: throughput of the simulator and the recorder, printed as a table.
//!
//! Everything here runs on one thread (rapier without its `parallel` feature, the software rasterizer), so the
//! figures are per core. The dora image hop is measured by `dataflow.bench-hop.yml` (see the README).

use std::time::Instant;

use crate::collect::{episode_info, run_expert, tick};
use crate::recording::EpisodeWriter;
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

/// The episode writer alone (`EpisodeWriter` create, push, finish with zstd IPC), on the ticks of one recorded
/// stack-block episode held in memory: ticks per second, raw MB/s and the file size per tick.
fn recorder_throughput(repeats: u32) -> eyre::Result<Vec<Row>> {
    let config = SimConfig::default();
    let spec = EpisodeSpec { task: TaskKind::StackBlock, seed: 0, condition: Condition::IN_DOMAIN };
    let mut ticks = Vec::new();
    let mut info = None;
    run_expert(&config, spec, |sim, obs, action| {
        info.get_or_insert_with(|| episode_info(sim, 0));
        ticks.push(tick(obs, &sim.object_poses(), action));
        Ok(())
    })?;
    let info = info.ok_or_else(|| eyre::eyre!("bench episode has no tick"))?;
    let raw_bytes: usize = ticks.iter().map(|t| t.image.len() + t.segmentation.as_ref().map_or(0, Vec::len)).sum();
    let dir = std::env::temp_dir().join(format!("glue-bench-{}", std::process::id()));
    let (mut times, mut size) = (Vec::new(), 0);
    for _ in 0..repeats {
        std::fs::remove_dir_all(&dir).ok();
        let t = Instant::now();
        let mut writer = EpisodeWriter::create(&dir, info.clone())?;
        for tick in &ticks {
            writer.push(tick.clone())?;
        }
        let path = writer.finish(true)?;
        times.push(t.elapsed().as_secs_f64());
        size = std::fs::metadata(&path)?.len();
    }
    std::fs::remove_dir_all(&dir).ok();
    let median = spread(times).1;
    Ok(vec![
        Row { name: "recorder: episode writer (partial stream + final zstd IPC file)".into(), value: ticks.len() as f64 / median, unit: "ticks/s", goal: ">= 10 (control rate)" },
        Row { name: "recorder: raw image + segmentation throughput".into(), value: raw_bytes as f64 / median / 1e6, unit: "MB/s", goal: "" },
        Row { name: "recording size per tick (224x224 rgb + segmentation, zstd)".into(), value: size as f64 / ticks.len() as f64 / 1024.0, unit: "KiB", goal: "" },
    ])
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
    rows.extend(recorder_throughput(repeats)?);
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
