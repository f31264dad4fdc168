//! `glue train`: imitation learning of a [`PolicyNet`] on recorded demonstrations (paper sec. III-C, IV-A).
//!
//! The loop is Diffusion Policy's: AdamW, a cosine learning-rate schedule with warmup, an EMA of the weights
//! (which the checkpoints hold and inference uses), random-crop augmentation (keypoints shift with the crop, see
//! [`crate::policy::observation`]), DDPM noise-prediction loss. Added here: clipping by the global gradient
//! norm, a validation split by episode, seeded and resumable runs, a NaN guard.
//!
//! The frozen local encoder never changes, so GLUE's key-patch features (`F_patch2` before positional encoding)
//! are computed once per frame at start-up and reused every epoch.
//!
//! Run folder:
//! - `train.json` (the [`TrainConfig`]), `metrics.csv` (one row per epoch), `loss.png`, `metrics.json` (final);
//! - `last/`, `best/`: checkpoint folders ([`crate::policy::checkpoint`]) with the EMA weights, after every
//!   `checkpoint_every` epochs and at the lowest validation loss;
//! - `state/`: what `--resume` needs (raw and EMA weights, AdamW moments, progress), replaced atomically.

pub mod data;
pub mod optim;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use eyre::{Result, WrapErr, bail, ensure, eyre};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::policy::checkpoint::{
    LOCAL_ENCODER_DIR, MODEL_SAFETENSORS, NORMALIZER_JSON, POLICY_JSON, Precision, TRAINED_ON_JSON, TrainedOn, load_into, load_net, save_net,
};
use crate::policy::normalizer::{CONSTANT_SPAN, Normalizer, Range};
use crate::policy::observation::{Crop, Frame, key_features, observations, state_row};
use crate::policy::{Encoder, PolicyConfig, PolicyNet, ddim_for, gaussian};
use crate::vit::{ClipVisionModel, GridEncoder};
use data::{Demo, KeypointSource, Sample, action_ticks, load_demos, obs_ticks, samples, split};
use optim::{Ema, clip_global_norm, cosine_with_warmup};

/// Everything that defines a training run (saved as `train.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub policy: PolicyConfig,
    /// Recordings: `.arrow` files or folders of them.
    pub data: Vec<PathBuf>,
    /// GLUE: the frozen local encoder, a HF CLIP folder (`glue pretrain` output or OpenAI's ViT-B/16).
    pub local_encoder: Option<PathBuf>,
    /// Optional HF CLIP folder initialising the global ViT (the paper fine-tunes CLIP ViT-B/16).
    pub global_init: Option<PathBuf>,
    /// Optional checkpoint folder ([`crate::policy::checkpoint`]) whose weights start the run: fine-tuning, or
    /// continuing a run on another machine without its optimiser state (AdamW and the EMA start afresh).
    #[serde(default)]
    pub init: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (Diffusion Policy: 1e-4).
    pub lr: f64,
    /// AdamW weight decay (Diffusion Policy: 1e-6).
    pub weight_decay: f64,
    pub warmup_steps: usize,
    /// Maximum global gradient norm.
    pub grad_clip_norm: f64,
    /// EMA warmup power and cap (Diffusion Policy: 0.75, 0.9999).
    pub ema_power: f64,
    pub ema_max_decay: f64,
    /// The normaliser counts a state or action dimension whose range is under this as constant
    /// ([`CONSTANT_SPAN`]; `0` is LeRobot's exact min-max, and what a `train.json`
    /// written before this field existed reads as, so such runs resume as they started).
    #[serde(default)]
    pub constant_span: f32,
    /// Fraction of episodes held out for validation.
    pub val_fraction: f32,
    /// Validation samples per epoch at most (evenly spaced over the validation set).
    pub val_samples: usize,
    pub seed: u64,
    /// Write `last/` every this many epochs (and after the final one).
    pub checkpoint_every: usize,
    /// Wall-clock budget of one invocation (minutes): after each epoch the run sets `epochs`, and with it the
    /// cosine schedule's end, to the epochs that still fit at the latest epoch's pace (at most the epochs asked
    /// for, so a slow first epoch that shortened the run can be made up for).
    #[serde(default)]
    pub max_minutes: Option<f64>,
    /// GLUE: the share of training samples shown as if grounding had found no task object (every keypoint
    /// invisible at the image centre, every key patch zeroed: [`crate::annotate::first_frame_keypoints`]'
    /// fallback for a fully occluded scene), so that the policy learns to act from the global tokens alone. Not in
    /// the paper; 0 (the default, and what a `train.json` without the field reads as) trains as the paper does.
    #[serde(default)]
    pub keypoint_dropout: f32,
    /// The chance (0-1) that each keypoint of a training sample is shown as lost for the sample's observation
    /// steps: its visibility flag 0 and (GLUE) its key patch zeroed, its coordinates kept where the tracker left
    /// them, as the tracker reports a point it has lost. A policy trained this way meets false "lost" flags (the
    /// lit plate's, `docs/results.md`) and real losses without having seen only perfect tracks. Applies to every
    /// policy that reads keypoints (GLUE, `--keypoint-coords`, the keypoint-coordinate policy). Measured at 0.2 on
    /// place-fruit's keypoint-coordinate policy: no gain under lighting, in-domain success lower (`docs/results.md`).
    /// Not in the paper; 0 (the default, and what a `train.json` without the field reads as) trains as the paper does.
    #[serde(default)]
    pub point_dropout: f32,
    /// The tracked keypoints' `(x, y, visible)` join the robot state (GLUE: eq. 3's `S`), so the policy sees where
    /// they are to the pixel (GLUE: not only the 28x28 cell of each key patch); GLUE-S and DP take them too, to
    /// compare with GLUE on equal inputs. Not in the paper; off by default (and in a `train.json` without the
    /// field). The keypoint-coordinate policy always has them; the privileged-state policy refuses them.
    #[serde(default)]
    pub keypoint_coords: bool,
}

impl TrainConfig {
    /// Diffusion Policy's optimiser settings for `policy`, over `data` (warmup 500 steps at `full`, 100 at
    /// `small`, whose runs are a few thousand steps).
    pub fn new(policy: PolicyConfig, data: Vec<PathBuf>) -> Self {
        let warmup_steps = match policy.size {
            crate::policy::ModelSize::Full => 500,
            crate::policy::ModelSize::Small => 100,
        };
        Self {
            policy,
            data,
            local_encoder: None,
            global_init: None,
            init: None,
            epochs: 100,
            batch_size: 32,
            lr: 1e-4,
            weight_decay: 1e-6,
            warmup_steps,
            grad_clip_norm: 1.0,
            ema_power: 0.75,
            ema_max_decay: 0.9999,
            constant_span: CONSTANT_SPAN,
            val_fraction: 0.1,
            val_samples: 256,
            seed: 0,
            checkpoint_every: 5,
            max_minutes: None,
            keypoint_dropout: 0.0,
            point_dropout: 0.0,
            keypoint_coords: false,
        }
    }
}

/// Progress saved in `state/progress.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// Epochs completed.
    epochs_done: usize,
    /// Optimiser steps taken.
    step: usize,
    best_val: Option<f64>,
    best_epoch: Option<usize>,
    /// `(epoch, step, train_loss, val_loss, lr, seconds)` per epoch.
    history: Vec<EpochRow>,
}

/// One epoch of a run's history: a row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    /// Optimiser steps since the run started (after this epoch).
    pub step: usize,
    pub train_loss: f64,
    /// The EMA weights' loss on the validation samples (`None` without a validation split).
    pub val_loss: Option<f64>,
    pub lr: f64,
    /// Wall-clock seconds of this epoch.
    pub seconds: f64,
}

/// What a finished run reports (`metrics.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: usize,
    pub steps: usize,
    pub train_episodes: usize,
    pub val_episodes: usize,
    /// The recordings of the validation episodes, so that a run's held-out set can be audited (e.g. against the
    /// episodes an `--init` checkpoint was trained on).
    pub val_recordings: Vec<PathBuf>,
    pub final_train_loss: f64,
    pub best_val_loss: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Open-loop check on validation samples with the best EMA weights and DDIM: mean end-effector position
    /// error (m) and gripper error (m) over the executed action steps.
    pub val_position_error_m: Option<f64>,
    pub val_gripper_error_m: Option<f64>,
    pub seconds: f64,
    pub keypoints: Option<KeypointSource>,
}

/// The demonstrations with everything a step needs.
struct Dataset {
    demos: Vec<Demo>,
    /// `[demo][tick]` key features `N x C` (GLUE).
    key_features: Option<Vec<Vec<Vec<f32>>>>,
    normalizer: Normalizer,
    /// GLUE with [`TrainConfig::keypoint_dropout`] above 0.
    keypoint_dropout: Option<KeypointDropout>,
    /// [`TrainConfig::point_dropout`].
    point_dropout: f32,
}

/// [`TrainConfig::keypoint_dropout`]: its share, and GLUE's input when grounding finds no task object, as
/// [`crate::annotate::first_frame_keypoints`] gives it at inference: `N` keypoints invisible at the image centre
/// (per demo, `[demo]`) and `N x C` zero key features.
struct KeypointDropout {
    share: f32,
    keypoints: Vec<Vec<[f32; 3]>>,
    features: Vec<f32>,
}

impl KeypointDropout {
    /// `None` for a share of 0 (the paper's training).
    fn new(share: f32, demos: &[Demo], key_features: &[Vec<Vec<f32>>]) -> Option<Self> {
        (share > 0.0).then(|| Self {
            share,
            keypoints: demos
                .iter()
                .map(|d| vec![[d.width as f32 / 2.0, d.height as f32 / 2.0, 0.0]; d.keypoints[0].len()])
                .collect(),
            features: vec![0.0; key_features[0][0].len()],
        })
    }
}

impl Dataset {
    /// Observation frames and normalised actions for `batch`, with one crop per sample (`None`: centred).
    fn batch(
        &self,
        config: &PolicyConfig,
        batch: &[Sample],
        rng: Option<&mut ChaCha8Rng>,
        device: &Device,
    ) -> (crate::policy::Observations, Tensor<3>) {
        let to = config.n_obs_steps;
        let mut crops = Vec::with_capacity(batch.len() * to);
        let mut actions = Vec::with_capacity(batch.len() * config.horizon * config.action_dim);
        // (demo, tick, keypoints, key features) of each observation frame, the keypoints owned where points were
        // dropped: the frames below borrow them.
        let mut inputs = Vec::with_capacity(batch.len() * to);
        let mut rng = rng;
        for s in batch {
            let demo = &self.demos[s.demo];
            let crop = match rng.as_deref_mut() {
                Some(r) => Crop::random(demo.width, demo.height, config.crop_ratio, r.random(), r.random()),
                None => Crop::centered(demo.width, demo.height, config.crop_ratio),
            };
            // Drawn only when dropping out, so that runs without it keep their random stream. A sample's lost
            // points stay lost over its observation steps, as a lost track does.
            let unseen = match (rng.as_deref_mut(), &self.keypoint_dropout) {
                (Some(r), Some(dropout)) => (r.random::<f32>() < dropout.share).then_some(dropout),
                _ => None,
            };
            let lost = match (rng.as_deref_mut(), unseen) {
                (Some(r), None) if self.point_dropout > 0.0 => {
                    let n = demo.keypoints.first().map_or(0, Vec::len);
                    (0..n).map(|_| r.random::<f32>() < self.point_dropout).collect()
                }
                _ => Vec::new(),
            };
            for t in obs_ticks(s.t, to) {
                let (keypoints, key_features) = match unseen {
                    Some(u) => (Cow::Borrowed(u.keypoints[s.demo].as_slice()), Some(u.features.as_slice())),
                    None => (
                        show_lost(demo.keypoints.get(t).map_or(&[][..], Vec::as_slice), &lost),
                        self.key_features.as_ref().map(|k| k[s.demo][t].as_slice()),
                    ),
                };
                inputs.push((s.demo, t, keypoints, key_features));
                crops.push(crop);
            }
            for t in action_ticks(s.t, to, config.horizon, demo.len()) {
                let mut a = demo.actions[t].to_vec();
                self.normalizer.action.normalize(&mut a);
                actions.extend(a);
            }
        }
        let frames: Vec<Frame<'_>> = inputs
            .iter()
            .map(|(d, t, keypoints, key_features)| {
                let demo = &self.demos[*d];
                Frame {
                    image: &demo.images[*t],
                    width: demo.width,
                    height: demo.height,
                    state: &demo.states[*t][..config.state_dim],
                    keypoints,
                    key_features: *key_features,
                    object_poses: demo.object_poses.get(*t).map_or(&[][..], Vec::as_slice),
                }
            })
            .collect();
        let obs = observations(&frames, &crops, config, &self.normalizer, device);
        let actions = Tensor::from_data(TensorData::new(actions, [batch.len(), config.horizon, config.action_dim]), device);
        (obs, actions)
    }
}

/// `keypoints` with those where `lost` is true shown as the tracker shows a lost point
/// ([`TrainConfig::point_dropout`]): flag 0, coordinates kept (the flag zeroes the key patch, see
/// [`observations`]). Borrowed unchanged when no point is lost.
fn show_lost<'a>(keypoints: &'a [[f32; 3]], lost: &[bool]) -> Cow<'a, [[f32; 3]]> {
    if !lost.contains(&true) {
        return Cow::Borrowed(keypoints);
    }
    let mut shown = keypoints.to_vec();
    for (point, _) in shown.iter_mut().zip(lost).filter(|(_, l)| **l) {
        point[2] = 0.0;
    }
    Cow::Owned(shown)
}

/// Fits the normaliser on the training demos: the state rows ([`state_row`]) and the actions.
fn fit_normalizer(demos: &[Demo], which: &[usize], config: &PolicyConfig, constant_span: f32) -> Result<Normalizer> {
    let rows: Vec<Vec<f32>> = which
        .iter()
        .flat_map(|&d| {
            let demo = &demos[d];
            demo.states.iter().enumerate().map(move |(t, s)| {
                let poses = demo.object_poses.get(t).map_or(&[][..], Vec::as_slice);
                let keypoints = demo.keypoints.get(t).map_or(&[][..], Vec::as_slice);
                state_row(config, s, poses, keypoints)
            })
        })
        .collect();
    let actions = which.iter().flat_map(|&d| demos[d].actions.iter().map(|a| a.as_slice()));
    Ok(Normalizer {
        state: Range::fit("state", config.state_width(), rows.iter().map(Vec::as_slice), constant_span)?,
        action: Range::fit("action", 8, actions, constant_span)?,
    })
}

/// Computes every frame's key-patch features with the frozen local encoder.
fn cache_key_features(encoder: &GridEncoder, demos: &[Demo], device: &Device) -> Result<Vec<Vec<Vec<f32>>>> {
    let total: usize = demos.iter().map(Demo::len).sum();
    let bar = progress(total as u64, "caching key patches");
    let mut out = Vec::with_capacity(demos.len());
    for demo in demos {
        let mut features = Vec::with_capacity(demo.len());
        for start in (0..demo.len()).step_by(16) {
            let end = (start + 16).min(demo.len());
            let images: Vec<image::RgbImage> = (start..end)
                .map(|t| {
                    image::RgbImage::from_raw(demo.width, demo.height, demo.images[t].clone())
                        .ok_or_else(|| eyre!("{}: frame {t} has the wrong size", demo.path.display()))
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&image::RgbImage> = images.iter().collect();
            features.extend(key_features(encoder, &refs, &demo.keypoints[start..end], device)?);
            bar.inc((end - start) as u64);
        }
        out.push(features);
    }
    bar.finish();
    Ok(out)
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Copies a folder's files (one level) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).wrap_err_with(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Writes a checkpoint folder `dir` (replacing it) with `net`'s weights.
fn write_checkpoint(dir: &Path, config: &TrainConfig, trained_on: &TrainedOn, normalizer: &Normalizer, net: &PolicyNet) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(tmp.join(POLICY_JSON), serde_json::to_string_pretty(&config.policy)?)?;
    normalizer.save(&tmp.join(NORMALIZER_JSON))?;
    std::fs::write(tmp.join(TRAINED_ON_JSON), serde_json::to_string_pretty(trained_on)?)?;
    save_net(net, &tmp.join(MODEL_SAFETENSORS), Precision::F16)?;
    if let Some(local) = &config.local_encoder {
        copy_dir(local, &tmp.join(LOCAL_ENCODER_DIR))?;
    }
    replace_dir(&tmp, dir)
}

/// Moves `tmp` to `dir`, removing an old `dir` first.
fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old)?;
    }
    std::fs::rename(tmp, dir).wrap_err_with(|| format!("cannot move {} to {}", tmp.display(), dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// What `--resume` may change in a saved run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResumeOverrides {
    /// Train until this many epochs (more than saved extends the cosine schedule).
    pub epochs: Option<usize>,
    /// A new peak learning rate.
    pub lr: Option<f64>,
    /// This invocation's wall-clock budget ([`TrainConfig::max_minutes`]).
    pub max_minutes: Option<f64>,
}

/// Loads the weights of the checkpoint folder `dir` into `net`: the same policy kind, and every parameter of `net`
/// present in the checkpoint with its shape (a checkpoint's extra tensors, e.g. a learned key-patch position table
/// when this run uses the fixed one, are left out).
///
/// A checkpoint whose state is a prefix of this run's (`--state-dim 8` from a 7-joint checkpoint, GLUE
/// `--keypoint-coords` from one without) starts the run too: its U-Net is widened with zero weights for the new
/// entries at the end of each step's condition ([`crate::unet::ConditionalUnet1d::widen_global_cond`]), so the
/// network starts out acting as the checkpoint did, and training teaches it to use them.
fn init_from_checkpoint(net: PolicyNet, policy: &PolicyConfig, dir: &Path, device: &Device) -> Result<PolicyNet> {
    let path = dir.join(POLICY_JSON);
    let text = std::fs::read_to_string(&path).wrap_err_with(|| format!("--init: cannot read {}", path.display()))?;
    let saved: PolicyConfig = serde_json::from_str(&text).wrap_err_with(|| format!("--init: bad {}", path.display()))?;
    ensure!(
        saved.policy == policy.policy,
        "--init: {} holds a {} policy, this run trains {}",
        dir.display(),
        saved.policy.name(),
        policy.policy.name()
    );
    let weights = dir.join(MODEL_SAFETENSORS);
    if (saved.state_dim, saved.n_keypoints) == (policy.state_dim, policy.n_keypoints) {
        return load_into(net, &weights).wrap_err("--init");
    }
    // The saved state must be a prefix of this run's: [joints] -> [joints, gripper?, keypoint coordinates?].
    let prefix = saved.state_dim <= policy.state_dim
        && (saved.n_keypoints == 0 || (saved.state_dim, saved.n_keypoints) == (policy.state_dim, policy.n_keypoints));
    ensure!(
        prefix,
        "--init: {} feeds {} robot-state entries and {} keypoints' coordinates, this run {} and {} (a checkpoint's \
         state can be widened at its end, not narrowed or reordered)",
        dir.display(),
        saved.state_dim,
        saved.n_keypoints,
        policy.state_dim,
        policy.n_keypoints
    );
    let mut narrow = policy.clone();
    narrow.set_state_dim(saved.state_dim)?;
    narrow.set_n_keypoints(saved.n_keypoints)?;
    // The fresh encoder is the load target (its shapes do not depend on the state); only the U-Net is narrower.
    let target = PolicyNet { encoder: net.encoder, unet: narrow.unet.init(device)? };
    let old = load_into(target, &weights).wrap_err("--init")?;
    let unet = old.unet.widen_global_cond(policy.n_obs_steps, narrow.step_dim(), policy.step_dim())?;
    eprintln!(
        "--init: state widened from {} to {} entries per step (zero weights for the new ones)",
        narrow.state_width(),
        policy.state_width()
    );
    Ok(PolicyNet { encoder: old.encoder, unet })
}

/// Trains `config` into the new run folder `out`.
pub fn train(config: TrainConfig, out: &Path, device: &Device) -> Result<TrainReport> {
    ensure!(
        !out.join("state").exists(),
        "{} already holds a run; pass --resume to continue it or choose another --out",
        out.display()
    );
    run(config, out, false, device)
}

/// Continues the run saved in `out` (its `train.json`, weights, optimiser state and progress) from its last
/// checkpointed epoch.
pub fn resume(out: &Path, overrides: ResumeOverrides, device: &Device) -> Result<TrainReport> {
    let path = out.join("train.json");
    let text = std::fs::read_to_string(&path).wrap_err_with(|| format!("--resume: cannot read {}", path.display()))?;
    let mut config: TrainConfig = serde_json::from_str(&text).wrap_err_with(|| format!("bad {}", path.display()))?;
    ensure!(out.join("state").is_dir(), "--resume: {} has no checkpointed state yet", out.display());
    config.epochs = overrides.epochs.unwrap_or(config.epochs);
    config.lr = overrides.lr.unwrap_or(config.lr);
    config.max_minutes = overrides.max_minutes;
    run(config, out, true, device)
}

fn run(mut config: TrainConfig, out: &Path, resume: bool, device: &Device) -> Result<TrainReport> {
    let started = Instant::now();
    ensure!(config.batch_size > 0 && config.epochs > 0, "batch_size and epochs must be positive");
    ensure!(config.max_minutes.is_none_or(|m| m > 0.0), "max_minutes must be positive");
    let glue = config.policy.policy.uses_key_patches();
    ensure!(
        (0.0..=1.0).contains(&config.keypoint_dropout),
        "keypoint_dropout: expected a share in [0, 1], got {}",
        config.keypoint_dropout
    );
    ensure!(
        config.keypoint_dropout == 0.0 || glue,
        "keypoint_dropout applies to GLUE's key patches; --policy {} has none",
        config.policy.policy.name()
    );
    let kind = config.policy.policy;
    ensure!(
        (0.0..=1.0).contains(&config.point_dropout),
        "point_dropout: expected a chance in [0, 1], got {}",
        config.point_dropout
    );
    ensure!(
        config.point_dropout == 0.0 || kind.uses_keypoints() || config.keypoint_coords,
        "point_dropout applies to keypoints; --policy {} reads none (add --keypoint-coords)",
        kind.name()
    );
    ensure!(
        !config.keypoint_coords || kind.accepts_keypoint_coords(),
        "--keypoint-coords: --policy {} reads no keypoint coordinates (it reads the true object poses)",
        kind.name()
    );
    let (demos, failed, source) = load_demos(&config.data, kind.uses_keypoints() || config.keypoint_coords, kind.uses_object_poses())?;
    if kind.uses_object_poses() {
        let n = demos[0].object_poses[0].len();
        config.policy.set_n_objects(n)?;
        if let Some(d) = demos.iter().find(|d| d.object_poses.iter().any(|p| p.len() != n)) {
            bail!("{}: object poses of another object count than {n} (train one task per run)", d.path.display());
        }
    }
    if kind.uses_keypoint_coords() || config.keypoint_coords {
        // load_demos checked one keypoint count across the demonstrations.
        config.policy.set_n_keypoints(demos[0].keypoints[0].len()).wrap_err("--keypoint-coords")?;
    }
    config.policy.validate()?;
    std::fs::create_dir_all(out).wrap_err_with(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("train.json"), serde_json::to_string_pretty(&config)?)?;

    let trained_on =
        TrainedOn { task: demos[0].task.clone(), episodes: demos.len(), frames: demos.iter().map(Demo::len).sum() };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let (train_ids, val_ids) = split(demos.len(), config.val_fraction, &mut rng);
    eprintln!(
        "{} successful {} episodes ({} train, {} validation; {failed} failed skipped), {} frames{}",
        trained_on.episodes,
        trained_on.task,
        train_ids.len(),
        val_ids.len(),
        trained_on.frames,
        source.map_or(String::new(), |s| format!(", keypoints from {s:?}"))
    );
    let normalizer = fit_normalizer(&demos, &train_ids, &config.policy, config.constant_span)?;
    normalizer.save(&out.join(NORMALIZER_JSON))?;

    let key_features = if glue {
        let Some(dir) = &config.local_encoder else {
            bail!("--policy glue needs --local-encoder DIR (a HF CLIP folder, e.g. the output of `glue pretrain`)")
        };
        let encoder = GridEncoder::load(dir, config.policy.local_split, device)?;
        ensure!(
            encoder.grid() == config.policy.fusion.grid && encoder.channels() == config.policy.fusion.local_dim,
            "local encoder {} gives a {}x{} grid of width {}, the policy expects {}x{} of width {}",
            dir.display(),
            encoder.grid(),
            encoder.grid(),
            encoder.channels(),
            config.policy.fusion.grid,
            config.policy.fusion.grid,
            config.policy.fusion.local_dim
        );
        Some(cache_key_features(&encoder, &demos, device)?)
    } else {
        None
    };
    let keypoint_dropout =
        key_features.as_deref().and_then(|k| KeypointDropout::new(config.keypoint_dropout, &demos, k));
    let data = Dataset { demos, key_features, normalizer, keypoint_dropout, point_dropout: config.point_dropout };
    let train_samples = samples(&data.demos, &train_ids);
    let val_all = samples(&data.demos, &val_ids);
    let stride = (val_all.len() / config.val_samples.max(1)).max(1);
    let val_samples: Vec<Sample> = val_all.iter().step_by(stride).take(config.val_samples).copied().collect();

    let train_device = device.clone().autodiff();
    let state_dir = out.join("state");
    let (mut net, mut ema, mut optimizer, mut progress_state) = if resume {
        let net = load_net(&config.policy, &state_dir.join("net.safetensors"), &train_device)?;
        let mut ema = Ema::new(&net, config.ema_power, config.ema_max_decay);
        // Into the EMA's own copy, which shares the model's parameter ids (see `Ema::update`).
        ema.model = load_into(ema.model, &state_dir.join("ema.safetensors"))?;
        let optimizer = adamw(&config)
            .load(state_dir.join("optimizer.bpk"))
            .map_err(|e| eyre!("--resume: cannot load {}: {e:?}", state_dir.join("optimizer.bpk").display()))?;
        let text = std::fs::read_to_string(state_dir.join("progress.json"))?;
        let progress: Progress = serde_json::from_str(&text)?;
        eprintln!("resuming after epoch {} (step {})", progress.epochs_done, progress.step);
        (net, ema, optimizer, progress)
    } else {
        // Seeded initialisation (burn's initialisers draw from the backend's RNG; the values differ across backends).
        train_device.seed(config.seed);
        let mut net = PolicyNet::init(&config.policy, &train_device)?;
        if let Some(dir) = &config.global_init {
            let (global, _, _) = ClipVisionModel::load(dir, &train_device)?;
            net.encoder = match net.encoder {
                Encoder::Glue(mut e) => {
                    e.global = global;
                    Encoder::Glue(e)
                }
                Encoder::GlueS(mut e) => {
                    e.global = global;
                    Encoder::GlueS(e)
                }
                Encoder::Dp(_) | Encoder::State(_) => {
                    bail!("--global-init applies to glue and glue-s, not {}", config.policy.policy.name())
                }
            };
        }
        if let Some(dir) = &config.init {
            net = init_from_checkpoint(net, &config.policy, dir, &train_device)?;
            eprintln!("weights from {}", dir.display());
        }
        let ema = Ema::new(&net, config.ema_power, config.ema_max_decay);
        (net, ema, adamw(&config), Progress::default())
    };
    eprintln!("{} policy: {} parameters", config.policy.policy.name(), net.num_params());

    let schedule = ddim_for(&config.policy)?.schedule().clone();
    let steps_per_epoch = train_samples.len().div_ceil(config.batch_size);
    let mut total_steps = steps_per_epoch * config.epochs;
    let bar = progress(total_steps as u64, "train");
    bar.set_position(progress_state.step as u64);
    bar.reset_eta();
    let mut last_loss = f64::NAN;
    let first_epoch = progress_state.epochs_done;
    let mut epoch = first_epoch;
    let requested_epochs = config.epochs;
    while epoch < config.epochs {
        let epoch_start = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ ((epoch as u64 + 1) << 32));
        let mut order = train_samples.clone();
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        let (mut sum, mut count) = (0.0, 0usize);
        let mut lr = 0.0;
        for batch in order.chunks(config.batch_size) {
            let (obs, actions) = data.batch(&config.policy, batch, Some(&mut rng), &train_device);
            let noise = gaussian(&mut rng, actions.dims(), &train_device);
            let steps: Vec<usize> = (0..batch.len()).map(|_| rng.random_range(0..schedule.alphas_cumprod().len())).collect();
            let loss = net.loss(&obs, config.policy.n_obs_steps, actions, noise, &steps, &schedule);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                bar.abandon();
                bail!(
                    "loss became {value} at epoch {epoch}, step {}: stopping; the last good checkpoint is {} (epoch {})",
                    progress_state.step,
                    out.join("last").display(),
                    progress_state.epochs_done
                );
            }
            let mut grads = GradientsParams::from_grads(loss.backward(), &net);
            clip_global_norm(&net, &mut grads, config.grad_clip_norm);
            lr = cosine_with_warmup(config.lr, progress_state.step, config.warmup_steps, total_steps);
            net = optimizer.step(lr, net, grads);
            progress_state.step += 1;
            ema.update(&net, progress_state.step)?;
            sum += value;
            count += 1;
            last_loss = value;
            bar.set_message(format!("epoch {}/{} loss {value:.4} lr {lr:.1e}", epoch + 1, config.epochs));
            bar.inc(1);
        }
        let train_loss = sum / count.max(1) as f64;
        let val_loss = if val_samples.is_empty() {
            None
        } else {
            Some(validation_loss(&ema.model, &data, &config, &val_samples, &schedule, device)?)
        };
        progress_state.epochs_done = epoch + 1;
        progress_state.history.push(EpochRow {
            epoch: epoch + 1,
            step: progress_state.step,
            train_loss,
            val_loss,
            lr,
            seconds: epoch_start.elapsed().as_secs_f64(),
        });
        let score = val_loss.unwrap_or(train_loss);
        if progress_state.best_val.is_none_or(|b| score < b) {
            progress_state.best_val = Some(score);
            progress_state.best_epoch = Some(epoch + 1);
            write_checkpoint(&out.join("best"), &config, &trained_on, &data.normalizer, &ema.model)?;
        }
        // Through `suspend`, not `println`: the line must reach logs too, where the bar is hidden.
        bar.suspend(|| {
            eprintln!(
                "epoch {:>3}: train loss {train_loss:.4}{} ({:.0} s)",
                epoch + 1,
                val_loss.map_or(String::new(), |v| format!(", validation loss {v:.4}")),
                epoch_start.elapsed().as_secs_f64()
            )
        });
        if let Some(minutes) = config.max_minutes {
            let (spent, pace) = (started.elapsed().as_secs_f64(), epoch_start.elapsed().as_secs_f64());
            let epochs = epochs_within_budget(requested_epochs, epoch + 1, minutes * 60.0 - spent, pace);
            if epochs != config.epochs {
                config.epochs = epochs;
                total_steps = steps_per_epoch * config.epochs;
                bar.set_length(total_steps as u64);
                std::fs::write(out.join("train.json"), serde_json::to_string_pretty(&config)?)?;
                bar.suspend(|| eprintln!("--max-minutes {minutes}: {} epochs fit, the schedule now ends there", config.epochs));
            }
        }
        if (epoch + 1) % config.checkpoint_every.max(1) == 0 || epoch + 1 == config.epochs {
            write_checkpoint(&out.join("last"), &config, &trained_on, &data.normalizer, &ema.model)?;
            save_state(&state_dir, &net, &ema, &optimizer, &progress_state)?;
        }
        write_metrics(out, &progress_state.history)?;
        epoch += 1;
    }
    bar.finish();

    let best = load_net(&config.policy, &out.join("best").join(MODEL_SAFETENSORS), device)?;
    let (position, gripper) = if val_samples.is_empty() {
        (None, None)
    } else {
        let (p, g) = open_loop_error(&best, &data, &config, &val_samples, device)?;
        (Some(p), Some(g))
    };
    let report = TrainReport {
        epochs: progress_state.epochs_done,
        steps: progress_state.step,
        train_episodes: train_ids.len(),
        val_episodes: val_ids.len(),
        val_recordings: val_ids.iter().map(|&i| data.demos[i].path.clone()).collect(),
        final_train_loss: progress_state.history.last().map_or(last_loss, |r| r.train_loss),
        best_val_loss: if val_samples.is_empty() { None } else { progress_state.best_val },
        best_epoch: progress_state.best_epoch,
        val_position_error_m: position,
        val_gripper_error_m: gripper,
        seconds: started.elapsed().as_secs_f64(),
        keypoints: source,
    };
    std::fs::write(out.join("metrics.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// The run's length under a time budget, after `done` epochs with `left_s` seconds of it left: the epochs that
/// still fit at `pace_s` per epoch, the latest epoch's time, never more than `requested`. The latest epoch rather
/// than the mean: a process's first epoch also pays for kernel compilation and autotuning on GPUs, and an estimate
/// made then must be revised upwards again once the epochs run at their real pace.
fn epochs_within_budget(requested: usize, done: usize, left_s: f64, pace_s: f64) -> usize {
    let fit = (left_s / pace_s).floor().max(0.0) as usize;
    (done + fit).min(requested).max(done)
}

/// AdamW with the run's settings (Diffusion Policy's betas 0.95 / 0.999, eps 1e-8).
fn adamw(config: &TrainConfig) -> burn::optim::ModuleOptimizer {
    AdamWConfig::new().with_beta_1(0.95).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(config.weight_decay as f32).init()
}

/// Saves what `--resume` needs into `dir`, atomically.
fn save_state(dir: &Path, net: &PolicyNet, ema: &Ema<PolicyNet>, optimizer: &burn::optim::ModuleOptimizer, progress: &Progress) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    save_net(&net.valid(), &tmp.join("net.safetensors"), Precision::F32)?;
    save_net(&ema.model, &tmp.join("ema.safetensors"), Precision::F32)?;
    optimizer.save(tmp.join("optimizer.bpk")).map_err(|e| eyre!("cannot save the optimiser state: {e:?}"))?;
    std::fs::write(tmp.join("progress.json"), serde_json::to_string_pretty(progress)?)?;
    replace_dir(&tmp, dir)
}

/// Mean noise-prediction loss of `net` on the validation samples, centred crops, with noise and diffusion steps
/// from a fixed seed (so epochs compare).
fn validation_loss(
    net: &PolicyNet,
    data: &Dataset,
    config: &TrainConfig,
    val: &[Sample],
    schedule: &crate::diffusion::NoiseSchedule,
    device: &Device,
) -> Result<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(0x5eed));
    let (mut sum, mut n) = (0.0, 0usize);
    for batch in val.chunks(config.batch_size) {
        let (obs, actions) = data.batch(&config.policy, batch, None, device);
        let noise = gaussian(&mut rng, actions.dims(), device);
        let steps: Vec<usize> = (0..batch.len()).map(|_| rng.random_range(0..schedule.alphas_cumprod().len())).collect();
        let loss = net.loss(&obs, config.policy.n_obs_steps, actions, noise, &steps, schedule);
        sum += f64::from(loss.into_scalar::<f32>()) * batch.len() as f64;
        n += batch.len();
    }
    Ok(sum / n.max(1) as f64)
}

/// Open-loop action error of DDIM samples on validation samples: mean Euclidean end-effector position error and
/// mean absolute gripper error (both m) over the `n_action_steps` executed actions.
fn open_loop_error(net: &PolicyNet, data: &Dataset, config: &TrainConfig, val: &[Sample], device: &Device) -> Result<(f64, f64)> {
    let policy = &config.policy;
    let ddim = ddim_for(policy)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(0xe7a1));
    let (mut position, mut gripper, mut n) = (0.0, 0.0, 0usize);
    let subset: Vec<Sample> = val.iter().step_by((val.len() / 64).max(1)).take(64).copied().collect();
    for batch in subset.chunks(config.batch_size) {
        let (obs, truth) = data.batch(policy, batch, None, device);
        let noise = gaussian(&mut rng, truth.dims(), device);
        let sampled = net.sample(&obs, policy.n_obs_steps, &ddim, noise);
        let sampled: Vec<f32> = sampled.into_data().try_to_vec().map_err(|e| eyre!("{e:?}"))?;
        let truth: Vec<f32> = truth.into_data().try_to_vec().map_err(|e| eyre!("{e:?}"))?;
        let a = policy.action_dim;
        for b in 0..batch.len() {
            for k in policy.n_obs_steps - 1..policy.n_obs_steps - 1 + policy.n_action_steps {
                let at = (b * policy.horizon + k) * a;
                let mut p = sampled[at..at + a].to_vec();
                let mut q = truth[at..at + a].to_vec();
                data.normalizer.action.denormalize(&mut p);
                data.normalizer.action.denormalize(&mut q);
                position += ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt() as f64;
                gripper += (p[7] - q[7]).abs() as f64;
                n += 1;
            }
        }
    }
    Ok((position / n.max(1) as f64, gripper / n.max(1) as f64))
}

/// The epoch history in `run/metrics.csv`, as [`write_metrics`] writes it; errors name the file and the row.
pub fn read_metrics(run: &Path) -> Result<Vec<EpochRow>> {
    let path = run.join("metrics.csv");
    let text = std::fs::read_to_string(&path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1).filter(|(_, l)| !l.is_empty()) {
        let bad = || eyre!("{} line {}: expected epoch,step,train_loss,val_loss,lr,seconds, got {line:?}", path.display(), i + 1);
        let f: Vec<&str> = line.split(',').collect();
        ensure!(f.len() == 6, bad());
        let val_loss = if f[3].is_empty() { None } else { Some(f[3].parse().map_err(|_| bad())?) };
        rows.push(EpochRow {
            epoch: f[0].parse().map_err(|_| bad())?,
            step: f[1].parse().map_err(|_| bad())?,
            train_loss: f[2].parse().map_err(|_| bad())?,
            val_loss,
            lr: f[4].parse().map_err(|_| bad())?,
            seconds: f[5].parse().map_err(|_| bad())?,
        });
    }
    ensure!(!rows.is_empty(), "{}: no epochs recorded", path.display());
    Ok(rows)
}

/// `metrics.csv` and `loss.png` from the epoch history.
fn write_metrics(out: &Path, history: &[EpochRow]) -> Result<()> {
    let mut csv = String::from("epoch,step,train_loss,val_loss,lr,seconds\n");
    for r in history {
        csv += &format!(
            "{},{},{},{},{},{:.1}\n",
            r.epoch,
            r.step,
            r.train_loss,
            r.val_loss.map_or(String::new(), |v| v.to_string()),
            r.lr,
            r.seconds
        );
    }
    std::fs::write(out.join("metrics.csv"), csv)?;
    let chart = crate::plot::LineChart {
        title: "Training loss (noise-prediction MSE)".into(),
        x_label: "optimiser step".into(),
        y_label: "loss".into(),
        series: vec![
            crate::plot::Series { label: "train".into(), points: history.iter().map(|r| (r.step as f64, r.train_loss)).collect() },
            crate::plot::Series {
                label: "validation (EMA)".into(),
                points: history.iter().filter_map(|r| r.val_loss.map(|v| (r.step as f64, v))).collect(),
            },
        ],
        log_y: true,
    };
    chart.save_png(&out.join("loss.png"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ModelSize, PolicyKind};

    #[test]
    fn metrics_read_back_as_written_and_a_bad_row_is_named() {
        let dir = std::env::temp_dir().join(format!("glue-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let history = vec![
            EpochRow { epoch: 1, step: 32, train_loss: 1.5, val_loss: Some(1.25), lr: 1e-4, seconds: 30.5 },
            EpochRow { epoch: 2, step: 64, train_loss: 0.75, val_loss: None, lr: 5e-5, seconds: 29.0 },
        ];
        write_metrics(&dir, &history).unwrap();
        assert_eq!(read_metrics(&dir).unwrap(), history);
        std::fs::write(dir.join("metrics.csv"), "epoch,step,train_loss,val_loss,lr,seconds\n1,32,x,1.0,0.0001,30\n").unwrap();
        let err = read_metrics(&dir).unwrap_err().to_string();
        assert!(err.contains("metrics.csv line 2: expected epoch,step,train_loss,val_loss,lr,seconds"), "{err}");
        std::fs::write(dir.join("metrics.csv"), "epoch,step,train_loss,val_loss,lr,seconds\n").unwrap();
        assert!(read_metrics(&dir).unwrap_err().to_string().contains("no epochs recorded"));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// One 64x64 demo of 3 ticks, 2 visible keypoints, key features all 1; the state normaliser the identity over
    /// `state_width` entries.
    fn dataset(keypoint_dropout: f32, point_dropout: f32, state_width: usize) -> Dataset {
        let (ticks, n, c) = (3, 2, 4);
        let demo = Demo {
            path: PathBuf::from("demo.arrow"),
            task: "push-button".to_owned(),
            width: 64,
            height: 64,
            images: vec![vec![100u8; 64 * 64 * 3]; ticks],
            states: vec![[0.0; 15]; ticks],
            actions: vec![[0.0; 8]; ticks],
            keypoints: vec![vec![[10.0, 10.0, 1.0], [50.0, 40.0, 1.0]]; ticks],
            object_poses: Vec::new(),
        };
        let key_features = vec![vec![vec![1.0f32; n * c]; ticks]];
        let range = |d| Range { min: vec![-1.0; d], max: vec![1.0; d], constant_span: CONSTANT_SPAN };
        let demos = vec![demo];
        let keypoint_dropout = KeypointDropout::new(keypoint_dropout, &demos, &key_features);
        Dataset {
            demos,
            key_features: Some(key_features),
            normalizer: Normalizer { state: range(state_width), action: range(8) },
            keypoint_dropout,
            point_dropout,
        }
    }

    /// Per sample of a batch of `rows` at tick 2 (training crops when `train`): whether its key features are all
    /// zero, and whether its keypoints share one cell.
    fn unseen_rows(data: &Dataset, rows: usize, train: bool) -> Vec<(bool, bool)> {
        let config = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
        let batch = vec![Sample { demo: 0, t: 2 }; rows];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (obs, _) = data.batch(&config, &batch, train.then_some(&mut rng), &Device::flex());
        let patches = obs.key_patches.expect("GLUE batches carry key patches");
        let features: Vec<f32> = patches.features.into_data().try_to_vec().unwrap();
        let cells: Vec<i64> = patches.cells.into_data().convert::<i64>().try_to_vec().unwrap();
        let to = config.n_obs_steps;
        let per_frame = features.len() / (rows * to);
        (0..rows)
            .map(|r| {
                let rows_of_sample = r * to..(r + 1) * to;
                let values = &features[rows_of_sample.start * per_frame..rows_of_sample.end * per_frame];
                let zero = values.iter().all(|&v| v == 0.0);
                let same_cell = rows_of_sample.clone().all(|f| cells[2 * f] == cells[2 * f + 1]);
                (zero, same_cell)
            })
            .collect()
    }

    #[test]
    fn keypoint_dropout_shows_a_share_of_training_samples_as_unseen() {
        // Always: every sample zeroed, both keypoints in the centre's cell.
        assert!(unseen_rows(&dataset(1.0, 0.0, 7), 8, true).iter().all(|&r| r == (true, true)));
        // Never: the recorded features and two distinct cells.
        assert!(unseen_rows(&dataset(0.0, 0.0, 7), 8, true).iter().all(|&r| r == (false, false)));
        // Validation batches (no random crop) are never dropped.
        assert!(unseen_rows(&dataset(1.0, 0.0, 7), 8, false).iter().all(|&r| r == (false, false)));
        // A share of 0.3: about 60 of 200 samples, each one whole (zeroed and moved together).
        let rows = unseen_rows(&dataset(0.3, 0.0, 7), 200, true);
        assert!(rows.iter().all(|&(zero, same)| zero == same), "{rows:?}");
        let dropped = rows.iter().filter(|r| r.0).count();
        assert!((35..=85).contains(&dropped), "{dropped} of 200 dropped at 0.3");
    }

    /// Per sample of a GLUE `--keypoint-coords` batch of `rows` at tick 2 (training crops when `train`), per
    /// observation step, per keypoint: (its visibility flag in the state, whether its key patch is all zero); and
    /// whether every step's two keypoints kept distinct cells.
    fn lost_points(data: &Dataset, rows: usize, train: bool) -> Vec<(Vec<Vec<(f32, bool)>>, bool)> {
        let mut config = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
        config.set_n_keypoints(2).unwrap();
        let batch = vec![Sample { demo: 0, t: 2 }; rows];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (obs, _) = data.batch(&config, &batch, train.then_some(&mut rng), &Device::flex());
        let state: Vec<f32> = obs.state.into_data().try_to_vec().unwrap();
        let patches = obs.key_patches.expect("GLUE batches carry key patches");
        let features: Vec<f32> = patches.features.into_data().try_to_vec().unwrap();
        let cells: Vec<i64> = patches.cells.into_data().convert::<i64>().try_to_vec().unwrap();
        let (to, width, channels) = (config.n_obs_steps, config.state_width(), features.len() / (rows * config.n_obs_steps * 2));
        (0..rows)
            .map(|r| {
                let steps: Vec<Vec<(f32, bool)>> = (r * to..(r + 1) * to)
                    .map(|f| {
                        (0..2)
                            .map(|i| {
                                let flag = state[f * width + width - 6 + 3 * i + 2];
                                let patch = &features[(f * 2 + i) * channels..(f * 2 + i + 1) * channels];
                                (flag, patch.iter().all(|&v| v == 0.0))
                            })
                            .collect()
                    })
                    .collect();
                let distinct = (r * to..(r + 1) * to).all(|f| cells[2 * f] != cells[2 * f + 1]);
                (steps, distinct)
            })
            .collect()
    }

    #[test]
    fn point_dropout_shows_single_keypoints_lost_where_the_tracker_left_them() {
        let width = {
            let mut c = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
            c.set_n_keypoints(2).unwrap();
            c.state_width()
        };
        let every = |data: &Dataset, train: bool, want: (f32, bool)| {
            lost_points(data, 8, train).iter().all(|(steps, distinct)| *distinct && steps.iter().flatten().all(|&p| p == want))
        };
        // Always: every flag 0 and every key patch zeroed, the coordinates (so the two cells) kept.
        assert!(every(&dataset(0.0, 1.0, width), true, (0.0, true)));
        // Never, and never in validation batches: the recorded flags and features.
        assert!(every(&dataset(0.0, 0.0, width), true, (1.0, false)));
        assert!(every(&dataset(0.0, 1.0, width), false, (1.0, false)));
        // A chance of 0.3 per point: a lost point's flag and patch go together, it stays lost over the sample's
        // observation steps, and single points are lost (not only whole samples).
        let samples = lost_points(&dataset(0.0, 0.3, width), 200, true);
        let mut lost = 0;
        let mut one_of_two = 0;
        for (steps, distinct) in &samples {
            assert!(distinct);
            assert!(steps.iter().flatten().all(|&(flag, zero)| (flag == 0.0) == zero), "{steps:?}");
            assert!(steps.iter().all(|s| s == &steps[0]), "lost over some observation steps only: {steps:?}");
            let n = steps[0].iter().filter(|p| p.1).count();
            lost += n;
            one_of_two += usize::from(n == 1);
        }
        assert!((80..=160).contains(&lost), "{lost} of 400 points lost at 0.3");
        assert!(one_of_two > 40, "{one_of_two} of 200 samples lost one point of two");
    }

    #[test]
    fn a_bad_dropout_stops_the_run_before_its_folder_is_made() {
        let out = std::env::temp_dir().join(format!("glue-keypoint-dropout-check-{}", std::process::id()));
        // (policy, --keypoint-dropout, --point-dropout, the error)
        let cases = [
            (PolicyKind::Glue, 1.5, 0.0, "keypoint_dropout: expected a share in [0, 1], got 1.5"),
            (PolicyKind::Glue, f32::NAN, 0.0, "keypoint_dropout: expected a share in [0, 1], got NaN"),
            (PolicyKind::Dp, 0.2, 0.0, "keypoint_dropout applies to GLUE's key patches; --policy dp has none"),
            (PolicyKind::Glue, 0.0, -0.1, "point_dropout: expected a chance in [0, 1], got -0.1"),
            (PolicyKind::GlueS, 0.0, 0.2, "point_dropout applies to keypoints; --policy glue-s reads none (add --keypoint-coords)"),
        ];
        for (policy, keypoint_dropout, point_dropout, says) in cases {
            let mut config = TrainConfig::new(PolicyConfig::new(policy, ModelSize::Small), vec![PathBuf::from("demos")]);
            config.keypoint_dropout = keypoint_dropout;
            config.point_dropout = point_dropout;
            let err = train(config, &out, &Device::flex()).expect_err("an invalid share must stop the run").to_string();
            assert_eq!(err, says);
            assert!(!out.exists(), "{} was created for a run that cannot start", out.display());
        }
    }

    #[test]
    fn a_slow_first_epoch_shortens_the_run_and_later_epochs_lengthen_it_again() {
        // 10 minutes, 100 epochs asked for. A first epoch of 143 s (GPU warm-up) leaves 457 s: 3 more fit.
        assert_eq!(epochs_within_budget(100, 1, 600.0 - 143.0, 143.0), 4);
        // The second epoch takes 12 s: 445 s left, 37 more fit.
        assert_eq!(epochs_within_budget(100, 2, 600.0 - 155.0, 12.0), 39);
        // Fast epochs never lengthen the run past what was asked for.
        assert_eq!(epochs_within_budget(20, 2, 445.0, 1.0), 20);
        // Out of time: the run ends with the epoch just done, never before it.
        assert_eq!(epochs_within_budget(100, 7, -30.0, 12.0), 7);
    }
}
