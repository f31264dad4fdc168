//! Between the policy's 10 Hz actions and a physical arm's 1 kHz set-points: the checks every robot command passes
//! (DESIGN.md: "finite values, joint/workspace/velocity limits, and a watchdog that holds position when commands
//! stop arriving") and the bounded-speed servo that moves the commanded pose toward the latest target.
//!
//! [`CommandGuard`] keeps the latest accepted target (validated as an [`Action`], its position clamped into the
//! workspace box) and forgets it once it is older than the watchdog, so the arm holds where it is. [`Servo`]
//! advances the commanded pose toward the target every control period with a speed and acceleration bound
//! (linear) and a speed bound (angular). Both are used by `nodes/franka-driver`, for the real Franka (whose
//! controller adds its own rate limiting on top) and for its dry run; neither knows dora or libfranka.

use eyre::{Result, ensure};
use glam::{DQuat, DVec3};

use crate::msg::{Action, Message};

/// An end-effector pose in the robot base frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub position: DVec3,
    pub orientation: DQuat,
}

/// The arm's command limits (the `franka-driver` node's `WORKSPACE`, `MAX_SPEED`, `MAX_ACCEL`,
/// `MAX_ANGULAR_SPEED`, `WATCHDOG_MS` settings).
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyConfig {
    /// Lower corner of the box the TCP target is clamped into, m, base frame.
    pub workspace_min: [f64; 3],
    /// Upper corner of that box.
    pub workspace_max: [f64; 3],
    /// TCP speed bound, m/s.
    pub max_speed: f64,
    /// TCP acceleration bound, m/s².
    pub max_accel: f64,
    /// Rotation speed bound, rad/s.
    pub max_angular_speed: f64,
    /// A target older than this is dropped and the arm holds, s.
    pub watchdog_s: f64,
}

impl Default for SafetyConfig {
    /// The simulator's tasks (objects at x 0.38-0.62 m, y ±0.18 m on a table at z = 0) with margin, at a tenth
    /// of the Panda's Cartesian speed limit (1.7 m/s), and three missed 10 Hz ticks before holding.
    fn default() -> Self {
        Self {
            workspace_min: [0.2, -0.4, 0.01],
            workspace_max: [0.8, 0.4, 0.6],
            max_speed: 0.25,
            max_accel: 1.0,
            max_angular_speed: 1.0,
            watchdog_s: 0.3,
        }
    }
}

impl SafetyConfig {
    /// Parses `WORKSPACE`-style text, `xmin,ymin,zmin,xmax,ymax,zmax` in metres, into the box corners.
    pub fn parse_workspace(text: &str) -> Result<([f64; 3], [f64; 3])> {
        let v: Vec<f64> = text
            .split(',')
            .map(|s| s.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| eyre::eyre!("workspace {text:?}: expected xmin,ymin,zmin,xmax,ymax,zmax in metres ({e})"))?;
        ensure!(v.len() == 6, "workspace {text:?}: expected 6 numbers xmin,ymin,zmin,xmax,ymax,zmax, got {}", v.len());
        Ok(([v[0], v[1], v[2]], [v[3], v[4], v[5]]))
    }

    /// Rejects a box with a corner out of order, and bounds that are not finite and positive.
    pub fn check(&self) -> Result<()> {
        for (axis, (lo, hi)) in ["x", "y", "z"].iter().zip(self.workspace_min.iter().zip(&self.workspace_max)) {
            ensure!(lo.is_finite() && hi.is_finite() && lo < hi, "workspace {axis}: expected finite min < max, got {lo} .. {hi}");
        }
        for (name, v) in [
            ("max_speed", self.max_speed),
            ("max_accel", self.max_accel),
            ("max_angular_speed", self.max_angular_speed),
            ("watchdog_s", self.watchdog_s),
        ] {
            ensure!(v.is_finite() && v > 0.0, "{name}: expected a finite positive number, got {v}");
        }
        Ok(())
    }

    fn clamp(&self, p: DVec3) -> DVec3 {
        p.clamp(DVec3::from(self.workspace_min), DVec3::from(self.workspace_max))
    }
}

/// A target the guard accepted: the pose (clamped into the workspace) and the gripper width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub pose: Pose,
    /// Gripper opening width, m, in `[0, 0.08]`.
    pub gripper: f64,
    /// How far the clamp moved the requested position, m (0 inside the workspace).
    pub clamped_by: f64,
}

/// The latest valid target and when it came; see the module doc.
#[derive(Debug, Clone)]
pub struct CommandGuard {
    config: SafetyConfig,
    latest: Option<(Target, f64)>,
}

impl CommandGuard {
    pub fn new(config: SafetyConfig) -> Result<Self> {
        config.check()?;
        Ok(Self { config, latest: None })
    }

    /// Validates `action` (finite, unit quaternion, gripper in range: the [`Action`] contract), clamps its position
    /// into the workspace and makes it the target from time `now_s`. An invalid action is refused with the field
    /// named and also drops the current target, so the arm holds rather than keep following an older command.
    pub fn accept(&mut self, action: &Action, now_s: f64) -> Result<Target> {
        if let Err(e) = action.validate() {
            self.latest = None;
            return Err(eyre::eyre!("{e}"));
        }
        let requested = DVec3::from(action.position.map(f64::from));
        let position = self.config.clamp(requested);
        let orientation = DQuat::from_array(action.orientation.map(f64::from)).normalize();
        let target = Target {
            pose: Pose { position, orientation },
            gripper: f64::from(action.gripper),
            clamped_by: position.distance(requested),
        };
        self.latest = Some((target, now_s));
        Ok(target)
    }

    /// The target to follow at `now_s`: `None` (hold) before the first command, after an invalid one, after
    /// [`CommandGuard::hold`], and once the latest is older than the watchdog.
    pub fn target(&self, now_s: f64) -> Option<Target> {
        self.latest.filter(|&(_, at)| now_s - at <= self.config.watchdog_s).map(|(t, _)| t)
    }

    /// Forgets the target: the arm holds (a new episode, a stopped policy).
    pub fn hold(&mut self) {
        self.latest = None;
    }
}

/// The commanded pose, advanced toward a target once per control period.
#[derive(Debug, Clone)]
pub struct Servo {
    commanded: Pose,
    /// Current TCP velocity of the commanded pose, m/s.
    velocity: DVec3,
}

impl Servo {
    /// Starts at the arm's current commanded pose, at rest.
    pub fn new(start: Pose) -> Self {
        Self { commanded: start, velocity: DVec3::ZERO }
    }

    pub fn commanded(&self) -> Pose {
        self.commanded
    }

    /// Whether the commanded pose is at rest (zero linear velocity): where a motion may end.
    pub fn at_rest(&self) -> bool {
        self.velocity == DVec3::ZERO
    }

    /// One control period of `dt` s toward `target` (`None`: come to rest where the commanded pose is).
    ///
    /// Linear: the speed toward the target is at most `max_speed`, at most `sqrt(2 · max_accel · distance)` so that
    /// it can stop at the target, and changes by at most `max_accel · dt` per period. Angular: a slerp step of at most
    /// `max_angular_speed · dt`.
    pub fn step(&mut self, target: Option<&Pose>, dt: f64, config: &SafetyConfig) -> Pose {
        let goal = target.copied().unwrap_or(self.commanded);
        let to_goal = goal.position - self.commanded.position;
        let distance = to_goal.length();
        let speed = config.max_speed.min((2.0 * config.max_accel * distance).sqrt());
        let desired = if distance > 1e-9 { to_goal * (speed / distance) } else { DVec3::ZERO };
        let dv = (desired - self.velocity).clamp_length_max(config.max_accel * dt);
        self.velocity += dv;
        let step = self.velocity * dt;
        // Never step past the goal (the last period of an approach).
        self.commanded.position = if step.length() >= distance && distance > 0.0 && step.dot(to_goal) > 0.0 {
            self.velocity = DVec3::ZERO;
            goal.position
        } else {
            self.commanded.position + step
        };
        let angle = self.commanded.orientation.angle_between(goal.orientation);
        let max_angle = config.max_angular_speed * dt;
        self.commanded.orientation = if angle <= max_angle {
            goal.orientation
        } else {
            self.commanded.orientation.slerp(goal.orientation, max_angle / angle).normalize()
        };
        self.commanded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(position: [f32; 3]) -> Action {
        Action { position, orientation: [1.0, 0.0, 0.0, 0.0], gripper: 0.04 }
    }

    #[test]
    fn a_target_outside_the_workspace_is_clamped_to_its_boundary() {
        let mut guard = CommandGuard::new(SafetyConfig::default()).unwrap();
        let t = guard.accept(&action([1.5, 0.0, -0.2]), 0.0).unwrap();
        assert_eq!(t.pose.position, DVec3::new(0.8, 0.0, 0.01));
        assert!((t.clamped_by - (0.7f64.powi(2) + 0.21f64.powi(2)).sqrt()).abs() < 1e-6);
        let inside = guard.accept(&action([0.5, 0.1, 0.2]), 0.0).unwrap();
        assert_eq!(inside.clamped_by, 0.0);
    }

    #[test]
    fn an_invalid_action_is_refused_by_field_and_the_arm_holds() {
        let mut guard = CommandGuard::new(SafetyConfig::default()).unwrap();
        guard.accept(&action([0.5, 0.0, 0.2]), 0.0).unwrap();
        let mut bad = action([0.5, 0.0, 0.2]);
        bad.gripper = f32::NAN;
        let err = guard.accept(&bad, 0.05).unwrap_err().to_string();
        assert!(err.contains("gripper"), "{err}");
        assert_eq!(guard.target(0.05), None, "the older target must not be followed after an invalid command");
        let mut bad = action([0.5, f32::INFINITY, 0.2]);
        bad.orientation = [0.0, 0.0, 0.0, 2.0];
        assert!(guard.accept(&bad, 0.1).is_err());
        assert_eq!(guard.target(0.1), None);
    }

    #[test]
    fn the_watchdog_drops_a_target_once_it_is_older_than_the_timeout() {
        let mut guard = CommandGuard::new(SafetyConfig { watchdog_s: 0.3, ..SafetyConfig::default() }).unwrap();
        assert_eq!(guard.target(0.0), None, "no command yet: hold");
        guard.accept(&action([0.5, 0.0, 0.2]), 1.0).unwrap();
        assert!(guard.target(1.29).is_some());
        assert_eq!(guard.target(1.31), None);
        guard.accept(&action([0.5, 0.0, 0.2]), 2.0).unwrap();
        guard.hold();
        assert_eq!(guard.target(2.0), None);
    }

    #[test]
    fn a_bad_configuration_is_refused_by_name() {
        let err = SafetyConfig { workspace_min: [0.9, -0.4, 0.0], ..SafetyConfig::default() }.check().unwrap_err();
        assert!(err.to_string().contains("workspace x"), "{err}");
        let err = SafetyConfig { max_speed: f64::NAN, ..SafetyConfig::default() }.check().unwrap_err();
        assert!(err.to_string().contains("max_speed"), "{err}");
        assert!(SafetyConfig::parse_workspace("0.2,-0.4,0.0,0.8,0.4").is_err());
        assert_eq!(SafetyConfig::parse_workspace("0.2,-0.4,0,0.8,0.4,0.6").unwrap(), ([0.2, -0.4, 0.0], [0.8, 0.4, 0.6]));
    }

    #[test]
    fn the_servo_respects_speed_and_acceleration_and_stops_on_the_target() {
        let config = SafetyConfig::default();
        let start = Pose { position: DVec3::new(0.5, 0.0, 0.3), orientation: DQuat::from_rotation_x(std::f64::consts::PI) };
        let goal = Pose {
            position: DVec3::new(0.5, 0.2, 0.1),
            orientation: start.orientation * DQuat::from_rotation_z(0.5),
        };
        let (mut servo, dt) = (Servo::new(start), 1e-3);
        let (mut previous, mut previous_speed) = (start, 0.0);
        let mut reached = None;
        for i in 0..5_000 {
            let now = servo.step(Some(&goal), dt, &config);
            let speed = now.position.distance(previous.position) / dt;
            assert!(speed <= config.max_speed + 1e-9, "step {i}: {speed} m/s");
            assert!((speed - previous_speed).abs() <= config.max_accel * dt + 1e-9 || now.position == goal.position, "step {i}: accel");
            assert!(now.orientation.angle_between(previous.orientation) <= config.max_angular_speed * dt + 1e-9);
            (previous, previous_speed) = (now, speed);
            if now.position == goal.position && now.orientation.angle_between(goal.orientation) < 1e-6 {
                reached = Some(i);
                break;
            }
        }
        let reached = reached.expect("the servo reaches the goal") as f64 * dt;
        // 0.283 m at 0.25 m/s with 1 m/s² ramps: about 1.38 s.
        assert!((1.2..1.6).contains(&reached), "reached after {reached} s");
        let held = servo.step(None, dt, &config);
        assert_eq!(held, goal, "without a target the servo stays where it is");
        assert!(servo.at_rest());
    }

    #[test]
    fn without_a_target_the_servo_brakes_to_rest_within_the_acceleration_bound() {
        let config = SafetyConfig::default();
        let start = Pose { position: DVec3::new(0.5, 0.0, 0.3), orientation: DQuat::IDENTITY };
        let far = Pose { position: DVec3::new(0.5, 0.3, 0.3), ..start };
        let (mut servo, dt) = (Servo::new(start), 1e-3);
        for _ in 0..300 {
            servo.step(Some(&far), dt, &config);
        }
        assert!(!servo.at_rest());
        let at_loss = servo.commanded().position;
        let mut periods = 0;
        while !servo.at_rest() {
            servo.step(None, dt, &config);
            periods += 1;
            assert!(periods < 1_000, "still moving after 1 s");
        }
        // From 0.25 m/s at 1 m/s²: 0.25 s and 3.1 cm.
        assert!((240..=260).contains(&periods), "{periods} periods");
        let travelled = servo.commanded().position.distance(at_loss);
        assert!((0.028..0.034).contains(&travelled), "{travelled} m");
    }
}
