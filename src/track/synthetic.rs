//! Deterministic synthetic sequences with exact ground truth, for tests and the benchmark: a smooth textured
//! plane (two octaves of value noise plus a soft checker) moved by a similarity transform about the image
//! centre, optionally with a flat-colour rectangular occluder.

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
