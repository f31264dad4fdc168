//! The fixed-point rasterizer (edge functions, top-left rule) and the camera's visibility pass: near-plane
//! clipping, back-face culling and the per-pixel nearest triangle with perspective-correct barycentrics.

use glam::{Vec2, Vec3};

use super::camera::ViewBasis;
use super::mesh::{MeshCache, SceneVertices, SurfaceVertex, bounding_radius};
use super::{Drawable, NEAR};

/// Fixed-point sub-pixel resolution of the rasterizer: 2^4 = 16 steps per pixel.
const SUB_BITS: u32 = 4;
const SUB: i64 = 1 << SUB_BITS;
const HALF_SUB: i64 = SUB / 2;
/// Projected coordinates (pixels or texels) beyond this magnitude are dropped so fixed-point edge functions
/// cannot overflow i64.
const COORD_LIMIT: f32 = 4_194_304.0;
/// Sample value of a pixel that no triangle covers.
pub(super) const NO_TRIANGLE: u32 = u32::MAX;

/// A point in fixed-point raster coordinates (1/16 pixel).
#[derive(Clone, Copy, Debug)]
pub(super) struct Fixed {
    pub(super) x: i64,
    pub(super) y: i64,
}

impl Fixed {
    /// Rounds pixel coordinates to the sub-pixel grid; `None` beyond [`COORD_LIMIT`] or for NaN.
    pub(super) fn new(p: Vec2) -> Option<Self> {
        let in_range = p.x.abs() <= COORD_LIMIT && p.y.abs() <= COORD_LIMIT;
        let scaled = (p * SUB as f32).round();
        in_range.then_some(Self { x: scaled.x as i64, y: scaled.y as i64 })
    }
}

/// Twice the signed area of (a, b, p) in raster coordinates; positive when p is right of a→b with y down.
pub(super) fn edge(a: Fixed, b: Fixed, px: i64, py: i64) -> i64 {
    (b.x - a.x) * (py - a.y) - (b.y - a.y) * (px - a.x)
}

/// Top-left rule for a triangle with positive [`edge`] area: a top edge is horizontal going right, a left edge
/// goes up.
fn is_top_left(a: Fixed, b: Fixed) -> bool {
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    dy < 0 || (dy == 0 && dx > 0)
}

/// First and last pixel whose centre lies within the fixed-point range `[lo, hi]`, clamped to `0..size`.
fn pixel_span(lo: i64, hi: i64, size: usize) -> (i64, i64) {
    let first = -((HALF_SUB - lo).div_euclid(SUB));
    let last = (hi - HALF_SUB).div_euclid(SUB);
    (first.max(0), last.min(size as i64 - 1))
}

/// Calls `visit(pixel index, l0, l1, l2)` with the screen-space barycentrics of every pixel centre covered by a
/// triangle of positive area, following the top-left rule so shared edges are drawn exactly once.
pub(super) fn raster(v: [Fixed; 3], width: usize, height: usize, mut visit: impl FnMut(usize, f32, f32, f32)) {
    let area = edge(v[0], v[1], v[2].x, v[2].y);
    let (x0, x1) = pixel_span(v[0].x.min(v[1].x).min(v[2].x), v[0].x.max(v[1].x).max(v[2].x), width);
    let (y0, y1) = pixel_span(v[0].y.min(v[1].y).min(v[2].y), v[0].y.max(v[1].y).max(v[2].y), height);
    if area <= 0 || x0 > x1 || y0 > y1 {
        return;
    }
    let (px, py) = (x0 * SUB + HALF_SUB, y0 * SUB + HALF_SUB);
    let edges = [(v[1], v[2]), (v[2], v[0]), (v[0], v[1])];
    // Edges that are not top-left lose one unit so that centres exactly on them fail the `>= 0` test; the unit
    // is added back for the barycentrics.
    let bias = edges.map(|(a, b)| i64::from(!is_top_left(a, b)));
    let mut row = [0, 1, 2].map(|k| edge(edges[k].0, edges[k].1, px, py) - bias[k]);
    let step_x = edges.map(|(a, b)| (a.y - b.y) * SUB);
    let step_y = edges.map(|(a, b)| (b.x - a.x) * SUB);
    let inv_area = 1.0 / area as f32;
    for y in y0..=y1 {
        let line = y as usize * width;
        let mut w = row;
        for x in x0..=x1 {
            if (w[0] | w[1] | w[2]) >= 0 {
                let l0 = (w[0] + bias[0]) as f32 * inv_area;
                let l1 = (w[1] + bias[1]) as f32 * inv_area;
                visit(line + x as usize, l0, l1, (w[2] + bias[2]) as f32 * inv_area);
            }
            for k in 0..3 {
                w[k] += step_x[k];
            }
        }
        for k in 0..3 {
            row[k] += step_y[k];
        }
    }
}

/// A vertex in the camera's view space and, when in front of the near plane, on the raster grid.
#[derive(Clone, Copy)]
struct ProjVertex {
    view: Vec3,
    inv_depth: f32,
    fixed: Option<Fixed>,
}

impl ProjVertex {
    /// Projects a view-space point; only points at or beyond [`NEAR`] get raster coordinates.
    fn from_view(basis: &ViewBasis, view: Vec3) -> Self {
        let fixed = if view.z >= NEAR { Fixed::new(basis.screen_of(view)) } else { None };
        Self { view, inv_depth: 1.0 / view.z, fixed }
    }
}

/// The nearest surface at a pixel: its triangle and perspective-correct barycentrics of vertices 1 and 2.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    pub(super) inv_depth: f32,
    pub(super) tri: u32,
    pub(super) b1: f32,
    pub(super) b2: f32,
}

impl Sample {
    const EMPTY: Sample = Sample { inv_depth: 0.0, tri: NO_TRIANGLE, b1: 0.0, b2: 0.0 };
}

/// A rasterized triangle: vertex indices into the scene's vertices and the drawable it belongs to.
#[derive(Clone, Copy)]
pub(super) struct TriRecord {
    pub(super) verts: [u32; 3],
    pub(super) item: u32,
}

/// The camera's visibility pass: projected vertices, drawn triangles and the per-pixel nearest sample.
#[derive(Default)]
pub(super) struct CameraPass {
    pub(super) width: usize,
    pub(super) height: usize,
    proj: Vec<ProjVertex>,
    pub(super) tris: Vec<TriRecord>,
    pub(super) samples: Vec<Sample>,
}

impl CameraPass {
    /// Projects the scene's vertices and rasterizes the triangles of every drawable that may be in view.
    pub(super) fn run(&mut self, view: &ViewBasis, items: &[Drawable], cache: &MeshCache, scene: &mut SceneVertices) {
        self.samples.clear();
        self.samples.resize(self.width * self.height, Sample::EMPTY);
        self.tris.clear();
        self.proj.clear();
        self.proj.extend(scene.verts.iter().map(|v| ProjVertex::from_view(view, view.view_of(v.world.into()))));
        for (item_index, (item, geometry)) in items.iter().zip(&scene.items).enumerate() {
            if view.sphere_outside(item.pose.translation, bounding_radius(&item.shape)) {
                continue;
            }
            for tri in &cache.meshes[geometry.mesh].triangles {
                self.triangle(view, &mut scene.verts, tri.map(|i| i + geometry.base), item_index as u32);
            }
        }
    }

    /// Draws one triangle, clipping it against the near plane when it crosses it.
    fn triangle(&mut self, view: &ViewBasis, verts: &mut Vec<SurfaceVertex>, tri: [u32; 3], item: u32) {
        let in_front = tri.map(|i| self.proj[i as usize].view.z >= NEAR);
        match in_front.iter().filter(|&&f| f).count() {
            3 => self.draw(tri, item),
            0 => {}
            _ => self.clip_near(view, verts, tri, in_front, item),
        }
    }

    /// Sutherland-Hodgman against the near plane; the kept polygon (3 or 4 vertices) is drawn as a fan.
    fn clip_near(
        &mut self,
        view: &ViewBasis,
        verts: &mut Vec<SurfaceVertex>,
        tri: [u32; 3],
        in_front: [bool; 3],
        item: u32,
    ) {
        let mut polygon = [0u32; 4];
        let mut n = 0;
        for k in 0..3 {
            let next = (k + 1) % 3;
            if in_front[k] {
                polygon[n] = tri[k];
                n += 1;
            }
            if in_front[k] != in_front[next] {
                polygon[n] = self.split(view, verts, tri[k], tri[next]);
                n += 1;
            }
        }
        for k in 1..n - 1 {
            self.draw([polygon[0], polygon[k], polygon[k + 1]], item);
        }
    }

    /// Adds the vertex where edge a→b meets the near plane and returns its index.
    fn split(&mut self, view: &ViewBasis, verts: &mut Vec<SurfaceVertex>, a: u32, b: u32) -> u32 {
        let (pa, pb) = (self.proj[a as usize].view, self.proj[b as usize].view);
        let t = (NEAR - pa.z) / (pb.z - pa.z);
        let at_near = pa.lerp(pb, t).truncate().extend(NEAR);
        verts.push(verts[a as usize].lerp(&verts[b as usize], t));
        self.proj.push(ProjVertex::from_view(view, at_near));
        (verts.len() - 1) as u32
    }

    /// Rasterizes a triangle that lies in front of the near plane, unless it faces away from the camera.
    fn draw(&mut self, tri: [u32; 3], item: u32) {
        let [Some(a), Some(b), Some(c)] = tri.map(|i| self.proj[i as usize].fixed) else {
            return;
        };
        // Counter-clockwise from the viewer becomes negative area once y points down.
        if edge(a, b, c.x, c.y) >= 0 {
            return;
        }
        let verts = [tri[0], tri[2], tri[1]];
        let id = self.tris.len() as u32;
        self.tris.push(TriRecord { verts, item });
        let iz = verts.map(|i| self.proj[i as usize].inv_depth);
        let samples = &mut self.samples;
        raster([a, c, b], self.width, self.height, |pixel, l0, l1, l2| {
            let inv_depth = l0 * iz[0] + l1 * iz[1] + l2 * iz[2];
            let sample = &mut samples[pixel];
            if inv_depth > sample.inv_depth {
                let depth = 1.0 / inv_depth;
                *sample = Sample { inv_depth, tri: id, b1: l1 * iz[1] * depth, b2: l2 * iz[2] * depth };
            }
        });
    }
}
