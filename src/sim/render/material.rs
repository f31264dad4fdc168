//! Surface appearance: albedo colour, highlight strength and procedural patterns in the object's local frame.

use std::f32::consts::TAU;

use glam::Vec3;

/// Checker lattice shift (an irrational fraction of a cell) so that box faces at whole or half multiples of a
/// cell do not sit on a cell boundary.
pub(super) const CHECKER_OFFSET: f32 = std::f32::consts::FRAC_1_PI;

/// Albedo modulation, evaluated per pixel at the object-local surface point, so textures move with the object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// Uniform colour.
    Plain,
    /// 3D checkerboard of cubic cells of side `cell` (metres); dark cells have albedo scaled by `1 - contrast`.
    Checker { cell: f32, contrast: f32 },
    /// Two octaves of deterministic value noise with feature size `scale` (metres); albedo is scaled by
    /// `1 + amplitude * n` with `n` in [-1, 1].
    Noise { scale: f32, amplitude: f32 },
    /// Soft-edged bands across the local (1, 1, 1) diagonal with period `period` (metres); dark bands have albedo
    /// scaled by `1 - contrast`.
    Stripes { period: f32, contrast: f32 },
}

impl Pattern {
    /// Albedo multiplier at an object-local point (never negative).
    pub fn factor(&self, local: Vec3) -> f32 {
        match *self {
            Pattern::Plain => 1.0,
            Pattern::Checker { cell, contrast } => checker(local / cell, contrast),
            Pattern::Noise { scale, amplitude } => (1.0 + amplitude * fractal_noise(local / scale)).max(0.0),
            Pattern::Stripes { period, contrast } => stripes(local, period, contrast),
        }
    }
}

/// Checker factor at a point given in cell units.
fn checker(cell_coords: Vec3, contrast: f32) -> f32 {
    let c = cell_coords + CHECKER_OFFSET;
    let parity = (floor_i32(c.x) ^ floor_i32(c.y) ^ floor_i32(c.z)) & 1;
    if parity == 0 { 1.0 } else { (1.0 - contrast).max(0.0) }
}

/// Stripe factor: a clipped sine across the local (1, 1, 1) diagonal, so bands have soft, anti-aliased edges.
fn stripes(local: Vec3, period: f32, contrast: f32) -> f32 {
    let along = (local.x + local.y + local.z) / (3f32.sqrt() * period);
    let band = (0.5 + 1.5 * (TAU * along).sin()).clamp(0.0, 1.0);
    (1.0 - contrast * band).max(0.0)
}

/// Two octaves of value noise (the second at about twice the frequency, shifted), in [-1, 1].
fn fractal_noise(p: Vec3) -> f32 {
    0.65 * value_noise(p) + 0.35 * value_noise(p * 2.03 + Vec3::splat(17.17))
}

/// `x.floor() as i32` without a libm call (saturating like `as`).
pub(super) fn floor_i32(x: f32) -> i32 {
    let i = x as i32;
    i - i32::from(x < i as f32)
}

/// Value noise: random values in [-1, 1] at integer lattice points, blended with a quintic fade.
fn value_noise(p: Vec3) -> f32 {
    let (ix, iy, iz) = (floor_i32(p.x), floor_i32(p.y), floor_i32(p.z));
    let f = p - Vec3::new(ix as f32, iy as f32, iz as f32);
    let fade = f * f * f * (f * (f * 6.0 - 15.0) + 10.0);
    let axis = |i: i32, prime: u32| ((i as u32).wrapping_mul(prime), (i as u32).wrapping_add(1).wrapping_mul(prime));
    let (x0, x1) = axis(ix, 0x8da6_b343);
    let (y0, y1) = axis(iy, 0xd816_3841);
    let (z0, z1) = axis(iz, 0xcb1a_b31f);
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
    let along_x = |hy: u32, hz: u32| lerp(lattice_value(x0 ^ hy ^ hz), lattice_value(x1 ^ hy ^ hz), fade.x);
    let face = |hz: u32| lerp(along_x(y0, hz), along_x(y1, hz), fade.y);
    lerp(face(z0), face(z1), fade.z)
}

/// A value in [-1, 1] from a lattice point's combined coordinate hash (its top 24 bits after mixing; converted
/// through i32, which is much cheaper than u32 to f32).
fn lattice_value(hash: u32) -> f32 {
    let h = (hash ^ (hash >> 15)).wrapping_mul(0x2c1b_3c6d);
    (h >> 8) as i32 as f32 * (2.0 / (1u32 << 24) as f32) - 1.0
}

/// Surface appearance of a drawable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Material {
    /// Linear RGB albedo in 0..1.
    pub color: Vec3,
    /// Strength of the Blinn-Phong highlight in 0..1 (the exponent is fixed).
    pub specular: f32,
    /// Albedo modulation in the object's local frame.
    pub pattern: Pattern,
}

impl Material {
    /// A matte, untextured material.
    pub fn plain(color: Vec3) -> Self {
        Self { color, specular: 0.0, pattern: Pattern::Plain }
    }
}
