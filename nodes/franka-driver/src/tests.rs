//! The driver against a failing arm, without a daemon (`DoraNode::init_testing`): the error path that the dry run
//! cannot reach, since its arm never fails.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dora_node_api::DoraNode;
use dora_node_api::integration_testing::{IntegrationTestInput, TestingInput, TestingOptions, TestingOutput, drain_outputs, output_channel};
use glam::DVec3;
use glue::arm::{CommandGuard, Pose, SafetyConfig};
use glue::msg::{Action, RobotState};
use glue::sim::franka::{Q_HOME, tcp_pose};
use glue::sim::task::TaskKind;

use super::{Counts, Driver, Settings};
use crate::arm::{Arm, Shared, robot_state};

/// An arm that fails (as a reflex or a lost connection would) once it is following a target: `start` makes one
/// valid action 1 cm from home the guard's target, as the dora thread does when the policy's first action
/// arrives, and `state` then reports the failure. Every call the driver makes is logged.
struct FailingArm {
    calls: Arc<Mutex<Vec<&'static str>>>,
    shared: Option<Shared>,
}

impl Arm for FailingArm {
    fn home(&mut self, _home: &[f64; 7]) -> eyre::Result<()> {
        self.calls.lock().unwrap().push("home");
        Ok(())
    }

    fn start(&mut self, shared: Shared) -> eyre::Result<()> {
        self.calls.lock().unwrap().push("start");
        let (position, orientation) = tcp_pose(&Q_HOME);
        let action = Action {
            position: (position + DVec3::new(0.01, 0.0, 0.0)).as_vec3().to_array(),
            orientation: orientation.as_quat().to_array(),
            gripper: 0.08,
        };
        shared.guard.lock().unwrap().accept(&action, shared.clock.elapsed().as_secs_f64())?;
        self.shared = Some(shared);
        Ok(())
    }

    fn state(&mut self) -> eyre::Result<RobotState> {
        let following = self.shared.as_ref().and_then(Shared::target).is_some();
        let mut calls = self.calls.lock().unwrap();
        if following {
            calls.push("fault");
            eyre::bail!("cartesian reflex (the test's arm)");
        }
        calls.push("state");
        let (position, orientation) = tcp_pose(&Q_HOME);
        Ok(robot_state(&Q_HOME, 0.08, &Pose { position, orientation }))
    }

    fn stop(&mut self) -> eyre::Result<()> {
        self.calls.lock().unwrap().push("stop");
        Ok(())
    }
}

#[test]
fn a_failing_arm_ends_the_run_with_the_guard_holding_and_the_servo_stopped() {
    // No input events: dora 1.1's testing daemon holds the node's outputs while it waits for a timed input, so
    // the failure comes from the arm at the episode's first tick, before the driver reads any event.
    let mut input = IntegrationTestInput::new("franka-driver".parse().unwrap(), Vec::new());
    input.outputs = BTreeSet::from(["episode".into(), "robot_state".into()]);
    let (tx, mut rx) = output_channel();
    let options = TestingOptions { skip_output_time_offsets: true };
    let (node, events) = DoraNode::init_testing(TestingInput::Input(input), TestingOutput::ToChannel(tx), options).unwrap();

    let calls = Arc::new(Mutex::new(Vec::new()));
    let guard = Arc::new(Mutex::new(CommandGuard::new(SafetyConfig::default()).unwrap()));
    let task = TaskKind::PushButton;
    let settings = Settings {
        task,
        text_query: task.text_query(),
        episodes: 2,
        max_ticks: 100,
        period: Duration::from_millis(10),
        max_age_ns: 300_000_000,
        verdict_file: std::env::temp_dir().join("franka-driver-test-verdict-never-written"),
        home: Q_HOME,
    };
    let arm = Box::new(FailingArm { calls: calls.clone(), shared: None });
    let mut driver = Driver { node, events, arm, guard: guard.clone(), settings, counts: Counts::default() };

    let result = driver.run();
    let calls = calls.lock().unwrap().clone();
    let error = result.expect_err(&format!("the arm failed, so must the run (arm calls {calls:?})"));
    assert!(format!("{error:#}").contains("cartesian reflex"), "not the arm's error: {error:#}");
    assert_eq!(calls, ["home", "start", "fault", "stop"], "the servo must be stopped after the failure");
    assert!(guard.lock().unwrap().target(0.0).is_none(), "the guard still has a target after the failure");

    // The episode started, but it neither ended nor was a second one begun.
    let outputs = drain_outputs(&mut rx);
    let ids: Vec<&str> = outputs.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["episode"], "outputs");
}
