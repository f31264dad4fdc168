//! SAM's mask decoder, module for module as Hugging Face's `SamMaskDecoder` and `SamTwoWayTransformer`
//! (`transformers/models/sam/modeling_sam.py`): output tokens (IoU + one per mask) with the prompt tokens attend
//! to the image embedding and back through two-way blocks, then the image embedding is upscaled 4x by two
//! transposed convolutions and each mask token's hypernetwork MLP turns it into a mask.

use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

use super::config::SamMaskDecoderConfig;
use super::vision::{channel_norm, norm_channels_first};

/// `SamMaskDecoder`.
#[derive(Module, Debug)]
pub struct SamMaskDecoder {
    iou_token: Embedding,
    mask_tokens: Embedding,
    transformer: TwoWayTransformer,
    upscale_conv1: ConvTranspose2d,
    upscale_layer_norm: LayerNorm,
    upscale_conv2: ConvTranspose2d,
    output_hypernetworks_mlps: Vec<FeedForward>,
    iou_prediction_head: FeedForward,
}

impl SamMaskDecoder {
    pub fn new(config: &SamMaskDecoderConfig, device: &Device) -> Self {
        let width = config.hidden_size;
        let masks = config.num_multimask_outputs + 1;
        let up = |from: usize, to: usize| ConvTranspose2dConfig::new([from, to], [2, 2]).with_stride([2, 2]).init(device);
        Self {
            iou_token: EmbeddingConfig::new(1, width).init(device),
            mask_tokens: EmbeddingConfig::new(masks, width).init(device),
            transformer: TwoWayTransformer::new(config, device),
            upscale_conv1: up(width, width / 4),
            upscale_layer_norm: channel_norm(width / 4, device),
            upscale_conv2: up(width / 4, width / 8),
            output_hypernetworks_mlps: (0..masks).map(|_| FeedForward::new(width, width, width / 8, 3, device)).collect(),
            iou_prediction_head: FeedForward::new(
                width,
                config.iou_head_hidden_dim,
                masks,
                config.iou_head_depth,
                device,
            ),
        }
    }

    /// Masks `[prompts, masks, 4·grid, 4·grid]` (logits) and their predicted IoU `[prompts, masks]` for one
    /// image: `image_embedding` `[1, C, grid, grid]` (the dense prompt already added), `image_pe` `[1, C, grid,
    /// grid]`, `sparse` `[prompts, tokens, C]`. `multimask`: the three masks of the ambiguous-prompt tokens,
    /// else the single mask of the first token (what box prompts use).
    pub fn forward(
        &self,
        image_embedding: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        multimask: bool,
    ) -> (Tensor<4>, Tensor<2>) {
        let [prompts, _, width] = sparse.dims();
        let [_, channels, height, grid_width] = image_embedding.dims();
        let output_tokens = Tensor::cat(vec![self.iou_token.weight.val(), self.mask_tokens.weight.val()], 0);
        let count = output_tokens.dims()[0];
        let tokens = Tensor::cat(vec![output_tokens.unsqueeze::<3>().expand([prompts, count, width]), sparse], 1);
        // [prompts, grid·grid, C], one copy of the image per prompt.
        let flat = |x: Tensor<4>| x.flatten::<3>(2, 3).swap_dims(1, 2).expand([prompts, height * grid_width, channels]);
        let (queries, keys) = self.transformer.forward(tokens, flat(image_embedding), flat(image_pe));
        let iou_token_out = queries.clone().narrow(1, 0, 1).reshape([prompts, width]);
        let image = keys.swap_dims(1, 2).reshape([prompts, channels, height, grid_width]);
        let upscaled = gelu(norm_channels_first(&self.upscale_layer_norm, self.upscale_conv1.forward(image)));
        let upscaled = gelu(self.upscale_conv2.forward(upscaled));
        let [_, up_channels, up_height, up_width] = upscaled.dims();
        let hyper: Vec<Tensor<3>> = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(queries.clone().narrow(1, 1 + i, 1)))
            .collect();
        let hyper = Tensor::cat(hyper, 1); // [prompts, masks, C/8]
        let masks = hyper
            .matmul(upscaled.reshape([prompts, up_channels, up_height * up_width]))
            .reshape([prompts, count - 1, up_height, up_width]);
        let iou = self.iou_prediction_head.forward(iou_token_out.unsqueeze_dim::<3>(1)).reshape([prompts, count - 1]);
        let (first, taken) = if multimask { (1, count - 2) } else { (0, 1) };
        (masks.narrow(1, first, taken), iou.narrow(1, first, taken))
    }
}

/// `SamTwoWayTransformer`.
#[derive(Module, Debug)]
struct TwoWayTransformer {
    layers: Vec<TwoWayBlock>,
    final_attn_token_to_image: SamAttention,
    /// `nn.LayerNorm` at PyTorch's default epsilon (1e-5), as the reference builds it.
    layer_norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    fn new(config: &SamMaskDecoderConfig, device: &Device) -> Self {
        Self {
            layers: (0..config.num_hidden_layers).map(|i| TwoWayBlock::new(config, i == 0, device)).collect(),
            final_attn_token_to_image: SamAttention::new(config, config.attention_downsample_rate, device),
            layer_norm_final_attn: LayerNormConfig::new(config.hidden_size).init(device),
        }
    }

    /// `tokens` `[n, T, C]` (also their positional part), `image` and `image_pe` `[n, HW, C]`.
    fn forward(&self, tokens: Tensor<3>, image: Tensor<3>, image_pe: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let (mut queries, mut keys) = (tokens.clone(), image);
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, tokens.clone(), image_pe.clone());
        }
        let attn = self.final_attn_token_to_image.forward(
            queries.clone() + tokens,
            keys.clone() + image_pe,
            keys.clone(),
        );
        (self.layer_norm_final_attn.forward(queries + attn), keys)
    }
}

/// `SamTwoWayAttentionBlock`: token self-attention, tokens -> image, token MLP, image -> tokens.
#[derive(Module, Debug)]
struct TwoWayBlock {
    self_attn: SamAttention,
    layer_norm1: LayerNorm,
    cross_attn_token_to_image: SamAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
    layer_norm3: LayerNorm,
    layer_norm4: LayerNorm,
    cross_attn_image_to_token: SamAttention,
    /// The first block's self-attention sees the tokens without their positional part.
    skip_first_layer_pe: bool,
}

impl TwoWayBlock {
    fn new(config: &SamMaskDecoderConfig, skip_first_layer_pe: bool, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(config.hidden_size).with_epsilon(config.layer_norm_eps).init(device);
        let rate = config.attention_downsample_rate;
        Self {
            self_attn: SamAttention::new(config, 1, device),
            layer_norm1: norm(),
            cross_attn_token_to_image: SamAttention::new(config, rate, device),
            layer_norm2: norm(),
            mlp: Mlp {
                lin1: LinearConfig::new(config.hidden_size, config.mlp_dim).init(device),
                lin2: LinearConfig::new(config.mlp_dim, config.hidden_size).init(device),
            },
            layer_norm3: norm(),
            layer_norm4: norm(),
            cross_attn_image_to_token: SamAttention::new(config, rate, device),
            skip_first_layer_pe,
        }
    }

    fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.layer_norm1.forward(queries);
        let attn = self.cross_attn_token_to_image.forward(
            queries.clone() + query_pe.clone(),
            keys.clone() + key_pe.clone(),
            keys.clone(),
        );
        let queries = self.layer_norm2.forward(queries + attn);
        let queries = self.layer_norm3.forward(queries.clone() + self.mlp.forward(queries));
        let attn = self.cross_attn_image_to_token.forward(keys.clone() + key_pe, queries.clone() + query_pe, queries.clone());
        (queries, self.layer_norm4.forward(keys + attn))
    }
}

/// `SamAttention`: projections to `hidden / downsample_rate`, heads, scale `(internal / heads)^-0.5`.
#[derive(Module, Debug)]
struct SamAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl SamAttention {
    fn new(config: &SamMaskDecoderConfig, downsample_rate: usize, device: &Device) -> Self {
        let (width, internal) = (config.hidden_size, config.hidden_size / downsample_rate);
        Self {
            q_proj: LinearConfig::new(width, internal).init(device),
            k_proj: LinearConfig::new(width, internal).init(device),
            v_proj: LinearConfig::new(width, internal).init(device),
            out_proj: LinearConfig::new(internal, width).init(device),
            num_heads: config.num_attention_heads,
        }
    }

    fn forward(&self, query: Tensor<3>, key: Tensor<3>, value: Tensor<3>) -> Tensor<3> {
        let heads = |x: Tensor<3>| {
            let [n, tokens, internal] = x.dims();
            x.reshape([n, tokens, self.num_heads, internal / self.num_heads]).swap_dims(1, 2)
        };
        let (q, k, v) = (heads(self.q_proj.forward(query)), heads(self.k_proj.forward(key)), heads(self.v_proj.forward(value)));
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let [n, heads, tokens, head_dim] = out.dims();
        self.out_proj.forward(out.swap_dims(1, 2).reshape([n, tokens, heads * head_dim]))
    }
}

/// `SamMLPBlock` with the decoder's ReLU.
#[derive(Module, Debug)]
struct Mlp {
    lin1: Linear,
    lin2: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.lin2.forward(relu(self.lin1.forward(x)))
    }
}

/// `SamFeedForward`: `proj_in`, `num_layers - 2` hidden layers, `proj_out`, ReLU between (no sigmoid).
#[derive(Module, Debug)]
struct FeedForward {
    proj_in: Linear,
    layers: Vec<Linear>,
    proj_out: Linear,
}

impl FeedForward {
    fn new(input: usize, hidden: usize, output: usize, num_layers: usize, device: &Device) -> Self {
        Self {
            proj_in: LinearConfig::new(input, hidden).init(device),
            layers: (0..num_layers.saturating_sub(2)).map(|_| LinearConfig::new(hidden, hidden).init(device)).collect(),
            proj_out: LinearConfig::new(hidden, output).init(device),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = relu(self.proj_in.forward(x));
        let x = self.layers.iter().fold(x, |x, layer| relu(layer.forward(x)));
        self.proj_out.forward(x)
    }
}
