//! The demonstrations with everything a training step needs: the fitted normaliser, GLUE's cached key-patch
//! features, and the two dropout options; [`Dataset::batch`] builds a step's observations and actions.

use std::borrow::Cow;

use burn::tensor::{Device, Tensor, TensorData};
use eyre::{Result, bail, ensure, eyre};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::data::{Demo, Sample, action_ticks, obs_ticks};
use super::{TrainConfig, progress};
use crate::policy::PolicyConfig;
use crate::policy::normalizer::{Normalizer, Range};
use crate::policy::observation::{Crop, Frame, key_features, observations, state_row};
use crate::vit::GridEncoder;

/// The demonstrations with everything a step needs.
pub(super) struct Dataset {
    pub(super) demos: Vec<Demo>,
    /// `[demo][tick]` key features `N x C` (GLUE).
    pub(super) key_features: Option<Vec<Vec<Vec<f32>>>>,
    pub(super) normalizer: Normalizer,
    /// GLUE with [`TrainConfig::keypoint_dropout`] above 0.
    pub(super) keypoint_dropout: Option<KeypointDropout>,
    /// [`TrainConfig::point_dropout`].
    pub(super) point_dropout: f32,
}

/// [`TrainConfig::keypoint_dropout`]: its share, and GLUE's input when grounding finds no task object, as
/// [`crate::annotate::first_frame_keypoints`] gives it at inference: `N` keypoints invisible at the image centre
/// (per demo, `[demo]`) and `N x C` zero key features.
pub(super) struct KeypointDropout {
    share: f32,
    keypoints: Vec<Vec<[f32; 3]>>,
    features: Vec<f32>,
}

impl KeypointDropout {
    /// `None` for a share of 0 (the paper's training).
    pub(super) fn new(share: f32, demos: &[Demo], key_features: &[Vec<Vec<f32>>]) -> Option<Self> {
        (share > 0.0).then(|| Self {
            share,
            keypoints: demos
                .iter()
                .map(|d| vec![[d.width as f32 / 2.0, d.height as f32 / 2.0, 0.0]; d.keypoints[0].len()])
                .collect(),
            features: vec![0.0; key_features[0][0].len()],
        })
    }
}

impl Dataset {
    /// The training data of `config`: `demos` with their `normalizer` and, for GLUE, every frame's key-patch
    /// features from [`TrainConfig::local_encoder`] (computed once: the encoder is frozen).
    pub(super) fn new(demos: Vec<Demo>, normalizer: Normalizer, config: &TrainConfig, device: &Device) -> Result<Self> {
        let key_features = if config.policy.policy.uses_key_patches() {
            let Some(dir) = &config.local_encoder else {
                bail!("--policy glue needs --local-encoder DIR (a HF CLIP folder, e.g. the output of `glue pretrain`)")
            };
            let encoder = GridEncoder::load(dir, config.policy.local_split, device)?;
            let fusion = &config.policy.fusion;
            ensure!(
                encoder.grid() == fusion.grid && encoder.channels() == fusion.local_dim,
                "local encoder {} gives a {}x{} grid of width {}, the policy expects {}x{} of width {}",
                dir.display(),
                encoder.grid(),
                encoder.grid(),
                encoder.channels(),
                fusion.grid,
                fusion.grid,
                fusion.local_dim
            );
            Some(cache_key_features(&encoder, &demos, device)?)
        } else {
            None
        };
        let keypoint_dropout =
            key_features.as_deref().and_then(|k| KeypointDropout::new(config.keypoint_dropout, &demos, k));
        Ok(Self { demos, key_features, normalizer, keypoint_dropout, point_dropout: config.point_dropout })
    }

    /// Observation frames and normalised actions for `batch`, with one crop per sample (`None`: centred).
    pub(super) fn batch(
        &self,
        config: &PolicyConfig,
        batch: &[Sample],
        rng: Option<&mut ChaCha8Rng>,
        device: &Device,
    ) -> (crate::policy::Observations, Tensor<3>) {
        let to = config.n_obs_steps;
        let mut crops = Vec::with_capacity(batch.len() * to);
        let mut actions = Vec::with_capacity(batch.len() * config.horizon * config.action_dim);
        // (demo, tick, keypoints, key features) of each observation frame, the keypoints owned where points were
        // dropped: the frames below borrow them.
        let mut inputs = Vec::with_capacity(batch.len() * to);
        let mut rng = rng;
        for s in batch {
            let demo = &self.demos[s.demo];
            let crop = match rng.as_deref_mut() {
                Some(r) => Crop::random(demo.width, demo.height, config.crop_ratio, r.random(), r.random()),
                None => Crop::centered(demo.width, demo.height, config.crop_ratio),
            };
            // Drawn only when dropping out, so that runs without it keep their random stream. A sample's lost
            // points stay lost over its observation steps, as a lost track does.
            let unseen = match (rng.as_deref_mut(), &self.keypoint_dropout) {
                (Some(r), Some(dropout)) => (r.random::<f32>() < dropout.share).then_some(dropout),
                _ => None,
            };
            let lost = match (rng.as_deref_mut(), unseen) {
                (Some(r), None) if self.point_dropout > 0.0 => {
                    let n = demo.keypoints.first().map_or(0, Vec::len);
                    (0..n).map(|_| r.random::<f32>() < self.point_dropout).collect()
                }
                _ => Vec::new(),
            };
            for t in obs_ticks(s.t, to) {
                let (keypoints, key_features) = match unseen {
                    Some(u) => (Cow::Borrowed(u.keypoints[s.demo].as_slice()), Some(u.features.as_slice())),
                    None => (
                        show_lost(demo.keypoints.get(t).map_or(&[][..], Vec::as_slice), &lost),
                        self.key_features.as_ref().map(|k| k[s.demo][t].as_slice()),
                    ),
                };
                inputs.push((s.demo, t, keypoints, key_features));
                crops.push(crop);
            }
            for t in action_ticks(s.t, to, config.horizon, demo.len()) {
                let mut a = demo.actions[t].to_vec();
                self.normalizer.action.normalize(&mut a);
                actions.extend(a);
            }
        }
        let frames: Vec<Frame<'_>> = inputs
            .iter()
            .map(|(d, t, keypoints, key_features)| {
                let demo = &self.demos[*d];
                Frame {
                    image: &demo.images[*t],
                    width: demo.width,
                    height: demo.height,
                    state: &demo.states[*t][..config.state_dim],
                    keypoints,
                    key_features: *key_features,
                    object_poses: demo.object_poses.get(*t).map_or(&[][..], Vec::as_slice),
                }
            })
            .collect();
        let obs = observations(&frames, &crops, config, &self.normalizer, device);
        let actions = Tensor::from_data(TensorData::new(actions, [batch.len(), config.horizon, config.action_dim]), device);
        (obs, actions)
    }
}

/// `keypoints` with those where `lost` is true shown as the tracker shows a lost point
/// ([`TrainConfig::point_dropout`]): flag 0, coordinates kept (the flag zeroes the key patch, see
/// [`observations`]). Borrowed unchanged when no point is lost.
fn show_lost<'a>(keypoints: &'a [[f32; 3]], lost: &[bool]) -> Cow<'a, [[f32; 3]]> {
    if !lost.contains(&true) {
        return Cow::Borrowed(keypoints);
    }
    let mut shown = keypoints.to_vec();
    for (point, _) in shown.iter_mut().zip(lost).filter(|(_, l)| **l) {
        point[2] = 0.0;
    }
    Cow::Owned(shown)
}

/// Fits the normaliser on the training demos: the state rows ([`state_row`]) and the actions.
pub(super) fn fit_normalizer(demos: &[Demo], which: &[usize], config: &PolicyConfig, constant_span: f32) -> Result<Normalizer> {
    let rows: Vec<Vec<f32>> = which
        .iter()
        .flat_map(|&d| {
            let demo = &demos[d];
            demo.states.iter().enumerate().map(move |(t, s)| {
                let poses = demo.object_poses.get(t).map_or(&[][..], Vec::as_slice);
                let keypoints = demo.keypoints.get(t).map_or(&[][..], Vec::as_slice);
                state_row(config, s, poses, keypoints)
            })
        })
        .collect();
    let actions = which.iter().flat_map(|&d| demos[d].actions.iter().map(|a| a.as_slice()));
    Ok(Normalizer {
        state: Range::fit("state", config.state_width(), rows.iter().map(Vec::as_slice), constant_span)?,
        action: Range::fit("action", 8, actions, constant_span)?,
    })
}

/// Computes every frame's key-patch features with the frozen local encoder.
fn cache_key_features(encoder: &GridEncoder, demos: &[Demo], device: &Device) -> Result<Vec<Vec<Vec<f32>>>> {
    let total: usize = demos.iter().map(Demo::len).sum();
    let bar = progress(total as u64, "caching key patches");
    let mut out = Vec::with_capacity(demos.len());
    for demo in demos {
        let mut features = Vec::with_capacity(demo.len());
        for start in (0..demo.len()).step_by(16) {
            let end = (start + 16).min(demo.len());
            let images: Vec<image::RgbImage> = (start..end)
                .map(|t| {
                    image::RgbImage::from_raw(demo.width, demo.height, demo.images[t].clone())
                        .ok_or_else(|| eyre!("{}: frame {t} has the wrong size", demo.path.display()))
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&image::RgbImage> = images.iter().collect();
            features.extend(key_features(encoder, &refs, &demo.keypoints[start..end], device)?);
            bar.inc((end - start) as u64);
        }
        out.push(features);
    }
    bar.finish();
    Ok(out)
}
