//! Per-pixel lighting: hemispheric ambient, Lambert and Blinn-Phong from the sun and the point lights, and the
//! sRGB transfer function.

use glam::Vec3A;

use super::shadow::ShadowMap;
use super::{Material, POINT_LIGHT_SOFTENING, PointLight};

/// Blinn-Phong exponent shared by all materials, 2^5 = 32, applied as repeated squaring.
const SHININESS_SQUARINGS: u32 = 5;

/// Per-frame lighting constants, in SIMD vectors.
pub(super) struct ShadeContext<'a> {
    pub(super) eye: Vec3A,
    pub(super) ambient: Vec3A,
    pub(super) sun: Vec3A,
    pub(super) sun_color: Vec3A,
    pub(super) points: &'a [PointLight],
    pub(super) shadow: Option<&'a ShadowMap>,
}

impl ShadeContext<'_> {
    /// Linear RGB radiance of a surface point (`normal` need not be normalised).
    pub(super) fn shade(&self, material: &Material, world: Vec3A, normal: Vec3A, local: Vec3A) -> Vec3A {
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
pub(super) fn linear_to_srgb(c: f32) -> f32 {
    if c <= 0.003_130_8 { 12.92 * c } else { 1.055 * c.powf(1.0 / 2.4) - 0.055 }
}
