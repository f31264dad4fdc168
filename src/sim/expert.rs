//! Scripted experts: privileged-state waypoint controllers that generate the demonstrations.
//!
//! An expert plans top-down waypoints from the objects' initial poses and streams absolute end-effector targets
//! that move towards the current waypoint at a bounded speed, like a teleoperator with a SpaceMouse at 10 Hz
//! (sec. V-A). It reads only messages (`ObjectPoses`, `RobotState`), so the same code runs in-process and as the
//! `expert` dora node.

use std::f32::consts::PI;

use glam::{Quat, Vec3};

use super::task::{self, TaskKind, BUTTON_TRAVEL, FRUIT_RADII};
use crate::msg::{Action, ObjectPoses, RobotState};

/// Linear speed of the commanded target (m/s) and its yaw rate (rad/s).
const SPEED: f32 = 0.25;
const YAW_RATE: f32 = 1.5;
/// Height of the approach and transport waypoints above the table (m).
const CLEARANCE: f32 = 0.16;
/// The arm counts as arrived when its TCP is this close to the waypoint (m).
const ARRIVAL_TOLERANCE: f32 = 0.01;
const OPEN: f32 = 0.08;
const CLOSED: f32 = 0.0;

#[derive(Clone, Copy, Debug)]
struct Waypoint {
    position: Vec3,
    yaw: f32,
    gripper: f32,
    /// Ticks to wait at the waypoint after arriving (gripper motion, settling).
    dwell: u32,
}

/// Orientation of a top-down TCP (z axis pointing down) turned by `yaw` about world Z.
pub fn top_down(yaw: f32) -> Quat {
    Quat::from_rotation_z(yaw) * Quat::from_rotation_x(PI)
}

/// A scripted expert for one episode.
pub struct Expert {
    waypoints: Vec<Waypoint>,
    next: usize,
    dwell_left: Option<u32>,
    position: Vec3,
    yaw: f32,
    gripper: f32,
    control_dt: f32,
}

fn pose_of(poses: &ObjectPoses, name: &str) -> eyre::Result<(Vec3, Quat)> {
    let i = poses.names.iter().position(|n| n == name).ok_or_else(|| eyre::eyre!("object_poses: no object named `{name}`"))?;
    let p = poses.poses[i];
    Ok((Vec3::new(p[0], p[1], p[2]), Quat::from_xyzw(p[3], p[4], p[5], p[6])))
}

fn yaw_of(rotation: Quat, period: f32) -> f32 {
    let (_, _, yaw) = rotation.to_euler(glam::EulerRot::XYZ);
    (yaw + period / 2.0).rem_euclid(period) - period / 2.0
}

fn pick_and_place(grasp_at: Vec3, grasp_yaw: f32, place_at: Vec3, place_yaw: f32) -> Vec<Waypoint> {
    let w = |position: Vec3, yaw: f32, gripper: f32, dwell: u32| Waypoint { position, yaw, gripper, dwell };
    vec![
        w(grasp_at.with_z(CLEARANCE), grasp_yaw, OPEN, 0),
        w(grasp_at, grasp_yaw, OPEN, 1),
        w(grasp_at, grasp_yaw, CLOSED, 6),
        w(grasp_at.with_z(CLEARANCE), grasp_yaw, CLOSED, 0),
        w(place_at.with_z(CLEARANCE), place_yaw, CLOSED, 0),
        w(place_at, place_yaw, CLOSED, 1),
        w(place_at, place_yaw, OPEN, 5),
        w(place_at.with_z(CLEARANCE), place_yaw, OPEN, 3),
    ]
}

impl Expert {
    /// Plans the waypoints of `task` from the initial object poses and the arm's current state.
    pub fn new(task: TaskKind, poses: &ObjectPoses, state: &RobotState, control_hz: f32) -> eyre::Result<Self> {
        let waypoints = match task {
            TaskKind::PushButton => {
                let (cap, _) = pose_of(poses, "red button")?;
                let press = cap - Vec3::Z * (BUTTON_TRAVEL - 0.002);
                let w = |position: Vec3, dwell: u32| Waypoint { position, yaw: 0.0, gripper: CLOSED, dwell };
                vec![w(cap.with_z(CLEARANCE), 0), w(cap + Vec3::Z * 0.02, 0), w(press, 4), w(cap.with_z(CLEARANCE), 2)]
            }
            TaskKind::StackBlock => {
                let (white, rw) = pose_of(poses, "white block")?;
                let (blue, rb) = pose_of(poses, "blue block")?;
                let quarter = PI / 2.0;
                let on_top = blue + Vec3::Z * (task::BLOCK_BLUE_HALF + task::BLOCK_WHITE_HALF + 0.006);
                pick_and_place(white, yaw_of(rw, quarter), on_top, yaw_of(rb, quarter))
            }
            TaskKind::PlaceFruit => {
                let (fruit, rf) = pose_of(poses, "fruit")?;
                let (plate, _) = pose_of(poses, "plate")?;
                let fruit_yaw = yaw_of(rf, PI);
                let above_plate = plate + Vec3::Z * (FRUIT_RADII.z + 0.02);
                pick_and_place(fruit.with_z(FRUIT_RADII.z), fruit_yaw, above_plate, fruit_yaw)
            }
        };
        let p = state.ee_position;
        let start_yaw = yaw_of(Quat::from_array(state.ee_orientation) * Quat::from_rotation_x(PI), 2.0 * PI);
        Ok(Expert {
            waypoints,
            next: 0,
            dwell_left: None,
            position: Vec3::from(p),
            yaw: start_yaw,
            gripper: state.gripper,
            control_dt: 1.0 / control_hz,
        })
    }

    /// Whether every waypoint has been reached.
    pub fn finished(&self) -> bool {
        self.next >= self.waypoints.len()
    }

    /// The next absolute end-effector command, given the arm's measured state.
    pub fn act(&mut self, state: &RobotState) -> Action {
        if let Some(wp) = self.waypoints.get(self.next).copied() {
            let step = SPEED * self.control_dt;
            let to_go = wp.position - self.position;
            self.position += to_go.clamp_length_max(step);
            self.yaw += (wp.yaw - self.yaw).clamp(-YAW_RATE * self.control_dt, YAW_RATE * self.control_dt);
            self.gripper = wp.gripper;
            let commanded_there = self.position.distance(wp.position) < 1e-4 && (self.yaw - wp.yaw).abs() < 1e-3;
            let arm_there = Vec3::from(state.ee_position).distance(wp.position) < ARRIVAL_TOLERANCE;
            if commanded_there && arm_there {
                let left = self.dwell_left.get_or_insert(wp.dwell);
                if *left == 0 {
                    self.next += 1;
                    self.dwell_left = None;
                } else {
                    *left -= 1;
                }
            }
        }
        Action { position: self.position.to_array(), orientation: top_down(self.yaw).to_array(), gripper: self.gripper }
    }
}
