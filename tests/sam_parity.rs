//! Parity of `glue::ground::sam` (SAM with box prompts) with Hugging Face `transformers` (`SamModel`,
//! `SamImageProcessor`) on the tiny checkpoint `tests/fixtures/make_sam.py` builds, and its error reporting.

mod common;

use burn::tensor::Tensor;
use common::{Fixtures, device, relative_error, values};
use glue::ground::sam::{SamModel, SamProcessor, SamSegmenter};
use glue::keypoints::Grounder;

/// Relative error where no resize of the image is involved.
const EXACT: f64 = 1e-4;
/// The box prompts of `make_sam.py`, pixels of `image.png`.
const BOXES: [[f32; 4]; 2] = [[10.0, 8.0, 50.0, 40.0], [30.5, 20.0, 80.0, 58.0]];

fn fixture() -> Fixtures {
    Fixtures::new("sam-tiny")
}

fn check(label: &str, got: Tensor<4>, want: &common::Array, tolerance: f64) {
    let error = relative_error(got, want);
    println!("{label}: relative error {error:.2e}");
    assert!(error < tolerance, "{label}: relative error {error:.2e} >= {tolerance:.0e}");
}

#[test]
fn encoder_and_decoder_match_transformers() {
    let reference = fixture().arrays("reference.safetensors");
    let (model, _) = SamModel::load(&fixture().path(""), &device()).unwrap();
    let embedding = model.image_embeddings(reference["pixel_values"].tensor());
    check("image_embeddings", embedding.clone(), &reference["image_embeddings"], EXACT);
    let boxes: Vec<[f32; 4]> =
        reference["input_boxes"].values.chunks(4).map(|b| [b[0], b[1], b[2], b[3]]).collect();
    for (multimask, masks, iou) in [(false, "pred_masks", "iou_scores"), (true, "multi_pred_masks", "multi_iou_scores")] {
        let (logits, scores) = model.decode(embedding.clone(), &boxes, multimask);
        let want = &reference[masks];
        let shape: [usize; 4] = [want.shape[1], want.shape[2], want.shape[3], want.shape[4]];
        let want = common::Array { values: want.values.clone(), shape: shape.to_vec() };
        check(masks, logits, &want, EXACT);
        let scores: Vec<f32> = values(scores);
        for (got, want) in scores.iter().zip(&reference[iou].values) {
            assert!((got - want).abs() < 1e-4, "{iou}: {scores:?} vs {:?}", reference[iou].values);
        }
    }
}

#[test]
fn processor_matches_sam_image_processor() {
    let reference = fixture().arrays("reference.safetensors");
    let processor = SamProcessor::from_file(&fixture().path("preprocessor_config.json")).unwrap();
    let image = image::open(fixture().path("image.png")).unwrap().to_rgb8();
    assert_eq!(processor.resized_size(83, 61), (47, 64));
    let pixels: Tensor<4> = Tensor::from_data(processor.preprocess(&image), &device());
    check("pixel_values (Pillow bilinear port)", pixels, &reference["pixel_values"], 1e-6);
    let scaled: Vec<f32> = BOXES.iter().flat_map(|&b| processor.scale_box(b, 83, 61)).collect();
    for (got, want) in scaled.iter().zip(&reference["input_boxes"].values) {
        assert!((got - want).abs() < 1e-4, "boxes {scaled:?} vs {:?}", reference["input_boxes"].values);
    }
}

#[test]
fn segmenter_matches_post_processed_masks() {
    let reference = fixture().arrays("reference.safetensors");
    let segmenter = SamSegmenter::load(&fixture().path(""), &device()).unwrap();
    let image = image::open(fixture().path("image.png")).unwrap().to_rgb8();
    check("mask_logits", segmenter.mask_logits(&image, &BOXES).unwrap(), &reference["mask_logits"], EXACT);
    let masks = segmenter.segment(&image, &BOXES).unwrap();
    let want = &reference["masks"].values;
    let (width, height) = image.dimensions();
    let mut got = vec![0f32; want.len()];
    for (i, mask) in masks.iter().enumerate() {
        for (x, y) in mask.pixels() {
            got[(i * height as usize + y as usize) * width as usize + x as usize] = 1.0;
        }
    }
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    println!("masks: {differ} of {} pixels differ, {} inside", want.len(), got.iter().sum::<f32>());
    assert!(differ * 1000 < want.len(), "{differ} of {} mask pixels differ", want.len());
    assert!(got.iter().any(|&v| v > 0.0) && got.iter().any(|&v| v == 0.0), "a mask is all or nothing");
}

#[test]
fn bad_boxes_and_missing_files_are_clear_errors() {
    let segmenter = SamSegmenter::load(&fixture().path(""), &device()).unwrap();
    let image = image::RgbImage::new(20, 10);
    let err = segmenter.mask_logits(&image, &[[5.0, 2.0, 3.0, 8.0]]).unwrap_err().to_string();
    assert!(err.contains("x0 < x1"), "{err}");
    let err = segmenter.mask_logits(&image, &[[0.0, f32::NAN, 3.0, 8.0]]).unwrap_err().to_string();
    assert!(err.contains("finite"), "{err}");
    let dir = std::env::temp_dir().join(format!("glue-sam-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture().path("config.json"), dir.join("config.json")).unwrap();
    let err = format!("{:#}", SamSegmenter::load(&dir, &device()).unwrap_err());
    assert!(err.contains(&dir.join("model.safetensors").display().to_string()), "{err}");
}

/// Eq. (1) whole: OWL-ViT's kept boxes segmented by SAM, each query's mask SAM's mask of its box (both tiny
/// random-weight fixtures: this checks the wiring, not what real weights find).
#[test]
fn grounder_segments_the_detected_boxes() {
    use glue::ground::{OwlVitDetector, OwlVitGrounder};
    let owlvit = Fixtures::new("owlvit-tiny");
    let detector = || OwlVitDetector::load(&owlvit.path(""), &device()).unwrap();
    let image = image::open(owlvit.path("image_resized.png")).unwrap().to_rgb8();
    let queries = vec!["red block".to_string(), "white plate".to_string()];
    let segmenter = || SamSegmenter::load(&fixture().path(""), &device()).unwrap();
    let grounder = OwlVitGrounder::new(detector(), Some(segmenter()), 0.0).unwrap();
    let (detections, masks) = grounder.ground_with_detections(&image, &queries).unwrap();
    let boxes: Vec<[f32; 4]> = detections.iter().map(|d| d.bbox).collect();
    let expected = segmenter().segment(&image, &boxes).unwrap();
    assert_eq!(masks, expected);
    let boxed = OwlVitGrounder::new(detector(), None, 0.0).unwrap().ground(&image, &queries).unwrap();
    assert_ne!(masks, boxed, "SAM's masks are not the boxes");
    let above = detections.iter().map(|d| d.score).fold(0.0, f32::max) + 1e-3;
    let none = OwlVitGrounder::new(detector(), Some(segmenter()), above.min(1.0)).unwrap();
    assert!(none.ground(&image, &queries).unwrap().iter().all(|m| m.area() == 0));
}

#[test]
fn a_config_that_disagrees_with_the_weights_names_the_tensor() {
    let dir = std::env::temp_dir().join(format!("glue-sam-mismatch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(fixture().path(file), dir.join(file)).unwrap();
    }
    let config = std::fs::read_to_string(fixture().path("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["vision_config"]["mlp_dim"] = 48.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = format!("{:#}", SamSegmenter::load(&dir, &device()).unwrap_err());
    println!("{err}");
    assert!(err.contains("vision_encoder.layers.0.mlp.lin1.weight") && err.contains("[32, 64]"), "{err}");
}
