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
use super::model::{ClipVisionModel, EncoderShape};
use super::preprocess::ImageProcessor;

/// Prefix of the vision tower's tensors in both `CLIPModel` and `CLIPVisionModel` checkpoints (stripped by the
/// store's key remapping for loading).
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
        check_shapes(&mut SafetensorsStore::from_file(weights), &vision_shapes(config, PREFIX, "pre_layrnorm"))
            .wrap_err_with(context)?;
        let mut store = SafetensorsStore::from_file(weights)
            .with_key_remapping(r"^vision_model\.", "")
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)));
        let mut model = Self::new(config, device);
        model.load_from(&mut store).map_err(|error| eyre!("{error}")).wrap_err_with(context)?;
        Ok(model)
    }
}

/// `dir/name`, or an error naming that path when it is not a file.
pub(crate) fn existing(dir: &Path, name: &str) -> eyre::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!("checkpoint file missing: {}", path.display());
    }
    Ok(path)
}

/// Tensor names (HF's, prefix included) with their HF shapes.
pub(crate) type Shapes = Vec<(String, Vec<usize>)>;

/// Checks that the store (without key remapping) holds every tensor of `expected` with its shape, naming the
/// first that is missing or has another shape.
pub(crate) fn check_shapes<S: ModuleStore>(store: &mut S, expected: &Shapes) -> eyre::Result<()>
where
    S::Error: std::fmt::Display,
{
    for (name, expected) in expected {
        let found = store
            .get_tensor(name)
            .map_err(|error| eyre!("{error}"))?
            .ok_or_else(|| eyre!("tensor {name} is missing"))?;
        if found.shape.as_slice() != expected.as_slice() {
            bail!("tensor {name} has shape {:?} but config.json implies {expected:?}", found.shape.as_slice());
        }
    }
    Ok(())
}

/// Every vision-tower tensor under `prefix` with its HF shape; `pre_norm` is the name of the LayerNorm before
/// the encoder (CLIP spells it `pre_layrnorm`, OWL-ViT `pre_layernorm`).
pub(crate) fn vision_shapes(config: &ClipVisionConfig, prefix: &str, pre_norm: &str) -> Shapes {
    let width = config.hidden_size;
    let patch = config.patch_size;
    let mut shapes = vec![
        (format!("{prefix}embeddings.class_embedding"), vec![width]),
        (format!("{prefix}embeddings.patch_embedding.weight"), vec![width, config.num_channels, patch, patch]),
        (format!("{prefix}embeddings.position_embedding.weight"), vec![config.num_positions(), width]),
    ];
    push_norm(&mut shapes, &format!("{prefix}{pre_norm}"), width);
    push_encoder(&mut shapes, prefix, &config.encoder_shape());
    push_norm(&mut shapes, &format!("{prefix}post_layernorm"), width);
    shapes
}

/// The encoder layers' tensors under `prefix` (`{prefix}encoder.layers.N.*`).
pub(crate) fn push_encoder(shapes: &mut Shapes, prefix: &str, encoder: &EncoderShape) {
    let width = encoder.hidden_size;
    for layer in 0..encoder.num_hidden_layers {
        let at = |part: &str| format!("{prefix}encoder.layers.{layer}.{part}");
        for projection in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            push_linear(shapes, &at(&format!("self_attn.{projection}")), width, width, true);
        }
        push_norm(shapes, &at("layer_norm1"), width);
        push_linear(shapes, &at("mlp.fc1"), width, encoder.intermediate_size, true);
        push_linear(shapes, &at("mlp.fc2"), encoder.intermediate_size, width, true);
        push_norm(shapes, &at("layer_norm2"), width);
    }
}

/// A LayerNorm's `weight` and `bias`.
pub(crate) fn push_norm(shapes: &mut Shapes, name: &str, width: usize) {
    for part in ["weight", "bias"] {
        shapes.push((format!("{name}.{part}"), vec![width]));
    }
}

/// A Linear layer's `weight` `[outputs, inputs]` (PyTorch layout) and, if it has one, `bias`.
pub(crate) fn push_linear(shapes: &mut Shapes, name: &str, inputs: usize, outputs: usize, bias: bool) {
    shapes.push((format!("{name}.weight"), vec![outputs, inputs]));
    if bias {
        shapes.push((format!("{name}.bias"), vec![outputs]));
    }
}
