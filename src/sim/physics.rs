//! Rigid-body physics of the scene with rapier3d: gravity, contacts, the kinematic arm and the grasp constraint.
//!
//! The arm is position-controlled like the real Panda under impedance control (`franka::step_towards` moves the
//! joints towards the end-effector target within the Cartesian and joint speed limits): its links and fingers are
//! kinematic bodies that follow that joint trajectory and push free objects through contacts. Grasping uses a
//! documented constraint: when the gripper is closing and *both* fingers are in contact with the same free object,
//! the fingers stop where they are and a fixed joint ties the object to the hand; opening the gripper releases it.

use glam::{Quat, Vec3};
use rapier3d::prelude::*;

use super::franka::{self, RobotPart};
use super::shape::{Pose, Shape};
use super::task::{Mount, ObjectSpec};

/// Gripper finger speed (m/s of opening width); the Franka Hand moves at up to 0.1 m/s.
const GRIPPER_SPEED: f64 = 0.1;
/// The button cap's spring (acceleration-based motor, 1/s^2 and 1/s): it aims one travel above its upper limit,
/// so the cap rests preloaded at the top and a press needs about 1.4 N at the success depth.
const BUTTON_SPRING: f32 = 4000.0;
const BUTTON_DAMPING: f32 = 120.0;
/// Contact distance (m) below which a finger counts as touching an object.
const TOUCH_DISTANCE: f32 = 0.001;
const OBJECT_FRICTION: f32 = 0.9;
const FINGER_FRICTION: f32 = 1.2;

fn to_rapier(p: &Pose) -> rapier3d::math::Pose {
    rapier3d::math::Pose::from_parts(p.translation, p.rotation)
}

fn from_rapier(p: &rapier3d::math::Pose) -> Pose {
    Pose::new(p.translation, p.rotation)
}

/// A collider for `shape` in its body's frame (parry's cylinders run along Y, ours along Z).
fn collider_for(shape: &Shape) -> ColliderBuilder {
    let z_from_y = Vec3::new(std::f32::consts::FRAC_PI_2, 0.0, 0.0);
    match *shape {
        Shape::Box { half } => ColliderBuilder::cuboid(half.x, half.y, half.z),
        Shape::Cylinder { radius, half_height } => ColliderBuilder::cylinder(half_height, radius).rotation(z_from_y),
        Shape::Sphere { radius } => ColliderBuilder::ball(radius),
        Shape::Capsule { radius, half_height } => ColliderBuilder::capsule_z(half_height, radius),
        Shape::Ellipsoid { radii } => {
            let points = ellipsoid_points(radii, 12, 8);
            ColliderBuilder::convex_hull(&points).expect("an ellipsoid sample has a non-degenerate hull")
        }
    }
}

/// Points on an ellipsoid's surface on a latitude/longitude grid (used for its convex-hull collider).
fn ellipsoid_points(radii: Vec3, around: usize, rings: usize) -> Vec<Vec3> {
    let mut pts = vec![Vec3::new(0.0, 0.0, radii.z), Vec3::new(0.0, 0.0, -radii.z)];
    for r in 1..rings {
        let lat = std::f32::consts::PI * r as f32 / rings as f32;
        for a in 0..around {
            let lon = std::f32::consts::TAU * a as f32 / around as f32;
            pts.push(radii * Vec3::new(lat.sin() * lon.cos(), lat.sin() * lon.sin(), lat.cos()));
        }
    }
    pts
}

struct Grasp {
    object: usize,
    joint: ImpulseJointHandle,
}

/// The physical world: table, task objects, the arm and its gripper.
pub struct Physics {
    world: PhysicsWorld,
    substeps: u32,
    objects: Vec<(RigidBodyHandle, ColliderHandle)>,
    robot: Vec<(RobotPart, RigidBodyHandle)>,
    fingers: [ColliderHandle; 2],
    hand: RigidBodyHandle,
    q: [f64; 7],
    width: f64,
    grasp: Option<Grasp>,
}

impl Physics {
    /// Builds the world with the table top at z = 0, `objects` at their initial poses and the arm at `q` with the
    /// gripper `width` apart. One control tick is `substeps` physics steps of `dt` seconds.
    pub fn new(objects: &[ObjectSpec], q: [f64; 7], width: f64, dt: f32, substeps: u32) -> Self {
        let mut world = PhysicsWorld::new();
        world.gravity = Vec3::new(0.0, 0.0, -9.81);
        world.integration_parameters.dt = dt;
        let table = world.bodies.insert(RigidBodyBuilder::fixed().translation(Vec3::new(0.35, 0.0, -0.02)));
        world.colliders.insert_with_parent(ColliderBuilder::cuboid(0.65, 0.6, 0.02).friction(OBJECT_FRICTION), table, &mut world.bodies);

        let mut handles: Vec<(RigidBodyHandle, ColliderHandle)> = Vec::with_capacity(objects.len());
        for spec in objects {
            let body = match spec.mount {
                Mount::Fixed => RigidBodyBuilder::fixed(),
                Mount::Free { .. } | Mount::Button { .. } => RigidBodyBuilder::dynamic().can_sleep(false),
            };
            let body = world.bodies.insert(body.pose(to_rapier(&spec.pose)));
            let density = match spec.mount {
                Mount::Free { density } => density,
                _ => 500.0,
            };
            let collider = collider_for(&spec.shape).density(density).friction(OBJECT_FRICTION);
            let collider = world.colliders.insert_with_parent(collider, body, &mut world.bodies);
            if let Mount::Button { base, travel } = spec.mount {
                let (base_body, _) = handles[base];
                let rest = spec.pose.translation - objects[base].pose.translation;
                let slider = PrismaticJointBuilder::new(Vec3::Z)
                    .local_anchor1(rest)
                    .local_anchor2(Vec3::ZERO)
                    .limits([-travel, 0.0])
                    .motor_position(travel, BUTTON_SPRING, BUTTON_DAMPING)
                    .contacts_enabled(false);
                world.impulse_joints.insert(base_body, body, slider, true);
            }
            handles.push((body, collider));
        }

        let mut robot = Vec::new();
        let mut fingers = Vec::new();
        let mut hand = None;
        for solid in franka::robot_solids(&q, width) {
            let body = world.bodies.insert(RigidBodyBuilder::kinematic_position_based().pose(to_rapier(&solid.pose)));
            let collider = collider_for(&solid.shape).friction(FINGER_FRICTION);
            let collider = world.colliders.insert_with_parent(collider, body, &mut world.bodies);
            match solid.part {
                RobotPart::LeftFinger | RobotPart::RightFinger => fingers.push(collider),
                RobotPart::Hand => hand = Some(body),
                RobotPart::Link(_) => {}
            }
            robot.push((solid.part, body));
        }
        let fingers: [ColliderHandle; 2] = fingers.try_into().expect("the Panda model has two fingers");
        let hand = hand.expect("the Panda model has a hand");
        Physics { world, substeps, objects: handles, robot, fingers, hand, q, width, grasp: None }
    }

    /// Joint angles (rad) and gripper opening (m).
    pub fn arm(&self) -> ([f64; 7], f64) {
        (self.q, self.width)
    }

    /// Current pose of every object, index-aligned with the specs given to [`Physics::new`].
    pub fn object_poses(&self) -> Vec<Pose> {
        self.objects.iter().map(|(b, _)| from_rapier(self.world.bodies[*b].position())).collect()
    }

    /// Current linear speed of every object (m/s).
    pub fn object_speeds(&self) -> Vec<f32> {
        self.objects.iter().map(|(b, _)| self.world.bodies[*b].linvel().length()).collect()
    }

    /// Index of the object held by the grasp constraint.
    pub fn grasped(&self) -> Option<usize> {
        self.grasp.as_ref().map(|g| g.object)
    }

    /// Advances one control tick towards the end-effector target and gripper width command.
    pub fn step(&mut self, target_position: Vec3, target_orientation: Quat, gripper: f32) {
        let (position, orientation) = (target_position.as_dvec3(), target_orientation.as_dquat());
        let dt = self.world.integration_parameters.dt as f64;
        for _ in 0..self.substeps {
            self.q = franka::step_towards(&self.q, position, orientation, dt);
            self.move_gripper(gripper as f64, dt);
            self.place_robot();
            self.world.step();
            self.update_grasp(gripper as f64);
        }
    }

    fn move_gripper(&mut self, command: f64, dt: f64) {
        if self.grasp.is_some() {
            return;
        }
        let command = command.clamp(0.0, franka::GRIPPER_MAX_WIDTH);
        let step = (command - self.width).clamp(-GRIPPER_SPEED * dt, GRIPPER_SPEED * dt);
        self.width += step;
    }

    fn place_robot(&mut self) {
        for ((part, body), solid) in self.robot.iter().zip(franka::robot_solids(&self.q, self.width)) {
            debug_assert_eq!(*part, solid.part);
            self.world.bodies[*body].set_next_kinematic_position(to_rapier(&solid.pose));
        }
    }

    /// Whether two colliders touch: their surfaces are closer than [`TOUCH_DISTANCE`] (an exact shape distance
    /// query, independent of the solver's contact caching).
    fn touching(&self, finger: ColliderHandle, object: ColliderHandle) -> bool {
        let (a, b) = (&self.world.colliders[finger], &self.world.colliders[object]);
        rapier3d::parry::query::distance(a.position(), a.shape(), b.position(), b.shape())
            .is_ok_and(|d| d.distance < TOUCH_DISTANCE)
    }

    /// Engages the grasp when closing with both fingers on one free object; releases it when commanded open.
    fn update_grasp(&mut self, command: f64) {
        match &self.grasp {
            Some(g) if command > self.width + 0.002 => {
                self.world.impulse_joints.remove(g.joint, true);
                self.grasp = None;
            }
            None if command < self.width => {
                let held = (0..self.objects.len()).find(|&i| {
                    let (body, collider) = self.objects[i];
                    self.world.bodies[body].is_dynamic()
                        && self.world.impulse_joints.attached_joints(body).next().is_none()
                        && self.fingers.iter().all(|f| self.touching(*f, collider))
                });
                if let Some(object) = held {
                    let hand = *self.world.bodies[self.hand].position();
                    let obj = *self.world.bodies[self.objects[object].0].position();
                    let joint = FixedJointBuilder::new().local_frame1(hand.inverse() * obj).local_frame2(rapier3d::math::Pose::IDENTITY);
                    let joint = self.world.impulse_joints.insert(self.hand, self.objects[object].0, joint, true);
                    self.grasp = Some(Grasp { object, joint });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::expert::top_down;
    use crate::sim::render::{Material, Pattern};

    const HALF: f32 = 0.0225;

    fn block_world() -> (Physics, Vec3) {
        let at = Vec3::new(0.5, 0.05, HALF);
        let spec = ObjectSpec {
            name: "white block",
            shape: Shape::Box { half: Vec3::splat(HALF) },
            material: Material { color: Vec3::ONE, specular: 0.0, pattern: Pattern::Plain },
            pose: Pose::from_translation(at),
            mount: Mount::Free { density: 600.0 },
            instance: 3,
        };
        (Physics::new(&[spec], franka::Q_HOME, franka::GRIPPER_MAX_WIDTH, 0.005, 20), at)
    }

    /// Moves the TCP to `target` with the gripper commanded to `gripper` for `ticks` control ticks.
    fn drive(p: &mut Physics, target: Vec3, gripper: f32, ticks: usize) {
        for _ in 0..ticks {
            p.step(target, top_down(0.0), gripper);
        }
    }

    #[test]
    fn grasp_engages_only_when_both_fingers_touch_and_releases_on_open() {
        let (mut p, at) = block_world();
        drive(&mut p, at + Vec3::Z * 0.15, 0.08, 15);
        drive(&mut p, at, 0.08, 15);
        assert_eq!(p.grasped(), None, "an open gripper around the block must not hold it");
        drive(&mut p, at, 0.0, 10);
        assert_eq!(p.grasped(), Some(0), "closing on the block must engage the grasp");
        let (_, width) = p.arm();
        assert!((width - 2.0 * HALF as f64).abs() < 0.004, "fingers stop at the block's width, got {width}");
        drive(&mut p, at + Vec3::Z * 0.15, 0.0, 15);
        assert!(p.object_poses()[0].translation.z > 0.1, "the held block is lifted with the hand");
        drive(&mut p, at + Vec3::Z * 0.15, 0.08, 10);
        assert_eq!(p.grasped(), None, "opening releases the block");
        drive(&mut p, at + Vec3::Z * 0.15, 0.08, 15);
        assert!(p.object_poses()[0].translation.z < HALF + 0.005, "a released block falls back to the table");
    }

    #[test]
    fn closing_in_the_air_grasps_nothing() {
        let (mut p, at) = block_world();
        drive(&mut p, at + Vec3::new(0.0, 0.15, 0.15), 0.0, 15);
        assert_eq!(p.grasped(), None);
        assert!(p.arm().1 < 1e-6, "an empty gripper closes fully");
    }
}
