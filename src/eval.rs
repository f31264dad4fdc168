//! `glue eval`: closed-loop evaluation of a trained policy in the simulator, in-process (the same loop the dora
//! graph runs, without the daemon).
//!
//! Each control tick does what the `encoder` and `policy` nodes do, with the same code
//! ([`crate::policy::runtime`]): observe; keypoints for this frame (GLUE) and their frozen local features; the
//! step condition, appended to the condition history; when the action queue runs dry, a chunk sampled from the
//! global condition (Diffusion Policy's receding horizon); the next queued action through [`safe_action`]. An action
//! that fails that check is never executed: the robot holds and the episode counts it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use eyre::{Result, WrapErr};
use image::RgbImage;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::annotate::first_frame_keypoints;
use crate::collect::{episode_info, tick};
use crate::keypoints::OracleGrounder;
use crate::track::{KltConfig, KltTracker};
use crate::vit::GridEncoder;
use crate::policy::Policy;
use crate::recording::EpisodeWriter;
use crate::policy::observation::Frame;
use crate::policy::runtime::{ActionQueue, ConditionBuffer, safe_action};
use crate::sim::ood::Condition;
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, Sim, SimConfig};

/// Where GLUE's keypoints come from in the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Keypoints {
    /// The simulator's ground-truth point tracks (an upper bound for the perception pipeline).
    Oracle,
    /// The perception pipeline of the `grounding` and `tracker` nodes: the oracle grounder on the first frame's
    /// segmentation, K-means keypoints (seed 0, the grounding node's default `SEED`) on the local encoder's
    /// features, then the KLT tracker.
    Tracker,
}

/// One evaluation run.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub checkpoint: PathBuf,
    /// Camera size and rates (the checkpoint's training data should match).
    pub sim: SimConfig,
    pub task: TaskKind,
    pub episodes: u64,
    pub condition: Condition,
    pub seed_start: u64,
    pub keypoints: Keypoints,
    /// Write one GIF per episode into this folder.
    pub video: Option<PathBuf>,
    /// Record every episode (Arrow, as `glue record` does) into this folder.
    pub record: Option<PathBuf>,
    /// Sampling seed (the DDIM start noise).
    pub seed: u64,
    /// Keypoints extracted per episode with [`Keypoints::Tracker`] (the grounding node's `K`).
    pub k: usize,
    /// The local encoder for keypoint extraction with [`Keypoints::Tracker`] (the grounding node's `WEIGHTS`).
    pub keypoint_weights: PathBuf,
}

/// One episode's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeResult {
    pub seed: u64,
    pub success: bool,
    pub ticks: u32,
    /// Actions that were invalid after clamping and were replaced by a hold.
    pub invalid_actions: u32,
}

/// Latency of the policy, ms.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Per chunk: DDIM sampling (every `n_action_steps` ticks).
    pub chunk_mean_ms: f64,
    pub chunk_p95_ms: f64,
    /// Per control tick: keypoint features, encoding, and sampling when a chunk is due (what bounds the loop
    /// rate).
    pub tick_mean_ms: f64,
    pub tick_p95_ms: f64,
}

/// What `glue eval` writes to `OUT/eval.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub checkpoint: String,
    pub policy: String,
    pub task: String,
    pub variant: String,
    pub strength: f32,
    pub keypoints: Keypoints,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    /// 95% Wilson score interval of the success rate.
    pub wilson_95: [f64; 2],
    pub latency: Latency,
    pub per_episode: Vec<EpisodeResult>,
}

/// The 95% Wilson score interval for `k` successes in `n` trials.
pub fn wilson_95(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// Runs `config.episodes` closed-loop episodes and writes `eval.json` (and GIFs) into `out`.
pub fn evaluate(config: &EvalConfig, out: &Path, device: &Device) -> Result<EvalReport> {
    let policy = Policy::load(&config.checkpoint, device)?;
    let grid = match config.keypoints {
        Keypoints::Tracker => Some(GridEncoder::load(&config.keypoint_weights, 2, device)?),
        Keypoints::Oracle => None,
    };
    let sim_config = &config.sim;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    let mut results = Vec::new();
    let (mut chunk_ms, mut tick_ms) = (Vec::new(), Vec::new());
    std::fs::create_dir_all(out).wrap_err_with(|| format!("cannot create {}", out.display()))?;
    for i in 0..config.episodes {
        let spec = EpisodeSpec { task: config.task, seed: config.seed_start + i, condition: config.condition };
        let mut sim = Sim::new(sim_config, spec);
        let (w, h) = (sim_config.width, sim_config.height);
        let mut buffer = ConditionBuffer::new(policy.config.n_obs_steps);
        let period_ns = (1e9 / f64::from(sim_config.control_hz)) as u64;
        let mut queue = ActionQueue::new(sim_config.control_hz, period_ns / 2);
        let mut frames = Vec::new();
        let mut invalid = 0;
        let mut tracker: Option<KltTracker> = None;
        let mut writer = match &config.record {
            Some(dir) => Some(EpisodeWriter::create(dir, episode_info(&sim, i))?),
            None => None,
        };
        while !sim.done() {
            let obs = sim.observe();
            let observed = writer.as_ref().map(|_| obs.clone());
            let t = Instant::now();
            let image = RgbImage::from_raw(w, h, obs.image.rgb.clone()).ok_or_else(|| eyre::eyre!("frame size"))?;
            let keypoints = match (config.keypoints, tracker.as_mut()) {
                (Keypoints::Oracle, _) => obs.oracle_tracks.points.clone(),
                (Keypoints::Tracker, Some(t)) => t.try_track(&image)?,
                (Keypoints::Tracker, None) => {
                    let encoder = grid.as_ref().expect("loaded for the tracker mode");
                    let objects = episode_info(&sim, i).objects;
                    let grounder = OracleGrounder::new(objects, w, h, obs.image.instance.clone())?;
                    let queries = spec.task.text_query();
                    let init = first_frame_keypoints(&grounder, encoder, &image, &queries, config.k, 0, device)?;
                    let points: Vec<[f32; 2]> = init.iter().map(|p| [p[0], p[1]]).collect();
                    let t = KltTracker::new(KltConfig::default(), &image, &points)?;
                    let current = t.current();
                    tracker = Some(t);
                    current
                }
            };
            let features = policy.key_features(&image, &keypoints)?;
            let state = obs.robot_state.to_array();
            let frame = Frame {
                image: image.as_raw(),
                width: w,
                height: h,
                state: &state,
                keypoints: &keypoints,
                key_features: features.as_deref(),
            };
            let condition = buffer.push(policy.step_condition(&frame)?);
            if queue.needs_chunk(obs.timestamp_ns) {
                let t = Instant::now();
                queue.push_chunk(obs.timestamp_ns, &policy.plan(&condition, &mut rng)?);
                chunk_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let action = match queue.next(obs.timestamp_ns).map(safe_action) {
                Some(Ok(action)) => action,
                _ => {
                    invalid += 1;
                    sim.hold_action()
                }
            };
            tick_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if let (Some(w), Some(obs)) = (writer.as_mut(), observed) {
                let mut row = tick(obs, &action);
                row.keypoints = Some(crate::msg::Keypoints { points: keypoints.clone() });
                w.push(row)?;
            }
            if config.video.is_some() {
                frames.push(image);
            }
            sim.step(&action);
        }
        if let Some(w) = writer {
            w.finish(sim.success())?;
        }
        let result = EpisodeResult { seed: spec.seed, success: sim.success(), ticks: sim.frame(), invalid_actions: invalid };
        eprintln!("episode {} (seed {}): {} in {} ticks", i, spec.seed, if result.success { "success" } else { "failure" }, result.ticks);
        if let Some(dir) = &config.video {
            let path = dir.join(format!("{}-{}-seed{:06}.gif", config.task.name(), config.condition.variant.name(), spec.seed));
            std::fs::create_dir_all(dir)?;
            crate::viz::save_gif(frames.into_iter().map(Ok), 10, &path)?;
        }
        results.push(result);
    }
    let successes = results.iter().filter(|r| r.success).count();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let p95 = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get((sorted.len() * 95 / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
    };
    let report = EvalReport {
        checkpoint: config.checkpoint.display().to_string(),
        policy: policy.config.policy.name().to_string(),
        task: config.task.name().to_string(),
        variant: config.condition.variant.name().to_string(),
        strength: config.condition.strength,
        keypoints: config.keypoints,
        episodes: results.len(),
        successes,
        success_rate: successes as f64 / results.len().max(1) as f64,
        wilson_95: wilson_95(successes, results.len()),
        latency: Latency {
            chunk_mean_ms: mean(&chunk_ms),
            chunk_p95_ms: p95(&chunk_ms),
            tick_mean_ms: mean(&tick_ms),
            tick_p95_ms: p95(&tick_ms),
        },
        per_episode: results,
    };
    std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_known_values() {
        // 8/10: (0.4902, 0.9433); 0/10: (0, 0.2775); 50/100: (0.4038, 0.5962).
        let close = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3;
        assert!(close(wilson_95(8, 10), [0.4902, 0.9433]), "{:?}", wilson_95(8, 10));
        assert!(close(wilson_95(0, 10), [0.0, 0.2775]), "{:?}", wilson_95(0, 10));
        assert!(close(wilson_95(50, 100), [0.4038, 0.5962]), "{:?}", wilson_95(50, 100));
    }
}
