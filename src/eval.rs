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
use eyre::{Result, WrapErr, ensure};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::annotate::{EpisodeTracks, first_frame_keypoints_by_object};
use crate::collect::{episode_info, tick};
use crate::keypoints::OracleGrounder;
use crate::vit::GridEncoder;
use crate::policy::Policy;
use crate::recording::EpisodeWriter;
use crate::policy::observation::Frame;
use crate::policy::runtime::{ActionQueue, ConditionBuffer, safe_action};
use crate::sim::ood::{Condition, Variant};
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, Observation, Sim, SimConfig};
use crate::msg::ObjectPoses;

/// One episode's current tick: the simulator's observation, its image, the keypoints, the task objects' poses
/// (recorded, and read by the privileged-state policy only), and the frame under the default light for
/// [`EvalConfig::unlit_encoder`].
type Observed = (Observation, RgbImage, Vec<[f32; 3]>, ObjectPoses, Option<RgbImage>);

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
    /// ([`crate::sim::Sim::place_error`]; the success check bounds it by [`TaskKind::place_target`]'s tolerance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_error_m: Option<f32>,
}

impl EpisodeResult {
    /// The outcome of the episode `sim` has run, with its count of replaced actions.
    pub fn of(sim: &crate::sim::Sim, invalid_actions: u32) -> Self {
        EpisodeResult {
            seed: sim.spec().seed,
            success: sim.success(),
            ticks: sim.frame(),
            invalid_actions,
            grasped: sim.grasped_carried(),
            held_at_end: sim.holding_carried(),
            place_error_m: sim.place_error(),
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
    fn add(&mut self, other: &StageTimes) {
        self.sim_ms += other.sim_ms;
        self.grounding_ms += other.grounding_ms;
        self.tracker_ms += other.tracker_ms;
        self.encoder_ms += other.encoder_ms;
        self.policy_ms += other.policy_ms;
    }

    fn scaled(&self, factor: f64) -> StageTimes {
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

    /// The stage each failed pick-and-place episode ended in; `None` for push-button and for reports written
    /// before `held_at_end` and `place_error_m` were recorded.
    pub fn place_stages(&self) -> Option<PlaceStages> {
        let staged = |e: &EpisodeResult| e.grasped.is_some() && e.held_at_end.is_some() && e.place_error_m.is_some();
        if self.per_episode.is_empty() || !self.per_episode.iter().all(staged) {
            return None;
        }
        let grasped = |e: &&EpisodeResult| e.grasped == Some(true);
        let failures = || self.per_episode.iter().filter(|e| !e.success);
        let mut errors: Vec<f32> = self.per_episode.iter().filter(grasped).filter_map(|e| e.place_error_m).collect();
        errors.sort_by(f32::total_cmp);
        let n = errors.len();
        let median = (n > 0).then(|| if n % 2 == 1 { errors[n / 2] } else { 0.5 * (errors[n / 2 - 1] + errors[n / 2]) });
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

/// One episode in flight.
struct Episode {
    index: u64,
    spec: EpisodeSpec,
    sim: Sim,
    buffer: ConditionBuffer,
    queue: ActionQueue,
    /// The episode's own sampling noise (seed `config.seed + index`), so a result does not depend on which
    /// episodes share its batch.
    rng: ChaCha8Rng,
    tracker: Option<EpisodeTracks>,
    /// Each tracked keypoint's text-query index, from grounding (see [`ForceVisible`]).
    objects: Vec<Option<usize>>,
    writer: Option<EpisodeWriter>,
    frames: Vec<RgbImage>,
    invalid: u32,
    /// This tick's observation, camera image and keypoints.
    current: Option<Observed>,
    /// How the privileged-state policy perceives the objects' poses ([`EvalConfig::object_pose_error`]).
    pose_error: PoseError,
    /// Per-episode work (sim, grounding, tracker), summed over the episode's ticks.
    times: StageTimes,
}

/// Runs `f` on every item, the items split over the machine's cores (the simulator's render and physics and the
/// tracker are per-episode CPU work).
fn for_each_parallel<T: Send>(items: &mut [&mut T], f: impl Fn(&mut T) -> Result<()> + Sync) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(items.len()).max(1);
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks_mut(per.max(1))
            .map(|chunk| scope.spawn(|| chunk.iter_mut().try_for_each(|item| f(item))))
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| eyre::eyre!("an evaluation worker panicked"))?)
    })
}

/// Runs `config.episodes` closed-loop episodes and writes `eval.json` (and GIFs) into `out`.
///
/// Episodes run `config.parallel` at a time in lockstep: one batched encoder pass and one batched DDIM run per
/// control tick serve them all (the vectorised environments of policy evaluation), the per-episode simulation and
/// tracking spread over the cores. Each episode draws its own sampling noise, so its actions are those of a
/// one-at-a-time run up to the float rounding of batched kernels.
pub fn evaluate(config: &EvalConfig, out: &Path, device: &Device) -> Result<EvalReport> {
    ensure!(config.parallel > 0, "--parallel must be at least 1");
    let policy = Policy::load(&config.checkpoint, device)?;
    ensure!(
        config.object_pose_error >= 0.0 && config.object_pose_error.is_finite(),
        "--object-pose-error: expected a standard deviation >= 0 m, got {}",
        config.object_pose_error
    );
    ensure!(
        config.object_pose_error == 0.0 || policy.config.policy.uses_object_poses(),
        "--object-pose-error applies to the privileged-state policy (--policy state); {} reads no object poses",
        policy.config.policy.name()
    );
    policy.check_task(config.task.name()).wrap_err_with(|| format!("--checkpoint {}", config.checkpoint.display()))?;
    if let Some(encoder) = config.unlit_encoder {
        ensure!(
            config.condition.variant == Variant::Lighting,
            "--unlit-encoder: expected --variant lighting (it shows one encoder the frame without the lighting variant's lights), got {}",
            config.condition.variant.name()
        );
        let kind = policy.config.policy;
        let has = match encoder {
            UnlitEncoder::Global => kind.uses_images(),
            UnlitEncoder::Local => kind.uses_key_patches(),
        };
        ensure!(has, "--unlit-encoder {encoder:?}: the {} policy has no such encoder", kind.name());
    }
    if let Some(ForceVisible::Object(n)) = config.force_visible {
        let queries = config.task.text_query();
        ensure!(
            n < queries.len() && config.keypoints == Keypoints::Tracker,
            "--force-visible {n}: expected the index of one of {}'s text queries {queries:?} (0..{}), with --keypoints tracker",
            config.task.name(),
            queries.len()
        );
    }
    let grid = match config.keypoints {
        Keypoints::Tracker => Some(GridEncoder::load(&config.keypoint_weights, 2, device)?),
        Keypoints::Oracle => None,
    };
    let sim_config = &config.sim;
    let (w, h) = (sim_config.width, sim_config.height);
    let period_ns = (1e9 / f64::from(sim_config.control_hz)) as u64;
    let mut results = Vec::new();
    let (mut chunk_ms, mut tick_ms) = (Vec::new(), Vec::new());
    let (mut stages, mut episode_ticks) = (StageTimes::default(), 0usize);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    std::fs::create_dir_all(out).wrap_err_with(|| format!("cannot create {}", out.display()))?;
    let indices: Vec<u64> = (0..config.episodes).collect();
    for group in indices.chunks(config.parallel) {
        let mut episodes = Vec::with_capacity(group.len());
        for &index in group {
            let spec = EpisodeSpec { task: config.task, seed: config.seed_start + index, condition: config.condition };
            let sim = Sim::new(sim_config, spec);
            let writer = match &config.record {
                Some(dir) => Some(EpisodeWriter::create(dir, episode_info(&sim, index))?),
                None => None,
            };
            let pose_error = PoseError::new(spec.seed, sim.objects().len(), config.object_pose_error);
            episodes.push(Episode {
                index,
                spec,
                sim,
                buffer: ConditionBuffer::new(policy.config.n_obs_steps),
                queue: ActionQueue::new(sim_config.control_hz, period_ns / 2).with_temporal_ensemble(config.temporal_ensemble)?,
                rng: ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(index)),
                tracker: None,
                objects: Vec::new(),
                writer,
                frames: Vec::new(),
                invalid: 0,
                current: None,
                pose_error,
                times: StageTimes::default(),
            });
        }
        loop {
            let mut active: Vec<&mut Episode> = episodes.iter_mut().filter(|e| !e.sim.done()).collect();
            if active.is_empty() {
                break;
            }
            let t = Instant::now();
            // Observe and track (per episode, in parallel); a new episode first extracts its keypoints.
            episode_ticks += active.len();
            for_each_parallel(&mut active, |e| {
                let started = Instant::now();
                let obs = e.sim.observe();
                let image = RgbImage::from_raw(w, h, obs.image.rgb.clone()).ok_or_else(|| eyre::eyre!("frame size"))?;
                let unlit = match config.unlit_encoder {
                    Some(_) => Some(RgbImage::from_raw(w, h, e.sim.render_default_lighting().rgb).ok_or_else(|| eyre::eyre!("frame size"))?),
                    None => None,
                };
                e.times.sim_ms += ms(started);
                let started = Instant::now();
                let keypoints = match (config.keypoints, e.tracker.as_mut()) {
                    (Keypoints::Oracle, _) => obs.oracle_tracks.points.clone(),
                    (Keypoints::Tracker, Some(t)) => t.track(&image)?,
                    (Keypoints::Tracker, None) => Vec::new(),
                };
                let keypoints = match config.force_visible {
                    Some(force) => force.apply(keypoints, &e.objects),
                    None => keypoints,
                };
                e.times.tracker_ms += ms(started);
                let poses = e.sim.object_poses();
                e.current = Some((obs, image, keypoints, poses, unlit));
                Ok(())
            })?;
            for e in active.iter_mut().filter(|e| config.keypoints == Keypoints::Tracker && e.tracker.is_none()) {
                let started = Instant::now();
                let encoder = grid.as_ref().expect("loaded for the tracker mode");
                let (obs, image, keypoints, _, _) = e.current.as_mut().expect("observed above");
                let grounder = OracleGrounder::new(episode_info(&e.sim, e.index).objects, w, h, obs.image.instance.clone())?;
                let init = first_frame_keypoints_by_object(&grounder, encoder, image, &e.spec.task.text_query(), config.k, config.keypoint_seed, config.unseen_at, device)?;
                let (init, objects): (Vec<[f32; 3]>, Vec<Option<usize>>) = init.into_iter().unzip();
                let tracker = EpisodeTracks::start(image, &init)?;
                *keypoints = match config.force_visible {
                    Some(force) => force.apply(tracker.current(), &objects),
                    None => tracker.current(),
                };
                e.objects = objects;
                e.tracker = Some(tracker);
                e.times.grounding_ms += ms(started);
            }
            let started = Instant::now();
            // One batched encoder pass for every episode's frame.
            let current: Vec<&Observed> =
                active.iter().map(|e| e.current.as_ref().expect("observed above")).collect();
            // The frame each encoder sees: the lit one, or for the --unlit-encoder, the same tick under the default light.
            let seen_by = |encoder: UnlitEncoder| -> Vec<&RgbImage> {
                current.iter().map(|c| if config.unlit_encoder == Some(encoder) { c.4.as_ref().unwrap_or(&c.1) } else { &c.1 }).collect()
            };
            let images = seen_by(UnlitEncoder::Global);
            let keypoints: Vec<Vec<[f32; 3]>> = current.iter().map(|c| c.2.clone()).collect();
            let features = policy.key_features_batch(&seen_by(UnlitEncoder::Local), &keypoints)?;
            let states: Vec<Vec<f32>> = current.iter().map(|c| c.0.robot_state.to_array().to_vec()).collect();
            let perceived: Vec<Vec<[f32; 7]>> = if policy.config.policy.uses_object_poses() {
                active.iter().zip(&current).map(|(e, c)| e.pose_error.apply(&c.3.poses)).collect()
            } else {
                vec![Vec::new(); current.len()]
            };
            let frames: Vec<Frame<'_>> = (0..current.len())
                .map(|j| Frame {
                    image: images[j].as_raw(),
                    width: w,
                    height: h,
                    state: &states[j],
                    keypoints: &keypoints[j],
                    key_features: features.as_ref().map(|f| f[j].as_slice()),
                    object_poses: &perceived[j],
                })
                .collect();
            let steps = policy.step_conditions(&frames)?;
            drop(frames);
            stages.encoder_ms += ms(started);
            // One batched DDIM run for the episodes whose action queue ran dry.
            let mut conditions = Vec::with_capacity(active.len());
            let mut due = Vec::new();
            for (j, (e, step)) in active.iter_mut().zip(steps).enumerate() {
                conditions.push(e.buffer.push(step));
                let now = e.current.as_ref().expect("observed above").0.timestamp_ns;
                if e.queue.needs_chunk(now) {
                    due.push(j);
                }
            }
            if !due.is_empty() {
                let t = Instant::now();
                let mut rngs: Vec<ChaCha8Rng> = due.iter().map(|&j| active[j].rng.clone()).collect();
                let refs: Vec<&[f32]> = due.iter().map(|&j| conditions[j].as_slice()).collect();
                let chunks = policy.plan_batch(&refs, &mut rngs)?;
                for ((&j, chunk), rng) in due.iter().zip(chunks).zip(rngs) {
                    let now = active[j].current.as_ref().expect("observed above").0.timestamp_ns;
                    active[j].queue.push_chunk(now, &chunk);
                    active[j].rng = rng;
                }
                chunk_ms.push(ms(t));
                stages.policy_ms += ms(t);
            }
            // Act (every command through `safe_action`), record, and step the simulations.
            let video = config.video.is_some();
            for_each_parallel(&mut active, |e| {
                let (obs, image, keypoints, poses, _) = e.current.take().expect("observed above");
                let action = match e.queue.next(obs.timestamp_ns).map(safe_action) {
                    Some(Ok(action)) => action,
                    _ => {
                        e.invalid += 1;
                        e.sim.hold_action()
                    }
                };
                if let Some(writer) = e.writer.as_mut() {
                    let mut row = tick(obs, &poses, &action);
                    row.keypoints = Some(crate::msg::Keypoints { points: keypoints });
                    writer.push(row)?;
                }
                if video {
                    e.frames.push(image);
                }
                let started = Instant::now();
                e.sim.step(&action);
                e.times.sim_ms += ms(started);
                Ok(())
            })?;
            tick_ms.push(ms(t));
        }
        for e in episodes {
            stages.add(&e.times);
            let result = EpisodeResult::of(&e.sim, e.invalid);
            if let Some(writer) = e.writer {
                writer.finish(result.success)?;
            }
            eprintln!("episode {} (seed {}): {} in {} ticks", e.index, e.spec.seed, if result.success { "success" } else { "failure" }, result.ticks);
            if let Some(dir) = &config.video {
                std::fs::create_dir_all(dir)?;
                crate::viz::save_gif(e.frames.into_iter().map(Ok), 10, &dir.join(video_name(config, e.spec.seed)))?;
            }
            results.push(result);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let p95 = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get((sorted.len() * 95 / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
    };
    let latency = Latency {
        chunk_mean_ms: mean(&chunk_ms),
        chunk_p95_ms: p95(&chunk_ms),
        tick_mean_ms: mean(&tick_ms),
        tick_p95_ms: p95(&tick_ms),
        stages: stages.scaled(1.0 / episode_ticks.max(1) as f64),
    };
    write_report(config, policy.config.policy.name(), results, latency, out)
}

/// The line the sim node prints after an episode, which [`evaluate_in_dataflow`] reads back.
pub fn sim_outcome_line(episode: u64, sim: &crate::sim::Sim) -> String {
    let spec = sim.spec();
    let grasped = sim.grasped_carried().map(|g| format!(" grasped={g}")).unwrap_or_default();
    let held = sim.holding_carried().map(|h| format!(" held_at_end={h}")).unwrap_or_default();
    let error = sim.place_error().map(|d| format!(" place_error_m={d}")).unwrap_or_default();
    format!(
        "sim: episode {episode} ({}, seed {}, {}) success={}{grasped}{held}{error} after {} ticks",
        spec.task,
        spec.seed,
        spec.condition.variant.name(),
        sim.success(),
        sim.frame()
    )
}

/// The pick-and-place stage of `episode` from the sim node's log lines ([`sim_outcome_line`]): `grasped`,
/// `held_at_end` and `place_error_m`.
fn logged_place_stage(lines: &[String], episode: u64) -> Result<(bool, bool, f32)> {
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
    Ok((flag("grasped")?, flag("held_at_end")?, error))
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
        latency,
        per_episode: results,
    };
    std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
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
    let place_stage = |episode: u64| -> Result<Option<(bool, bool, f32)>> {
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
            grasped: stage.map(|s| s.0),
            held_at_end: stage.map(|s| s.1),
            place_error_m: stage.map(|s| s.2),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_visible_sets_the_chosen_flags_only() {
        let keypoints = vec![[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [5.0, 6.0, 1.0], [7.0, 8.0, 0.0]];
        let objects = [Some(0), Some(1), Some(1), None];
        let flags = |force: ForceVisible| force.apply(keypoints.clone(), &objects).iter().map(|p| p[2]).collect::<Vec<_>>();
        assert_eq!(flags(ForceVisible::All), [1.0; 4]);
        assert_eq!(flags(ForceVisible::Object(1)), [0.0, 1.0, 1.0, 0.0]);
        assert_eq!(flags(ForceVisible::Object(0)), [1.0, 0.0, 1.0, 0.0]);
        assert_eq!(ForceVisible::Object(1).apply(keypoints.clone(), &objects)[1][..2], [3.0, 4.0], "positions kept");
        assert_eq!(ForceVisible::parse("all"), Ok(ForceVisible::All));
        assert_eq!(ForceVisible::parse(" 1 "), Ok(ForceVisible::Object(1)));
        assert!(ForceVisible::parse("plate").unwrap_err().contains("`all` or the index"));
        let json = serde_json::to_string(&[ForceVisible::All, ForceVisible::Object(1)]).unwrap();
        assert_eq!(json, r#"["all",{"object":1}]"#);
    }

    #[test]
    fn wilson_interval_matches_known_values() {
        // 8/10: (0.4902, 0.9433); 0/10: (0, 0.2775); 50/100: (0.4038, 0.5962).
        let close = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3;
        assert!(close(wilson_95(8, 10), [0.4902, 0.9433]), "{:?}", wilson_95(8, 10));
        assert!(close(wilson_95(0, 10), [0.0, 0.2775]), "{:?}", wilson_95(0, 10));
        assert!(close(wilson_95(50, 100), [0.4038, 0.5962]), "{:?}", wilson_95(50, 100));
    }

    #[test]
    fn the_place_stage_is_read_back_from_the_sim_nodes_line() {
        use crate::sim::{EpisodeSpec, Sim, SimConfig};
        let config = SimConfig { width: 16, height: 16, ..SimConfig::default() };
        let sim = Sim::new(&config, EpisodeSpec { task: TaskKind::PlaceFruit, seed: 4, condition: Condition::IN_DOMAIN });
        let lines = vec!["sim: something else".to_string(), sim_outcome_line(7, &sim)];
        let (grasped, held, error) = logged_place_stage(&lines, 7).unwrap();
        assert!(!grasped && !held);
        assert_eq!(Some(error), sim.place_error(), "the distance must survive the log line exactly");
        assert!(error > 0.1, "the fruit starts at least 17 cm from the plate's centre, read {error}");
        let err = logged_place_stage(&lines, 8).unwrap_err().to_string();
        assert!(err.contains("episode 8"), "{err}");
        let line = "sim: episode 8 (place-fruit) success=false grasped=maybe held_at_end=false place_error_m=0.2 after 3 ticks";
        let err = format!("{:#}", logged_place_stage(&[line.to_string()], 8).unwrap_err());
        assert!(err.contains("grasped=maybe"), "{err}");
        let line = "sim: episode 8 (place-fruit) success=false grasped=true held_at_end=false place_error_m=NaN after 3 ticks";
        let err = format!("{:#}", logged_place_stage(&[line.to_string()], 8).unwrap_err());
        assert!(err.contains("place_error_m=NaN"), "{err}");
    }

    /// The localisation error of `--object-pose-error`: per scene seed the same offsets (whatever else runs), their
    /// spread is the given standard deviation, only x and y move, and 0 leaves the poses as they are.
    #[test]
    fn pose_errors_displace_each_object_horizontally_by_a_seeded_offset() {
        let poses = [[0.4, 0.1, 0.02, 0.0, 0.0, 0.6, 0.8], [0.6, -0.1, 0.03, 0.0, 0.0, 0.0, 1.0]];
        assert_eq!(PoseError::new(3, 2, 0.0).apply(&poses), poses.to_vec());
        let (a, b) = (PoseError::new(3, 2, 0.01), PoseError::new(3, 2, 0.01));
        assert_eq!(a, b);
        assert_ne!(a, PoseError::new(4, 2, 0.01));
        let moved = a.apply(&poses);
        for (m, p) in moved.iter().zip(&poses) {
            assert_eq!(m[2..], p[2..], "height and rotation stay");
            assert!(m[0] != p[0] && m[1] != p[1]);
        }
        let offsets: Vec<f32> = (0..2000).flat_map(|seed| PoseError::new(seed, 1, 0.01).offsets[0]).collect();
        let std = (offsets.iter().map(|v| v * v).sum::<f32>() / offsets.len() as f32).sqrt();
        assert!((std - 0.01).abs() < 0.0005, "spread {std}");
    }

    #[test]
    fn failed_pick_and_place_episodes_are_sorted_by_stage() {
        let episode = |success, grasped, held, error| EpisodeResult {
            seed: 0,
            success,
            ticks: 1,
            invalid_actions: 0,
            grasped: Some(grasped),
            held_at_end: Some(held),
            place_error_m: Some(error),
        };
        let mut report = EvalReport {
            checkpoint: String::new(),
            policy: "glue".into(),
            task: "stack-block".into(),
            variant: "none".into(),
            strength: 0.0,
            keypoints: Keypoints::Tracker,
            k: 15,
            episodes: 5,
            successes: 1,
            success_rate: 0.2,
            wilson_95: wilson_95(1, 5),
            parallel: 1,
            temporal_ensemble: None,
            keypoint_seed: 0,
            unseen_at: None,
            object_pose_error: 0.0,
            force_visible: None,
            unlit_encoder: None,
            latency: Latency::default(),
            per_episode: vec![
                episode(true, true, false, 0.01),
                episode(false, false, false, 0.30),
                episode(false, true, true, 0.05),
                episode(false, true, false, 0.07),
                episode(false, true, false, 0.09),
            ],
        };
        let stages = report.place_stages().unwrap();
        let median = stages.median_place_error_grasped_m.unwrap();
        assert!((median - 0.06).abs() < 1e-6, "median of 0.01, 0.05, 0.07, 0.09: {median}");
        let expected = PlaceStages { episodes: 5, successes: 1, not_grasped: 1, still_held: 1, released_off: 2, median_place_error_grasped_m: Some(median) };
        assert_eq!(stages, expected);
        assert!(stages.summary().contains("2 released off target; median final distance to target after a grasp 6.0 cm"), "{}", stages.summary());
        // A report written before the stage fields existed has no breakdown rather than a wrong one.
        report.per_episode[3].held_at_end = None;
        assert_eq!(report.place_stages(), None);
    }
}
