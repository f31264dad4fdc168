//! Parity of the Diffusion Policy U-Net and noise schedulers with their references: LeRobot 0.4.4's
//! `DiffusionConditionalUnet1d` and diffusers' `DDPMScheduler` / `DDIMScheduler`. Fixtures come from
//! `tests/fixtures/make_diffusion.py`.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use glue::diffusion::{
    BetaSchedule, DdimScheduler, DdimSchedulerConfig, DdpmScheduler, DdpmSchedulerConfig, PredictionType,
};
use glue::unet::ConditionalUnet1dConfig;
use serde::Deserialize;

mod common;
use common::{Array, Fixtures, device, max_abs_err};

/// U-Net tolerance: max abs error relative to `max(1, max |reference|)`.
const UNET_TOL: f32 = 1e-4;
/// Scheduler tolerance: max abs error.
const SCHED_TOL: f32 = 1e-5;

fn fixtures() -> Fixtures {
    Fixtures::new("diffusion")
}

#[derive(Deserialize)]
struct UnetCase {
    config: ConditionalUnet1dConfig,
    timesteps: Vec<i64>,
}

fn timestep_tensor(timesteps: &[i64]) -> Tensor<1> {
    let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    Tensor::from_data(TensorData::new(t, [timesteps.len()]), &device())
}

/// Runs the U-Net fixture `name` from `weights` (under `prefix`) and returns (max abs error, max |reference|).
fn unet_error(name: &str, weights: &str, prefix: &str) -> (f32, f32) {
    let case: UnetCase = fixtures().json(&format!("{name}.json"));
    let io = fixtures().arrays(&format!("{name}_io.safetensors"));
    let model = case.config.load_safetensors(fixtures().path(weights), prefix, &device()).unwrap();
    let out = model.forward(io["sample"].tensor(), timestep_tensor(&case.timesteps), io["global_cond"].tensor());
    let want = &io["output"];
    (max_abs_err(out, want), want.values.iter().fold(0.0, |m, v| m.max(v.abs())))
}

#[test]
fn unet_matches_lerobot() {
    // A: FiLM scale + bias, two stages, kernel 5, from a whole `DiffusionPolicy` checkpoint.
    // B: FiLM bias only, three stages, kernel 3, from the bare U-Net `state_dict`.
    for (name, weights, prefix) in
        [("unet_a", "policy_a.safetensors", "diffusion.unet."), ("unet_b", "unet_b.safetensors", "")]
    {
        let (err, scale) = unet_error(name, weights, prefix);
        println!("{name}: max abs err {err:.3e}, max |ref| {scale:.3}, relative {:.3e}", err / scale.max(1.0));
        assert!(err <= UNET_TOL * scale.max(1.0), "{name}: max abs err {err} (max |ref| {scale})");
    }
}

#[test]
fn full_size_unet_has_lerobots_parameter_count() {
    #[derive(Deserialize)]
    struct FullSize {
        config: ConditionalUnet1dConfig,
        num_params: usize,
    }
    let full: FullSize = fixtures().json("full_size.json");
    assert_eq!(full.config, ConditionalUnet1dConfig::new(7, 1031), "documented defaults");
    // Lazily initialised: counting parameters allocates nothing.
    assert_eq!(full.config.init(&device()).unwrap().num_params(), full.num_params);
}

#[test]
fn unet_wrong_shape_names_tensor_and_both_shapes() {
    #[derive(Deserialize)]
    struct Bad {
        tensor: String,
        checkpoint_shape: Vec<usize>,
        model_shape: Vec<usize>,
    }
    let case: UnetCase = fixtures().json("unet_b.json");
    let bad: Bad = fixtures().json("unet_b_bad_shape.json");
    let path = fixtures().path("unet_b_bad_shape.safetensors");
    let msg = format!("{:#}", case.config.load_safetensors(path, "", &device()).unwrap_err());
    println!("{msg}");
    for part in [bad.tensor, format!("{:?}", bad.checkpoint_shape), format!("{:?}", bad.model_shape)] {
        assert!(msg.contains(&part), "`{msg}` does not mention {part}");
    }
}

#[test]
fn unet_rejects_a_checkpoint_of_another_config() {
    let case: UnetCase = fixtures().json("unet_a.json");
    let err = case.config.load_safetensors(fixtures().path("unet_b.safetensors"), "", &device()).unwrap_err();
    assert!(format!("{err:#}").contains("diffusion_step_encoder.1.weight"), "{err:#}");
}

#[test]
fn scheduler_configs_parse_diffusers_json() {
    // diffusers' own `scheduler.config` for LeRobot's arguments is exactly our default.
    assert_eq!(fixtures().json::<DdpmSchedulerConfig>("ddpm_config.json"), DdpmSchedulerConfig::default());
    assert_eq!(fixtures().json::<DdimSchedulerConfig>("ddim_config.json"), DdimSchedulerConfig::default());
}

#[derive(Deserialize)]
struct SchedulerCases {
    add_noise_timesteps: Vec<usize>,
    ddpm_timesteps: Vec<usize>,
    ddpm10_timesteps: Vec<usize>,
    ddim_timesteps: Vec<usize>,
    ddim_variant_timesteps: Vec<usize>,
}

/// The stand-in network of the fixtures: `0.5 x + 0.05 t / 100` (noise) or `0.9 x - 0.1` (clean sample).
fn stand_in(prediction: PredictionType, sample: Tensor<3>, t: usize) -> Tensor<3> {
    match prediction {
        PredictionType::Epsilon => sample.mul_scalar(0.5).add_scalar(0.05 * t as f64 / 100.0),
        PredictionType::Sample => sample.mul_scalar(0.9).sub_scalar(0.1),
    }
}

fn linear_config() -> DdpmSchedulerConfig {
    DdpmSchedulerConfig { beta_schedule: BetaSchedule::Linear, ..Default::default() }
}

#[test]
fn ddpm_alphas_cumprod_match_diffusers() {
    let a = fixtures().arrays("schedulers.safetensors");
    for (config, key) in
        [(DdpmSchedulerConfig::default(), "alphas_cumprod_cos"), (linear_config(), "alphas_cumprod_linear")]
    {
        let ddpm = DdpmScheduler::new(config).unwrap();
        let got = ddpm.schedule().alphas_cumprod();
        assert_eq!(got.len(), a[key].values.len());
        let err = got.iter().zip(&a[key].values).map(|(g, w)| (*g as f32 - w).abs()).fold(0.0, f32::max);
        println!("{key}: max abs err {err:.3e}");
        assert!(err <= SCHED_TOL, "{key}: {err}");
    }
}

#[test]
fn ddpm_add_noise_matches_diffusers() {
    let a = fixtures().arrays("schedulers.safetensors");
    let cases: SchedulerCases = fixtures().json("schedulers.json");
    let ddpm = DdpmScheduler::new(DdpmSchedulerConfig::default()).unwrap();
    let noisy = ddpm.schedule().add_noise(a["x0"].tensor::<3>(), a["noise"].tensor(), &cases.add_noise_timesteps);
    let err = max_abs_err(noisy, &a["noisy"]);
    println!("add_noise: max abs err {err:.3e}");
    assert!(err <= SCHED_TOL, "{err}");
}

/// Runs DDPM sampling from `init` with the fixture's per-step noise, comparing every step.
fn check_ddpm_trajectory(ddpm: &DdpmScheduler, a: &BTreeMap<String, Array>, prefix: &str, timesteps: &[usize]) {
    assert_eq!(ddpm.timesteps(), timesteps, "{prefix} timesteps");
    let mut sample = a[&format!("{prefix}_init")].tensor::<3>();
    let mut worst = 0.0f32;
    for (i, &t) in ddpm.timesteps().iter().enumerate() {
        let eps = stand_in(PredictionType::Epsilon, sample.clone(), t);
        let noise = a[&format!("{prefix}_noise")].index(i).tensor();
        sample = ddpm.step(eps, t, sample, noise);
        let err = max_abs_err(sample.clone(), &a[&format!("{prefix}_samples")].index(i));
        assert!(err <= SCHED_TOL, "{prefix} step {i} (t = {t}): max abs err {err}");
        worst = worst.max(err);
    }
    println!("{prefix}: {} steps, worst max abs err {worst:.3e}", timesteps.len());
}

#[test]
fn ddpm_sampling_matches_diffusers() {
    let a = fixtures().arrays("schedulers.safetensors");
    let cases: SchedulerCases = fixtures().json("schedulers.json");
    let mut ddpm = DdpmScheduler::new(DdpmSchedulerConfig::default()).unwrap();
    check_ddpm_trajectory(&ddpm, &a, "ddpm", &cases.ddpm_timesteps);
    ddpm.set_timesteps(10).unwrap();
    check_ddpm_trajectory(&ddpm, &a, "ddpm10", &cases.ddpm10_timesteps);
}

/// Runs DDIM sampling with 10 steps from `init`, comparing every step.
fn check_ddim_trajectory(config: DdimSchedulerConfig, a: &BTreeMap<String, Array>, prefix: &str, timesteps: &[usize]) {
    let prediction = config.prediction_type;
    let mut ddim = DdimScheduler::new(config).unwrap();
    ddim.set_timesteps(10).unwrap();
    assert_eq!(ddim.timesteps(), timesteps, "{prefix} timesteps");
    let mut sample = a[&format!("{prefix}_init")].tensor::<3>();
    let mut worst = 0.0f32;
    for (i, &t) in ddim.timesteps().iter().enumerate() {
        let out = stand_in(prediction, sample.clone(), t);
        sample = ddim.step(out, t, sample);
        let err = max_abs_err(sample.clone(), &a[&format!("{prefix}_samples")].index(i));
        assert!(err <= SCHED_TOL, "{prefix} step {i} (t = {t}): max abs err {err}");
        worst = worst.max(err);
    }
    println!("{prefix}: worst max abs err {worst:.3e}");
}

#[test]
fn ddim_sampling_matches_diffusers() {
    let a = fixtures().arrays("schedulers.safetensors");
    let cases: SchedulerCases = fixtures().json("schedulers.json");
    check_ddim_trajectory(DdimSchedulerConfig::default(), &a, "ddim", &cases.ddim_timesteps);
    // Every other branch: linear betas, clean-sample prediction, no clipping, ᾱ_prev = ᾱ_0, offset 1.
    let variant = DdimSchedulerConfig {
        beta_schedule: BetaSchedule::Linear,
        prediction_type: PredictionType::Sample,
        clip_sample: false,
        set_alpha_to_one: false,
        steps_offset: 1,
        ..Default::default()
    };
    check_ddim_trajectory(variant, &a, "ddim_variant", &cases.ddim_variant_timesteps);
}
