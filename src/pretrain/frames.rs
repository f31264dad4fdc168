//! The pretraining data: the scripted experts' frames over every task and OOD variant (training seeds
//! `0..episodes`), and the held-out evaluation episodes with their oracle tracks (seeds from [`EVAL_SEED_START`]).

use eyre::{ensure, eyre};
use image::RgbImage;

use super::EVAL_SEED_START;
use crate::collect::run_expert;
use crate::sim::ood::{Condition, Variant};
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, Sim, SimConfig};

/// Strength of the OOD variants in the training and evaluation episodes.
const VARIANT_STRENGTH: f32 = 0.5;

/// The condition of `variant` in the training and evaluation episodes.
fn condition(variant: Variant) -> Condition {
    match variant {
        Variant::None => Condition::IN_DOMAIN,
        _ => Condition::new(variant, VARIANT_STRENGTH).expect("strength 0.5 is in range"),
    }
}

pub(super) fn frame_image(frame: &crate::sim::render::Frame) -> eyre::Result<RgbImage> {
    RgbImage::from_raw(frame.width, frame.height, frame.rgb.clone()).ok_or_else(|| eyre!("bad frame buffer"))
}

/// The tick `sim` shows now under the default studio light, for the frames of the `lighting` variant.
pub(super) fn unlit_view(sim: &mut Sim, variant: Variant) -> eyre::Result<Option<RgbImage>> {
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
