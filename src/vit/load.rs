//! Loading a Hugging Face CLIP checkpoint folder as it is published (`config.json`, `model.safetensors`,
//! `preprocessor_config.json`), whole `CLIPModel` or `CLIPVisionModel`, by HF's own tensor names.
//!
//! Both layouts store the vision tower under `vision_model.`; stripping that prefix leaves exactly the
//! [`ClipVisionModel`] module paths. `burn::store`'s `PyTorchToBurnAdapter` transposes Linear weights
//! (`[out, in]` to `[in, out]`) and maps LayerNorm `weight`/`bias` to `gamma`/`beta`; text-tower and projection
//! tensors are left unused. Before anything is applied, every tensor's shape is checked against what
//! `config.json` implies, so a mismatch names the HF tensor and both shapes in HF's layout.

use std::path::{Path, PathBuf};

use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::{DType, Device};
use eyre::{WrapErr, bail, eyre};

use super::config::ClipVisionConfig;
use super::model::ClipVisionModel;
use super::preprocess::ImageProcessor;

/// Prefix of the vision tower's tensors in both `CLIPModel` and `CLIPVisionModel` checkpoints (stripped by the
/// store's key remapping).
const PREFIX: &str = "vision_model.";

impl ClipVisionModel {
    /// Loads a HF CLIP checkpoint folder: the model on `device`, its configuration, and the image processor its
    /// `preprocessor_config.json` describes.
    pub fn load(dir: &Path, device: &Device) -> eyre::Result<(Self, ClipVisionConfig, ImageProcessor)> {
        let config = ClipVisionConfig::from_file(&existing(dir, "config.json")?)?;
        let processor = ImageProcessor::from_file(&existing(dir, "preprocessor_config.json")?)?;
        let model = Self::load_weights(&config, &existing(dir, "model.safetensors")?, device)?;
        Ok((model, config, processor))
    }

    /// Loads the vision tower of `config`'s shape from a HF safetensors file.
    pub fn load_weights(config: &ClipVisionConfig, weights: &Path, device: &Device) -> eyre::Result<Self> {
        let context = || format!("cannot load CLIP weights from {}", weights.display());
        let mut store = SafetensorsStore::from_file(weights)
            .with_key_remapping(r"^vision_model\.", "")
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)));
        check_shapes(&mut store, config).wrap_err_with(context)?;
        let mut model = Self::new(config, device);
        model.load_from(&mut store).map_err(|error| eyre!("{error}")).wrap_err_with(context)?;
        Ok(model)
    }
}

/// `dir/name`, or an error naming that path when it is not a file.
fn existing(dir: &Path, name: &str) -> eyre::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!("CLIP checkpoint file missing: {}", path.display());
    }
    Ok(path)
}

/// Checks that the file holds every vision tensor with the shape `config` implies (HF layout).
fn check_shapes(store: &mut SafetensorsStore, config: &ClipVisionConfig) -> eyre::Result<()> {
    for (name, expected) in expected_shapes(config) {
        let found = store
            .get_tensor(&name)
            .map_err(|error| eyre!("{error}"))?
            .ok_or_else(|| eyre!("tensor {PREFIX}{name} is missing"))?;
        if found.shape.as_slice() != expected.as_slice() {
            bail!("tensor {PREFIX}{name} has shape {:?} but config.json implies {expected:?}", found.shape.as_slice());
        }
    }
    Ok(())
}

/// Every vision-tower tensor (name without [`PREFIX`]) with its HF shape.
fn expected_shapes(config: &ClipVisionConfig) -> Vec<(String, Vec<usize>)> {
    let width = config.hidden_size;
    let patch = config.patch_size;
    let mut shapes = vec![
        ("embeddings.class_embedding".to_string(), vec![width]),
        ("embeddings.patch_embedding.weight".to_string(), vec![width, config.num_channels, patch, patch]),
        ("embeddings.position_embedding.weight".to_string(), vec![config.num_positions(), width]),
    ];
    let norm = |shapes: &mut Vec<(String, Vec<usize>)>, name: &str| {
        for part in ["weight", "bias"] {
            shapes.push((format!("{name}.{part}"), vec![width]));
        }
    };
    let linear = |shapes: &mut Vec<(String, Vec<usize>)>, name: &str, inputs: usize, outputs: usize| {
        shapes.push((format!("{name}.weight"), vec![outputs, inputs]));
        shapes.push((format!("{name}.bias"), vec![outputs]));
    };
    norm(&mut shapes, "pre_layrnorm");
    for layer in 0..config.num_hidden_layers {
        let at = |part: &str| format!("encoder.layers.{layer}.{part}");
        for projection in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            linear(&mut shapes, &at(&format!("self_attn.{projection}")), width, width);
        }
        norm(&mut shapes, &at("layer_norm1"));
        linear(&mut shapes, &at("mlp.fc1"), width, config.intermediate_size);
        linear(&mut shapes, &at("mlp.fc2"), config.intermediate_size, width);
        norm(&mut shapes, &at("layer_norm2"));
    }
    norm(&mut shapes, "post_layernorm");
    shapes
}
