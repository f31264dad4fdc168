//! `glue eval --dataflow`: the same evaluation through the dora graph, its result read back from the recorder's
//! episodes and the nodes' logs.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use eyre::{Result, WrapErr, ensure};

use super::{EpisodeResult, EvalConfig, EvalReport, Keypoints, Latency, StageTimes, video_name, write_report};
use crate::policy::Policy;


/// The line the sim node prints after an episode, which [`evaluate_in_dataflow`] reads back.
pub fn sim_outcome_line(episode: u64, sim: &crate::sim::Sim) -> String {
    let spec = sim.spec();
    let grasped = sim.grasped_carried().map(|g| format!(" grasped={g}")).unwrap_or_default();
    let held = sim.holding_carried().map(|h| format!(" held_at_end={h}")).unwrap_or_default();
    let error = sim.place_error().map(|d| format!(" place_error_m={d}")).unwrap_or_default();
    let first_close = sim.first_close().map(|(name, d)| format!(" first_close=\"{name}\" first_close_m={d}")).unwrap_or_default();
    format!(
        "sim: episode {episode} ({}, seed {}, {}) success={}{grasped}{held}{error}{first_close} after {} ticks",
        spec.task,
        spec.seed,
        spec.condition.variant.name(),
        sim.success(),
        sim.frame()
    )
}

/// A pick-and-place episode's stage as the sim node logs it: [`EpisodeResult`]'s fields of the same names.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PlaceStage {
    pub grasped: bool,
    pub held_at_end: bool,
    pub place_error_m: f32,
    pub first_close: Option<String>,
    pub first_close_m: Option<f32>,
}

/// The pick-and-place stage of `episode` from the sim node's log lines ([`sim_outcome_line`]).
pub(super) fn logged_place_stage(lines: &[String], episode: u64) -> Result<PlaceStage> {
    let prefix = format!("sim: episode {episode} (");
    let line = lines.iter().find(|l| l.starts_with(&prefix));
    let field = |key: &str| -> Result<&str> {
        let key = format!("{key}=");
        line.and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix(key.as_str())))
            .ok_or_else(|| eyre::eyre!("the sim node logged no `{key}` outcome for episode {episode}"))
    };
    let flag = |key: &str| -> Result<bool> {
        let value = field(key)?;
        value.parse().wrap_err_with(|| format!("sim node: bad {key}={value} for episode {episode}, expected true or false"))
    };
    let error = field("place_error_m")?;
    let error: f32 = error.parse().wrap_err_with(|| format!("sim node: bad place_error_m={error} for episode {episode}, expected metres"))?;
    ensure!(error.is_finite() && error >= 0.0, "sim node: place_error_m={error} for episode {episode}, expected a finite distance >= 0");
    // Object names hold spaces: the value is quoted, and absent while the gripper never closed.
    let first_close = line
        .and_then(|l| l.split_once(" first_close=\""))
        .map(|(_, rest)| rest.split_once('"').map(|(name, _)| name.to_string()))
        .map(|name| name.ok_or_else(|| eyre::eyre!("sim node: unterminated first_close=\"... for episode {episode}")))
        .transpose()?;
    let first_close_m = match first_close {
        Some(_) => {
            let d = field("first_close_m")?;
            let d: f32 = d.parse().wrap_err_with(|| format!("sim node: bad first_close_m={d} for episode {episode}, expected metres"))?;
            ensure!(d.is_finite() && d >= 0.0, "sim node: first_close_m={d} for episode {episode}, expected a finite distance >= 0");
            Some(d)
        }
        None => None,
    };
    Ok(PlaceStage { grasped: flag("grasped")?, held_at_end: flag("held_at_end")?, place_error_m: error, first_close, first_close_m })
}

/// What `glue eval --dataflow` runs.
#[derive(Clone, Debug)]
pub struct DataflowSetup {
    /// The graph file (`dataflow.sim.yml`): sim -> grounding -> tracker -> encoder -> policy -> sim, recorder.
    pub graph: PathBuf,
    /// The `dora` command.
    pub dora: PathBuf,
    /// The folder of the node binaries (`glue-sim`, `glue-policy`, ...).
    pub binaries: PathBuf,
}

/// Runs the same evaluation through the dora graph instead of in-process: a copy of the graph with the
/// evaluation's settings in each node's `env:` goes to `out/dataflow.yml`, `dora run` runs it (output in
/// `out/dataflow.log`), and `eval.json` is built from the recorder's episodes (`out/episodes/<dataflow id>/`, always
/// kept) and the nodes' reports: per-episode success and length from the recordings, holds from the policy node's
/// log, the grasp stage from the sim node's, per-node latency from each node's summary (`stages`, per episode-tick, grounding spread over the ticks;
/// `tick_mean_ms` their sum, the serial chain's time per tick; `tick_p95_ms` the sum of the per-tick nodes' p95, a
/// bound; `chunk_*` the policy node's chunk sampling).
pub fn evaluate_in_dataflow(config: &EvalConfig, out: &Path, setup: &DataflowSetup) -> Result<EvalReport> {
    use crate::dataflow::{Graph, absolute, dora_run, node_latency, node_messages};
    ensure!(
        config.object_pose_error == 0.0,
        "--object-pose-error is in-process only: the graph's encoder reads the simulator's true object poses"
    );
    ensure!(config.force_visible.is_none(), "--force-visible is in-process only: the graph's encoder reads the tracker's flags");
    ensure!(config.unlit_encoder.is_none(), "--unlit-encoder is in-process only: the graph's encoder reads the camera's frame");
    ensure!(config.key_patches == super::KeyPatches::Live, "--key-patches is in-process only: the graph's encoder computes the key patches");
    ensure!(
        config.key_positions == super::KeyPositions::Live,
        "--key-positions is in-process only: the graph's encoder reads the tracker's keypoints"
    );
    ensure!(
        config.keypoints == Keypoints::Tracker,
        "--keypoints oracle: the graph runs the perception pipeline (grounding and tracker nodes); oracle keypoints are in-process only"
    );
    ensure!(config.parallel == 1, "--parallel {}: the graph runs one episode at a time (--parallel is in-process only)", config.parallel);
    // The checkpoint is checked here, before the graph starts, so that a bad one fails in seconds.
    let policy = Policy::load(&config.checkpoint, &Device::flex())?;
    policy.check_task(config.task.name()).wrap_err_with(|| format!("--checkpoint {}", config.checkpoint.display()))?;
    std::fs::create_dir_all(out).wrap_err_with(|| format!("cannot create {}", out.display()))?;
    let out = absolute(out, "--out")?;
    let recordings = out.join("episodes");
    let mut graph = Graph::read(&setup.graph)?;
    graph.set_binaries(&setup.binaries)?;
    let path = |p: &Path, what: &str| Ok::<_, eyre::Report>(absolute(p, what)?.display().to_string());
    let checkpoint = path(&config.checkpoint, "--checkpoint")?;
    let settings = [
        ("sim", "TASK", config.task.name().to_string()),
        ("sim", "EPISODES", config.episodes.to_string()),
        ("sim", "SEED_START", config.seed_start.to_string()),
        ("sim", "VARIANT", config.condition.variant.name().to_string()),
        ("sim", "STRENGTH", config.condition.strength.to_string()),
        ("sim", "WIDTH", config.sim.width.to_string()),
        ("sim", "HEIGHT", config.sim.height.to_string()),
        ("grounding", "WEIGHTS", path(&config.keypoint_weights, "--keypoint-weights")?),
        ("grounding", "K", config.k.to_string()),
        ("grounding", "SEED", config.keypoint_seed.to_string()),
        ("grounding", "UNSEEN_AT", config.unseen_at.map(|[x, y]| format!("{x},{y}")).unwrap_or_default()),
        ("encoder", "CHECKPOINT", checkpoint.clone()),
        ("policy", "CHECKPOINT", checkpoint),
        ("policy", "SEED", config.seed.to_string()),
        ("policy", "TEMPORAL_ENSEMBLE", config.temporal_ensemble.map(|m| m.to_string()).unwrap_or_default()),
        ("recorder", "OUT_DIR", recordings.display().to_string()),
    ];
    for (node, key, value) in &settings {
        graph.set_env(node, key, value).wrap_err_with(|| format!("graph {}", setup.graph.display()))?;
    }
    let file = out.join("dataflow.yml");
    graph.write(&file)?;
    eprintln!("running {} episodes through `dora run {}` (log: {})", config.episodes, file.display(), out.join("dataflow.log").display());
    dora_run(&setup.dora, &file, &out.join("dataflow.log"))?;

    let run = std::fs::read_dir(&recordings)
        .wrap_err_with(|| format!("the recorder wrote nothing into {}", recordings.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .max()
        .ok_or_else(|| eyre::eyre!("the recorder wrote no run folder into {}", recordings.display()))?;
    let episodes: Vec<_> = crate::recording::list_episodes(&run)?.iter().map(crate::recording::read_episode).collect::<Result<_, _>>()?;
    ensure!(
        episodes.len() as u64 == config.episodes,
        "the graph recorded {} of {} episodes in {}; see {}",
        episodes.len(),
        config.episodes,
        run.display(),
        out.join("dataflow.log").display()
    );
    let messages = node_messages(&out)?;
    let holds = |episode: u64| {
        let prefix = format!("policy: episode {episode} frame ");
        messages.get("policy").map_or(0, |m| m.iter().filter(|l| l.starts_with(&prefix)).count() as u32)
    };
    let place_stage = |episode: u64| -> Result<Option<PlaceStage>> {
        if config.task.carried_object().is_none() {
            return Ok(None);
        }
        logged_place_stage(messages.get("sim").map_or(&[], Vec::as_slice), episode)
            .map(Some)
            .wrap_err_with(|| format!("see {}", out.join("dataflow.log").display()))
    };
    let mut results = Vec::with_capacity(episodes.len());
    for episode in &episodes {
        let stage = place_stage(episode.info.episode)?;
        let result = EpisodeResult {
            seed: episode.info.seed,
            success: episode.success,
            ticks: episode.ticks.len() as u32,
            invalid_actions: holds(episode.info.episode),
            grasped: stage.as_ref().map(|s| s.grasped),
            held_at_end: stage.as_ref().map(|s| s.held_at_end),
            place_error_m: stage.as_ref().map(|s| s.place_error_m),
            first_close_m: stage.as_ref().and_then(|s| s.first_close_m),
            first_close: stage.and_then(|s| s.first_close),
        };
        eprintln!("episode {} (seed {}): {} in {} ticks", episode.info.episode, result.seed, if result.success { "success" } else { "failure" }, result.ticks);
        if let Some(dir) = &config.video {
            std::fs::create_dir_all(dir)?;
            crate::viz::render_episode_gif(episode, &dir.join(video_name(config, result.seed)), &crate::viz::GifOptions { keypoints: true, ..Default::default() })?;
        }
        results.push(result);
    }
    let ticks = results.iter().map(|r| f64::from(r.ticks)).sum::<f64>().max(1.0);
    let [sim, tracker, encoder, step] = ["sim", "tracker", "encoder", "policy"].map(|n| node_latency(&messages, n, &format!("{n}: ")));
    let (sim, tracker, encoder, step) = (sim?, tracker?, encoder?, step?);
    let grounding = node_latency(&messages, "grounding", "grounding: ")?;
    let chunks = node_latency(&messages, "policy", "chunks: ")?;
    let stages = StageTimes {
        sim_ms: sim.1,
        grounding_ms: grounding.0 as f64 * grounding.1 / ticks,
        tracker_ms: tracker.1,
        encoder_ms: encoder.1,
        policy_ms: step.1,
    };
    let latency = Latency {
        chunk_mean_ms: chunks.1,
        chunk_p95_ms: chunks.2,
        tick_mean_ms: stages.total(),
        tick_p95_ms: sim.2 + tracker.2 + encoder.2 + step.2,
        stages,
    };
    write_report(config, policy.config.policy.name(), results, latency, &out)
}
