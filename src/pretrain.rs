//! Self-supervised pretraining of the frozen local encoder (`glue pretrain`) and its correspondence evaluation.
//!
//! GLUE (paper sec. III-C) encodes the first frame, cut into 2x2 sub-images, with a *frozen* CLIP ViT-B/16 into
//! a 28x28 grid of patch features, and the tracked keypoints pick "key patches" from that grid. This machine
//! cannot download CLIP, so for the `small` CPU configuration the local encoder is trained here, on simulator
//! frames and without labels, and saved in the Hugging Face CLIP layout, so that [`ClipVisionModel::load`] (and
//! `transformers.CLIPVisionModel.from_pretrained`) read it exactly like a downloaded CLIP folder.
//!
//! # Data
//! The scripted experts are run in the simulator over the three tasks and the four OOD variants (`none` and, at
//! strength 0.5, `clutter`, `occlusion`, `lighting`), `episodes` episodes each with seeds `0..episodes`; every
//! `frame_stride`-th 224x224 frame is kept in memory as rgb8 (about 150 KB each). The correspondence evaluation
//! uses held-out episodes with seeds from [`EVAL_SEED_START`].
//!
//! # Objective: dense patch contrast with known correspondence
//! Each sample is one frame seen through two views: random square crops (side uniform in `crop_scale` of the
//! frame side, view B's centre within `max_shift` crop sides of view A's) resized to the encoder input (56 px,
//! bicubic, by the same [`ImageProcessor`] the evaluation uses), each with its own colour jitter: global
//! exposure 0.6-1.4, per-channel gain 0.8-1.2 (a tinted light), contrast 0.7-1.3 about the view mean and an
//! offset of +-0.08. Because both crops come from the same frame, the geometry is known: for each patch of view
//! A whose centre falls inside view B, the positive is the patch of view B covering that frame location. The loss
//! is InfoNCE over all 196 patches of view B (cosine similarity, temperature 0.1), averaged over the patches that
//! have a positive, and symmetrised (B to A likewise) — [`dense_info_nce`].
//!
//! Choices and reasons:
//! * **No projection head.** The loss is taken directly on the L2-normalised `last_hidden_state` patch tokens,
//!   the very features the key-patch selection reads and the correspondence evaluation compares by cosine; a
//!   head would let those features drift from what the loss shapes, and with a few hundred steps there is no
//!   over-specialisation to protect against.
//! * **Negatives from the same frame only.** The hard cases for key-patch tracking are other places of the same
//!   scene (the table texture, the other object, the arm), which is what 195 within-image negatives are.
//! * **Crop scale around one quadrant.** The evaluation (and GLUE) feeds 112 px quadrants resized to 56 px; crops
//!   of 0.35-0.7 of the frame (78-157 px) centre the training scale on that while teaching some scale
//!   invariance, and views of different size and offset make position embeddings useless as a shortcut.
//! * **Colour jitter** for the `lighting` variant's party lights, which tint and dim the scene over time.
//! * **Relit pairs** (`--relit-pairs`, off by default, not in the shipped checkpoint): for frames of the
//!   `lighting` variant, view B is cut from the same tick rendered under the default studio light
//!   ([`Sim::render_default_lighting`]), so the positives also differ by the simulator's own coloured, moving
//!   lights (shading, highlights, tinted shadows), which a global colour jitter cannot imitate. It uses the
//!   simulator's privilege only to make views of one scene under two lights, the multi-illumination pairs a real
//!   data set would need a controlled light for; the evaluation's lighting episodes are held out as before.
//! * **Size.** One step of batch 16 is two forward/backward passes of 16 images of 197 tokens through a 4-layer
//!   width-96 ViT; AdamW (lr 1e-3, weight decay 0.05, 5% warm-up then cosine to 5%, gradient norm clipped at 1)
//!   makes visible progress in a few hundred such steps, which fit the few-minutes budget on 2 CPU cores.
//!
//! # Checkpoint
//! `OUT/config.json` (`CLIPVisionConfig`, `model_type` `clip_vision_model`), `OUT/model.safetensors` (HF tensor
//! names `vision_model.…`, Linear weights `[out, in]`, metadata `format: pt` as `transformers` requires) and
//! `OUT/preprocessor_config.json` (`CLIPImageProcessor`: shortest edge 56, centre crop 56, bicubic, OpenAI CLIP
//! mean/std — the training views are normalised with the same constants, so the checkpoint is used exactly like
//! CLIP's). The training settings and loss curve go to `OUT/pretrain.json`.
//!
//! # Correspondence evaluation
//! On held-out episodes, for frame 0 and frame t of the same episode, each 224 frame is encoded as the local grid
//! is ([`local_grid`]: each 112x112 quadrant resized to 56 px gives 14x14 patches, stitched into 28x28 cells of
//! 8x8 px). For each oracle point visible in both frames, the cell under it in frame 0 is matched to the
//! cosine-nearest cell of frame t; the error is the distance from that cell's centre to the oracle position in
//! frame t. [`CorrespondenceReport`] gives the median error and the fraction within 16 px for the pretrained
//! encoder, the same architecture at a seeded random init, and the zero-motion guess (the query's own cell),
//! which shows how much the scene moved.
//!
//! **Lighting invariance** ([`LightingReport`]): on the held-out `lighting` episodes, each evaluation frame is
//! also rendered under the default studio light; every visible oracle point's cell in the lit frame is matched
//! into the unlit render of the same tick (the truth is the point itself, so the zero-motion guess is the floor
//! of a perfectly invariant encoder) and the cosine similarity of its cell's feature lit and unlit is taken.
//! GLUE's key patches are read from the lit frames while the policy was trained on clean ones, so this is what
//! the policy's lighting drop depends on (docs/results.md, "the drop is in the frozen local encoder's key
//! patches"). `OUT/correspondence.png` shows a few pairs, one per row: frame 0 with the
//! queries (cyan), then frame t with the pretrained encoder's matches and with the random encoder's (green within
//! 16 px of the truth, red beyond; the true positions are white rings).
//!
//! # Measured (defaults: 300 steps of batch 16, seed 0; 2-core shared CPU, release build)
//! 180 training frames rendered in 4 s, training 267 s (about 0.9 s a step), loss 4.66 -> 3.11 (first/last 10%
//! of the steps; ln 196 = 5.28 is chance). Correspondence on 24 held-out episodes (96 pairs):
//!
//! | matcher | all 663 points: median / within 16 px | 45 points that moved > 16 px: median / within 16 px |
//! |---|---|---|
//! | pretrained | 3.4 px / 87.9% | 42.9 px / 22.2% |
//! | random init (seed 1) | 3.7 px / 75.0% | 68.0 px / 13.3% |
//! | zero motion | 3.3 px / 93.2% | 55.8 px / 0.0% |
//!
//! Most oracle points barely move within these short expert episodes, so the median is at the grid's
//! quantisation floor for every matcher and zero motion is a strong guess; the pretrained encoder's gain shows in
//! the within-16-px fraction and on the moved points, where it is the only matcher better than zero motion.
//!
//! A later rerun of this evaluation (`--evaluate-only`, with the episodes rendered by the simulator as it is now)
//! and the lighting invariance of the shipped encoder and of a `--relit-pairs` one are in the README ("The small
//! local encoder").
//!
//! The saved folder loads in `transformers` 4.56.2 (`CLIPVisionModel.from_pretrained`, no missing or unexpected
//! keys); on a 112 px quadrant of a held-out frame (both sides preprocessing with their own `CLIPImageProcessor`)
//! its `last_hidden_state` matches `glue features` to a max abs difference of 3.9e-6 (pooler 1.1e-6).

use std::path::Path;
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use eyre::{WrapErr, ensure, eyre};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::collect::run_expert;
use crate::sim::ood::{Condition, Variant};
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, Sim, SimConfig};
use crate::vit::{ClipVisionConfig, ClipVisionModel, GridEncoder, ImageProcessor, Resize};
use crate::viz::{PointStyle, draw_points};

/// First seed of the held-out evaluation episodes (training episodes use seeds `0..episodes`).
pub const EVAL_SEED_START: u64 = 1_000_000;

/// Where the repository ships the `small` configuration's local encoder (the default of `glue pretrain --out` and
/// of every command and node that needs the encoder).
pub const SMALL_LOCAL_ENCODER: &str = "checkpoints/local-vit-small";

/// A match within this many pixels of the truth counts as correct.
pub const WITHIN_PX: f32 = 16.0;

/// Frames `t` of the evaluation pairs (frame 0, frame t) as fractions of the episode (1 = its last frame). The
/// expert episodes are short (about 23 ticks for push-button, 54 for the others), and the objects move late.
pub const EVAL_FRACTIONS: [f32; 4] = [0.25, 0.5, 0.75, 1.0];

/// Strength of the OOD variants in the training and evaluation episodes.
const VARIANT_STRENGTH: f32 = 0.5;

/// Settings of a pretraining run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// The encoder to train ([`ClipVisionConfig::small_local`] by default).
    pub encoder: ClipVisionConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Frames per step (each seen through two views).
    pub batch: usize,
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// InfoNCE temperature.
    pub temperature: f32,
    /// Seed of the initialisation and of the view sampling.
    pub seed: u64,
    /// Training episodes per task and variant (seeds `0..episodes`).
    pub episodes: u64,
    /// Keep every `frame_stride`-th frame of an episode.
    pub frame_stride: u32,
    /// Crop side as a fraction of the frame side, `[min, max]`.
    pub crop_scale: [f32; 2],
    /// Largest offset of view B's centre from view A's, in view A crop sides.
    pub max_shift: f32,
    /// Cut view B of the `lighting` variant's frames from the same tick under the default studio light.
    #[serde(default)]
    pub relit_pairs: bool,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            encoder: ClipVisionConfig::small_local(),
            steps: 300,
            batch: 16,
            lr: 1e-3,
            weight_decay: 0.05,
            temperature: 0.1,
            seed: 0,
            episodes: 2,
            frame_stride: 6,
            crop_scale: [0.35, 0.7],
            max_shift: 0.4,
            relit_pairs: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Data

/// The condition of `variant` in the training and evaluation episodes.
fn condition(variant: Variant) -> Condition {
    match variant {
        Variant::None => Condition::IN_DOMAIN,
        _ => Condition::new(variant, VARIANT_STRENGTH).expect("strength 0.5 is in range"),
    }
}

fn frame_image(frame: &crate::sim::render::Frame) -> eyre::Result<RgbImage> {
    RgbImage::from_raw(frame.width, frame.height, frame.rgb.clone()).ok_or_else(|| eyre!("bad frame buffer"))
}

/// The tick `sim` shows now under the default studio light, for the frames of the `lighting` variant.
fn unlit_view(sim: &mut Sim, variant: Variant) -> eyre::Result<Option<RgbImage>> {
    (variant == Variant::Lighting).then(|| frame_image(&sim.render_default_lighting())).transpose()
}

/// One training frame; with [`PretrainConfig::relit_pairs`], a frame of the `lighting` variant also carries the
/// same tick under the default studio light, from which view B is cut.
#[derive(Clone, Debug)]
pub struct TrainFrame {
    pub image: RgbImage,
    pub unlit: Option<RgbImage>,
}

/// Renders the training frames: the scripted expert over every task and variant, `episodes` episodes each
/// (seeds `0..episodes`), keeping every `stride`-th 224x224 frame (with its unlit render when `relit_pairs`).
pub fn render_frames(episodes: u64, stride: u32, relit_pairs: bool) -> eyre::Result<Vec<TrainFrame>> {
    ensure!(stride >= 1, "frame stride must be at least 1");
    ensure!(episodes <= EVAL_SEED_START, "training seeds would reach the held-out evaluation seeds");
    let config = SimConfig::default();
    let mut frames = Vec::new();
    for task in TaskKind::ALL {
        for variant in Variant::ALL {
            for seed in 0..episodes {
                let spec = EpisodeSpec { task, seed, condition: condition(variant) };
                run_expert(&config, spec, |sim, obs, _| {
                    if obs.frame.is_multiple_of(stride) {
                        let unlit = if relit_pairs { unlit_view(sim, variant)? } else { None };
                        frames.push(TrainFrame { image: frame_image(&obs.image)?, unlit });
                    }
                    Ok(())
                })?;
            }
        }
    }
    Ok(frames)
}

/// One held-out episode's frame 0 and frames at [`EVAL_FRACTIONS`], with the oracle tracks `[x, y, visible]`.
#[derive(Clone, Debug)]
pub struct EvalEpisode {
    pub task: TaskKind,
    pub variant: Variant,
    pub seed: u64,
    /// `(t, image, oracle points)`; the first entry is frame 0.
    pub frames: Vec<(u32, RgbImage, Vec<[f32; 3]>)>,
    /// For the `lighting` variant, each of `frames` rendered under the default studio light; empty otherwise.
    pub unlit: Vec<RgbImage>,
}

/// Renders `episodes` held-out episodes per task and variant (seeds from [`EVAL_SEED_START`]).
pub fn eval_episodes(episodes: u64, fractions: &[f32]) -> eyre::Result<Vec<EvalEpisode>> {
    let config = SimConfig::default();
    let mut out = Vec::new();
    for task in TaskKind::ALL {
        for variant in Variant::ALL {
            for i in 0..episodes {
                let seed = EVAL_SEED_START + i;
                let (mut all, mut unlit_all) = (Vec::new(), Vec::new());
                let spec = EpisodeSpec { task, seed, condition: condition(variant) };
                run_expert(&config, spec, |sim, obs, _| {
                    all.push((obs.frame, frame_image(&obs.image)?, obs.oracle_tracks.points.clone()));
                    unlit_all.extend(unlit_view(sim, variant)?);
                    Ok(())
                })?;
                let last = all.len().saturating_sub(1) as f32;
                let mut keep: Vec<usize> = fractions.iter().map(|f| (f.clamp(0.0, 1.0) * last).round() as usize).collect();
                keep.insert(0, 0);
                keep.dedup();
                let frames = keep.iter().filter_map(|&i| all.get(i).cloned()).collect();
                let unlit = keep.iter().filter_map(|&i| unlit_all.get(i).cloned()).collect();
                out.push(EvalEpisode { task, variant, seed, frames, unlit });
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Views and correspondence

/// A square crop of a frame, in frame pixels, resized to the encoder input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub x: u32,
    pub y: u32,
    pub side: u32,
}

impl View {
    /// Frame position of the centre of patch `index` (row-major) of a `grid x grid` patching of this view.
    pub fn patch_centre(&self, index: usize, grid: usize) -> (f32, f32) {
        let step = self.side as f32 / grid as f32;
        let (row, col) = (index / grid, index % grid);
        (self.x as f32 + (col as f32 + 0.5) * step, self.y as f32 + (row as f32 + 0.5) * step)
    }

    /// The patch of a `grid x grid` patching of this view that covers frame position `(x, y)`, if any.
    pub fn patch_at(&self, x: f32, y: f32, grid: usize) -> Option<usize> {
        let u = (x - self.x as f32) / self.side as f32 * grid as f32;
        let v = (y - self.y as f32) / self.side as f32 * grid as f32;
        let inside = (0.0..grid as f32).contains(&u) && (0.0..grid as f32).contains(&v);
        inside.then(|| v as usize * grid + u as usize)
    }
}

/// For each patch of view `a`, the patch of view `b` covering its centre (`grid x grid` patches per view).
pub fn correspondence(a: &View, b: &View, grid: usize) -> Vec<Option<usize>> {
    (0..grid * grid)
        .map(|i| {
            let (x, y) = a.patch_centre(i, grid);
            b.patch_at(x, y, grid)
        })
        .collect()
}

/// Two overlapping views of a `frame_side` frame.
fn sample_views(rng: &mut ChaCha8Rng, frame_side: u32, config: &PretrainConfig) -> (View, View) {
    let [lo, hi] = config.crop_scale;
    let mut side = || ((rng.random_range(lo..=hi) * frame_side as f32).round() as u32).clamp(8, frame_side);
    let (side_a, side_b) = (side(), side());
    let x_a = rng.random_range(0..=frame_side - side_a);
    let y_a = rng.random_range(0..=frame_side - side_a);
    let mut place = |start_a: u32| {
        let centre = start_a as f32 + side_a as f32 / 2.0;
        let shift = rng.random_range(-config.max_shift..=config.max_shift) * side_a as f32;
        (centre + shift - side_b as f32 / 2.0).round().clamp(0.0, (frame_side - side_b) as f32) as u32
    };
    let (x_b, y_b) = (place(x_a), place(y_a));
    (View { x: x_a, y: y_a, side: side_a }, View { x: x_b, y: y_b, side: side_b })
}

/// Colour jitter of one view (values in `[0, 1]`).
#[derive(Clone, Copy, Debug)]
struct Jitter {
    gain: [f32; 3],
    contrast: f32,
    offset: f32,
}

impl Jitter {
    fn sample(rng: &mut ChaCha8Rng) -> Self {
        let exposure = rng.random_range(0.6..1.4);
        let gain = std::array::from_fn(|_| exposure * rng.random_range(0.8..1.2));
        Self { gain, contrast: rng.random_range(0.7..1.3), offset: rng.random_range(-0.08..0.08) }
    }

    fn apply(&self, image: &mut RgbImage) {
        let mut sum = 0.0f64;
        for p in image.pixels() {
            for c in 0..3 {
                sum += f64::from(p.0[c]) / 255.0 * f64::from(self.gain[c]);
            }
        }
        let mean = (sum / (3 * image.width() * image.height()).max(1) as f64) as f32;
        for p in image.pixels_mut() {
            for c in 0..3 {
                let v = f32::from(p.0[c]) / 255.0 * self.gain[c];
                let v = (v - mean) * self.contrast + mean + self.offset;
                p.0[c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// The image processor of the training views: an exact bicubic resize to the encoder input, CLIP normalisation.
fn view_processor(encoder: &ClipVisionConfig) -> ImageProcessor {
    let side = encoder.image_size as u32;
    ImageProcessor { resize: Some(Resize::Exact { height: side, width: side }), crop: None, ..ImageProcessor::default() }
}

/// Two augmented views of `batch` random frames with their patch correspondences.
struct Batch {
    size: usize,
    /// `[size, 3, n, n]` normalised pixels, flat.
    a: Vec<f32>,
    b: Vec<f32>,
    /// Positive in view B of each patch of view A, and the reverse.
    ab: Vec<Vec<Option<usize>>>,
    ba: Vec<Vec<Option<usize>>>,
}

fn crop_view(frame: &RgbImage, view: &View, jitter: &Jitter, processor: &ImageProcessor) -> eyre::Result<Vec<f32>> {
    let mut crop = image::imageops::crop_imm(frame, view.x, view.y, view.side, view.side).to_image();
    jitter.apply(&mut crop);
    processor.preprocess(&crop).try_into_vec::<f32>().map_err(|e| eyre!("{e:?}"))
}

fn make_batch(
    frames: &[TrainFrame],
    rng: &mut ChaCha8Rng,
    config: &PretrainConfig,
    processor: &ImageProcessor,
) -> eyre::Result<Batch> {
    let grid = config.encoder.grid_size();
    let mut batch = Batch { size: config.batch, a: Vec::new(), b: Vec::new(), ab: Vec::new(), ba: Vec::new() };
    for _ in 0..config.batch {
        let frame = &frames[rng.random_range(0..frames.len())];
        let (image, image_b) = (&frame.image, frame.unlit.as_ref().unwrap_or(&frame.image));
        ensure!(image.width() == image.height(), "training frames must be square");
        ensure!(image_b.dimensions() == image.dimensions(), "a training frame's unlit render must have its size");
        let (va, vb) = sample_views(rng, image.width(), config);
        let (ja, jb) = (Jitter::sample(rng), Jitter::sample(rng));
        batch.a.extend(crop_view(image, &va, &ja, processor)?);
        batch.b.extend(crop_view(image_b, &vb, &jb, processor)?);
        batch.ab.push(correspondence(&va, &vb, grid));
        batch.ba.push(correspondence(&vb, &va, grid));
    }
    Ok(batch)
}

// ---------------------------------------------------------------------------------------------------------------
// Loss and training

/// Rows of `[.., D]` scaled to unit L2 norm.
fn l2_normalize<const D: usize>(x: Tensor<D>) -> Tensor<D> {
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

// ---------------------------------------------------------------------------------------------------------------
// Checkpoint

/// `config.json` as `CLIPVisionConfig.save_pretrained` writes it (the fields we do not model at HF's defaults).
pub fn hf_config_json(config: &ClipVisionConfig) -> eyre::Result<String> {
    let mut value = serde_json::to_value(config)?;
    let object = value.as_object_mut().ok_or_else(|| eyre!("config is not a JSON object"))?;
    object.insert("architectures".into(), serde_json::json!(["CLIPVisionModel"]));
    object.insert("model_type".into(), serde_json::json!("clip_vision_model"));
    object.insert("attention_dropout".into(), serde_json::json!(0.0));
    object.insert("dropout".into(), serde_json::json!(0.0));
    object.insert("initializer_factor".into(), serde_json::json!(1.0));
    object.insert("initializer_range".into(), serde_json::json!(0.02));
    object.insert("projection_dim".into(), serde_json::json!(config.hidden_size));
    object.insert("torch_dtype".into(), serde_json::json!("float32"));
    Ok(serde_json::to_string_pretty(&value)?)
}

/// `preprocessor_config.json` of a `CLIPImageProcessor` for square inputs of `side` pixels (OpenAI CLIP mean/std).
pub fn hf_preprocessor_json(side: usize) -> eyre::Result<String> {
    let (mean, std) = ImageProcessor::default().normalize.expect("CLIP's default normalises");
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_convert_rgb": true,
        "do_resize": true,
        "size": { "shortest_edge": side },
        "resample": 3,
        "do_center_crop": true,
        "crop_size": { "height": side, "width": side },
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": mean,
        "image_std": std,
    }))?)
}

/// Writes `model` as a HF CLIP vision checkpoint folder: `config.json`, `model.safetensors` (HF names under
/// `vision_model.`, PyTorch layout), `preprocessor_config.json`.
pub fn save_checkpoint(model: &ClipVisionModel, config: &ClipVisionConfig, dir: &Path) -> eyre::Result<()> {
    std::fs::create_dir_all(dir).wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("config.json"), hf_config_json(config)? + "\n")?;
    std::fs::write(dir.join("preprocessor_config.json"), hf_preprocessor_json(config.image_size)? + "\n")?;
    let path = dir.join("model.safetensors");
    let mut store = SafetensorsStore::from_file(&path)
        .with_key_remapping(r"^(.+)$", "vision_model.$1")
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata("format", "pt")
        .overwrite(true);
    model.save_into(&mut store).map_err(|e| eyre!("{e}")).wrap_err_with(|| format!("cannot write {}", path.display()))
}

// ---------------------------------------------------------------------------------------------------------------
// Correspondence evaluation

/// The local feature grid of a square frame: its 2x2 quadrants encoded separately and stitched.
#[derive(Clone, Debug)]
pub struct LocalGrid {
    /// Cells per side (28 for 2 quadrants of 14x14 patches).
    pub side: usize,
    /// Feature width.
    pub dim: usize,
    /// Frame pixels per cell side (8 for a 224 frame).
    pub cell_px: f32,
    /// `[side * side, dim]` row-major, each row L2-normalised.
    pub features: Vec<f32>,
}

impl LocalGrid {
    /// The cell under frame position `(x, y)`, clamped to the grid.
    pub fn cell_at(&self, x: f32, y: f32) -> usize {
        let clamp = |v: f32| ((v / self.cell_px).floor().max(0.0) as usize).min(self.side - 1);
        clamp(y) * self.side + clamp(x)
    }

    /// Frame position of the centre of `cell`.
    pub fn cell_centre(&self, cell: usize) -> [f32; 2] {
        let (row, col) = (cell / self.side, cell % self.side);
        [(col as f32 + 0.5) * self.cell_px, (row as f32 + 0.5) * self.cell_px]
    }

    fn row(&self, cell: usize) -> &[f32] {
        &self.features[cell * self.dim..(cell + 1) * self.dim]
    }

    /// The cell of `self` whose feature has the highest cosine similarity with `query`.
    pub fn nearest(&self, query: &[f32]) -> usize {
        let dot = |cell: usize| self.row(cell).iter().zip(query).map(|(a, b)| a * b).sum::<f32>();
        (0..self.side * self.side).max_by(|&a, &b| dot(a).total_cmp(&dot(b))).expect("non-empty grid")
    }
}

/// The local grid of one frame (see the module doc): [`GridEncoder::encode`]'s stitched patch features, each
/// cell L2-normalised for cosine matching.
pub fn local_grid(encoder: &GridEncoder, frame: &RgbImage, device: &Device) -> eyre::Result<LocalGrid> {
    let (w, h) = frame.dimensions();
    ensure!(w == h, "local grid: expected a square frame, got {w}x{h}");
    let grid = encoder.encode(&[frame], device)?;
    let [_, side, _, dim] = grid.dims();
    let values = l2_normalize(grid.reshape([side * side, dim])).into_data().try_into_vec::<f32>().map_err(|e| eyre!("{e:?}"))?;
    Ok(LocalGrid { side, dim, cell_px: w as f32 / side as f32, features: values })
}

/// One evaluated point: where it was queried (frame 0), where it truly is in frame t, and the match.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PointMatch {
    pub query: [f32; 2],
    pub truth: [f32; 2],
    pub matched: [f32; 2],
    pub error_px: f32,
    /// Error of the zero-motion guess (the centre of the query's own cell).
    pub stay_error_px: f32,
}

/// Matches every oracle point visible in both frames from `grid0` (frame 0) into `grid_t` (frame t).
pub fn match_points(grid0: &LocalGrid, grid_t: &LocalGrid, points0: &[[f32; 3]], points_t: &[[f32; 3]]) -> Vec<PointMatch> {
    points0
        .iter()
        .zip(points_t)
        .filter(|(p, q)| p[2] >= 0.5 && q[2] >= 0.5)
        .map(|(p, q)| {
            let query_cell = grid0.cell_at(p[0], p[1]);
            let matched = grid_t.cell_centre(grid_t.nearest(grid0.row(query_cell)));
            let stay = grid0.cell_centre(query_cell);
            let error_px = (matched[0] - q[0]).hypot(matched[1] - q[1]);
            let stay_error_px = (stay[0] - q[0]).hypot(stay[1] - q[1]);
            PointMatch { query: [p[0], p[1]], truth: [q[0], q[1]], matched, error_px, stay_error_px }
        })
        .collect()
}

/// Summary of match errors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrespondenceScore {
    /// Points evaluated.
    pub points: usize,
    /// Median error in pixels.
    pub median_px: f32,
    /// Mean error in pixels.
    pub mean_px: f32,
    /// Fraction of points within [`WITHIN_PX`].
    pub within_16px: f32,
}

/// The median of `values` (NaN when empty).
fn median(values: &[f32]) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    match n {
        0 => f32::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl CorrespondenceScore {
    pub fn of(errors: &[f32]) -> Self {
        let n = errors.len();
        Self {
            points: n,
            median_px: median(errors),
            mean_px: errors.iter().sum::<f32>() / n.max(1) as f32,
            within_16px: errors.iter().filter(|&&e| e <= WITHIN_PX).count() as f32 / n.max(1) as f32,
        }
    }
}

/// The matches of one model on every (frame 0, frame t) pair of `episodes`, pair by pair (episode-major).
pub fn evaluate_matches(encoder: &GridEncoder, episodes: &[EvalEpisode], device: &Device) -> eyre::Result<Vec<Vec<PointMatch>>> {
    let mut out = Vec::new();
    for episode in episodes {
        let Some(((_, frame0, points0), rest)) = episode.frames.split_first() else { continue };
        let grid0 = local_grid(encoder, frame0, device)?;
        for (_, frame_t, points_t) in rest {
            out.push(match_points(&grid0, &local_grid(encoder, frame_t, device)?, points0, points_t));
        }
    }
    Ok(out)
}

/// Each visible oracle point of the `lighting` episodes' evaluation frames matched from the lit frame into the
/// unlit render of the same tick, with the cosine similarity of its cell's feature lit and unlit; one list per
/// frame.
pub fn evaluate_relighting(encoder: &GridEncoder, episodes: &[EvalEpisode], device: &Device) -> eyre::Result<Vec<Vec<(PointMatch, f32)>>> {
    let mut out = Vec::new();
    for episode in episodes {
        for ((_, lit, points), unlit) in episode.frames.iter().zip(&episode.unlit) {
            let (lit, unlit) = (local_grid(encoder, lit, device)?, local_grid(encoder, unlit, device)?);
            let cosine = |m: &PointMatch| {
                let cell = lit.cell_at(m.query[0], m.query[1]);
                lit.row(cell).iter().zip(unlit.row(cell)).map(|(a, b)| a * b).sum::<f32>()
            };
            out.push(match_points(&lit, &unlit, points, points).into_iter().map(|m| (m, cosine(&m))).collect());
        }
    }
    Ok(out)
}

/// Lighting invariance on the held-out `lighting` episodes (module doc): a point's cell in the lit frame matched
/// into the unlit render of the same tick.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LightingReport {
    /// Frames evaluated (each lit and unlit).
    pub frames: usize,
    /// Match errors; `zero_motion` (the point's own cell) is the floor of a perfectly invariant encoder.
    pub matches: Scores,
    /// Median cosine similarity of a point's cell feature lit and unlit.
    pub cosine_pretrained: f32,
    pub cosine_random_init: f32,
}

impl LightingReport {
    fn of(ours: &[Vec<(PointMatch, f32)>], theirs: &[Vec<(PointMatch, f32)>]) -> Self {
        let matches = |m: &[Vec<(PointMatch, f32)>]| -> Vec<Vec<PointMatch>> { m.iter().map(|f| f.iter().map(|p| p.0).collect()).collect() };
        let median_cosine = |m: &[Vec<(PointMatch, f32)>]| median(&m.iter().flatten().map(|p| p.1).collect::<Vec<_>>());
        Self {
            frames: ours.len(),
            matches: Scores::of(&matches(ours), &matches(theirs), |_| true),
            cosine_pretrained: median_cosine(ours),
            cosine_random_init: median_cosine(theirs),
        }
    }
}

/// What `glue pretrain` writes to `correspondence.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrespondenceReport {
    /// Held-out episodes (every task x variant) and (frame 0, frame t) pairs evaluated.
    pub episodes: usize,
    pub pairs: usize,
    /// Frame t of each pair as a fraction of the episode.
    pub frame_fractions: Vec<f32>,
    pub within_px: f32,
    /// Seed of the random-init encoder.
    pub random_init_seed: u64,
    /// Every point visible in both frames.
    pub all: Scores,
    /// The points that moved more than `within_px` between frame 0 and frame t (where the zero-motion guess fails).
    pub moved: Scores,
    /// Lit against unlit renders of the same ticks.
    pub lighting: LightingReport,
}

/// The three matchers on one set of points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub pretrained: CorrespondenceScore,
    /// The same architecture at a random init.
    pub random_init: CorrespondenceScore,
    /// Predicting that the point stayed in its frame-0 cell.
    pub zero_motion: CorrespondenceScore,
}

impl Scores {
    fn of(ours: &[Vec<PointMatch>], theirs: &[Vec<PointMatch>], keep: impl Fn(&PointMatch) -> bool) -> Self {
        let pick = |matches: &[Vec<PointMatch>], f: &dyn Fn(&PointMatch) -> f32| {
            let errors: Vec<f32> = matches.iter().flatten().filter(|m| keep(m)).map(f).collect();
            CorrespondenceScore::of(&errors)
        };
        Self {
            pretrained: pick(ours, &|m| m.error_px),
            random_init: pick(theirs, &|m| m.error_px),
            zero_motion: pick(ours, &|m| m.stay_error_px),
        }
    }
}

impl PointMatch {
    /// Whether the point moved more than [`WITHIN_PX`] between the two frames.
    pub fn moved(&self) -> bool {
        (self.truth[0] - self.query[0]).hypot(self.truth[1] - self.query[1]) > WITHIN_PX
    }
}

/// Matches of the pretrained and the random model with the episodes they came from, for the report and figure.
pub struct Evaluation {
    pub report: CorrespondenceReport,
    pub pretrained: Vec<Vec<PointMatch>>,
    pub random_init: Vec<Vec<PointMatch>>,
}

/// Evaluates `pretrained` against a random init of `config` (seed `random_seed`) on `episodes`.
pub fn compare(
    pretrained: &ClipVisionModel,
    config: &ClipVisionConfig,
    processor: &ImageProcessor,
    episodes: &[EvalEpisode],
    random_seed: u64,
) -> eyre::Result<Evaluation> {
    let device = Device::flex();
    let grid = |model: ClipVisionModel| GridEncoder::new(model, config.clone(), processor.clone(), 2);
    let (pretrained, random) = (grid(pretrained.clone()), grid(init_encoder(config, random_seed, &device)));
    let ours = evaluate_matches(&pretrained, episodes, &device)?;
    let theirs = evaluate_matches(&random, episodes, &device)?;
    let lighting = LightingReport::of(
        &evaluate_relighting(&pretrained, episodes, &device)?,
        &evaluate_relighting(&random, episodes, &device)?,
    );
    let report = CorrespondenceReport {
        episodes: episodes.len(),
        pairs: ours.len(),
        frame_fractions: EVAL_FRACTIONS.to_vec(),
        within_px: WITHIN_PX,
        random_init_seed: random_seed,
        all: Scores::of(&ours, &theirs, |_| true),
        moved: Scores::of(&ours, &theirs, PointMatch::moved),
        lighting,
    };
    Ok(Evaluation { report, pretrained: ours, random_init: theirs })
}

/// A figure of `rows` pairs: frame 0 with the queries, frame t with the pretrained matches, frame t with the
/// random-init matches (green within [`WITHIN_PX`], red beyond; true positions as white rings).
pub fn correspondence_figure(episodes: &[EvalEpisode], evaluation: &Evaluation, rows: usize) -> eyre::Result<RgbImage> {
    // The last pair (frame 0, last frame) of each episode, with its index in the flat pair list; the rows are
    // those with the most moved points, one per task and variant.
    let mut pairs = Vec::new();
    let mut flat = 0;
    for e in episodes {
        let n = e.frames.len().saturating_sub(1);
        if n > 0 {
            let index = flat + n - 1;
            let moved = evaluation.pretrained[index].iter().filter(|m| m.moved()).count();
            pairs.push((moved, e, index, &e.frames[n]));
        }
        flat += n;
    }
    ensure!(!pairs.is_empty(), "correspondence figure: no pairs");
    pairs.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut picked: Vec<_> = Vec::new();
    for p in &pairs {
        if picked.len() < rows && !picked.iter().any(|q: &&(usize, &EvalEpisode, usize, _)| (q.1.task, q.1.variant) == (p.1.task, p.1.variant)) {
            picked.push(p);
        }
    }
    let rows = picked.len();
    let side = episodes[0].frames[0].1.width();
    let gap = 4u32;
    let mut figure = RgbImage::from_pixel(3 * side + 2 * gap, rows as u32 * (side + gap) - gap, Rgb([255, 255, 255]));
    let query_style = PointStyle { radius: 2.5, ..PointStyle::KEYPOINTS };
    let good = PointStyle { visible: Rgb([40, 220, 60]), radius: 2.5, ..PointStyle::TRACKS };
    let bad = PointStyle { visible: Rgb([230, 30, 30]), radius: 2.5, ..PointStyle::TRACKS };
    let truth_style = PointStyle { occluded: Rgb([255, 255, 255]), radius: 4.5, ..PointStyle::TRACKS };
    for (row, (_, episode, index, (_, frame_t, _))) in picked.into_iter().enumerate() {
        let frame0 = &episode.frames[0].1;
        let y = row as u32 * (side + gap);
        let mut panel0 = frame0.clone();
        let queries: Vec<[f32; 3]> = evaluation.pretrained[*index].iter().map(|m| [m.query[0], m.query[1], 1.0]).collect();
        draw_points(&mut panel0, &queries, &query_style);
        image::imageops::replace(&mut figure, &panel0, 0, i64::from(y));
        for (column, matches) in [&evaluation.pretrained[*index], &evaluation.random_init[*index]].into_iter().enumerate() {
            let mut panel = frame_t.clone();
            let truth: Vec<[f32; 3]> = matches.iter().map(|m| [m.truth[0], m.truth[1], 0.0]).collect();
            draw_points(&mut panel, &truth, &truth_style);
            for m in matches {
                let style = if m.error_px <= WITHIN_PX { &good } else { &bad };
                draw_points(&mut panel, &[[m.matched[0], m.matched[1], 1.0]], style);
            }
            image::imageops::replace(&mut figure, &panel, i64::from((column as u32 + 1) * (side + gap)), i64::from(y));
        }
    }
    Ok(figure)
}

// ---------------------------------------------------------------------------------------------------------------
// The whole run

/// Training summary written to `pretrain.json`.
#[derive(Clone, Debug, Serialize)]
pub struct TrainingSummary {
    pub config: PretrainConfig,
    pub frames: usize,
    pub render_seconds: f64,
    pub train_seconds: f64,
    /// Mean loss over the first and the last 10% of the steps.
    pub loss_start: f32,
    pub loss_end: f32,
    /// Loss of every step.
    pub losses: Vec<f32>,
}

/// `glue pretrain`: renders the frames, trains with `on_step` progress, saves the checkpoint to `out`, evaluates
/// correspondence against a random init on `eval_episodes` held-out episodes per task and variant, and writes
/// `pretrain.json`, `correspondence.json` and `correspondence.png`.
pub fn run(
    config: &PretrainConfig,
    out: &Path,
    eval_episodes_per_setting: u64,
    on_step: impl FnMut(usize, f32),
) -> eyre::Result<(TrainingSummary, CorrespondenceReport)> {
    let started = Instant::now();
    let frames = render_frames(config.episodes, config.frame_stride, config.relit_pairs)?;
    let render_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (model, losses) = train(config, &frames, on_step)?;
    let train_seconds = started.elapsed().as_secs_f64();
    save_checkpoint(&model, &config.encoder, out)?;
    let tenth = (losses.len() / 10).max(1);
    let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len().max(1) as f32;
    let summary = TrainingSummary {
        config: config.clone(),
        frames: frames.len(),
        render_seconds,
        train_seconds,
        loss_start: mean(&losses[..tenth]),
        loss_end: mean(&losses[losses.len() - tenth..]),
        losses,
    };
    std::fs::write(out.join("pretrain.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    drop(frames);
    let report = evaluate_checkpoint(out, eval_episodes_per_setting, config.seed.wrapping_add(1))?;
    Ok((summary, report))
}

/// Evaluates the encoder saved in `dir` as a user loads it (against a random init of seed `random_seed`) on
/// `episodes_per_setting` held-out episodes per task and variant; writes `dir/correspondence.json` and
/// `dir/correspondence.png` (`glue pretrain --evaluate-only`, and the end of every run).
pub fn evaluate_checkpoint(dir: &Path, episodes_per_setting: u64, random_seed: u64) -> eyre::Result<CorrespondenceReport> {
    let device = Device::flex();
    let (model, encoder, processor) = ClipVisionModel::load(dir, &device)?;
    let episodes = eval_episodes(episodes_per_setting, &EVAL_FRACTIONS)?;
    let evaluation = compare(&model, &encoder, &processor, &episodes, random_seed)?;
    std::fs::write(dir.join("correspondence.json"), serde_json::to_string_pretty(&evaluation.report)? + "\n")?;
    crate::viz::save_png(&correspondence_figure(&episodes, &evaluation, 4)?, &dir.join("correspondence.png"))?;
    Ok(evaluation.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PretrainConfig {
        PretrainConfig {
            encoder: ClipVisionConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                image_size: 16,
                patch_size: 4,
                ..ClipVisionConfig::small_local()
            },
            steps: 40,
            batch: 4,
            lr: 3e-3,
            ..PretrainConfig::default()
        }
    }

    /// First frames of a few episodes (no expert run needed).
    fn few_frames(n: u64) -> Vec<TrainFrame> {
        (0..n)
            .map(|seed| {
                let task = TaskKind::ALL[seed as usize % 3];
                let mut sim = Sim::new(&SimConfig::default(), EpisodeSpec { task, seed, condition: Condition::IN_DOMAIN });
                TrainFrame { image: frame_image(&sim.observe().image).unwrap(), unlit: None }
            })
            .collect()
    }

    /// Mean of a flat pixel buffer.
    fn mean(values: &[f32]) -> f32 {
        values.iter().sum::<f32>() / values.len() as f32
    }

    #[test]
    fn relit_pairs_cut_view_b_from_the_unlit_render() {
        let config = tiny();
        let processor = view_processor(&config.encoder);
        let dark = RgbImage::from_pixel(64, 64, Rgb([10, 10, 10]));
        let bright = RgbImage::from_pixel(64, 64, Rgb([230, 230, 230]));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let paired = make_batch(&[TrainFrame { image: dark.clone(), unlit: Some(bright) }], &mut rng, &config, &processor).unwrap();
        assert!(mean(&paired.b) > mean(&paired.a) + 2.0, "view B should come from the unlit render: {} vs {}", mean(&paired.b), mean(&paired.a));
        let single = make_batch(&[TrainFrame { image: dark, unlit: None }], &mut rng, &config, &processor).unwrap();
        assert!((mean(&single.b) - mean(&single.a)).abs() < 1.0, "without a pair both views come from the frame");
        let wrong = TrainFrame { image: RgbImage::new(64, 64), unlit: Some(RgbImage::new(32, 32)) };
        let error = make_batch(&[wrong], &mut rng, &config, &processor).err().expect("a size mismatch is refused").to_string();
        assert!(error.contains("unlit render"), "{error}");
    }

    #[test]
    fn only_the_lighting_variant_has_an_unlit_view() {
        let condition = Condition::new(Variant::Lighting, 0.5).unwrap();
        let mut sim = Sim::new(&SimConfig::default(), EpisodeSpec { task: TaskKind::PlaceFruit, seed: 4, condition });
        let lit = frame_image(&sim.observe().image).unwrap();
        let unlit = unlit_view(&mut sim, Variant::Lighting).unwrap().expect("the lighting variant has an unlit view");
        assert_eq!(unlit.dimensions(), lit.dimensions());
        assert_ne!(unlit, lit, "the lights should change the frame");
        assert!(unlit_view(&mut sim, Variant::Clutter).unwrap().is_none());
    }

    #[test]
    fn relighting_cosine_is_one_for_the_same_frame_and_drops_under_a_light_change() {
        let config = tiny().encoder;
        let device = Device::flex();
        let encoder = GridEncoder::new(init_encoder(&config, 5, &device), config.clone(), view_processor(&config), 2);
        let frame = few_frames(1).remove(0).image;
        let mut dimmed = frame.clone();
        Jitter { gain: [0.5, 0.4, 0.7], contrast: 1.0, offset: 0.0 }.apply(&mut dimmed);
        let points = vec![[60.0, 70.0, 1.0], [150.0, 120.0, 1.0], [30.0, 200.0, 0.0]];
        let episode = |unlit: RgbImage| EvalEpisode {
            task: TaskKind::StackBlock,
            variant: Variant::Lighting,
            seed: 0,
            frames: vec![(0, frame.clone(), points.clone())],
            unlit: vec![unlit],
        };
        let same = evaluate_relighting(&encoder, &[episode(frame.clone())], &device).unwrap();
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].len(), 2, "only visible points are evaluated");
        assert!(same[0].iter().all(|(_, cosine)| *cosine > 0.9999), "{same:?}");
        let changed = evaluate_relighting(&encoder, &[episode(dimmed)], &device).unwrap();
        assert!(changed[0].iter().all(|(_, cosine)| *cosine < 0.999), "{changed:?}");
        let report = LightingReport::of(&same, &changed);
        assert_eq!(report.frames, 1);
        assert!(report.cosine_pretrained > report.cosine_random_init);
    }

    #[test]
    fn correspondence_maps_patch_centres() {
        let a = View { x: 0, y: 0, side: 112 };
        let same = correspondence(&a, &a, 14);
        assert!(same.iter().enumerate().all(|(i, p)| *p == Some(i)));
        // B is A's right half at twice the scale: A's column 7 (centre x = 60) is B's column 0.
        let b = View { x: 56, y: 0, side: 112 };
        let ab = correspondence(&a, &b, 14);
        assert_eq!(ab[0], None);
        assert_eq!(ab[7], Some(0));
        assert_eq!(ab[13 * 14 + 13], Some(13 * 14 + 6));
    }

    #[test]
    fn info_nce_prefers_the_true_correspondence() {
        let device = Device::flex();
        device.seed(3);
        let features = Tensor::<3>::random([2, 16, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let identity: Vec<Vec<Option<usize>>> = vec![(0..16).map(Some).collect(); 2];
        let mut shuffled = identity.clone();
        for list in &mut shuffled {
            list.rotate_left(5);
        }
        let right = dense_info_nce(features.clone(), features.clone(), &identity, &identity, 0.1).into_scalar::<f32>();
        let wrong = dense_info_nce(features.clone(), features, &shuffled, &shuffled, 0.1).into_scalar::<f32>();
        assert!(right < wrong - 1.0, "correct correspondence should have lower loss: {right} vs {wrong}");
        // No positive at all: zero loss, not NaN.
        let none = vec![vec![None; 16]; 2];
        let f = Tensor::<3>::ones([2, 16, 8], &device);
        assert_eq!(dense_info_nce(f.clone(), f, &none, &none, 0.1).into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn checkpoint_round_trips_exactly() {
        let dir = std::env::temp_dir().join(format!("glue-pretrain-roundtrip-{}", std::process::id()));
        let config = tiny().encoder;
        let device = Device::flex();
        let model = init_encoder(&config, 7, &device);
        save_checkpoint(&model, &config, &dir).unwrap();
        let (loaded, loaded_config, processor) = ClipVisionModel::load(&dir, &device).unwrap();
        assert_eq!(loaded_config, config);
        assert_eq!(processor.crop, Some((16, 16)));
        let input = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let a = model.forward(input.clone()).last_hidden_state.into_data().try_into_vec::<f32>().unwrap();
        let b = loaded.forward(input).last_hidden_state.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(a, b);
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(text.contains("\"model_type\": \"clip_vision_model\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_pretraining_lowers_the_loss() {
        let config = tiny();
        let frames = few_frames(4);
        let device = Device::flex();
        let before = fixed_batch_loss(&init_encoder(&config.encoder, config.seed, &device), &frames, &config, 99).unwrap();
        let (model, losses) = train(&config, &frames, |_, _| {}).unwrap();
        let after = fixed_batch_loss(&model, &frames, &config, 99).unwrap();
        assert_eq!(losses.len(), config.steps);
        assert!(after < before - 0.1, "pretraining should lower the loss on a fixed batch: {before} -> {after}");
    }
}
