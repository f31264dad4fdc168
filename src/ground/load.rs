//! Loading a Hugging Face OWL-ViT checkpoint folder as published (`config.json`, `model.safetensors` or the
//! older uploads' `pytorch_model.bin`, `preprocessor_config.json`, `vocab.json`, `merges.txt`), by the reference's
//! tensor names.
//!
//! The store strips `owlvit.` (the towers and the text projection live under it) and reads the vision tower's
//! `pre_layernorm` as [`crate::vit::ClipVisionModel`]'s CLIP spelling `pre_layrnorm`; `PyTorchToBurnAdapter`
//! transposes Linear weights and renames LayerNorm parameters. `owlvit.visual_projection` and
//! `owlvit.logit_scale` (CLIP's image-text matching) are not used by detection and stay unread. Every tensor's
//! shape is checked against `config.json` first, so a mismatch names the HF tensor and both shapes.

use std::path::Path;

use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::{DType, Device};
use eyre::{WrapErr, eyre};

use super::config::OwlVitConfig;
use super::owlvit::OwlVitForObjectDetection;
use super::tokenizer::ClipTokenizer;
use crate::vit::ImageProcessor;
use crate::vit::load::{Shapes, check_shapes, existing, push_encoder, push_linear, push_norm, vision_shapes};

impl OwlVitForObjectDetection {
    /// Loads a HF OWL-ViT checkpoint folder: the detector on `device`, its configuration, its image processor
    /// and its tokenizer.
    pub fn load(
        dir: &Path,
        device: &Device,
    ) -> eyre::Result<(Self, OwlVitConfig, ImageProcessor, ClipTokenizer)> {
        let config = OwlVitConfig::from_file(&existing(dir, "config.json")?)?;
        let processor = ImageProcessor::from_file(&existing(dir, "preprocessor_config.json")?)?;
        let tokenizer = ClipTokenizer::from_dir(dir)?;
        let weights = match existing(dir, "model.safetensors") {
            Ok(file) => file,
            Err(missing) => existing(dir, "pytorch_model.bin").map_err(|_| missing)?,
        };
        let model = Self::load_weights(&config, &weights, device)?;
        Ok((model, config, processor, tokenizer))
    }

    /// Loads a detector of `config`'s shape from a HF weights file: safetensors, or a PyTorch pickle when the
    /// name ends in `.bin` or `.pt`/`.pth`.
    pub fn load_weights(config: &OwlVitConfig, weights: &Path, device: &Device) -> eyre::Result<Self> {
        let context = || format!("cannot load OWL-ViT weights from {}", weights.display());
        let mut model = Self::new(config, device);
        let pickle = weights.extension().is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
        if pickle {
            check_shapes(&mut PytorchStore::from_file(weights), &expected_shapes(config)).wrap_err_with(context)?;
            // PytorchStore applies the PyTorch-to-burn adapter itself.
            let mut store = PytorchStore::from_file(weights)
                .with_key_remapping(PRE_NORM.0, PRE_NORM.1)
                .with_key_remapping(OWLVIT.0, OWLVIT.1);
            model.load_from(&mut store).map_err(|error| eyre!("{error}")).wrap_err_with(context)?;
        } else {
            check_shapes(&mut SafetensorsStore::from_file(weights), &expected_shapes(config)).wrap_err_with(context)?;
            let mut store = SafetensorsStore::from_file(weights)
                .with_key_remapping(PRE_NORM.0, PRE_NORM.1)
                .with_key_remapping(OWLVIT.0, OWLVIT.1)
                .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)));
            model.load_from(&mut store).map_err(|error| eyre!("{error}")).wrap_err_with(context)?;
        }
        Ok(model)
    }
}

/// OWL-ViT's spelling of the vision tower's first LayerNorm, read as CLIP's (pattern, replacement).
const PRE_NORM: (&str, &str) = (r"^owlvit\.vision_model\.pre_layernorm\.", "vision_model.pre_layrnorm.");
/// The prefix of the towers and the text projection, stripped (pattern, replacement).
const OWLVIT: (&str, &str) = (r"^owlvit\.", "");

/// Every tensor detection reads, by HF name, with its HF shape.
fn expected_shapes(config: &OwlVitConfig) -> Shapes {
    let vision = config.vision_config.hidden_size;
    let text = &config.text_config;
    let mut shapes = vision_shapes(&config.vision_config, "owlvit.vision_model.", "pre_layernorm");
    shapes.push(("owlvit.text_model.embeddings.token_embedding.weight".into(), vec![text.vocab_size, text.hidden_size]));
    shapes.push((
        "owlvit.text_model.embeddings.position_embedding.weight".into(),
        vec![text.max_position_embeddings, text.hidden_size],
    ));
    push_encoder(&mut shapes, "owlvit.text_model.", &text.encoder_shape());
    push_norm(&mut shapes, "owlvit.text_model.final_layer_norm", text.hidden_size);
    push_linear(&mut shapes, "owlvit.text_projection", text.hidden_size, config.projection_dim, false);
    push_linear(&mut shapes, "class_head.dense0", vision, text.hidden_size, true);
    push_linear(&mut shapes, "class_head.logit_shift", vision, 1, true);
    push_linear(&mut shapes, "class_head.logit_scale", vision, 1, true);
    push_linear(&mut shapes, "box_head.dense0", vision, vision, true);
    push_linear(&mut shapes, "box_head.dense1", vision, vision, true);
    push_linear(&mut shapes, "box_head.dense2", vision, 4, true);
    push_norm(&mut shapes, "layer_norm", vision);
    shapes
}
