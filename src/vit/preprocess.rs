//! `CLIPImageProcessor` (`transformers/models/clip/image_processing_clip.py`) as a checkpoint's
//! `preprocessor_config.json` configures it: resize (shortest edge, Pillow bicubic), centre crop, rescale,
//! normalise, channels first.

use std::path::Path;

use burn::tensor::TensorData;
use eyre::{WrapErr, bail};
use image::RgbImage;
use serde::Deserialize;

use super::resample::{self, Filter};

/// Pillow's resampling code for bicubic, the only filter implemented.
const PIL_BICUBIC: u32 = 3;

/// `OPENAI_CLIP_MEAN` (`transformers/image_utils.py`), the default `image_mean`.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];

/// `OPENAI_CLIP_STD`, the default `image_std`.
pub const OPENAI_CLIP_STD: [f64; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// A `size` / `crop_size` entry. A bare integer means a shortest edge for `size` and a square for `crop_size`,
/// as HF's `get_size_dict` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Int(u32),
    ShortestEdge { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
}

/// The fields of `preprocessor_config.json` that `CLIPImageProcessor` uses, with its defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct ProcessorFile {
    do_resize: bool,
    size: SizeSpec,
    resample: u32,
    do_center_crop: bool,
    crop_size: SizeSpec,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    image_mean: [f64; 3],
    image_std: [f64; 3],
}

impl Default for ProcessorFile {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: SizeSpec::ShortestEdge { shortest_edge: 224 },
            resample: PIL_BICUBIC,
            do_center_crop: true,
            crop_size: SizeSpec::HeightWidth { height: 224, width: 224 },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }
}

/// How the image is resized before cropping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resize {
    /// Scale so the shorter side has this length, keeping the aspect ratio.
    ShortestEdge(u32),
    /// Scale to exactly `height × width`.
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
}

/// Turns RGB images into the normalised `pixel_values` the CLIP vision tower takes, as `CLIPImageProcessor` does.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    /// Resize step (Pillow bicubic), if any.
    pub resize: Option<Resize>,
    /// Centre crop `(height, width)`, if any; zero-padded where the image is smaller.
    pub crop: Option<(u32, u32)>,
    /// Multiplier applied to the 8-bit values, if any.
    pub rescale: Option<f64>,
    /// Per-channel `(mean, std)`, if normalising.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

impl Default for ImageProcessor {
    /// `CLIPImageProcessor()`: shortest edge 224, crop 224, 1/255, OpenAI CLIP mean and std.
    fn default() -> Self {
        Self {
            resize: Some(Resize::ShortestEdge(224)),
            crop: Some((224, 224)),
            rescale: Some(1.0 / 255.0),
            normalize: Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
        }
    }
}

impl ImageProcessor {
    /// Reads a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> eyre::Result<Self> {
        Self::from_file_fields(serde_json::from_str(text)?)
    }

    /// [`Self::from_json`] on a file.
    pub fn from_file(path: &Path) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text).wrap_err_with(|| format!("bad image processor config {}", path.display()))
    }

    fn from_file_fields(file: ProcessorFile) -> eyre::Result<Self> {
        if file.do_resize && file.resample != PIL_BICUBIC {
            bail!("resample {} is not supported (only {PIL_BICUBIC}, bicubic)", file.resample);
        }
        let resize = file.do_resize.then_some(match file.size {
            SizeSpec::Int(edge) | SizeSpec::ShortestEdge { shortest_edge: edge } => Resize::ShortestEdge(edge),
            SizeSpec::HeightWidth { height, width } => Resize::Exact { height, width },
        });
        let crop = match (file.do_center_crop, file.crop_size) {
            (false, _) => None,
            (true, SizeSpec::Int(side)) => Some((side, side)),
            (true, SizeSpec::HeightWidth { height, width }) => Some((height, width)),
            (true, SizeSpec::ShortestEdge { .. }) => bail!("crop_size needs a height and a width"),
        };
        Ok(Self {
            resize,
            crop,
            rescale: file.do_rescale.then_some(file.rescale_factor),
            normalize: file.do_normalize.then_some((file.image_mean, file.image_std)),
        })
    }

    /// `pixel_values` `[1, 3, height, width]` (f32) for one image.
    pub fn preprocess(&self, image: &RgbImage) -> TensorData {
        let resized = match self.resize {
            Some(resize) => {
                let (width, height) = output_size(image.width(), image.height(), resize);
                resample::resize(image, width, height, Filter::Bicubic)
            }
            None => image.clone(),
        };
        let (height, width) = self.crop.unwrap_or((resized.height(), resized.width()));
        // HF's `center_crop`: offset `(old - new) // 2`, zeros where the window leaves the image.
        let top = (i64::from(resized.height()) - i64::from(height)).div_euclid(2);
        let left = (i64::from(resized.width()) - i64::from(width)).div_euclid(2);
        let mut values = Vec::with_capacity(3 * (height * width) as usize);
        for channel in 0..3 {
            for y in 0..i64::from(height) {
                for x in 0..i64::from(width) {
                    let (sy, sx) = (y + top, x + left);
                    let inside =
                        (0..i64::from(resized.height())).contains(&sy) && (0..i64::from(resized.width())).contains(&sx);
                    let byte = if inside { resized.get_pixel(sx as u32, sy as u32)[channel] } else { 0 };
                    values.push(self.normalise(byte, channel));
                }
            }
        }
        TensorData::new(values, [1, 3, height as usize, width as usize])
    }

    /// Rescale in f64 then f32, normalise in f32, as HF's numpy `rescale` and `normalize` do.
    fn normalise(&self, byte: u8, channel: usize) -> f32 {
        let value = match self.rescale {
            Some(factor) => (f64::from(byte) * factor) as f32,
            None => f32::from(byte),
        };
        match self.normalize {
            Some((mean, std)) => (value - mean[channel] as f32) / std[channel] as f32,
            None => value,
        }
    }
}

/// Output `(width, height)` of the resize step; for a shortest edge, HF's `get_resize_output_image_size` (the
/// longer side scaled in floating point and truncated).
fn output_size(width: u32, height: u32, resize: Resize) -> (u32, u32) {
    match resize {
        Resize::Exact { height, width } => (width, height),
        Resize::ShortestEdge(edge) => {
            let (short, long) = (width.min(height), width.max(height));
            let new_long = (f64::from(edge) * f64::from(long) / f64::from(short)) as u32;
            if width <= height { (edge, new_long) } else { (new_long, edge) }
        }
    }
}
