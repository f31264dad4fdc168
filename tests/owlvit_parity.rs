//! Parity of `glue::ground` (OWL-ViT detector, CLIP tokenizer, text tower) with Hugging Face `transformers`
//! (`OwlViTForObjectDetection`, `OwlViTProcessor`) on the tiny checkpoint `tests/fixtures/make_owlvit.py`
//! builds, the grounder built on it, and the loader's error reporting.

mod common;

use common::{Fixtures, device, relative_error};
use glue::ground::{ClipTokenizer, OwlVitDetector, OwlVitForObjectDetection, OwlVitGrounder, Tokens};
use glue::keypoints::Grounder;

/// The queries `make_owlvit.py` tokenized: a `!` (OWL-ViT's padding token), a contraction, double spaces.
const QUERIES: [&str; 4] = ["red block", "a white plate", "It's the  cup!", "blocks and plates"];
/// Relative error where no resize is involved.
const EXACT: f64 = 1e-4;

fn queries() -> Vec<String> {
    QUERIES.map(String::from).to_vec()
}

fn fixture() -> Fixtures {
    Fixtures::new("owlvit-tiny")
}

fn image(case: &str) -> image::RgbImage {
    image::open(fixture().path(&format!("image_{case}.png"))).unwrap().to_rgb8()
}

#[test]
fn tokenizer_matches_owlvit_processor() {
    let reference = fixture().arrays("reference.safetensors");
    let tokenizer = ClipTokenizer::from_dir(&fixture().path("")).unwrap();
    let Tokens { input_ids, attention_mask } = tokenizer.batch(&queries(), 16).unwrap();
    let flat = |rows: Vec<Vec<u32>>| rows.into_iter().flatten().map(|id| id as f32).collect::<Vec<_>>();
    assert_eq!(flat(input_ids), reference["input_ids"].values);
    assert_eq!(flat(attention_mask), reference["attention_mask"].values);
}

#[test]
fn detector_outputs_match_transformers() {
    let reference = fixture().arrays("reference.safetensors");
    let detector = OwlVitDetector::load(&fixture().path(""), &device()).unwrap();
    let (model, ..) = OwlVitForObjectDetection::load(&fixture().path(""), &device()).unwrap();
    let tokens = detector.tokenize(&queries()).unwrap();
    for case in ["at_size", "resized"] {
        // The reference's own pixels: the model alone.
        let output = model.forward(reference[&format!("{case}.pixel_values")].tensor(), &tokens);
        for (name, got) in [("logits", output.logits), ("pred_boxes", output.pred_boxes)] {
            let error = relative_error(got, &reference[&format!("{case}.{name}")]);
            println!("{case} {name}: relative error {error:.2e}");
            assert!(error < EXACT, "{case} {name}: relative error {error:.2e}");
        }
        let error = relative_error(output.text_embeds, &reference[&format!("{case}.text_embeds")]);
        assert!(error < EXACT, "{case} text_embeds: relative error {error:.2e}");
    }
}

#[test]
fn best_boxes_match_post_processing() {
    let reference = fixture().arrays("reference.safetensors");
    let detector = OwlVitDetector::load(&fixture().path(""), &device()).unwrap();
    // At size our preprocessing is exact; resized, it goes through our Pillow-bicubic port (see vit_parity).
    for (case, pixel_tolerance, score_tolerance) in [("at_size", 1e-3, 1e-4), ("resized", 0.5, 5e-3)] {
        let detections = detector.detect(&image(case), &queries()).unwrap();
        let boxes = &reference[&format!("{case}.best_boxes")].values;
        let scores = &reference[&format!("{case}.best_scores")].values;
        for (q, detection) in detections.iter().enumerate() {
            println!("{case} {:?}: {detection:?}", QUERIES[q]);
            for (got, want) in detection.bbox.iter().zip(&boxes[q * 4..q * 4 + 4]) {
                assert!((got - want).abs() < pixel_tolerance, "{case} query {q}: box {:?} vs {want}", detection.bbox);
            }
            assert!((detection.score - scores[q]).abs() < score_tolerance, "{case} query {q}: score");
        }
    }
}

#[test]
fn grounder_masks_boxes_above_the_threshold() {
    let detector = || OwlVitDetector::load(&fixture().path(""), &device()).unwrap();
    let image = image("resized");
    let detections = detector().detect(&image, &queries()).unwrap();
    let masks = OwlVitGrounder::new(detector(), None, 0.0).unwrap().ground(&image, &queries()).unwrap();
    for (mask, detection) in masks.iter().zip(&detections) {
        let [x0, y0, x1, y1] = detection.bbox;
        assert!(mask.area() > 0, "{detection:?}");
        for (x, y) in mask.pixels() {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            assert!(px >= x0 && px < x1 && py >= y0 && py < y1, "({x}, {y}) outside {:?}", detection.bbox);
        }
    }
    let best = detections.iter().map(|d| d.score).fold(0.0, f32::max);
    let above = (best + 1.0) / 2.0;
    let masks = OwlVitGrounder::new(detector(), None, above).unwrap().ground(&image, &queries()).unwrap();
    assert!(masks.iter().all(|m| m.area() == 0), "no box scores {above}: every query is out of view");
    assert!(OwlVitGrounder::new(detector(), None, 1.5).unwrap_err().to_string().contains("threshold"));
}

#[test]
fn bad_checkpoints_name_the_file_or_tensor() {
    let dir = std::env::temp_dir().join(format!("glue-owlvit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors", "preprocessor_config.json", "merges.txt"] {
        std::fs::copy(fixture().path(file), dir.join(file)).unwrap();
    }
    let missing = format!("{:#}", OwlVitDetector::load(&dir, &device()).unwrap_err());
    assert!(missing.contains(&dir.join("vocab.json").display().to_string()), "{missing}");

    std::fs::copy(fixture().path("vocab.json"), dir.join("vocab.json")).unwrap();
    let config = std::fs::read_to_string(fixture().path("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["vision_config"]["intermediate_size"] = 64.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mismatch = format!("{:#}", OwlVitDetector::load(&dir, &device()).unwrap_err());
    for part in ["owlvit.vision_model.encoder.layers.0.mlp.fc1.weight", "[96, 48]", "[64, 48]"] {
        assert!(mismatch.contains(part), "{part:?} not in {mismatch}");
    }
}

#[test]
fn pytorch_pickle_weights_load_the_same() {
    let reference = fixture().arrays("reference.safetensors");
    let dir = std::env::temp_dir().join(format!("glue-owlvit-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "pytorch_model.bin", "preprocessor_config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(fixture().path(file), dir.join(file)).unwrap();
    }
    let (model, ..) = OwlVitForObjectDetection::load(&dir, &device()).unwrap();
    let detector = OwlVitDetector::load(&fixture().path(""), &device()).unwrap();
    let output = model.forward(reference["at_size.pixel_values"].tensor(), &detector.tokenize(&queries()).unwrap());
    let error = relative_error(output.logits, &reference["at_size.logits"]);
    assert!(error < EXACT, "logits from pytorch_model.bin: relative error {error:.2e}");
}
