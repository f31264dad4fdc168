//! Solid primitives shared by the renderer, the robot model and the physics scene.
//!
//! All sizes are in metres, in the solid's local frame; world frame is Z-up with the robot base at the origin
//! and the table top at z = 0.

use glam::{Quat, Vec3};

/// A convex solid in its local frame. Cylinders and capsules are aligned with local +Z and centred at the origin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Axis-aligned box with half extents along x, y, z.
    Box { half: Vec3 },
    /// Cylinder along local Z.
    Cylinder { radius: f32, half_height: f32 },
    Sphere { radius: f32 },
    /// Capsule along local Z: a cylinder of `half_height` with hemispherical caps of `radius` on both ends.
    Capsule { radius: f32, half_height: f32 },
    /// Ellipsoid with semi-axes along x, y, z (fruit).
    Ellipsoid { radii: Vec3 },
}

/// A rigid placement: rotation then translation (world = rotation * local + translation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub translation: Vec3,
    pub rotation: Quat,
}

impl Pose {
    pub const IDENTITY: Pose = Pose { translation: Vec3::ZERO, rotation: Quat::IDENTITY };

    pub fn new(translation: Vec3, rotation: Quat) -> Self {
        Self { translation, rotation }
    }

    pub fn from_translation(translation: Vec3) -> Self {
        Self { translation, rotation: Quat::IDENTITY }
    }

    /// Maps a point from this frame to its parent frame.
    pub fn transform_point(&self, p: Vec3) -> Vec3 {
        self.rotation * p + self.translation
    }

    /// Composition `self * other`: `other` expressed in the parent frame of `self`.
    pub fn mul(&self, other: &Pose) -> Pose {
        Pose { translation: self.transform_point(other.translation), rotation: self.rotation * other.rotation }
    }

    pub fn inverse(&self) -> Pose {
        let r = self.rotation.inverse();
        Pose { translation: -(r * self.translation), rotation: r }
    }
}
