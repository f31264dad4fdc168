//! Noise schedulers of Diffusion Policy: training-time noising (paper sec. III-C eq. 5) and the iterative
//! denoising of an action chunk (eq. 4), mirroring diffusers' `DDPMScheduler` (`schedulers/scheduling_ddpm.py`)
//! and `DDIMScheduler` (`schedulers/scheduling_ddim.py`) as LeRobot's `DiffusionModel` configures them. Config
//! fields carry diffusers' names, so a `scheduler_config.json` deserialises directly (unknown keys ignored);
//! defaults are LeRobot's `DiffusionConfig` ones (100 train steps, `squaredcos_cap_v2`, clipping to ±1, ε).
//!
//! Eq. 5 noises a clean chunk `A^0` at step `k` as `A^k = √ᾱ_k A^0 + √(1-ᾱ_k) ε` ([`NoiseSchedule::add_noise`];
//! the paper's `ᾱ_k`, `β̄` are these square roots). Eq. 4, `A^{k-1} = α_k (A^k - γ_k ε_θ + N(0, σ_k² I))`, is
//! [`DdpmScheduler::step`] with `α_k = 1/√(1-β_k)`, `γ_k = β_k/√(1-ᾱ_k)` and `σ_k² = β̃_k (1-β_k)`,
//! `β̃_k = β_k (1-ᾱ_{k-1})/(1-ᾱ_k)` (diffusers' "fixed_small" variance), computed like diffusers through the
//! clipped prediction of `A^0` (identical while clipping does not bind). [`DdimScheduler::step`] is the
//! deterministic (η = 0) DDIM update used for accelerated sampling.
//!
//! Precision: the `ᾱ_k` table holds diffusers' float32 values (see [`NoiseSchedule`]); every coefficient derived
//! from it is computed in f64 on the host and applied to the f32 tensors as a scalar.

use burn::tensor::{Device, Tensor, TensorData};
use eyre::{Result, ensure};
use serde::{Deserialize, Serialize};

/// How the betas `β_k` grow with the step (diffusers `beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `β_k` linear from `beta_start` to `beta_end`.
    #[serde(rename = "linear")]
    Linear,
    /// Cosine schedule of Nichol & Dhariwal: `ᾱ(t) = cos²((t + 0.008)/1.008 · π/2)`, `β_k ≤ 0.999`.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the network predicts (diffusers `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionType {
    /// The noise `ε` (the paper's `ε_θ`).
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The clean sample `A^0`.
    #[serde(rename = "sample")]
    Sample,
}

/// Placement of the inference timesteps (diffusers `timestep_spacing`); only diffusers' default is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepSpacing {
    /// `k_i = i · (N / n) + steps_offset`, `i = n-1, ..., 0`.
    #[serde(rename = "leading")]
    Leading,
}

/// DDPM posterior variance (diffusers `variance_type`); only diffusers' default is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VarianceType {
    /// `β̃_k = β_k (1-ᾱ_{k-1})/(1-ᾱ_k)`, clamped below at 1e-20.
    #[serde(rename = "fixed_small")]
    FixedSmall,
}

/// diffusers `DDPMScheduler` configuration (LeRobot's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdpmSchedulerConfig {
    /// Number of diffusion steps `N` used in training.
    pub num_train_timesteps: usize,
    /// First beta of the linear schedule.
    pub beta_start: f64,
    /// Last beta of the linear schedule.
    pub beta_end: f64,
    /// The beta schedule.
    pub beta_schedule: BetaSchedule,
    /// Posterior variance of the sampling step.
    pub variance_type: VarianceType,
    /// Clip the predicted `A^0` to `±clip_sample_range` in each step.
    pub clip_sample: bool,
    /// Clipping bound.
    pub clip_sample_range: f64,
    /// What the network predicts.
    pub prediction_type: PredictionType,
    /// Timestep placement for [`DdpmScheduler::set_timesteps`].
    pub timestep_spacing: TimestepSpacing,
    /// Added to every inference timestep.
    pub steps_offset: usize,
}

impl Default for DdpmSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 100,
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

/// diffusers `DDIMScheduler` configuration (LeRobot's defaults; η = 0 is fixed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdimSchedulerConfig {
    /// Number of diffusion steps `N` used in training.
    pub num_train_timesteps: usize,
    /// First beta of the linear schedule.
    pub beta_start: f64,
    /// Last beta of the linear schedule.
    pub beta_end: f64,
    /// The beta schedule.
    pub beta_schedule: BetaSchedule,
    /// Clip the predicted `A^0` to `±clip_sample_range` in each step.
    pub clip_sample: bool,
    /// Clipping bound.
    pub clip_sample_range: f64,
    /// `ᾱ` before the first step is 1 (else `ᾱ_0`).
    pub set_alpha_to_one: bool,
    /// What the network predicts.
    pub prediction_type: PredictionType,
    /// Timestep placement for [`DdimScheduler::set_timesteps`].
    pub timestep_spacing: TimestepSpacing,
    /// Added to every inference timestep.
    pub steps_offset: usize,
}

impl Default for DdimSchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 100,
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

/// The cumulative products `ᾱ_k = Π_{j≤k} (1 - β_j)`, `k < N`, shared by both schedulers, rounded to f32 like
/// diffusers' `alphas_cumprod`.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// diffusers keeps `β_k`, `1 - β_k` and `ᾱ_k` in float32 buffers (torch accumulates the product in f64 and
    /// rounds each `ᾱ_k`); the table is rounded the same way, so its noise levels are exactly the ones a
    /// diffusers-trained checkpoint saw. Near `ᾱ = 1` the coefficients depend on `1 - ᾱ_k`, where the rounding of
    /// `ᾱ_k` is visible (~1e-4 relative at `k = 1` of the linear schedule).
    fn new(n: usize, beta_start: f64, beta_end: f64, schedule: BetaSchedule) -> Result<Self> {
        ensure!(n > 0, "num_train_timesteps must be positive");
        let betas: Vec<f32> = match schedule {
            BetaSchedule::Linear => linspace_f32(beta_start as f32, beta_end as f32, n),
            BetaSchedule::SquaredcosCapV2 => {
                let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                let beta = |i: usize| 1.0 - alpha_bar((i + 1) as f64 / n as f64) / alpha_bar(i as f64 / n as f64);
                (0..n).map(|i| beta(i).min(0.999) as f32).collect()
            }
        };
        let alphas_cumprod = betas
            .iter()
            .scan(1.0f64, |acc, &beta| {
                *acc *= f64::from(1.0 - beta);
                Some(f64::from(*acc as f32))
            })
            .collect();
        Ok(Self { alphas_cumprod })
    }

    /// `ᾱ_k` for `k = 0..N`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// Eq. 5's noising: `√ᾱ_k x0 + √(1-ᾱ_k) noise` with one step `k = timesteps[b]` per batch element `b`
    /// (axis 0). `original` and `noise` share any shape `[B, ...]`.
    ///
    /// # Panics
    /// If `timesteps.len() != B` or a step is `>= N`.
    pub fn add_noise<const D: usize>(&self, original: Tensor<D>, noise: Tensor<D>, timesteps: &[usize]) -> Tensor<D> {
        let device = original.device();
        assert_eq!(original.dims()[0], timesteps.len(), "one timestep per batch element");
        let a: Vec<f64> = timesteps.iter().map(|&t| self.alpha_cumprod(t)).collect();
        let signal = per_batch::<D>(a.iter().map(|a| a.sqrt()), &device);
        let noise_scale = per_batch::<D>(a.iter().map(|a| (1.0 - a).sqrt()), &device);
        original * signal + noise * noise_scale
    }

    fn alpha_cumprod(&self, t: usize) -> f64 {
        let n = self.alphas_cumprod.len();
        assert!(t < n, "timestep {t} out of range for {n} train timesteps");
        self.alphas_cumprod[t]
    }

    /// `ᾱ` at the previous step `prev`, or `first` when there is none.
    fn alpha_cumprod_prev(&self, prev: Option<usize>, first: f64) -> f64 {
        prev.map_or(first, |p| self.alpha_cumprod(p))
    }
}

/// `torch.linspace(start, end, n, dtype=float32)`: f32 steps from both ends towards the middle.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    (0..n).map(|i| if i < n / 2 { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 }).collect()
}

/// A `[B, 1, ..., 1]` tensor of per-batch scalars.
fn per_batch<const D: usize>(values: impl Iterator<Item = f64>, device: &Device) -> Tensor<D> {
    let values: Vec<f32> = values.map(|v| v as f32).collect();
    let mut shape = [1; D];
    shape[0] = values.len();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// diffusers' "leading" inference timesteps, descending: `i · (N / n) + offset`.
fn leading_timesteps(num_train: usize, n: usize, offset: usize) -> Result<Vec<usize>> {
    ensure!(n >= 1 && n <= num_train, "num_inference_steps must be in 1..={num_train}, got {n}");
    let ratio = num_train / n;
    let timesteps: Vec<usize> = (0..n).rev().map(|i| i * ratio + offset).collect();
    ensure!(timesteps[0] < num_train, "steps_offset {offset} pushes timestep {} past {num_train}", timesteps[0]);
    Ok(timesteps)
}

/// The predicted clean sample `A^0` and noise `ε` from a model output at `ᾱ_t = a_t`, `A^0` clipped if asked
/// (the noise is derived from the unclipped `A^0`, as in diffusers).
fn predict<const D: usize>(
    prediction: PredictionType,
    clip: Option<f64>,
    model_output: Tensor<D>,
    sample: Tensor<D>,
    a_t: f64,
) -> (Tensor<D>, Tensor<D>) {
    let (x0, eps) = match prediction {
        PredictionType::Epsilon => {
            let x0 = (sample - model_output.clone().mul_scalar((1.0 - a_t).sqrt())).div_scalar(a_t.sqrt());
            (x0, model_output)
        }
        PredictionType::Sample => {
            let eps = (sample - model_output.clone().mul_scalar(a_t.sqrt())).div_scalar((1.0 - a_t).sqrt());
            (model_output, eps)
        }
    };
    let x0 = match clip {
        Some(r) => x0.clamp(-r, r),
        None => x0,
    };
    (x0, eps)
}

/// diffusers `DDPMScheduler`: ancestral sampling (eq. 4) with "fixed_small" variance.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    config: DdpmSchedulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
}

impl DdpmScheduler {
    /// The scheduler with every train step `N-1, ..., 0` as inference timestep (diffusers' initial state; LeRobot
    /// samples DDPM with all of them).
    pub fn new(config: DdpmSchedulerConfig) -> Result<Self> {
        ensure!(config.clip_sample_range > 0.0, "clip_sample_range must be positive");
        let schedule =
            NoiseSchedule::new(config.num_train_timesteps, config.beta_start, config.beta_end, config.beta_schedule)?;
        let timesteps = (0..config.num_train_timesteps).rev().collect();
        Ok(Self { config, schedule, timesteps })
    }

    /// The configuration.
    pub fn config(&self) -> &DdpmSchedulerConfig {
        &self.config
    }

    /// `ᾱ_k` and eq. 5's [`NoiseSchedule::add_noise`].
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Samples with `n` steps placed by [`TimestepSpacing::Leading`].
    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.timesteps = leading_timesteps(self.config.num_train_timesteps, n, self.config.steps_offset)?;
        Ok(())
    }

    /// The inference timesteps, descending.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// One step of eq. 4 from inference timestep `t` to the next one in [`DdpmScheduler::timesteps`] (`ᾱ = 1`
    /// after the last): the posterior mean from the (clipped) predicted `A^0` plus `√β̃_t · noise` when `t > 0`
    /// (`noise` ~ N(0, I), same shape as `sample`, ignored at `t = 0`).
    ///
    /// # Panics
    /// If `timestep` is not one of the inference timesteps.
    pub fn step<const D: usize>(
        &self,
        model_output: Tensor<D>,
        timestep: usize,
        sample: Tensor<D>,
        noise: Tensor<D>,
    ) -> Tensor<D> {
        let index = self.timesteps.iter().position(|&t| t == timestep);
        let index = index.unwrap_or_else(|| panic!("timestep {timestep} is not an inference timestep"));
        let a_t = self.schedule.alpha_cumprod(timestep);
        let a_prev = self.schedule.alpha_cumprod_prev(self.timesteps.get(index + 1).copied(), 1.0);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let alpha = a_t / a_prev;
        let beta = 1.0 - alpha;
        let clip = self.config.clip_sample.then_some(self.config.clip_sample_range);
        let (x0, _) = predict(self.config.prediction_type, clip, model_output, sample.clone(), a_t);
        let mean = x0.mul_scalar(a_prev.sqrt() * beta / b_t) + sample.mul_scalar(alpha.sqrt() * b_prev / b_t);
        if timestep > 0 {
            let variance = (b_prev / b_t * beta).max(1e-20);
            mean + noise.mul_scalar(variance.sqrt())
        } else {
            mean
        }
    }
}

/// diffusers `DDIMScheduler` with η = 0: deterministic accelerated sampling.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimSchedulerConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f64,
    timesteps: Vec<usize>,
    step_ratio: usize,
}

impl DdimScheduler {
    /// The scheduler with every train step `N-1, ..., 0` as inference timestep until
    /// [`DdimScheduler::set_timesteps`] (diffusers refuses to step before that).
    pub fn new(config: DdimSchedulerConfig) -> Result<Self> {
        ensure!(config.clip_sample_range > 0.0, "clip_sample_range must be positive");
        let schedule =
            NoiseSchedule::new(config.num_train_timesteps, config.beta_start, config.beta_end, config.beta_schedule)?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { schedule.alphas_cumprod[0] };
        let timesteps = (0..config.num_train_timesteps).rev().collect();
        Ok(Self { config, schedule, final_alpha_cumprod, timesteps, step_ratio: 1 })
    }

    /// The configuration.
    pub fn config(&self) -> &DdimSchedulerConfig {
        &self.config
    }

    /// `ᾱ_k` and eq. 5's [`NoiseSchedule::add_noise`].
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Samples with `n` steps placed by [`TimestepSpacing::Leading`] (e.g. 10 of 100).
    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.timesteps = leading_timesteps(self.config.num_train_timesteps, n, self.config.steps_offset)?;
        self.step_ratio = self.config.num_train_timesteps / n;
        Ok(())
    }

    /// The inference timesteps, descending.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// One DDIM step `A^t -> A^{t-Δ}` (`Δ = N / n`; `ᾱ_{t-Δ}` is `final_alpha_cumprod` below step 0), η = 0:
    /// `√ᾱ_{t-Δ} Â^0 + √(1-ᾱ_{t-Δ}) ε̂`.
    ///
    /// # Panics
    /// If `timestep >= N`.
    pub fn step<const D: usize>(&self, model_output: Tensor<D>, timestep: usize, sample: Tensor<D>) -> Tensor<D> {
        let a_t = self.schedule.alpha_cumprod(timestep);
        let prev = timestep.checked_sub(self.step_ratio);
        let a_prev = self.schedule.alpha_cumprod_prev(prev, self.final_alpha_cumprod);
        let clip = self.config.clip_sample.then_some(self.config.clip_sample_range);
        let (x0, eps) = predict(self.config.prediction_type, clip, model_output, sample, a_t);
        x0.mul_scalar(a_prev.sqrt()) + eps.mul_scalar((1.0 - a_prev).sqrt())
    }
}
