//! The pretrained encoder saved as a Hugging Face CLIP vision folder (module doc of [`super`], "Checkpoint").

use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use eyre::{WrapErr, eyre};

use crate::vit::{ClipVisionConfig, ClipVisionModel, ImageProcessor};

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
