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
//!
//! Modules: `camera` (pinhole projection), `material` (albedo patterns), `mesh` (tessellation and the
//! per-frame vertices, step 1), `shadow` (the sun's shadow map, step 2), `raster` (the fixed-point rasterizer
//! and the camera's visibility pass, step 3) and `shade` (per-pixel lighting, step 4); `Renderer` runs them.

mod camera;
mod material;
mod mesh;
mod raster;
mod shade;
mod shadow;
#[cfg(test)]
mod tests;

use glam::{Vec3, Vec3A};

pub use camera::Camera;
pub use material::{Material, Pattern};

use crate::sim::shape::{Pose, Shape};
use camera::ViewBasis;
use mesh::{MeshCache, SceneVertices, SurfaceVertex};
use raster::{CameraPass, NO_TRIANGLE, Sample, TriRecord};
use shade::{ShadeContext, linear_to_srgb};
use shadow::ShadowMap;

/// Nearest view depth that is drawn or projected (metres); geometry closer than this is clipped away.
pub const NEAR: f32 = 0.01;
/// Absolute part of the depth tolerance of [`Frame::visibility`] (metres).
pub const VISIBILITY_TOLERANCE_ABS: f32 = 0.01;
/// Relative part of the depth tolerance of [`Frame::visibility`] (fraction of the point's view depth).
pub const VISIBILITY_TOLERANCE_REL: f32 = 0.01;
/// Distance (metres) that softens the inverse-square falloff of point lights near their centre.
pub const POINT_LIGHT_SOFTENING: f32 = 0.1;
/// Linear colours of the background wall at the top and bottom image rows.
const WALL_TOP: Vec3 = Vec3::new(0.50, 0.52, 0.55);
const WALL_BOTTOM: Vec3 = Vec3::new(0.33, 0.34, 0.36);
/// Entries of the linear-to-sRGB lookup table.
const SRGB_LUT_SIZE: usize = 4096;

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
