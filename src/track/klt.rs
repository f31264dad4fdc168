//! The KLT tracker itself: its configuration, the per-point state machine (tracked, lost, re-acquired) and
//! [`track_sequence`]; the algorithm is described in the [module doc](super).

use image::{GrayImage, RgbImage};
use serde::Serialize;

use super::pyramid::{Pyramid, Template, effective_levels, gaussian_weights, mean, sample};

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
    pub(super) fn write_gray(&self, out: &mut [f32]) {
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

pub(super) fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
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

#[cfg(test)]
mod tests {
    use crate::track::synthetic::{Motion, Texture, render_gray};
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
}
