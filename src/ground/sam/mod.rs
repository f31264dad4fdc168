//! SAM, the segmenter of the grounding step (eq. 1's `Seg`): box prompts to object masks, module for module as
//! Hugging Face's `SamModel` (`transformers/models/sam/modeling_sam.py`) with `SamImageProcessor`'s pre- and
//! post-processing, loading the published checkpoints (`facebook/sam-vit-base`, `-large`, `-huge`, and SlimSAM
//! / other `SamModel` folders) by their tensor names. Only box prompts are ported (the paper prompts SAM with
//! the detector's boxes); point and mask prompts are not.
//!
//! - [`config`]: [`SamConfig`];
//! - [`vision`]: the image encoder;
//! - [`decoder`]: the two-way transformer and mask decoder.

pub mod config;
pub mod decoder;
pub mod vision;

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::store::{FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, Device, Tensor, TensorData};
use eyre::{WrapErr, bail, ensure, eyre};
use image::RgbImage;
use serde::Deserialize;

pub use config::{SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig};
use decoder::SamMaskDecoder;
use vision::SamVisionEncoder;

use crate::keypoints::Mask;
use crate::vit::load::existing;
use crate::vit::resample::{Filter, resize};

/// `SamModel` for box prompts.
#[derive(Module, Debug)]
pub struct SamModel {
    shared_image_embedding: PositionalEmbedding,
    vision_encoder: SamVisionEncoder,
    prompt_encoder: PromptEncoder,
    mask_decoder: SamMaskDecoder,
    /// Side of the square input the prompt coordinates are normalised by.
    image_size: usize,
}

/// `SamPositionalEmbedding`: random Fourier features of normalised coordinates.
#[derive(Module, Debug)]
struct PositionalEmbedding {
    /// `[2, num_pos_feats]` Gaussian projection (a buffer in the reference, saved with the weights).
    positional_embedding: Param<Tensor<2>>,
}

impl PositionalEmbedding {
    /// `[.., 2]` coordinates in `[0, 1]` (x, y) to `[.., 2·num_pos_feats]`: `sin` and `cos` of `2π (2c - 1) G`.
    fn forward(&self, coords: Tensor<3>) -> Tensor<3> {
        let projected = (coords * 2.0 - 1.0).matmul(self.positional_embedding.val().unsqueeze::<3>())
            * (2.0 * std::f64::consts::PI);
        Tensor::cat(vec![projected.clone().sin(), projected.cos()], 2)
    }
}

/// The parts of `SamPromptEncoder` box prompts use.
#[derive(Module, Debug)]
struct PromptEncoder {
    /// The dense embedding when no mask prompt is given.
    no_mask_embed: Embedding,
    /// Point-type embeddings; 2 and 3 mark a box's top-left and bottom-right corners.
    point_embed: Vec<Embedding>,
}

impl SamModel {
    /// A freshly initialised model (weights are normally loaded, see [`SamModel::load`]).
    pub fn new(config: &SamConfig, device: &Device) -> Self {
        let prompt = &config.prompt_encoder_config;
        Self {
            shared_image_embedding: PositionalEmbedding {
                positional_embedding: Initializer::Normal { mean: 0.0, std: 1.0 }
                    .init([2, config.vision_config.num_pos_feats], device),
            },
            vision_encoder: SamVisionEncoder::new(&config.vision_config, device),
            prompt_encoder: PromptEncoder {
                no_mask_embed: EmbeddingConfig::new(1, prompt.hidden_size).init(device),
                point_embed: (0..prompt.num_point_embeddings)
                    .map(|_| EmbeddingConfig::new(1, prompt.hidden_size).init(device))
                    .collect(),
            },
            mask_decoder: SamMaskDecoder::new(&config.mask_decoder_config, device),
            image_size: prompt.image_size,
        }
    }

    /// Loads a HF `SamModel` folder's weights (`model.safetensors`) and configuration. The prompt encoder's mask
    /// embedding and point-only embeddings are not read.
    pub fn load(dir: &Path, device: &Device) -> eyre::Result<(Self, SamConfig)> {
        let config = SamConfig::from_file(&existing(dir, "config.json")?)?;
        let weights = existing(dir, "model.safetensors")?;
        let mut store = SafetensorsStore::from_file(&weights)
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)));
        let mut model = Self::new(&config, device);
        model
            .load_from(&mut store)
            .map_err(|error| eyre!("{error}"))
            .wrap_err_with(|| format!("cannot load SAM weights from {}", weights.display()))?;
        Ok((model, config))
    }

    /// The image embedding `[1, C, grid, grid]` of preprocessed `pixel_values` `[1, 3, size, size]`.
    pub fn image_embeddings(&self, pixel_values: Tensor<4>) -> Tensor<4> {
        self.vision_encoder.forward(pixel_values)
    }

    /// Mask logits `[boxes, masks, 4·grid, 4·grid]` and predicted IoU `[boxes, masks]` for `boxes` (`[x0, y0, x1,
    /// y1]` in the model's input frame, i.e. already rescaled as [`SamProcessor::scale_box`] does) on one image's
    /// embedding. `multimask`: three masks per box, else one (box prompts are unambiguous; SAM's authors use one).
    pub fn decode(&self, image_embedding: Tensor<4>, boxes: &[[f32; 4]], multimask: bool) -> (Tensor<4>, Tensor<2>) {
        let device = image_embedding.device();
        let [_, channels, grid, _] = image_embedding.dims();
        let input = self.input_size() as f32;
        // _embed_boxes: corners shifted to pixel centres, normalised by the input side, encoded, typed.
        let corners: Vec<f32> = boxes.iter().flat_map(|b| b.map(|v| (v + 0.5) / input)).collect();
        let corners = Tensor::<3>::from_data(TensorData::new(corners, [boxes.len(), 2, 2]), &device);
        let corner_types = Tensor::cat(
            vec![self.prompt_encoder.point_embed[2].weight.val(), self.prompt_encoder.point_embed[3].weight.val()],
            0,
        );
        let sparse = self.shared_image_embedding.forward(corners) + corner_types.unsqueeze::<3>();
        let dense = self.prompt_encoder.no_mask_embed.weight.val().reshape([1, channels, 1, 1]);
        self.mask_decoder.forward(image_embedding + dense, self.image_positional_embeddings(grid, &device), sparse, multimask)
    }

    /// `get_image_wide_positional_embeddings`: the encoding of every embedding cell's centre, `[1, C, grid, grid]`.
    fn image_positional_embeddings(&self, grid: usize, device: &Device) -> Tensor<4> {
        let centres: Vec<f32> = (0..grid)
            .flat_map(|y| (0..grid).flat_map(move |x| [(x as f32 + 0.5) / grid as f32, (y as f32 + 0.5) / grid as f32]))
            .collect();
        let centres = Tensor::<3>::from_data(TensorData::new(centres, [1, grid * grid, 2]), device);
        let encoded = self.shared_image_embedding.forward(centres); // [1, grid², C]
        let channels = encoded.dims()[2];
        encoded.reshape([1, grid, grid, channels]).permute([0, 3, 1, 2])
    }

    /// Side of the model's square input (the prompt encoder's `image_size`).
    fn input_size(&self) -> usize {
        self.image_size
    }
}

/// `SamImageProcessor` as a `preprocessor_config.json` configures it: resize the longest side to
/// `size.longest_edge` (Pillow bilinear), rescale, normalise, zero-pad to `pad_size` at the bottom and right; boxes
/// scaled into the resized frame; masks upsampled back to the image (`post_process_masks`).
#[derive(Clone, Debug, PartialEq)]
pub struct SamProcessor {
    longest_edge: u32,
    pad: (u32, u32),
    rescale: f64,
    mean: [f64; 3],
    std: [f64; 3],
}

#[derive(Deserialize)]
struct LongestEdge {
    longest_edge: u32,
}

#[derive(Deserialize)]
struct HeightWidth {
    height: u32,
    width: u32,
}

#[derive(Deserialize)]
struct ProcessorFile {
    size: LongestEdge,
    pad_size: HeightWidth,
    #[serde(default = "bilinear")]
    resample: u32,
    rescale_factor: f64,
    image_mean: [f64; 3],
    image_std: [f64; 3],
}

fn bilinear() -> u32 {
    2
}

impl SamProcessor {
    /// Reads a SAM `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
        let file: ProcessorFile =
            serde_json::from_str(&text).wrap_err_with(|| format!("bad SAM image processor config {}", path.display()))?;
        if file.resample != 2 {
            bail!("{}: resample {} is not supported (only 2, bilinear)", path.display(), file.resample);
        }
        Ok(Self {
            longest_edge: file.size.longest_edge,
            pad: (file.pad_size.height, file.pad_size.width),
            rescale: file.rescale_factor,
            mean: file.image_mean,
            std: file.image_std,
        })
    }

    /// `(height, width)` of `image` resized so its longest side is `longest_edge` (`_get_preprocess_shape`).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let scale = f64::from(self.longest_edge) / f64::from(width.max(height));
        let round = |v: u32| (f64::from(v) * scale + 0.5) as u32;
        (round(height), round(width))
    }

    /// `pixel_values` `[1, 3, pad height, pad width]`.
    pub fn preprocess(&self, image: &RgbImage) -> TensorData {
        let (height, width) = self.resized_size(image.width(), image.height());
        let resized = resize(image, width, height, Filter::Bilinear);
        let (pad_h, pad_w) = (self.pad.0 as usize, self.pad.1 as usize);
        let mut values = vec![0f32; 3 * pad_h * pad_w];
        for (x, y, pixel) in resized.enumerate_pixels() {
            for c in 0..3 {
                let v = (f64::from(pixel[c]) * self.rescale - self.mean[c]) / self.std[c];
                values[(c * pad_h + y as usize) * pad_w + x as usize] = v as f32;
            }
        }
        TensorData::new(values, [1, 3, pad_h, pad_w])
    }

    /// A box `[x0, y0, x1, y1]` in pixels of a `width × height` image, in the resized frame the model sees
    /// (`_normalize_coordinates`).
    pub fn scale_box(&self, bbox: [f32; 4], width: u32, height: u32) -> [f32; 4] {
        let (new_h, new_w) = self.resized_size(width, height);
        let (sx, sy) = (new_w as f32 / width as f32, new_h as f32 / height as f32);
        [bbox[0] * sx, bbox[1] * sy, bbox[2] * sx, bbox[3] * sy]
    }

    /// `post_process_masks` without binarisation: low-resolution logits `[n, m, h, w]` to `[n, m, height, width]`
    /// of the original image (bilinear to the padded input, crop to the resized image, bilinear to the original).
    pub fn upscale_logits(&self, logits: Tensor<4>, width: u32, height: u32) -> Tensor<4> {
        let bilinear = |size: [usize; 2]| {
            InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size(size)
        };
        let padded = interpolate(logits, bilinear([self.pad.0 as usize, self.pad.1 as usize]));
        let (new_h, new_w) = self.resized_size(width, height);
        let [n, m, _, _] = padded.dims();
        let cropped = padded.slice([0..n, 0..m, 0..new_h as usize, 0..new_w as usize]);
        interpolate(cropped, bilinear([height as usize, width as usize]))
    }
}

/// A SAM checkpoint ready to segment boxes: model and processor.
#[derive(Debug)]
pub struct SamSegmenter {
    model: SamModel,
    processor: SamProcessor,
    device: Device,
}

impl SamSegmenter {
    /// Loads a HF `SamModel` folder (`config.json`, `model.safetensors`, `preprocessor_config.json`).
    pub fn load(dir: &Path, device: &Device) -> eyre::Result<Self> {
        let (model, config) = SamModel::load(dir, device)?;
        let processor = SamProcessor::from_file(&existing(dir, "preprocessor_config.json")?)?;
        ensure!(
            processor.pad == (config.vision_config.image_size as u32, config.vision_config.image_size as u32),
            "{}: pad_size {:?} differs from the model's image_size {}",
            dir.display(),
            processor.pad,
            config.vision_config.image_size
        );
        Ok(Self { model, processor, device: device.clone() })
    }

    /// The mask logits `[boxes, 1, height, width]` of each box (pixels of `image`) at the image's size, single
    /// mask per box.
    pub fn mask_logits(&self, image: &RgbImage, boxes: &[[f32; 4]]) -> eyre::Result<Tensor<4>> {
        ensure!(!boxes.is_empty(), "SAM: expected at least one box");
        for b in boxes {
            ensure!(
                b.iter().all(|v| v.is_finite()) && b[0] < b[2] && b[1] < b[3],
                "SAM: box {b:?}: expected finite [x0, y0, x1, y1] with x0 < x1 and y0 < y1"
            );
        }
        let (width, height) = image.dimensions();
        let pixels = Tensor::<4>::from_data(self.processor.preprocess(image), &self.device);
        let embedding = self.model.image_embeddings(pixels);
        let scaled: Vec<[f32; 4]> = boxes.iter().map(|&b| self.processor.scale_box(b, width, height)).collect();
        let (logits, _) = self.model.decode(embedding, &scaled, false);
        Ok(self.processor.upscale_logits(logits, width, height))
    }

    /// One mask per box: the pixels whose upscaled logit is above 0 (`post_process_masks`' binarisation).
    pub fn segment(&self, image: &RgbImage, boxes: &[[f32; 4]]) -> eyre::Result<Vec<Mask>> {
        let (width, height) = image.dimensions();
        let logits = self.mask_logits(image, boxes)?.into_data().try_into_vec::<f32>().map_err(|e| eyre!("{e:?}"))?;
        let pixels = (width * height) as usize;
        logits.chunks(pixels).map(|mask| Mask::new(width, height, mask.iter().map(|&v| v > 0.0).collect())).collect()
    }
}
