//! A policy checkpoint folder and inference from it.
//!
//! Layout (written by `glue train` as `RUN/best/` and `RUN/last/`):
//! - `policy.json`: the [`PolicyConfig`];
//! - `normalizer.json`: the [`Normalizer`] fitted on the training data;
//! - `model.safetensors`: the [`PolicyNet`] weights (the EMA weights, which inference uses) in float16;
//! - `local_encoder/` (GLUE only): the frozen local ViT as a HF CLIP folder;
//! - `trained_on.json`: the task of its demonstrations ([`TrainedOn`]; older checkpoints lack it).

use std::path::{Path, PathBuf};

use burn::store::{FloatCastAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::{DType, Device, Tensor, TensorData};
use eyre::{Result, WrapErr, ensure, eyre};
use image::RgbImage;

use super::config::PolicyConfig;
use super::normalizer::Normalizer;
use super::observation::{Crop, Frame, key_features, observations};
use super::runtime::ConditionBuffer;
use super::{PolicyNet, ddim_for, gaussian_values};
use crate::diffusion::DdimScheduler;
use crate::vit::GridEncoder;

/// File names inside a checkpoint folder.
pub const POLICY_JSON: &str = "policy.json";
pub const NORMALIZER_JSON: &str = "normalizer.json";
pub const MODEL_SAFETENSORS: &str = "model.safetensors";
pub const LOCAL_ENCODER_DIR: &str = "local_encoder";
pub const TRAINED_ON_JSON: &str = "trained_on.json";

/// What a checkpoint was trained on, so that it is not run on another task by mistake (a push-button policy
/// in a place-fruit scene moves the arm with confidence and completes nothing).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrainedOn {
    /// The demonstrations' task (`EpisodeInfo::task`), one per run.
    pub task: String,
    /// Successful demonstrations used (training and validation episodes).
    pub episodes: usize,
    /// Their frames.
    pub frames: usize,
}

/// Precision of saved weights: checkpoint folders ship in half precision (half the size in the repository; the
/// rounding is far below what changes a sampled action), training state stays in full precision so a resumed run
/// continues exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F16,
    F32,
}

/// Writes the weights of `net` to `path` (safetensors) at `precision`.
pub fn save_net(net: &PolicyNet, path: &Path, precision: Precision) -> Result<()> {
    let dtype = match precision {
        Precision::F16 => DType::F16,
        Precision::F32 => DType::F32,
    };
    let mut store = SafetensorsStore::from_file(path).overwrite(true).with_to_adapter(FloatCastAdapter::to(dtype));
    net.save_into(&mut store).map_err(|e| eyre!("{e}")).wrap_err_with(|| format!("cannot write {}", path.display()))
}

/// Loads weights saved by [`save_net`] into a network of `config`'s shape; every tensor must be present.
pub fn load_net(config: &PolicyConfig, path: &Path, device: &Device) -> Result<PolicyNet> {
    ensure!(path.is_file(), "checkpoint weights missing: {}", path.display());
    load_into(PolicyNet::init(config, device)?, path)
}

/// Loads weights saved by [`save_net`] into `net`, keeping its parameter ids (an EMA copy must share its model's
/// ids to follow it); every tensor must be present.
pub fn load_into(mut net: PolicyNet, path: &Path) -> Result<PolicyNet> {
    ensure!(path.is_file(), "checkpoint weights missing: {}", path.display());
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(FloatCastAdapter::to(DType::F32));
    let misfit = |detail: String| {
        let detail: String = detail.chars().take(600).collect();
        eyre!("{} does not fit the policy in policy.json: {detail}", path.display())
    };
    let result = net.load_from(&mut store).map_err(|e| misfit(e.to_string()))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        let missing: Vec<_> = result.missing.iter().take(5).map(|(p, _)| p).collect();
        return Err(misfit(format!("missing {missing:?}, errors {:?}", result.errors.iter().take(5).collect::<Vec<_>>())));
    }
    Ok(net)
}

/// A trained policy ready to act.
pub struct Policy {
    pub config: PolicyConfig,
    pub normalizer: Normalizer,
    net: PolicyNet,
    /// `trained_on.json`, when the checkpoint has one.
    pub trained_on: Option<TrainedOn>,
    local: Option<GridEncoder>,
    ddim: DdimScheduler,
    device: Device,
}

impl Policy {
    /// Loads a checkpoint folder (see the module doc).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        ensure!(dir.is_dir(), "checkpoint folder missing: {}", dir.display());
        let file = |name: &str| -> PathBuf { dir.join(name) };
        let text = std::fs::read_to_string(file(POLICY_JSON)).wrap_err_with(|| format!("cannot read {}", file(POLICY_JSON).display()))?;
        let config: PolicyConfig = serde_json::from_str(&text).wrap_err_with(|| format!("bad {}", file(POLICY_JSON).display()))?;
        config.validate().wrap_err_with(|| format!("bad {}", file(POLICY_JSON).display()))?;
        let normalizer = Normalizer::load(&file(NORMALIZER_JSON), config.state_width(), config.action_dim)?;
        let net = load_net(&config, &file(MODEL_SAFETENSORS), device)?;
        let local = if config.policy.uses_key_patches() {
            Some(GridEncoder::load(&file(LOCAL_ENCODER_DIR), config.local_split, device)?)
        } else {
            None
        };
        let ddim = ddim_for(&config)?;
        let trained_on = match std::fs::read_to_string(file(TRAINED_ON_JSON)) {
            Ok(text) => Some(serde_json::from_str(&text).wrap_err_with(|| format!("bad {}", file(TRAINED_ON_JSON).display()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).wrap_err_with(|| format!("cannot read {}", file(TRAINED_ON_JSON).display())),
        };
        Ok(Self { config, normalizer, net, trained_on, local, ddim, device: device.clone() })
    }

    /// Refuses to run on `task` a checkpoint trained on another one (checkpoints without `trained_on.json` pass).
    pub fn check_task(&self, task: &str) -> Result<()> {
        match &self.trained_on {
            Some(t) if t.task != task => Err(eyre!(
                "the checkpoint was trained on {} demonstrations ({TRAINED_ON_JSON}), not {task}: choose the {task} checkpoint",
                t.task
            )),
            _ => Ok(()),
        }
    }

    /// The frozen local features of `keypoints` in `image` (GLUE; `None` for policies without key patches).
    pub fn key_features(&self, image: &RgbImage, keypoints: &[[f32; 3]]) -> Result<Option<Vec<f32>>> {
        Ok(self.key_features_batch(&[image], &[keypoints.to_vec()])?.map(|mut f| f.remove(0)))
    }

    /// [`Policy::key_features`] of several frames (one keypoint set each) in one encoder pass.
    pub fn key_features_batch(&self, images: &[&RgbImage], keypoints: &[Vec<[f32; 3]>]) -> Result<Option<Vec<Vec<f32>>>> {
        let Some(local) = &self.local else { return Ok(None) };
        Ok(Some(key_features(local, images, keypoints, &self.device)?))
    }

    /// The condition of one observation step (`[step_dim]`), with the inference crop (centred). `frame` must carry
    /// its key features for GLUE ([`Policy::key_features`]). Errors name what is malformed.
    pub fn step_condition(&self, frame: &Frame<'_>) -> Result<Vec<f32>> {
        Ok(self.step_conditions(std::slice::from_ref(frame))?.remove(0))
    }

    /// [`Policy::step_condition`] of several frames (of one size) in one encoder pass.
    pub fn step_conditions(&self, frames: &[Frame<'_>]) -> Result<Vec<Vec<f32>>> {
        ensure!(!frames.is_empty(), "step condition: no frame");
        for (i, frame) in frames.iter().enumerate() {
            self.check_frame(frame).wrap_err_with(|| format!("frame {i} of the batch"))?;
            ensure!(
                (frame.width, frame.height) == (frames[0].width, frames[0].height),
                "frame {i} is {}x{}, the batch's first {}x{}",
                frame.width,
                frame.height,
                frames[0].width,
                frames[0].height
            );
        }
        // The camera-free diagnostics see no image (their frames may be 0x0): nothing to crop.
        let crop = if self.config.policy.uses_images() {
            Crop::centered(frames[0].width, frames[0].height, self.config.crop_ratio)
        } else {
            Crop { x: 0, y: 0, side: 0 }
        };
        let crops = vec![crop; frames.len()];
        let obs = observations(frames, &crops, &self.config, &self.normalizer, &self.device);
        let condition = self.net.condition(&obs, 1);
        let width = condition.dims()[1];
        let values: Vec<f32> = condition.into_data().try_to_vec().map_err(|e| eyre!("{e:?}"))?;
        Ok(values.chunks(width).map(<[f32]>::to_vec).collect())
    }

    fn check_frame(&self, frame: &Frame<'_>) -> Result<()> {
        ensure!(
            !self.config.policy.uses_images() || frame.image.len() == (frame.width * frame.height * 3) as usize,
            "image has {} bytes, expected [{} x {} x 3]",
            frame.image.len(),
            frame.height,
            frame.width
        );
        ensure!(
            frame.state.len() >= self.config.state_dim,
            "robot state has {} values, expected >= {}",
            frame.state.len(),
            self.config.state_dim
        );
        ensure!(frame.state.iter().all(|v| v.is_finite()), "robot state is not finite: {:?}", frame.state);
        ensure!(
            !self.config.policy.uses_key_patches() || frame.key_features.is_some(),
            "no key features (GLUE needs keypoints and Policy::key_features)"
        );
        ensure!(
            frame.object_poses.len() == self.config.n_objects,
            "object poses: expected [{}, 7] (the privileged-state policy's task objects), got [{}, 7]",
            self.config.n_objects,
            frame.object_poses.len()
        );
        if self.config.n_keypoints > 0 {
            ensure!(
                frame.keypoints.len() == self.config.n_keypoints,
                "keypoints: expected [{}, 3] (the tracked points whose coordinates the policy reads), got [{}, 3]",
                self.config.n_keypoints,
                frame.keypoints.len()
            );
            ensure!(frame.keypoints.iter().flatten().all(|v| v.is_finite()), "keypoints are not finite: {:?}", frame.keypoints);
        }
        ensure!(
            frame.object_poses.iter().flatten().all(|v| v.is_finite()),
            "object poses are not finite: {:?}",
            frame.object_poses
        );
        Ok(())
    }

    /// Samples a chunk from the global condition (`[n_obs_steps · step_dim]`, see
    /// [`super::runtime::ConditionBuffer`]) and returns the `n_action_steps` actions to execute, unnormalised
    /// `[x, y, z, qx, qy, qz, qw, gripper]`. A non-finite condition or output is an error: nothing invalid reaches
    /// a robot.
    pub fn plan(&self, condition: &[f32], rng: &mut impl rand::Rng) -> Result<Vec<[f32; 8]>> {
        Ok(self.plan_batch(&[condition], std::slice::from_mut(rng))?.remove(0))
    }

    /// [`Policy::plan`] for several conditions in one DDIM run; sample `i` draws its start noise from `rngs[i]`,
    /// so each result is the one [`Policy::plan`] gives with that generator.
    pub fn plan_batch<R: rand::Rng>(&self, conditions: &[&[f32]], rngs: &mut [R]) -> Result<Vec<Vec<[f32; 8]>>> {
        let width = self.config.unet.global_cond_dim;
        ensure!(conditions.len() == rngs.len(), "plan: {} conditions but {} generators", conditions.len(), rngs.len());
        ensure!(!conditions.is_empty(), "plan: no condition");
        let batch = conditions.len();
        let mut flat = Vec::with_capacity(batch * width);
        for (i, condition) in conditions.iter().enumerate() {
            ensure!(condition.len() == width, "condition {i} has {} values, expected [{width}]", condition.len());
            ensure!(condition.iter().all(|v| v.is_finite()), "condition {i} is not finite");
            flat.extend_from_slice(condition);
        }
        let cond = Tensor::<2>::from_data(TensorData::new(flat, [batch, width]), &self.device);
        let (horizon, dim) = (self.config.horizon, self.config.action_dim);
        let noise: Vec<f32> = rngs.iter_mut().flat_map(|rng| gaussian_values(rng, horizon * dim)).collect();
        let noise = Tensor::<3>::from_data(TensorData::new(noise, [batch, horizon, dim]), &self.device);
        let chunk = self.net.sample_conditioned(cond, &self.ddim, noise);
        let values: Vec<f32> = chunk.into_data().try_to_vec().map_err(|e| eyre!("{e:?}"))?;
        let to = self.config.n_obs_steps;
        values
            .chunks(horizon * dim)
            .map(|sample| {
                let mut actions = Vec::with_capacity(self.config.n_action_steps);
                for row in sample.chunks(dim).skip(to - 1).take(self.config.n_action_steps) {
                    let mut a = row.to_vec();
                    self.normalizer.action.denormalize(&mut a);
                    ensure!(a.iter().all(|v| v.is_finite()), "policy produced a non-finite action {a:?}");
                    actions.push(a.try_into().map_err(|_| eyre!("action width is not 8"))?);
                }
                Ok(actions)
            })
            .collect()
    }

    /// [`Policy::plan`] from the last `n_obs_steps` frames of `history` (oldest first; fewer at an episode's start
    /// are padded with the first).
    pub fn act(&self, history: &[Frame<'_>], rng: &mut impl rand::Rng) -> Result<Vec<[f32; 8]>> {
        ensure!(!history.is_empty(), "act: no observation");
        let mut buffer = ConditionBuffer::new(self.config.n_obs_steps);
        let mut condition = Vec::new();
        for (i, frame) in history.iter().enumerate() {
            condition = buffer.push(self.step_condition(frame).wrap_err_with(|| format!("act: frame {i}"))?);
        }
        self.plan(&condition, rng)
    }
}
