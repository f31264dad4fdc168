//! Tessellation of the solids into local-frame triangle meshes (cached per shape and level of detail) and the
//! frame's world-space vertices.

use std::collections::HashMap;
use std::f32::consts::{FRAC_PI_2, TAU};

use glam::{Vec2, Vec3, Vec3A};

use super::Drawable;
use super::camera::ViewBasis;
use crate::sim::shape::Shape;

/// Tessellation levels of curved solids: segments around the axis (a sphere has half as many latitude steps
/// from pole to pole, a capsule cap a quarter). Each drawable gets the coarsest level whose chordal error stays
/// under half a pixel, see [`segments_for`].
pub(super) const LOD_SEGMENTS: [u32; 4] = [12, 16, 24, 32];
/// The mesh cache is emptied before a frame once it holds more meshes than this, bounding its memory when shape
/// sizes are randomised per episode.
const MAX_CACHED_MESHES: usize = 256;

/// Radius of a sphere about the local origin that contains the shape.
pub(super) fn bounding_radius(shape: &Shape) -> f32 {
    match *shape {
        Shape::Box { half } => half.length(),
        Shape::Cylinder { radius, half_height } => Vec2::new(radius, half_height).length(),
        Shape::Sphere { radius } => radius,
        Shape::Capsule { radius, half_height } => radius + half_height,
        Shape::Ellipsoid { radii } => radii.max_element(),
    }
}

/// Radius that bounds the tessellation error of a curved solid: with `n` segments its chordal error is at most
/// `radius * (1 - cos(pi / n))` (for an ellipsoid, a stretched sphere, the largest semi-axis); `None` for a box.
fn tessellation_radius(shape: &Shape) -> Option<f32> {
    match *shape {
        Shape::Box { .. } => None,
        Shape::Cylinder { radius, .. } | Shape::Sphere { radius } | Shape::Capsule { radius, .. } => Some(radius),
        Shape::Ellipsoid { radii } => Some(radii.max_element()),
    }
}

/// The coarsest level of [`LOD_SEGMENTS`] whose chordal error `r (1 - cos(pi / n)) ≈ pi² r / (2 n²)` is at most
/// half a pixel for a tessellation radius spanning `radius_px` pixels, i.e. `n >= pi * sqrt(radius_px)`.
fn segments_for(radius_px: f32) -> u32 {
    let needed = std::f32::consts::PI * radius_px.max(0.0).sqrt();
    let finest = LOD_SEGMENTS[LOD_SEGMENTS.len() - 1];
    LOD_SEGMENTS.into_iter().find(|&n| n as f32 >= needed).unwrap_or(finest)
}

/// Cache key: the shape kind, the exact bits of its parameters and the tessellation level (0 for boxes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct MeshKey {
    kind: u8,
    bits: [u32; 3],
    segments: u32,
}

impl MeshKey {
    fn of(shape: &Shape, segments: u32) -> Self {
        let (kind, params) = match *shape {
            Shape::Box { half } => (0, half),
            Shape::Cylinder { radius, half_height } => (1, Vec3::new(radius, half_height, 0.0)),
            Shape::Sphere { radius } => (2, Vec3::new(radius, 0.0, 0.0)),
            Shape::Capsule { radius, half_height } => (3, Vec3::new(radius, half_height, 0.0)),
            Shape::Ellipsoid { radii } => (4, radii),
        };
        let segments = if kind == 0 { 0 } else { segments };
        Self { kind, bits: params.to_array().map(f32::to_bits), segments }
    }
}

/// One ring of a surface of revolution about local Z: its radius, height and the (radial, z) normal.
#[derive(Clone, Copy)]
struct Ring {
    radius: f32,
    z: f32,
    normal: Vec2,
}

/// Rings along a circular arc of the given radius centred on the axis at `z_centre`, latitude `from..=to`.
fn arc(radius: f32, z_centre: f32, from: f32, to: f32, steps: u32) -> Vec<Ring> {
    (0..=steps)
        .map(|i| {
            let (sin, cos) = (from + (to - from) * i as f32 / steps as f32).sin_cos();
            let cos = if cos.abs() < 1e-6 { 0.0 } else { cos };
            Ring { radius: radius * cos, z: z_centre + radius * sin, normal: Vec2::new(cos, sin) }
        })
        .collect()
}

/// A triangle mesh in a shape's local frame; triangles wind counter-clockwise seen from outside.
#[derive(Default)]
pub(super) struct Mesh {
    pub(super) positions: Vec<Vec3>,
    pub(super) normals: Vec<Vec3>,
    pub(super) triangles: Vec<[u32; 3]>,
}

impl Mesh {
    /// Tessellates `shape` with `segments` around the axis of curved solids (a multiple of 4).
    pub(super) fn of(shape: &Shape, segments: u32) -> Self {
        let pole_to_pole = |radius| arc(radius, 0.0, -FRAC_PI_2, FRAC_PI_2, segments / 2);
        match *shape {
            Shape::Box { half } => Self::cuboid(half),
            Shape::Cylinder { radius, half_height } => Self::cylinder(radius, half_height, segments),
            Shape::Sphere { radius } => Self::lathe(&pole_to_pole(radius), segments),
            Shape::Capsule { radius, half_height } => {
                let mut profile = arc(radius, -half_height, -FRAC_PI_2, 0.0, segments / 4);
                profile.extend(arc(radius, half_height, 0.0, FRAC_PI_2, segments / 4));
                Self::lathe(&profile, segments)
            }
            Shape::Ellipsoid { radii } => {
                let mut mesh = Self::lathe(&pole_to_pole(1.0), segments);
                mesh.stretch(radii);
                mesh
            }
        }
    }

    /// Appends a vertex and returns its index.
    fn vertex(&mut self, position: Vec3, normal: Vec3) -> u32 {
        self.positions.push(position);
        self.normals.push(normal);
        (self.positions.len() - 1) as u32
    }

    /// Box with flat faces: four vertices per face.
    fn cuboid(half: Vec3) -> Self {
        let mut mesh = Self::default();
        for axis in 0..3 {
            for sign in [1.0, -1.0] {
                let normal = Vec3::AXES[axis] * sign;
                let (mut u, mut v) = (Vec3::AXES[(axis + 1) % 3], Vec3::AXES[(axis + 2) % 3]);
                if sign < 0.0 {
                    std::mem::swap(&mut u, &mut v);
                }
                let corners = [-u - v, u - v, u + v, v - u].map(|c| mesh.vertex((normal + c) * half, normal));
                mesh.triangles.push([corners[0], corners[1], corners[2]]);
                mesh.triangles.push([corners[0], corners[2], corners[3]]);
            }
        }
        mesh
    }

    /// Smooth side of revolution plus flat caps.
    fn cylinder(radius: f32, half_height: f32, segments: u32) -> Self {
        let side = |z| Ring { radius, z, normal: Vec2::X };
        let mut mesh = Self::lathe(&[side(-half_height), side(half_height)], segments);
        mesh.cap(radius, half_height, 1.0, segments);
        mesh.cap(radius, -half_height, -1.0, segments);
        mesh
    }

    /// Flat disc at height `z` facing `sign * Z`.
    fn cap(&mut self, radius: f32, z: f32, sign: f32, segments: u32) {
        let normal = Vec3::Z * sign;
        let centre = self.vertex(Vec3::new(0.0, 0.0, z), normal);
        for j in 0..segments {
            let (sin, cos) = (TAU * j as f32 / segments as f32).sin_cos();
            self.vertex(Vec3::new(radius * cos, radius * sin, z), normal);
        }
        for j in 0..segments {
            let (a, b) = (centre + 1 + j, centre + 1 + (j + 1) % segments);
            self.triangles.push(if sign > 0.0 { [centre, a, b] } else { [centre, b, a] });
        }
    }

    /// Surface of revolution through rings ordered bottom to top, with smooth normals.
    fn lathe(profile: &[Ring], segments: u32) -> Self {
        let mut mesh = Self::default();
        for ring in profile {
            for j in 0..segments {
                let (sin, cos) = (TAU * j as f32 / segments as f32).sin_cos();
                let position = Vec3::new(ring.radius * cos, ring.radius * sin, ring.z);
                let normal = Vec3::new(ring.normal.x * cos, ring.normal.x * sin, ring.normal.y);
                mesh.vertex(position, normal);
            }
        }
        for (i, pair) in profile.windows(2).enumerate() {
            let (low, high) = (i as u32 * segments, (i as u32 + 1) * segments);
            for j in 0..segments {
                let next = (j + 1) % segments;
                let (a, b, c, d) = (low + j, low + next, high + next, high + j);
                if pair[0].radius > 0.0 {
                    mesh.triangles.push([a, b, c]);
                }
                if pair[1].radius > 0.0 {
                    mesh.triangles.push([a, c, d]);
                }
            }
        }
        mesh
    }

    /// Scales positions by `radii` and transforms normals by the inverse scale (unit sphere to ellipsoid).
    fn stretch(&mut self, radii: Vec3) {
        for p in &mut self.positions {
            *p *= radii;
        }
        for n in &mut self.normals {
            *n = (*n / radii).normalize_or_zero();
        }
    }
}

/// Tessellated meshes, shared across frames.
#[derive(Default)]
pub(super) struct MeshCache {
    pub(super) meshes: Vec<Mesh>,
    index: HashMap<MeshKey, usize>,
}

impl MeshCache {
    /// Index in `meshes` of the shape's mesh at this level of detail, tessellating it on first use.
    fn mesh_id(&mut self, shape: &Shape, segments: u32) -> usize {
        let meshes = &mut self.meshes;
        *self.index.entry(MeshKey::of(shape, segments)).or_insert_with(|| {
            meshes.push(Mesh::of(shape, segments));
            meshes.len() - 1
        })
    }

    /// Empties the cache once it holds more than [`MAX_CACHED_MESHES`] meshes.
    pub(super) fn trim(&mut self) {
        if self.meshes.len() > MAX_CACHED_MESHES {
            self.meshes.clear();
            self.index.clear();
        }
    }
}

/// A vertex placed in the world, with what shading needs.
#[derive(Clone, Copy)]
pub(super) struct SurfaceVertex {
    pub(super) world: Vec3A,
    pub(super) normal: Vec3A,
    pub(super) local: Vec3A,
}

impl SurfaceVertex {
    /// Linear blend of all attributes (`t = 0` gives `self`).
    pub(super) fn lerp(&self, other: &Self, t: f32) -> Self {
        Self {
            world: self.world.lerp(other.world, t),
            normal: self.normal.lerp(other.normal, t),
            local: self.local.lerp(other.local, t),
        }
    }
}

/// Where a drawable's mesh and vertices are this frame.
#[derive(Clone, Copy)]
pub(super) struct ItemGeometry {
    pub(super) mesh: usize,
    /// Index of its first vertex in [`SceneVertices::verts`].
    pub(super) base: u32,
}

/// All drawables' vertices in world space for the current frame.
#[derive(Default)]
pub(super) struct SceneVertices {
    pub(super) items: Vec<ItemGeometry>,
    pub(super) verts: Vec<SurfaceVertex>,
}

impl SceneVertices {
    /// Places every drawable's mesh, tessellated finely enough for its size in `view`.
    pub(super) fn build(&mut self, items: &[Drawable], cache: &mut MeshCache, view: &ViewBasis) {
        self.items.clear();
        self.verts.clear();
        for item in items {
            let radius_px = tessellation_radius(&item.shape).map_or(0.0, |r| view.pixels_across(item, r));
            let mesh = cache.mesh_id(&item.shape, segments_for(radius_px));
            let base = self.verts.len() as u32;
            let m = &cache.meshes[mesh];
            self.verts.extend(m.positions.iter().zip(&m.normals).map(|(&local, &normal)| SurfaceVertex {
                world: item.pose.transform_point(local).into(),
                normal: (item.pose.rotation * normal).into(),
                local: local.into(),
            }));
            self.items.push(ItemGeometry { mesh, base });
        }
    }

    /// Every triangle of every drawable, with vertex indices into `verts`.
    pub(super) fn triangles<'a>(&'a self, cache: &'a MeshCache) -> impl Iterator<Item = [u32; 3]> + 'a {
        self.items.iter().flat_map(move |geometry| {
            cache.meshes[geometry.mesh].triangles.iter().map(move |t| t.map(|i| i + geometry.base))
        })
    }
}
