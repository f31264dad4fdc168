//! SAM's configuration, field for field as Hugging Face's `SamConfig`, `SamVisionConfig`,
//! `SamPromptEncoderConfig` and `SamMaskDecoderConfig` (`transformers/models/sam/configuration_sam.py`), with the
//! same defaults (those of `facebook/sam-vit-base`).

use std::path::Path;

use eyre::{WrapErr, ensure};
use serde::Deserialize;

/// The image encoder (`SamVisionConfig`): a ViT with windowed and global attention and a convolutional neck.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct SamVisionConfig {
    /// Token width.
    pub hidden_size: usize,
    /// Channels of the neck's output, the image embedding.
    pub output_channels: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Side of the square (padded) input.
    pub image_size: usize,
    /// Side of a patch.
    pub patch_size: usize,
    /// Epsilon of the encoder layers' LayerNorms.
    pub layer_norm_eps: f64,
    /// Whether the qkv projection has a bias.
    pub qkv_bias: bool,
    /// MLP hidden width relative to `hidden_size`, when `mlp_dim` is not given.
    pub mlp_ratio: f64,
    /// MLP hidden width.
    pub mlp_dim: Option<usize>,
    /// Whether learned absolute positions are added to the patches.
    pub use_abs_pos: bool,
    /// Whether attention adds decomposed relative positions.
    pub use_rel_pos: bool,
    /// Side of the attention windows of the windowed layers.
    pub window_size: usize,
    /// The layers that attend globally (every other layer attends within windows).
    pub global_attn_indexes: Vec<usize>,
    /// Half the width of the random Fourier position features (`output_channels / 2`).
    pub num_pos_feats: usize,
}

impl Default for SamVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            output_channels: 256,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 1024,
            patch_size: 16,
            layer_norm_eps: 1e-6,
            qkv_bias: true,
            mlp_ratio: 4.0,
            mlp_dim: None,
            use_abs_pos: true,
            use_rel_pos: true,
            window_size: 14,
            global_attn_indexes: vec![2, 5, 8, 11],
            num_pos_feats: 128,
        }
    }
}

impl SamVisionConfig {
    /// The MLP's hidden width: `mlp_dim`, else `hidden_size · mlp_ratio`.
    pub fn mlp_width(&self) -> usize {
        self.mlp_dim.unwrap_or((self.hidden_size as f64 * self.mlp_ratio) as usize)
    }

    /// Side of the patch grid, hence of the image embedding.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// The prompt encoder (`SamPromptEncoderConfig`); only box prompts are read here.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct SamPromptEncoderConfig {
    /// Embedding width (the image embedding's channels).
    pub hidden_size: usize,
    /// Side of the model's input, the frame box corners are normalised by.
    pub image_size: usize,
    /// Point-type embeddings (positive, negative, box corner 1, box corner 2).
    pub num_point_embeddings: usize,
}

impl Default for SamPromptEncoderConfig {
    fn default() -> Self {
        Self { hidden_size: 256, image_size: 1024, num_point_embeddings: 4 }
    }
}

/// The mask decoder (`SamMaskDecoderConfig`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct SamMaskDecoderConfig {
    /// Token width.
    pub hidden_size: usize,
    /// Hidden width of the two-way blocks' MLP.
    pub mlp_dim: usize,
    /// Two-way attention blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Width reduction of the cross-attentions.
    pub attention_downsample_rate: usize,
    /// Masks of the multi-mask output (one more token predicts the single mask).
    pub num_multimask_outputs: usize,
    /// Layers of the IoU head.
    pub iou_head_depth: usize,
    /// Hidden width of the IoU head.
    pub iou_head_hidden_dim: usize,
    /// Epsilon of the two-way blocks' LayerNorms.
    pub layer_norm_eps: f64,
}

impl Default for SamMaskDecoderConfig {
    fn default() -> Self {
        Self {
            hidden_size: 256,
            mlp_dim: 2048,
            num_hidden_layers: 2,
            num_attention_heads: 8,
            attention_downsample_rate: 2,
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            layer_norm_eps: 1e-6,
        }
    }
}

/// A whole SAM (`SamConfig`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SamConfig {
    /// The image encoder.
    pub vision_config: SamVisionConfig,
    /// The prompt encoder.
    pub prompt_encoder_config: SamPromptEncoderConfig,
    /// The mask decoder.
    pub mask_decoder_config: SamMaskDecoderConfig,
}

impl SamConfig {
    /// Reads a `SamModel` `config.json`.
    pub fn from_config_json(text: &str) -> eyre::Result<Self> {
        let config: Self = serde_json::from_str(text)?;
        let (vision, prompt, decoder) = (&config.vision_config, &config.prompt_encoder_config, &config.mask_decoder_config);
        ensure!(
            vision.num_attention_heads > 0 && vision.hidden_size.is_multiple_of(vision.num_attention_heads),
            "vision_config: hidden_size {} is not a multiple of num_attention_heads {}",
            vision.hidden_size,
            vision.num_attention_heads
        );
        ensure!(
            vision.patch_size > 0 && vision.image_size.is_multiple_of(vision.patch_size),
            "vision_config: image_size {} is not a multiple of patch_size {}",
            vision.image_size,
            vision.patch_size
        );
        ensure!(
            vision.output_channels == 2 * vision.num_pos_feats
                && prompt.hidden_size == vision.output_channels
                && decoder.hidden_size == vision.output_channels,
            "the image embedding's width must agree: vision_config.output_channels {}, 2 x num_pos_feats {}, \
             prompt_encoder_config.hidden_size {}, mask_decoder_config.hidden_size {}",
            vision.output_channels,
            2 * vision.num_pos_feats,
            prompt.hidden_size,
            decoder.hidden_size
        );
        ensure!(
            decoder.hidden_size.is_multiple_of(8) && decoder.num_attention_heads > 0,
            "mask_decoder_config: hidden_size {} must be a multiple of 8 (the upscaling divides it by 4, then 2)",
            decoder.hidden_size
        );
        Ok(config)
    }

    /// [`Self::from_config_json`] on a file.
    pub fn from_file(path: &Path) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
        Self::from_config_json(&text).wrap_err_with(|| format!("bad SAM config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sam_vit_base_and_widths_must_agree() {
        let config = SamConfig::from_config_json("{}").unwrap();
        assert_eq!(config.vision_config.mlp_width(), 3072);
        assert_eq!(config.vision_config.grid_size(), 64);
        let bad = SamConfig::from_config_json(r#"{"vision_config": {"output_channels": 128}}"#).unwrap_err();
        assert!(bad.to_string().contains("output_channels 128"), "{bad}");
    }
}
