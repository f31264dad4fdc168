use burn::tensor::{Device, Tensor};
use image::{Rgb, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::frames::{frame_image, unlit_view};
use super::views::{Jitter, make_batch, view_processor};
use super::*;
use crate::sim::ood::{Condition, Variant};
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, Sim, SimConfig};
use crate::vit::GridEncoder;

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
    // 80 steps, not tiny()'s 40: from each of the initialisations of seeds 0-7 they bring this batch's loss to
    // 1.85-2.08 (40 steps: 2.03-2.30), well below seed 0's initial 2.47, so the margin also holds when a concurrently
    // running test draws from burn's process-wide RNG between `train`'s seeding and its initialisation.
    let config = PretrainConfig { steps: 80, ..tiny() };
    let frames = few_frames(4);
    let device = Device::flex();
    let before = fixed_batch_loss(&init_encoder(&config.encoder, config.seed, &device), &frames, &config, 99).unwrap();
    let (model, losses) = train(&config, &frames, |_, _| {}).unwrap();
    let after = fixed_batch_loss(&model, &frames, &config, 99).unwrap();
    assert_eq!(losses.len(), config.steps);
    assert!(after < before - 0.1, "pretraining should lower the loss on a fixed batch: {before} -> {after}");
}
