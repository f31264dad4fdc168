//! `glue eval`: closed-loop evaluation of a trained policy in the simulator, in-process (the same loop the dora
//! graph runs, without the daemon).
//!
//! Each control tick does what the `encoder` and `policy` nodes do, with the same code
//! ([`crate::policy::runtime`]): observe; keypoints for this frame (GLUE) and their frozen local features; the
//! step condition, appended to the condition history; when the action queue runs dry, a chunk sampled from the
//! global condition (Diffusion Policy's receding horizon); the next queued action through [`safe_action`]. An action
//! that fails that check is never executed: the robot holds and the episode counts it.

mod closed_loop;
mod dataflow;
mod report;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use eyre::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::sim::SimConfig;
use crate::sim::ood::Condition;
use crate::sim::task::TaskKind;

pub use closed_loop::evaluate;
pub use dataflow::{DataflowSetup, evaluate_in_dataflow, sim_outcome_line};
pub use report::{EpisodeResult, EvalReport, FirstCloses, Latency, PlaceStages, StageTimes, wilson_95};


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
    /// Sampling seed (the DDIM start noise): episode `i` draws from `seed + i`.
    pub seed: u64,
    /// Keypoints extracted per episode with [`Keypoints::Tracker`] (the grounding node's `K`).
    pub k: usize,
    /// The K-means seed of that extraction (the grounding node's `SEED`; `glue annotate --seed`).
    pub keypoint_seed: u64,
    /// The local encoder for keypoint extraction with [`Keypoints::Tracker`] (the grounding node's `WEIGHTS`).
    pub keypoint_weights: PathBuf,
    /// Episodes run in lockstep, batched through the policy.
    pub parallel: usize,
    /// Temporal-ensembling coefficient (the policy node's `TEMPORAL_ENSEMBLE`); `None` executes whole chunks.
    pub temporal_ensemble: Option<f32>,
    /// Where the keypoints of an episode whose first frame shows no queried object sit, in pixels
    /// ([`crate::annotate::first_frame_keypoints`]; the grounding node's `UNSEEN_AT`); `None`: the image centre.
    pub unseen_at: Option<[f32; 2]>,
    /// The privileged-state diagnostic only: a localisation error, m. Each episode perceives every task object
    /// displaced horizontally by a fixed offset drawn per axis from N(0, σ²) ([`PoseError`]); 0 feeds the true
    /// poses. Recordings keep the true poses.
    pub object_pose_error: f32,
    /// An intervention test: the keypoints the policy sees as visible whatever the tracker says, so their key
    /// patches are never zeroed (sec. III-C's occlusion handling switched off for them). Recordings keep what the
    /// policy saw.
    pub force_visible: Option<ForceVisible>,
    /// An intervention test for the `lighting` variant: this encoder sees each tick rendered under the default
    /// light ([`Sim::render_default_lighting`]) while everything else (the tracker, the other encoder, the
    /// recordings) sees the lit frame, so a lighting drop can be traced to one encoder.
    pub unlit_encoder: Option<UnlitEncoder>,
    /// An intervention test for GLUE: what its key patches hold ([`KeyPatches`]). Recordings keep the tracker's
    /// keypoints.
    pub key_patches: KeyPatches,
    /// An intervention test for the policies that read keypoints: where the policy is told they are
    /// ([`KeyPositions`]). Recordings keep the tracker's keypoints.
    pub key_positions: KeyPositions,
}

/// What GLUE's key patches hold in [`EvalConfig::key_patches`]. Whatever they hold, the keypoints' cells (their
/// positional encodings), flags and coordinates stay as tracked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyPatches {
    /// The frozen local encoder's features at the tracked keypoints on each tick, zeroed while hidden (sec. III-C).
    #[default]
    Live,
    /// Every feature zeroed, as sec. III-C zeroes an occluded keypoint's ([`crate::fusion::select_key_patches`]):
    /// nothing of what the local encoder sees reaches the policy.
    Zeroed,
    /// Each keypoint's feature from the episode's first frame, zeroed while the tracker flags it hidden: the
    /// objects' appearance reaches the policy, not how it changes (the gripper closing in, the lights).
    FirstFrame,
    /// Each object's keypoints carry the live features of the next object's keypoints (the `j`-th of object `q`
    /// takes the `j mod n`-th of object `q + 1`'s `n`, cyclically over the task's text queries), zeroed while
    /// the receiving keypoint is hidden: on a two-object task the two objects' appearances trade places, so a
    /// policy that reads which object is where from its key patches reaches for the other one. Tasks with two or
    /// more text queries, tracked keypoints only.
    Swapped,
}

impl KeyPatches {
    /// Leaves the default out of `eval.json`, as in every file written before the option.
    fn is_live(&self) -> bool {
        *self == Self::Live
    }
}

/// Where the policy is told the keypoints are in [`EvalConfig::key_positions`]: the positions behind GLUE's key
/// patch cells (their positional encodings) and, with `--keypoint-coords`, the state's `(x, y, visible)`. The
/// key patches are the features at the tracked keypoints whatever the positions ([`KeyPatches`] says which).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyPositions {
    /// The tracked positions and flags.
    #[default]
    Live,
    /// Each object's keypoints take the next object's tracked positions and flags, paired as `--key-patches
    /// swapped` pairs their features: on a two-object task the policy is told each object is where
    /// the other is. With `--key-patches swapped` too, every keypoint is the other object's whole (feature,
    /// position, flag): the objects' labels trade. A key patch is zeroed while the keypoint whose position it
    /// carries is hidden. Tasks with two or more text queries, tracked keypoints only.
    Swapped,
}

impl KeyPositions {
    /// Leaves the default out of `eval.json`, as in every file written before the option.
    fn is_live(&self) -> bool {
        *self == Self::Live
    }
}

/// Which encoder [`EvalConfig::unlit_encoder`] shows the unlit frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum UnlitEncoder {
    /// The policy's image encoder (GLUE's learnable global ViT, GLUE-S's, DP's ResNet).
    Global,
    /// GLUE's frozen local ViT, whose features at the keypoints are the key patches.
    Local,
}

/// Which keypoints [`EvalConfig::force_visible`] marks visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForceVisible {
    /// Every keypoint.
    All,
    /// The keypoints grounding put on one object: the index of its text query in the task's `text_query`.
    Object(usize),
}

impl ForceVisible {
    /// `all`, or a text query's index.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "all" => Ok(Self::All),
            n => n.parse().map(Self::Object).map_err(|_| {
                format!("--force-visible: expected `all` or the index of a text query (0, 1, ...), got `{text}`")
            }),
        }
    }

    /// One tick's keypoints with the chosen ones marked visible; `objects` holds each keypoint's text-query index
    /// (`None`: grounding found nothing for it).
    fn apply(self, keypoints: Vec<[f32; 3]>, objects: &[Option<usize>]) -> Vec<[f32; 3]> {
        keypoints
            .into_iter()
            .enumerate()
            .map(|(i, [x, y, visible])| {
                let forced = match self {
                    Self::All => true,
                    Self::Object(n) => objects.get(i).copied().flatten() == Some(n),
                };
                [x, y, if forced { 1.0 } else { visible }]
            })
            .collect()
    }
}

/// [`EvalConfig::object_pose_error`]'s generator stream, seeded by the scene seed, so a scene gets the same offsets
/// whatever the sampling seed and whichever episodes share its batch.
const POSE_ERROR_STREAM: u64 = 16;

/// What the privileged-state policy is told about the objects' poses in one episode: the true poses displaced
/// horizontally by one fixed offset per object, as a visual localiser's systematic error would displace them.
#[derive(Clone, Debug, PartialEq)]
pub struct PoseError {
    /// `[dx, dy]` per task object, m.
    offsets: Vec<[f32; 2]>,
}

impl PoseError {
    /// The offsets of scene `seed` for `objects` task objects at standard deviation `std` (m, per axis).
    pub fn new(seed: u64, objects: usize, std: f32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(POSE_ERROR_STREAM);
        let values = crate::policy::gaussian_values(&mut rng, 2 * objects);
        Self { offsets: values.chunks(2).map(|v| [std * v[0], std * v[1]]).collect() }
    }

    /// `poses` as perceived.
    pub fn apply(&self, poses: &[[f32; 7]]) -> Vec<[f32; 7]> {
        poses.iter().zip(&self.offsets).map(|(p, [dx, dy])| {
            let mut q = *p;
            q[0] += dx;
            q[1] += dy;
            q
        }).collect()
    }
}

/// The GIF of the episode with scene seed `seed`.
fn video_name(config: &EvalConfig, seed: u64) -> String {
    format!("{}-{}-seed{seed:06}.gif", config.task.name(), config.condition.variant.name())
}

/// `eval.json` for `results`.
fn write_report(config: &EvalConfig, policy: &str, results: Vec<EpisodeResult>, latency: Latency, out: &Path) -> Result<EvalReport> {
    let successes = results.iter().filter(|r| r.success).count();
    let report = EvalReport {
        checkpoint: config.checkpoint.display().to_string(),
        policy: policy.to_string(),
        task: config.task.name().to_string(),
        variant: config.condition.variant.name().to_string(),
        strength: config.condition.strength,
        keypoints: config.keypoints,
        k: config.k,
        episodes: results.len(),
        successes,
        success_rate: successes as f64 / results.len().max(1) as f64,
        wilson_95: wilson_95(successes, results.len()),
        parallel: config.parallel,
        temporal_ensemble: config.temporal_ensemble,
        keypoint_seed: config.keypoint_seed,
        unseen_at: config.unseen_at,
        object_pose_error: config.object_pose_error,
        force_visible: config.force_visible,
        unlit_encoder: config.unlit_encoder,
        key_patches: config.key_patches,
        key_positions: config.key_positions,
        latency,
        per_episode: results,
    };
    std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}
