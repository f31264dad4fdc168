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
//! bicubic, by the same [`ImageProcessor`](crate::vit::ImageProcessor) the evaluation uses), each with its own
//! colour jitter: global exposure 0.6-1.4, per-channel gain 0.8-1.2 (a tinted light), contrast 0.7-1.3 about the
//! view mean and an offset of +-0.08. Because both crops come from the same frame, the geometry is known: for each
//! patch of view A whose centre falls inside view B, the positive is the patch of view B covering that frame
//! location. The loss is InfoNCE over all 196 patches of view B (cosine similarity, temperature 0.1), averaged
//! over the patches that have a positive, and symmetrised (B to A likewise) — [`dense_info_nce`].
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
//!   ([`Sim::render_default_lighting`](crate::sim::Sim::render_default_lighting)), so the positives also differ
//!   by the simulator's own coloured, moving lights (shading, highlights, tinted shadows), which a global colour
//!   jitter cannot imitate. It uses the
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

mod checkpoint;
mod frames;
mod matching;
mod training;
mod views;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::vit::{ClipVisionConfig, ClipVisionModel};

pub use checkpoint::{hf_config_json, hf_preprocessor_json, save_checkpoint};
pub use frames::{EvalEpisode, TrainFrame, eval_episodes, render_frames};
pub use matching::{
    CorrespondenceReport, CorrespondenceScore, Evaluation, LightingReport, LocalGrid, PointMatch, Scores, compare,
    correspondence_figure, evaluate_matches, evaluate_relighting, local_grid, match_points,
};
pub use training::{dense_info_nce, fixed_batch_loss, init_encoder, train};
pub use views::{View, correspondence};

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
