//! Text-guided grounding, eq. (1): an open-vocabulary detector (`Det`, OWL-ViT in place of the paper's Grounding
//! DINO) finds each text query's box in the first frame and a segmenter (`Seg`, SAM) turns the box into the
//! object's mask. [`OwlVitGrounder`] is the [`Grounder`] behind them; without a segmenter each detected box is
//! the object's mask, as for the operator's boxes of [`crate::keypoints::BoxGrounder`].
//!
//! - [`tokenizer`]: CLIP's BPE tokenizer ([`ClipTokenizer`]) from `vocab.json` and `merges.txt`;
//! - [`config`]: [`OwlVitConfig`] from a `config.json`;
//! - [`text`]: CLIP's text transformer;
//! - [`owlvit`]: [`OwlVitForObjectDetection`], the detector;
//! - [`sam`]: [`sam::SamSegmenter`], the segmenter (box prompts);
//! - [`load`]: checkpoint folders by HF tensor names.

pub mod config;
pub mod load;
pub mod owlvit;
pub mod sam;
pub mod text;
pub mod tokenizer;

use std::path::Path;

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use eyre::{ensure, eyre};
use image::RgbImage;

pub use config::{OwlVitConfig, OwlVitTextConfig};
pub use owlvit::{DetectionOutput, OwlVitForObjectDetection};
use sam::SamSegmenter;
pub use tokenizer::{ClipTokenizer, Tokens};

use crate::keypoints::{Grounder, Mask};
use crate::vit::ImageProcessor;

/// The best box of one text query.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// `sigmoid` of the box's class logit for the query (the reference post-processing's score).
    pub score: f32,
    /// `[x0, y0, x1, y1]` in pixels of the image given, clamped to it.
    pub bbox: [f32; 4],
}

/// An OWL-ViT checkpoint ready to detect: model, image processor, tokenizer.
#[derive(Debug)]
pub struct OwlVitDetector {
    model: OwlVitForObjectDetection,
    processor: ImageProcessor,
    tokenizer: ClipTokenizer,
    max_tokens: usize,
    device: Device,
}

impl OwlVitDetector {
    /// Loads a HF OWL-ViT checkpoint folder (see [`load`]).
    pub fn load(dir: &Path, device: &Device) -> eyre::Result<Self> {
        let (model, config, processor, tokenizer) = OwlVitForObjectDetection::load(dir, device)?;
        let max_tokens = config.text_config.max_position_embeddings;
        Ok(Self { model, processor, tokenizer, max_tokens, device: device.clone() })
    }

    /// The tokens of `queries`, padded as `OwlViTProcessor` pads them.
    pub fn tokenize(&self, queries: &[String]) -> eyre::Result<Tokens> {
        self.tokenizer.batch(queries, self.max_tokens)
    }

    /// The raw outputs for one image (see [`OwlVitForObjectDetection::forward`]).
    pub fn forward(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<DetectionOutput> {
        ensure!(!queries.is_empty(), "OWL-ViT: expected at least one text query");
        let tokens = self.tokenize(queries)?;
        let pixels = Tensor::<4>::from_data(self.processor.preprocess(image), &self.device);
        Ok(self.model.forward(pixels, &tokens))
    }

    /// The highest-scoring box of each query, in query order, whatever its score.
    pub fn detect(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<Vec<Detection>> {
        let output = self.forward(image, queries)?;
        let scores = sigmoid(output.logits).into_data().try_into_vec::<f32>().map_err(|e| eyre!("{e:?}"))?;
        let boxes = output.pred_boxes.into_data().try_into_vec::<f32>().map_err(|e| eyre!("{e:?}"))?;
        let (width, height) = (image.width() as f32, image.height() as f32);
        Ok((0..queries.len())
            .map(|query| {
                let score_of = |patch: usize| scores[patch * queries.len() + query];
                let best = (0..boxes.len() / 4).fold(0, |best, p| if score_of(p) > score_of(best) { p } else { best });
                let [cx, cy, w, h] = [0, 1, 2, 3].map(|i| boxes[best * 4 + i]);
                // center_to_corners_format, scaled to the image as post_process_object_detection does.
                let bbox = [
                    ((cx - w / 2.0) * width).clamp(0.0, width),
                    ((cy - h / 2.0) * height).clamp(0.0, height),
                    ((cx + w / 2.0) * width).clamp(0.0, width),
                    ((cy + h / 2.0) * height).clamp(0.0, height),
                ];
                Detection { score: score_of(best), bbox }
            })
            .collect())
    }
}

/// [`Grounder`] by open-vocabulary detection, eq. (1): each query's best OWL-ViT box scoring at least
/// `threshold` is segmented by SAM when a segmenter is given (`Seg(Det(I, c), I)`), else the box itself is the
/// mask (every pixel whose centre lies inside it); a query whose best box scores lower is not in view and gets an
/// empty mask.
#[derive(Debug)]
pub struct OwlVitGrounder {
    detector: OwlVitDetector,
    segmenter: Option<SamSegmenter>,
    threshold: f32,
}

impl OwlVitGrounder {
    /// A grounder keeping boxes that score at least `threshold` (HF's examples use 0.1), segmenting them with
    /// `segmenter` if given.
    pub fn new(detector: OwlVitDetector, segmenter: Option<SamSegmenter>, threshold: f32) -> eyre::Result<Self> {
        ensure!((0.0..=1.0).contains(&threshold), "detection threshold: expected 0..=1, got {threshold}");
        Ok(Self { detector, segmenter, threshold })
    }

    /// Each query's best detection and its mask (empty below the threshold), in query order.
    pub fn ground_with_detections(
        &self,
        image: &RgbImage,
        queries: &[String],
    ) -> eyre::Result<(Vec<Detection>, Vec<Mask>)> {
        let (width, height) = image.dimensions();
        let detections = self.detector.detect(image, queries)?;
        let kept: Vec<[f32; 4]> =
            detections.iter().filter(|d| d.score >= self.threshold).map(|d| d.bbox).collect();
        let mut segmented = match (&self.segmenter, kept.is_empty()) {
            (Some(segmenter), false) => segmenter.segment(image, &kept)?.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let masks = detections
            .iter()
            .map(|detection| {
                let [x0, y0, x1, y1] = detection.bbox;
                if detection.score < self.threshold {
                    return Mask::from_fn(width, height, |_, _| false);
                }
                if self.segmenter.is_some() {
                    return segmented.next().expect("one SAM mask per kept box");
                }
                Mask::from_fn(width, height, |x, y| {
                    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                    (x0..x1).contains(&px) && (y0..y1).contains(&py)
                })
            })
            .collect();
        Ok((detections, masks))
    }
}

impl Grounder for OwlVitGrounder {
    fn ground(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<Vec<Mask>> {
        Ok(self.ground_with_detections(image, queries)?.1)
    }
}
