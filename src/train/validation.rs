//! The held-out checks of a run: the validation loss after each epoch and, at the end, the open-loop action
//! error of DDIM samples.

use burn::tensor::Device;
use eyre::{Result, eyre};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::TrainConfig;
use super::data::Sample;
use super::dataset::Dataset;
use crate::policy::{PolicyNet, ddim_for, gaussian};

/// Mean noise-prediction loss of `net` on the validation samples, centred crops, with noise and diffusion steps
/// from a fixed seed (so epochs compare).
pub(super) fn validation_loss(
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
pub(super) fn open_loop_error(net: &PolicyNet, data: &Dataset, config: &TrainConfig, val: &[Sample], device: &Device) -> Result<(f64, f64)> {
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
