//! The sun's shadow map: an orthographic height map of the surfaces facing away from the sun.

use glam::{Vec2, Vec3, Vec3A};

use super::material::floor_i32;
use super::mesh::{MeshCache, SceneVertices};
use super::raster::{Fixed, edge, raster};

/// Texels left free of shadow casters around the shadow map, so lookups there need no bounds checks.
const SHADOW_MARGIN: usize = 2;

/// Orthographic projection along the sun direction: texel coordinates across it, height along it.
#[derive(Clone, Copy, Default)]
struct SunFrame {
    sun: Vec3A,
    axis_u: Vec3A,
    axis_v: Vec3A,
    origin: Vec2,
    /// Texels per metre.
    scale: f32,
    /// Metres per texel.
    texel_size: f32,
}

impl SunFrame {
    /// Fits a `size`-texel square around `points` seen along a normalised sun direction, leaving
    /// [`SHADOW_MARGIN`] texels free of them on every side.
    fn fit(sun: Vec3, size: usize, points: impl Iterator<Item = Vec3A>) -> Self {
        let axis_u = Vec3A::from(sun.any_orthonormal_vector());
        let axis_v = Vec3A::from(sun).cross(axis_u);
        let (mut lo, mut hi) = (Vec2::splat(f32::INFINITY), Vec2::splat(f32::NEG_INFINITY));
        for p in points {
            let across = Vec2::new(p.dot(axis_u), p.dot(axis_v));
            lo = lo.min(across);
            hi = hi.max(across);
        }
        let extent = (hi - lo).max_element().max(1e-3);
        let scale = (size - 2 * SHADOW_MARGIN) as f32 / extent;
        let origin = lo - Vec2::splat(SHADOW_MARGIN as f32 / scale);
        Self { sun: sun.into(), axis_u, axis_v, origin, scale, texel_size: 1.0 / scale }
    }

    /// Texel coordinates (not rounded) of a world point.
    fn texel(&self, p: Vec3A) -> Vec2 {
        (Vec2::new(p.dot(self.axis_u), p.dot(self.axis_v)) - self.origin) * self.scale
    }
}

/// Orthographic depth map seen from the sun; each texel keeps the height along the sun direction of the
/// highest surface facing away from the sun.
#[derive(Default)]
pub(super) struct ShadowMap {
    size: usize,
    frame: SunFrame,
    heights: Vec<f32>,
    /// Per scene vertex: raster position in the map and height along the sun direction.
    light_verts: Vec<(Option<Fixed>, f32)>,
}

impl ShadowMap {
    /// Renders the map for a normalised sun direction, fitted to all the scene's vertices.
    pub(super) fn build(&mut self, sun: Vec3, size: usize, scene: &SceneVertices, cache: &MeshCache) {
        let frame = SunFrame::fit(sun, size, scene.verts.iter().map(|v| v.world));
        self.size = size;
        self.frame = frame;
        self.heights.clear();
        self.heights.resize(size * size, f32::NEG_INFINITY);
        self.light_verts.clear();
        self.light_verts.extend(scene.verts.iter().map(|v| (Fixed::new(frame.texel(v.world)), v.world.dot(frame.sun))));
        for tri in scene.triangles(cache) {
            self.draw(tri);
        }
    }

    /// Rasterizes a triangle if it faces away from the sun (positive area means it faces the sun).
    fn draw(&mut self, tri: [u32; 3]) {
        let [(Some(a), ha), (Some(b), hb), (Some(c), hc)] = tri.map(|i| self.light_verts[i as usize]) else {
            return;
        };
        if edge(a, b, c.x, c.y) >= 0 {
            return;
        }
        let heights = &mut self.heights;
        raster([a, c, b], self.size, self.size, |texel, l0, l1, l2| {
            let h = l0 * ha + l1 * hc + l2 * hb;
            heights[texel] = heights[texel].max(h);
        });
    }

    /// Fraction (0..1) of sunlight reaching surface point `p` with unit normal `n`, bilinearly filtered over the
    /// four nearest texels. The point is pushed one texel along its normal and one texel towards the sun.
    pub(super) fn light(&self, p: Vec3A, n: Vec3A) -> f32 {
        let texel_size = self.frame.texel_size;
        let q = p + n * texel_size;
        let height = q.dot(self.frame.sun) + texel_size;
        let t = self.frame.texel(q) - Vec2::splat(0.5);
        let (x, y) = (floor_i32(t.x), floor_i32(t.y));
        let last = self.size as i32 - 1;
        if x < 0 || y < 0 || x >= last || y >= last {
            return 1.0;
        }
        let i = y as usize * self.size + x as usize;
        let lit = |texel: usize| if height >= self.heights[texel] { 1.0 } else { 0.0 };
        let f = t - Vec2::new(x as f32, y as f32);
        let top = lit(i) + (lit(i + 1) - lit(i)) * f.x;
        let bottom = lit(i + self.size) + (lit(i + self.size + 1) - lit(i + self.size)) * f.x;
        top + (bottom - top) * f.y
    }
}
