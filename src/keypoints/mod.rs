//! One-time keypoint extraction from the first frame (paper sec. III-B, "One-time Key Points Extraction"): text
//! queries -> object masks -> per-pixel semantic features -> K-means inside each mask -> keypoints. The keypoints
//! seed the tracker, whose tracks locate the key patches of the local encoder (sec. III-C).
//!
//! # Pipeline
//!
//! 1. **Text-guided masks**, eq. (1): `{M_i} = Seg(I_1, Det(I_1, {c_i}))`. A [`Grounder`] maps the task's text
//!    queries `c_i` and the first frame `I_1` to one [`Mask`] per query. The paper's `Det` is Grounding DINO and
//!    its `Seg` is SAM; here the first implementation is the [`OracleGrounder`], which looks the queries up among
//!    the simulator's named task objects (`EpisodeEvent::Start { objects }`, `EpisodeInfo::objects`) and returns
//!    their instance masks from the simulator's segmentation image. An open-vocabulary detector + segmenter
//!    implements the same trait (boxes from the detector prompt the segmenter, one mask per query), so nothing
//!    downstream changes when it replaces the oracle.
//! 2. **Pre-segmentation based semantic mapping**: the frame is cut into `N_grid x N_grid` sub-images, each
//!    encoded by the frozen ViT ([`GridEncoder`], the same encoder and split as the local features of sec.
//!    III-C), and the `n x n` patch features of each sub-image are bilinearly upsampled to the sub-image and
//!    stitched into the per-pixel map `F` (`H x W x N_f`). The full map is never built (a 512x512 frame with
//!    ViT-B features would be 800 MB): [`FeatureGrid`] keeps the stitched patch grid (`28 x 28 x N_f` with the
//!    paper's split 2) and interpolates a pixel's feature on demand, only at the mask pixels K-means uses.
//!    *Interpolation convention* (PyTorch's `interpolate(mode="bilinear", align_corners=False)`): patch `(r, c)`
//!    of a sub-image of `w x h` pixels cut into `n x n` patches holds the feature at its centre
//!    `((c + 0.5)·w/n, (r + 0.5)·h/n)`, in continuous pixel coordinates where pixel `(x, y)` spans
//!    `[x, x + 1) x [y, y + 1)`; pixel `(x, y)` gets the bilinear blend of the four patch centres around its own
//!    centre `(x + 0.5, y + 0.5)`, and within half a patch of the sub-image border the nearest row/column is
//!    repeated. Each sub-image is upsampled on its own, as in the paper, so features never blend across the
//!    seams between sub-images.
//! 3. **Keypoint selection**: `F[M_i]` is clustered with K-means and the pixel closest to each centre becomes a
//!    keypoint. Choices, in order:
//!    - *Allocation* ([`allocate`]): `N_cluster = k` keypoints in total (the paper finds 10-20 work well; default
//!      15), shared proportionally to mask area with at least 2 per object (1 when `k < 2·N_obj`; `k < N_obj` is
//!      an error), never more than a mask's pixel count: each further keypoint goes to the object furthest below
//!      its share `k·a_i/Σa`. Large objects get more keypoints, small ones still get enough to be tracked.
//!    - *Samples*: a mask larger than [`KeypointConfig::max_samples`] pixels is subsampled (seeded, uniform
//!      without replacement), which bounds memory at `max_samples x (N_f + 2)` floats per object.
//!    - *Clustering space*: each pixel's interpolated feature is L2-normalised (cosine geometry, as CLIP/DINO
//!      features are compared), then the feature block is scaled to unit total variance over the mask, and the
//!      pixel position, centred on the mask's centroid and divided by its RMS radius (unit total variance too),
//!      is appended with weight [`KeypointConfig::spatial_weight`] (default 1: appearance and position weigh
//!      the same). Features alone can put two keypoints side by side where an object's features vary little
//!      (plain-coloured objects); the position term keeps clusters compact, so the keypoints spread over the
//!      object and the tracked key patches cover it. On the shipped recordings' first frames (k = 15, small
//!      ViT) features alone give 2.0 / 3.0 / 5.4 px as the smallest gap between two keypoints of an object
//!      (push-button / stack-block / place-fruit) and weight 1 gives 2.8 / 5.4 / 9.5 px, with the mean
//!      distance from a mask pixel to its nearest keypoint equal or slightly lower. ReKep (the paper's ref.
//!      [43]) likewise appends point positions to its features before K-means. Both blocks are normalised per
//!      object, so the weighting does not depend on `N_f` or on the object's size.
//!    - *K-means* ([`kmeans`]): k-means++ initialisation and Lloyd iterations, seeded by a `ChaCha8` stream, so
//!      the keypoints are a pure function of (image, masks, encoder, config, seed).
//!    - *Selection*: for each centre, the cluster member nearest to it in the clustering space (the paper: "the
//!      point closest to each cluster center"). A member, not the centre's position, so the keypoint always lies
//!      on the mask even for non-convex clusters, and it is representative in appearance and position at once.
//!      Distinct clusters never share a pixel.
//!
//! Keypoints are continuous pixel coordinates of the chosen pixel's centre (`x + 0.5`, `y + 0.5`), the
//! convention of `msg::Keypoints` and the simulator's oracle tracks, with the index of their object (mask).
//! They are ordered by object, then in raster order.
//!
//! [`KeypointsFile`] is the JSON written by `glue keypoints`:
//! `{"keypoints": [[x, y], ...], "objects": [i, ...], "labels": ["red button", ...]}` (`objects[j]` is the mask
//! index of keypoint `j`, `labels[i]` names mask `i`: its query or mask file).

mod feature_grid;
mod grounders;
mod kmeans;
mod overlay;
mod select;
#[cfg(test)]
mod tests;

use std::path::Path;

use eyre::{WrapErr, ensure};
use image::{DynamicImage, GrayImage, Luma, RgbImage};
use serde::{Deserialize, Serialize};


pub use feature_grid::FeatureGrid;
pub use grounders::{BoxGrounder, OracleGrounder};
pub use kmeans::{KMeans, kmeans};
pub use overlay::{draw_overlay, object_colour};
pub use select::{KeypointConfig, allocate, extract_keypoints, extract_keypoints_with, select_keypoints};

/// A binary object mask, `width x height`, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    width: u32,
    height: u32,
    data: Vec<bool>,
}

impl Mask {
    /// A mask from row-major pixels; the length must be `width · height`.
    pub fn new(width: u32, height: u32, data: Vec<bool>) -> eyre::Result<Self> {
        ensure!(width > 0 && height > 0, "mask: expected a positive size, got {width}x{height}");
        ensure!(
            data.len() as u64 == u64::from(width) * u64::from(height),
            "mask: expected {width}x{height} = {} pixels, got {}",
            u64::from(width) * u64::from(height),
            data.len()
        );
        Ok(Self { width, height, data })
    }

    /// A mask with `inside(x, y)` per pixel.
    pub fn from_fn(width: u32, height: u32, mut inside: impl FnMut(u32, u32) -> bool) -> Self {
        let data = (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| inside(x, y)).collect();
        Self { width, height, data }
    }

    /// The pixels of an instance segmentation (one id per pixel, row-major) that equal `instance`.
    pub fn from_instance(width: u32, height: u32, segmentation: &[u8], instance: u8) -> eyre::Result<Self> {
        Self::new(width, height, segmentation.iter().map(|&id| id == instance).collect())
            .wrap_err_with(|| format!("segmentation of instance {instance}"))
    }

    /// An image's non-zero pixels (any colour channel non-zero and not fully transparent) are inside.
    pub fn from_image(image: &DynamicImage) -> Self {
        let rgba = image.to_rgba8();
        let data = rgba.pixels().map(|p| p.0[3] != 0 && p.0[..3].iter().any(|&c| c != 0)).collect();
        Self { width: rgba.width(), height: rgba.height(), data }
    }

    /// Reads a mask image (PNG): non-zero pixels are inside.
    pub fn load(path: &Path) -> eyre::Result<Self> {
        let image = image::open(path).wrap_err_with(|| format!("cannot read mask {}", path.display()))?;
        Ok(Self::from_image(&image))
    }

    /// The mask as an 8-bit image, 255 inside and 0 outside.
    pub fn to_image(&self) -> GrayImage {
        GrayImage::from_fn(self.width, self.height, |x, y| Luma([if self.contains(x, y) { 255 } else { 0 }]))
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Whether pixel `(x, y)` is inside (false off the image).
    pub fn contains(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.data[(y * self.width + x) as usize]
    }

    /// Number of pixels inside.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&b| b).count()
    }

    /// The pixels inside, in raster order.
    pub fn pixels(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let w = self.width;
        self.data.iter().enumerate().filter(|(_, b)| **b).map(move |(i, _)| (i as u32 % w, i as u32 / w))
    }
}

/// A keypoint: continuous pixel coordinates (pixel `(i, j)` spans `[i, i + 1) x [j, j + 1)`; a keypoint sits
/// at its pixel's centre) and the index of the object (mask) it belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub object: usize,
}

impl Keypoint {
    /// The keypoint at the centre of pixel `(px, py)`.
    pub fn at_pixel(px: u32, py: u32, object: usize) -> Self {
        Self { x: px as f32 + 0.5, y: py as f32 + 0.5, object }
    }

    /// The pixel the keypoint lies in.
    pub fn pixel(&self) -> (u32, u32) {
        (self.x.max(0.0).floor() as u32, self.y.max(0.0).floor() as u32)
    }
}

/// The JSON file of `glue keypoints`: `{"keypoints": [[x, y], ...], "objects": [i, ...], "labels": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeypointsFile {
    /// `[x, y]` per keypoint, continuous pixel coordinates (pixel centres at `+0.5`).
    pub keypoints: Vec<[f32; 2]>,
    /// The object (mask) index of each keypoint.
    pub objects: Vec<usize>,
    /// One label per object: its text query or mask file (absent in JSON = none).
    #[serde(default)]
    pub labels: Vec<String>,
}

impl KeypointsFile {
    pub fn new(keypoints: &[Keypoint], labels: Vec<String>) -> Self {
        Self {
            keypoints: keypoints.iter().map(|k| [k.x, k.y]).collect(),
            objects: keypoints.iter().map(|k| k.object).collect(),
            labels,
        }
    }

    /// The keypoints back; `keypoints` and `objects` must have one entry per keypoint.
    pub fn to_keypoints(&self) -> eyre::Result<Vec<Keypoint>> {
        ensure!(
            self.keypoints.len() == self.objects.len(),
            "keypoints file: {} keypoints but {} object indices",
            self.keypoints.len(),
            self.objects.len()
        );
        Ok(self.keypoints.iter().zip(&self.objects).map(|(&[x, y], &object)| Keypoint { x, y, object }).collect())
    }

    pub fn save(&self, path: &Path) -> eyre::Result<()> {
        let json = serde_json::to_string(self)?;
        std::fs::write(path, json + "\n").wrap_err_with(|| format!("writing {}", path.display()))
    }

    pub fn load(path: &Path) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).wrap_err_with(|| format!("parsing {}", path.display()))
    }
}

/// Text-guided mask generation, eq. (1): `{M_i} = Seg(I_1, Det(I_1, {c_i}))`, one mask per text query, in query
/// order, each `image`-sized. An implementation fails (rather than returning an empty mask) when it cannot find
/// a queried object.
///
/// Implementations: [`OracleGrounder`] (the simulator's ground truth). The paper's open-vocabulary pipeline
/// (Grounding DINO boxes prompting SAM) is meant to implement this trait too: `ground` runs the detector on
/// `image` with each query, keeps the best box per query and returns SAM's mask for it.
pub trait Grounder {
    /// One mask per query; an object that is not in view gets an empty mask (a detector that finds nothing).
    fn ground(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<Vec<Mask>>;
}
