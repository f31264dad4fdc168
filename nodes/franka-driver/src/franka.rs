//! The real Franka Panda through the Franka Control Interface (`libfranka-rs`, a Rust port of libfranka 0.9;
//! robot system image >= 4.2, Panda only). The arm runs a Cartesian pose motion generator under the robot's
//! Cartesian impedance controller at 1 kHz with libfranka's rate limiting on; each period the commanded pose steps
//! toward the guard's target (`glue::arm::Servo`). The Franka Hand runs in its own thread, since its commands
//! block for the whole motion: a width change beyond `GRIPPER_DEADBAND` opens with a move or closes with a
//! grasp (force `GRASP_FORCE`, wide tolerances, so that it holds whatever it closes on).
//!
//! Not run on hardware by this project (no robot here): what runs in CI is the dry run, through the same driver.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use eyre::WrapErr;
use franka::{CartesianPose, ControllerMode, Gripper, MotionFinished, RealtimeConfig, Robot};
use glam::{DMat3, DMat4, DQuat};
use glue::arm::{Pose, SafetyConfig, Servo};
use glue::msg::RobotState;

use crate::arm::{Arm, Shared, robot_state};

/// Gripper speed for moves and grasps, m/s.
const GRIPPER_SPEED: f64 = 0.1;
/// A commanded width change smaller than this is not sent to the hand, m.
const GRIPPER_DEADBAND: f64 = 0.01;

/// The Franka's settings: `ROBOT_IP`, `REALTIME` (`enforce`, libfranka's default, needs a PREEMPT_RT kernel;
/// `ignore` on a stock kernel), `GRASP_FORCE` (N), `HOME_SPEED` (libfranka's joint-motion speed factor).
pub struct FrankaConfig {
    pub ip: String,
    pub realtime: RealtimeConfig,
    pub grasp_force: f64,
    pub home_speed: f64,
}

/// The newest measurements, written by the servo and gripper threads.
#[derive(Default)]
struct Measured {
    q: Option<[f64; 7]>,
    tcp: Option<Pose>,
    gripper: Option<f64>,
    error: Option<String>,
}

pub struct Franka {
    config: FrankaConfig,
    safety: SafetyConfig,
    robot: Option<Robot>,
    measured: Arc<Mutex<Measured>>,
    stop: Arc<AtomicBool>,
    servo: Option<JoinHandle<Robot>>,
    /// The episode's targets for the hand's thread: set by `start`, cleared by `stop`.
    hand_target: Arc<Mutex<Option<Shared>>>,
}

/// A column-major homogeneous transform (libfranka's `O_T_EE`) as a pose.
fn pose_of(m: &[f64; 16]) -> Pose {
    let m = DMat4::from_cols_array(m);
    Pose { position: m.w_axis.truncate(), orientation: DQuat::from_mat3(&DMat3::from_mat4(m)).normalize() }
}

fn matrix_of(p: &Pose) -> [f64; 16] {
    DMat4::from_rotation_translation(p.orientation, p.position).to_cols_array()
}

impl Franka {
    /// Connects to the arm and its hand and sets libfranka's default collision behaviour and impedances.
    pub fn connect(config: FrankaConfig, safety: SafetyConfig) -> eyre::Result<Self> {
        let mut robot = Robot::new(&config.ip, config.realtime, None)
            .map_err(|e| eyre::eyre!("franka: connecting to the arm at ROBOT_IP={}: {e}", config.ip))?;
        robot.set_default_behavior().map_err(|e| eyre::eyre!("franka: set_default_behavior: {e}"))?;
        let measured = Arc::new(Mutex::new(Measured::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut hand = Gripper::new(&config.ip).map_err(|e| eyre::eyre!("franka: connecting to the hand at {}: {e}", config.ip))?;
        let width = hand.read_once().map_err(|e| eyre::eyre!("franka: reading the hand: {e}"))?.width;
        measured.lock().expect("measured lock").gripper = Some(width);
        let state = robot.read_once().map_err(|e| eyre::eyre!("franka: reading the arm: {e}"))?;
        {
            let mut m = measured.lock().expect("measured lock");
            m.q = Some(state.q);
            m.tcp = Some(pose_of(&state.O_T_EE));
        }
        let arm = Self { config, safety, robot: Some(robot), measured, stop, servo: None, hand_target: Arc::default() };
        arm.spawn_hand(hand);
        Ok(arm)
    }

    /// The hand's thread: follows the guard's gripper width while a servo runs (`stop` clear), idles otherwise.
    fn spawn_hand(&self, mut hand: Gripper) {
        let (measured, force, shared) = (self.measured.clone(), self.config.grasp_force, self.hand_target.clone());
        std::thread::spawn(move || {
            let mut sent = 0.08;
            loop {
                std::thread::sleep(Duration::from_millis(20));
                let target = shared.lock().expect("hand lock").as_ref().and_then(Shared::target);
                let Some((_, width)) = target else { continue };
                if (width - sent).abs() < GRIPPER_DEADBAND {
                    continue;
                }
                let result = if width < sent {
                    hand.grasp(width, GRIPPER_SPEED, force, Some(0.08), Some(0.08))
                } else {
                    hand.move_gripper(width, GRIPPER_SPEED)
                };
                sent = width;
                let read = hand.read_once();
                let mut m = measured.lock().expect("measured lock");
                match (result, read) {
                    (Err(e), _) | (_, Err(e)) => m.error = Some(format!("hand: {e}")),
                    (Ok(_), Ok(state)) => m.gripper = Some(state.width),
                }
            }
        });
    }
}

impl Arm for Franka {
    fn home(&mut self, home: &[f64; 7]) -> eyre::Result<()> {
        let robot = self.robot.as_mut().ok_or_else(|| eyre::eyre!("franka: home while the servo runs"))?;
        robot.joint_motion(self.config.home_speed, home).map_err(|e| eyre::eyre!("franka: moving home: {e}"))?;
        let state = robot.read_once().map_err(|e| eyre::eyre!("franka: reading the arm: {e}"))?;
        let mut m = self.measured.lock().expect("measured lock");
        m.q = Some(state.q);
        m.tcp = Some(pose_of(&state.O_T_EE));
        Ok(())
    }

    fn start(&mut self, shared: Shared) -> eyre::Result<()> {
        let mut robot = self.robot.take().ok_or_else(|| eyre::eyre!("franka: the servo already runs"))?;
        let (measured, stop, safety) = (self.measured.clone(), self.stop.clone(), self.safety.clone());
        stop.store(false, Ordering::SeqCst);
        *self.hand_target.lock().expect("hand lock") = Some(shared.clone());
        self.servo = Some(std::thread::spawn(move || {
            let mut servo: Option<Servo> = None;
            let result = robot.control_cartesian_pose(
                |state, period| {
                    let servo = servo.get_or_insert_with(|| Servo::new(pose_of(&state.O_T_EE_c)));
                    {
                        let mut m = measured.lock().expect("measured lock");
                        m.q = Some(state.q);
                        m.tcp = Some(pose_of(&state.O_T_EE));
                    }
                    let stopping = stop.load(Ordering::SeqCst);
                    let target = if stopping { None } else { shared.target() };
                    let commanded = servo.step(target.as_ref().map(|(p, _)| p), period.as_secs_f64(), &safety);
                    let out = CartesianPose::new(matrix_of(&commanded), None);
                    if stopping && servo.at_rest() { out.motion_finished() } else { out }
                },
                ControllerMode::CartesianImpedance,
                true,
                None,
            );
            if let Err(e) = result {
                measured.lock().expect("measured lock").error = Some(format!("arm: {e}"));
            }
            robot
        }));
        Ok(())
    }

    fn state(&mut self) -> eyre::Result<RobotState> {
        let m = self.measured.lock().expect("measured lock");
        if let Some(error) = &m.error {
            eyre::bail!("franka: {error}");
        }
        let (Some(q), Some(tcp), Some(gripper)) = (m.q, m.tcp, m.gripper) else {
            eyre::bail!("franka: no state measured yet")
        };
        Ok(robot_state(&q, gripper, &tcp))
    }

    fn stop(&mut self) -> eyre::Result<()> {
        *self.hand_target.lock().expect("hand lock") = None;
        self.stop.store(true, Ordering::SeqCst);
        if let Some(servo) = self.servo.take() {
            let robot = servo.join().map_err(|_| eyre::eyre!("franka: the servo thread panicked"))?;
            self.robot = Some(robot);
        }
        let error = self.measured.lock().expect("measured lock").error.clone();
        error.map_or(Ok(()), |e| Err(eyre::eyre!("franka: {e}"))).wrap_err("franka: stopping the servo")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glam::DVec3;

    #[test]
    fn poses_round_trip_through_libfrankas_column_major_matrices() {
        let p = Pose { position: DVec3::new(0.4, -0.1, 0.3), orientation: DQuat::from_euler(glam::EulerRot::XYZ, 3.0, 0.2, -0.7) };
        let m = matrix_of(&p);
        assert_eq!(&m[12..16], &[0.4, -0.1, 0.3, 1.0], "translation in the last column");
        let back = pose_of(&m);
        assert!(back.position.distance(p.position) < 1e-12);
        assert!(back.orientation.angle_between(p.orientation) < 1e-9);
    }
}
