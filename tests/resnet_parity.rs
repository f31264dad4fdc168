//! Parity of `glue::resnet::ResNetEncoder` with LeRobot 0.4.4's `DiffusionRgbEncoder` (GroupNorm ResNet-18,
//! `SpatialSoftmax`, Linear + ReLU). Fixtures come from `tests/fixtures/make_resnet.py`; the encoder there is
//! torchvision's ResNet-18 at base width 16 (see that script for why), and the full-width layout is checked by
//! tensor names and shapes.

use std::collections::BTreeMap;

use burn::module::Module;
use glue::resnet::{ResNetEncoder, ResNetEncoderConfig};
use serde::Deserialize;

mod common;
use common::{Fixtures, device, max_abs_err};

/// Max abs error allowed against LeRobot's output.
const TOL: f32 = 1e-4;

fn fixtures() -> Fixtures {
    Fixtures::new("resnet")
}

#[derive(Deserialize)]
struct Case {
    config: ResNetEncoderConfig,
    prefix: String,
}

fn load_fixture_encoder() -> (ResNetEncoder, Case) {
    let case: Case = fixtures().json("encoder_w16.json");
    let model =
        ResNetEncoder::load_lerobot(&case.config, &fixtures().path("encoder_w16.safetensors"), &case.prefix, &device())
            .unwrap();
    (model, case)
}

#[test]
fn encoder_matches_lerobot() {
    let (model, case) = load_fixture_encoder();
    assert_eq!(case.config.feature_dim(), 64);
    let io = fixtures().arrays("io.safetensors");
    // a: the size LeRobot's encoder was built for (2x3 feature map); b: another size (3x4), which LeRobot
    // needs a second encoder for and which here is the same model.
    for case in ["a", "b"] {
        let want = &io[&format!("features_{case}")];
        let err = max_abs_err(model.forward(io[&format!("images_{case}")].tensor()), want);
        let scale = want.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("{case}: max abs err {err:.3e} (max |ref| {scale:.3})");
        assert!(err < TOL, "case {case}: max abs err {err:.3e} >= {TOL:e} (max |ref| {scale:.3})");
    }
}

#[test]
fn full_width_layout_is_lerobots() {
    #[derive(Deserialize)]
    struct FullWidth {
        config: ResNetEncoderConfig,
        tensors: BTreeMap<String, Vec<usize>>,
        num_params: usize,
    }
    let full: FullWidth = fixtures().json("full_width.json");
    assert_eq!(full.config, ResNetEncoderConfig::default(), "LeRobot's defaults are ours");
    let mut theirs = full.tensors;
    assert_eq!(theirs.remove("pool.pos_grid"), Some(vec![6, 2]), "the 64x96 image gives a 2x3 feature map");
    let ours: BTreeMap<String, Vec<usize>> = full.config.lerobot_tensor_shapes().into_iter().collect();
    assert_eq!(ours, theirs);
    // Lazily initialised: counting parameters allocates nothing.
    assert_eq!(full.config.init(&device()).num_params(), full.num_params);
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let case: Case = fixtures().json("encoder_w16.json");
    let path = fixtures().path("encoder_w16.safetensors");
    for (config, tensor, checkpoint, model) in [
        (
            ResNetEncoderConfig { spatial_softmax_num_keypoints: 16, ..case.config.clone() },
            "diffusion.rgb_encoder.pool.nets.weight",
            "[32, 128, 1, 1]",
            "[16, 128, 1, 1]",
        ),
        (
            ResNetEncoderConfig { base_width: 32, ..case.config.clone() },
            "diffusion.rgb_encoder.backbone.0.weight",
            "[16, 3, 7, 7]",
            "[32, 3, 7, 7]",
        ),
    ] {
        let msg = format!("{:#}", ResNetEncoder::load_lerobot(&config, &path, &case.prefix, &device()).unwrap_err());
        println!("{msg}");
        for part in [tensor, checkpoint, model] {
            assert!(msg.contains(part), "`{msg}` does not mention {part}");
        }
    }
}

#[test]
fn truncated_checkpoint_names_the_missing_tensor() {
    let case: Case = fixtures().json("encoder_w16.json");
    let path = fixtures().path("head_only.safetensors");
    let msg = format!("{:#}", ResNetEncoder::load_lerobot(&case.config, &path, &case.prefix, &device()).unwrap_err());
    println!("{msg}");
    assert!(msg.contains("diffusion.rgb_encoder.backbone.0.weight") && msg.contains("missing"), "{msg}");
}

#[test]
fn wrong_prefix_and_missing_file_are_errors() {
    let case: Case = fixtures().json("encoder_w16.json");
    let path = fixtures().path("encoder_w16.safetensors");
    // With an empty prefix, the policy-level names are all unknown.
    let msg = format!("{:#}", ResNetEncoder::load_lerobot(&case.config, &path, "", &device()).unwrap_err());
    assert!(msg.contains("tensor `backbone.0.weight` is missing"), "{msg}");
    let missing = fixtures().path("no_such_checkpoint.safetensors");
    let err = ResNetEncoder::load_lerobot(&case.config, &missing, &case.prefix, &device()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}
