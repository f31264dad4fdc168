//! The pinhole camera and its view frame.

use glam::{Vec2, Vec3};

use super::mesh::bounding_radius;
use super::{Drawable, NEAR};

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
pub(super) struct ViewBasis {
    eye: Vec3,
    right: Vec3,
    up: Vec3,
    forward: Vec3,
    focal: f32,
    centre: Vec2,
}

impl ViewBasis {
    /// The camera's frame; a degenerate `up` (parallel to the view direction) is replaced by any perpendicular.
    pub(super) fn new(camera: &Camera) -> Self {
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
    pub(super) fn view_of(&self, p: Vec3) -> Vec3 {
        let d = p - self.eye;
        Vec3::new(d.dot(self.right), d.dot(self.up), d.dot(self.forward))
    }

    /// Pixel coordinates of a view-space point with positive depth.
    pub(super) fn screen_of(&self, v: Vec3) -> Vec2 {
        self.centre + Vec2::new(v.x, -v.y) * (self.focal / v.z)
    }

    /// Pixels spanned by `length` metres facing the camera at the point of `item`'s bounding sphere nearest to it.
    pub(super) fn pixels_across(&self, item: &Drawable, length: f32) -> f32 {
        let depth = self.view_of(item.pose.translation).z - bounding_radius(&item.shape);
        self.focal * length / depth.max(NEAR)
    }

    /// Whether a world-space sphere lies entirely outside the view frustum (near plane and the four sides).
    pub(super) fn sphere_outside(&self, centre: Vec3, radius: f32) -> bool {
        let v = self.view_of(centre);
        let tan = self.centre / self.focal;
        let outside_side = |offset: f32, tan: f32| (offset.abs() - tan * v.z) / (1.0 + tan * tan).sqrt() > radius;
        v.z + radius < NEAR || outside_side(v.x, tan.x) || outside_side(v.y, tan.y)
    }
}
