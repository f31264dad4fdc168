//! `glue bench --suite models`: timings of the model workloads of issue 3's benchmark list, with the same shapes
//! as `benches/torch_reference.py` (PyTorch / transformers / LeRobot), so the two tables compare case by case:
//!
//! | case                   | workload                                                                          |
//! |------------------------|-----------------------------------------------------------------------------------|
//! | `vit_b16_forward`      | CLIP ViT-B/16 (quick_gelu), batch 1, 224x224                                      |
//! | `small_vit_train_step` | CLIP ViT 4 layers, width 192, 3 heads, 96 px / patch 8 (144 tokens), batch 32: forward, `mean(h²)`, backward, AdamW |
//! | `unet_lerobot_forward` | ConditionalUnet1D at LeRobot's default `down_dims` (512, 1024, 2048), batch 1, T 16, cond 2062 |
//! | `unet_small_train_step`| ConditionalUnet1D (64, 128, 256), step embed 64, cond 398, batch 32: MSE, backward, AdamW |
//! | `glue_small_inference` | GLUE `small`: local grid of one 224 frame, global ViT on 2 steps, fusion, 10 DDIM steps |
//! | `glue_full_inference`  | GLUE `full` (ViT-B/16 global and local, U-Net 256/512/1024), same pipeline          |
//! | `glue_small_train_step`| GLUE `small` training step, batch 32, 2 observation steps (key features cached)    |
//! | `owlvit_b32_detect`    | OWL-ViT at `google/owlvit-base-patch32`'s shape, 768 px, 2 queries of 16 tokens     |
//! | `sam_vit_b_segment`    | SAM at `facebook/sam-vit-base`'s shape, 1024 px, 2 box prompts, single mask         |
//!
//! Weights are random (timings do not depend on values). Thread count: burn's flex backend uses rayon, so run
//! with `RAYON_NUM_THREADS` equal to the Python side's `--threads`.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use image::RgbImage;
use rand::SeedableRng;

use crate::policy::normalizer::{CONSTANT_SPAN, Normalizer, Range};
use crate::policy::observation::{Crop, Frame, key_features, observations};
use crate::policy::{ModelSize, PolicyConfig, PolicyKind, PolicyNet, ddim_for, gaussian};
use crate::ground::sam::{SamConfig, SamModel};
use crate::ground::{OwlVitConfig, OwlVitForObjectDetection, Tokens};
use crate::unet::ConditionalUnet1dConfig;
use crate::vit::{ClipVisionConfig, ClipVisionModel, GridEncoder, HiddenAct, ImageProcessor};

/// Every case name, in table order.
pub const CASES: [&str; 9] = [
    "vit_b16_forward",
    "small_vit_train_step",
    "unet_lerobot_forward",
    "unet_small_train_step",
    "glue_small_inference",
    "glue_full_inference",
    "glue_small_train_step",
    "owlvit_b32_detect",
    "sam_vit_b_segment",
];

/// Timings of one case (seconds).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub runs: usize,
}

/// Runs `f` twice to warm up, then `repeats` times.
fn time(repeats: usize, mut f: impl FnMut()) -> Timing {
    f();
    f();
    let mut xs: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    xs.sort_by(f64::total_cmp);
    Timing { median_s: xs[xs.len() / 2], min_s: xs[0], max_s: xs[xs.len() - 1], runs: xs.len() }
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn vit(hidden: usize, layers: usize, heads: usize, image: usize, patch: usize, act: HiddenAct) -> ClipVisionConfig {
    ClipVisionConfig {
        hidden_size: hidden,
        intermediate_size: 4 * hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        image_size: image,
        patch_size: patch,
        hidden_act: act,
        ..ClipVisionConfig::default()
    }
}

/// A synthetic 224x224 frame, a state and 24 keypoints (3 objects x 8 oracle points).
fn scene() -> (RgbImage, [f32; 15], Vec<[f32; 3]>) {
    let image = RgbImage::from_fn(224, 224, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8]));
    let keypoints = (0..24).map(|i| [(i * 9 % 224) as f32, (i * 37 % 224) as f32, (i % 5 != 0) as u8 as f32]).collect();
    (image, [0.1; 15], keypoints)
}

/// The policy input of [`scene`]'s frame with `key_features`.
fn scene_frame<'a>(image: &'a RgbImage, state: &'a [f32], keypoints: &'a [[f32; 3]], key_features: &'a [f32]) -> Frame<'a> {
    Frame { image: image.as_raw(), width: 224, height: 224, state: &state[..7], keypoints, key_features: Some(key_features), object_poses: &[] }
}

fn unit_normalizer(state_dim: usize) -> Normalizer {
    let r = |n| Range { min: vec![-1.0; n], max: vec![1.0; n], constant_span: CONSTANT_SPAN };
    Normalizer { state: r(state_dim), action: r(8) }
}

/// GLUE inference at `size`: key features of the current frame, the observation of 2 steps, 10 DDIM steps.
fn glue_inference(size: ModelSize, repeats: usize, device: &Device) -> eyre::Result<Timing> {
    let config = PolicyConfig::new(PolicyKind::Glue, size);
    let net = PolicyNet::init(&config, device)?;
    let local_config = match size {
        ModelSize::Full => ClipVisionConfig::vit_b16(),
        ModelSize::Small => vit(96, 4, 4, 56, 4, HiddenAct::Gelu),
    };
    let local = GridEncoder::new(ClipVisionModel::new(&local_config, device), local_config, ImageProcessor::default(), 2);
    let ddim = ddim_for(&config)?;
    let normalizer = unit_normalizer(config.state_dim);
    let (image, state, keypoints) = scene();
    let previous = key_features(&local, &[&image], &[keypoints.clone()], device)?.remove(0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut failure = None;
    let timing = time(repeats, || {
        let result = (|| -> eyre::Result<()> {
            let current = key_features(&local, &[&image], &[keypoints.clone()], device)?.remove(0);
            let frame = scene_frame(&image, &state, &keypoints, &previous);
            let frames = [frame, Frame { key_features: Some(&current), ..frame }];
            let crops = [Crop::centered(224, 224, config.crop_ratio); 2];
            let obs = observations(&frames, &crops, &config, &normalizer, device);
            let noise = gaussian(&mut rng, [1, config.horizon, 8], device);
            let chunk = net.sample(&obs, 2, &ddim, noise);
            let _ = chunk.into_data();
            Ok(())
        })();
        if let Err(e) = result {
            failure = Some(e);
        }
    });
    failure.map_or(Ok(timing), Err)
}

/// Runs the named cases (all when `only` is empty) on `device`.
pub fn run(only: &[String], repeats: usize, device: &Device) -> eyre::Result<Vec<(String, Timing)>> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    for o in only {
        eyre::ensure!(CASES.contains(&o.as_str()), "unknown case {o}; expected one of {CASES:?}");
    }
    let train_device = device.clone().autodiff();
    let mut out = Vec::new();
    for name in CASES.into_iter().filter(|n| wanted(n)) {
        eprintln!("timing {name} ...");
        let timing = match name {
            "vit_b16_forward" => {
                let model = ClipVisionModel::new(&ClipVisionConfig::vit_b16(), device);
                let x = random([1, 3, 224, 224], device);
                time(repeats, || {
                    let _ = model.forward(x.clone()).last_hidden_state.into_data();
                })
            }
            "small_vit_train_step" => {
                let mut model = Some(ClipVisionModel::new(&vit(192, 4, 3, 96, 8, HiddenAct::Gelu), &train_device));
                let mut optimizer = AdamWConfig::new().init();
                let x = random([32, 3, 96, 96], &train_device);
                time(repeats, || {
                    let m = model.take().expect("model");
                    let loss = m.forward(x.clone()).last_hidden_state.powi_scalar(2).mean();
                    let grads = GradientsParams::from_grads(loss.backward(), &m);
                    model = Some(optimizer.step(1e-4, m, grads));
                })
            }
            "unet_lerobot_forward" => {
                let config = ConditionalUnet1dConfig { down_dims: vec![512, 1024, 2048], ..ConditionalUnet1dConfig::new(8, 2062) };
                let unet = config.init(device)?;
                let (x, t, c) = (random([1, 16, 8], device), Tensor::<1>::from_floats([10.0], device), random([1, 2062], device));
                time(repeats, || {
                    let _ = unet.forward(x.clone(), t.clone(), c.clone()).into_data();
                })
            }
            "unet_small_train_step" => {
                let config = ConditionalUnet1dConfig {
                    down_dims: vec![64, 128, 256],
                    diffusion_step_embed_dim: 64,
                    ..ConditionalUnet1dConfig::new(8, 398)
                };
                let mut unet = Some(config.init(&train_device)?);
                let mut optimizer = AdamWConfig::new().init();
                let x = random([32, 16, 8], &train_device);
                let target = random([32, 16, 8], &train_device);
                let t = Tensor::<1>::from_floats([10.0; 32], &train_device);
                let c = random([32, 398], &train_device);
                time(repeats, || {
                    let u = unet.take().expect("unet");
                    let loss = (u.forward(x.clone(), t.clone(), c.clone()) - target.clone()).powi_scalar(2).mean();
                    let grads = GradientsParams::from_grads(loss.backward(), &u);
                    unet = Some(optimizer.step(1e-4, u, grads));
                })
            }
            "glue_small_inference" => glue_inference(ModelSize::Small, repeats, device)?,
            "glue_full_inference" => glue_inference(ModelSize::Full, repeats.min(3), device)?,
            "glue_small_train_step" => {
                let config = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
                let schedule = ddim_for(&config)?.schedule().clone();
                let mut net = Some(PolicyNet::init(&config, &train_device)?);
                let mut optimizer = AdamWConfig::new().init();
                let normalizer = unit_normalizer(config.state_dim);
                let (image, state, keypoints) = scene();
                let features = vec![0.5f32; keypoints.len() * config.fusion.local_dim];
                let frame = scene_frame(&image, &state, &keypoints, &features);
                let frames = vec![frame; 64];
                let crops = vec![Crop::random(224, 224, config.crop_ratio, 0.3, 0.6); 64];
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                let steps: Vec<usize> = (0..32).map(|i| i * 3).collect();
                time(repeats, || {
                    let n = net.take().expect("net");
                    let obs = observations(&frames, &crops, &config, &normalizer, &train_device);
                    let actions = gaussian(&mut rng, [32, 16, 8], &train_device);
                    let noise = gaussian(&mut rng, [32, 16, 8], &train_device);
                    let loss = n.loss(&obs, 2, actions, noise, &steps, &schedule);
                    let grads = GradientsParams::from_grads(loss.backward(), &n);
                    net = Some(optimizer.step(1e-4, n, grads));
                })
            }
            "owlvit_b32_detect" => {
                let model = OwlVitForObjectDetection::new(&OwlVitConfig::default(), device);
                let x = random([1, 3, 768, 768], device);
                let ids: Vec<u32> = std::iter::once(49406).chain((1..15).map(|i| 300 + i)).chain([49407]).collect();
                let tokens = Tokens { input_ids: vec![ids.clone(), ids], attention_mask: vec![vec![1; 16]; 2] };
                time(repeats, || {
                    let _ = model.forward(x.clone(), &tokens).logits.into_data();
                })
            }
            "sam_vit_b_segment" => {
                let model = SamModel::new(&SamConfig::default(), device);
                let x = random([1, 3, 1024, 1024], device);
                let boxes = [[100.0, 120.0, 400.0, 380.0], [500.0, 300.0, 900.0, 700.0]];
                time(repeats.min(3), || {
                    let embedding = model.image_embeddings(x.clone());
                    let _ = model.decode(embedding, &boxes, false).0.into_data();
                })
            }
            _ => unreachable!("CASES lists every case"),
        };
        out.push((name.to_string(), timing));
    }
    Ok(out)
}

/// The table, with the PyTorch reference's medians and our/PyTorch ratios when `torch` (the JSON that
/// `benches/torch_reference.py` prints) is given.
pub fn table(rows: &[(String, Timing)], torch: Option<&serde_json::Value>) -> String {
    let mut s = format!(
        "{:<24} {:>10} {:>10} {:>10} {:>12} {:>8}\n",
        "case", "median s", "min s", "max s", "PyTorch s", "ratio"
    );
    for (name, t) in rows {
        let reference = torch.and_then(|j| j["cases"][name]["median_s"].as_f64());
        s += &format!(
            "{:<24} {:>10.4} {:>10.4} {:>10.4} {:>12} {:>8}\n",
            name,
            t.median_s,
            t.min_s,
            t.max_s,
            reference.map_or("-".into(), |r| format!("{r:.4}")),
            reference.map_or("-".into(), |r| format!("{:.2}x", t.median_s / r))
        );
    }
    s
}
