//! Diffusion Policy's noise-prediction network `ε_θ(W, A^k, k)` (paper sec. III-C, eq. 4-5): a 1D convolutional
//! U-Net over the action chunk, FiLM-conditioned on the diffusion step `k` and the global condition `W`.
//!
//! Architecture and parameter names follow LeRobot 0.4.4's `DiffusionConditionalUnet1d`
//! (`lerobot/policies/diffusion/modeling_diffusion.py`), so its `state_dict` loads unchanged
//! ([`ConditionalUnet1dConfig::load_safetensors`]). Name mapping (PyTorch -> this module), `i` a stage index:
//!
//! | PyTorch `state_dict` key                         | here                                    |
//! |--------------------------------------------------|-----------------------------------------|
//! | `diffusion_step_encoder.{1,3}`                   | `step_encoder.{linear1,linear2}`        |
//! | `down_modules.i.{0,1}`                           | `down[i].{res1,res2}`                   |
//! | `down_modules.i.2` (absent on the last stage)    | `down[i].downsample` (Conv1d k3 s2 p1)  |
//! | `mid_modules.{0,1}`                              | `mid[0]`, `mid[1]`                      |
//! | `up_modules.i.{0,1}`                             | `up[i].{res1,res2}`                     |
//! | `up_modules.i.2`                                 | `up[i].upsample` (ConvTranspose1d k4 s2 p1) |
//! | `final_conv.0` / `final_conv.1`                  | `final_block` / `final_conv` (1x1)      |
//!
//! and inside each residual block `conv1.block.{0,1}`, `cond_encoder.1`, `conv2.block.{0,1}`, `residual_conv`
//! (`blocks.rs`); the per-layer rules (Linear transposed, GroupNorm `weight`/`bias` -> `gamma`/`beta`) are in
//! `weights.rs`.
//!
//! burn 0.22 tensors carry their backend in their `Device`, so there is no backend type parameter: the same
//! model runs on `Device::flex()` (CPU) or `Device::wgpu(..)`.

mod blocks;
mod weights;

use std::path::Path;

use burn::module::Module;
use burn::nn::PaddingConfig1d;
use burn::nn::conv::{Conv1d, Conv1dConfig, ConvTranspose1d, ConvTranspose1dConfig};
use burn::tensor::activation::mish;
use burn::tensor::{Device, Tensor};
use eyre::{Result, WrapErr, ensure};
use serde::{Deserialize, Serialize};

use blocks::{BlockSettings, ConditionalResidualBlock1d, Conv1dBlock, StepEncoder};
use weights::StateDict;

/// LeRobot's `DiffusionConv1dBlock` default group count, which `final_conv` keeps whatever `n_groups` says.
const FINAL_BLOCK_GROUPS: usize = 8;

/// U-Net hyper-parameters, named as in LeRobot's `DiffusionConfig`. [`ConditionalUnet1dConfig::new`] gives the
/// full-size defaults of Diffusion Policy (and GLUE): `down_dims` [256, 512, 1024], `kernel_size` 5, `n_groups` 8,
/// `diffusion_step_embed_dim` 128, FiLM scale modulation on. (LeRobot's own `DiffusionConfig` defaults to
/// `down_dims` (512, 1024, 2048); a checkpoint's `config.json` says which it was trained with.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionalUnet1dConfig {
    /// Action dimension `D` of the chunk `[B, T, D]`.
    pub action_dim: usize,
    /// Width of the global condition `W` (LeRobot: per-step feature width x `n_obs_steps`).
    pub global_cond_dim: usize,
    /// Channels of each U-Net stage; the chunk is halved in time between consecutive stages.
    pub down_dims: Vec<usize>,
    /// Convolution kernel size of the residual blocks.
    pub kernel_size: usize,
    /// GroupNorm groups in the residual blocks.
    pub n_groups: usize,
    /// Width of the diffusion-step embedding.
    pub diffusion_step_embed_dim: usize,
    /// FiLM predicts a per-channel scale as well as a bias.
    pub use_film_scale_modulation: bool,
}

impl ConditionalUnet1dConfig {
    /// Full-size Diffusion Policy U-Net for the given action and condition widths.
    pub fn new(action_dim: usize, global_cond_dim: usize) -> Self {
        Self {
            action_dim,
            global_cond_dim,
            down_dims: vec![256, 512, 1024],
            kernel_size: 5,
            n_groups: 8,
            diffusion_step_embed_dim: 128,
            use_film_scale_modulation: true,
        }
    }

    /// The factor the horizon `T` must be a multiple of (one halving per stage transition).
    pub fn horizon_multiple(&self) -> usize {
        1 << self.down_dims.len().saturating_sub(1)
    }

    fn validate(&self) -> Result<()> {
        ensure!(!self.down_dims.is_empty(), "down_dims must not be empty");
        ensure!(self.action_dim > 0 && self.n_groups > 0, "action_dim and n_groups must be positive");
        ensure!(!self.kernel_size.is_multiple_of(2), "kernel_size must be odd, got {}", self.kernel_size);
        ensure!(
            self.diffusion_step_embed_dim >= 4 && self.diffusion_step_embed_dim.is_multiple_of(2),
            "diffusion_step_embed_dim must be even and at least 4, got {}",
            self.diffusion_step_embed_dim
        );
        for &c in &self.down_dims {
            ensure!(
                c.is_multiple_of(self.n_groups),
                "down_dims entry {c} is not a multiple of n_groups {}",
                self.n_groups
            );
        }
        let c0 = self.down_dims[0];
        ensure!(
            c0.is_multiple_of(FINAL_BLOCK_GROUPS),
            "down_dims[0] = {c0} must be a multiple of {FINAL_BLOCK_GROUPS}"
        );
        Ok(())
    }

    /// A freshly initialised U-Net (burn's default initialisers, not PyTorch's).
    pub fn init(&self, device: &Device) -> Result<ConditionalUnet1d> {
        self.validate()?;
        Ok(ConditionalUnet1d::new(self, device))
    }

    /// The U-Net with the weights of a LeRobot `DiffusionConditionalUnet1d` `state_dict` saved as safetensors.
    /// `prefix` selects the U-Net's tensors: `""` for the U-Net's own `state_dict`, `"diffusion.unet."` for a
    /// LeRobot `DiffusionPolicy` checkpoint (`model.safetensors`). Every tensor under the prefix must be used.
    pub fn load_safetensors(&self, path: impl AsRef<Path>, prefix: &str, device: &Device) -> Result<ConditionalUnet1d> {
        let path = path.as_ref();
        let mut model = self.init(device)?;
        let mut sd = StateDict::from_safetensors(path, prefix, device)?;
        model.load(&mut sd).and_then(|()| sd.finish()).wrap_err_with(|| format!("loading {}", path.display()))?;
        Ok(model)
    }
}

/// One encoder stage: two residual blocks, then a stride-2 convolution except on the last stage.
#[derive(Module, Debug)]
struct DownStage {
    res1: ConditionalResidualBlock1d,
    res2: ConditionalResidualBlock1d,
    downsample: Option<Conv1d>,
}

/// One decoder stage: two residual blocks over `[x, skip]`, then a stride-2 transposed convolution.
#[derive(Module, Debug)]
struct UpStage {
    res1: ConditionalResidualBlock1d,
    res2: ConditionalResidualBlock1d,
    upsample: ConvTranspose1d,
}

/// Diffusion Policy's `ConditionalUnet1d` (LeRobot `DiffusionConditionalUnet1d`, without local conditioning).
#[derive(Module, Debug)]
pub struct ConditionalUnet1d {
    step_encoder: StepEncoder,
    down: Vec<DownStage>,
    mid: Vec<ConditionalResidualBlock1d>,
    up: Vec<UpStage>,
    final_block: Conv1dBlock,
    final_conv: Conv1d,
    action_dim: usize,
    global_cond_dim: usize,
    horizon_multiple: usize,
}

impl ConditionalUnet1d {
    fn new(c: &ConditionalUnet1dConfig, device: &Device) -> Self {
        let s = BlockSettings {
            cond_dim: c.diffusion_step_embed_dim + c.global_cond_dim,
            kernel_size: c.kernel_size,
            n_groups: c.n_groups,
            film_scale: c.use_film_scale_modulation,
        };
        let block = |c_in, c_out| ConditionalResidualBlock1d::new(c_in, c_out, s, device);
        // Stage channel transitions: (action_dim -> d0), (d0 -> d1), ...
        let ins = std::iter::once(c.action_dim).chain(c.down_dims.iter().copied());
        let in_out: Vec<(usize, usize)> = ins.zip(c.down_dims.iter().copied()).collect();
        let down = in_out
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out))| DownStage {
                res1: block(c_in, c_out),
                res2: block(c_out, c_out),
                downsample: (i + 1 < in_out.len()).then(|| {
                    Conv1dConfig::new(c_out, c_out, 3)
                        .with_stride(2)
                        .with_padding(PaddingConfig1d::Explicit(1, 1))
                        .init(device)
                }),
            })
            .collect();
        let deepest = *c.down_dims.last().expect("validated non-empty");
        let up = in_out[1..]
            .iter()
            .rev()
            .map(|&(c_out, c_in)| UpStage {
                res1: block(2 * c_in, c_out),
                res2: block(c_out, c_out),
                upsample: ConvTranspose1dConfig::new([c_out, c_out], 4).with_stride(2).with_padding(1).init(device),
            })
            .collect();
        let d0 = c.down_dims[0];
        Self {
            step_encoder: StepEncoder::new(c.diffusion_step_embed_dim, device),
            down,
            mid: vec![block(deepest, deepest), block(deepest, deepest)],
            up,
            final_block: Conv1dBlock::new(d0, d0, c.kernel_size, FINAL_BLOCK_GROUPS, device),
            final_conv: Conv1dConfig::new(d0, c.action_dim, 1).init(device),
            action_dim: c.action_dim,
            global_cond_dim: c.global_cond_dim,
            horizon_multiple: c.horizon_multiple(),
        }
    }

    /// Takes every parameter from `sd` by LeRobot's names (table in the module docs).
    fn load(&mut self, sd: &mut StateDict) -> Result<()> {
        self.step_encoder.load(sd, "diffusion_step_encoder")?;
        for (i, stage) in self.down.iter_mut().enumerate() {
            stage.res1.load(sd, &format!("down_modules.{i}.0"))?;
            stage.res2.load(sd, &format!("down_modules.{i}.1"))?;
            if let Some(conv) = &mut stage.downsample {
                sd.conv1d(&format!("down_modules.{i}.2"), conv)?;
            }
        }
        for (i, block) in self.mid.iter_mut().enumerate() {
            block.load(sd, &format!("mid_modules.{i}"))?;
        }
        for (i, stage) in self.up.iter_mut().enumerate() {
            stage.res1.load(sd, &format!("up_modules.{i}.0"))?;
            stage.res2.load(sd, &format!("up_modules.{i}.1"))?;
            sd.conv_transpose1d(&format!("up_modules.{i}.2"), &mut stage.upsample)?;
        }
        self.final_block.load(sd, "final_conv.0")?;
        sd.conv1d("final_conv.1", &mut self.final_conv)
    }

    /// The U-Net for a global condition whose `n_obs_steps` per-step blocks each grow from `old_step_dim` to
    /// `new_step_dim` entries appended at the block's end (e.g. a robot state with the gripper width added to the
    /// joints). Every FiLM layer gets zero weights for the new entries, so the widened U-Net computes exactly what
    /// this one did, whatever the new entries hold, and training starts from there.
    pub fn widen_global_cond(self, n_obs_steps: usize, old_step_dim: usize, new_step_dim: usize) -> Result<Self> {
        ensure!(
            self.global_cond_dim == n_obs_steps * old_step_dim && new_step_dim >= old_step_dim,
            "cannot widen a global condition of {} entries from {n_obs_steps} x {old_step_dim} to {n_obs_steps} x {new_step_dim}",
            self.global_cond_dim
        );
        let step_embed = self.step_encoder.dim;
        let gaps: Vec<(usize, usize)> =
            (1..=n_obs_steps).map(|k| (step_embed + k * old_step_dim, new_step_dim - old_step_dim)).collect();
        let widen = |b: ConditionalResidualBlock1d| b.widen_cond(&gaps);
        Ok(Self {
            down: self
                .down
                .into_iter()
                .map(|s| DownStage { res1: widen(s.res1), res2: widen(s.res2), downsample: s.downsample })
                .collect(),
            mid: self.mid.into_iter().map(widen).collect(),
            up: self
                .up
                .into_iter()
                .map(|s| UpStage { res1: widen(s.res1), res2: widen(s.res2), upsample: s.upsample })
                .collect(),
            global_cond_dim: n_obs_steps * new_step_dim,
            ..self
        })
    }

    /// Predicts `ε_θ(W, A^k, k)` (or `A^0` for a sample-predicting model).
    ///
    /// - `sample`: noisy action chunk `A^k`, `[B, T, action_dim]`, `T` a multiple of
    ///   [`ConditionalUnet1dConfig::horizon_multiple`];
    /// - `timestep`: diffusion step `k` per batch element, `[B]` as float (an integer tensor converts with
    ///   `.float()`; LeRobot passes `long`, which PyTorch promotes to float in the embedding);
    /// - `global_cond`: `W`, `[B, global_cond_dim]`.
    ///
    /// Returns `[B, T, action_dim]`.
    ///
    /// # Panics
    /// If a shape does not match the configuration.
    pub fn forward(&self, sample: Tensor<3>, timestep: Tensor<1>, global_cond: Tensor<2>) -> Tensor<3> {
        let [batch, horizon, action_dim] = sample.dims();
        assert_eq!(action_dim, self.action_dim, "sample is [B, T, {action_dim}] but action_dim is {}", self.action_dim);
        assert_eq!(
            horizon % self.horizon_multiple,
            0,
            "horizon {horizon} is not a multiple of {}",
            self.horizon_multiple
        );
        assert_eq!(timestep.dims(), [batch], "timestep must be [B] = [{batch}]");
        assert_eq!(global_cond.dims(), [batch, self.global_cond_dim], "global_cond must be [B, global_cond_dim]");

        let mut x = sample.swap_dims(1, 2);
        let cond = mish(Tensor::cat(vec![self.step_encoder.forward(timestep), global_cond], 1));
        let mut skips = Vec::with_capacity(self.down.len());
        for stage in &self.down {
            x = stage.res1.forward(x, cond.clone());
            x = stage.res2.forward(x, cond.clone());
            skips.push(x.clone());
            if let Some(conv) = &stage.downsample {
                x = conv.forward(x);
            }
        }
        for block in &self.mid {
            x = block.forward(x, cond.clone());
        }
        for stage in &self.up {
            let skip = skips.pop().expect("one skip per down stage");
            x = Tensor::cat(vec![x, skip], 1);
            x = stage.res1.forward(x, cond.clone());
            x = stage.res2.forward(x, cond.clone());
            x = stage.upsample.forward(x);
        }
        self.final_conv.forward(self.final_block.forward(x)).swap_dims(1, 2)
    }
}
