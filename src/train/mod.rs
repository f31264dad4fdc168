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

mod dataset;
mod run_folder;
mod start;
#[cfg(test)]
mod tests;
mod validation;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use eyre::{Result, WrapErr, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::policy::checkpoint::{MODEL_SAFETENSORS, NORMALIZER_JSON, TrainedOn, load_net};
use crate::policy::normalizer::CONSTANT_SPAN;
use crate::policy::{PolicyConfig, ddim_for};
use data::{Demo, KeypointSource, Sample, load_demos, samples, split};
use dataset::{Dataset, fit_normalizer};
pub use run_folder::read_metrics;
use run_folder::{save_state, write_checkpoint, write_metrics};
use start::Trainer;
use validation::{open_loop_error, validation_loss};

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
    check_options(&config)?;
    let kind = config.policy.policy;
    let (demos, failed, source) = load_demos(&config.data, kind.uses_keypoints() || config.keypoint_coords, kind.uses_object_poses())?;
    fit_policy_to_demos(&mut config.policy, kind.uses_keypoint_coords() || config.keypoint_coords, &demos)?;
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
    let data = Dataset::new(demos, normalizer, &config, device)?;
    let train_samples = samples(&data.demos, &train_ids);
    let val_all = samples(&data.demos, &val_ids);
    let stride = (val_all.len() / config.val_samples.max(1)).max(1);
    let val_samples: Vec<Sample> = val_all.iter().step_by(stride).take(config.val_samples).copied().collect();

    let train_device = device.clone().autodiff();
    let state_dir = out.join("state");
    let mut trainer = if resume { Trainer::resume(&config, &state_dir, &train_device)? } else { Trainer::fresh(&config, &train_device)? };
    eprintln!("{} policy: {} parameters", config.policy.policy.name(), trainer.net.num_params());

    let schedule = ddim_for(&config.policy)?.schedule().clone();
    let steps_per_epoch = train_samples.len().div_ceil(config.batch_size);
    let bar = progress((steps_per_epoch * config.epochs) as u64, "train");
    bar.set_position(trainer.progress.step as u64);
    bar.reset_eta();
    let mut epoch = trainer.progress.epochs_done;
    let requested_epochs = config.epochs;
    while epoch < config.epochs {
        let epoch_start = Instant::now();
        let losses;
        (trainer, losses) = trainer.train_epoch(&config, &data, &train_samples, &schedule, epoch, &bar, out)?;
        let val_loss = if val_samples.is_empty() {
            None
        } else {
            Some(validation_loss(&trainer.ema.model, &data, &config, &val_samples, &schedule, device)?)
        };
        let progress_state = &mut trainer.progress;
        progress_state.epochs_done = epoch + 1;
        progress_state.history.push(EpochRow {
            epoch: epoch + 1,
            step: progress_state.step,
            train_loss: losses.mean,
            val_loss,
            lr: losses.lr,
            seconds: epoch_start.elapsed().as_secs_f64(),
        });
        let score = val_loss.unwrap_or(losses.mean);
        if progress_state.best_val.is_none_or(|b| score < b) {
            progress_state.best_val = Some(score);
            progress_state.best_epoch = Some(epoch + 1);
            write_checkpoint(&out.join("best"), &config, &trained_on, &data.normalizer, &trainer.ema.model)?;
        }
        // Through `suspend`, not `println`: the line must reach logs too, where the bar is hidden.
        bar.suspend(|| {
            eprintln!(
                "epoch {:>3}: train loss {:.4}{} ({:.0} s)",
                epoch + 1,
                losses.mean,
                val_loss.map_or(String::new(), |v| format!(", validation loss {v:.4}")),
                epoch_start.elapsed().as_secs_f64()
            )
        });
        if let Some(minutes) = config.max_minutes {
            let (spent, pace) = (started.elapsed().as_secs_f64(), epoch_start.elapsed().as_secs_f64());
            let epochs = epochs_within_budget(requested_epochs, epoch + 1, minutes * 60.0 - spent, pace);
            if epochs != config.epochs {
                config.epochs = epochs;
                bar.set_length((steps_per_epoch * config.epochs) as u64);
                std::fs::write(out.join("train.json"), serde_json::to_string_pretty(&config)?)?;
                bar.suspend(|| eprintln!("--max-minutes {minutes}: {} epochs fit, the schedule now ends there", config.epochs));
            }
        }
        if (epoch + 1) % config.checkpoint_every.max(1) == 0 || epoch + 1 == config.epochs {
            write_checkpoint(&out.join("last"), &config, &trained_on, &data.normalizer, &trainer.ema.model)?;
            save_state(&state_dir, &trainer.net, &trainer.ema, &trainer.optimizer, &trainer.progress)?;
        }
        write_metrics(out, &trainer.progress.history)?;
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
    let progress_state = &trainer.progress;
    let report = TrainReport {
        epochs: progress_state.epochs_done,
        steps: progress_state.step,
        train_episodes: train_ids.len(),
        val_episodes: val_ids.len(),
        val_recordings: val_ids.iter().map(|&i| data.demos[i].path.clone()).collect(),
        final_train_loss: progress_state.history.last().map_or(f64::NAN, |r| r.train_loss),
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

/// The options that only some policies accept, checked before anything is read or written.
fn check_options(config: &TrainConfig) -> Result<()> {
    ensure!(config.batch_size > 0 && config.epochs > 0, "batch_size and epochs must be positive");
    ensure!(config.max_minutes.is_none_or(|m| m > 0.0), "max_minutes must be positive");
    let kind = config.policy.policy;
    ensure!(
        (0.0..=1.0).contains(&config.keypoint_dropout),
        "keypoint_dropout: expected a share in [0, 1], got {}",
        config.keypoint_dropout
    );
    ensure!(
        config.keypoint_dropout == 0.0 || kind.uses_key_patches(),
        "keypoint_dropout applies to GLUE's key patches; --policy {} has none",
        kind.name()
    );
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
    Ok(())
}

/// Sizes what `policy` reads from the demonstrations: the object count of the privileged-state policy's poses, the
/// keypoint count of the coordinates in the state (`keypoint_coords`); then validates the whole configuration.
fn fit_policy_to_demos(policy: &mut PolicyConfig, keypoint_coords: bool, demos: &[Demo]) -> Result<()> {
    if policy.policy.uses_object_poses() {
        let n = demos[0].object_poses[0].len();
        policy.set_n_objects(n)?;
        if let Some(d) = demos.iter().find(|d| d.object_poses.iter().any(|p| p.len() != n)) {
            bail!("{}: object poses of another object count than {n} (train one task per run)", d.path.display());
        }
    }
    if keypoint_coords {
        // load_demos checked one keypoint count across the demonstrations.
        policy.set_n_keypoints(demos[0].keypoints[0].len()).wrap_err("--keypoint-coords")?;
    }
    policy.validate()
}

/// The run's length under a time budget, after `done` epochs with `left_s` seconds of it left: the epochs that
/// still fit at `pace_s` per epoch, the latest epoch's time, never more than `requested`. The latest epoch rather
/// than the mean: a process's first epoch also pays for kernel compilation and autotuning on GPUs, and an estimate
/// made then must be revised upwards again once the epochs run at their real pace.
fn epochs_within_budget(requested: usize, done: usize, left_s: f64, pace_s: f64) -> usize {
    let fit = (left_s / pace_s).floor().max(0.0) as usize;
    (done + fit).min(requested).max(done)
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
