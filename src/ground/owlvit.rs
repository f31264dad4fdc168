//! OWL-ViT, the open-vocabulary detector of the grounding step (eq. 1's `Det`), module for module as Hugging
//! Face's `OwlViTForObjectDetection` (`transformers/models/owlvit/modeling_owlvit.py`): the CLIP vision tower's
//! patch tokens, each multiplied by the class token and normalised, predict one box per patch (`box_head` plus
//! a bias that centres it on its patch) and a logit per text query (`class_head`: cosine similarity with the
//! query's projected text embedding, shifted and scaled per patch).
//!
//! The paper uses Grounding DINO; OWL-ViT is the open-vocabulary detector whose published checkpoints
//! (`google/owlvit-base-patch32`, `-patch16`, `-large-patch14`) this crate can load, because its towers are
//! CLIP's (see [`crate::vit`]).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{elu, gelu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};

use super::config::OwlVitConfig;
use super::text::ClipTextTransformer;
use super::tokenizer::Tokens;
use crate::vit::ClipVisionModel;

/// What [`OwlVitForObjectDetection::forward`] returns for one image, as the reference's output names it.
#[derive(Debug, Clone)]
pub struct DetectionOutput {
    /// `[1, patches, queries]`: one class logit per box and query.
    pub logits: Tensor<3>,
    /// `[1, patches, 4]`: one box per patch, `(centre x, centre y, width, height)` as fractions of the image.
    pub pred_boxes: Tensor<3>,
    /// `[queries, projection_dim]`: the unit-length text embeddings of the queries.
    pub text_embeds: Tensor<2>,
}

/// `OwlViTForObjectDetection` without the image-guided path (parameter names of the checkpoint, with the
/// `owlvit.` prefix stripped and the vision tower's `pre_layernorm` read as CLIP's `pre_layrnorm`).
#[derive(Module, Debug)]
pub struct OwlVitForObjectDetection {
    vision_model: ClipVisionModel,
    text_model: ClipTextTransformer,
    text_projection: Linear,
    class_head: ClassHead,
    box_head: BoxHead,
    layer_norm: LayerNorm,
    /// The vision tower's patch side, which sets the box grid.
    patch_size: usize,
}

/// `OwlViTClassPredictionHead`.
#[derive(Module, Debug)]
struct ClassHead {
    dense0: Linear,
    logit_shift: Linear,
    logit_scale: Linear,
}

/// `OwlViTBoxPredictionHead`: a three-layer MLP with exact GELU.
#[derive(Module, Debug)]
struct BoxHead {
    dense0: Linear,
    dense1: Linear,
    dense2: Linear,
}

impl OwlVitForObjectDetection {
    /// A freshly initialised detector of the given shape (weights are normally loaded, see [`super::load`]).
    pub fn new(config: &OwlVitConfig, device: &Device) -> Self {
        let vision = config.vision_config.hidden_size;
        let text = config.text_config.hidden_size;
        let linear = |inputs, outputs| LinearConfig::new(inputs, outputs).init(device);
        Self {
            vision_model: ClipVisionModel::new(&config.vision_config, device),
            text_model: ClipTextTransformer::new(&config.text_config, device),
            text_projection: LinearConfig::new(text, config.projection_dim).with_bias(false).init(device),
            class_head: ClassHead {
                dense0: linear(vision, text),
                logit_shift: linear(vision, 1),
                logit_scale: linear(vision, 1),
            },
            box_head: BoxHead {
                dense0: linear(vision, vision),
                dense1: linear(vision, vision),
                dense2: linear(vision, 4),
            },
            layer_norm: LayerNormConfig::new(vision)
                .with_epsilon(config.vision_config.layer_norm_eps)
                .init(device),
            patch_size: config.vision_config.patch_size,
        }
    }

    /// Detects `tokens`' queries in one image of normalised `pixel_values` `[1, 3, size, size]` (the
    /// checkpoint's image size, see [`crate::vit::ImageProcessor`]).
    pub fn forward(&self, pixel_values: Tensor<4>, tokens: &Tokens) -> DetectionOutput {
        let device = pixel_values.device();
        let [_, _, height, width] = pixel_values.dims();
        let hidden = self.vision_model.forward(pixel_values).last_hidden_state;
        // image_text_embedder: every token through post_layernorm, the patches times the class token, layer_norm.
        let hidden = self.vision_model.post_layernorm(hidden);
        let [_, tokens_per_image, _] = hidden.dims();
        let class_token = hidden.clone().narrow(1, 0, 1);
        let patches = self.layer_norm.forward(hidden.narrow(1, 1, tokens_per_image - 1) * class_token);

        let text_embeds = self.text_projection.forward(self.text_model.forward(tokens, &device));
        let text_embeds = text_embeds.clone() / l2_norm(text_embeds, 0.0);

        let logits = self.class_head.forward(patches.clone(), text_embeds.clone());
        let bias = box_bias(height / self.patch_size, width / self.patch_size);
        let pred_boxes = sigmoid(self.box_head.forward(patches) + Tensor::<2>::from_data(bias, &device).unsqueeze());
        DetectionOutput { logits, pred_boxes, text_embeds }
    }
}

impl ClassHead {
    /// `[1, patches, vision]` patch embeddings and `[queries, projection]` text embeddings to `[1, patches,
    /// queries]` logits: cosine similarity (both sides normalised with the reference's +1e-6), plus a per-patch
    /// shift, times a per-patch scale `elu(.) + 1`.
    fn forward(&self, patches: Tensor<3>, queries: Tensor<2>) -> Tensor<3> {
        let image_class = self.dense0.forward(patches.clone());
        let image_class = image_class.clone() / l2_norm(image_class, 1e-6);
        let queries = queries.clone() / l2_norm(queries, 1e-6);
        let similarity = image_class.matmul(queries.transpose().unsqueeze::<3>());
        let shift = self.logit_shift.forward(patches.clone());
        let scale = elu(self.logit_scale.forward(patches), 1.0) + 1.0;
        (similarity + shift) * scale
    }
}

impl BoxHead {
    fn forward(&self, patches: Tensor<3>) -> Tensor<3> {
        let hidden = gelu(self.dense0.forward(patches));
        let hidden = gelu(self.dense1.forward(hidden));
        self.dense2.forward(hidden)
    }
}

/// Euclidean norm over the last axis, kept as a size-1 axis, plus `epsilon`.
fn l2_norm<const D: usize>(x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    x.powi_scalar(2).sum_dim(D - 1).sqrt() + epsilon
}

/// The box bias of a `rows × cols` patch grid (`compute_box_bias`), `[rows·cols, 4]` in row-major patch order:
/// the logit of each patch's lower-right corner `((col+1)/cols, (row+1)/rows)` as the centre, the logit of one
/// patch as the size, both with the reference's 1e-4 offsets, so that a zero head output is a one-patch box at
/// its patch.
pub fn box_bias(rows: usize, cols: usize) -> TensorData {
    let logit = |p: f64| (p + 1e-4).ln() - (1.0 - p + 1e-4).ln();
    let (width, height) = (logit(1.0 / cols as f64), logit(1.0 / rows as f64));
    let values: Vec<f32> = (0..rows)
        .flat_map(|row| (0..cols).map(move |col| (row, col)))
        .flat_map(|(row, col)| {
            let x = logit((col + 1) as f64 / cols as f64);
            let y = logit((row + 1) as f64 / rows as f64);
            [x, y, width, height].map(|v| v as f32)
        })
        .collect();
    TensorData::new(values, [rows * cols, 4])
}
