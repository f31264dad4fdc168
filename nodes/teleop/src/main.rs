//! `teleop` node: an operator drives the arm (or the simulator) with a SpaceMouse or a keyboard, for recording
//! demonstrations; it takes the policy's place in the graph (`dataflow.teleop.yml` on the real arm,
//! `dataflow.teleop.sim.yml` in the simulator) and the recorder records the episodes as it records a policy's.
//!
//! Inputs: `episode` (a new episode re-anchors the target at the measured pose, opens the hand and drops the
//! presses made between episodes), `robot_state`
//! (each tick: answered with the `action` for that frame, the previous target moved by the device's command,
//! `glue::teleop::Teleop`). The device is read on its own thread, so a tick never waits for it; check a
//! device's directions and buttons with `glue teleop-check` first. Output `end`: the operator's end of the
//! episode (the SpaceMouse's right button or Enter: success; Backspace: failure), an `EpisodeEvent::End` with
//! the tick's header, which the real arm's driver takes in place of the verdict file.
//! Settings: `DEVICE` (required: an evdev device, e.g. `/dev/input/by-id/usb-3Dconnexion_SpaceMouse_Compact-event-if00`;
//! a FIFO or a regular file of `struct input_event` records works too, the file replayed once and its last state
//! held; the tests write a FIFO), `SCHEME` (`spacemouse` | `keyboard`), `MAX_SPEED` (m/s, default 0.1), `MAX_ANGULAR_SPEED` (rad/s,
//! default 0.5), `ROTATION` (`none` | `yaw` | `full`, default `yaw`), `AXES` (SpaceMouse axes in the robot base
//! frame, default `x,y,z,rx,ry,rz`), `FULL_SCALE` (default 350), `DEADZONE` (default 0.1), `REL_HOLD_MS` (default
//! 150), `MAX_LEAD` (m, default 0.05), `CONTROL_HZ` (the driver's or simulator's, default 10), `PACE_HZ` (answers at most this many ticks a second,
//! so the lock-stepped simulator runs in real time for the operator; default `CONTROL_HZ`; 0: unpaced). At the end
//! of the run it prints its per-tick latency and how many times the gripper was toggled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dora_bridge::{CurrentEpisode, EpisodeOrder, Input, Latency, decode, env_or, next_input, send};
use dora_node_api::DoraNode;
use eyre::eyre;
use glue::msg::{EpisodeEvent, RobotState};
use glue::teleop::{DeviceState, EventStream, Rotation, Scheme, Teleop, TeleopConfig, drain, spawn_reader};

fn config() -> eyre::Result<TeleopConfig> {
    let d = TeleopConfig::default();
    Ok(TeleopConfig {
        scheme: env_or::<Scheme>("SCHEME", d.scheme)?,
        max_speed: env_or("MAX_SPEED", d.max_speed)?,
        max_angular_speed: env_or("MAX_ANGULAR_SPEED", d.max_angular_speed)?,
        rotation: env_or::<Rotation>("ROTATION", d.rotation)?,
        axes: env_or("AXES", d.axes)?,
        full_scale: env_or("FULL_SCALE", d.full_scale)?,
        deadzone: env_or("DEADZONE", d.deadzone)?,
        rel_hold: Duration::from_millis(env_or("REL_HOLD_MS", d.rel_hold.as_millis() as u64)?),
        max_lead: env_or("MAX_LEAD", d.max_lead)?,
        control_hz: env_or("CONTROL_HZ", d.control_hz)?,
    })
}

/// Tracks the episode a message belongs to: the first message of a newer episode re-anchors the target and opens
/// the hand, after taking in the events so far, so that a button pressed between episodes does not end or close
/// anything in the new one. Whether the message is to be answered (false: an ended episode's).
fn track_episode(current: &mut CurrentEpisode, episode: u64, teleop: &mut Teleop, device: &mut DeviceState, events: &EventStream, path: &Path) -> eyre::Result<bool> {
    Ok(match current.observe(episode) {
        EpisodeOrder::Stale => false,
        EpisodeOrder::Current => true,
        EpisodeOrder::New => {
            drain(events, device, path)?;
            teleop.reset();
            device.new_episode();
            true
        }
    })
}

fn main() -> eyre::Result<()> {
    let device_path: PathBuf = std::env::var("DEVICE").map_err(|_| eyre!("DEVICE is not set: the evdev device to read, e.g. /dev/input/by-id/...-event-if00"))?.into();
    let mut teleop = Teleop::new(config()?)?;
    let events = spawn_reader(&device_path)?;
    let mut device = DeviceState::default();
    let (mut node, mut stream) = DoraNode::init_from_env()?;
    let mut episode = CurrentEpisode::default();
    let mut latency = Latency::default();
    let pace_hz: f32 = env_or("PACE_HZ", teleop.config().control_hz)?;
    eyre::ensure!(pace_hz.is_finite() && pace_hz >= 0.0, "PACE_HZ = {pace_hz}: expected a rate >= 0 (0: unpaced)");
    let pace = (pace_hz > 0.0).then(|| Duration::from_secs_f32(1.0 / pace_hz));
    let mut answered: Option<Instant> = None;
    while let Some(Input { id, metadata, data }) = next_input(&mut stream) {
        let (h, state) = match id.as_str() {
            "episode" => {
                let h = decode::<EpisodeEvent>(&metadata, &data)?.0;
                track_episode(&mut episode, h.episode, &mut teleop, &mut device, &events, &device_path)?;
                continue;
            }
            "robot_state" => decode::<RobotState>(&metadata, &data)?,
            other => eyre::bail!("teleop: unexpected input `{other}`"),
        };
        if !track_episode(&mut episode, h.episode, &mut teleop, &mut device, &events, &device_path)? {
            continue;
        }
        if let (Some(period), Some(previous)) = (pace, answered) {
            std::thread::sleep((previous + period).saturating_duration_since(Instant::now()));
        }
        let start = Instant::now();
        drain(&events, &mut device, &device_path)?;
        let action = teleop.act(&device, &state, Instant::now())?;
        send(&mut node, "action", &h, &action)?;
        if let Some(success) = device.take_verdict() {
            send(&mut node, "end", &h, &EpisodeEvent::End { success, ticks: h.frame + 1 })?;
            println!("teleop: episode {} ended by the operator at frame {}: success={success}", h.episode, h.frame);
        }
        latency.record(start);
        answered = Some(start);
    }
    println!("teleop: {}, {} gripper toggles", latency.summary(), device.toggles);
    Ok(())
}
