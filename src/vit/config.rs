//! The vision-tower configuration, field for field as Hugging Face's `CLIPVisionConfig`
//! (`transformers/models/clip/configuration_clip.py`), read from a checkpoint's `config.json`.

use std::path::Path;

use eyre::{Context, ensure};
use serde::{Deserialize, Serialize};

/// Activation of the encoder MLP, by the name `config.json` gives it (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// `x * sigmoid(1.702 x)`, the activation of the original OpenAI CLIP weights.
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

/// Shape of a CLIP vision transformer. Field names and defaults are those of `CLIPVisionConfig`, so a
/// `config.json` that leaves a field at its default (as `save_pretrained` does) reads the same here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    /// Token width (768 for ViT-B).
    pub hidden_size: usize,
    /// Width of the encoder MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Input channels (3 for RGB).
    pub num_channels: usize,
    /// Side of the square input the position embeddings were trained for.
    pub image_size: usize,
    /// Side of a square patch (the stride of the patch-embedding convolution).
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    /// `CLIPVisionConfig()`'s defaults: ViT-B/32 at 224 pixels.
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// A `config.json` as `transformers` writes it: a whole `CLIPModel` config keeps the vision tower under
/// `vision_config`, a `CLIPVisionModel` config has its fields at the top level.
#[derive(Deserialize)]
struct ConfigFile {
    vision_config: Option<ClipVisionConfig>,
    #[serde(flatten)]
    top_level: ClipVisionConfig,
}

impl ClipVisionConfig {
    /// OpenAI's ViT-B/16 at 224 pixels (`openai/clip-vit-base-patch16`), the global and local encoder of
    /// the GLUE paper (sec. III-C: 197 tokens of width 768).
    pub fn vit_b16() -> Self {
        Self { patch_size: 16, ..Self::default() }
    }

    /// The frozen local encoder of the `small` CPU configuration (see [`crate::pretrain`]): a 4-layer,
    /// width-96 ViT with 4 px patches on 56 px inputs, so one 112 px quadrant of a 224 px frame gives 14x14
    /// patches and the 2x2 quadrants the paper's 28x28 local grid (one cell per 8x8 frame pixels). Exact GELU,
    /// as newly trained HF models use.
    pub fn small_local() -> Self {
        Self {
            hidden_size: 96,
            intermediate_size: 384,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            image_size: 56,
            patch_size: 4,
            hidden_act: HiddenAct::Gelu,
            ..Self::default()
        }
    }

    /// Reads the vision tower's configuration from a `config.json`, whole `CLIPModel` or vision-only.
    pub fn from_config_json(text: &str) -> eyre::Result<Self> {
        let file: ConfigFile = serde_json::from_str(text)?;
        let config = file.vision_config.unwrap_or(file.top_level);
        config.validate()?;
        Ok(config)
    }

    /// [`Self::from_config_json`] on a file.
    pub fn from_file(path: &Path) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
        Self::from_config_json(&text).wrap_err_with(|| format!("bad CLIP config {}", path.display()))
    }

    /// Side of the patch grid at the configured image size.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image at the configured size: the class token and one per patch.
    pub fn num_positions(&self) -> usize {
        self.grid_size() * self.grid_size() + 1
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn validate(&self) -> eyre::Result<()> {
        ensure!(
            self.num_attention_heads > 0 && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size {} is not a multiple of num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(
            self.patch_size > 0 && self.image_size >= self.patch_size,
            "image_size {} holds no patch of patch_size {}",
            self.image_size,
            self.patch_size
        );
        Ok(())
    }
}
