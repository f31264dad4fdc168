//! Images as the tracker sees them: grayscale pyramids with Scharr gradients, bilinear window sampling, and the
//! Gaussian-weighted first-frame templates the visibility checks compare against (normalised cross-correlation).

use super::{FrameView, KltConfig};

#[derive(Clone, Debug)]
pub(super) struct Level {
    pub(super) w: usize,
    pub(super) h: usize,
    pub(super) img: Vec<f32>,
    pub(super) gx: Vec<f32>,
    pub(super) gy: Vec<f32>,
}

impl Level {
    fn new(w: usize, h: usize) -> Self {
        Level { w, h, img: vec![0.0; w * h], gx: vec![0.0; w * h], gy: vec![0.0; w * h] }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Pyramid {
    pub(super) levels: Vec<Level>,
    tmp: Vec<f32>,
}

/// Levels actually used for a `w`x`h` frame: the coarsest keeps at least 16 px on its short side.
pub(super) fn effective_levels(requested: usize, w: usize, h: usize) -> usize {
    let mut n = 1;
    while n < requested && w.min(h) >> n >= 16 {
        n += 1;
    }
    n
}

impl Pyramid {
    pub(super) fn new(levels: usize, w: usize, h: usize) -> Self {
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
    pub(super) fn build(&mut self, frame: &FrameView<'_>) {
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
pub(super) fn sample(img: &[f32], w: usize, h: usize, c: [f32; 2], r: usize, out: &mut [f32]) {
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

pub(super) fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

/// Gaussian weights of a `(2r+1)²` patch, standard deviation `sigma` px, summing to 1.
pub(super) fn gaussian_weights(r: usize, sigma: f32) -> Vec<f32> {
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
pub(super) struct Template {
    values: Vec<f32>,
    mean: f32,
    std: f32,
}

impl Template {
    pub(super) fn new(patch: &[f32], weights: &[f32]) -> Self {
        let m: f32 = patch.iter().zip(weights).map(|(v, w)| v * w).sum();
        let var: f32 = patch.iter().zip(weights).map(|(v, w)| w * (v - m) * (v - m)).sum();
        let std = var.sqrt();
        let values = if std > 0.0 { patch.iter().zip(weights).map(|(v, w)| w * (v - m) / std).collect() } else { vec![0.0; patch.len()] };
        Template { values, mean: m, std }
    }

    /// Weighted NCC of `patch` with the template; flat patches and templates, and the brightness ratio, follow the
    /// rules of the module doc.
    pub(super) fn ncc(&self, patch: &[f32], weights: &[f32], config: &KltConfig) -> f32 {
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
            // A flat patch where the template has texture: a flat-colour occluder.
            (false, true) => 0.0,
            // A faint template (a plain surface) may gain texture from uneven light (a moving coloured spot): the
            // NCC judges whether the pattern is still the template's (an all-flat template scores 0).
            (true, false) | (false, false) => {
                let gain = (sum + 10.0) / (self.mean + 10.0);
                if gain > config.max_gain || gain * config.max_gain < 1.0 {
                    return 0.0;
                }
                (dot / std).clamp(-1.0, 1.0)
            }
        }
    }
}
