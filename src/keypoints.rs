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

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::Device;
use eyre::{WrapErr, bail, ensure, eyre};
use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::msg::ObjectInfo;
use crate::recording::Episode;
use crate::vit::GridEncoder;
use crate::viz::{PointStyle, draw_points, instance_colour};

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

/// An **oracle** grounder: resolves text queries against the simulator's named task objects and returns their
/// ground-truth instance masks from the segmentation image of the same frame. It stands in for the detector +
/// segmenter of eq. (1) in simulation; it never looks at the image's pixels.
///
/// Matching, on names lower-cased with `_`, `-` and punctuation read as spaces: an object whose name equals
/// the query; else the single object whose name contains every word of the query ("button" would match "red
/// button" and "button base": ambiguous, an error); else an error listing the available objects.
#[derive(Clone, Debug)]
pub struct OracleGrounder {
    objects: Vec<ObjectInfo>,
    width: u32,
    height: u32,
    segmentation: Vec<u8>,
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

impl OracleGrounder {
    /// The task objects and the frame's instance segmentation (`width · height` ids, row-major).
    pub fn new(objects: Vec<ObjectInfo>, width: u32, height: u32, segmentation: Vec<u8>) -> eyre::Result<Self> {
        ensure!(
            segmentation.len() as u64 == u64::from(width) * u64::from(height),
            "oracle grounder: expected a {width}x{height} segmentation, got {} ids",
            segmentation.len()
        );
        Ok(Self { objects, width, height, segmentation })
    }

    /// The objects of a recorded episode and the segmentation of its first tick (recorded with segmentation).
    pub fn from_episode(episode: &Episode) -> eyre::Result<Self> {
        let info = &episode.info;
        let tick = episode.ticks.first().ok_or_else(|| eyre!("oracle grounder: the episode has no ticks"))?;
        let segmentation = tick.segmentation.clone().ok_or_else(|| {
            eyre!("oracle grounder: the episode's first tick has no segmentation (record with segmentation)")
        })?;
        ensure!(!info.objects.is_empty(), "oracle grounder: the episode lists no task objects");
        Self::new(info.objects.clone(), info.width, info.height, segmentation)
    }

    pub fn objects(&self) -> &[ObjectInfo] {
        &self.objects
    }

    fn available(&self) -> String {
        let names: Vec<String> =
            self.objects.iter().map(|o| format!("`{}` (instance {})", o.name, o.instance)).collect();
        names.join(", ")
    }

    /// The task object a query names (see the type's doc for the matching rules).
    pub fn resolve(&self, query: &str) -> eyre::Result<&ObjectInfo> {
        let q = words(query);
        ensure!(!q.is_empty(), "oracle grounder: empty text query; available objects: {}", self.available());
        if let Some(object) = self.objects.iter().find(|o| words(&o.name) == q) {
            return Ok(object);
        }
        let matches: Vec<&ObjectInfo> = self
            .objects
            .iter()
            .filter(|o| {
                let name = words(&o.name);
                q.iter().all(|w| name.contains(w))
            })
            .collect();
        match matches.as_slice() {
            [object] => Ok(object),
            [] => bail!("oracle grounder: no task object matches `{query}`; available objects: {}", self.available()),
            many => {
                let names: Vec<String> = many.iter().map(|o| format!("`{}`", o.name)).collect();
                bail!(
                    "oracle grounder: `{query}` is ambiguous, it matches {}; available objects: {}",
                    names.join(" and "),
                    self.available()
                )
            }
        }
    }
}

impl Grounder for OracleGrounder {
    fn ground(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<Vec<Mask>> {
        ensure!(
            image.dimensions() == (self.width, self.height),
            "oracle grounder: image is {}x{} but the segmentation is {}x{}",
            image.width(),
            image.height(),
            self.width,
            self.height
        );
        ensure!(!queries.is_empty(), "oracle grounder: no text queries");
        queries
            .iter()
            .map(|query| {
                let object = self.resolve(query)?;
                Mask::from_instance(self.width, self.height, &self.segmentation, object.instance)
            })
            .collect()
    }
}

/// Operator-drawn boxes, one per text query in query order, as the masks of eq. (1): the stand-in on the real
/// robot until the open-vocabulary detector + segmenter implement [`Grounder`] (the `grounding` node's `BOXES`
/// setting). The operator reads the boxes off a camera frame of the set-up scene; each mask is its whole box, so
/// K-means may put keypoints on background inside it: draw boxes tight.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxGrounder {
    /// `[x0, y0, x1, y1]` in pixels, x0 < x1 and y0 < y1, one per query.
    boxes: Vec<[u32; 4]>,
}

impl BoxGrounder {
    /// Parses `x0,y0,x1,y1;x0,y0,x1,y1;...` (pixels, one box per text query).
    pub fn parse(text: &str) -> eyre::Result<Self> {
        let boxes = text
            .split(';')
            .map(|b| {
                let v: Vec<u32> = b.split(',').map(|s| s.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|e| {
                    eyre!("boxes: `{b}`: expected x0,y0,x1,y1 as whole pixels ({e}); boxes are separated by `;`")
                })?;
                let [x0, y0, x1, y1] = v[..] else { bail!("boxes: `{b}`: expected 4 numbers x0,y0,x1,y1, got {}", v.len()) };
                ensure!(x0 < x1 && y0 < y1, "boxes: `{b}`: expected x0 < x1 and y0 < y1");
                Ok([x0, y0, x1, y1])
            })
            .collect::<eyre::Result<_>>()?;
        Ok(Self { boxes })
    }
}

impl Grounder for BoxGrounder {
    fn ground(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<Vec<Mask>> {
        ensure!(
            queries.len() == self.boxes.len(),
            "box grounder: {} text queries ({queries:?}) but {} boxes; give one box per query, in query order",
            queries.len(),
            self.boxes.len()
        );
        let (w, h) = image.dimensions();
        self.boxes
            .iter()
            .map(|&[x0, y0, x1, y1]| {
                ensure!(x1 <= w && y1 <= h, "box grounder: box {x0},{y0},{x1},{y1} reaches outside the {w}x{h} image");
                Ok(Mask::from_fn(w, h, |x, y| (x0..x1).contains(&x) && (y0..y1).contains(&y)))
            })
            .collect()
    }
}

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

/// The knobs of [`select_keypoints`] (see the module doc for what each does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeypointConfig {
    /// Keypoints in total, `N_cluster` (the paper: 10-20).
    pub k: usize,
    /// Seed of the subsampling and of K-means.
    pub seed: u64,
    /// Weight of the (normalised) pixel position against the (normalised) feature in the clustering space.
    pub spatial_weight: f32,
    /// Most mask pixels clustered per object; larger masks are subsampled.
    pub max_samples: usize,
    /// Lloyd iterations at most.
    pub max_iterations: usize,
    /// Keypoints per object at least (lowered to 1 when `k` is too small for it).
    pub min_per_object: usize,
}

impl Default for KeypointConfig {
    fn default() -> Self {
        Self { k: 15, seed: 0, spatial_weight: 1.0, max_samples: 4096, max_iterations: 50, min_per_object: 2 }
    }
}

/// How many of `k` keypoints each object (mask area `areas[i]`) gets: at least `min_per_object` (1 when
/// `k < min_per_object · N_obj`), at most its area, the rest proportional to area (each further keypoint to the
/// object furthest below its share `k·a_i/Σa`, ties to the lower index). Sums to `k`.
pub fn allocate(areas: &[usize], k: usize, min_per_object: usize) -> eyre::Result<Vec<usize>> {
    let n = areas.len();
    ensure!(n > 0, "keypoints: no object masks");
    if let Some(i) = areas.iter().position(|&a| a == 0) {
        bail!("keypoints: mask {i} is empty");
    }
    ensure!(k >= n, "keypoints: k = {k} is fewer than the {n} objects (each object needs at least one keypoint)");
    let total: usize = areas.iter().sum();
    ensure!(k <= total, "keypoints: k = {k} exceeds the {total} mask pixels");
    let floor = min_per_object.min(k / n).max(1);
    let mut alloc: Vec<usize> = areas.iter().map(|&a| floor.min(a)).collect();
    let mut given: usize = alloc.iter().sum();
    while given < k {
        let deficit = |i: usize| k as f64 * areas[i] as f64 / total as f64 - alloc[i] as f64;
        let next = (0..n)
            .filter(|&i| alloc[i] < areas[i])
            .fold(None, |best: Option<usize>, i| match best {
                Some(b) if deficit(b) >= deficit(i) => Some(b),
                _ => Some(i),
            })
            .expect("k <= total area leaves room");
        alloc[next] += 1;
        given += 1;
    }
    Ok(alloc)
}

/// The result of [`kmeans`]: `k` centres (`k x dim`, row-major) and each point's cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    pub centres: Vec<f32>,
    pub assignments: Vec<usize>,
    pub dim: usize,
    /// Lloyd iterations run.
    pub iterations: usize,
}

impl KMeans {
    pub fn k(&self) -> usize {
        self.centres.len() / self.dim
    }

    pub fn centre(&self, j: usize) -> &[f32] {
        &self.centres[j * self.dim..(j + 1) * self.dim]
    }
}

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index of the centre nearest to `p` (ties to the lower index) and the squared distance.
fn nearest(p: &[f32], centres: &[f32], dim: usize) -> (usize, f32) {
    centres
        .chunks_exact(dim)
        .map(|c| dist2(p, c))
        .enumerate()
        .fold((0, f32::INFINITY), |best, (j, d)| if d < best.1 { (j, d) } else { best })
}

/// K-means of `n = points.len() / dim` points (row-major) into `k` clusters (`1 <= k <= n`): k-means++
/// initialisation (first centre uniform, each further one drawn with probability proportional to the squared
/// distance to the nearest chosen centre) from a `ChaCha8` stream seeded with `seed`, then Lloyd iterations
/// until no assignment changes or `max_iterations`. A cluster left empty is moved onto the point farthest from
/// its centre. Deterministic for a given input and seed; the returned assignments are each point's nearest
/// centre.
pub fn kmeans(points: &[f32], dim: usize, k: usize, seed: u64, max_iterations: usize) -> KMeans {
    assert!(dim > 0 && points.len() % dim == 0, "kmeans: {} values are not rows of {dim}", points.len());
    let n = points.len() / dim;
    assert!(k >= 1 && k <= n, "kmeans: k = {k} needs 1..={n}");
    let point = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // k-means++.
    let first = rng.random_range(0..n);
    let mut centres: Vec<f32> = point(first).to_vec();
    let mut chosen = vec![false; n];
    chosen[first] = true;
    let mut d2: Vec<f64> = (0..n).map(|i| f64::from(dist2(point(i), point(first)))).collect();
    for _ in 1..k {
        let total: f64 = d2.iter().sum();
        let next = if total > 0.0 {
            let mut u = rng.random_range(0.0..total);
            let mut pick = (0..n).rev().find(|&i| d2[i] > 0.0).expect("a positive distance");
            for (i, &d) in d2.iter().enumerate().filter(|(_, d)| **d > 0.0) {
                if u < d {
                    pick = i;
                    break;
                }
                u -= d;
            }
            pick
        } else {
            // Every point coincides with a centre: any point not chosen yet.
            let free: Vec<usize> = (0..n).filter(|&i| !chosen[i]).collect();
            free[rng.random_range(0..free.len())]
        };
        chosen[next] = true;
        centres.extend_from_slice(point(next));
        for (i, d) in d2.iter_mut().enumerate() {
            *d = d.min(f64::from(dist2(point(i), point(next))));
        }
    }

    // Lloyd.
    let mut assignments = vec![usize::MAX; n];
    let mut iterations = 0;
    loop {
        iterations += 1;
        let mut changed = false;
        for (i, a) in assignments.iter_mut().enumerate() {
            let (j, _) = nearest(point(i), &centres, dim);
            changed |= *a != j;
            *a = j;
        }
        if !changed || iterations >= max_iterations.max(1) {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assignments.iter().enumerate() {
            counts[a] += 1;
            for (s, &v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(point(i)) {
                *s += f64::from(v);
            }
        }
        let mut spread: Option<Vec<f32>> = None;
        for j in 0..k {
            if counts[j] > 0 {
                for (c, s) in centres[j * dim..(j + 1) * dim].iter_mut().zip(&sums[j * dim..(j + 1) * dim]) {
                    *c = (s / counts[j] as f64) as f32;
                }
            } else {
                // Empty: move onto the point farthest from its (old) centre.
                let spread = spread.get_or_insert_with(|| {
                    (0..n)
                        .map(|i| dist2(point(i), &centres[assignments[i] * dim..(assignments[i] + 1) * dim]))
                        .collect()
                });
                let far = (0..n).fold(0, |b, i| if spread[i] > spread[b] { i } else { b });
                spread[far] = 0.0;
                centres[j * dim..(j + 1) * dim].copy_from_slice(point(far));
            }
        }
    }
    KMeans { centres, assignments, dim, iterations }
}

/// Seeds derived per object so that objects draw independent streams.
fn object_seed(seed: u64, object: usize) -> u64 {
    seed ^ (object as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Up to `max` of `pixels`, uniformly without replacement (seeded), in raster order.
fn subsample(mut pixels: Vec<(u32, u32)>, max: usize, seed: u64) -> Vec<(u32, u32)> {
    if pixels.len() <= max {
        return pixels;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..max {
        let j = rng.random_range(i..pixels.len());
        pixels.swap(i, j);
    }
    pixels.truncate(max);
    pixels.sort_unstable_by_key(|&(x, y)| (y, x));
    pixels
}

/// The clustering space of one object's pixels (module doc): L2-normalised features scaled to unit total
/// variance, then the position (centred, over the RMS radius) times `spatial_weight`. Row-major, `channels + 2`
/// per pixel.
fn clustering_space(features: &FeatureGrid, pixels: &[(u32, u32)], spatial_weight: f32) -> Vec<f32> {
    let c = features.channels;
    let dim = c + 2;
    let n = pixels.len() as f64;
    let mut rows = vec![0f32; pixels.len() * dim];
    for (row, &(x, y)) in rows.chunks_exact_mut(dim).zip(pixels) {
        let (f, pos) = row.split_at_mut(c);
        features.pixel_feature(x, y, f);
        let norm = f.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            f.iter_mut().for_each(|v| *v /= norm);
        }
        pos[0] = x as f32 + 0.5;
        pos[1] = y as f32 + 0.5;
    }
    // Centre and scale each block to unit total variance.
    for (start, len, weight) in [(0, c, 1.0f32), (c, 2, spatial_weight)] {
        let mut mean = vec![0f64; len];
        for row in rows.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(&row[start..start + len]) {
                *m += f64::from(v) / n;
            }
        }
        let var: f64 = rows
            .chunks_exact(dim)
            .map(|row| row[start..start + len].iter().zip(&mean).map(|(&v, m)| (f64::from(v) - m).powi(2)).sum::<f64>())
            .sum::<f64>()
            / n;
        let scale = if var > 1e-12 { f64::from(weight) / var.sqrt() } else { f64::from(weight) };
        for row in rows.chunks_exact_mut(dim) {
            for (v, m) in row[start..start + len].iter_mut().zip(&mean) {
                *v = ((f64::from(*v) - m) * scale) as f32;
            }
        }
    }
    rows
}

/// Keypoint selection on an encoded frame: allocates `config.k` keypoints among the masks ([`allocate`]), runs
/// K-means in each mask's clustering space and keeps, per cluster, the member nearest to its centre. Keypoints
/// are ordered by object, then in raster order.
pub fn select_keypoints(
    features: &FeatureGrid,
    masks: &[Mask],
    config: &KeypointConfig,
) -> eyre::Result<Vec<Keypoint>> {
    for (i, mask) in masks.iter().enumerate() {
        ensure!(
            mask.dimensions() == features.dimensions(),
            "keypoints: mask {i} is {}x{} but the frame is {}x{}",
            mask.width,
            mask.height,
            features.width,
            features.height
        );
    }
    let areas: Vec<usize> = masks.iter().map(Mask::area).collect();
    let alloc = allocate(&areas, config.k, config.min_per_object)?;
    let dim = features.channels + 2;
    let mut keypoints = Vec::with_capacity(config.k);
    for (object, (mask, &count)) in masks.iter().zip(&alloc).enumerate() {
        let seed = object_seed(config.seed, object);
        let pixels = subsample(mask.pixels().collect(), config.max_samples.max(count), seed);
        let rows = clustering_space(features, &pixels, config.spatial_weight);
        let result = kmeans(&rows, dim, count, seed, config.max_iterations);
        let row = |i: usize| &rows[i * dim..(i + 1) * dim];
        let mut taken = HashSet::with_capacity(count);
        let mut chosen = Vec::with_capacity(count);
        for j in 0..count {
            let centre = result.centre(j);
            let best = |members: &mut dyn Iterator<Item = usize>| {
                members.filter(|i| !taken.contains(i)).map(|i| (i, dist2(row(i), centre))).fold(
                    None,
                    |b: Option<(usize, f32)>, (i, d)| match b {
                        Some((_, bd)) if bd <= d => b,
                        _ => Some((i, d)),
                    },
                )
            };
            let pick = best(&mut (0..pixels.len()).filter(|&i| result.assignments[i] == j))
                .or_else(|| best(&mut (0..pixels.len())))
                .expect("at least as many pixels as clusters")
                .0;
            taken.insert(pick);
            chosen.push(pixels[pick]);
        }
        chosen.sort_unstable_by_key(|&(x, y)| (y, x));
        keypoints.extend(chosen.into_iter().map(|(x, y)| Keypoint::at_pixel(x, y, object)));
    }
    Ok(keypoints)
}

/// One-time keypoint extraction from the first frame: encodes `image` with the frozen grid encoder and selects
/// `k` keypoints among `masks` (one per object) with the default [`KeypointConfig`] and `seed`.
pub fn extract_keypoints(
    encoder: &GridEncoder,
    image: &RgbImage,
    masks: &[Mask],
    k: usize,
    seed: u64,
    device: &Device,
) -> eyre::Result<Vec<Keypoint>> {
    extract_keypoints_with(encoder, image, masks, &KeypointConfig { k, seed, ..KeypointConfig::default() }, device)
}

/// [`extract_keypoints`] with every knob.
pub fn extract_keypoints_with(
    encoder: &GridEncoder,
    image: &RgbImage,
    masks: &[Mask],
    config: &KeypointConfig,
    device: &Device,
) -> eyre::Result<Vec<Keypoint>> {
    // Check the cheap things before encoding.
    allocate(&masks.iter().map(Mask::area).collect::<Vec<_>>(), config.k, config.min_per_object)?;
    let features = FeatureGrid::encode(encoder, image, device)?;
    select_keypoints(&features, masks, config)
}

/// The colour of object `i` in overlays (the palette of `viz`'s instance tints).
pub fn object_colour(object: usize) -> Rgb<u8> {
    instance_colour((object % 255) as u8 + 1)
}

/// `image` with each mask tinted in its object's colour (35%) and the keypoints drawn as discs of that colour
/// with a dark outline, upscaled `scale` times (nearest neighbour).
pub fn draw_overlay(image: &RgbImage, masks: &[Mask], keypoints: &[Keypoint], scale: u32) -> eyre::Result<RgbImage> {
    ensure!(scale >= 1, "overlay: scale must be at least 1");
    let mut img = image.clone();
    for (i, mask) in masks.iter().enumerate() {
        ensure!(mask.dimensions() == img.dimensions(), "overlay: mask {i} does not match the image size");
        let tint = object_colour(i).0;
        for (x, y) in mask.pixels() {
            let p = img.get_pixel_mut(x, y);
            p.0 = std::array::from_fn(|c| ((u16::from(p.0[c]) * 65 + u16::from(tint[c]) * 35) / 100) as u8);
        }
    }
    if scale > 1 {
        img = imageops::resize(&img, img.width() * scale, img.height() * scale, FilterType::Nearest);
    }
    let s = scale as f32;
    for (object, _) in masks.iter().enumerate() {
        let points: Vec<[f32; 3]> =
            keypoints.iter().filter(|k| k.object == object).map(|k| [k.x * s, k.y * s, 1.0]).collect();
        let style = PointStyle { visible: object_colour(object), radius: 0.5 + s, ..PointStyle::KEYPOINTS };
        draw_points(&mut img, &points, &style);
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> Vec<ObjectInfo> {
        vec![
            ObjectInfo { name: "button base".into(), instance: 3 },
            ObjectInfo { name: "red button".into(), instance: 4 },
            ObjectInfo { name: "white_block".into(), instance: 5 },
        ]
    }

    #[test]
    fn box_grounder_masks_each_query_with_its_box_and_names_bad_input() {
        let g = BoxGrounder::parse("1,0,3,2; 0,1,1,3").unwrap();
        let image = RgbImage::new(4, 3);
        let masks = g.ground(&image, &["red block".into(), "plate".into()]).unwrap();
        let inside: Vec<Vec<(u32, u32)>> = masks.iter().map(|m| m.pixels().collect()).collect();
        assert_eq!(inside[0], vec![(1, 0), (2, 0), (1, 1), (2, 1)]);
        assert_eq!(inside[1], vec![(0, 1), (0, 2)]);
        let count = g.ground(&image, &["red block".into()]).unwrap_err().to_string();
        assert!(count.contains("1 text queries") && count.contains("2 boxes"), "{count}");
        let outside = BoxGrounder::parse("0,0,5,2").unwrap().ground(&image, &["x".into()]).unwrap_err().to_string();
        assert!(outside.contains("outside the 4x3 image"), "{outside}");
        for bad in ["1,2,3", "3,0,1,2", "a,0,1,2", ""] {
            let err = BoxGrounder::parse(bad).unwrap_err().to_string();
            assert!(err.contains("boxes:"), "{bad}: {err}");
        }
    }

    #[test]
    fn grounder_matches_exact_names_then_words() {
        let g = OracleGrounder::new(objects(), 2, 1, vec![3, 4]).unwrap();
        assert_eq!(g.resolve("red button").unwrap().instance, 4);
        assert_eq!(g.resolve("  Red   Button ").unwrap().instance, 4);
        assert_eq!(g.resolve("base").unwrap().instance, 3);
        assert_eq!(g.resolve("white block").unwrap().instance, 5, "underscores read as spaces");
        assert_eq!(g.resolve("block").unwrap().instance, 5);
        let ambiguous = g.resolve("button").unwrap_err().to_string();
        assert!(ambiguous.contains("ambiguous") && ambiguous.contains("`red button`"), "{ambiguous}");
        let unknown = g.resolve("green cup").unwrap_err().to_string();
        assert!(unknown.contains("no task object matches `green cup`"), "{unknown}");
        assert!(unknown.contains("`button base` (instance 3), `red button` (instance 4)"), "{unknown}");
        assert!(g.resolve(" ").is_err());
    }

    #[test]
    fn grounder_returns_instance_masks_and_empty_ones_for_unseen_objects() {
        let g = OracleGrounder::new(objects(), 3, 2, vec![0, 4, 4, 3, 3, 0]).unwrap();
        let img = RgbImage::new(3, 2);
        let masks = g.ground(&img, &["red button".into(), "button base".into()]).unwrap();
        assert_eq!(masks[0].pixels().collect::<Vec<_>>(), [(1, 0), (2, 0)]);
        assert_eq!(masks[1].pixels().collect::<Vec<_>>(), [(0, 1), (1, 1)]);
        assert_eq!(g.ground(&img, &["white block".into()]).unwrap()[0].area(), 0, "white block is out of view");
        assert!(
            g.ground(&RgbImage::new(2, 2), &["red button".into()]).unwrap_err().to_string().contains("image is 2x2")
        );
        assert!(OracleGrounder::new(objects(), 3, 3, vec![0; 8]).is_err());
    }

    #[test]
    fn mask_png_round_trip() {
        let mask = Mask::from_fn(7, 5, |x, y| (x + y) % 3 == 0);
        let path = std::env::temp_dir().join(format!("glue-keypoints-mask-{}.png", std::process::id()));
        mask.to_image().save(&path).unwrap();
        let back = Mask::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, mask);
        assert_eq!(mask.area(), mask.pixels().count());
        assert!(!mask.contains(7, 0) && !mask.contains(0, 5));
        assert!(Mask::new(2, 2, vec![true; 3]).is_err());
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(2, 1, |x, _| Rgb([0, x as u8, 0])));
        assert_eq!(Mask::from_image(&rgb).pixels().collect::<Vec<_>>(), [(1, 0)]);
    }

    #[test]
    fn allocation_sums_to_k_is_proportional_and_keeps_minimums() {
        let a = allocate(&[100, 300], 12, 2).unwrap();
        assert_eq!(a, [3, 9]);
        let a = allocate(&[10, 10_000], 15, 2).unwrap();
        assert_eq!(a, [2, 13], "a tiny object still gets two");
        let a = allocate(&[1, 5_000, 5_000], 15, 2).unwrap();
        assert_eq!(a.iter().sum::<usize>(), 15);
        assert_eq!(a[0], 1, "capped by its area");
        assert_eq!(allocate(&[50, 50, 50], 4, 2).unwrap().iter().sum::<usize>(), 4, "k < 2 N_obj: one each");
        for k in 3..40 {
            let a = allocate(&[40, 90, 700], k, 2).unwrap();
            assert_eq!(a.iter().sum::<usize>(), k);
            assert!(a.iter().all(|&n| n >= 1));
            assert!(a[0] <= a[1] && a[1] <= a[2], "{a:?}");
        }
        assert!(allocate(&[5, 5], 1, 2).unwrap_err().to_string().contains("fewer than the 2 objects"));
        assert!(allocate(&[5, 0], 4, 2).unwrap_err().to_string().contains("mask 1 is empty"));
        assert!(allocate(&[2, 2], 5, 2).is_err());
        assert!(allocate(&[], 5, 2).is_err());
    }

    /// Gaussian-ish blobs (sums of uniforms) around known centres.
    fn blobs(centres: &[[f32; 3]], per: usize, spread: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut points = Vec::new();
        for c in centres {
            for _ in 0..per {
                for &v in c {
                    let noise: f32 = (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() / 2.0;
                    points.push(v + spread * noise);
                }
            }
        }
        points
    }

    #[test]
    fn kmeans_recovers_well_separated_clusters() {
        let truth = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [10.0, 10.0, 10.0]];
        let points = blobs(&truth, 60, 0.5, 7);
        for seed in 0..10 {
            let result = kmeans(&points, 3, truth.len(), seed, 100);
            for (t, c) in truth.iter().enumerate() {
                let labels: HashSet<usize> = result.assignments[t * 60..(t + 1) * 60].iter().copied().collect();
                assert_eq!(labels.len(), 1, "seed {seed}: blob {t} split");
                let j = *labels.iter().next().unwrap();
                assert!(dist2(result.centre(j), c) < 0.1, "seed {seed}: centre {:?} vs {c:?}", result.centre(j));
            }
            let distinct: HashSet<usize> = result.assignments.iter().copied().collect();
            assert_eq!(distinct.len(), truth.len(), "seed {seed}: blobs merged");
        }
    }

    #[test]
    fn kmeans_is_deterministic_and_survives_duplicates() {
        let points = blobs(&[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], 50, 1.0, 3);
        assert_eq!(kmeans(&points, 3, 6, 11, 50), kmeans(&points, 3, 6, 11, 50));
        assert_ne!(kmeans(&points, 3, 6, 11, 50).centres, kmeans(&points, 3, 6, 12, 50).centres);
        // Three distinct points, five clusters: no panic, every assignment valid and nearest.
        let dup = [0.0f32, 0.0, 1.0, 1.0, 0.0, 0.0, 5.0, 5.0, 1.0, 1.0, 5.0, 5.0];
        let result = kmeans(&dup, 2, 5, 0, 10);
        assert_eq!(result.k(), 5);
        for (i, &a) in result.assignments.iter().enumerate() {
            assert_eq!(a, nearest(&dup[i * 2..i * 2 + 2], &result.centres, 2).0);
        }
        assert_eq!(kmeans(&dup, 2, 1, 0, 10).centres.len(), 2);
    }

    /// A 4x4 grid (split 2, 2 patches per sub-image) over a 16x16 frame, one channel: value = 10·row + col.
    fn ramp_grid() -> FeatureGrid {
        let data = (0..16).map(|i| (10 * (i / 4) + i % 4) as f32).collect();
        FeatureGrid::new(data, 4, 2, 1, 16, 16).unwrap()
    }

    #[test]
    fn bilinear_upsampling_puts_features_at_patch_centres_within_each_sub_image() {
        let grid = ramp_grid();
        let at = |x, y| {
            let mut f = [0.0];
            grid.pixel_feature(x, y, &mut f);
            f[0]
        };
        // Patches are 4x4 pixels; patch (0, 0)'s centre is (2, 2), between pixels 1 and 2.
        assert_eq!(at(1, 1), 0.0, "within half a patch of the border: the edge patch");
        assert_eq!(at(0, 0), 0.0);
        // Pixel 2's centre (2.5) lies 1/8 of the way from patch centre 2 to 6.
        assert!((at(2, 1) - 0.125).abs() < 1e-6);
        assert!((at(3, 1) - 0.375).abs() < 1e-6);
        assert!((at(5, 1) - 0.875).abs() < 1e-6);
        assert_eq!(at(7, 1), 1.0, "right border of the left sub-image: clamped, no blend across the seam");
        assert_eq!(at(8, 1), 2.0, "first pixel of the right sub-image: its own edge patch");
        assert!((at(1, 3) - 3.75).abs() < 1e-6, "rows interpolate the same way");
        assert!((at(3, 3) - (0.375 + 3.75)).abs() < 1e-5, "bilinear = sum of the separable ramps");
        assert_eq!(at(15, 15), 33.0);
        assert!(FeatureGrid::new(vec![0.0; 15], 4, 2, 1, 16, 16).is_err());
        assert!(FeatureGrid::new(vec![0.0; 16], 4, 2, 1, 15, 16).is_err());
    }

    #[test]
    fn selection_on_synthetic_features_is_inside_distinct_and_spread() {
        // Two channels varying smoothly over a 32x32 frame; two rectangular objects.
        let data: Vec<f32> = (0..8 * 8).flat_map(|i| [(i / 8) as f32, (i % 8) as f32]).collect();
        let features = FeatureGrid::new(data, 8, 2, 2, 32, 32).unwrap();
        let masks = [Mask::from_fn(32, 32, |x, y| x < 12 && y < 20), Mask::from_fn(32, 32, |x, y| x >= 16 && y >= 8)];
        let config = KeypointConfig { k: 10, ..KeypointConfig::default() };
        let kps = select_keypoints(&features, &masks, &config).unwrap();
        assert_eq!(kps.len(), 10);
        let alloc = allocate(&[masks[0].area(), masks[1].area()], 10, 2).unwrap();
        for (object, mask) in masks.iter().enumerate() {
            let mine: Vec<_> = kps.iter().filter(|k| k.object == object).collect();
            assert_eq!(mine.len(), alloc[object]);
            for k in &mine {
                let (x, y) = k.pixel();
                assert!(mask.contains(x, y), "{k:?} outside mask {object}");
                assert_eq!((k.x.fract(), k.y.fract()), (0.5, 0.5));
            }
            for (i, a) in mine.iter().enumerate() {
                for b in &mine[i + 1..] {
                    assert!((a.x - b.x).hypot(a.y - b.y) > 2.0, "{a:?} and {b:?} crowd together");
                }
            }
        }
        assert_eq!(kps, select_keypoints(&features, &masks, &config).unwrap());
        // Subsampling still gives valid keypoints.
        let small = KeypointConfig { max_samples: 20, ..config };
        let kps = select_keypoints(&features, &masks, &small).unwrap();
        assert!(kps.iter().all(|k| masks[k.object].contains(k.pixel().0, k.pixel().1)));
        let wrong = [Mask::from_fn(16, 16, |_, _| true)];
        assert!(select_keypoints(&features, &wrong, &config).unwrap_err().to_string().contains("mask 0 is 16x16"));
    }

    #[test]
    fn keypoints_file_round_trips() {
        let kps = vec![Keypoint::at_pixel(3, 4, 0), Keypoint::at_pixel(10, 2, 1)];
        let file = KeypointsFile::new(&kps, vec!["a".into(), "b".into()]);
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(json, r#"{"keypoints":[[3.5,4.5],[10.5,2.5]],"objects":[0,1],"labels":["a","b"]}"#);
        let back: KeypointsFile =
            serde_json::from_str(r#"{"keypoints":[[3.5,4.5],[10.5,2.5]],"objects":[0,1]}"#).unwrap();
        assert_eq!(back.to_keypoints().unwrap(), kps);
    }

    #[test]
    fn overlay_draws_in_object_colours() {
        let img = RgbImage::from_pixel(20, 20, Rgb([100, 100, 100]));
        let masks = [Mask::from_fn(20, 20, |x, _| x < 10), Mask::from_fn(20, 20, |x, _| x >= 10)];
        let kps = [Keypoint::at_pixel(4, 4, 0), Keypoint::at_pixel(15, 15, 1)];
        let out = draw_overlay(&img, &masks, &kps, 2).unwrap();
        assert_eq!(out.dimensions(), (40, 40));
        assert_eq!(*out.get_pixel(9, 9), object_colour(0));
        assert_eq!(*out.get_pixel(31, 31), object_colour(1));
        assert_ne!(*out.get_pixel(0, 39), Rgb([100, 100, 100]), "masks are tinted");
    }
}
