//! Visuomotor diffusion policies (paper sec. III-C): an observation encoder gives a condition per observation
//! step, the `T_o` conditions are concatenated into the global condition `W`, and Diffusion Policy's
//! ConditionalUnet1D predicts the noise of an action chunk `[T_p, 8]`: trained with DDPM's noising (eq. 5) and
//! an MSE on the noise, sampled with DDIM (eq. 4 accelerated).
//!
//! - [`config`]: [`PolicyConfig`], `full` and `small`;
//! - [`encoder`]: the [`ObservationEncoder`] trait and GLUE, GLUE-S, DP;
//! - [`observation`]: frames to encoder input (crop, resize, normalise, key patches);
//! - [`normalizer`]: min-max statistics stored with a checkpoint;
//! - [`checkpoint`]: loading a trained policy for inference;
//! - [`runtime`]: condition history, action scheduling and the last check before a command is sent.

pub mod checkpoint;
pub mod config;
pub mod encoder;
pub mod normalizer;
pub mod observation;
pub mod runtime;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use eyre::Result;

pub use checkpoint::Policy;
pub use config::{ModelSize, PolicyConfig, PolicyKind};
pub use encoder::{Encoder, ObservationEncoder, Observations};
pub use normalizer::Normalizer;

use crate::diffusion::{DdimScheduler, DdimSchedulerConfig, NoiseSchedule};
use crate::unet::ConditionalUnet1d;

/// The trainable network: observation encoder and noise-prediction U-Net.
#[derive(Module, Debug)]
pub struct PolicyNet {
    pub encoder: Encoder,
    pub unet: ConditionalUnet1d,
}

impl PolicyNet {
    /// A freshly initialised network for `config`.
    pub fn init(config: &PolicyConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(Self { encoder: Encoder::init(config, device), unet: config.unet.init(device)? })
    }

    /// The global condition `[B, T_o · step_dim]` of `B` samples whose `T_o` steps are consecutive rows of `obs`.
    pub fn condition(&self, obs: &Observations, n_obs_steps: usize) -> Tensor<2> {
        let per_step = self.encoder.encode(obs);
        let [m, width] = per_step.dims();
        assert!(m % n_obs_steps == 0, "{m} observation rows are not a multiple of n_obs_steps {n_obs_steps}");
        per_step.reshape([m / n_obs_steps, n_obs_steps * width])
    }

    /// Eq. 5's training loss: `‖ε - ε_θ(W, √ᾱ_k A^0 + √(1-ᾱ_k) ε, k)‖²`, mean over all entries.
    /// `actions` are normalised `[B, T_p, A]`, `noise` the same shape, one `timesteps[b]` per sample.
    pub fn loss(
        &self,
        obs: &Observations,
        n_obs_steps: usize,
        actions: Tensor<3>,
        noise: Tensor<3>,
        timesteps: &[usize],
        schedule: &NoiseSchedule,
    ) -> Tensor<1> {
        let cond = self.condition(obs, n_obs_steps);
        let noisy = schedule.add_noise(actions, noise.clone(), timesteps);
        let device = noisy.device();
        let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        let t = Tensor::<1>::from_data(TensorData::new(t, [timesteps.len()]), &device);
        let predicted = self.unet.forward(noisy, t, cond);
        (predicted - noise).powi_scalar(2).mean()
    }

    /// DDIM sampling from `noise` (`[B, T_p, A]`, N(0, I)): normalised actions `[B, T_p, A]`.
    pub fn sample(&self, obs: &Observations, n_obs_steps: usize, scheduler: &DdimScheduler, noise: Tensor<3>) -> Tensor<3> {
        self.sample_conditioned(self.condition(obs, n_obs_steps), scheduler, noise)
    }

    /// DDIM sampling given the global condition `[B, T_o · step_dim]`.
    pub fn sample_conditioned(&self, cond: Tensor<2>, scheduler: &DdimScheduler, noise: Tensor<3>) -> Tensor<3> {
        let device = noise.device();
        let batch = noise.dims()[0];
        let mut sample = noise;
        for &t in scheduler.timesteps() {
            let steps = Tensor::<1>::from_data(TensorData::new(vec![t as f32; batch], [batch]), &device);
            let eps = self.unet.forward(sample.clone(), steps, cond.clone());
            sample = scheduler.step(eps, t, sample);
        }
        sample
    }
}

/// The DDIM sampler matching a DDPM training schedule (same betas; `set_alpha_to_one`, `steps_offset` 0 as
/// Diffusion Policy), at `steps` inference steps.
pub fn ddim_for(config: &PolicyConfig) -> Result<DdimScheduler> {
    let ddpm = &config.noise_scheduler;
    let mut ddim = DdimScheduler::new(DdimSchedulerConfig {
        num_train_timesteps: ddpm.num_train_timesteps,
        beta_start: ddpm.beta_start,
        beta_end: ddpm.beta_end,
        beta_schedule: ddpm.beta_schedule,
        clip_sample: ddpm.clip_sample,
        clip_sample_range: ddpm.clip_sample_range,
        prediction_type: ddpm.prediction_type,
        ..DdimSchedulerConfig::default()
    })?;
    ddim.set_timesteps(config.num_inference_steps)?;
    Ok(ddim)
}

/// Standard normal noise of `shape` from `rng` (Box-Muller), so seeded runs repeat on every backend.
pub fn gaussian(rng: &mut impl rand::Rng, shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(gaussian_values(rng, shape.iter().product()), shape), device)
}

/// `n` standard normal values from `rng` (Box-Muller pairs, the last one dropped when `n` is odd).
pub fn gaussian_values(rng: &mut impl rand::Rng, n: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        values.push((r * theta.cos()) as f32);
        values.push((r * theta.sin()) as f32);
    }
    values.truncate(n);
    values
}
