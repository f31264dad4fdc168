//! Out-of-distribution conditions of sec. V-C, each with a strength in [0, 1].
//!
//! Every condition changes only what the camera sees: distractors and occluders are drawn but have no collider,
//! and lights have no physical effect, so the task, the expert and the success check are untouched. Their
//! randomness comes from a stream separate from the task layout, so a seed has the same layout under every variant.

use std::fmt;
use std::str::FromStr;

use glam::{Quat, Vec3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::render::{Camera, Drawable, Lighting, Material, Pattern, PointLight};
use super::shape::{Pose, Shape};
use super::task::ObjectSpec;

/// First instance id used by distractors; the occluder uses [`OCCLUDER_INSTANCE`].
pub const FIRST_DISTRACTOR_INSTANCE: u8 = 20;
pub const OCCLUDER_INSTANCE: u8 = 60;

/// Which disturbance of sec. V-C is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// In-domain: the training distribution.
    None,
    /// Cluttered background: random distractor objects of varied shape and colour on the table.
    Clutter,
    /// Foreground occlusion: a large object between the camera and the scene covering part of target and arm.
    Occlusion,
    /// Illumination variation: coloured, moving "party" lights; the white key light dims.
    Lighting,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::None, Variant::Clutter, Variant::Occlusion, Variant::Lighting];

    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Clutter => "clutter",
            Variant::Occlusion => "occlusion",
            Variant::Lighting => "lighting",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("unknown variant `{s}`: expected one of none, clutter, occlusion, lighting"))
    }
}

/// A variant and its strength in [0, 1] (0 leaves the scene in-domain whatever the variant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    pub variant: Variant,
    pub strength: f32,
}

impl Condition {
    pub const IN_DOMAIN: Condition = Condition { variant: Variant::None, strength: 0.0 };

    /// Validates the strength (finite, within [0, 1]).
    pub fn new(variant: Variant, strength: f32) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(format!("strength: expected a number in [0, 1], got {strength}"));
        }
        Ok(Condition { variant, strength })
    }
}

/// The visual disturbance of one episode: fixed extra drawables plus, for `lighting`, lights that move with time.
pub struct Disturbance {
    condition: Condition,
    static_items: Vec<Drawable>,
    party: Vec<PartyLight>,
}

struct PartyLight {
    hue0: f32,
    hue_rate: f32,
    orbit_phase: f32,
    orbit_rate: f32,
}

impl Disturbance {
    /// Draws the disturbance for `condition`; `objects` are the task objects to keep clear of, `camera` places the
    /// occluder between the lens and the workspace.
    pub fn new(condition: Condition, objects: &[ObjectSpec], camera: &Camera, rng: &mut ChaCha8Rng) -> Self {
        let s = condition.strength;
        let (static_items, party) = match condition.variant {
            Variant::None => (Vec::new(), Vec::new()),
            Variant::Clutter => (distractors(s, objects, rng), Vec::new()),
            Variant::Occlusion => (occluder(s, objects, camera, rng).into_iter().collect(), Vec::new()),
            Variant::Lighting => (Vec::new(), party_lights(s, rng)),
        };
        Disturbance { condition, static_items, party }
    }

    /// Render-only drawables to add to the scene.
    pub fn drawables(&self) -> &[Drawable] {
        &self.static_items
    }

    /// The lighting at time `t` seconds: the default studio light, or the party lights for `lighting`.
    pub fn lighting(&self, t: f32) -> Lighting {
        let mut light = Lighting::default();
        if self.party.is_empty() {
            return light;
        }
        let s = self.condition.strength;
        light.sun_color *= 1.0 - 0.7 * s;
        light.ambient *= 1.0 - 0.5 * s;
        for p in &self.party {
            let angle = p.orbit_phase + p.orbit_rate * t;
            let position = Vec3::new(0.5 + 0.35 * angle.cos(), 0.35 * angle.sin(), 0.55);
            let color = hue_to_rgb(p.hue0 + p.hue_rate * t);
            light.points.push(PointLight { position, color, intensity: 0.3 * s });
            light.ambient += color * 0.08 * s;
        }
        light
    }
}

/// A saturated colour for a hue in turns (any real number; wraps).
fn hue_to_rgb(h: f32) -> Vec3 {
    let h = h.rem_euclid(1.0) * 6.0;
    let x = 1.0 - (h % 2.0 - 1.0).abs();
    match h as u32 {
        0 => Vec3::new(1.0, x, 0.0),
        1 => Vec3::new(x, 1.0, 0.0),
        2 => Vec3::new(0.0, 1.0, x),
        3 => Vec3::new(0.0, x, 1.0),
        4 => Vec3::new(x, 0.0, 1.0),
        _ => Vec3::new(1.0, 0.0, x),
    }
}

fn party_lights(strength: f32, rng: &mut ChaCha8Rng) -> Vec<PartyLight> {
    if strength == 0.0 {
        return Vec::new();
    }
    (0..3)
        .map(|_| PartyLight {
            hue0: rng.random_range(0.0..1.0),
            hue_rate: rng.random_range(0.1..0.4),
            orbit_phase: rng.random_range(0.0..std::f32::consts::TAU),
            orbit_rate: rng.random_range(0.4..1.2),
        })
        .collect()
}

fn random_material(rng: &mut ChaCha8Rng) -> Material {
    let pattern = match rng.random_range(0..3) {
        0 => Pattern::Plain,
        1 => Pattern::Checker { cell: rng.random_range(0.008..0.02), contrast: rng.random_range(0.1..0.4) },
        _ => Pattern::Noise { scale: rng.random_range(0.005..0.02), amplitude: rng.random_range(0.1..0.3) },
    };
    let color = hue_to_rgb(rng.random_range(0.0..1.0)) * rng.random_range(0.4..1.0) + Vec3::splat(rng.random_range(0.0..0.3));
    Material { color: color.min(Vec3::ONE), specular: rng.random_range(0.0..0.8), pattern }
}

/// Footprint radius of a shape on the table, for keeping distractors clear of task objects.
fn footprint(shape: &Shape) -> f32 {
    match *shape {
        Shape::Box { half } => half.truncate().length(),
        Shape::Cylinder { radius, .. } | Shape::Sphere { radius } | Shape::Capsule { radius, .. } => radius,
        Shape::Ellipsoid { radii } => radii.x.max(radii.y),
    }
}

/// Resting height of a shape's centre above the table.
fn rest_height(shape: &Shape) -> f32 {
    match *shape {
        Shape::Box { half } => half.z,
        Shape::Cylinder { half_height, .. } => half_height,
        Shape::Sphere { radius } => radius,
        Shape::Capsule { radius, .. } => radius,
        Shape::Ellipsoid { radii } => radii.z,
    }
}

/// `round(14 * strength)` distractors on the table, clear of the task objects' footprints.
fn distractors(strength: f32, objects: &[ObjectSpec], rng: &mut ChaCha8Rng) -> Vec<Drawable> {
    let n = (14.0 * strength).round() as usize;
    let mut placed: Vec<(Vec3, f32)> =
        objects.iter().map(|o| (o.pose.translation.with_z(0.0), footprint(&o.shape) + 0.03)).collect();
    let mut out = Vec::with_capacity(n);
    let mut attempts = 0;
    while out.len() < n && attempts < 2000 {
        attempts += 1;
        let size = rng.random_range(0.015..0.045);
        let shape = match rng.random_range(0..4) {
            0 => Shape::Box { half: Vec3::new(size, rng.random_range(0.5..1.0) * size, rng.random_range(0.5..1.5) * size) },
            1 => Shape::Cylinder { radius: size, half_height: rng.random_range(0.5..2.0) * size },
            2 => Shape::Sphere { radius: size },
            _ => Shape::Capsule { radius: 0.6 * size, half_height: size },
        };
        let p = Vec3::new(rng.random_range(0.2..0.8), rng.random_range(-0.4..0.4), 0.0);
        let r = footprint(&shape);
        if placed.iter().any(|(q, rq)| q.distance(p) < r + rq) {
            continue;
        }
        placed.push((p, r));
        let rotation = match shape {
            Shape::Capsule { .. } => Quat::from_rotation_z(rng.random_range(0.0..3.2)) * Quat::from_rotation_x(std::f32::consts::FRAC_PI_2),
            _ => Quat::from_rotation_z(rng.random_range(0.0..3.2)),
        };
        let height = if matches!(shape, Shape::Capsule { .. }) { 0.6 * size } else { rest_height(&shape) };
        out.push(Drawable {
            shape,
            pose: Pose::new(p.with_z(height), rotation),
            material: random_material(rng),
            instance: FIRST_DISTRACTOR_INSTANCE + out.len() as u8,
        });
    }
    out
}

/// A large box standing on the table between the camera and the last task object (the target: the button, the block
/// to stack on, the plate), offset sideways so it covers part of the target and part of the arm; its size grows
/// with strength (none at strength 0). At strength 0.5 it leaves under half of the target in view in every
/// held-out stack-block and place-fruit scene (docs/results.md).
fn occluder(strength: f32, objects: &[ObjectSpec], camera: &Camera, rng: &mut ChaCha8Rng) -> Option<Drawable> {
    if strength == 0.0 {
        return None;
    }
    let target = objects[objects.len() - 1].pose.translation.with_z(0.0);
    let eye = camera.eye.with_z(0.0);
    let along = rng.random_range(0.3..0.45);
    let side = (eye - target).normalize().cross(Vec3::Z) * rng.random_range(-0.05..0.05);
    let base = target + (eye - target) * along + side;
    let half = Vec3::new(0.03 + 0.03 * strength, 0.03 + 0.06 * strength, 0.06 + 0.12 * strength);
    let facing = (eye - target).y.atan2((eye - target).x);
    Some(Drawable {
        shape: Shape::Box { half },
        pose: Pose::new(base.with_z(half.z), Quat::from_rotation_z(facing)),
        material: Material { color: Vec3::new(0.75, 0.55, 0.3), specular: 0.1, pattern: Pattern::Stripes { period: 0.05, contrast: 0.3 } },
        instance: OCCLUDER_INSTANCE,
    })
}
