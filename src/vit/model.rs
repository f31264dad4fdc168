//! The CLIP vision transformer, module for module as Hugging Face's `CLIPVisionTransformer`
//! (`transformers/models/clip/modeling_clip.py`): patch + class + position embeddings, `pre_layrnorm`, a
//! pre-norm encoder, and `post_layernorm` on the class token. Field names follow HF's parameter names, so a
//! checkpoint maps onto the module tree by name alone (see [`super::load`]).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::{attention, interpolate};
use burn::tensor::ops::{AttentionModuleOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Bool, Device, Tensor};

use super::config::{ClipVisionConfig, HiddenAct};

/// What [`ClipVisionModel::forward`] returns, as `CLIPVisionModel` does.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// Encoder output `[batch, 1 + patches, hidden]`: the class token first, then the patches in row-major
    /// order. No LayerNorm follows the encoder here (HF applies `post_layernorm` to the pooled token only).
    pub last_hidden_state: Tensor<3>,
    /// `post_layernorm` of the class token, `[batch, hidden]`.
    pub pooler_output: Tensor<2>,
}

/// CLIP's vision tower (`CLIPVisionModel` without projection). The GLUE paper (sec. III-C) uses its
/// `last_hidden_state` as the global CLS token plus global grid features (learnable copy) and as the local grid
/// features of the key-patch sub-images (frozen copy).
#[derive(Module, Debug)]
pub struct ClipVisionModel {
    embeddings: ClipVisionEmbeddings,
    /// HF's own spelling of the LayerNorm before the encoder.
    pre_layrnorm: LayerNorm,
    encoder: ClipEncoder,
    post_layernorm: LayerNorm,
}

impl ClipVisionModel {
    /// A freshly initialised model of the given shape (weights are normally loaded with
    /// [`ClipVisionModel::load`](super::load)).
    pub fn new(config: &ClipVisionConfig, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(config.hidden_size).with_epsilon(config.layer_norm_eps).init(device);
        Self {
            embeddings: ClipVisionEmbeddings::new(config, device),
            pre_layrnorm: norm(),
            encoder: ClipEncoder::new(&config.encoder_shape(), device),
            post_layernorm: norm(),
        }
    }

    /// Encodes normalised pixels `[batch, channels, height, width]` (see
    /// [`ImageProcessor`](super::ImageProcessor)). Any height and width that are multiples of the patch size
    /// work: off the configured size the position embeddings are resampled as `CLIPVisionModel` does with
    /// `interpolate_pos_encoding=True`; at the configured size the result is exactly HF's default call.
    pub fn forward(&self, pixel_values: Tensor<4>) -> ClipVisionOutput {
        let hidden = self.embeddings.forward(pixel_values);
        let hidden = self.pre_layrnorm.forward(hidden);
        let last_hidden_state = self.encoder.forward(hidden, None);
        let [batch, _, width] = last_hidden_state.dims();
        let class_token = last_hidden_state.clone().narrow(1, 0, 1).reshape([batch, width]);
        ClipVisionOutput { last_hidden_state, pooler_output: self.post_layernorm.forward(class_token) }
    }

    /// `post_layernorm` applied to every token of a `last_hidden_state`, as OWL-ViT's detection head does
    /// (`OwlViTForObjectDetection.image_text_embedder`); CLIP itself normalises the class token only.
    pub fn post_layernorm(&self, last_hidden_state: Tensor<3>) -> Tensor<3> {
        self.post_layernorm.forward(last_hidden_state)
    }
}

/// The shape of a CLIP transformer encoder, common to the vision and the text tower (HF's config names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct EncoderShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
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

/// `CLIPVisionEmbeddings`: a bias-free patch convolution, a learned class token, learned positions.
#[derive(Module, Debug)]
struct ClipVisionEmbeddings {
    class_embedding: Param<Tensor<1>>,
    patch_embedding: Conv2d,
    /// `[1 + grid², hidden]`, for the configured square grid.
    position_embedding: Embedding,
    /// Side of the patch grid the position embeddings were trained for.
    grid_size: usize,
}

impl ClipVisionEmbeddings {
    fn new(config: &ClipVisionConfig, device: &Device) -> Self {
        let width = config.hidden_size;
        let patch = config.patch_size;
        Self {
            class_embedding: Initializer::Normal { mean: 0.0, std: (width as f64).powf(-0.5) }.init([width], device),
            patch_embedding: Conv2dConfig::new([config.num_channels, width], [patch, patch])
                .with_stride([patch, patch])
                .with_bias(false)
                .init(device),
            position_embedding: EmbeddingConfig::new(config.num_positions(), width)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device),
            grid_size: config.grid_size(),
        }
    }

    /// `[batch, channels, height, width]` pixels to `[batch, 1 + patches, hidden]` tokens.
    fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let batch = pixel_values.dims()[0];
        let patches = self.patch_embedding.forward(pixel_values);
        let [_, width, rows, cols] = patches.dims();
        let patches = patches.flatten::<3>(2, 3).swap_dims(1, 2);
        let class = self.class_embedding.val().reshape([1, 1, width]).expand([batch, 1, width]);
        let tokens = Tensor::cat(vec![class, patches], 1);
        tokens + self.positions(rows, cols).unsqueeze::<3>()
    }

    /// Position embeddings `[1 + rows·cols, hidden]` for a `rows × cols` patch grid: the trained table when the
    /// grid is the trained one, else its patch part resampled bicubically (`align_corners=False`) as HF's
    /// `interpolate_pos_encoding` does; the class position is kept as is.
    fn positions(&self, rows: usize, cols: usize) -> Tensor<2> {
        let table = self.position_embedding.weight.val();
        if rows == self.grid_size && cols == self.grid_size {
            return table;
        }
        let [positions, width] = table.dims();
        let class = table.clone().narrow(0, 0, 1);
        let grid = table.narrow(0, 1, positions - 1).reshape([1, self.grid_size, self.grid_size, width]);
        let options =
            InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(false).with_output_size([rows, cols]);
        let grid = interpolate(grid.permute([0, 3, 1, 2]), options).permute([0, 2, 3, 1]);
        Tensor::cat(vec![class, grid.reshape([rows * cols, width])], 0)
    }
}

/// `CLIPEncoder`: the stack of encoder layers, shared by the vision tower and the text tower
/// ([`crate::ground::text`]).
#[derive(Module, Debug)]
pub(crate) struct ClipEncoder {
    layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    pub(crate) fn new(shape: &EncoderShape, device: &Device) -> Self {
        Self { layers: (0..shape.num_hidden_layers).map(|_| ClipEncoderLayer::new(shape, device)).collect() }
    }

    /// `hidden` `[batch, tokens, width]` through every layer; `mask` `[batch, heads, tokens, tokens]` is true
    /// where a query may not attend to a key (the text tower's causal and padding mask), `None` for the image.
    pub(crate) fn forward(&self, hidden: Tensor<3>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        self.layers.iter().fold(hidden, |hidden, layer| layer.forward(hidden, mask.clone()))
    }
}

/// `CLIPEncoderLayer`: pre-norm self-attention and MLP, each with a residual connection.
#[derive(Module, Debug)]
struct ClipEncoderLayer {
    self_attn: ClipAttention,
    layer_norm1: LayerNorm,
    mlp: ClipMlp,
    layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    fn new(shape: &EncoderShape, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(shape.hidden_size).with_epsilon(shape.layer_norm_eps).init(device);
        Self {
            self_attn: ClipAttention::new(shape, device),
            layer_norm1: norm(),
            mlp: ClipMlp::new(shape, device),
            layer_norm2: norm(),
        }
    }

    fn forward(&self, hidden: Tensor<3>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let hidden = hidden.clone() + self.self_attn.forward(self.layer_norm1.forward(hidden), mask);
        hidden.clone() + self.mlp.forward(self.layer_norm2.forward(hidden))
    }
}

/// `CLIPAttention`: multi-head self-attention with separate biased q/k/v/out projections, scale
/// `head_dim^-0.5`, an optional mask and no dropout (HF's dropout is 0 at inference and `attention_dropout`
/// defaults to 0).
#[derive(Module, Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl ClipAttention {
    fn new(shape: &EncoderShape, device: &Device) -> Self {
        let linear = || LinearConfig::new(shape.hidden_size, shape.hidden_size).init(device);
        Self {
            q_proj: linear(),
            k_proj: linear(),
            v_proj: linear(),
            out_proj: linear(),
            num_heads: shape.num_attention_heads,
        }
    }

    fn forward(&self, hidden: Tensor<3>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [batch, tokens, width] = hidden.dims();
        let head_dim = width / self.num_heads;
        let heads = |projection: &Linear| {
            projection.forward(hidden.clone()).reshape([batch, tokens, self.num_heads, head_dim]).swap_dims(1, 2)
        };
        // The fused kernel's default scale is 1/sqrt(head_dim), HF's `self.scale`.
        let context = attention(
            heads(&self.q_proj),
            heads(&self.k_proj),
            heads(&self.v_proj),
            mask,
            None,
            AttentionModuleOptions::default(),
        );
        self.out_proj.forward(context.swap_dims(1, 2).reshape([batch, tokens, width]))
    }
}

/// `CLIPMLP`: `fc1`, the configured activation, `fc2`.
#[derive(Module, Debug)]
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    activation: HiddenAct,
}

impl ClipMlp {
    fn new(shape: &EncoderShape, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(shape.hidden_size, shape.intermediate_size).init(device),
            fc2: LinearConfig::new(shape.intermediate_size, shape.hidden_size).init(device),
            activation: shape.hidden_act,
        }
    }

    fn forward(&self, hidden: Tensor<3>) -> Tensor<3> {
        let hidden = self.fc1.forward(hidden);
        let hidden = match self.activation {
            // HF's `QuickGELUActivation` (`transformers/activations.py`); burn has no built-in for it.
            HiddenAct::QuickGelu => hidden.clone() * sigmoid(hidden * 1.702),
            HiddenAct::Gelu => gelu(hidden),
        };
        self.fc2.forward(hidden)
    }
}
