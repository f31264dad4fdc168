//! The per-pixel semantic map `F` of sec. III-B, kept as the stitched patch grid and upsampled bilinearly on
//! demand (module doc of [`super`], step 2).

use burn::tensor::Device;
use eyre::{ensure, eyre};
use image::RgbImage;

use crate::vit::GridEncoder;

/// The stitched patch features of one frame (`grid x grid x channels`, `split x split` sub-images of
/// `grid/split` patches per side) and the frame size, with per-pixel bilinear upsampling on demand (see the
/// module doc for the convention).
#[derive(Clone, Debug)]
pub struct FeatureGrid {
    grid: usize,
    split: usize,
    channels: usize,
    width: u32,
    height: u32,
    data: Vec<f32>,
}

/// One axis of the interpolation: the two grid indices around pixel `p`'s centre and the weight of the second.
fn axis(p: u32, sub_pixels: u32, patches: usize) -> (usize, usize, f32) {
    let (sub, local) = ((p / sub_pixels) as usize, p % sub_pixels);
    let f = ((local as f32 + 0.5) * patches as f32 / sub_pixels as f32 - 0.5).clamp(0.0, (patches - 1) as f32);
    let i0 = (f.floor() as usize).min(patches - 1);
    let i1 = (i0 + 1).min(patches - 1);
    (sub * patches + i0, sub * patches + i1, f - i0 as f32)
}

impl FeatureGrid {
    /// Wraps row-major `[grid, grid, channels]` features of a `width x height` frame cut into `split x split`
    /// sub-images.
    pub fn new(
        data: Vec<f32>,
        grid: usize,
        split: usize,
        channels: usize,
        width: u32,
        height: u32,
    ) -> eyre::Result<Self> {
        ensure!(grid > 0 && split > 0 && channels > 0, "feature grid: grid, split and channels must be positive");
        ensure!(grid % split == 0, "feature grid: grid {grid} is not a multiple of split {split}");
        ensure!(
            width > 0 && height > 0 && width % split as u32 == 0 && height % split as u32 == 0,
            "feature grid: frame {width}x{height} is not divisible into {split}x{split} sub-images"
        );
        ensure!(
            data.len() == grid * grid * channels,
            "feature grid: expected {grid}x{grid}x{channels} values, got {}",
            data.len()
        );
        Ok(Self { grid, split, channels, width, height, data })
    }

    /// Encodes `image` with the frozen grid encoder (the paper's pre-segmented sub-images).
    pub fn encode(encoder: &GridEncoder, image: &RgbImage, device: &Device) -> eyre::Result<Self> {
        let features = encoder.encode(&[image], device)?;
        let [_, grid, _, channels] = features.dims();
        let data: Vec<f32> = features.into_data().try_to_vec().map_err(|e| eyre!("grid encoder output: {e:?}"))?;
        Self::new(data, grid, encoder.split(), channels, image.width(), image.height())
    }

    pub fn grid(&self) -> usize {
        self.grid
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The frame size the features describe.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The feature of grid cell `(row, col)`.
    pub fn cell(&self, row: usize, col: usize) -> &[f32] {
        let at = (row * self.grid + col) * self.channels;
        &self.data[at..at + self.channels]
    }

    /// Writes pixel `(x, y)`'s bilinearly upsampled feature (the per-pixel map `F` at that pixel) into `out`
    /// (`channels` long).
    pub fn pixel_feature(&self, x: u32, y: u32, out: &mut [f32]) {
        assert!(x < self.width && y < self.height, "pixel ({x}, {y}) is off the {}x{} frame", self.width, self.height);
        let patches = self.grid / self.split;
        let (c0, c1, tx) = axis(x, self.width / self.split as u32, patches);
        let (r0, r1, ty) = axis(y, self.height / self.split as u32, patches);
        let corners = [
            (r0, c0, (1.0 - ty) * (1.0 - tx)),
            (r0, c1, (1.0 - ty) * tx),
            (r1, c0, ty * (1.0 - tx)),
            (r1, c1, ty * tx),
        ];
        out.fill(0.0);
        for (r, c, w) in corners {
            if w != 0.0 {
                for (o, v) in out.iter_mut().zip(self.cell(r, c)) {
                    *o += w * v;
                }
            }
        }
    }
}
