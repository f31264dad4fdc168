//! What an evaluation writes (`eval.json`): per-episode outcomes, the success rate with its Wilson interval,
//! latency by node, and the stage where each failed pick-and-place episode ended.

use std::path::Path;

use eyre::{Result, WrapErr, ensure};
use serde::{Deserialize, Serialize};

use super::{ForceVisible, KeyPatches, KeyPositions, Keypoints, UnlitEncoder};
use crate::stats::median;

/// Leaves [`EvalReport::object_pose_error`] out of `eval.json` when it is 0, as in every file written before it.
fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

fn is_first_seed(seed: &u64) -> bool {
    *seed == 0
}

/// One episode's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeResult {
    pub seed: u64,
    pub success: bool,
    pub ticks: u32,
    /// Actions that were invalid after clamping and were replaced by a hold.
    pub invalid_actions: u32,
    /// Pick-and-place tasks: whether the gripper held the carried object at some tick ([`crate::sim::Sim::grasped_carried`]);
    /// absent for push-button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grasped: Option<bool>,
    /// Pick-and-place tasks: whether the gripper still held the carried object at the episode's end
    /// ([`crate::sim::Sim::holding_carried`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_at_end: Option<bool>,
    /// Pick-and-place tasks: the carried object's horizontal distance from its target at the episode's end, m
    /// ([`crate::sim::Sim::place_error`]; the success check bounds it by
    /// [`crate::sim::task::TaskKind::place_target`]'s tolerance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_error_m: Option<f32>,
    /// Pick-and-place tasks: the task object nearest the TCP when the gripper was first commanded closed, the
    /// object of the first grasp attempt ([`crate::sim::Sim::first_close`]); absent if it never closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_close: Option<String>,
    /// The TCP's horizontal distance from that object's centre then, m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_close_m: Option<f32>,
}

impl EpisodeResult {
    /// The outcome of the episode `sim` has run, with its count of replaced actions.
    pub fn of(sim: &crate::sim::Sim, invalid_actions: u32) -> Self {
        let first_close = sim.first_close();
        EpisodeResult {
            seed: sim.spec().seed,
            success: sim.success(),
            ticks: sim.frame(),
            invalid_actions,
            grasped: sim.grasped_carried(),
            held_at_end: sim.holding_carried(),
            place_error_m: sim.place_error(),
            first_close: first_close.map(|(name, _)| name.to_string()),
            first_close_m: first_close.map(|(_, d)| d),
        }
    }
}

/// Where the episodes of a pick-and-place evaluation ended: the stage of each failure.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaceStages {
    pub episodes: usize,
    pub successes: usize,
    /// Failures that never grasped the carried object.
    pub not_grasped: usize,
    /// Failures that grasped it and still held it at the end (never released).
    pub still_held: usize,
    /// Failures that grasped and released it, ending off target (or not at rest on it).
    pub released_off: usize,
    /// Median of the carried object's final distance from its target over the episodes that grasped it, m.
    pub median_place_error_grasped_m: Option<f32>,
}

impl PlaceStages {
    /// One line for the console and the docs.
    pub fn summary(&self) -> String {
        let median = self.median_place_error_grasped_m.map(|m| format!("; median final distance to target after a grasp {:.1} cm", 100.0 * m)).unwrap_or_default();
        format!(
            "{} succeeded; failures: {} never grasped, {} still holding at the end, {} released off target{median}",
            self.successes, self.not_grasped, self.still_held, self.released_off
        )
    }
}

/// Where the episodes of a pick-and-place evaluation first closed the gripper ([`EvalReport::first_closes`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FirstCloses {
    /// Per task object, in name order: the episodes that first closed nearest it, and the median horizontal
    /// distance of the TCP from its centre then (m; `None` for reports written before the distance was recorded).
    pub objects: Vec<(String, usize, Option<f32>)>,
    /// Episodes that never closed the gripper.
    pub never: usize,
}

impl FirstCloses {
    /// One line for the console and the docs.
    pub fn summary(&self) -> String {
        let objects: Vec<String> = self
            .objects
            .iter()
            .map(|(name, n, median)| match median {
                Some(m) => format!("{name} {n} (median {:.1} cm from its centre)", 100.0 * m),
                None => format!("{name} {n}"),
            })
            .collect();
        format!("first closed the gripper nearest: {}, never closed {}", objects.join(", "), self.never)
    }
}

/// Latency of the policy, ms.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Per chunk: DDIM sampling (every `n_action_steps` ticks; per batched run with `parallel` > 1).
    pub chunk_mean_ms: f64,
    pub chunk_p95_ms: f64,
    /// Per control tick: keypoint features, encoding, and sampling when a chunk is due (what bounds the loop
    /// rate).
    pub tick_mean_ms: f64,
    pub tick_p95_ms: f64,
    /// Mean time per episode-tick by node.
    pub stages: StageTimes,
}

/// Where a control tick's time goes, mean ms per episode-tick, by the dora node that does the work in the graph
/// (`sim`: render and physics; `grounding`: first-frame keypoints, once per episode; `tracker`; `encoder`: key
/// features and the step condition; `policy`: DDIM sampling when a chunk is due). With `parallel` > 1 the batched
/// stages are divided among the episodes of the batch and the per-episode ones are CPU time spread over cores.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StageTimes {
    pub sim_ms: f64,
    pub grounding_ms: f64,
    pub tracker_ms: f64,
    pub encoder_ms: f64,
    pub policy_ms: f64,
}

impl StageTimes {
    pub(super) fn add(&mut self, other: &StageTimes) {
        self.sim_ms += other.sim_ms;
        self.grounding_ms += other.grounding_ms;
        self.tracker_ms += other.tracker_ms;
        self.encoder_ms += other.encoder_ms;
        self.policy_ms += other.policy_ms;
    }

    pub(super) fn scaled(&self, factor: f64) -> StageTimes {
        StageTimes {
            sim_ms: self.sim_ms * factor,
            grounding_ms: self.grounding_ms * factor,
            tracker_ms: self.tracker_ms * factor,
            encoder_ms: self.encoder_ms * factor,
            policy_ms: self.policy_ms * factor,
        }
    }

    /// `(node, ms)` in the graph's order.
    pub fn rows(&self) -> [(&'static str, f64); 5] {
        [
            ("sim", self.sim_ms),
            ("grounding", self.grounding_ms),
            ("tracker", self.tracker_ms),
            ("encoder", self.encoder_ms),
            ("policy", self.policy_ms),
        ]
    }

    /// The whole chain's time per tick.
    pub fn total(&self) -> f64 {
        self.rows().iter().map(|r| r.1).sum()
    }

    /// A table of each node's mean time per tick and share of the loop, and the loop rate it allows.
    pub fn table(&self) -> String {
        let total = self.total();
        let mut out = format!("{:<10} {:>12} {:>8}\n", "node", "ms / tick", "share");
        for (node, ms) in self.rows() {
            out += &format!("{node:<10} {ms:>12.2} {:>7.1}%\n", 100.0 * ms / total.max(f64::MIN_POSITIVE));
        }
        out += &format!("{:<10} {total:>12.2} {:>8}\nloop rate (one tick after another): {:.1} Hz\n", "total", "", 1e3 / total.max(f64::MIN_POSITIVE));
        out
    }
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
    /// Keypoints extracted per episode in [`Keypoints::Tracker`] mode.
    pub k: usize,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    /// 95% Wilson score interval of the success rate.
    pub wilson_95: [f64; 2],
    /// Episodes run in lockstep (the latency figures are per batched tick and per batched chunk).
    pub parallel: usize,
    /// Temporal-ensembling coefficient, `None` for whole chunks.
    #[serde(default)]
    pub temporal_ensemble: Option<f32>,
    /// [`EvalConfig::keypoint_seed`] (absent: 0).
    #[serde(default, skip_serializing_if = "is_first_seed")]
    pub keypoint_seed: u64,
    /// [`EvalConfig::unseen_at`]; absent: the image centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_at: Option<[f32; 2]>,
    /// [`EvalConfig::object_pose_error`], m (absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub object_pose_error: f32,
    /// [`EvalConfig::force_visible`] (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_visible: Option<ForceVisible>,
    /// [`EvalConfig::unlit_encoder`] (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlit_encoder: Option<UnlitEncoder>,
    /// [`EvalConfig::key_patches`] (absent: live).
    #[serde(default, skip_serializing_if = "KeyPatches::is_live")]
    pub key_patches: KeyPatches,
    /// [`EvalConfig::key_positions`] (absent: live).
    #[serde(default, skip_serializing_if = "KeyPositions::is_live")]
    pub key_positions: KeyPositions,
    pub latency: Latency,
    pub per_episode: Vec<EpisodeResult>,
}

impl EvalReport {
    /// Reads an `eval.json` written by [`evaluate`], or the one inside a folder; rejects counts that cannot be.
    pub fn read(path: &Path) -> Result<Self> {
        let file = if path.is_dir() { path.join("eval.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).wrap_err_with(|| format!("cannot read {}", file.display()))?;
        let report: Self = serde_json::from_str(&text).wrap_err_with(|| format!("bad eval.json {}", file.display()))?;
        ensure!(report.episodes > 0, "{}: `episodes` is 0, expected at least one episode", file.display());
        ensure!(
            report.successes <= report.episodes,
            "{}: `successes` {} exceeds `episodes` {}",
            file.display(),
            report.successes,
            report.episodes
        );
        Ok(report)
    }

    /// Episodes in which the gripper held the carried object (pick-and-place tasks; `None` otherwise).
    pub fn grasps(&self) -> Option<usize> {
        let flags: Option<Vec<bool>> = self.per_episode.iter().map(|e| e.grasped).collect();
        flags.filter(|f| !f.is_empty()).map(|f| f.iter().filter(|&&g| g).count())
    }

    /// Pick-and-place tasks: where the episodes first closed the gripper ([`EpisodeResult::first_close`]); `None`
    /// for push-button.
    pub fn first_closes(&self) -> Option<FirstCloses> {
        if self.per_episode.is_empty() || self.per_episode.iter().any(|e| e.grasped.is_none()) {
            return None;
        }
        let mut by_object = std::collections::BTreeMap::<&str, Vec<Option<f32>>>::new();
        for e in &self.per_episode {
            if let Some(name) = &e.first_close {
                by_object.entry(name).or_default().push(e.first_close_m);
            }
        }
        let objects = by_object
            .into_iter()
            .map(|(name, distances)| {
                let median = distances.iter().copied().collect::<Option<Vec<f32>>>().and_then(|d| median(&d));
                (name.to_string(), distances.len(), median)
            })
            .collect();
        let never = self.per_episode.iter().filter(|e| e.first_close.is_none()).count();
        Some(FirstCloses { objects, never })
    }

    /// The stage each failed pick-and-place episode ended in; `None` for push-button and for reports written
    /// before `held_at_end` and `place_error_m` were recorded.
    pub fn place_stages(&self) -> Option<PlaceStages> {
        let staged = |e: &EpisodeResult| e.grasped.is_some() && e.held_at_end.is_some() && e.place_error_m.is_some();
        if self.per_episode.is_empty() || !self.per_episode.iter().all(staged) {
            return None;
        }
        let grasped = |e: &&EpisodeResult| e.grasped == Some(true);
        let failures = || self.per_episode.iter().filter(|e| !e.success);
        let errors: Vec<f32> = self.per_episode.iter().filter(grasped).filter_map(|e| e.place_error_m).collect();
        let median = median(&errors);
        Some(PlaceStages {
            episodes: self.per_episode.len(),
            successes: self.per_episode.iter().filter(|e| e.success).count(),
            not_grasped: failures().filter(|e| !grasped(e)).count(),
            still_held: failures().filter(grasped).filter(|e| e.held_at_end == Some(true)).count(),
            released_off: failures().filter(grasped).filter(|e| e.held_at_end == Some(false)).count(),
            median_place_error_grasped_m: median,
        })
    }
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
