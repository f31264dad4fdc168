//! The correspondence evaluation (module doc of [`super`]): frame-0 cells matched into frame t, and lit cells
//! into the unlit render of the same tick, against a random init and the zero-motion guess.

use burn::tensor::Device;
use eyre::{ensure, eyre};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::training::{init_encoder, l2_normalize};
use super::{EVAL_FRACTIONS, EvalEpisode, WITHIN_PX};
use crate::vit::{ClipVisionConfig, ClipVisionModel, GridEncoder, ImageProcessor};
use crate::viz::{PointStyle, draw_points};

/// The local feature grid of a square frame: its 2x2 quadrants encoded separately and stitched.
#[derive(Clone, Debug)]
pub struct LocalGrid {
    /// Cells per side (28 for 2 quadrants of 14x14 patches).
    pub side: usize,
    /// Feature width.
    pub dim: usize,
    /// Frame pixels per cell side (8 for a 224 frame).
    pub cell_px: f32,
    /// `[side * side, dim]` row-major, each row L2-normalised.
    pub features: Vec<f32>,
}

impl LocalGrid {
    /// The cell under frame position `(x, y)`, clamped to the grid.
    pub fn cell_at(&self, x: f32, y: f32) -> usize {
        let clamp = |v: f32| ((v / self.cell_px).floor().max(0.0) as usize).min(self.side - 1);
        clamp(y) * self.side + clamp(x)
    }

    /// Frame position of the centre of `cell`.
    pub fn cell_centre(&self, cell: usize) -> [f32; 2] {
        let (row, col) = (cell / self.side, cell % self.side);
        [(col as f32 + 0.5) * self.cell_px, (row as f32 + 0.5) * self.cell_px]
    }

    fn row(&self, cell: usize) -> &[f32] {
        &self.features[cell * self.dim..(cell + 1) * self.dim]
    }

    /// The cell of `self` whose feature has the highest cosine similarity with `query`.
    pub fn nearest(&self, query: &[f32]) -> usize {
        let dot = |cell: usize| self.row(cell).iter().zip(query).map(|(a, b)| a * b).sum::<f32>();
        (0..self.side * self.side).max_by(|&a, &b| dot(a).total_cmp(&dot(b))).expect("non-empty grid")
    }
}

/// The local grid of one frame (see the module doc): [`GridEncoder::encode`]'s stitched patch features, each
/// cell L2-normalised for cosine matching.
pub fn local_grid(encoder: &GridEncoder, frame: &RgbImage, device: &Device) -> eyre::Result<LocalGrid> {
    let (w, h) = frame.dimensions();
    ensure!(w == h, "local grid: expected a square frame, got {w}x{h}");
    let grid = encoder.encode(&[frame], device)?;
    let [_, side, _, dim] = grid.dims();
    let values = l2_normalize(grid.reshape([side * side, dim])).into_data().try_into_vec::<f32>().map_err(|e| eyre!("{e:?}"))?;
    Ok(LocalGrid { side, dim, cell_px: w as f32 / side as f32, features: values })
}

/// One evaluated point: where it was queried (frame 0), where it truly is in frame t, and the match.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PointMatch {
    pub query: [f32; 2],
    pub truth: [f32; 2],
    pub matched: [f32; 2],
    pub error_px: f32,
    /// Error of the zero-motion guess (the centre of the query's own cell).
    pub stay_error_px: f32,
}

/// Matches every oracle point visible in both frames from `grid0` (frame 0) into `grid_t` (frame t).
pub fn match_points(grid0: &LocalGrid, grid_t: &LocalGrid, points0: &[[f32; 3]], points_t: &[[f32; 3]]) -> Vec<PointMatch> {
    points0
        .iter()
        .zip(points_t)
        .filter(|(p, q)| p[2] >= 0.5 && q[2] >= 0.5)
        .map(|(p, q)| {
            let query_cell = grid0.cell_at(p[0], p[1]);
            let matched = grid_t.cell_centre(grid_t.nearest(grid0.row(query_cell)));
            let stay = grid0.cell_centre(query_cell);
            let error_px = (matched[0] - q[0]).hypot(matched[1] - q[1]);
            let stay_error_px = (stay[0] - q[0]).hypot(stay[1] - q[1]);
            PointMatch { query: [p[0], p[1]], truth: [q[0], q[1]], matched, error_px, stay_error_px }
        })
        .collect()
}

/// Summary of match errors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrespondenceScore {
    /// Points evaluated.
    pub points: usize,
    /// Median error in pixels.
    pub median_px: f32,
    /// Mean error in pixels.
    pub mean_px: f32,
    /// Fraction of points within [`WITHIN_PX`].
    pub within_16px: f32,
}

/// The median of `values` (NaN when empty).
fn median(values: &[f32]) -> f32 {
    crate::stats::median(values).unwrap_or(f32::NAN)
}

impl CorrespondenceScore {
    pub fn of(errors: &[f32]) -> Self {
        let n = errors.len();
        Self {
            points: n,
            median_px: median(errors),
            mean_px: errors.iter().sum::<f32>() / n.max(1) as f32,
            within_16px: errors.iter().filter(|&&e| e <= WITHIN_PX).count() as f32 / n.max(1) as f32,
        }
    }
}

/// The matches of one model on every (frame 0, frame t) pair of `episodes`, pair by pair (episode-major).
pub fn evaluate_matches(encoder: &GridEncoder, episodes: &[EvalEpisode], device: &Device) -> eyre::Result<Vec<Vec<PointMatch>>> {
    let mut out = Vec::new();
    for episode in episodes {
        let Some(((_, frame0, points0), rest)) = episode.frames.split_first() else { continue };
        let grid0 = local_grid(encoder, frame0, device)?;
        for (_, frame_t, points_t) in rest {
            out.push(match_points(&grid0, &local_grid(encoder, frame_t, device)?, points0, points_t));
        }
    }
    Ok(out)
}

/// Each visible oracle point of the `lighting` episodes' evaluation frames matched from the lit frame into the
/// unlit render of the same tick, with the cosine similarity of its cell's feature lit and unlit; one list per
/// frame.
pub fn evaluate_relighting(encoder: &GridEncoder, episodes: &[EvalEpisode], device: &Device) -> eyre::Result<Vec<Vec<(PointMatch, f32)>>> {
    let mut out = Vec::new();
    for episode in episodes {
        for ((_, lit, points), unlit) in episode.frames.iter().zip(&episode.unlit) {
            let (lit, unlit) = (local_grid(encoder, lit, device)?, local_grid(encoder, unlit, device)?);
            let cosine = |m: &PointMatch| {
                let cell = lit.cell_at(m.query[0], m.query[1]);
                lit.row(cell).iter().zip(unlit.row(cell)).map(|(a, b)| a * b).sum::<f32>()
            };
            out.push(match_points(&lit, &unlit, points, points).into_iter().map(|m| (m, cosine(&m))).collect());
        }
    }
    Ok(out)
}

/// Lighting invariance on the held-out `lighting` episodes (module doc): a point's cell in the lit frame matched
/// into the unlit render of the same tick.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LightingReport {
    /// Frames evaluated (each lit and unlit).
    pub frames: usize,
    /// Match errors; `zero_motion` (the point's own cell) is the floor of a perfectly invariant encoder.
    pub matches: Scores,
    /// Median cosine similarity of a point's cell feature lit and unlit.
    pub cosine_pretrained: f32,
    pub cosine_random_init: f32,
}

impl LightingReport {
    pub(super) fn of(ours: &[Vec<(PointMatch, f32)>], theirs: &[Vec<(PointMatch, f32)>]) -> Self {
        let matches = |m: &[Vec<(PointMatch, f32)>]| -> Vec<Vec<PointMatch>> { m.iter().map(|f| f.iter().map(|p| p.0).collect()).collect() };
        let median_cosine = |m: &[Vec<(PointMatch, f32)>]| median(&m.iter().flatten().map(|p| p.1).collect::<Vec<_>>());
        Self {
            frames: ours.len(),
            matches: Scores::of(&matches(ours), &matches(theirs), |_| true),
            cosine_pretrained: median_cosine(ours),
            cosine_random_init: median_cosine(theirs),
        }
    }
}

/// What `glue pretrain` writes to `correspondence.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrespondenceReport {
    /// Held-out episodes (every task x variant) and (frame 0, frame t) pairs evaluated.
    pub episodes: usize,
    pub pairs: usize,
    /// Frame t of each pair as a fraction of the episode.
    pub frame_fractions: Vec<f32>,
    pub within_px: f32,
    /// Seed of the random-init encoder.
    pub random_init_seed: u64,
    /// Every point visible in both frames.
    pub all: Scores,
    /// The points that moved more than `within_px` between frame 0 and frame t (where the zero-motion guess fails).
    pub moved: Scores,
    /// Lit against unlit renders of the same ticks.
    pub lighting: LightingReport,
}

/// The three matchers on one set of points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub pretrained: CorrespondenceScore,
    /// The same architecture at a random init.
    pub random_init: CorrespondenceScore,
    /// Predicting that the point stayed in its frame-0 cell.
    pub zero_motion: CorrespondenceScore,
}

impl Scores {
    fn of(ours: &[Vec<PointMatch>], theirs: &[Vec<PointMatch>], keep: impl Fn(&PointMatch) -> bool) -> Self {
        let pick = |matches: &[Vec<PointMatch>], f: &dyn Fn(&PointMatch) -> f32| {
            let errors: Vec<f32> = matches.iter().flatten().filter(|m| keep(m)).map(f).collect();
            CorrespondenceScore::of(&errors)
        };
        Self {
            pretrained: pick(ours, &|m| m.error_px),
            random_init: pick(theirs, &|m| m.error_px),
            zero_motion: pick(ours, &|m| m.stay_error_px),
        }
    }
}

impl PointMatch {
    /// Whether the point moved more than [`WITHIN_PX`] between the two frames.
    pub fn moved(&self) -> bool {
        (self.truth[0] - self.query[0]).hypot(self.truth[1] - self.query[1]) > WITHIN_PX
    }
}

/// Matches of the pretrained and the random model with the episodes they came from, for the report and figure.
pub struct Evaluation {
    pub report: CorrespondenceReport,
    pub pretrained: Vec<Vec<PointMatch>>,
    pub random_init: Vec<Vec<PointMatch>>,
}

/// Evaluates `pretrained` against a random init of `config` (seed `random_seed`) on `episodes`.
pub fn compare(
    pretrained: &ClipVisionModel,
    config: &ClipVisionConfig,
    processor: &ImageProcessor,
    episodes: &[EvalEpisode],
    random_seed: u64,
) -> eyre::Result<Evaluation> {
    let device = Device::flex();
    let grid = |model: ClipVisionModel| GridEncoder::new(model, config.clone(), processor.clone(), 2);
    let (pretrained, random) = (grid(pretrained.clone()), grid(init_encoder(config, random_seed, &device)));
    let ours = evaluate_matches(&pretrained, episodes, &device)?;
    let theirs = evaluate_matches(&random, episodes, &device)?;
    let lighting = LightingReport::of(
        &evaluate_relighting(&pretrained, episodes, &device)?,
        &evaluate_relighting(&random, episodes, &device)?,
    );
    let report = CorrespondenceReport {
        episodes: episodes.len(),
        pairs: ours.len(),
        frame_fractions: EVAL_FRACTIONS.to_vec(),
        within_px: WITHIN_PX,
        random_init_seed: random_seed,
        all: Scores::of(&ours, &theirs, |_| true),
        moved: Scores::of(&ours, &theirs, PointMatch::moved),
        lighting,
    };
    Ok(Evaluation { report, pretrained: ours, random_init: theirs })
}

/// A figure of `rows` pairs: frame 0 with the queries, frame t with the pretrained matches, frame t with the
/// random-init matches (green within [`WITHIN_PX`], red beyond; true positions as white rings).
pub fn correspondence_figure(episodes: &[EvalEpisode], evaluation: &Evaluation, rows: usize) -> eyre::Result<RgbImage> {
    // The last pair (frame 0, last frame) of each episode, with its index in the flat pair list; the rows are
    // those with the most moved points, one per task and variant.
    let mut pairs = Vec::new();
    let mut flat = 0;
    for e in episodes {
        let n = e.frames.len().saturating_sub(1);
        if n > 0 {
            let index = flat + n - 1;
            let moved = evaluation.pretrained[index].iter().filter(|m| m.moved()).count();
            pairs.push((moved, e, index, &e.frames[n]));
        }
        flat += n;
    }
    ensure!(!pairs.is_empty(), "correspondence figure: no pairs");
    pairs.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut picked: Vec<_> = Vec::new();
    for p in &pairs {
        if picked.len() < rows && !picked.iter().any(|q: &&(usize, &EvalEpisode, usize, _)| (q.1.task, q.1.variant) == (p.1.task, p.1.variant)) {
            picked.push(p);
        }
    }
    let rows = picked.len();
    let side = episodes[0].frames[0].1.width();
    let gap = 4u32;
    let mut figure = RgbImage::from_pixel(3 * side + 2 * gap, rows as u32 * (side + gap) - gap, Rgb([255, 255, 255]));
    let query_style = PointStyle { radius: 2.5, ..PointStyle::KEYPOINTS };
    let good = PointStyle { visible: Rgb([40, 220, 60]), radius: 2.5, ..PointStyle::TRACKS };
    let bad = PointStyle { visible: Rgb([230, 30, 30]), radius: 2.5, ..PointStyle::TRACKS };
    let truth_style = PointStyle { occluded: Rgb([255, 255, 255]), radius: 4.5, ..PointStyle::TRACKS };
    for (row, (_, episode, index, (_, frame_t, _))) in picked.into_iter().enumerate() {
        let frame0 = &episode.frames[0].1;
        let y = row as u32 * (side + gap);
        let mut panel0 = frame0.clone();
        let queries: Vec<[f32; 3]> = evaluation.pretrained[*index].iter().map(|m| [m.query[0], m.query[1], 1.0]).collect();
        draw_points(&mut panel0, &queries, &query_style);
        image::imageops::replace(&mut figure, &panel0, 0, i64::from(y));
        for (column, matches) in [&evaluation.pretrained[*index], &evaluation.random_init[*index]].into_iter().enumerate() {
            let mut panel = frame_t.clone();
            let truth: Vec<[f32; 3]> = matches.iter().map(|m| [m.truth[0], m.truth[1], 0.0]).collect();
            draw_points(&mut panel, &truth, &truth_style);
            for m in matches {
                let style = if m.error_px <= WITHIN_PX { &good } else { &bad };
                draw_points(&mut panel, &[[m.matched[0], m.matched[1], 1.0]], style);
            }
            image::imageops::replace(&mut figure, &panel, i64::from((column as u32 + 1) * (side + gap)), i64::from(y));
        }
    }
    Ok(figure)
}
