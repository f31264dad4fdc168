//! Demonstration collection: the scripted expert driving the simulator in-process, optionally recorded.
//!
//! This is the in-process twin of `dataflow.expert.yml` (sim node + expert node + recorder node): the same
//! `Sim`, `Expert` and `EpisodeWriter`, without a dora daemon, for `glue record`, tests and benchmarks.

use std::path::{Path, PathBuf};

use crate::msg::Action;
use crate::recording::{EpisodeInfo, EpisodeWriter, ObjectInfo, Tick};
use crate::sim::expert::Expert;
use crate::sim::{EpisodeSpec, Observation, Sim, SimConfig};

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    /// Control ticks executed (observation-action pairs).
    pub ticks: u32,
}

/// Runs the expert on `spec` until the episode is done, calling `on_tick` with every observation and the action
/// taken after it.
pub fn run_expert(config: &SimConfig, spec: EpisodeSpec, mut on_tick: impl FnMut(&Sim, Observation, &Action) -> eyre::Result<()>) -> eyre::Result<Outcome> {
    let mut sim = Sim::new(config, spec);
    let mut expert = Expert::new(spec.task, &sim.object_poses(), &sim.robot_state(), config.control_hz)?;
    while !sim.done() {
        let obs = sim.observe();
        let action = expert.act(&obs.robot_state);
        on_tick(&sim, obs, &action)?;
        sim.step(&action);
    }
    Ok(Outcome { success: sim.success(), ticks: sim.frame() })
}

/// The recording header of an episode of `sim`.
pub fn episode_info(sim: &Sim, episode: u64) -> EpisodeInfo {
    let spec = sim.spec();
    EpisodeInfo {
        episode,
        task: spec.task.name().to_string(),
        text_query: spec.task.text_query(),
        seed: spec.seed,
        variant: spec.condition.variant.name().to_string(),
        strength: spec.condition.strength,
        width: sim.config().width,
        height: sim.config().height,
        control_hz: sim.config().control_hz,
        objects: sim.objects().iter().map(|o| ObjectInfo { name: o.name.to_string(), instance: o.instance }).collect(),
    }
}

/// The recorded row of one observation and the action taken after it (keypoints stay empty until a tracker
/// fills them).
pub fn tick(obs: Observation, action: &Action) -> Tick {
    Tick {
        frame: obs.frame,
        timestamp_ns: obs.timestamp_ns,
        image: obs.image.rgb,
        segmentation: Some(obs.image.instance),
        robot_state: obs.robot_state,
        action: *action,
        keypoints: None,
        oracle_tracks: Some(obs.oracle_tracks),
    }
}

/// Runs and records one expert episode into `out_dir`; returns the file written and the outcome.
pub fn record_expert(config: &SimConfig, spec: EpisodeSpec, episode: u64, out_dir: &Path) -> eyre::Result<(PathBuf, Outcome)> {
    let mut writer: Option<EpisodeWriter> = None;
    let outcome = run_expert(config, spec, |sim, obs, action| {
        if writer.is_none() {
            writer = Some(EpisodeWriter::create(out_dir, episode_info(sim, episode))?);
        }
        writer.as_mut().expect("created above").push(tick(obs, action))?;
        Ok(())
    })?;
    let writer = writer.ok_or_else(|| eyre::eyre!("episode {episode} ended before its first tick"))?;
    Ok((writer.finish(outcome.success)?, outcome))
}
