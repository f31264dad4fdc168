//! The dense contrastive objective ([`dense_info_nce`]) and the training loop.

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::views::{Batch, make_batch, view_processor};
use super::{PretrainConfig, TrainFrame};
use crate::vit::{ClipVisionConfig, ClipVisionModel};
use eyre::ensure;

/// Rows of `[.., D]` scaled to unit L2 norm.
pub(super) fn l2_normalize<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-6);
    x / norm
}

/// Mean over patches with a positive of `-log softmax(logits)[positive]`, softmax over the last axis.
fn directed_info_nce(logits: Tensor<3>, positives: &[Vec<Option<usize>>]) -> Tensor<1> {
    let [batch, patches, _] = logits.dims();
    assert_eq!(positives.len(), batch, "one positive list per batch item");
    let device = logits.device();
    let mut index = Vec::with_capacity(batch * patches);
    let mut mask = Vec::with_capacity(batch * patches);
    for list in positives {
        assert_eq!(list.len(), patches, "one positive per patch");
        for p in list {
            index.push(p.unwrap_or(0) as i64);
            mask.push(if p.is_some() { 1.0f32 } else { 0.0 });
        }
    }
    let count = mask.iter().sum::<f32>().max(1.0);
    let index = Tensor::<3, Int>::from_data(TensorData::new(index, [batch, patches, 1]), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [batch, patches]), &device);
    let picked = log_softmax(logits, 2).gather(2, index).reshape([batch, patches]);
    (picked * mask).sum().neg().div_scalar(count)
}

/// Symmetric dense InfoNCE between patch features `fa` `[B, Pa, D]` and `fb` `[B, Pb, D]` of two views: cosine
/// similarities over `temperature`; for each patch of A with a positive (`ab[b][i]`, an index into B's patches),
/// cross-entropy against all patches of B of the same item, and the same from B to A (`ba`); the mean of both.
pub fn dense_info_nce(
    fa: Tensor<3>,
    fb: Tensor<3>,
    ab: &[Vec<Option<usize>>],
    ba: &[Vec<Option<usize>>],
    temperature: f32,
) -> Tensor<1> {
    let logits = l2_normalize(fa).matmul(l2_normalize(fb).swap_dims(1, 2)).div_scalar(temperature);
    let forward = directed_info_nce(logits.clone(), ab);
    let backward = directed_info_nce(logits.swap_dims(1, 2), ba);
    (forward + backward).div_scalar(2.0)
}

/// Patch tokens `[B, P, C]` of `last_hidden_state` (the class token dropped).
fn patch_tokens(model: &ClipVisionModel, pixels: Tensor<4>) -> Tensor<3> {
    let hidden = model.forward(pixels).last_hidden_state;
    let tokens = hidden.dims()[1];
    hidden.narrow(1, 1, tokens - 1)
}

fn batch_loss(model: &ClipVisionModel, batch: &Batch, config: &PretrainConfig, device: &Device) -> Tensor<1> {
    let n = config.encoder.image_size;
    let pixels = |values: &[f32]| Tensor::<4>::from_data(TensorData::new(values.to_vec(), [batch.size, 3, n, n]), device);
    let fa = patch_tokens(model, pixels(&batch.a));
    let fb = patch_tokens(model, pixels(&batch.b));
    dense_info_nce(fa, fb, &batch.ab, &batch.ba, config.temperature)
}

/// Learning rate at `step`: linear warm-up over the first 5% of the steps, then cosine decay to 5% of `peak`.
fn learning_rate(step: usize, steps: usize, peak: f64) -> f64 {
    let warmup = (steps / 20).max(1);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// A freshly initialised encoder of `config`'s shape on `device`, seeded.
pub fn init_encoder(config: &ClipVisionConfig, seed: u64, device: &Device) -> ClipVisionModel {
    device.seed(seed);
    ClipVisionModel::new(config, device)
}

/// The loss of a fixed, seeded batch of views (for before/after comparisons); `model` on a plain device.
pub fn fixed_batch_loss(model: &ClipVisionModel, frames: &[TrainFrame], config: &PretrainConfig, seed: u64) -> eyre::Result<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let batch = make_batch(frames, &mut rng, config, &view_processor(&config.encoder))?;
    Ok(batch_loss(model, &batch, config, &Device::flex()).into_scalar::<f32>())
}

/// Trains a freshly initialised encoder on `frames` with the dense contrastive objective; `on_step(step, loss)`
/// is called after every step. Returns the encoder on the plain CPU device and the loss of every step.
pub fn train(
    config: &PretrainConfig,
    frames: &[TrainFrame],
    mut on_step: impl FnMut(usize, f32),
) -> eyre::Result<(ClipVisionModel, Vec<f32>)> {
    ensure!(!frames.is_empty(), "pretrain: no training frames");
    ensure!(config.batch >= 1 && config.steps >= 1, "pretrain: batch and steps must be at least 1");
    ensure!(config.encoder.image_size.is_multiple_of(config.encoder.patch_size), "image_size must be a multiple of patch_size");
    let [lo, hi] = config.crop_scale;
    ensure!(0.0 < lo && lo <= hi && hi <= 1.0, "crop scale must satisfy 0 < min <= max <= 1");
    let device = Device::flex().autodiff();
    let mut model = init_encoder(&config.encoder, config.seed, &device);
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let processor = view_processor(&config.encoder);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(1);
    let mut losses = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let batch = make_batch(frames, &mut rng, config, &processor)?;
        let loss = batch_loss(&model, &batch, config, &device);
        let value = loss.clone().into_scalar::<f32>();
        ensure!(value.is_finite(), "pretrain: loss became {value} at step {step}");
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(learning_rate(step, config.steps, config.lr), model, grads);
        losses.push(value);
        on_step(step, value);
    }
    Ok((model.valid(), losses))
}
