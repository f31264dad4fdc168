//! OWL-ViT's configuration, field for field as Hugging Face's `OwlViTConfig`, `OwlViTTextConfig` and
//! `OwlViTVisionConfig` (`transformers/models/owlvit/configuration_owlvit.py`), read from a checkpoint's
//! `config.json` with the same defaults, so a file that leaves a field at its default reads the same here.

use std::path::Path;

use eyre::{WrapErr, ensure};
use serde::Deserialize;

use crate::vit::model::EncoderShape;
use crate::vit::{ClipVisionConfig, HiddenAct};

/// The text tower's shape (`OwlViTTextConfig`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct OwlVitTextConfig {
    /// Token vocabulary size (49408 for CLIP's BPE).
    pub vocab_size: usize,
    /// Token width.
    pub hidden_size: usize,
    /// Width of the encoder MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Longest query in tokens, start and end included (16).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
}

impl Default for OwlVitTextConfig {
    /// `OwlViTTextConfig()`: the text tower of `google/owlvit-base-patch32`.
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 16,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl OwlVitTextConfig {
    pub(crate) fn encoder_shape(&self) -> EncoderShape {
        EncoderShape {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// A whole OWL-ViT detector's shape (`OwlViTConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct OwlVitConfig {
    /// The text tower.
    pub text_config: OwlVitTextConfig,
    /// The vision tower: CLIP's, with OWL-ViT's defaults (768 px inputs, 32 px patches).
    pub vision_config: ClipVisionConfig,
    /// Width of the text projection the class head compares patches with.
    pub projection_dim: usize,
}

impl Default for OwlVitConfig {
    /// `OwlViTConfig()`: `google/owlvit-base-patch32`.
    fn default() -> Self {
        Self {
            text_config: OwlVitTextConfig::default(),
            vision_config: vision_defaults(),
            projection_dim: 512,
        }
    }
}

/// `OwlViTVisionConfig()`: `CLIPVisionConfig()` but for 768 px inputs.
fn vision_defaults() -> ClipVisionConfig {
    ClipVisionConfig { image_size: 768, ..ClipVisionConfig::default() }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    text_config: OwlVitTextConfig,
    #[serde(default)]
    vision_config: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
}

fn default_projection_dim() -> usize {
    OwlVitConfig::default().projection_dim
}

impl OwlVitConfig {
    /// Reads an `OwlViTForObjectDetection` `config.json`.
    pub fn from_config_json(text: &str) -> eyre::Result<Self> {
        let file: ConfigFile = serde_json::from_str(text)?;
        // The vision fields the file sets, over OWL-ViT's (not CLIP's) defaults.
        let mut vision = serde_json::to_value(vision_defaults())?;
        for (key, value) in file.vision_config {
            if vision.get(&key).is_some() {
                vision[key] = value;
            }
        }
        let config = Self {
            text_config: file.text_config,
            vision_config: ClipVisionConfig::from_config_json(&vision.to_string())?,
            projection_dim: file.projection_dim,
        };
        let text = &config.text_config;
        ensure!(
            text.num_attention_heads > 0 && text.hidden_size.is_multiple_of(text.num_attention_heads),
            "text_config: hidden_size {} is not a multiple of num_attention_heads {}",
            text.hidden_size,
            text.num_attention_heads
        );
        ensure!(
            config.projection_dim == text.hidden_size,
            "projection_dim {} differs from text_config.hidden_size {}: OWL-ViT's class head compares patch \
             embeddings of the text width with the projected queries",
            config.projection_dim,
            text.hidden_size
        );
        Ok(config)
    }

    /// [`Self::from_config_json`] on a file.
    pub fn from_file(path: &Path) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
        Self::from_config_json(&text).wrap_err_with(|| format!("bad OWL-ViT config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_owlvits_and_the_file_overrides_them() {
        let config = OwlVitConfig::from_config_json("{}").unwrap();
        assert_eq!(config, OwlVitConfig::default());
        assert_eq!((config.vision_config.image_size, config.vision_config.patch_size, config.vision_config.grid_size()), (768, 32, 24));
        let small = OwlVitConfig::from_config_json(
            r#"{"projection_dim": 16, "text_config": {"hidden_size": 16, "num_attention_heads": 2},
                "vision_config": {"image_size": 64, "patch_size": 16, "model_type": "owlvit_vision_model"}}"#,
        )
        .unwrap();
        assert_eq!((small.projection_dim, small.text_config.hidden_size, small.text_config.vocab_size), (16, 16, 49408));
        assert_eq!((small.vision_config.image_size, small.vision_config.hidden_size, small.vision_config.grid_size()), (64, 768, 4));
        let bad = OwlVitConfig::from_config_json(r#"{"text_config": {"hidden_size": 10, "num_attention_heads": 4}}"#);
        assert!(bad.unwrap_err().to_string().contains("text_config"));
        let bad = OwlVitConfig::from_config_json(r#"{"projection_dim": 8}"#).unwrap_err().to_string();
        assert!(bad.contains("projection_dim 8 differs from text_config.hidden_size 512"), "{bad}");
    }
}
