//! SAM's image encoder, module for module as Hugging Face's `SamVisionEncoder` (`transformers/models/sam/
//! modeling_sam.py`): patch embedding, learned absolute positions, pre-norm layers that attend within
//! `window_size` windows (zero-padded to whole windows) or, at `global_attn_indexes`, over the whole grid, both
//! with decomposed relative positions (MViTv2), and a neck of two bias-free convolutions with channel LayerNorms.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor};

use super::config::SamVisionConfig;

/// `SamVisionEncoder`: `[batch, 3, size, size]` pixels to the image embedding `[batch, output_channels, grid,
/// grid]`.
#[derive(Module, Debug)]
pub struct SamVisionEncoder {
    patch_embed: PatchEmbed,
    pos_embed: Option<Param<Tensor<4>>>,
    layers: Vec<SamVisionLayer>,
    neck: Neck,
}

#[derive(Module, Debug)]
struct PatchEmbed {
    projection: Conv2d,
}

impl SamVisionEncoder {
    /// A freshly initialised encoder (weights are normally loaded, see [`super::SamModel::load`]).
    pub fn new(config: &SamVisionConfig, device: &Device) -> Self {
        let (width, patch, grid) = (config.hidden_size, config.patch_size, config.grid_size());
        Self {
            patch_embed: PatchEmbed {
                projection: Conv2dConfig::new([config.num_channels, width], [patch, patch])
                    .with_stride([patch, patch])
                    .init(device),
            },
            pos_embed: config.use_abs_pos.then(|| Initializer::Zeros.init([1, grid, grid, width], device)),
            layers: (0..config.num_hidden_layers)
                .map(|i| {
                    let window = if config.global_attn_indexes.contains(&i) { 0 } else { config.window_size };
                    SamVisionLayer::new(config, window, device)
                })
                .collect(),
            neck: Neck::new(config, device),
        }
    }

    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<4> {
        // [batch, width, grid, grid] -> channels last.
        let mut hidden = self.patch_embed.projection.forward(pixel_values).permute([0, 2, 3, 1]);
        if let Some(pos_embed) = &self.pos_embed {
            hidden = hidden + pos_embed.val();
        }
        let hidden = self.layers.iter().fold(hidden, |hidden, layer| layer.forward(hidden));
        self.neck.forward(hidden)
    }
}

/// `SamVisionLayer`: pre-norm (windowed) attention and MLP, each with a residual connection.
#[derive(Module, Debug)]
struct SamVisionLayer {
    layer_norm1: LayerNorm,
    attn: VisionAttention,
    layer_norm2: LayerNorm,
    mlp: MlpBlock,
    /// 0: global attention.
    window_size: usize,
}

impl SamVisionLayer {
    fn new(config: &SamVisionConfig, window_size: usize, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(config.hidden_size).with_epsilon(config.layer_norm_eps).init(device);
        Self {
            layer_norm1: norm(),
            attn: VisionAttention::new(config, window_size, device),
            layer_norm2: norm(),
            mlp: MlpBlock::new(config.hidden_size, config.mlp_width(), device),
            window_size,
        }
    }

    /// `[batch, height, width, channels]` in and out.
    fn forward(&self, hidden: Tensor<4>) -> Tensor<4> {
        let normed = self.layer_norm1.forward(hidden.clone());
        let attended = if self.window_size == 0 {
            self.attn.forward(normed)
        } else {
            let [batch, height, width, channels] = normed.dims();
            let w = self.window_size;
            let (rows, cols) = (height.div_ceil(w), width.div_ceil(w));
            // window_partition: zero-pad to whole windows, then one batch entry per window.
            let padded = pad_bottom_right(normed, rows * w, cols * w);
            let windows = padded
                .reshape([batch, rows, w, cols, w, channels])
                .permute([0, 1, 3, 2, 4, 5])
                .reshape([batch * rows * cols, w, w, channels]);
            let attended = self.attn.forward(windows);
            // window_unpartition: back to the padded grid, padding dropped.
            attended
                .reshape([batch, rows, cols, w, w, channels])
                .permute([0, 1, 3, 2, 4, 5])
                .reshape([batch, rows * w, cols * w, channels])
                .slice([0..batch, 0..height, 0..width, 0..channels])
        };
        let hidden = hidden + attended;
        hidden.clone() + self.mlp.forward(self.layer_norm2.forward(hidden))
    }
}

/// Zero-pads `[batch, height, width, channels]` to `[batch, rows, cols, channels]` at the bottom and right.
fn pad_bottom_right(x: Tensor<4>, rows: usize, cols: usize) -> Tensor<4> {
    let [batch, height, width, channels] = x.dims();
    let device = x.device();
    let x = if cols > width {
        Tensor::cat(vec![x, Tensor::zeros([batch, height, cols - width, channels], &device)], 2)
    } else {
        x
    };
    if rows > height { Tensor::cat(vec![x, Tensor::zeros([batch, rows - height, cols, channels], &device)], 1) } else { x }
}

/// `SamVisionAttention`: fused qkv, scale `head_dim^-0.5`, decomposed relative positions added to the logits.
#[derive(Module, Debug)]
struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    /// `[2·size - 1, head_dim]` per axis, for the window (or the whole grid for global layers).
    rel_pos_h: Option<Param<Tensor<2>>>,
    rel_pos_w: Option<Param<Tensor<2>>>,
    num_heads: usize,
}

impl VisionAttention {
    fn new(config: &SamVisionConfig, window_size: usize, device: &Device) -> Self {
        let width = config.hidden_size;
        let size = if window_size == 0 { config.grid_size() } else { window_size };
        let head_dim = width / config.num_attention_heads;
        let table = || Initializer::Zeros.init([2 * size - 1, head_dim], device);
        Self {
            qkv: LinearConfig::new(width, 3 * width).with_bias(config.qkv_bias).init(device),
            proj: LinearConfig::new(width, width).init(device),
            rel_pos_h: config.use_rel_pos.then(table),
            rel_pos_w: config.use_rel_pos.then(table),
            num_heads: config.num_attention_heads,
        }
    }

    /// `[batch, height, width, channels]` in and out.
    fn forward(&self, hidden: Tensor<4>) -> Tensor<4> {
        let [batch, height, width, channels] = hidden.dims();
        let (heads, head_dim, tokens) = (self.num_heads, channels / self.num_heads, height * width);
        // [3, batch, heads, tokens, head_dim]
        let qkv = self.qkv.forward(hidden).reshape([batch, tokens, 3, heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([batch, heads, tokens, head_dim]);
        let (query, key, value) = (part(0), part(1), part(2));
        let bias = match (&self.rel_pos_h, &self.rel_pos_w) {
            (Some(h), Some(w)) => Some(
                decomposed_rel_pos(query.clone().reshape([batch * heads, height, width, head_dim]), &h.val(), &w.val())
                    .reshape([batch, heads, tokens, tokens]),
            ),
            _ => None,
        };
        // The fused kernel's default scale is 1/sqrt(head_dim), SAM's `self.scale`.
        let out = attention(query, key, value, None, bias, AttentionModuleOptions::default());
        let out = out.reshape([batch, heads, height, width, head_dim]).permute([0, 2, 3, 1, 4]);
        self.proj.forward(out.reshape([batch, height, width, channels]))
    }
}

/// `get_decomposed_rel_pos` for a square-or-not grid attending to itself: for query `(qh, qw)` and key
/// `(kh, kw)`, `q · R_h[qh - kh] + q · R_w[qw - kw]`, `[n, height·width, height·width]` for `query` `[n,
/// height, width, head_dim]` (unscaled). The tables must be `2·side - 1` long: the reference resamples other
/// lengths, which trained checkpoints never need at their own input size.
fn decomposed_rel_pos(query: Tensor<4>, rel_pos_h: &Tensor<2>, rel_pos_w: &Tensor<2>) -> Tensor<3> {
    let [n, height, width, dim] = query.dims();
    let r_h = relative_table(rel_pos_h, height); // [height (q), height (k), dim]
    let r_w = relative_table(rel_pos_w, width); // [width (q), width (k), dim]
    // rel_h[n, qh, qw, kh] = sum_c q[n, qh, qw, c] r_h[qh, kh, c]
    let by_row = query.clone().permute([1, 0, 2, 3]).reshape([height, n * width, dim]);
    let rel_h = by_row.matmul(r_h.swap_dims(1, 2)).reshape([height, n, width, height]).permute([1, 0, 2, 3]);
    // rel_w[n, qh, qw, kw] = sum_c q[n, qh, qw, c] r_w[qw, kw, c]
    let by_col = query.permute([2, 0, 1, 3]).reshape([width, n * height, dim]);
    let rel_w = by_col.matmul(r_w.swap_dims(1, 2)).reshape([width, n, height, width]).permute([1, 2, 0, 3]);
    let sum = rel_h.unsqueeze_dim::<5>(4) + rel_w.unsqueeze_dim::<5>(3); // [n, qh, qw, kh, kw]
    sum.reshape([n, height * width, height * width])
}

/// `get_rel_pos` at equal query and key sizes: `[size, size, dim]`, entry `(q, k)` the table's row
/// `q - k + size - 1`.
fn relative_table(table: &Tensor<2>, size: usize) -> Tensor<3> {
    let [length, dim] = table.dims();
    assert_eq!(length, 2 * size - 1, "relative position table of {length} rows for a side of {size}");
    let index: Vec<i64> = (0..size).flat_map(|q| (0..size).map(move |k| (q + size - 1 - k) as i64)).collect();
    let index = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(index, [size * size]), &table.device());
    table.clone().select(0, index).reshape([size, size, dim])
}

/// `SamMLPBlock` with the vision tower's exact GELU.
#[derive(Module, Debug)]
struct MlpBlock {
    lin1: Linear,
    lin2: Linear,
}

impl MlpBlock {
    fn new(width: usize, hidden: usize, device: &Device) -> Self {
        Self { lin1: LinearConfig::new(width, hidden).init(device), lin2: LinearConfig::new(hidden, width).init(device) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.lin2.forward(gelu(self.lin1.forward(x)))
    }
}

/// `SamVisionNeck`: 1x1 then 3x3 bias-free convolutions, each followed by a channel LayerNorm.
#[derive(Module, Debug)]
struct Neck {
    conv1: Conv2d,
    layer_norm1: LayerNorm,
    conv2: Conv2d,
    layer_norm2: LayerNorm,
}

impl Neck {
    fn new(config: &SamVisionConfig, device: &Device) -> Self {
        let out = config.output_channels;
        Self {
            conv1: Conv2dConfig::new([config.hidden_size, out], [1, 1]).with_bias(false).init(device),
            layer_norm1: channel_norm(out, device),
            conv2: Conv2dConfig::new([out, out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            layer_norm2: channel_norm(out, device),
        }
    }

    /// Channels-last hidden states to the channels-first image embedding.
    fn forward(&self, hidden: Tensor<4>) -> Tensor<4> {
        let x = self.conv1.forward(hidden.permute([0, 3, 1, 2]));
        let x = norm_channels_first(&self.layer_norm1, x);
        let x = self.conv2.forward(x);
        norm_channels_first(&self.layer_norm2, x)
    }
}

/// `SamLayerNorm`'s LayerNorm (its own default epsilon, 1e-6, whatever the config says).
pub(super) fn channel_norm(channels: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(channels).with_epsilon(1e-6).init(device)
}

/// `SamLayerNorm(data_format="channels_first")`: the LayerNorm over the channels of `[batch, channels, h, w]`.
pub(super) fn norm_channels_first(norm: &LayerNorm, x: Tensor<4>) -> Tensor<4> {
    norm.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}
