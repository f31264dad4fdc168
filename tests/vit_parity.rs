//! Parity of `glue::vit` with Hugging Face `transformers` (`CLIPVisionModel`, `CLIPImageProcessor`) on the tiny
//! checkpoints `tests/fixtures/make_clip.py` builds, plus the loader's error reporting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::store::{ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, Tensor, TensorData};
use glue::vit::{ClipVisionConfig, ClipVisionModel, HiddenAct, ImageProcessor, features};

/// Relative error where no resize is involved.
const EXACT: f64 = 1e-4;
/// Relative error through our own resize of an image (Pillow bicubic reimplemented).
const RESIZED: f64 = 2e-2;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// All tensors of a safetensors file, by name.
fn read_safetensors(path: &Path) -> HashMap<String, TensorData> {
    let mut store = SafetensorsStore::from_file(path);
    let names = store.keys().unwrap();
    names
        .into_iter()
        .map(|name| {
            let data = bridge::to_data(store.get_tensor(&name).unwrap().unwrap()).unwrap();
            (name, data)
        })
        .collect()
}

/// ||ours - reference|| / ||reference||, after checking the shapes agree.
fn relative_error(ours: &TensorData, reference: &TensorData) -> f64 {
    assert_eq!(ours.shape(), reference.shape(), "shape");
    let (a, b) = (ours.as_slice::<f32>().unwrap(), reference.as_slice::<f32>().unwrap());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (diff / norm).sqrt()
}

fn check(label: &str, ours: &TensorData, reference: &TensorData, tolerance: f64) {
    let error = relative_error(ours, reference);
    println!("{label}: relative error {error:.3e}");
    assert!(error < tolerance, "{label}: relative error {error:.3e} >= {tolerance:.0e}");
}

struct Fixture {
    model: ClipVisionModel,
    processor: ImageProcessor,
    reference: HashMap<String, TensorData>,
    dir: PathBuf,
    device: Device,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let device = Device::flex();
        let dir = fixture(name);
        let (model, _, processor) = ClipVisionModel::load(&dir, &device).unwrap();
        let reference = read_safetensors(&dir.join("reference.safetensors"));
        Self { model, processor, reference, dir, device }
    }

    fn reference(&self, case: &str, output: &str) -> &TensorData {
        &self.reference[&format!("{case}.{output}")]
    }

    /// Runs `pixels` through the model and compares both outputs with the reference of `case`.
    fn check_outputs(&self, label: &str, case: &str, pixels: TensorData, tolerance: f64) {
        let output = self.model.forward(Tensor::from_data(pixels, &self.device));
        let last = output.last_hidden_state.into_data();
        check(&format!("{label} last_hidden_state"), &last, self.reference(case, "last_hidden_state"), tolerance);
        let pooled = output.pooler_output.into_data();
        check(&format!("{label} pooler_output"), &pooled, self.reference(case, "pooler_output"), tolerance);
    }

    fn preprocess(&self, file: &str) -> TensorData {
        self.processor.preprocess(&image::open(self.dir.join(file)).unwrap().to_rgb8())
    }

    /// Every comparison the fixture supports.
    fn check_all(&self, name: &str) {
        for case in ["at_size", "resized", "interpolated"] {
            let pixels = self.reference(case, "pixel_values").clone();
            self.check_outputs(&format!("{name} {case} (HF pixels)"), case, pixels, EXACT);
        }
        let pixels = self.preprocess("image_at_size.png");
        check(&format!("{name} at_size pixel_values"), &pixels, self.reference("at_size", "pixel_values"), EXACT);
        self.check_outputs(&format!("{name} at_size (our pixels)"), "at_size", pixels, EXACT);
        let pixels = self.preprocess("image_resize.png");
        check(&format!("{name} resized pixel_values"), &pixels, self.reference("resized", "pixel_values"), RESIZED);
        self.check_outputs(&format!("{name} resized (our pixels)"), "resized", pixels, RESIZED);
    }
}

#[test]
fn vision_only_quick_gelu_matches_transformers() {
    Fixture::load("clip-vision-quickgelu").check_all("clip-vision-quickgelu");
}

#[test]
fn whole_clip_model_gelu_matches_transformers() {
    Fixture::load("clip-whole-gelu").check_all("clip-whole-gelu");
}

#[test]
fn configs_read_both_layouts() {
    let vision = ClipVisionConfig::from_file(&fixture("clip-vision-quickgelu/config.json")).unwrap();
    assert_eq!((vision.hidden_act, vision.image_size, vision.intermediate_size), (HiddenAct::QuickGelu, 64, 256));
    let whole = ClipVisionConfig::from_file(&fixture("clip-whole-gelu/config.json")).unwrap();
    assert_eq!((whole.hidden_act, whole.image_size, whole.layer_norm_eps), (HiddenAct::Gelu, 112, 1e-6));
    assert_eq!((whole.hidden_size, whole.num_hidden_layers, whole.num_attention_heads), (64, 2, 4));
    let b16 = ClipVisionConfig::vit_b16();
    assert_eq!((b16.num_positions(), b16.hidden_size), (197, 768));
}

#[test]
fn features_writes_model_outputs() {
    let dir = fixture("clip-vision-quickgelu");
    let out = scratch_dir("features").join("features.safetensors");
    features(&dir, &dir.join("image_at_size.png"), &out).unwrap();
    let written = read_safetensors(&out);
    let reference = read_safetensors(&dir.join("reference.safetensors"));
    for name in ["last_hidden_state", "pooler_output"] {
        check(&format!("features {name}"), &written[name], &reference[&format!("at_size.{name}")], EXACT);
    }
    assert_eq!(written["last_hidden_state"].shape().as_slice(), [1, 17, 64]);
    assert_eq!(written["pooler_output"].shape().as_slice(), [1, 64]);
}

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let dir = scratch_dir("mismatch");
    for file in ["model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(fixture("clip-vision-quickgelu").join(file), dir.join(file)).unwrap();
    }
    let config = std::fs::read_to_string(fixture("clip-vision-quickgelu/config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["intermediate_size"] = 128.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let error = format!("{:#}", ClipVisionModel::load(&dir, &Device::flex()).unwrap_err());
    println!("{error}");
    for part in ["vision_model.encoder.layers.0.mlp.fc1.weight", "[256, 64]", "[128, 64]"] {
        assert!(error.contains(part), "{part:?} not in {error:?}");
    }
}

#[test]
fn missing_file_names_the_path() {
    let dir = scratch_dir("missing");
    for file in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixture("clip-vision-quickgelu").join(file), dir.join(file)).unwrap();
    }
    let error = format!("{:#}", ClipVisionModel::load(&dir, &Device::flex()).unwrap_err());
    println!("{error}");
    let path = dir.join("model.safetensors");
    assert!(error.contains(&path.display().to_string()), "{path:?} not in {error:?}");
}

/// A fresh, empty directory for one test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glue-vit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
