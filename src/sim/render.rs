//! The simulator's camera: a software rasterizer that renders, in one pass, a lit RGB image, an instance
//! segmentation and a view-depth map of a list of solids, and answers oracle point-visibility queries.
//!
//! Pipeline of one frame:
//! 1. every [`Shape`] is tessellated into a local-frame triangle mesh, cached on its exact parameter bits and
//!    its level of detail (curved solids get 12 to 32 segments around, the fewest that keep the chordal error
//!    under half a pixel at their current distance);
//! 2. when the sun casts shadows, the faces of all solids that look away from the sun are rasterized into an
//!    orthographic shadow map fitted to the scene (back-face shadow maps do not self-shadow lit faces, so only a
//!    small bias is needed);
//! 3. triangles are clipped against the near plane, back-face culled and rasterized with fixed-point edge
//!    functions (1/16 pixel, top-left fill rule) into a visibility buffer that keeps, per pixel, the nearest
//!    triangle and its perspective-correct barycentrics (z-buffer on inverse view depth);
//! 4. every covered pixel is shaded exactly once: pattern albedo at the object-local point, hemispheric ambient,
//!    Lambert + Blinn-Phong from the sun and the point lights, then sRGB encoding.
//!
//! Conventions: world frame Z-up, metres. Image x grows right and y grows down; pixel `(i, j)` covers
//! `[i, i + 1) x [j, j + 1)`, so its centre is `(i + 0.5, j + 0.5)`. Depth is view depth (distance along the
//! optical axis), not ray length.

use std::collections::HashMap;
use std::f32::consts::{FRAC_PI_2, TAU};

use glam::{Vec2, Vec3, Vec3A};

use crate::sim::shape::{Pose, Shape};

/// Nearest view depth that is drawn or projected (metres); geometry closer than this is clipped away.
pub const NEAR: f32 = 0.01;
/// Absolute part of the depth tolerance of [`Frame::visibility`] (metres).
pub const VISIBILITY_TOLERANCE_ABS: f32 = 0.01;
/// Relative part of the depth tolerance of [`Frame::visibility`] (fraction of the point's view depth).
pub const VISIBILITY_TOLERANCE_REL: f32 = 0.01;
/// Distance (metres) that softens the inverse-square falloff of point lights near their centre.
pub const POINT_LIGHT_SOFTENING: f32 = 0.1;

/// Tessellation levels of curved solids: segments around the axis (a sphere has half as many latitude steps
/// from pole to pole, a capsule cap a quarter). Each drawable gets the coarsest level whose chordal error stays
/// under half a pixel, see [`segments_for`].
const LOD_SEGMENTS: [u32; 4] = [12, 16, 24, 32];
/// The mesh cache is emptied before a frame once it holds more meshes than this, bounding its memory when shape
/// sizes are randomised per episode.
const MAX_CACHED_MESHES: usize = 256;
/// Blinn-Phong exponent shared by all materials, 2^5 = 32, applied as repeated squaring.
const SHININESS_SQUARINGS: u32 = 5;
/// Linear colours of the background wall at the top and bottom image rows.
const WALL_TOP: Vec3 = Vec3::new(0.50, 0.52, 0.55);
const WALL_BOTTOM: Vec3 = Vec3::new(0.33, 0.34, 0.36);
/// Checker lattice shift (an irrational fraction of a cell) so that box faces at whole or half multiples of a
/// cell do not sit on a cell boundary.
const CHECKER_OFFSET: f32 = std::f32::consts::FRAC_1_PI;
/// Fixed-point sub-pixel resolution of the rasterizer: 2^4 = 16 steps per pixel.
const SUB_BITS: u32 = 4;
const SUB: i64 = 1 << SUB_BITS;
const HALF_SUB: i64 = SUB / 2;
/// Projected coordinates (pixels or texels) beyond this magnitude are dropped so fixed-point edge functions
/// cannot overflow i64.
const COORD_LIMIT: f32 = 4_194_304.0;
/// Texels left free of shadow casters around the shadow map, so lookups there need no bounds checks.
const SHADOW_MARGIN: usize = 2;
/// Entries of the linear-to-sRGB lookup table.
const SRGB_LUT_SIZE: usize = 4096;
/// Sample value of a pixel that no triangle covers.
const NO_TRIANGLE: u32 = u32::MAX;

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
fn floor_i32(x: f32) -> i32 {
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

/// One solid to draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drawable {
    /// The solid in its local frame.
    pub shape: Shape,
    /// Placement of the local frame in the world.
    pub pose: Pose,
    /// Surface appearance.
    pub material: Material,
    /// Instance id written to the segmentation; 0 is reserved for the background.
    pub instance: u8,
}

/// A pinhole camera with square pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    /// Optical centre, in world coordinates.
    pub eye: Vec3,
    /// A world point on the optical axis (projects to the image centre).
    pub target: Vec3,
    /// Approximate up direction; it only needs not to be parallel to the viewing direction.
    pub up: Vec3,
    /// Vertical field of view in degrees.
    pub fov_y_deg: f32,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl Camera {
    /// Projects a world point to `(x px, y px, view depth m)`, with pixel centres at `+0.5`; `None` when the point
    /// is closer than [`NEAR`] or behind the camera. Points outside the image still project.
    pub fn project(&self, p: Vec3) -> Option<Vec3> {
        let view = ViewBasis::new(self);
        let v = view.view_of(p);
        (v.z >= NEAR).then(|| view.screen_of(v).extend(v.z))
    }
}

/// Orthonormal camera frame and intrinsics: view coordinates are (right, up, forward), so view z is depth.
#[derive(Clone, Copy)]
struct ViewBasis {
    eye: Vec3,
    right: Vec3,
    up: Vec3,
    forward: Vec3,
    focal: f32,
    centre: Vec2,
}

impl ViewBasis {
    /// The camera's frame; a degenerate `up` (parallel to the view direction) is replaced by any perpendicular.
    fn new(camera: &Camera) -> Self {
        let forward = (camera.target - camera.eye).try_normalize().unwrap_or(Vec3::X);
        let right = forward.cross(camera.up).try_normalize().unwrap_or_else(|| forward.any_orthonormal_vector());
        let half_fov = (0.5 * camera.fov_y_deg).to_radians();
        Self {
            eye: camera.eye,
            right,
            up: right.cross(forward),
            forward,
            focal: 0.5 * camera.height as f32 / half_fov.tan(),
            centre: Vec2::new(camera.width as f32, camera.height as f32) * 0.5,
        }
    }

    /// View coordinates (right, up, depth) of a world point.
    fn view_of(&self, p: Vec3) -> Vec3 {
        let d = p - self.eye;
        Vec3::new(d.dot(self.right), d.dot(self.up), d.dot(self.forward))
    }

    /// Pixel coordinates of a view-space point with positive depth.
    fn screen_of(&self, v: Vec3) -> Vec2 {
        self.centre + Vec2::new(v.x, -v.y) * (self.focal / v.z)
    }

    /// Pixels spanned by `length` metres facing the camera at the point of `item`'s bounding sphere nearest to it.
    fn pixels_across(&self, item: &Drawable, length: f32) -> f32 {
        let depth = self.view_of(item.pose.translation).z - bounding_radius(&item.shape);
        self.focal * length / depth.max(NEAR)
    }

    /// Whether a world-space sphere lies entirely outside the view frustum (near plane and the four sides).
    fn sphere_outside(&self, centre: Vec3, radius: f32) -> bool {
        let v = self.view_of(centre);
        let tan = self.centre / self.focal;
        let outside_side = |offset: f32, tan: f32| (offset.abs() - tan * v.z) / (1.0 + tan * tan).sqrt() > radius;
        v.z + radius < NEAR || outside_side(v.x, tan.x) || outside_side(v.y, tan.y)
    }
}

/// A coloured point light.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointLight {
    /// World position.
    pub position: Vec3,
    /// Linear RGB colour.
    pub color: Vec3,
    /// Irradiance scale: a surface at distance d facing the light receives
    /// `color * intensity / (d² + POINT_LIGHT_SOFTENING²)`, i.e. about `color * intensity` at 1 m.
    pub intensity: f32,
}

/// Scene illumination.
#[derive(Clone, Debug, PartialEq)]
pub struct Lighting {
    /// Ambient light; surfaces receive it scaled from 0.5 (facing down) to 1 (facing up), a hemispheric sky.
    pub ambient: Vec3,
    /// Direction towards the sun (need not be normalised; zero disables the sun).
    pub sun_direction: Vec3,
    /// Linear RGB irradiance of the sun on a surface facing it.
    pub sun_color: Vec3,
    /// Unshadowed point lights.
    pub points: Vec<PointLight>,
    /// Whether the sun casts shadows (shadow map).
    pub shadows: bool,
}

impl Default for Lighting {
    /// Neutral studio: soft sky ambient, a slightly warm sun high above the +X/+Y side casting shadows, and a weak
    /// cool fill light at (1.2, -0.9, 1.0); a white surface facing both lights stays just below saturation.
    fn default() -> Self {
        Self {
            ambient: Vec3::new(0.25, 0.25, 0.27),
            sun_direction: Vec3::new(0.5, 0.4, 1.0),
            sun_color: Vec3::new(0.68, 0.66, 0.62),
            points: vec![PointLight {
                position: Vec3::new(1.2, -0.9, 1.0),
                color: Vec3::new(0.90, 0.95, 1.0),
                intensity: 0.3,
            }],
            shadows: true,
        }
    }
}

/// A rendered image with its aligned depth map and instance segmentation, row-major, top row first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, sRGB-encoded RGB.
    pub rgb: Vec<u8>,
    /// View depth in metres; `f32::INFINITY` where nothing was drawn.
    pub depth: Vec<f32>,
    /// Instance id per pixel; 0 where nothing was drawn.
    pub instance: Vec<u8>,
}

impl Frame {
    /// Oracle visibility of a world point that lies on the surface of drawable `instance`.
    ///
    /// `None` when `p` is behind the near plane or projects outside the image; otherwise `(x, y, visible)` where
    /// `visible` means that the pixel containing `(x, y)` shows `instance` at a depth within
    /// `VISIBILITY_TOLERANCE_ABS + VISIBILITY_TOLERANCE_REL * depth(p)` (1 cm + 1 %) of the point's depth.
    /// `camera` must be the camera that rendered this frame.
    pub fn visibility(&self, camera: &Camera, p: Vec3, instance: u8) -> Option<(f32, f32, bool)> {
        let s = camera.project(p)?;
        let inside = s.x >= 0.0 && s.y >= 0.0 && s.x < self.width as f32 && s.y < self.height as f32;
        if !inside {
            return None;
        }
        let index = s.y as usize * self.width as usize + s.x as usize;
        let tolerance = VISIBILITY_TOLERANCE_ABS + VISIBILITY_TOLERANCE_REL * s.z;
        let same_instance = self.instance.get(index) == Some(&instance);
        let same_depth = self.depth.get(index).is_some_and(|&d| (d - s.z).abs() <= tolerance);
        Some((s.x, s.y, same_instance && same_depth))
    }

    /// Sets the size, growing or shrinking the buffers (contents are overwritten by the next render).
    fn resize(&mut self, width: usize, height: usize) {
        self.width = width as u32;
        self.height = height as u32;
        self.rgb.resize(width * height * 3, 0);
        self.depth.resize(width * height, f32::INFINITY);
        self.instance.resize(width * height, 0);
    }
}

/// Radius of a sphere about the local origin that contains the shape.
fn bounding_radius(shape: &Shape) -> f32 {
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
struct Mesh {
    positions: Vec<Vec3>,
    normals: Vec<Vec3>,
    triangles: Vec<[u32; 3]>,
}

impl Mesh {
    /// Tessellates `shape` with `segments` around the axis of curved solids (a multiple of 4).
    fn of(shape: &Shape, segments: u32) -> Self {
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
struct MeshCache {
    meshes: Vec<Mesh>,
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
    fn trim(&mut self) {
        if self.meshes.len() > MAX_CACHED_MESHES {
            self.meshes.clear();
            self.index.clear();
        }
    }
}

/// A vertex placed in the world, with what shading needs.
#[derive(Clone, Copy)]
struct SurfaceVertex {
    world: Vec3A,
    normal: Vec3A,
    local: Vec3A,
}

impl SurfaceVertex {
    /// Linear blend of all attributes (`t = 0` gives `self`).
    fn lerp(&self, other: &Self, t: f32) -> Self {
        Self {
            world: self.world.lerp(other.world, t),
            normal: self.normal.lerp(other.normal, t),
            local: self.local.lerp(other.local, t),
        }
    }
}

/// Where a drawable's mesh and vertices are this frame.
#[derive(Clone, Copy)]
struct ItemGeometry {
    mesh: usize,
    /// Index of its first vertex in [`SceneVertices::verts`].
    base: u32,
}

/// All drawables' vertices in world space for the current frame.
#[derive(Default)]
struct SceneVertices {
    items: Vec<ItemGeometry>,
    verts: Vec<SurfaceVertex>,
}

impl SceneVertices {
    /// Places every drawable's mesh, tessellated finely enough for its size in `view`.
    fn build(&mut self, items: &[Drawable], cache: &mut MeshCache, view: &ViewBasis) {
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
    fn triangles<'a>(&'a self, cache: &'a MeshCache) -> impl Iterator<Item = [u32; 3]> + 'a {
        self.items.iter().flat_map(move |geometry| {
            cache.meshes[geometry.mesh].triangles.iter().map(move |t| t.map(|i| i + geometry.base))
        })
    }
}

/// A point in fixed-point raster coordinates (1/16 pixel).
#[derive(Clone, Copy, Debug)]
struct Fixed {
    x: i64,
    y: i64,
}

impl Fixed {
    /// Rounds pixel coordinates to the sub-pixel grid; `None` beyond [`COORD_LIMIT`] or for NaN.
    fn new(p: Vec2) -> Option<Self> {
        let in_range = p.x.abs() <= COORD_LIMIT && p.y.abs() <= COORD_LIMIT;
        let scaled = (p * SUB as f32).round();
        in_range.then_some(Self { x: scaled.x as i64, y: scaled.y as i64 })
    }
}

/// Twice the signed area of (a, b, p) in raster coordinates; positive when p is right of a→b with y down.
fn edge(a: Fixed, b: Fixed, px: i64, py: i64) -> i64 {
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
fn raster(v: [Fixed; 3], width: usize, height: usize, mut visit: impl FnMut(usize, f32, f32, f32)) {
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
struct Sample {
    inv_depth: f32,
    tri: u32,
    b1: f32,
    b2: f32,
}

impl Sample {
    const EMPTY: Sample = Sample { inv_depth: 0.0, tri: NO_TRIANGLE, b1: 0.0, b2: 0.0 };
}

/// A rasterized triangle: vertex indices into the scene's vertices and the drawable it belongs to.
#[derive(Clone, Copy)]
struct TriRecord {
    verts: [u32; 3],
    item: u32,
}

/// The camera's visibility pass: projected vertices, drawn triangles and the per-pixel nearest sample.
#[derive(Default)]
struct CameraPass {
    width: usize,
    height: usize,
    proj: Vec<ProjVertex>,
    tris: Vec<TriRecord>,
    samples: Vec<Sample>,
}

impl CameraPass {
    /// Projects the scene's vertices and rasterizes the triangles of every drawable that may be in view.
    fn run(&mut self, view: &ViewBasis, items: &[Drawable], cache: &MeshCache, scene: &mut SceneVertices) {
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
struct ShadowMap {
    size: usize,
    frame: SunFrame,
    heights: Vec<f32>,
    /// Per scene vertex: raster position in the map and height along the sun direction.
    light_verts: Vec<(Option<Fixed>, f32)>,
}

impl ShadowMap {
    /// Renders the map for a normalised sun direction, fitted to all the scene's vertices.
    fn build(&mut self, sun: Vec3, size: usize, scene: &SceneVertices, cache: &MeshCache) {
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
    fn light(&self, p: Vec3A, n: Vec3A) -> f32 {
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

/// Per-frame lighting constants, in SIMD vectors.
struct ShadeContext<'a> {
    eye: Vec3A,
    ambient: Vec3A,
    sun: Vec3A,
    sun_color: Vec3A,
    points: &'a [PointLight],
    shadow: Option<&'a ShadowMap>,
}

impl ShadeContext<'_> {
    /// Linear RGB radiance of a surface point (`normal` need not be normalised).
    fn shade(&self, material: &Material, world: Vec3A, normal: Vec3A, local: Vec3A) -> Vec3A {
        let n = normal.normalize_or_zero();
        let view = (material.specular > 0.0).then(|| (self.eye - world).normalize_or_zero());
        let ambient = self.ambient * (0.75 + 0.25 * n.z);
        let mut light = Gather { n, view, strength: material.specular, diffuse: ambient, specular: Vec3A::ZERO };
        if n.dot(self.sun) > 0.0 {
            let lit = self.shadow.map_or(1.0, |map| map.light(world, n));
            light.add(self.sun, self.sun_color * lit);
        }
        for point in self.points {
            let to_light = Vec3A::from(point.position) - world;
            let d2 = to_light.length_squared();
            let softening = POINT_LIGHT_SOFTENING * POINT_LIGHT_SOFTENING;
            light.add(to_light / d2.sqrt(), Vec3A::from(point.color) * (point.intensity / (d2 + softening)));
        }
        let albedo = Vec3A::from(material.color) * material.pattern.factor(local.into());
        albedo * light.diffuse + light.specular
    }
}

/// Light gathered at one surface point: Lambert diffuse and Blinn-Phong specular.
struct Gather {
    /// Unit surface normal.
    n: Vec3A,
    /// Unit direction towards the eye, only when the material has a highlight.
    view: Option<Vec3A>,
    strength: f32,
    diffuse: Vec3A,
    specular: Vec3A,
}

impl Gather {
    /// Adds light arriving from unit direction `l` with the given irradiance (at normal incidence).
    fn add(&mut self, l: Vec3A, irradiance: Vec3A) {
        let cos = self.n.dot(l);
        if cos <= 0.0 {
            return;
        }
        self.diffuse += irradiance * cos;
        let Some(v) = self.view else {
            return;
        };
        let half = l + v;
        let n_dot_half = self.n.dot(half);
        if n_dot_half > 0.0 {
            let mut highlight = n_dot_half / half.length();
            for _ in 0..SHININESS_SQUARINGS {
                highlight *= highlight;
            }
            self.specular += irradiance * (self.strength * highlight);
        }
    }
}

/// The sRGB transfer function for a linear value in 0..1.
fn linear_to_srgb(c: f32) -> f32 {
    if c <= 0.003_130_8 { 12.92 * c } else { 1.055 * c.powf(1.0 / 2.4) - 0.055 }
}

/// The software camera. Keeps tessellated meshes and scratch buffers between frames, so reuse one per camera.
pub struct Renderer {
    cache: MeshCache,
    scene: SceneVertices,
    pass: CameraPass,
    shadow: ShadowMap,
    srgb: Vec<u8>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// An empty renderer; meshes are tessellated on first use.
    pub fn new() -> Self {
        let srgb = (0..SRGB_LUT_SIZE)
            .map(|i| (255.0 * linear_to_srgb(i as f32 / (SRGB_LUT_SIZE - 1) as f32)).round() as u8)
            .collect();
        Self {
            cache: MeshCache::default(),
            scene: SceneVertices::default(),
            pass: CameraPass::default(),
            shadow: ShadowMap::default(),
            srgb,
        }
    }

    /// Renders `items` seen by `camera` into a new frame of the camera's size.
    pub fn render(&mut self, camera: &Camera, lighting: &Lighting, items: &[Drawable]) -> Frame {
        let mut frame = Frame::default();
        self.render_into(camera, lighting, items, &mut frame);
        frame
    }

    /// Renders into `frame`, resizing its buffers to the camera's size (no allocation when the size is unchanged).
    pub fn render_into(&mut self, camera: &Camera, lighting: &Lighting, items: &[Drawable], frame: &mut Frame) {
        let view = ViewBasis::new(camera);
        self.cache.trim();
        self.scene.build(items, &mut self.cache, &view);
        let sun = lighting.sun_direction.normalize_or_zero();
        let shadows = lighting.shadows && sun != Vec3::ZERO && !items.is_empty();
        if shadows {
            let size = (5 * camera.width.max(camera.height) as usize / 4).clamp(256, 1024);
            self.shadow.build(sun, size, &self.scene, &self.cache);
        }
        self.pass.width = camera.width as usize;
        self.pass.height = camera.height as usize;
        self.pass.run(&view, items, &self.cache, &mut self.scene);
        let context = ShadeContext {
            eye: camera.eye.into(),
            ambient: lighting.ambient.into(),
            sun: sun.into(),
            sun_color: lighting.sun_color.into(),
            points: &lighting.points,
            shadow: shadows.then_some(&self.shadow),
        };
        self.resolve(&context, items, frame);
    }

    /// Shades every pixel once from the visibility buffer and writes the frame.
    fn resolve(&self, context: &ShadeContext, items: &[Drawable], frame: &mut Frame) {
        let (width, height) = (self.pass.width, self.pass.height);
        frame.resize(width, height);
        for y in 0..height {
            let t = if height > 1 { y as f32 / (height - 1) as f32 } else { 0.5 };
            let wall = self.encode(WALL_TOP.lerp(WALL_BOTTOM, t).into());
            for x in 0..width {
                let pixel = y * width + x;
                let sample = self.pass.samples[pixel];
                let (rgb, depth, instance) = if sample.tri == NO_TRIANGLE {
                    (wall, f32::INFINITY, 0)
                } else {
                    let record = self.pass.tris[sample.tri as usize];
                    let item = &items[record.item as usize];
                    let colour = self.shade_sample(context, &sample, &record, item);
                    (self.encode(colour), 1.0 / sample.inv_depth, item.instance)
                };
                frame.rgb[3 * pixel..3 * pixel + 3].copy_from_slice(&rgb);
                frame.depth[pixel] = depth;
                frame.instance[pixel] = instance;
            }
        }
    }

    /// Interpolates the surface attributes of a covered pixel and shades them.
    fn shade_sample(&self, context: &ShadeContext, sample: &Sample, record: &TriRecord, item: &Drawable) -> Vec3A {
        let [a, b, c] = record.verts.map(|i| &self.scene.verts[i as usize]);
        let b0 = 1.0 - sample.b1 - sample.b2;
        let mix = |f: fn(&SurfaceVertex) -> Vec3A| f(a) * b0 + f(b) * sample.b1 + f(c) * sample.b2;
        context.shade(&item.material, mix(|v| v.world), mix(|v| v.normal), mix(|v| v.local))
    }

    /// Clamps a linear colour to 0..1 and encodes it as sRGB bytes.
    fn encode(&self, linear: Vec3A) -> [u8; 3] {
        let index = (linear.max(Vec3A::ZERO).min(Vec3A::ONE) * (SRGB_LUT_SIZE - 1) as f32 + 0.5).as_ivec3();
        [self.srgb[index.x as usize], self.srgb[index.y as usize], self.srgb[index.z as usize]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::Quat;

    const BOX: u8 = 1;

    fn camera(eye: Vec3, target: Vec3, width: u32, height: u32) -> Camera {
        Camera { eye, target, up: Vec3::Z, fov_y_deg: 50.0, width, height }
    }

    fn solid(shape: Shape, at: Vec3, color: Vec3, instance: u8) -> Drawable {
        Drawable { shape, pose: Pose::from_translation(at), material: Material::plain(color), instance }
    }

    fn cube(half: f32, at: Vec3, instance: u8) -> Drawable {
        solid(Shape::Box { half: Vec3::splat(half) }, at, Vec3::splat(0.7), instance)
    }

    /// Only the sun, no shadows, no ambient.
    fn sun_only(direction: Vec3) -> Lighting {
        Lighting { ambient: Vec3::ZERO, sun_direction: direction, sun_color: Vec3::ONE, points: vec![], shadows: false }
    }

    fn rgb_at(frame: &Frame, x: usize, y: usize) -> Vec3 {
        let i = 3 * (y * frame.width as usize + x);
        Vec3::new(frame.rgb[i] as f32, frame.rgb[i + 1] as f32, frame.rgb[i + 2] as f32)
    }

    /// Mean colour over the pixels that show `instance`, and their count.
    fn mean_colour(frame: &Frame, instance: u8) -> (Vec3, usize) {
        let mut sum = Vec3::ZERO;
        let mut count = 0;
        for (i, _) in frame.instance.iter().enumerate().filter(|&(_, &id)| id == instance) {
            sum += Vec3::new(frame.rgb[3 * i] as f32, frame.rgb[3 * i + 1] as f32, frame.rgb[3 * i + 2] as f32);
            count += 1;
        }
        (sum / count.max(1) as f32, count)
    }

    /// Mean colour of the 3x3 pixels around the projection of `p`.
    fn patch_colour(frame: &Frame, cam: &Camera, p: Vec3) -> Vec3 {
        let s = cam.project(p).unwrap();
        let (cx, cy) = (s.x as usize, s.y as usize);
        let mut sum = Vec3::ZERO;
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                sum += rgb_at(frame, x, y);
            }
        }
        sum / 9.0
    }

    #[test]
    fn projection_of_known_points() {
        let cam = camera(Vec3::new(2.0, 0.0, 0.0), Vec3::ZERO, 224, 160);
        let centre = cam.project(Vec3::ZERO).unwrap();
        assert!((centre - Vec3::new(112.0, 80.0, 2.0)).abs().max_element() < 1e-4, "{centre}");
        // Looking along -X with Z up, the camera's right is +Y.
        let right = cam.project(Vec3::new(0.0, 0.3, 0.0)).unwrap();
        assert!(right.x > centre.x + 10.0 && (right.y - centre.y).abs() < 1e-3, "{right}");
        let up = cam.project(Vec3::new(0.0, 0.0, 0.3)).unwrap();
        assert!(up.y < centre.y - 10.0, "{up}");
        // Focal length in pixels: 80 / tan(25°); a 0.3 m offset at 2 m depth.
        let expected = 0.3 / 2.0 * 80.0 / 25f32.to_radians().tan();
        assert!((right.x - centre.x - expected).abs() < 1e-3);
        assert!(cam.project(Vec3::new(3.0, 0.0, 0.0)).is_none(), "behind the camera");
        assert!(cam.project(Vec3::new(2.0 - NEAR * 0.5, 0.0, 0.0)).is_none(), "closer than the near plane");
    }

    #[test]
    fn depth_of_a_box_face_seen_head_on() {
        let cam = camera(Vec3::new(3.0, 0.0, 0.0), Vec3::ZERO, 192, 128);
        let frame = Renderer::new().render(&cam, &Lighting::default(), &[cube(0.25, Vec3::ZERO, BOX)]);
        let mut covered = 0;
        for (&id, &depth) in frame.instance.iter().zip(&frame.depth) {
            if id == BOX {
                covered += 1;
                assert!((depth - 2.75).abs() < 1e-5, "depth {depth}");
            } else {
                assert_eq!(depth, f32::INFINITY);
            }
        }
        // The face spans 0.5 m at 2.75 m: 0.5 / 2.75 * focal pixels on a side.
        let side = 0.5 / 2.75 * 64.0 / 25f32.to_radians().tan();
        let expected = side * side;
        assert!((covered as f32 - expected).abs() < 0.06 * expected, "{covered} vs {expected}");
    }

    #[test]
    fn sphere_silhouette_has_the_analytic_area() {
        let (r, d) = (0.5, 2.0);
        let cam = camera(Vec3::new(d, 0.0, 0.0), Vec3::ZERO, 200, 200);
        let sphere = solid(Shape::Sphere { radius: r }, Vec3::ZERO, Vec3::ONE, 7);
        let frame = Renderer::new().render(&cam, &Lighting::default(), &[sphere]);
        let pixels = frame.instance.iter().filter(|&&id| id == 7).count() as f32;
        let focal = 100.0 / 25f32.to_radians().tan();
        let radius_px = focal * r / (d * d - r * r).sqrt();
        let expected = std::f32::consts::PI * radius_px * radius_px;
        assert!((pixels - expected).abs() < 0.03 * expected, "{pixels} vs {expected}");
    }

    #[test]
    fn visibility_reports_occlusion() {
        let cam = camera(Vec3::new(4.0, 0.0, 0.5), Vec3::ZERO, 128, 128);
        let front = cube(0.2, Vec3::new(1.0, 0.0, 0.0), 1);
        let back = solid(Shape::Box { half: Vec3::new(0.2, 0.8, 0.2) }, Vec3::ZERO, Vec3::ONE, 2);
        let frame = Renderer::new().render(&cam, &Lighting::default(), &[front, back]);
        let on_front = Vec3::new(1.2, 0.0, 0.0);
        let hidden_on_back = Vec3::new(0.2, 0.0, 0.0);
        let exposed_on_back = Vec3::new(0.2, 0.6, 0.0);
        assert!(frame.visibility(&cam, on_front, 1).unwrap().2);
        let self_occluded = Vec3::new(0.8, 0.0, 0.0);
        assert!(!frame.visibility(&cam, self_occluded, 1).unwrap().2, "the far side of the same box");
        assert!(!frame.visibility(&cam, hidden_on_back, 2).unwrap().2);
        assert!(frame.visibility(&cam, exposed_on_back, 2).unwrap().2);
        assert!(!frame.visibility(&cam, exposed_on_back, 1).unwrap().2, "wrong instance");
        assert!(frame.visibility(&cam, Vec3::new(0.0, 5.0, 0.0), 2).is_none(), "outside the image");
        assert!(frame.visibility(&cam, Vec3::new(5.0, 0.0, 0.5), 2).is_none(), "behind the camera");
    }

    #[test]
    fn head_on_face_is_brighter_than_grazing_face() {
        let cam = camera(Vec3::new(2.0, 0.0, 1.5), Vec3::ZERO, 128, 128);
        let lighting = sun_only(Vec3::new(1.0, 0.0, 0.15));
        let frame = Renderer::new().render(&cam, &lighting, &[cube(0.25, Vec3::ZERO, BOX)]);
        let front = patch_colour(&frame, &cam, Vec3::new(0.25, 0.0, 0.0));
        let top = patch_colour(&frame, &cam, Vec3::new(0.0, 0.0, 0.25));
        assert!(front.x > top.x + 60.0, "front {front} top {top}");
    }

    #[test]
    fn coloured_point_light_tints_the_image() {
        let cam = camera(Vec3::new(2.0, 0.0, 0.5), Vec3::ZERO, 64, 64);
        let sphere = [solid(Shape::Sphere { radius: 0.3 }, Vec3::ZERO, Vec3::splat(0.8), 3)];
        let mut lighting = Lighting { ambient: Vec3::splat(0.3), points: vec![], ..sun_only(Vec3::ZERO) };
        let mut renderer = Renderer::new();
        let (neutral, _) = mean_colour(&renderer.render(&cam, &lighting, &sphere), 3);
        let red = PointLight { position: Vec3::new(1.0, 0.0, 0.5), color: Vec3::new(1.0, 0.1, 0.1), intensity: 1.0 };
        lighting.points.push(red);
        let (tinted, _) = mean_colour(&renderer.render(&cam, &lighting, &sphere), 3);
        assert!((neutral.x - neutral.z).abs() < 15.0, "neutral {neutral}");
        assert!(tinted.x > tinted.z + 40.0 && tinted.x > neutral.x + 20.0, "tinted {tinted}");
    }

    #[test]
    fn floating_box_shadows_the_floor() {
        let cam = camera(Vec3::new(2.0, 0.0, 1.5), Vec3::ZERO, 128, 128);
        let floor = solid(Shape::Box { half: Vec3::new(1.0, 1.0, 0.05) }, Vec3::new(0.0, 0.0, -0.05), Vec3::ONE, 1);
        let blocker = cube(0.15, Vec3::new(0.0, 0.0, 0.6), 2);
        let mut lighting = Lighting { points: vec![], sun_direction: Vec3::Z, ..Lighting::default() };
        let mut renderer = Renderer::new();
        let below = Vec3::ZERO;
        let aside = Vec3::new(0.5, 0.5, 0.0);
        let lit = renderer.render(&cam, &lighting, &[floor, blocker]);
        lighting.shadows = false;
        let unshadowed = renderer.render(&cam, &lighting, &[floor, blocker]);
        assert!(lit.visibility(&cam, below, 1).unwrap().2, "the floor under the box is in view");
        let shadowed = patch_colour(&lit, &cam, below);
        assert!(shadowed.y + 60.0 < patch_colour(&unshadowed, &cam, below).y, "{shadowed}");
        assert!((patch_colour(&lit, &cam, aside) - patch_colour(&unshadowed, &cam, aside)).abs().max_element() < 1.0);
    }

    #[test]
    fn patterns_move_with_the_object() {
        // A checker box seen from above; local points at cell centres keep their shade after a half-cell move.
        let cam = camera(Vec3::new(0.0, -0.01, 2.0), Vec3::ZERO, 128, 128);
        let lighting = sun_only(Vec3::Z);
        let material =
            Material { color: Vec3::ONE, specular: 0.0, pattern: Pattern::Checker { cell: 0.1, contrast: 0.8 } };
        let mut item = Drawable {
            shape: Shape::Box { half: Vec3::new(0.4, 0.4, 0.05) },
            pose: Pose::IDENTITY,
            material,
            instance: BOX,
        };
        let mut renderer = Renderer::new();
        let locals: Vec<Vec3> = (0..4)
            .map(|i| Vec3::new((i as f32 - CHECKER_OFFSET + 0.5) * 0.1 - 0.2, (0.5 - CHECKER_OFFSET) * 0.1, 0.05))
            .collect();
        let shades = |renderer: &mut Renderer, item: &Drawable| -> Vec<f32> {
            let frame = renderer.render(&cam, &lighting, std::slice::from_ref(item));
            locals.iter().map(|&l| patch_colour(&frame, &cam, item.pose.transform_point(l)).x).collect()
        };
        let before = shades(&mut renderer, &item);
        item.pose = Pose::new(Vec3::new(0.05, 0.0, 0.0), Quat::from_rotation_z(0.3));
        let after = shades(&mut renderer, &item);
        assert!((before[0] - before[1]).abs() > 100.0, "neighbouring cells differ: {before:?}");
        for (b, a) in before.iter().zip(&after) {
            assert!((b - a).abs() < 3.0, "{before:?} vs {after:?}");
        }
    }

    #[test]
    fn textures_are_perspective_correct() {
        // A floor made of two huge triangles seen at a grazing angle: affine interpolation would shift the cells.
        let cam = camera(Vec3::new(0.0, -1.0, 0.4), Vec3::new(0.0, 1.0, 0.0), 256, 256);
        let checker = Pattern::Checker { cell: 0.25, contrast: 0.8 };
        let floor = Drawable {
            shape: Shape::Box { half: Vec3::new(3.0, 3.0, 0.05) },
            pose: Pose::from_translation(Vec3::new(0.0, 0.0, -0.05)),
            material: Material { color: Vec3::ONE, specular: 0.0, pattern: checker },
            instance: 1,
        };
        let frame = Renderer::new().render(&cam, &sun_only(Vec3::Z), &[floor]);
        let mut checked = 0;
        for kx in -2..2 {
            for ky in -2..8 {
                let centre = |k: i32| (k as f32 + 0.5 - CHECKER_OFFSET) * 0.25;
                let local = Vec3::new(centre(kx), centre(ky), 0.05);
                let world = floor.pose.transform_point(local);
                let Some((x, y, true)) = frame.visibility(&cam, world, 1) else { continue };
                let bright = rgb_at(&frame, x as usize, y as usize).x > 190.0;
                assert_eq!(bright, (kx + ky) % 2 == 0, "cell ({kx}, {ky}) at ({x}, {y})");
                checked += 1;
            }
        }
        assert!(checked > 25, "{checked} cells checked");
    }

    #[test]
    fn noise_and_stripes_are_deterministic_and_vary() {
        let noise = Pattern::Noise { scale: 0.02, amplitude: 0.5 };
        let stripes = Pattern::Stripes { period: 0.05, contrast: 0.6 };
        for pattern in [noise, stripes] {
            let values: Vec<f32> =
                (0..200).map(|i| pattern.factor(Vec3::new(i as f32 * 0.0031, 0.01, -0.02))).collect();
            let again: Vec<f32> = (0..200).map(|i| pattern.factor(Vec3::new(i as f32 * 0.0031, 0.01, -0.02))).collect();
            assert_eq!(values, again);
            let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            assert!(hi - lo > 0.4 && lo >= 0.0, "{pattern:?}: {lo}..{hi}");
        }
    }

    #[test]
    fn near_plane_clips_instead_of_dropping() {
        // A floor passing under and behind the camera: its huge triangles cross the near plane.
        let cam = Camera {
            eye: Vec3::new(0.0, 0.0, 0.5),
            target: Vec3::new(1.0, 0.0, 0.5),
            up: Vec3::Z,
            fov_y_deg: 60.0,
            width: 64,
            height: 48,
        };
        let floor = solid(Shape::Box { half: Vec3::new(20.0, 20.0, 0.1) }, Vec3::new(0.0, 0.0, -0.1), Vec3::ONE, 4);
        let frame = Renderer::new().render(&cam, &Lighting::default(), &[floor]);
        let row = |y: usize| &frame.instance[y * 64..(y + 1) * 64];
        assert!(row(47).iter().all(|&id| id == 4), "bottom row shows the floor");
        assert!(row(0).iter().all(|&id| id == 0), "top row shows the wall");
        // The bottom row looks down 30°: depth = height / tan(30°) along the axis, up to a pixel's worth.
        let expected = 0.5 / (30f32 - 60.0 / 48.0 * 0.5).to_radians().tan();
        assert!((frame.depth[47 * 64 + 32] - expected).abs() < 0.01, "{}", frame.depth[47 * 64 + 32]);
    }

    #[test]
    fn shared_edges_are_rasterized_once() {
        let p = |x: f32, y: f32| Fixed::new(Vec2::new(x, y)).unwrap();
        let (a, b, c, d) = (p(0.5, 0.5), p(6.5, 0.5), p(6.5, 6.5), p(0.5, 6.5));
        let mut hits = vec![0u8; 64];
        raster([a, b, c], 8, 8, |i, _, _, _| hits[i] += 1);
        raster([a, c, d], 8, 8, |i, _, _, _| hits[i] += 1);
        assert!(hits.iter().all(|&h| h <= 1), "{hits:?}");
        let covered = hits.iter().filter(|&&h| h == 1).count();
        // Centres 0.5..=6.5 on both axes: the top and left edges are in, the right and bottom edges out.
        assert_eq!(covered, 36);
        assert_eq!(hits[0], 1);
        assert_eq!(hits[3 * 8 + 3], 1, "a centre on the shared diagonal");
        assert_eq!(hits[6 * 8 + 6], 0, "the bottom-right corner");
    }

    #[test]
    fn frames_of_any_size() {
        let mut renderer = Renderer::new();
        let mut frame = Frame::default();
        for (w, h) in [(1, 1), (7, 3), (3, 7), (224, 224)] {
            let cam = camera(Vec3::new(2.0, 0.0, 0.0), Vec3::ZERO, w, h);
            renderer.render_into(&cam, &Lighting::default(), &[cube(0.5, Vec3::ZERO, BOX)], &mut frame);
            assert_eq!((frame.width, frame.height), (w, h));
            assert_eq!(frame.rgb.len(), (w * h * 3) as usize);
            let centre = (h / 2 * w + w / 2) as usize;
            assert_eq!(frame.instance[centre], BOX, "{w}x{h}");
        }
    }

    #[test]
    fn meshes_are_cached_per_shape() {
        let mut renderer = Renderer::new();
        let cam = camera(Vec3::new(2.0, 0.0, 0.0), Vec3::ZERO, 32, 32);
        let items = [cube(0.1, Vec3::ZERO, 1), cube(0.1, Vec3::Y * 0.3, 2), cube(0.2, Vec3::Y * -0.3, 3)];
        renderer.render(&cam, &Lighting::default(), &items);
        renderer.render(&cam, &Lighting::default(), &items);
        assert_eq!(renderer.cache.meshes.len(), 2);
    }

    #[test]
    fn curved_meshes_are_closed_and_outward() {
        let shapes = [
            Shape::Sphere { radius: 0.1 },
            Shape::Capsule { radius: 0.05, half_height: 0.1 },
            Shape::Cylinder { radius: 0.05, half_height: 0.1 },
            Shape::Ellipsoid { radii: Vec3::new(0.05, 0.08, 0.1) },
            Shape::Box { half: Vec3::new(0.1, 0.2, 0.3) },
        ];
        for (shape, segments) in shapes.into_iter().flat_map(|s| LOD_SEGMENTS.map(|n| (s, n))) {
            let mesh = Mesh::of(&shape, segments);
            // Divergence theorem: the signed volume is positive only if every face winds outwards.
            let volume: f32 = mesh
                .triangles
                .iter()
                .map(|t| {
                    let [a, b, c] = t.map(|i| mesh.positions[i as usize]);
                    a.dot(b.cross(c)) / 6.0
                })
                .sum();
            let exact = match shape {
                Shape::Sphere { radius } => 4.0 / 3.0 * std::f32::consts::PI * radius.powi(3),
                Shape::Capsule { radius, half_height } => {
                    std::f32::consts::PI * radius * radius * (2.0 * half_height + 4.0 / 3.0 * radius)
                }
                Shape::Cylinder { radius, half_height } => std::f32::consts::PI * radius * radius * 2.0 * half_height,
                Shape::Ellipsoid { radii } => 4.0 / 3.0 * std::f32::consts::PI * radii.x * radii.y * radii.z,
                Shape::Box { half } => 8.0 * half.x * half.y * half.z,
            };
            // Inscribed meshes: slightly smaller, converging with the number of segments.
            let low = 1.0 - 18.0 / (segments * segments) as f32;
            assert!(volume > low * exact && volume <= exact * 1.0001, "{shape:?}/{segments}: {volume} vs {exact}");
        }
    }

    /// A representative scene: a 12-link robot, a table, 5 task objects and 12 clutter objects.
    fn bench_scene() -> Vec<Drawable> {
        let textured = |color: Vec3, pattern: Pattern| Material { color, specular: 0.3, pattern };
        let mut items = vec![Drawable {
            shape: Shape::Box { half: Vec3::new(0.6, 0.8, 0.02) },
            pose: Pose::from_translation(Vec3::new(0.5, 0.0, -0.02)),
            material: textured(Vec3::new(0.55, 0.42, 0.3), Pattern::Noise { scale: 0.05, amplitude: 0.15 }),
            instance: 1,
        }];
        for link in 0..12 {
            let t = link as f32 / 11.0;
            let at = Vec3::new(0.05 + 0.4 * t, 0.1 * (t * 3.0).sin(), 0.1 + 0.5 * (t * 3.1).sin());
            let shape = if link % 3 == 2 {
                Shape::Box { half: Vec3::new(0.04, 0.03, 0.05) }
            } else {
                Shape::Capsule { radius: 0.045, half_height: 0.08 }
            };
            let pose = Pose::new(at, Quat::from_rotation_y(0.4 * link as f32));
            items.push(Drawable { shape, pose, material: textured(Vec3::splat(0.85), Pattern::Plain), instance: 2 });
        }
        let shapes = [
            Shape::Box { half: Vec3::splat(0.025) },
            Shape::Cylinder { radius: 0.03, half_height: 0.05 },
            Shape::Sphere { radius: 0.035 },
            Shape::Ellipsoid { radii: Vec3::new(0.04, 0.03, 0.03) },
            Shape::Capsule { radius: 0.02, half_height: 0.04 },
        ];
        let patterns = [
            Pattern::Checker { cell: 0.02, contrast: 0.5 },
            Pattern::Stripes { period: 0.03, contrast: 0.5 },
            Pattern::Noise { scale: 0.015, amplitude: 0.4 },
        ];
        for i in 0..17 {
            let angle = i as f32 * 2.4;
            let at = Vec3::new(0.5 + 0.3 * angle.cos(), 0.45 * angle.sin(), 0.04);
            let color = Vec3::new(0.2 + 0.15 * (i % 5) as f32, 0.3 + 0.1 * (i % 3) as f32, 0.8 - 0.1 * (i % 4) as f32);
            items.push(Drawable {
                shape: shapes[i % 5],
                pose: Pose::new(at, Quat::from_rotation_z(angle)),
                material: textured(color, patterns[i % 3]),
                instance: 3 + i as u8,
            });
        }
        items
    }

    /// `cargo test --release -- --ignored --nocapture render_time`: the bench scene at 224x224 and 512x512,
    /// reporting the mean over all frames and the best of 10 batches (robust to other load on the machine).
    #[test]
    #[ignore]
    fn render_time() {
        let items = bench_scene();
        for size in [224, 512] {
            let cam = camera(Vec3::new(1.4, 0.0, 0.9), Vec3::new(0.45, 0.0, 0.1), size, size);
            let (lighting, mut renderer, mut frame) = (Lighting::default(), Renderer::new(), Frame::default());
            renderer.render_into(&cam, &lighting, &items, &mut frame);
            let mut batches = Vec::new();
            for _ in 0..10 {
                let start = std::time::Instant::now();
                for _ in 0..50 {
                    renderer.render_into(&cam, &lighting, &items, &mut frame);
                }
                batches.push(start.elapsed().as_secs_f64() * 1e3 / 50.0);
            }
            let mean = batches.iter().sum::<f64>() / batches.len() as f64;
            let best = batches.iter().copied().fold(f64::MAX, f64::min);
            let triangles: usize =
                renderer.scene.items.iter().map(|g| renderer.cache.meshes[g.mesh].triangles.len()).sum();
            println!(
                "{} drawables, {triangles} triangles, {size}x{size}: mean {mean:.2} ms, best batch {best:.2} ms",
                items.len()
            );
        }
    }
}
