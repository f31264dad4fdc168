//! A policy checkpoint folder and inference from it.
//!
//! Layout (written by `glue train` as `RUN/best/` and `RUN/last/`):
//! - `policy.json`: the [`PolicyConfig`];
//! - `normalizer.json`: the [`Normalizer`] fitted on the training data;
//! - `model.safetensors`: the [`PolicyNet`] weights (the EMA weights, which inference uses);
//! - `local_encoder/` (GLUE only): the frozen local ViT as a HF CLIP folder.

use std::path::{Path, PathBuf};

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use eyre::{Result, WrapErr, bail, ensure, eyre};
use image::RgbImage;

use super::config::PolicyConfig;
use super::normalizer::Normalizer;
use super::observation::{Crop, Frame, key_features, observations};
use super::{PolicyNet, ddim_for, gaussian};
use crate::diffusion::DdimScheduler;
use crate::vit::GridEncoder;

/// File names inside a checkpoint folder.
pub const POLICY_JSON: &str = "policy.json";
pub const NORMALIZER_JSON: &str = "normalizer.json";
pub const MODEL_SAFETENSORS: &str = "model.safetensors";
pub const LOCAL_ENCODER_DIR: &str = "local_encoder";

/// Writes the weights of `net` to `path` (safetensors).
pub fn save_net(net: &PolicyNet, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path).overwrite(true);
    net.save_into(&mut store).map_err(|e| eyre!("{e}")).wrap_err_with(|| format!("cannot write {}", path.display()))
}

/// Loads weights saved by [`save_net`] into a network of `config`'s shape; every tensor must be present.
pub fn load_net(config: &PolicyConfig, path: &Path, device: &Device) -> Result<PolicyNet> {
    ensure!(path.is_file(), "checkpoint weights missing: {}", path.display());
    let mut net = PolicyNet::init(config, device)?;
    let mut store = SafetensorsStore::from_file(path);
    let result = net.load_from(&mut store).map_err(|e| eyre!("{e}")).wrap_err_with(|| format!("cannot load {}", path.display()))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        bail!(
            "{} does not fit the policy in policy.json: missing {:?}, errors {:?}",
            path.display(),
            result.missing.iter().take(5).collect::<Vec<_>>(),
            result.errors.iter().take(5).collect::<Vec<_>>()
        );
    }
    Ok(net)
}

/// A trained policy ready to act.
pub struct Policy {
    pub config: PolicyConfig,
    pub normalizer: Normalizer,
    net: PolicyNet,
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
        let normalizer = Normalizer::load(&file(NORMALIZER_JSON), config.state_dim, config.action_dim)?;
        let net = load_net(&config, &file(MODEL_SAFETENSORS), device)?;
        let local = if config.policy.uses_key_patches() {
            Some(GridEncoder::load(&file(LOCAL_ENCODER_DIR), config.local_split, device)?)
        } else {
            None
        };
        let ddim = ddim_for(&config)?;
        Ok(Self { config, normalizer, net, local, ddim, device: device.clone() })
    }

    /// The frozen local features of `keypoints` in `image` (GLUE; `None` for policies without key patches).
    pub fn key_features(&self, image: &RgbImage, keypoints: &[[f32; 3]]) -> Result<Option<Vec<f32>>> {
        let Some(local) = &self.local else { return Ok(None) };
        let mut features = key_features(local, &[image], &[keypoints.to_vec()], &self.device)?;
        Ok(features.pop())
    }

    /// Samples an action chunk from the last `n_obs_steps` frames (oldest first; fewer at an episode's start are
    /// padded with the first, as in training) and returns the `n_action_steps` actions to execute, unnormalised
    /// `[x, y, z, qx, qy, qz, qw, gripper]`. Errors on a non-finite input or output: nothing invalid reaches a
    /// robot.
    pub fn act(&self, history: &[Frame<'_>], rng: &mut impl rand::Rng) -> Result<Vec<[f32; 8]>> {
        let to = self.config.n_obs_steps;
        ensure!(!history.is_empty(), "act: no observation");
        for (i, f) in history.iter().enumerate() {
            ensure!(
                f.image.len() == (f.width * f.height * 3) as usize,
                "act: frame {i} image has {} bytes, expected [{} x {} x 3]",
                f.image.len(),
                f.height,
                f.width
            );
            ensure!(f.state.len() >= self.config.state_dim, "act: frame {i} state has {} values, expected >= {}", f.state.len(), self.config.state_dim);
            ensure!(f.state.iter().all(|v| v.is_finite()), "act: frame {i} state is not finite: {:?}", f.state);
            ensure!(
                !self.config.policy.uses_key_patches() || f.key_features.is_some(),
                "act: frame {i} has no key features (GLUE needs keypoints and Policy::key_features)"
            );
        }
        let start = history.len().saturating_sub(to);
        let mut steps: Vec<Frame<'_>> = history[start..].to_vec();
        while steps.len() < to {
            steps.insert(0, steps[0]);
        }
        let crops: Vec<Crop> = steps.iter().map(|f| Crop::centered(f.width, f.height, self.config.crop_ratio)).collect();
        let obs = observations(&steps, &crops, self.config.image_size, self.config.fusion.grid, &self.normalizer, &self.device);
        let noise = gaussian(rng, [1, self.config.horizon, self.config.action_dim], &self.device);
        let chunk = self.net.sample(&obs, to, &self.ddim, noise);
        let values: Vec<f32> = chunk.into_data().try_to_vec().map_err(|e| eyre!("{e:?}"))?;
        let mut actions = Vec::with_capacity(self.config.n_action_steps);
        for row in values.chunks(self.config.action_dim).skip(to - 1).take(self.config.n_action_steps) {
            let mut a = row.to_vec();
            self.normalizer.action.denormalize(&mut a);
            ensure!(a.iter().all(|v| v.is_finite()), "policy produced a non-finite action {a:?}");
            actions.push(a.try_into().map_err(|_| eyre!("action width is not 8"))?);
        }
        Ok(actions)
    }
}
