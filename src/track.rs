//! Point tracking (paper sec. III-B, "Real-Time Key Points Tracking"): a pyramidal Lucas-Kanade tracker (KLT)
//! with per-point visibility, occlusion handling and re-acquisition.
//!
//! The paper tracks its one-time keypoints with an off-the-shelf learned tracker (CoTracker) that returns, for
//! every frame, each query point's pixel and a visibility flag. [`KltTracker`] produces the same output — `N`
//! rows of `[x, y, visible]` (visible is exactly 1.0 or 0.0), the [`crate::msg::Keypoints`] convention — with a
//! classical tracker that runs at over a thousand frames per second on one CPU core (`glue track --bench`). Both sit behind the
//! [`PointTracker`] trait (`track(&mut self, frame) -> Vec<[f32; 3]>`), so a CoTracker3 port (online mode, one
//! frame in, N tracks out) can later replace it without touching the callers.
//!
//! # Algorithm
//!
//! Every frame is converted to grayscale (`0.299 R + 0.587 G + 0.114 B`, 0..255 as `f32`), and an image
//! pyramid is built once per frame ([`KltConfig::levels`] levels, each a `[1 4 6 4 1]/16` blur decimated by 2;
//! 224 → 112 → 56 px by default) with Scharr gradients (`[3 10 3] ⊗ [-1 0 1] / 32`) at every level. The
//! pyramid of the previous frame is kept, so each frame's pyramid is built exactly once, into reused buffers.
//!
//! A visible point is tracked from frame t to t+1 coarse to fine (Bouguet's pyramidal LK): at each level the
//! `(2r+1)²` window around the point in frame t ([`KltConfig::window_radius`], 15x15 by default) gives the
//! template, its gradients and the 2x2 structure tensor `G`; Gauss-Newton steps `δ = G⁻¹ Σ (I − J) ∇I` move
//! the window in frame t+1 until `|δ|` < [`KltConfig::epsilon`] or [`KltConfig::max_iterations`]; the
//! displacement, doubled, seeds the next finer level. `I − J` is taken with both windows' means removed, which
//! makes the solve insensitive to brightness offsets (the lighting OOD condition). All sampling is bilinear;
//! because the window offsets are integers, the four bilinear weights are computed once per window. The first
//! guess is the point's last position plus its last velocity. A level-0 window whose smaller eigenvalue of
//! `G` (per pixel) is below [`KltConfig::min_eigenvalue`] has no usable texture and the track fails.
//!
//! # Visibility
//!
//! A tracked point stays visible only when all of these hold:
//! 1. the LK solve succeeded and landed inside the image;
//! 2. forward-backward: tracking the new position back from t+1 to t returns within
//!    [`KltConfig::fb_threshold`] px of where it started;
//! 3. appearance: the normalised cross-correlation (NCC) between the `(2r+1)²` patch at the new position
//!    ([`KltConfig::template_radius`]) and the point's *first-frame* template is at least
//!    [`KltConfig::ncc_keep`]. The NCC is Gaussian-weighted ([`KltConfig::template_sigma`]) so that the patch
//!    centre counts most, which tolerates the rotation and scale changes a fixed template sees over time. NCC
//!    ignores gain and offset, so lighting changes pass while an occluder does not; but a patch whose mean
//!    brightness differs from the template's by more than a factor [`KltConfig::max_gain`] fails (a dark object
//!    is not a bright one with a similar pattern). A flat patch (weighted standard deviation below
//!    [`KltConfig::min_texture`]) only matches a flat template of similar brightness (within
//!    [`KltConfig::flat_tolerance`] grey levels): a flat-colour occluder fails every textured template.
//!
//! Otherwise the point becomes *lost* (visible = 0): it keeps a predicted position, its last position plus its
//! last velocity, the velocity damped by [`KltConfig::damping`] every frame, so an occluded point coasts along
//! and stops. The first-frame template is never updated, so a track cannot drift onto an occluder.
//!
//! # Re-acquisition
//!
//! In every frame, a lost point (including a visible one whose checks just failed) is searched for around its
//! prediction. The search radius starts at [`KltConfig::search_radius`] plus [`KltConfig::search_speed_gain`]
//! times the point's speed when it was lost and grows by [`KltConfig::search_growth`] px per lost frame; it is
//! capped per point at half the distance to the nearest look-alike of its template in the first frame (a local
//! NCC maximum reaching `ncc_keep` 3 px or more away, looked for within [`KltConfig::max_search_radius`]), so a
//! point on a repeated texture or a straight edge is only searched for where it cannot be confused. Small radii
//! are deliberate: objects rarely move while hidden, and on the simulator the wide searches found shadow edges
//! and robot parts more often than the point. The search matches the template exhaustively on pyramid level 1
//! (half the template radius, integer positions) and keeps its three best local maxima; these and the
//! prediction itself are refined at full resolution (NCC hill-climbing in 1 px steps, then pyramidal LK from the
//! point's first-frame position in the first frame for the sub-pixel position). The point is re-acquired
//! (visible again, velocity reset) when the best NCC reaches [`KltConfig::ncc_reacquire`] (above `ncc_keep`:
//! hysteresis against flickering on an occluder's edge) and no other candidate 3 px or more away comes within
//! [`KltConfig::ambiguity_margin`] of it. [`KltTracker::diagnostics`] reports each point's checks.
//!
//! Point indices never change: every frame returns exactly the `N` points given at construction, in order.
//! Everything is deterministic (no randomness, no threads).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use serde::Serialize;

use crate::sim::ood::{Condition, Variant};
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, SimConfig};

/// Parameters of [`KltTracker`]; the defaults are tuned for 224x224 frames.
#[derive(Clone, Debug, PartialEq)]
pub struct KltConfig {
    /// Pyramid levels including the full-resolution one (default 3: 224, 112, 56 px). Capped so that the
    /// coarsest level keeps at least 16 px on its short side.
    pub levels: usize,
    /// LK integration window radius r: the window is (2r+1)² pixels at every level (default 7: 15x15).
    pub window_radius: usize,
    /// Maximum Gauss-Newton iterations per pyramid level (default 20).
    pub max_iterations: usize,
    /// Iterations stop when the update is shorter than this, in pixels of the level (default 0.01).
    pub epsilon: f32,
    /// Smallest admissible eigenvalue of the level-0 structure tensor divided by the window's pixel count, in
    /// (grey levels / px)² (default 0.05); below it the window is too flat to track.
    pub min_eigenvalue: f32,
    /// Forward-backward check: largest round-trip error t → t+1 → t in pixels (default 1.5).
    pub fb_threshold: f32,
    /// Radius of the appearance patch compared with the first-frame template (default 7: 15x15).
    pub template_radius: usize,
    /// Standard deviation in px of the Gaussian weighting of the appearance patch (default 4.0): the centre counts
    /// most, which keeps the NCC tolerant to rotation and scale changes of the patch.
    pub template_sigma: f32,
    /// NCC with the first-frame template below which a tracked point turns not visible (default 0.6).
    pub ncc_keep: f32,
    /// NCC a lost point needs to be re-acquired (default 0.85).
    pub ncc_reacquire: f32,
    /// A re-acquisition is refused when another candidate 3 px or more from the best scores within this margin of
    /// its NCC (default 0.1): edges and repeated textures match in several places.
    pub ambiguity_margin: f32,
    /// Standard deviation (grey levels) below which a patch counts as flat (default 3.0).
    pub min_texture: f32,
    /// A flat patch matches a flat template when their means differ by at most this (grey levels, default 20).
    pub flat_tolerance: f32,
    /// Largest brightness ratio between a patch and its template, either way (default 2.0): `(mean + 10) /
    /// (template mean + 10)` outside `[1/max_gain, max_gain]` fails the appearance check whatever the NCC, so a
    /// dark object does not pass for a bright one with a similar pattern.
    pub max_gain: f32,
    /// Factor applied to a lost point's velocity every frame (default 0.8).
    pub damping: f32,
    /// Re-acquisition search radius around the prediction on the first lost frame for a point that was still,
    /// px (default 4): objects rarely move while hidden, and a wide search finds look-alikes (shadow edges, robot
    /// parts) more often than the point.
    pub search_radius: f32,
    /// Added to the search radius per px/frame of the point's speed when it was lost (default 2.0).
    pub search_speed_gain: f32,
    /// Growth of the search radius per further lost frame, px (default 0.5).
    pub search_growth: f32,
    /// Largest search radius, px (default 32).
    pub max_search_radius: f32,
}

impl Default for KltConfig {
    fn default() -> Self {
        KltConfig {
            levels: 3,
            window_radius: 7,
            max_iterations: 20,
            epsilon: 0.01,
            min_eigenvalue: 0.05,
            fb_threshold: 1.5,
            template_radius: 7,
            template_sigma: 4.0,
            ncc_keep: 0.6,
            ncc_reacquire: 0.85,
            ambiguity_margin: 0.1,
            min_texture: 3.0,
            flat_tolerance: 20.0,
            max_gain: 2.0,
            damping: 0.8,
            search_radius: 4.0,
            search_speed_gain: 2.0,
            search_growth: 0.5,
            max_search_radius: 32.0,
        }
    }
}

impl KltConfig {
    /// Checks that every parameter is in range.
    pub fn validate(&self) -> eyre::Result<()> {
        let positive = [
            ("epsilon", self.epsilon),
            ("fb_threshold", self.fb_threshold),
            ("search_radius", self.search_radius),
            ("template_sigma", self.template_sigma),
            ("max_search_radius", self.max_search_radius),
        ];
        for (name, v) in positive {
            eyre::ensure!(v.is_finite() && v > 0.0, "KltConfig.{name}: expected a positive number, got {v}");
        }
        let non_negative = [
            ("min_eigenvalue", self.min_eigenvalue),
            ("min_texture", self.min_texture),
            ("ambiguity_margin", self.ambiguity_margin),
            ("flat_tolerance", self.flat_tolerance),
            ("search_growth", self.search_growth),
            ("search_speed_gain", self.search_speed_gain),
        ];
        for (name, v) in non_negative {
            eyre::ensure!(v.is_finite() && v >= 0.0, "KltConfig.{name}: expected a number >= 0, got {v}");
        }
        for (name, v) in [("ncc_keep", self.ncc_keep), ("ncc_reacquire", self.ncc_reacquire)] {
            eyre::ensure!((-1.0..=1.0).contains(&v), "KltConfig.{name}: expected a number in [-1, 1], got {v}");
        }
        eyre::ensure!(self.max_gain >= 1.0, "KltConfig.max_gain: expected a number >= 1, got {}", self.max_gain);
        eyre::ensure!((0.0..=1.0).contains(&self.damping), "KltConfig.damping: expected a number in [0, 1], got {}", self.damping);
        eyre::ensure!((1..=8).contains(&self.levels), "KltConfig.levels: expected 1..=8, got {}", self.levels);
        eyre::ensure!((1..=32).contains(&self.window_radius), "KltConfig.window_radius: expected 1..=32, got {}", self.window_radius);
        eyre::ensure!((1..=32).contains(&self.template_radius), "KltConfig.template_radius: expected 1..=32, got {}", self.template_radius);
        eyre::ensure!(self.max_iterations >= 1, "KltConfig.max_iterations: expected at least 1");
        Ok(())
    }
}

/// A borrowed 8-bit frame, grayscale or RGB, row-major without padding.
#[derive(Clone, Copy, Debug)]
pub enum FrameView<'a> {
    /// One byte per pixel.
    Gray { width: u32, height: u32, data: &'a [u8] },
    /// Three bytes (R, G, B) per pixel.
    Rgb { width: u32, height: u32, data: &'a [u8] },
}

impl FrameView<'_> {
    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        match *self {
            FrameView::Gray { width, height, .. } | FrameView::Rgb { width, height, .. } => (width, height),
        }
    }

    fn check(&self) -> eyre::Result<()> {
        let (w, h) = self.size();
        let (len, channels) = match self {
            FrameView::Gray { data, .. } => (data.len(), 1),
            FrameView::Rgb { data, .. } => (data.len(), 3),
        };
        eyre::ensure!(w > 0 && h > 0, "frame: expected a non-empty image, got {w}x{h}");
        eyre::ensure!(
            len as u64 == u64::from(w) * u64::from(h) * channels,
            "frame: expected {w}x{h}x{channels} = {} bytes, got {len}",
            u64::from(w) * u64::from(h) * channels
        );
        Ok(())
    }

    /// Writes the grey levels (0..255) into `out` (`width * height` values).
    fn write_gray(&self, out: &mut [f32]) {
        match *self {
            FrameView::Gray { data, .. } => {
                for (o, &v) in out.iter_mut().zip(data) {
                    *o = f32::from(v);
                }
            }
            FrameView::Rgb { data, .. } => {
                for (o, p) in out.iter_mut().zip(data.chunks_exact(3)) {
                    *o = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                }
            }
        }
    }
}

impl<'a> From<&'a GrayImage> for FrameView<'a> {
    fn from(img: &'a GrayImage) -> Self {
        FrameView::Gray { width: img.width(), height: img.height(), data: img.as_raw() }
    }
}

impl<'a> From<&'a RgbImage> for FrameView<'a> {
    fn from(img: &'a RgbImage) -> Self {
        FrameView::Rgb { width: img.width(), height: img.height(), data: img.as_raw() }
    }
}

impl<'a> From<&'a crate::sim::render::Frame> for FrameView<'a> {
    fn from(f: &'a crate::sim::render::Frame) -> Self {
        FrameView::Rgb { width: f.width, height: f.height, data: &f.rgb }
    }
}

/// An online point tracker: initialised with N query points on a first frame, it returns for every following
/// frame N rows `[x, y, visible]` (visible 1.0 or 0.0) in the query order. [`KltTracker`] implements it; a
/// learned tracker such as CoTracker3 (online mode) could implement it too.
pub trait PointTracker {
    /// Tracks the points into the next frame (same size as the first).
    fn track(&mut self, frame: FrameView<'_>) -> Vec<[f32; 3]>;
    /// Number of tracked points.
    fn len(&self) -> usize;
    /// Whether no point is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Images, pyramids, sampling

#[derive(Clone, Debug)]
struct Level {
    w: usize,
    h: usize,
    img: Vec<f32>,
    gx: Vec<f32>,
    gy: Vec<f32>,
}

impl Level {
    fn new(w: usize, h: usize) -> Self {
        Level { w, h, img: vec![0.0; w * h], gx: vec![0.0; w * h], gy: vec![0.0; w * h] }
    }
}

#[derive(Clone, Debug)]
struct Pyramid {
    levels: Vec<Level>,
    tmp: Vec<f32>,
}

/// Levels actually used for a `w`x`h` frame: the coarsest keeps at least 16 px on its short side.
fn effective_levels(requested: usize, w: usize, h: usize) -> usize {
    let mut n = 1;
    while n < requested && w.min(h) >> n >= 16 {
        n += 1;
    }
    n
}

impl Pyramid {
    fn new(levels: usize, w: usize, h: usize) -> Self {
        let mut out = Vec::with_capacity(levels);
        let (mut lw, mut lh) = (w, h);
        for _ in 0..levels {
            out.push(Level::new(lw, lh));
            lw = lw.div_ceil(2);
            lh = lh.div_ceil(2);
        }
        Pyramid { levels: out, tmp: vec![0.0; w.div_ceil(2) * h] }
    }

    /// Rebuilds every level and its gradients from `frame` (same size as at construction).
    fn build(&mut self, frame: &FrameView<'_>) {
        frame.write_gray(&mut self.levels[0].img);
        for l in 1..self.levels.len() {
            let (fine, coarse) = self.levels.split_at_mut(l);
            downsample(&fine[l - 1], &mut coarse[0], &mut self.tmp);
        }
        for level in &mut self.levels {
            scharr(level);
        }
    }
}

const BINOMIAL: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// `[1 4 6 4 1]/16` blur then decimation by 2, borders clamped: coarse pixel i sits at fine pixel 2i.
fn downsample(src: &Level, dst: &mut Level, tmp: &mut [f32]) {
    let (w, h, dw, dh) = (src.w, src.h, dst.w, dst.h);
    let clamp_x = |x: isize| x.clamp(0, w as isize - 1) as usize;
    for y in 0..h {
        let row = &src.img[y * w..(y + 1) * w];
        let out = &mut tmp[y * dw..(y + 1) * dw];
        for (x, o) in out.iter_mut().enumerate() {
            let c = 2 * x as isize;
            if c >= 2 && c + 2 < w as isize {
                let c = c as usize;
                *o = BINOMIAL[0] * (row[c - 2] + row[c + 2]) + BINOMIAL[1] * (row[c - 1] + row[c + 1]) + BINOMIAL[2] * row[c];
            } else {
                *o = (0..5).map(|k| BINOMIAL[k] * row[clamp_x(c + k as isize - 2)]).sum();
            }
        }
    }
    for y in 0..dh {
        let c = 2 * y as isize;
        let rows: [usize; 5] = std::array::from_fn(|k| (c + k as isize - 2).clamp(0, h as isize - 1) as usize);
        let out = &mut dst.img[y * dw..(y + 1) * dw];
        for (x, o) in out.iter_mut().enumerate() {
            *o = BINOMIAL[0] * (tmp[rows[0] * dw + x] + tmp[rows[4] * dw + x])
                + BINOMIAL[1] * (tmp[rows[1] * dw + x] + tmp[rows[3] * dw + x])
                + BINOMIAL[2] * tmp[rows[2] * dw + x];
        }
    }
}

/// Scharr gradients `[3 10 3] ⊗ [-1 0 1] / 32` (grey levels per pixel), borders clamped.
fn scharr(level: &mut Level) {
    let (w, h) = (level.w, level.h);
    let img = &level.img;
    for y in 0..h {
        let (ym, yp) = (y.saturating_sub(1) * w, (y + 1).min(h - 1) * w);
        let y0 = y * w;
        for x in 0..w {
            let (xm, xp) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let gx = 3.0 * (img[ym + xp] - img[ym + xm]) + 10.0 * (img[y0 + xp] - img[y0 + xm]) + 3.0 * (img[yp + xp] - img[yp + xm]);
            let gy = 3.0 * (img[yp + xm] - img[ym + xm]) + 10.0 * (img[yp + x] - img[ym + x]) + 3.0 * (img[yp + xp] - img[ym + xp]);
            level.gx[y0 + x] = gx / 32.0;
            level.gy[y0 + x] = gy / 32.0;
        }
    }
}

/// Samples the `(2r+1)²` window centred at `c` (pixel centres at integer coordinates) bilinearly into `out`,
/// row-major; coordinates outside the image are clamped to its border.
fn sample(img: &[f32], w: usize, h: usize, c: [f32; 2], r: usize, out: &mut [f32]) {
    let n = 2 * r + 1;
    let (cx, cy) = (c[0].clamp(-1e6, 1e6), c[1].clamp(-1e6, 1e6));
    let (fx0, fy0) = (cx.floor(), cy.floor());
    let (fx, fy) = (cx - fx0, cy - fy0);
    let (w00, w01, w10, w11) = ((1.0 - fx) * (1.0 - fy), fx * (1.0 - fy), (1.0 - fx) * fy, fx * fy);
    let (x0, y0) = (fx0 as isize - r as isize, fy0 as isize - r as isize);
    if x0 >= 0 && y0 >= 0 && x0 + (n as isize) < w as isize && y0 + (n as isize) < h as isize {
        let (x0, y0) = (x0 as usize, y0 as usize);
        for j in 0..n {
            let a = &img[(y0 + j) * w + x0..(y0 + j) * w + x0 + n + 1];
            let b = &img[(y0 + j + 1) * w + x0..(y0 + j + 1) * w + x0 + n + 1];
            let o = &mut out[j * n..(j + 1) * n];
            for i in 0..n {
                o[i] = w00 * a[i] + w01 * a[i + 1] + w10 * b[i] + w11 * b[i + 1];
            }
        }
    } else {
        let cx = |x: isize| x.clamp(0, w as isize - 1) as usize;
        let cy = |y: isize| y.clamp(0, h as isize - 1) as usize;
        for j in 0..n {
            let (ya, yb) = (cy(y0 + j as isize) * w, cy(y0 + j as isize + 1) * w);
            for i in 0..n {
                let (xa, xb) = (cx(x0 + i as isize), cx(x0 + i as isize + 1));
                out[j * n + i] = w00 * img[ya + xa] + w01 * img[ya + xb] + w10 * img[yb + xa] + w11 * img[yb + xb];
            }
        }
    }
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

/// Gaussian weights of a `(2r+1)²` patch, standard deviation `sigma` px, summing to 1.
fn gaussian_weights(r: usize, sigma: f32) -> Vec<f32> {
    let n = 2 * r + 1;
    let mut w: Vec<f32> = (0..n * n)
        .map(|k| {
            let (dx, dy) = ((k % n) as f32 - r as f32, (k / n) as f32 - r as f32);
            (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= total);
    w
}

/// A first-frame appearance template under Gaussian weights `w` (summing to 1): `a = w (t − μ) / ‖t − μ‖_w`
/// (all zero when flat), with its weighted mean and standard deviation. Then the weighted NCC of a patch p is
/// `Σ a p / ‖p − μ_p‖_w`, since `Σ a = 0`.
#[derive(Clone, Debug)]
struct Template {
    values: Vec<f32>,
    mean: f32,
    std: f32,
}

impl Template {
    fn new(patch: &[f32], weights: &[f32]) -> Self {
        let m: f32 = patch.iter().zip(weights).map(|(v, w)| v * w).sum();
        let var: f32 = patch.iter().zip(weights).map(|(v, w)| w * (v - m) * (v - m)).sum();
        let std = var.sqrt();
        let values = if std > 0.0 { patch.iter().zip(weights).map(|(v, w)| w * (v - m) / std).collect() } else { vec![0.0; patch.len()] };
        Template { values, mean: m, std }
    }

    /// Weighted NCC of `patch` with the template; flat patches and templates, and the brightness ratio, follow the
    /// rules of the module doc.
    fn ncc(&self, patch: &[f32], weights: &[f32], config: &KltConfig) -> f32 {
        let (mut dot, mut sum, mut sum2) = (0.0f32, 0.0f32, 0.0f32);
        for ((a, v), w) in self.values.iter().zip(patch).zip(weights) {
            dot += a * v;
            let wv = w * v;
            sum += wv;
            sum2 += wv * v;
        }
        let std = (sum2 - sum * sum).max(0.0).sqrt();
        match (self.std < config.min_texture, std < config.min_texture) {
            (true, true) => {
                if (sum - self.mean).abs() <= config.flat_tolerance {
                    1.0
                } else {
                    0.0
                }
            }
            (true, false) | (false, true) => 0.0,
            (false, false) => {
                let gain = (sum + 10.0) / (self.mean + 10.0);
                if gain > config.max_gain || gain * config.max_gain < 1.0 {
                    return 0.0;
                }
                (dot / std).clamp(-1.0, 1.0)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The tracker

#[derive(Clone, Copy, Debug)]
struct PointState {
    pos: [f32; 2],
    vel: [f32; 2],
    visible: bool,
    lost_for: u32,
    /// Speed in px/frame when the point was last lost.
    speed_at_loss: f32,
}

/// Why a point has its current state, after the last frame tracked (for diagnostics and tuning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PointDiagnostics {
    /// Forward-backward round-trip error in px (NaN when the point was lost before or a solve failed).
    pub fb_error: f32,
    /// NCC with the first-frame template at the tracked position (NaN when not computed).
    pub ncc: f32,
    /// Best NCC of the re-acquisition search (NaN when no search ran).
    pub search_ncc: f32,
    /// Frames since the point was last visible (0 while visible).
    pub lost_for: u32,
    /// The search found another candidate almost as good (so it did not re-acquire).
    pub ambiguous: bool,
}

#[derive(Clone, Debug, Default)]
struct Scratch {
    t: Vec<f32>,
    tx: Vec<f32>,
    ty: Vec<f32>,
    j: Vec<f32>,
    patch: Vec<f32>,
    coarse: Vec<f32>,
    map: Vec<f32>,
}

/// Pyramidal Lucas-Kanade point tracker with forward-backward and appearance checks, occlusion prediction and
/// re-acquisition (see the module doc).
#[derive(Clone, Debug)]
pub struct KltTracker {
    config: KltConfig,
    width: usize,
    height: usize,
    first: Pyramid,
    prev: Pyramid,
    cur: Pyramid,
    origins: Vec<[f32; 2]>,
    templates: Vec<Template>,
    coarse_templates: Vec<Template>,
    weights: Vec<f32>,
    coarse_weights: Vec<f32>,
    search_caps: Vec<f32>,
    points: Vec<PointState>,
    diagnostics: Vec<PointDiagnostics>,
    scratch: Scratch,
}

impl KltTracker {
    /// Starts tracking `points` (pixels of `first_frame`, pixel centres at integer coordinates, each within
    /// `[0, width] x [0, height]`). Fails on an invalid config, an empty or inconsistent frame, or a point that
    /// is not finite or lies outside the image.
    pub fn new<'a>(config: KltConfig, first_frame: impl Into<FrameView<'a>>, points: &[[f32; 2]]) -> eyre::Result<Self> {
        config.validate()?;
        let frame = first_frame.into();
        frame.check()?;
        let (w, h) = frame.size();
        for (i, &[x, y]) in points.iter().enumerate() {
            eyre::ensure!(
                x.is_finite() && y.is_finite() && (0.0..=w as f32).contains(&x) && (0.0..=h as f32).contains(&y),
                "points[{i}] = [{x}, {y}]: expected a pixel inside the {w}x{h} first frame (0 <= x <= {w}, 0 <= y <= {h})"
            );
        }
        let (w, h) = (w as usize, h as usize);
        let levels = effective_levels(config.levels, w, h);
        let mut first = Pyramid::new(levels, w, h);
        first.build(&frame);
        let (tr, cr) = (config.template_radius, coarse_radius(&config));
        let mut patch = vec![0.0; (2 * tr + 1) * (2 * tr + 1)];
        let mut coarse = vec![0.0; (2 * cr + 1) * (2 * cr + 1)];
        let cl = search_level(levels);
        let scale = 1.0 / (1 << cl) as f32;
        let weights = gaussian_weights(tr, config.template_sigma);
        let coarse_weights = gaussian_weights(cr, config.template_sigma * scale);
        let (mut templates, mut coarse_templates) = (Vec::new(), Vec::new());
        for &[x, y] in points {
            sample(&first.levels[0].img, w, h, [x, y], tr, &mut patch);
            templates.push(Template::new(&patch, &weights));
            let l = &first.levels[cl];
            sample(&l.img, l.w, l.h, [x * scale, y * scale], cr, &mut coarse);
            coarse_templates.push(Template::new(&coarse, &coarse_weights));
        }
        let n = (2 * config.window_radius + 1).pow(2);
        let scratch = Scratch {
            t: vec![0.0; n],
            tx: vec![0.0; n],
            ty: vec![0.0; n],
            j: vec![0.0; n],
            patch,
            coarse,
            map: Vec::new(),
        };
        let mut tracker = KltTracker {
            width: w,
            height: h,
            prev: first.clone(),
            cur: first.clone(),
            first,
            origins: points.to_vec(),
            templates,
            coarse_templates,
            weights,
            coarse_weights,
            search_caps: Vec::new(),
            points: points.iter().map(|&pos| PointState { pos, vel: [0.0; 2], visible: true, lost_for: 0, speed_at_loss: 0.0 }).collect(),
            diagnostics: vec![PointDiagnostics { fb_error: 0.0, ncc: 1.0, search_ncc: f32::NAN, ..PointDiagnostics::default() }; points.len()],
            scratch,
            config,
        };
        tracker.search_caps = (0..points.len()).map(|i| tracker.distinct_radius(i)).collect();
        Ok(tracker)
    }

    /// Per point, the largest re-acquisition search radius in px: half the distance to the nearest look-alike of
    /// its template in the first frame, at most `max_search_radius` (see the module doc).
    pub fn search_radii(&self) -> &[f32] {
        &self.search_caps
    }

    /// The configuration in use.
    pub fn config(&self) -> &KltConfig {
        &self.config
    }

    /// Number of tracked points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point is tracked.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The current `[x, y, visible]` of every point (after the last frame tracked, or the queries).
    pub fn current(&self) -> Vec<[f32; 3]> {
        self.points.iter().map(|p| [p.pos[0], p.pos[1], if p.visible { 1.0 } else { 0.0 }]).collect()
    }

    /// Per point, the checks behind its state after the last frame tracked.
    pub fn diagnostics(&self) -> &[PointDiagnostics] {
        &self.diagnostics
    }

    /// Tracks every point into `frame`, which must have the first frame's size (see [`Self::try_track`]).
    ///
    /// # Panics
    /// When the frame's size or byte count differs from the first frame's.
    pub fn track<'a>(&mut self, frame: impl Into<FrameView<'a>>) -> Vec<[f32; 3]> {
        match self.try_track(frame) {
            Ok(out) => out,
            Err(e) => panic!("KltTracker::track: {e}"),
        }
    }

    /// Tracks every point into `frame`; fails (changing nothing) when its size differs from the first frame's.
    pub fn try_track<'a>(&mut self, frame: impl Into<FrameView<'a>>) -> eyre::Result<Vec<[f32; 3]>> {
        let mut out = Vec::with_capacity(self.points.len());
        self.track_into(frame.into(), &mut out)?;
        Ok(out)
    }

    /// Like [`Self::try_track`], writing into `out` (cleared first) so a caller can reuse one buffer.
    pub fn track_into(&mut self, frame: FrameView<'_>, out: &mut Vec<[f32; 3]>) -> eyre::Result<()> {
        frame.check()?;
        let (w, h) = frame.size();
        eyre::ensure!(
            (w as usize, h as usize) == (self.width, self.height),
            "frame: expected {}x{} like the first frame, got {w}x{h}",
            self.width,
            self.height
        );
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.build(&frame);
        for i in 0..self.points.len() {
            if !self.track_point(i) {
                self.lost_point(i);
            }
        }
        out.clear();
        out.extend(self.points.iter().map(|p| [p.pos[0], p.pos[1], if p.visible { 1.0 } else { 0.0 }]));
        Ok(())
    }

    fn inside(&self, p: [f32; 2]) -> bool {
        p[0] >= 0.0 && p[1] >= 0.0 && p[0] <= self.width as f32 && p[1] <= self.height as f32
    }

    /// NCC of point `i`'s first-frame template with the current frame at `p`.
    fn appearance(&mut self, i: usize, p: [f32; 2]) -> f32 {
        let l = &self.cur.levels[0];
        sample(&l.img, l.w, l.h, p, self.config.template_radius, &mut self.scratch.patch);
        self.templates[i].ncc(&self.scratch.patch, &self.weights, &self.config)
    }

    /// Tracks visible point `i` from the previous frame; true (state updated) when every check passes.
    fn track_point(&mut self, i: usize) -> bool {
        let s = self.points[i];
        self.diagnostics[i] = PointDiagnostics { fb_error: f32::NAN, ncc: f32::NAN, search_ncc: f32::NAN, ..PointDiagnostics::default() };
        if !s.visible {
            return false;
        }
        let guess = [s.pos[0] + s.vel[0], s.pos[1] + s.vel[1]];
        let Some(q) = lk(&self.config, &self.prev, &self.cur, s.pos, guess, &mut self.scratch).filter(|&q| self.inside(q)) else {
            return false;
        };
        let back = lk(&self.config, &self.cur, &self.prev, q, s.pos, &mut self.scratch);
        let fb_error = back.map_or(f32::INFINITY, |b| dist(b, s.pos));
        let ncc = self.appearance(i, q);
        self.diagnostics[i].fb_error = fb_error;
        self.diagnostics[i].ncc = ncc;
        if fb_error <= self.config.fb_threshold && ncc >= self.config.ncc_keep {
            let vel = [q[0] - s.pos[0], q[1] - s.pos[1]];
            self.points[i] = PointState { pos: q, vel, visible: true, lost_for: 0, speed_at_loss: 0.0 };
            return true;
        }
        false
    }

    /// Point `i` is lost (or was just lost): it coasts on its damped velocity, and is searched for around that
    /// prediction.
    fn lost_point(&mut self, i: usize) {
        let s = self.points[i];
        let vel = [s.vel[0] * self.config.damping, s.vel[1] * self.config.damping];
        let pos = [s.pos[0] + vel[0], s.pos[1] + vel[1]];
        let (lost_for, speed_at_loss) = if s.visible { (1, s.vel[0].hypot(s.vel[1])) } else { (s.lost_for + 1, s.speed_at_loss) };
        let c = &self.config;
        let radius = (c.search_radius + c.search_speed_gain * speed_at_loss + c.search_growth * (lost_for - 1) as f32)
            .min(self.search_caps[i]);
        let found = self.reacquire(i, pos, radius);
        let diag = &mut self.diagnostics[i];
        diag.search_ncc = found.map_or(f32::NAN, |f| f.ncc);
        diag.ambiguous = found.is_some_and(|f| f.ambiguous);
        match found {
            Some(f) if f.ncc >= self.config.ncc_reacquire && !f.ambiguous => {
                self.points[i] = PointState { pos: f.pos, vel: [0.0; 2], visible: true, lost_for: 0, speed_at_loss: 0.0 };
            }
            _ => {
                self.points[i] = PointState { pos, vel, visible: false, lost_for, speed_at_loss };
                diag.lost_for = lost_for;
            }
        }
    }

    /// Searches point `i` within `radius` px of `pred` in the current frame: the best match, if any.
    fn reacquire(&mut self, i: usize, pred: [f32; 2], radius: f32) -> Option<Found> {
        let cl = search_level(self.cur.levels.len());
        let scale = (1 << cl) as f32;
        let cr = coarse_radius(&self.config);
        let level = &self.cur.levels[cl];
        let (cx, cy) = ((pred[0] / scale).round() as isize, (pred[1] / scale).round() as isize);
        let r = (radius / scale).ceil() as isize;
        // NCC map of the coarse template over the search disc (NaN outside the disc or the image).
        let side = (2 * r + 1) as usize;
        self.scratch.map.clear();
        self.scratch.map.resize(side * side, f32::NAN);
        let template = &self.coarse_templates[i];
        for y in (cy - r).max(0)..=(cy + r).min(level.h as isize - 1) {
            for x in (cx - r).max(0)..=(cx + r).min(level.w as isize - 1) {
                if (x - cx).pow(2) + (y - cy).pow(2) > r * r {
                    continue;
                }
                sample(&level.img, level.w, level.h, [x as f32, y as f32], cr, &mut self.scratch.coarse);
                let score = template.ncc(&self.scratch.coarse, &self.coarse_weights, &self.config);
                self.scratch.map[(y - cy + r) as usize * side + (x - cx + r) as usize] = score;
            }
        }
        // The three best local maxima.
        let mut best: [(f32, isize, isize); 3] = [(f32::NEG_INFINITY, 0, 0); 3];
        for (k, &score) in self.scratch.map.iter().enumerate() {
            if !(score > best[2].0) || score < self.config.ncc_reacquire - 0.3 {
                continue;
            }
            let (u, v) = ((k % side) as isize, (k / side) as isize);
            let is_peak = (-1..=1).all(|dv| {
                (-1..=1).all(|du| {
                    let (nu, nv) = (u + du, v + dv);
                    nu < 0 || nv < 0 || nu >= side as isize || nv >= side as isize || !(self.scratch.map[nv as usize * side + nu as usize] > score)
                })
            });
            if is_peak {
                best[2] = (score, u - r + cx, v - r + cy);
                best.sort_by(|a, b| b.0.total_cmp(&a.0));
            }
        }
        // Candidates: the prediction and the coarse peaks, each refined at full resolution.
        let mut found = [(f32::NEG_INFINITY, [0.0f32; 2]); 4];
        let coarse = best.iter().filter(|b| b.0.is_finite()).map(|&(_, x, y)| [x as f32 * scale, y as f32 * scale]);
        for (k, start) in std::iter::once(pred).chain(coarse).enumerate() {
            if let Some(c) = self.refine(i, start).filter(|c| dist(c.1, pred) <= radius + 2.0) {
                found[k] = c;
            }
        }
        let (ncc, p) = found.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0))?;
        if !ncc.is_finite() {
            return None;
        }
        let ambiguous = found.iter().any(|c| c.0 > ncc - self.config.ambiguity_margin && dist(c.1, p) > 3.0);
        Some(Found { ncc, pos: p, ambiguous })
    }

    /// Full-resolution refinement of a re-acquisition candidate: hill-climbing of the NCC in 1 px steps (8
    /// neighbours, at most 8 steps) to its local maximum, then LK from the point's first-frame position for the
    /// sub-pixel position (kept when it stays within 1.5 px and does not lower the NCC). `None` when it leaves the
    /// image.
    fn refine(&mut self, i: usize, start: [f32; 2]) -> Option<(f32, [f32; 2])> {
        let mut best = (f32::NEG_INFINITY, start);
        if self.inside(start) {
            best.0 = self.appearance(i, start);
        }
        for _ in 0..8 {
            let centre = best.1;
            let mut moved = false;
            for (dx, dy) in [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
                let p = [centre[0] + dx as f32, centre[1] + dy as f32];
                if self.inside(p) {
                    let ncc = self.appearance(i, p);
                    if ncc > best.0 {
                        best = (ncc, p);
                        moved = true;
                    }
                }
            }
            if !moved {
                break;
            }
        }
        if !best.0.is_finite() {
            return None;
        }
        if let Some(q) = lk(&self.config, &self.first, &self.cur, self.origins[i], best.1, &mut self.scratch) {
            if dist(q, best.1) <= 1.5 {
                if !self.inside(q) {
                    return None;
                }
                let ncc = self.appearance(i, q);
                if ncc >= best.0 {
                    best = (ncc, q);
                }
            }
        }
        Some(best)
    }

    /// Half the distance from point `i` to the nearest look-alike in the first frame (a local maximum of the NCC
    /// with its own template reaching `ncc_keep`, 3 px or more away), capped at `max_search_radius`: how far a
    /// re-acquisition search may look without the risk of latching onto a repetition of the texture.
    fn distinct_radius(&mut self, i: usize) -> f32 {
        let r = self.config.max_search_radius.ceil() as isize;
        let side = (2 * r + 1) as usize;
        let p0 = self.origins[i];
        let level = &self.first.levels[0];
        let mut map = vec![f32::NAN; side * side];
        for v in -r..=r {
            for u in -r..=r {
                let p = [p0[0] + u as f32, p0[1] + v as f32];
                if u * u + v * v > r * r || !self.inside(p) {
                    continue;
                }
                sample(&level.img, level.w, level.h, p, self.config.template_radius, &mut self.scratch.patch);
                map[(v + r) as usize * side + (u + r) as usize] = self.templates[i].ncc(&self.scratch.patch, &self.weights, &self.config);
            }
        }
        let mut nearest = f32::INFINITY;
        for (k, &score) in map.iter().enumerate() {
            let (u, v) = ((k % side) as isize - r, (k / side) as isize - r);
            let d = ((u * u + v * v) as f32).sqrt();
            if !(score >= self.config.ncc_keep) || d < 3.0 || d >= nearest {
                continue;
            }
            let is_peak = (-1..=1).all(|dv| {
                (-1..=1).all(|du| {
                    let (nu, nv) = (u + r + du, v + r + dv);
                    nu < 0 || nv < 0 || nu >= side as isize || nv >= side as isize || !(map[nv as usize * side + nu as usize] > score)
                })
            });
            if is_peak {
                nearest = d;
            }
        }
        (0.5 * nearest).min(self.config.max_search_radius)
    }
}

/// The best match of a re-acquisition search.
#[derive(Clone, Copy, Debug)]
struct Found {
    ncc: f32,
    pos: [f32; 2],
    /// Another candidate 3 px or more away scores within `ambiguity_margin` of it.
    ambiguous: bool,
}

impl PointTracker for KltTracker {
    fn track(&mut self, frame: FrameView<'_>) -> Vec<[f32; 3]> {
        KltTracker::track(self, frame)
    }

    fn len(&self) -> usize {
        KltTracker::len(self)
    }
}

/// The pyramid level of the coarse re-acquisition search.
fn search_level(levels: usize) -> usize {
    if levels > 1 { 1 } else { 0 }
}

fn coarse_radius(config: &KltConfig) -> usize {
    (config.template_radius / 2).max(2)
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Pyramidal LK: where the window around `p` in `from` went in `to`, starting from the guess `guess`; `None`
/// when the level-0 window is too flat or the solve diverges.
fn lk(config: &KltConfig, from: &Pyramid, to: &Pyramid, p: [f32; 2], guess: [f32; 2], s: &mut Scratch) -> Option<[f32; 2]> {
    let r = config.window_radius;
    let n = (2 * r + 1) * (2 * r + 1);
    let top = from.levels.len() - 1;
    let top_scale = (1 << top) as f32;
    let mut g = [(guess[0] - p[0]) / top_scale, (guess[1] - p[1]) / top_scale];
    let eps2 = config.epsilon * config.epsilon;
    for l in (0..=top).rev() {
        let scale = 1.0 / (1 << l) as f32;
        let (a, b) = (&from.levels[l], &to.levels[l]);
        let pl = [p[0] * scale, p[1] * scale];
        sample(&a.img, a.w, a.h, pl, r, &mut s.t);
        sample(&a.gx, a.w, a.h, pl, r, &mut s.tx);
        sample(&a.gy, a.w, a.h, pl, r, &mut s.ty);
        let (mut gxx, mut gxy, mut gyy) = (0.0f32, 0.0f32, 0.0f32);
        let (mut sx, mut sy) = (0.0f32, 0.0f32);
        for k in 0..n {
            let (ix, iy) = (s.tx[k], s.ty[k]);
            gxx += ix * ix;
            gxy += ix * iy;
            gyy += iy * iy;
            sx += ix;
            sy += iy;
        }
        let det = gxx * gyy - gxy * gxy;
        let min_eig = ((gxx + gyy) - ((gxx - gyy).powi(2) + 4.0 * gxy * gxy).sqrt()) / (2.0 * n as f32);
        if !(min_eig >= config.min_eigenvalue && det > 0.0) {
            if l == 0 {
                return None;
            }
            g = [2.0 * g[0], 2.0 * g[1]];
            continue;
        }
        let t_mean = mean(&s.t);
        let mut v = [0.0f32; 2];
        for _ in 0..config.max_iterations {
            sample(&b.img, b.w, b.h, [pl[0] + g[0] + v[0], pl[1] + g[1] + v[1]], r, &mut s.j);
            // b = Σ ((I − mean I) − (J − mean J)) ∇I = Σ (I − J) ∇I + (mean J − mean I) Σ ∇I
            let (mut bx, mut by, mut j_sum) = (0.0f32, 0.0f32, 0.0f32);
            for k in 0..n {
                let diff = s.t[k] - s.j[k];
                bx += diff * s.tx[k];
                by += diff * s.ty[k];
                j_sum += s.j[k];
            }
            let offset = j_sum / n as f32 - t_mean;
            bx += offset * sx;
            by += offset * sy;
            let dx = (gyy * bx - gxy * by) / det;
            let dy = (gxx * by - gxy * bx) / det;
            v = [v[0] + dx, v[1] + dy];
            if !(v[0].is_finite() && v[1].is_finite()) || v[0].abs().max(v[1].abs()) > (4 * r) as f32 {
                return None;
            }
            if dx * dx + dy * dy < eps2 {
                break;
            }
        }
        g = [g[0] + v[0], g[1] + v[1]];
        if l > 0 {
            g = [2.0 * g[0], 2.0 * g[1]];
        }
    }
    let q = [p[0] + g[0], p[1] + g[1]];
    (q[0].is_finite() && q[1].is_finite()).then_some(q)
}

/// Tracks `points` through `frames` with a fresh [`KltTracker`]; frame 0 is included (all points visible at
/// their queries), so the result has `frames.len()` rows of `points.len()` `[x, y, visible]`.
pub fn track_sequence<'a, F: 'a>(frames: &'a [F], points: &[[f32; 2]], config: &KltConfig) -> eyre::Result<Vec<Vec<[f32; 3]>>>
where
    &'a F: Into<FrameView<'a>>,
{
    let Some(first) = frames.first() else { return Ok(Vec::new()) };
    let mut tracker = KltTracker::new(config.clone(), first, points)?;
    let mut out = vec![tracker.current()];
    for (t, frame) in frames.iter().enumerate().skip(1) {
        out.push(tracker.try_track(frame).map_err(|e| eyre::eyre!("frames[{t}]: {e}"))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Files (the `glue track` command)

/// `glue track`'s output file: `tracks[frame][point] = [x, y, visible]`, frame 0 included.
#[derive(Clone, Debug, Serialize)]
pub struct TracksFile {
    pub tracks: Vec<Vec<[f32; 3]>>,
}

/// Parses a points file's text: a JSON list of `[x, y]` pixel pairs, at least one.
pub fn parse_points(text: &str) -> eyre::Result<Vec<[f32; 2]>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| eyre::eyre!("not valid JSON ({e})"))?;
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::Bool(_) => "a boolean".to_string(),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(_) => "a string".to_string(),
        serde_json::Value::Array(a) => format!("a list of {} values", a.len()),
        serde_json::Value::Object(_) => "an object".to_string(),
    };
    let list = value
        .as_array()
        .ok_or_else(|| eyre::eyre!("points: expected a list of [x, y] pairs (shape [N, 2]), got {}", kind(&value)))?;
    eyre::ensure!(!list.is_empty(), "points: expected at least one [x, y] pair, got an empty list");
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let pair = item.as_array().filter(|a| a.len() == 2);
            let xy = pair.and_then(|a| Some([a[0].as_f64()? as f32, a[1].as_f64()? as f32]));
            xy.ok_or_else(|| eyre::eyre!("points[{i}]: expected [x, y], two numbers (pixels of frame 0), got {}", match item {
                serde_json::Value::Array(a) if a.len() == 2 => "a pair that is not two numbers".to_string(),
                other => kind(other),
            }))
        })
        .collect()
}

/// Reads a points file (see [`parse_points`]).
pub fn read_points(path: &Path) -> eyre::Result<Vec<[f32; 2]>> {
    let text = fs::read_to_string(path).map_err(|e| eyre::eyre!("--points {}: {e}", path.display()))?;
    parse_points(&text).map_err(|e| eyre::eyre!("--points {}: {e}", path.display()))
}

/// The PNG files of `dir` (extension `png`, any case), in file-name order; fails when `dir` is missing or holds
/// no PNG.
pub fn list_frames(dir: &Path) -> eyre::Result<Vec<PathBuf>> {
    eyre::ensure!(dir.is_dir(), "--frames {}: no such directory", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| eyre::eyre!("--frames {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    eyre::ensure!(!files.is_empty(), "--frames {}: no .png files in this directory", dir.display());
    Ok(files)
}

fn load_gray(path: &Path) -> eyre::Result<GrayImage> {
    Ok(image::open(path).map_err(|e| eyre::eyre!("{}: {e}", path.display()))?.to_luma8())
}

/// Tracks the points of `points` (frame-0 pixels) through the PNGs of `frames_dir` in name order.
pub fn track_files(frames_dir: &Path, points: &[[f32; 2]], config: &KltConfig) -> eyre::Result<TracksFile> {
    let files = list_frames(frames_dir)?;
    let first = load_gray(&files[0])?;
    let mut tracker = KltTracker::new(config.clone(), &first, points)
        .map_err(|e| eyre::eyre!("--points (first frame {}): {e}", files[0].display()))?;
    let mut tracks = vec![tracker.current()];
    for path in &files[1..] {
        let frame = load_gray(path)?;
        eyre::ensure!(
            frame.dimensions() == first.dimensions(),
            "{}: frames of different sizes: {}x{} here, {}x{} in the first frame {}",
            path.display(),
            frame.width(),
            frame.height(),
            first.width(),
            first.height(),
            files[0].display()
        );
        tracks.push(tracker.track(&frame));
    }
    Ok(TracksFile { tracks })
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation on simulator episodes

/// Tracking quality of one task under one condition against the simulator's oracle tracks.
#[derive(Clone, Debug, Serialize)]
pub struct SimEvalRow {
    pub task: String,
    pub variant: String,
    pub strength: f32,
    /// Episodes evaluated (episodes with no oracle point visible at frame 0 are skipped).
    pub episodes: usize,
    /// Points tracked, summed over episodes (the oracle points visible at frame 0).
    pub points: usize,
    /// Point-frames scored (frames after the first).
    pub point_frames: usize,
    /// Median pixel error over point-frames the oracle and the tracker both call visible.
    pub median_px: f32,
    /// 90th percentile of the same errors.
    pub p90_px: f32,
    /// Fraction of the same point-frames with an error above 5 px (a track on the wrong spot).
    pub wrong_5px: f32,
    /// Occlusion precision: of the point-frames the tracker calls not visible, the fraction the oracle calls
    /// not visible (NaN when the tracker flags none).
    pub occlusion_precision: f32,
    /// Occlusion recall: of the oracle-invisible point-frames, the fraction the tracker flags (NaN when none).
    pub occlusion_recall: f32,
    /// Oracle-invisible point-frames (the positives).
    pub occluded: usize,
    /// Of the oracle-visible point-frames, the fraction the tracker keeps visible.
    pub kept_visible: f32,
    /// Tracker time per frame in milliseconds (this machine, one thread).
    pub ms_per_frame: f64,
}

fn quantile(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted[((sorted.len() - 1) as f32 * q).round() as usize]
}

fn ratio(a: usize, b: usize) -> f32 {
    if b == 0 { f32::NAN } else { a as f32 / b as f32 }
}

/// Runs the scripted expert for `episodes` seeds from `seed_start` on every task and condition, tracks the oracle
/// points visible at frame 0 from their frame-0 positions, and scores the tracks against the oracle (see
/// [`SimEvalRow`]). A variant other than `none` runs at `strength`.
pub fn evaluate_on_sim(
    config: &KltConfig,
    tasks: &[TaskKind],
    variants: &[Variant],
    episodes: u64,
    seed_start: u64,
    strength: f32,
) -> eyre::Result<Vec<SimEvalRow>> {
    let sim_config = SimConfig::default();
    let mut rows = Vec::new();
    for &task in tasks {
        for &variant in variants {
            let condition = Condition::new(variant, if variant == Variant::None { 0.0 } else { strength }).map_err(|e| eyre::eyre!(e))?;
            let (mut errors, mut evaluated, mut points) = (Vec::new(), 0, 0);
            let (mut tp, mut fp, mut positives, mut vis_total, mut vis_kept, mut point_frames) = (0, 0, 0, 0, 0, 0);
            let (mut seconds, mut frames) = (0.0f64, 0usize);
            for seed in seed_start..seed_start + episodes {
                let spec = EpisodeSpec { task, seed, condition };
                let mut state: Option<(KltTracker, Vec<usize>)> = None;
                let mut skipped = false;
                let mut out = Vec::new();
                crate::collect::run_expert(&sim_config, spec, |_, obs, _| {
                    let oracle = &obs.oracle_tracks.points;
                    if skipped {
                        return Ok(());
                    }
                    let Some((tracker, ids)) = state.as_mut() else {
                        let ids: Vec<usize> = (0..oracle.len()).filter(|&i| oracle[i][2] == 1.0).collect();
                        if ids.is_empty() {
                            skipped = true;
                            return Ok(());
                        }
                        let queries: Vec<[f32; 2]> = ids.iter().map(|&i| [oracle[i][0], oracle[i][1]]).collect();
                        state = Some((KltTracker::new(config.clone(), &obs.image, &queries)?, ids));
                        return Ok(());
                    };
                    let start = Instant::now();
                    tracker.track_into(FrameView::from(&obs.image), &mut out)?;
                    seconds += start.elapsed().as_secs_f64();
                    frames += 1;
                    for (k, &i) in ids.iter().enumerate() {
                        let (truth, got) = (oracle[i], out[k]);
                        let (truly_visible, said_visible) = (truth[2] == 1.0, got[2] == 1.0);
                        point_frames += 1;
                        if truly_visible {
                            vis_total += 1;
                            if said_visible {
                                vis_kept += 1;
                                errors.push(dist([truth[0], truth[1]], [got[0], got[1]]));
                            } else {
                                fp += 1;
                            }
                        } else {
                            positives += 1;
                            if !said_visible {
                                tp += 1;
                            }
                        }
                    }
                    Ok(())
                })?;
                if let Some((_, ids)) = &state {
                    evaluated += 1;
                    points += ids.len();
                }
            }
            errors.sort_by(f32::total_cmp);
            rows.push(SimEvalRow {
                task: task.name().to_string(),
                variant: variant.name().to_string(),
                strength: condition.strength,
                episodes: evaluated,
                points,
                point_frames,
                median_px: quantile(&errors, 0.5),
                p90_px: quantile(&errors, 0.9),
                wrong_5px: ratio(errors.iter().filter(|&&e| e > 5.0).count(), errors.len()),
                occlusion_precision: ratio(tp, tp + fp),
                occlusion_recall: ratio(tp, positives),
                occluded: positives,
                kept_visible: ratio(vis_kept, vis_total),
                ms_per_frame: if frames == 0 { f64::NAN } else { 1e3 * seconds / frames as f64 },
            });
        }
    }
    Ok(rows)
}

/// The rows of [`evaluate_on_sim`] as a text table.
pub fn sim_eval_table(rows: &[SimEvalRow]) -> String {
    let f = |v: f32, digits: usize| if v.is_nan() { "n/a".to_string() } else { format!("{v:.digits$}") };
    let mut s = format!(
        "{:<13} {:<10} {:>3} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>6}\n",
        "task", "variant", "ep", "points", "pt-frm", "med px", "p90 px", ">5 px", "occl P", "occl R", "occl n", "kept", "ms/f"
    );
    for r in rows {
        s += &format!(
            "{:<13} {:<10} {:>3} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>6.2}\n",
            r.task,
            r.variant,
            r.episodes,
            r.points,
            r.point_frames,
            f(r.median_px, 2),
            f(r.p90_px, 2),
            f(r.wrong_5px, 3),
            f(r.occlusion_precision, 3),
            f(r.occlusion_recall, 3),
            r.occluded,
            f(r.kept_visible, 3),
            r.ms_per_frame
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------------------------
// Benchmark and synthetic sequences

/// Throughput of [`KltTracker`] on a synthetic sequence.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub points: usize,
    pub width: u32,
    pub height: u32,
    /// Frames tracked in the timed runs.
    pub frames: usize,
    /// Best of the timed runs, frames per second (one thread, RGB frames in, grayscale conversion included).
    pub frames_per_s: f64,
    /// Median of the timed runs, frames per second.
    pub median_frames_per_s: f64,
    /// Fraction of the tracked point-frames reported visible (last run).
    pub visible_fraction: f64,
    /// Frames per second when every point is lost and searched for in every frame (one run).
    pub lost_frames_per_s: f64,
}

/// Tracks 20 points through a 224x224 synthetic RGB sequence of `frames` frames (a texture swaying: shifts of
/// ±15 px, rotations of ±8°, zooms of ±5%, so the points stay in view) `repeats` times on the calling thread and
/// reports frames per second; the sequence is rendered before the clock starts, the tracker is built outside it.
pub fn bench(frames: usize, repeats: usize) -> eyre::Result<BenchReport> {
    let (w, h, n) = (224u32, 224u32, 20usize);
    let texture = synthetic::Texture::new(7);
    let wave = |t: usize, period: f32| (std::f32::consts::TAU * t as f32 / period).sin();
    let motion = |t: usize| synthetic::Motion {
        shift: [15.0 * wave(t, 50.0), 10.0 * wave(t, 37.0)],
        angle_deg: 8.0 * wave(t, 61.0),
        scale: 1.0 + 0.05 * wave(t, 43.0),
    };
    let seq: Vec<RgbImage> = (0..frames.max(2)).map(|t| synthetic::render_rgb(&texture, w, h, &motion(t), None)).collect();
    let points: Vec<[f32; 2]> = (0..n).map(|i| [40.0 + 36.0 * (i % 5) as f32, 50.0 + 40.0 * (i / 5) as f32]).collect();
    let mut fps = Vec::new();
    let mut out = Vec::with_capacity(n);
    let mut visible = 0usize;
    for _ in 0..repeats.max(1) {
        let mut tracker = KltTracker::new(KltConfig::default(), &seq[0], &points)?;
        visible = 0;
        let start = Instant::now();
        for frame in &seq[1..] {
            tracker.track_into(frame.into(), &mut out)?;
            visible += out.iter().filter(|p| p[2] == 1.0).count();
        }
        fps.push((seq.len() - 1) as f64 / start.elapsed().as_secs_f64());
    }
    fps.sort_by(f64::total_cmp);
    // Worst case: every point lost and searched for in every frame (the scene is replaced by another texture).
    let other = synthetic::Texture::new(8);
    let strange: Vec<RgbImage> = (1..seq.len()).map(|t| synthetic::render_rgb(&other, w, h, &motion(t), None)).collect();
    let mut tracker = KltTracker::new(KltConfig::default(), &seq[0], &points)?;
    let start = Instant::now();
    for frame in &strange {
        tracker.track_into(frame.into(), &mut out)?;
    }
    let lost_frames_per_s = strange.len() as f64 / start.elapsed().as_secs_f64();
    Ok(BenchReport {
        lost_frames_per_s,
        points: n,
        width: w,
        height: h,
        frames: seq.len() - 1,
        frames_per_s: fps[fps.len() - 1],
        median_frames_per_s: fps[fps.len() / 2],
        visible_fraction: visible as f64 / ((seq.len() - 1) * n) as f64,
    })
}

/// Deterministic synthetic sequences with exact ground truth, for tests and the benchmark: a smooth textured
/// plane (two octaves of value noise plus a soft checker) moved by a similarity transform about the image
/// centre, optionally with a flat-colour rectangular occluder.
pub mod synthetic {
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// A seeded, band-limited grey texture on the plane.
    #[derive(Clone, Copy, Debug)]
    pub struct Texture {
        seed: u32,
    }

    fn hash(x: i32, y: i32, seed: u32) -> f32 {
        let mut h = (x as u32).wrapping_mul(0x8da6_b343) ^ (y as u32).wrapping_mul(0xd816_3841) ^ seed.wrapping_mul(0xcb1a_b31f);
        h ^= h >> 13;
        h = h.wrapping_mul(0x5bd1_e995);
        h ^= h >> 15;
        (h & 0xffff) as f32 / 32767.5 - 1.0
    }

    fn value_noise(x: f32, y: f32, cell: f32, seed: u32) -> f32 {
        let (u, v) = (x / cell, y / cell);
        let (x0, y0) = (u.floor(), v.floor());
        let (fx, fy) = (u - x0, v - y0);
        let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
        let (i, j) = (x0 as i32, y0 as i32);
        let a = hash(i, j, seed) + sx * (hash(i + 1, j, seed) - hash(i, j, seed));
        let b = hash(i, j + 1, seed) + sx * (hash(i + 1, j + 1, seed) - hash(i, j + 1, seed));
        a + sy * (b - a)
    }

    impl Texture {
        pub fn new(seed: u32) -> Self {
            Texture { seed }
        }

        /// Grey level (about 20..235) at plane point `(x, y)`.
        pub fn at(&self, x: f32, y: f32) -> f32 {
            let fine = value_noise(x, y, 5.0, self.seed);
            let coarse = value_noise(x, y, 17.0, self.seed ^ 0x9e37);
            let checker = ((x * std::f32::consts::TAU / 24.0).sin() * (y * std::f32::consts::TAU / 24.0).sin() * 3.0).tanh();
            (128.0 + 45.0 * fine + 35.0 * coarse + 20.0 * checker).clamp(0.0, 255.0)
        }
    }

    /// A similarity transform about the image centre: plane point q shows at pixel `c + shift + scale R(angle) (q − c)`.
    #[derive(Clone, Copy, Debug)]
    pub struct Motion {
        pub shift: [f32; 2],
        pub angle_deg: f32,
        pub scale: f32,
    }

    impl Motion {
        /// Pixel of plane point `q` in a `w`x`h` frame.
        pub fn forward(&self, q: [f32; 2], w: u32, h: u32) -> [f32; 2] {
            let c = [w as f32 / 2.0, h as f32 / 2.0];
            let (s, co) = self.angle_deg.to_radians().sin_cos();
            let d = [q[0] - c[0], q[1] - c[1]];
            [
                c[0] + self.shift[0] + self.scale * (co * d[0] - s * d[1]),
                c[1] + self.shift[1] + self.scale * (s * d[0] + co * d[1]),
            ]
        }

        /// Plane point shown at pixel `p`.
        pub fn inverse(&self, p: [f32; 2], w: u32, h: u32) -> [f32; 2] {
            let c = [w as f32 / 2.0, h as f32 / 2.0];
            let (s, co) = self.angle_deg.to_radians().sin_cos();
            let d = [(p[0] - c[0] - self.shift[0]) / self.scale, (p[1] - c[1] - self.shift[1]) / self.scale];
            [c[0] + co * d[0] + s * d[1], c[1] - s * d[0] + co * d[1]]
        }
    }

    /// A flat rectangle `[x0, x1) x [y0, y1)` in pixels, drawn over the texture.
    #[derive(Clone, Copy, Debug)]
    pub struct Occluder {
        pub x0: f32,
        pub y0: f32,
        pub x1: f32,
        pub y1: f32,
        pub grey: u8,
    }

    impl Occluder {
        /// Whether pixel position `p` is covered.
        pub fn covers(&self, p: [f32; 2]) -> bool {
            p[0] >= self.x0 && p[0] < self.x1 && p[1] >= self.y0 && p[1] < self.y1
        }
    }

    /// Renders the textured plane under `motion` (pixel centres at integer coordinates), with the occluder.
    pub fn render_gray(texture: &Texture, w: u32, h: u32, motion: &Motion, occluder: Option<&Occluder>) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let p = [x as f32, y as f32];
            if let Some(o) = occluder.filter(|o| o.covers(p)) {
                return Luma([o.grey]);
            }
            let q = motion.inverse(p, w, h);
            Luma([texture.at(q[0], q[1]).round() as u8])
        })
    }

    /// The same as an RGB image (grey in all three channels).
    pub fn render_rgb(texture: &Texture, w: u32, h: u32, motion: &Motion, occluder: Option<&Occluder>) -> RgbImage {
        let g = render_gray(texture, w, h, motion, occluder);
        RgbImage::from_fn(w, h, |x, y| {
            let v = g.get_pixel(x, y)[0];
            Rgb([v, v, v])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{Motion, Texture, render_gray};
    use super::*;

    #[test]
    fn pure_translation_is_recovered_to_subpixel() {
        let tex = Texture::new(3);
        let m0 = Motion { shift: [0.0, 0.0], angle_deg: 0.0, scale: 1.0 };
        let m1 = Motion { shift: [3.3, -2.6], angle_deg: 0.0, scale: 1.0 };
        let (a, b) = (render_gray(&tex, 96, 96, &m0, None), render_gray(&tex, 96, 96, &m1, None));
        let mut t = KltTracker::new(KltConfig::default(), &a, &[[48.0, 48.0], [30.0, 60.0]]).unwrap();
        let out = t.track(&b);
        for (p, q) in [[48.0, 48.0], [30.0, 60.0]].iter().zip(&out) {
            assert_eq!(q[2], 1.0);
            assert!(dist([p[0] + 3.3, p[1] - 2.6], [q[0], q[1]]) < 0.1, "{q:?}");
        }
    }

    #[test]
    fn flat_image_loses_points_without_panicking() {
        let a = GrayImage::from_pixel(64, 64, image::Luma([100]));
        let mut t = KltTracker::new(KltConfig::default(), &a, &[[32.0, 32.0], [0.0, 64.0]]).unwrap();
        let out = t.track(&a);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
    }

    #[test]
    fn rejects_points_outside_and_bad_sizes() {
        let a = GrayImage::new(32, 32);
        assert!(KltTracker::new(KltConfig::default(), &a, &[[40.0, 1.0]]).unwrap_err().to_string().contains("points[0]"));
        assert!(KltTracker::new(KltConfig::default(), &a, &[[f32::NAN, 1.0]]).is_err());
        let mut t = KltTracker::new(KltConfig::default(), &a, &[[16.0, 16.0]]).unwrap();
        assert!(t.try_track(&GrayImage::new(31, 32)).unwrap_err().to_string().contains("32x32"));
    }

    #[test]
    fn points_json_errors_name_the_field_and_shape() {
        assert_eq!(parse_points("[[1, 2], [3.5, 4]]").unwrap(), vec![[1.0, 2.0], [3.5, 4.0]]);
        assert!(parse_points("{\"a\": 1}").unwrap_err().to_string().contains("[N, 2]"));
        assert!(parse_points("[]").unwrap_err().to_string().contains("at least one"));
        let e = parse_points("[[1, 2], [3]]").unwrap_err().to_string();
        assert!(e.contains("points[1]") && e.contains("[x, y]"), "{e}");
        assert!(parse_points("[[1, \"a\"]]").unwrap_err().to_string().contains("points[0]"));
        assert!(parse_points("[[1, 2]").unwrap_err().to_string().contains("JSON"));
    }
}
