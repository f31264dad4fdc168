//! The two augmented views of a training frame (random square crops, colour jitter) and the patch
//! correspondence their known geometry gives.

use eyre::{ensure, eyre};
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{PretrainConfig, TrainFrame};
use crate::vit::{ClipVisionConfig, ImageProcessor, Resize};

/// A square crop of a frame, in frame pixels, resized to the encoder input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub x: u32,
    pub y: u32,
    pub side: u32,
}

impl View {
    /// Frame position of the centre of patch `index` (row-major) of a `grid x grid` patching of this view.
    pub fn patch_centre(&self, index: usize, grid: usize) -> (f32, f32) {
        let step = self.side as f32 / grid as f32;
        let (row, col) = (index / grid, index % grid);
        (self.x as f32 + (col as f32 + 0.5) * step, self.y as f32 + (row as f32 + 0.5) * step)
    }

    /// The patch of a `grid x grid` patching of this view that covers frame position `(x, y)`, if any.
    pub fn patch_at(&self, x: f32, y: f32, grid: usize) -> Option<usize> {
        let u = (x - self.x as f32) / self.side as f32 * grid as f32;
        let v = (y - self.y as f32) / self.side as f32 * grid as f32;
        let inside = (0.0..grid as f32).contains(&u) && (0.0..grid as f32).contains(&v);
        inside.then(|| v as usize * grid + u as usize)
    }
}

/// For each patch of view `a`, the patch of view `b` covering its centre (`grid x grid` patches per view).
pub fn correspondence(a: &View, b: &View, grid: usize) -> Vec<Option<usize>> {
    (0..grid * grid)
        .map(|i| {
            let (x, y) = a.patch_centre(i, grid);
            b.patch_at(x, y, grid)
        })
        .collect()
}

/// Two overlapping views of a `frame_side` frame.
fn sample_views(rng: &mut ChaCha8Rng, frame_side: u32, config: &PretrainConfig) -> (View, View) {
    let [lo, hi] = config.crop_scale;
    let mut side = || ((rng.random_range(lo..=hi) * frame_side as f32).round() as u32).clamp(8, frame_side);
    let (side_a, side_b) = (side(), side());
    let x_a = rng.random_range(0..=frame_side - side_a);
    let y_a = rng.random_range(0..=frame_side - side_a);
    let mut place = |start_a: u32| {
        let centre = start_a as f32 + side_a as f32 / 2.0;
        let shift = rng.random_range(-config.max_shift..=config.max_shift) * side_a as f32;
        (centre + shift - side_b as f32 / 2.0).round().clamp(0.0, (frame_side - side_b) as f32) as u32
    };
    let (x_b, y_b) = (place(x_a), place(y_a));
    (View { x: x_a, y: y_a, side: side_a }, View { x: x_b, y: y_b, side: side_b })
}

/// Colour jitter of one view (values in `[0, 1]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Jitter {
    pub(super) gain: [f32; 3],
    pub(super) contrast: f32,
    pub(super) offset: f32,
}

impl Jitter {
    fn sample(rng: &mut ChaCha8Rng) -> Self {
        let exposure = rng.random_range(0.6..1.4);
        let gain = std::array::from_fn(|_| exposure * rng.random_range(0.8..1.2));
        Self { gain, contrast: rng.random_range(0.7..1.3), offset: rng.random_range(-0.08..0.08) }
    }

    pub(super) fn apply(&self, image: &mut RgbImage) {
        let mut sum = 0.0f64;
        for p in image.pixels() {
            for c in 0..3 {
                sum += f64::from(p.0[c]) / 255.0 * f64::from(self.gain[c]);
            }
        }
        let mean = (sum / (3 * image.width() * image.height()).max(1) as f64) as f32;
        for p in image.pixels_mut() {
            for c in 0..3 {
                let v = f32::from(p.0[c]) / 255.0 * self.gain[c];
                let v = (v - mean) * self.contrast + mean + self.offset;
                p.0[c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// The image processor of the training views: an exact bicubic resize to the encoder input, CLIP normalisation.
pub(super) fn view_processor(encoder: &ClipVisionConfig) -> ImageProcessor {
    let side = encoder.image_size as u32;
    ImageProcessor { resize: Some(Resize::Exact { height: side, width: side }), crop: None, ..ImageProcessor::default() }
}

/// Two augmented views of `batch` random frames with their patch correspondences.
pub(super) struct Batch {
    pub(super) size: usize,
    /// `[size, 3, n, n]` normalised pixels, flat.
    pub(super) a: Vec<f32>,
    pub(super) b: Vec<f32>,
    /// Positive in view B of each patch of view A, and the reverse.
    pub(super) ab: Vec<Vec<Option<usize>>>,
    pub(super) ba: Vec<Vec<Option<usize>>>,
}

fn crop_view(frame: &RgbImage, view: &View, jitter: &Jitter, processor: &ImageProcessor) -> eyre::Result<Vec<f32>> {
    let mut crop = image::imageops::crop_imm(frame, view.x, view.y, view.side, view.side).to_image();
    jitter.apply(&mut crop);
    processor.preprocess(&crop).try_into_vec::<f32>().map_err(|e| eyre!("{e:?}"))
}

pub(super) fn make_batch(
    frames: &[TrainFrame],
    rng: &mut ChaCha8Rng,
    config: &PretrainConfig,
    processor: &ImageProcessor,
) -> eyre::Result<Batch> {
    let grid = config.encoder.grid_size();
    let mut batch = Batch { size: config.batch, a: Vec::new(), b: Vec::new(), ab: Vec::new(), ba: Vec::new() };
    for _ in 0..config.batch {
        let frame = &frames[rng.random_range(0..frames.len())];
        let (image, image_b) = (&frame.image, frame.unlit.as_ref().unwrap_or(&frame.image));
        ensure!(image.width() == image.height(), "training frames must be square");
        ensure!(image_b.dimensions() == image.dimensions(), "a training frame's unlit render must have its size");
        let (va, vb) = sample_views(rng, image.width(), config);
        let (ja, jb) = (Jitter::sample(rng), Jitter::sample(rng));
        batch.a.extend(crop_view(image, &va, &ja, processor)?);
        batch.b.extend(crop_view(image_b, &vb, &jb, processor)?);
        batch.ab.push(correspondence(&va, &vb, grid));
        batch.ba.push(correspondence(&vb, &va, grid));
    }
    Ok(batch)
}
