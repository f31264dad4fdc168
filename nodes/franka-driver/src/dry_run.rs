//! The dry run: the driver's whole path (guard, servo, episodes, verdicts) with no robot attached. The measured
//! joints follow the servo's commanded pose through the simulator's Franka kinematics
//! (`glue::sim::franka::step_towards`: damped least squares within the joint velocity limits), the gripper moves at
//! 0.1 m/s. Use it to check a graph, a camera and a policy before enabling the arm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glue::arm::{Pose, SafetyConfig, Servo};
use glue::msg::RobotState;
use glue::sim::franka::{step_towards, tcp_pose};

use crate::arm::{Arm, Shared, robot_state};

/// Servo period of the dry run, s (the real Franka runs at 1 kHz).
const PERIOD: f64 = 0.002;
/// Gripper speed, m/s.
const GRIPPER_SPEED: f64 = 0.1;

struct Joints {
    q: [f64; 7],
    gripper: f64,
}

pub struct DryRun {
    safety: SafetyConfig,
    joints: Arc<Mutex<Joints>>,
    stop: Arc<AtomicBool>,
    servo: Option<JoinHandle<()>>,
}

impl DryRun {
    pub fn new(safety: SafetyConfig) -> Self {
        let joints = Joints { q: glue::sim::franka::Q_HOME, gripper: 0.08 };
        Self { safety, joints: Arc::new(Mutex::new(joints)), stop: Arc::new(AtomicBool::new(false)), servo: None }
    }
}

fn pose(q: &[f64; 7]) -> Pose {
    let (position, orientation) = tcp_pose(q);
    Pose { position, orientation }
}

impl Arm for DryRun {
    fn home(&mut self, home: &[f64; 7]) -> eyre::Result<()> {
        eyre::ensure!(self.servo.is_none(), "dry run: home while the servo runs");
        *self.joints.lock().expect("joints lock") = Joints { q: *home, gripper: 0.08 };
        Ok(())
    }

    fn start(&mut self, shared: Shared) -> eyre::Result<()> {
        let (joints, stop, safety) = (self.joints.clone(), self.stop.clone(), self.safety.clone());
        stop.store(false, Ordering::SeqCst);
        let start = pose(&joints.lock().expect("joints lock").q);
        self.servo = Some(std::thread::spawn(move || {
            let mut servo = Servo::new(start);
            let mut last = Instant::now();
            loop {
                std::thread::sleep(Duration::from_secs_f64(PERIOD));
                let dt = last.elapsed().as_secs_f64().min(0.01);
                last = Instant::now();
                let stopping = stop.load(Ordering::SeqCst);
                let target = if stopping { None } else { shared.target() };
                let commanded = servo.step(target.as_ref().map(|(p, _)| p), dt, &safety);
                let mut j = joints.lock().expect("joints lock");
                j.q = step_towards(&j.q, commanded.position, commanded.orientation, dt);
                if let Some((_, width)) = target {
                    j.gripper += (width - j.gripper).clamp(-GRIPPER_SPEED * dt, GRIPPER_SPEED * dt);
                }
                if stopping && servo.at_rest() {
                    return;
                }
            }
        }));
        Ok(())
    }

    fn state(&mut self) -> eyre::Result<RobotState> {
        let j = self.joints.lock().expect("joints lock");
        Ok(robot_state(&j.q, j.gripper, &pose(&j.q)))
    }

    fn stop(&mut self) -> eyre::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(servo) = self.servo.take() {
            servo.join().map_err(|_| eyre::eyre!("dry run: the servo thread panicked"))?;
        }
        Ok(())
    }
}
