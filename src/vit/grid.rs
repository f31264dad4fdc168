//! The frozen local encoder's feature grid `M_local` (paper sec. III-B/C): the frame cut into `split x split`
//! sub-images, each resized to the ViT's input size and encoded on its own, and the patch tokens stitched back
//! into one `[split·g, split·g, C]` grid (`g` = patches per side). With ViT-B/16 at 224 and `split = 2` this is the
//! paper's 28x28 grid; each cell covers `width / 28 x height / 28` pixels of the frame.
//!
//! Sub-images are resized exactly (Pillow bicubic, as the checkpoint's processor would) to
//! `image_size x image_size` and normalised with the checkpoint's mean and std; no centre crop, so every pixel of
//! the frame belongs to exactly one cell.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use eyre::ensure;
use image::RgbImage;
use image::imageops;

use super::{ClipVisionConfig, ClipVisionModel, ImageProcessor, Resize};

/// A frozen CLIP vision tower applied to the sub-images of a frame.
#[derive(Debug)]
pub struct GridEncoder {
    model: ClipVisionModel,
    config: ClipVisionConfig,
    processor: ImageProcessor,
    split: usize,
}

impl GridEncoder {
    /// Wraps a loaded model; `processor`'s rescale and normalisation are kept, its resize becomes an exact resize
    /// to the model's input size and its crop is dropped.
    pub fn new(model: ClipVisionModel, config: ClipVisionConfig, processor: ImageProcessor, split: usize) -> Self {
        assert!(split > 0, "split must be positive");
        let side = config.image_size as u32;
        let processor = ImageProcessor { resize: Some(Resize::Exact { height: side, width: side }), crop: None, ..processor };
        Self { model, config, processor, split }
    }

    /// Loads a HF CLIP checkpoint folder (see [`ClipVisionModel::load`]).
    pub fn load(dir: &Path, split: usize, device: &Device) -> eyre::Result<Self> {
        let (model, config, processor) = ClipVisionModel::load(dir, device)?;
        Ok(Self::new(model, config, processor, split))
    }

    /// Side of the feature grid, `split · image_size / patch_size`.
    pub fn grid(&self) -> usize {
        self.split * self.config.grid_size()
    }

    /// Sub-images per side of the frame (`split x split` sub-images).
    pub fn split(&self) -> usize {
        self.split
    }

    /// Feature width `C`.
    pub fn channels(&self) -> usize {
        self.config.hidden_size
    }

    /// The vision tower's configuration.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// `M_local` for each frame: `[B, grid, grid, C]`, row-major cells (`[b, row, col]` covers the pixels
    /// `[row·h/grid, (row+1)·h/grid) x [col·w/grid, ...)`). Frames must share one size, divisible by `split`.
    pub fn encode(&self, frames: &[&RgbImage], device: &Device) -> eyre::Result<Tensor<4>> {
        ensure!(!frames.is_empty(), "grid encoder: no frames");
        let (width, height) = frames[0].dimensions();
        ensure!(
            frames.iter().all(|f| f.dimensions() == (width, height)),
            "grid encoder: frames must share one size, expected {width}x{height}"
        );
        let s = self.split as u32;
        ensure!(
            width % s == 0 && height % s == 0,
            "grid encoder: frame {width}x{height} is not divisible into {s}x{s} sub-images"
        );
        let (sw, sh) = (width / s, height / s);
        let side = self.config.image_size;
        let mut pixels = Vec::with_capacity(frames.len() * self.split * self.split * 3 * side * side);
        for frame in frames {
            for row in 0..s {
                for col in 0..s {
                    let sub = imageops::crop_imm(*frame, col * sw, row * sh, sw, sh).to_image();
                    pixels.extend(self.processor.preprocess(&sub).try_into_vec::<f32>().expect("f32 pixels"));
                }
            }
        }
        let subs = frames.len() * self.split * self.split;
        let input = Tensor::<4>::from_data(TensorData::new(pixels, [subs, 3, side, side]), device);
        let tokens = self.model.forward(input).last_hidden_state;
        let [_, positions, channels] = tokens.dims();
        let g = self.config.grid_size();
        ensure!(positions == g * g + 1, "grid encoder: expected {} tokens, got {positions}", g * g + 1);
        // [B, split_r, split_c, g_r, g_c, C] -> [B, split_r, g_r, split_c, g_c, C] -> [B, grid, grid, C]
        let patches = tokens.narrow(1, 1, g * g).reshape([frames.len() * self.split, self.split, g, g * channels]);
        let patches = patches.reshape([frames.len() * self.split, self.split, g, g, channels]);
        let stitched = patches.swap_dims(1, 2).reshape([frames.len(), self.grid(), self.grid(), channels]);
        Ok(stitched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny random tower; positions and the class token are what make sub-images distinguishable.
    fn tiny() -> (ClipVisionModel, ClipVisionConfig) {
        let config = ClipVisionConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            image_size: 8,
            patch_size: 4,
            ..ClipVisionConfig::default()
        };
        (ClipVisionModel::new(&config, &Device::flex()), config)
    }

    #[test]
    fn stitches_each_sub_image_into_its_quadrant() {
        let device = Device::flex();
        let (model, config) = tiny();
        let encoder = GridEncoder::new(model, config, ImageProcessor::default(), 2);
        assert_eq!(encoder.grid(), 4);
        // A 16x16 frame of distinct colours per pixel.
        let frame = RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, ((x + y) * 8) as u8]));
        let grid = encoder.encode(&[&frame], &device).unwrap();
        assert_eq!(grid.dims(), [1, 4, 4, 16]);
        // Each quadrant encoded alone (split 1) must give the 2x2 patch features at its place in the grid.
        let single = GridEncoder::new(encoder.model.clone(), encoder.config.clone(), ImageProcessor::default(), 1);
        for (row, col) in [(0u32, 0u32), (0, 1), (1, 0), (1, 1)] {
            let sub = imageops::crop_imm(&frame, col * 8, row * 8, 8, 8).to_image();
            let expected: Vec<f32> = single.encode(&[&sub], &device).unwrap().into_data().try_to_vec().unwrap();
            let (r, c) = (row as usize * 2, col as usize * 2);
            let got: Vec<f32> =
                grid.clone().slice([0..1, r..r + 2, c..c + 2, 0..16]).into_data().try_to_vec().unwrap();
            let err = expected.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-5, "quadrant ({row}, {col}) differs by {err}");
        }
        // Quadrants differ, so a wrong stitching order would show.
        let q: Vec<f32> = grid.clone().slice([0..1, 0..1, 0..1, 0..16]).into_data().try_to_vec().unwrap();
        let q2: Vec<f32> = grid.slice([0..1, 3..4, 3..4, 0..16]).into_data().try_to_vec().unwrap();
        assert!(q.iter().zip(&q2).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn rejects_mixed_sizes_and_odd_frames() {
        let device = Device::flex();
        let (model, config) = tiny();
        let encoder = GridEncoder::new(model, config, ImageProcessor::default(), 2);
        let a = RgbImage::new(16, 16);
        let b = RgbImage::new(16, 18);
        assert!(encoder.encode(&[&a, &b], &device).unwrap_err().to_string().contains("share one size"));
        let odd = RgbImage::new(15, 16);
        assert!(encoder.encode(&[&odd], &device).unwrap_err().to_string().contains("not divisible"));
    }
}
