//! What the driver needs from an arm, whichever it is: homing, a servo that follows the guard's targets, and the
//! measured state.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use glue::arm::{CommandGuard, Pose};
use glue::msg::RobotState;

/// The guard shared by the dora thread (which accepts actions into it) and the servo thread (which reads its
/// target every control period), and the clock both measure time on.
#[derive(Clone)]
pub struct Shared {
    pub guard: Arc<Mutex<CommandGuard>>,
    pub clock: Instant,
}

impl Shared {
    /// The pose and gripper width to follow now, `None` to hold (see `CommandGuard::target`).
    pub fn target(&self) -> Option<(Pose, f64)> {
        let now = self.clock.elapsed().as_secs_f64();
        self.guard.lock().expect("guard lock").target(now).map(|t| (t.pose, t.gripper))
    }
}

/// One robot arm behind the driver: the real Franka (`franka.rs`) or its dry run (`dry_run.rs`).
pub trait Arm {
    /// Moves to the `home` joint angles and opens the gripper (blocking; the servo is stopped).
    fn home(&mut self, home: &[f64; 7]) -> eyre::Result<()>;
    /// Starts the servo: every control period it steps the commanded pose toward `shared.target()` within the
    /// guard's speed limits (`glue::arm::Servo`), and holds when there is none.
    fn start(&mut self, shared: Shared) -> eyre::Result<()>;
    /// The newest measured state; an error once the servo has failed (a reflex, a lost connection).
    fn state(&mut self) -> eyre::Result<RobotState>;
    /// Brings the servo to rest and stops it; the arm holds its pose.
    fn stop(&mut self) -> eyre::Result<()>;
}

/// A [`RobotState`] from joint angles, gripper width and the TCP pose.
pub fn robot_state(q: &[f64; 7], gripper: f64, tcp: &Pose) -> RobotState {
    RobotState {
        joints: q.map(|v| v as f32),
        gripper: gripper.clamp(0.0, 0.08) as f32,
        ee_position: tcp.position.to_array().map(|v| v as f32),
        ee_orientation: tcp.orientation.normalize().to_array().map(|v| v as f32),
    }
}
