//! Scripted experts: privileged-state waypoint controllers that generate the demonstrations.
//!
//! An expert plans top-down waypoints from the objects' initial poses and streams absolute end-effector targets
//! that move towards the current waypoint at a bounded speed, like a teleoperator with a SpaceMouse at 10 Hz
//! (sec. V-A). It reads only messages (`ObjectPoses`, `RobotState`), so the same code runs in-process and as the
//! `expert` dora node.
//!
//! Pick-and-place experts watch the carried object while they carry it: when it is no longer in the hand (a missed
//! or lost grasp) they re-plan the whole pick from the objects' current poses, up to [`MAX_REGRASPS`] times. Clean
//! expert episodes rarely need it; episodes collected with execution noise ([`crate::collect::ExecutionNoise`])
//! do, and those re-grasps are the recoveries a learned policy otherwise never sees.

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
/// Waypoints of [`pick_and_place`] during which the object must be in the hand: from the lift after the grasp to
/// the descent onto the target, before the gripper opens.
const CARRYING: std::ops::Range<usize> = 3..6;
/// The waypoint of [`pick_and_place`] that starts the transport; from it on the place waypoints are shifted by the
/// object's measured offset in the hand.
const TRANSPORT: usize = 4;
/// Waypoints that lower onto or act on the target (pick-and-place: the place descent and the release; push-button:
/// the approach and the press), which the collector keeps free of execution noise.
const ON_TARGET_PICK_AND_PLACE: std::ops::Range<usize> = 5..7;
const ON_TARGET_PUSH: std::ops::Range<usize> = 1..3;
/// A carried object whose centre is farther than this from the TCP has left the hand (m); a held object stays
/// within about 3 cm of it (grasp offset included).
const HOLD_DISTANCE: f32 = 0.05;
/// Re-planned picks per episode at most.
pub const MAX_REGRASPS: u32 = 3;

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
    task: TaskKind,
    waypoints: Vec<Waypoint>,
    next: usize,
    dwell_left: Option<u32>,
    position: Vec3,
    yaw: f32,
    gripper: f32,
    control_dt: f32,
    /// What the collector adds to the commands it executes; arrival is judged in the command frame.
    execution_offset: Vec3,
    regrasps: u32,
    /// Whether the place waypoints of the current pick already account for where the object sits in the hand.
    placing_object: bool,
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

/// The waypoints of `task` from the objects' current poses.
fn plan(task: TaskKind, poses: &ObjectPoses) -> eyre::Result<Vec<Waypoint>> {
    Ok(match task {
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
    })
}

impl Expert {
    /// Plans the waypoints of `task` from the initial object poses and the arm's current state.
    pub fn new(task: TaskKind, poses: &ObjectPoses, state: &RobotState, control_hz: f32) -> eyre::Result<Self> {
        let waypoints = plan(task, poses)?;
        let p = state.ee_position;
        let start_yaw = yaw_of(Quat::from_array(state.ee_orientation) * Quat::from_rotation_x(PI), 2.0 * PI);
        Ok(Expert {
            task,
            waypoints,
            next: 0,
            dwell_left: None,
            position: Vec3::from(p),
            yaw: start_yaw,
            gripper: state.gripper,
            control_dt: 1.0 / control_hz,
            execution_offset: Vec3::ZERO,
            regrasps: 0,
            placing_object: false,
        })
    }

    /// Whether every waypoint has been reached.
    pub fn finished(&self) -> bool {
        self.next >= self.waypoints.len()
    }

    /// Picks re-planned so far because the carried object left the hand.
    pub fn regrasps(&self) -> u32 {
        self.regrasps
    }

    /// Whether the expert is lowering onto or acting on its target ([`ON_TARGET_PICK_AND_PLACE`],
    /// [`ON_TARGET_PUSH`]): the collector executes these phases without noise, so a noisy demonstration still ends
    /// on target and shows the offset being corrected on the way down.
    pub fn on_target(&self) -> bool {
        let phase = if self.task.carried_object().is_some() { ON_TARGET_PICK_AND_PLACE } else { ON_TARGET_PUSH };
        phase.contains(&self.next)
    }

    /// Sets the offset the caller adds to this expert's commands before executing them (DART-style noise
    /// injection, [`crate::collect::ExecutionNoise`]): the expert keeps streaming its clean commands, the labels,
    /// and judges arrival at a waypoint by the measured TCP minus this offset, so the noise delays no phase.
    pub fn set_execution_offset(&mut self, offset: Vec3) {
        self.execution_offset = offset;
    }

    /// The next absolute end-effector command, given the arm's measured state and the objects' current poses.
    pub fn act(&mut self, state: &RobotState, poses: &ObjectPoses) -> eyre::Result<Action> {
        if let Some(carried) = self.task.carried_object() {
            let (object, _) = pose_of(poses, carried)?;
            let tcp = Vec3::from(state.ee_position);
            self.replan_if_dropped(object, tcp, poses)?;
            self.align_object_with_target(object, tcp);
        }
        if let Some(wp) = self.waypoints.get(self.next).copied() {
            let step = SPEED * self.control_dt;
            let to_go = wp.position - self.position;
            self.position += to_go.clamp_length_max(step);
            self.yaw += (wp.yaw - self.yaw).clamp(-YAW_RATE * self.control_dt, YAW_RATE * self.control_dt);
            self.gripper = wp.gripper;
            let commanded_there = self.position.distance(wp.position) < 1e-4 && (self.yaw - wp.yaw).abs() < 1e-3;
            let arm = Vec3::from(state.ee_position) - self.execution_offset;
            let arm_there = arm.distance(wp.position) < ARRIVAL_TOLERANCE;
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
        Ok(Action { position: self.position.to_array(), orientation: top_down(self.yaw).to_array(), gripper: self.gripper })
    }

    /// Re-plans the pick from the current poses when the carried object (at `object`) is more than
    /// [`HOLD_DISTANCE`] from the TCP while it should be in the hand ([`CARRYING`]).
    fn replan_if_dropped(&mut self, object: Vec3, tcp: Vec3, poses: &ObjectPoses) -> eyre::Result<()> {
        if CARRYING.contains(&self.next) && self.regrasps < MAX_REGRASPS && object.distance(tcp) > HOLD_DISTANCE {
            self.waypoints = plan(self.task, poses)?;
            self.next = 0;
            self.dwell_left = None;
            self.regrasps += 1;
            self.placing_object = false;
        }
        Ok(())
    }

    /// Once the object hangs in the hand (the transport starts), shifts the place waypoints by its horizontal offset
    /// from the TCP, so that the object, not the hand, ends above the target: a grasp off the object's centre (a
    /// noisy or re-planned one) would otherwise carry its offset into the placement.
    fn align_object_with_target(&mut self, object: Vec3, tcp: Vec3) {
        if self.next != TRANSPORT || self.placing_object {
            return;
        }
        let in_hand = (object - tcp).with_z(0.0);
        for wp in &mut self.waypoints[TRANSPORT..] {
            wp.position -= in_hand;
        }
        self.placing_object = true;
    }
}
