//! Pillow's bicubic and bilinear resize (`Image.resize(size, Image.BICUBIC)`, the filter behind
//! `CLIPImageProcessor`'s `resample=3`, and `Image.BILINEAR`, `SamImageProcessor`'s `resample=2`),
//! reimplemented from its documented algorithm so outputs agree byte for byte:
//!
//! - a separable convolution kernel: cubic with `a = -0.5` and support 2, or the triangle with support 1;
//! - when shrinking, the kernel is stretched by the scale factor (antialiasing), so every source pixel under
//!   the widened support contributes;
//! - weights are normalised per output pixel, then quantised to 22-bit fixed point; each pass rounds and
//!   clamps to 8 bits;
//! - the horizontal pass runs first and its 8-bit result feeds the vertical pass.

use image::RgbImage;

/// Fractional bits of the fixed-point weights (`32 - 8 - 2`: 8 bits of pixel, 2 bits of overshoot headroom).
const PRECISION_BITS: u32 = 22;

/// Pillow's resampling filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BICUBIC` (3).
    Bicubic,
    /// `Image.BILINEAR` (2).
    Bilinear,
}

impl Filter {
    /// Half-width of the kernel at scale 1.
    fn support(self) -> f64 {
        match self {
            Self::Bicubic => 2.0,
            Self::Bilinear => 1.0,
        }
    }

    fn kernel(self, x: f64) -> f64 {
        match self {
            Self::Bicubic => bicubic(x),
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
        }
    }
}

/// The cubic convolution kernel with `a = -0.5`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The source window and fixed-point weights of each output sample along one axis.
struct AxisWeights {
    /// `(first source index, weights)` per output index.
    taps: Vec<(usize, Vec<i32>)>,
}

impl AxisWeights {
    fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        let inverse_scale = 1.0 / filter_scale;
        let taps = (0..out_size)
            .map(|out| {
                let center = (out as f64 + 0.5) * scale;
                // C's `(int)` truncation, then clamped to the image.
                let first = ((center - support + 0.5) as i64).max(0) as usize;
                let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
                let weights: Vec<f64> =
                    (first..end).map(|i| filter.kernel((i as f64 - center + 0.5) * inverse_scale)).collect();
                let total: f64 = weights.iter().sum();
                let fixed = weights
                    .iter()
                    .map(|w| {
                        let w = if total == 0.0 { *w } else { w / total };
                        // Round half away from zero, as Pillow's `normalize_coeffs_8bpc`.
                        let scaled = w * f64::from(1u32 << PRECISION_BITS);
                        (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                    })
                    .collect();
                (first, fixed)
            })
            .collect();
        Self { taps }
    }

    /// One output sample from the source samples `sample(i)`.
    fn apply(&self, out: usize, sample: impl Fn(usize) -> u8) -> u8 {
        let (first, weights) = &self.taps[out];
        let sum = weights
            .iter()
            .enumerate()
            .fold(1i64 << (PRECISION_BITS - 1), |sum, (k, &w)| sum + i64::from(sample(first + k)) * i64::from(w));
        (sum >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// Resizes to `width × height` exactly as Pillow's `filter` does.
pub fn resize(image: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let horizontal = if width == image.width() {
        image.clone()
    } else {
        let axis = AxisWeights::new(image.width() as usize, width as usize, filter);
        RgbImage::from_fn(width, image.height(), |x, y| {
            image::Rgb(std::array::from_fn(|c| axis.apply(x as usize, |i| image.get_pixel(i as u32, y)[c])))
        })
    };
    if height == horizontal.height() {
        return horizontal;
    }
    let axis = AxisWeights::new(horizontal.height() as usize, height as usize, filter);
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb(std::array::from_fn(|c| axis.apply(y as usize, |i| horizontal.get_pixel(x, i as u32)[c])))
    })
}
