//! How a run's weights and optimiser start: fresh (seeded, optionally from a CLIP folder or a checkpoint) or
//! resumed from the run folder's `state/`.

use std::path::Path;

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use eyre::{Result, WrapErr, bail, ensure, eyre};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::data::Sample;
use super::dataset::Dataset;
use super::optim::{Ema, clip_global_norm, cosine_with_warmup};
use super::{Progress, TrainConfig};
use crate::diffusion::NoiseSchedule;
use crate::policy::checkpoint::{MODEL_SAFETENSORS, POLICY_JSON, load_into, load_net};
use crate::policy::{Encoder, PolicyConfig, PolicyNet, gaussian};
use crate::vit::ClipVisionModel;

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

/// AdamW with the run's settings (Diffusion Policy's betas 0.95 / 0.999, eps 1e-8).
pub(super) fn adamw(config: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new().with_beta_1(0.95).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(config.weight_decay as f32).init()
}

/// The state a run trains: the raw weights, their EMA (which the checkpoints hold), AdamW and the progress.
pub(super) struct Trainer {
    pub(super) net: PolicyNet,
    pub(super) ema: Ema<PolicyNet>,
    pub(super) optimizer: ModuleOptimizer,
    pub(super) progress: Progress,
    /// The autodiff device the steps run on.
    device: Device,
}

/// One epoch's training loss, the mean over its steps, and the learning rate it ended at.
pub(super) struct EpochLoss {
    pub(super) mean: f64,
    pub(super) lr: f64,
}

impl Trainer {
    /// A new run on `device` (an autodiff device): seeded initialisation, then the global ViT from
    /// [`TrainConfig::global_init`] and the weights of [`TrainConfig::init`] where given.
    pub(super) fn fresh(config: &TrainConfig, device: &Device) -> Result<Self> {
        // Seeded initialisation (burn's initialisers draw from the backend's RNG; the values differ across backends).
        device.seed(config.seed);
        let mut net = PolicyNet::init(&config.policy, device)?;
        if let Some(dir) = &config.global_init {
            let (global, _, _) = ClipVisionModel::load(dir, device)?;
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
            net = init_from_checkpoint(net, &config.policy, dir, device)?;
            eprintln!("weights from {}", dir.display());
        }
        let ema = Ema::new(&net, config.ema_power, config.ema_max_decay);
        Ok(Self { net, ema, optimizer: adamw(config), progress: Progress::default(), device: device.clone() })
    }

    /// The run saved in `state_dir` ([`super::run_folder::save_state`]), on `device` (an autodiff device).
    pub(super) fn resume(config: &TrainConfig, state_dir: &Path, device: &Device) -> Result<Self> {
        let net = load_net(&config.policy, &state_dir.join("net.safetensors"), device)?;
        let mut ema = Ema::new(&net, config.ema_power, config.ema_max_decay);
        // Into the EMA's own copy, which shares the model's parameter ids (see `Ema::update`).
        ema.model = load_into(ema.model, &state_dir.join("ema.safetensors"))?;
        let optimizer = adamw(config)
            .load(state_dir.join("optimizer.bpk"))
            .map_err(|e| eyre!("--resume: cannot load {}: {e:?}", state_dir.join("optimizer.bpk").display()))?;
        let text = std::fs::read_to_string(state_dir.join("progress.json"))?;
        let progress: Progress = serde_json::from_str(&text)?;
        eprintln!("resuming after epoch {} (step {})", progress.epochs_done, progress.step);
        Ok(Self { net, ema, optimizer, progress, device: device.clone() })
    }

    /// Epoch `epoch` (0-based) over `samples` in an order shuffled by the seed and the epoch: DDPM noise-prediction
    /// loss, global-norm clipping, AdamW on the cosine schedule (which ends at `config.epochs`), the EMA after every
    /// step. A loss that is not finite stops the run, naming the last good checkpoint in `out`.
    pub(super) fn train_epoch(
        mut self,
        config: &TrainConfig,
        data: &Dataset,
        samples: &[Sample],
        schedule: &NoiseSchedule,
        epoch: usize,
        bar: &ProgressBar,
        out: &Path,
    ) -> Result<(Self, EpochLoss)> {
        let total_steps = samples.len().div_ceil(config.batch_size) * config.epochs;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ ((epoch as u64 + 1) << 32));
        let mut order = samples.to_vec();
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        let (mut sum, mut count) = (0.0, 0usize);
        let mut loss = EpochLoss { mean: f64::NAN, lr: 0.0 };
        for batch in order.chunks(config.batch_size) {
            let (obs, actions) = data.batch(&config.policy, batch, Some(&mut rng), &self.device);
            let noise = gaussian(&mut rng, actions.dims(), &self.device);
            let steps: Vec<usize> = (0..batch.len()).map(|_| rng.random_range(0..schedule.alphas_cumprod().len())).collect();
            let step_loss = self.net.loss(&obs, config.policy.n_obs_steps, actions, noise, &steps, schedule);
            let value = f64::from(step_loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                bar.abandon();
                bail!(
                    "loss became {value} at epoch {epoch}, step {}: stopping; the last good checkpoint is {} (epoch {})",
                    self.progress.step,
                    out.join("last").display(),
                    self.progress.epochs_done
                );
            }
            let mut grads = GradientsParams::from_grads(step_loss.backward(), &self.net);
            clip_global_norm(&self.net, &mut grads, config.grad_clip_norm);
            loss.lr = cosine_with_warmup(config.lr, self.progress.step, config.warmup_steps, total_steps);
            self.net = self.optimizer.step(loss.lr, self.net, grads);
            self.progress.step += 1;
            self.ema.update(&self.net, self.progress.step)?;
            sum += value;
            count += 1;
            bar.set_message(format!("epoch {}/{} loss {value:.4} lr {:.1e}", epoch + 1, config.epochs, loss.lr));
            bar.inc(1);
        }
        loss.mean = sum / count.max(1) as f64;
        Ok((self, loss))
    }
}
