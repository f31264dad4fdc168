//! Teleoperation for recording demonstrations. The paper collects its real-world demonstrations with a SpaceMouse
//! at 10 Hz (sec. V-A); here a Linux input device (evdev: a 3Dconnexion SpaceMouse, or a keyboard) is read as a
//! velocity command and integrated, one control tick at a time, into the absolute end-effector targets of the
//! action contract ([`Action`]), so a teleoperated episode is recorded exactly like a policy's.
//!
//! The device is read as the kernel's `struct input_event` records (`linux/input.h`: a 16-byte timestamp, then
//! `u16 type`, `u16 code`, `i32 value`, native byte order, 24 bytes on 64-bit Linux), which is what
//! `/dev/input/event*` delivers; no driver daemon or extra library is needed. A SpaceMouse reports its six axes as
//! `EV_ABS` (held until the next report) or `EV_REL` (the kernel drops zero relative values, so an axis reads zero
//! once its last report is older than [`TeleopConfig::rel_hold`]) and its buttons as `BTN_0`, `BTN_1`.

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eyre::{Result, WrapErr, ensure};
use glam::{Quat, Vec3};

use crate::msg::{Action, RobotState};

/// The size of one `struct input_event` on 64-bit Linux.
pub const EVENT_SIZE: usize = 24;

/// Event types and codes of `linux/input-event-codes.h` that teleoperation reads.
pub mod codes {
    pub const EV_KEY: u16 = 0x01;
    pub const EV_REL: u16 = 0x02;
    pub const EV_ABS: u16 = 0x03;
    /// The SpaceMouse's left button: toggles the gripper.
    pub const BTN_0: u16 = 0x100;
    /// The SpaceMouse's right button: ends the episode as a success.
    pub const BTN_1: u16 = 0x101;
    pub const KEY_BACKSPACE: u16 = 14;
    pub const KEY_Q: u16 = 16;
    pub const KEY_W: u16 = 17;
    pub const KEY_E: u16 = 18;
    pub const KEY_R: u16 = 19;
    pub const KEY_A: u16 = 30;
    pub const KEY_S: u16 = 31;
    pub const KEY_D: u16 = 32;
    pub const KEY_F: u16 = 33;
    pub const KEY_ENTER: u16 = 28;
    pub const KEY_SPACE: u16 = 57;
}

/// Open and closed gripper targets, m (the Franka hand's range).
const GRIPPER_OPEN: f32 = 0.08;
const GRIPPER_CLOSED: f32 = 0.0;

/// One `struct input_event` without its timestamp (the node stamps events on arrival).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    /// `type`: `EV_KEY`, `EV_REL`, `EV_ABS`, ...
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    /// The kernel's 24-byte record (timestamp zero): what a device file delivers, and how tests and scripts write
    /// a sequence of events to a file that stands in for the device.
    pub fn to_bytes(self) -> [u8; EVENT_SIZE] {
        let mut out = [0; EVENT_SIZE];
        out[16..18].copy_from_slice(&self.kind.to_ne_bytes());
        out[18..20].copy_from_slice(&self.code.to_ne_bytes());
        out[20..24].copy_from_slice(&self.value.to_ne_bytes());
        out
    }

    /// The next event from a device (or a file of records); `None` at the end of a file. A record cut short is an
    /// error that names the record size.
    pub fn read_from(reader: &mut impl Read) -> std::io::Result<Option<Self>> {
        let mut buf = [0; EVENT_SIZE];
        let mut filled = 0;
        while filled < EVENT_SIZE {
            match reader.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => {
                    return Err(std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("input event cut short: {filled} of {EVENT_SIZE} bytes (struct input_event, 64-bit Linux)"),
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let u16_at = |i: usize| u16::from_ne_bytes([buf[i], buf[i + 1]]);
        Ok(Some(Self { kind: u16_at(16), code: u16_at(18), value: i32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]) }))
    }
}

/// How the device's events become a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Six axes (`EV_ABS` or `EV_REL` codes 0-5: x, y, z, rx, ry, rz) through [`AxisMap`]; `BTN_0` toggles the
    /// gripper, `BTN_1` ends the episode as a success.
    SpaceMouse,
    /// Held keys at full speed, in the robot base frame: W/S +x/-x, A/D +y/-y, R/F +z/-z, Q/E +yaw/-yaw; space
    /// toggles the gripper; Enter ends the episode as a success, Backspace as a failure.
    Keyboard,
}

impl FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spacemouse" => Ok(Self::SpaceMouse),
            "keyboard" => Ok(Self::Keyboard),
            other => Err(format!("unknown scheme `{other}`: expected spacemouse or keyboard")),
        }
    }
}

/// Which rotations the operator commands. Tabletop picking keeps the hand pointing down, so the default is yaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The orientation of the episode's first tick is held.
    None,
    /// Rotation about the base frame's z axis only.
    Yaw,
    /// All three rotation axes.
    Full,
}

impl FromStr for Rotation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "yaw" => Ok(Self::Yaw),
            "full" => Ok(Self::Full),
            other => Err(format!("unknown rotation `{other}`: expected none, yaw or full")),
        }
    }
}

/// The SpaceMouse's axes in the robot base frame: entry `i` of the command (x, y, z, rx, ry, rz) is the device
/// axis `source[i].0` times `source[i].1` (±1). Written `x,y,z,rx,ry,rz` with a `-` before an axis to flip it,
/// e.g. `-y,x,z,rx,ry,rz`: the robot's x follows the device's -y, its y the device's x; the order of the six is
/// the robot's, the names the device's. Which map is right depends on where the device sits (`glue
/// teleop-check` shows it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisMap {
    source: [(usize, f32); 6],
}

impl Default for AxisMap {
    /// The device's axes as the kernel reports them.
    fn default() -> Self {
        Self { source: std::array::from_fn(|i| (i, 1.0)) }
    }
}

impl FromStr for AxisMap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const NAMES: [&str; 6] = ["x", "y", "z", "rx", "ry", "rz"];
        let expected = "six comma-separated device axes, each of x y z rx ry rz once, `-` to flip one (e.g. -y,-x,-z,-ry,-rx,-rz)";
        let entries: Vec<&str> = s.split(',').map(str::trim).collect();
        if entries.len() != 6 {
            return Err(format!("axes `{s}`: {} entries, expected {expected}", entries.len()));
        }
        let mut source = [(0, 1.0); 6];
        for (slot, entry) in source.iter_mut().zip(&entries) {
            let (sign, name) = entry.strip_prefix('-').map_or((1.0, *entry), |rest| (-1.0, rest));
            let axis = NAMES.iter().position(|n| *n == name).ok_or_else(|| format!("axes `{s}`: unknown axis `{name}`, expected {expected}"))?;
            *slot = (axis, sign);
        }
        let mut seen = [false; 6];
        for (axis, _) in source {
            if std::mem::replace(&mut seen[axis], true) {
                return Err(format!("axes `{s}`: `{}` appears twice, expected {expected}", NAMES[axis]));
            }
        }
        Ok(Self { source })
    }
}

/// Teleoperation settings (the `teleop` node's `env:`).
#[derive(Debug, Clone)]
pub struct TeleopConfig {
    pub scheme: Scheme,
    /// Translation speed at full deflection (or a held key), m/s.
    pub max_speed: f32,
    /// Rotation speed at full deflection, rad/s.
    pub max_angular_speed: f32,
    pub rotation: Rotation,
    pub axes: AxisMap,
    /// The raw axis value of full deflection (a SpaceMouse reports about ±350).
    pub full_scale: f32,
    /// Deflections below this fraction of full scale read as zero; above it the command rises from zero.
    pub deadzone: f32,
    /// How long an `EV_REL` axis value holds after its report.
    pub rel_hold: Duration,
    /// How far, m, the target may run ahead of the measured hand position (an arm held back by contact or the
    /// workspace clamp does not wind the target up).
    pub max_lead: f32,
    /// The control rate the command is integrated at, Hz.
    pub control_hz: f32,
}

impl Default for TeleopConfig {
    fn default() -> Self {
        Self {
            scheme: Scheme::SpaceMouse,
            max_speed: 0.1,
            max_angular_speed: 0.5,
            rotation: Rotation::Yaw,
            axes: AxisMap::default(),
            full_scale: 350.0,
            deadzone: 0.1,
            rel_hold: Duration::from_millis(150),
            max_lead: 0.05,
            control_hz: 10.0,
        }
    }
}

impl TeleopConfig {
    /// Checks the numeric settings, naming the one that is off.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("max_speed", self.max_speed), ("max_angular_speed", self.max_angular_speed), ("full_scale", self.full_scale), ("max_lead", self.max_lead), ("control_hz", self.control_hz)] {
            ensure!(v.is_finite() && v > 0.0, "teleop {name} = {v}: expected a finite value > 0");
        }
        ensure!((0.0..1.0).contains(&self.deadzone), "teleop deadzone = {}: expected a fraction in [0, 1)", self.deadzone);
        Ok(())
    }
}

/// What the device has reported so far: its axes, held keys, the gripper toggle and the operator's verdict.
#[derive(Debug, Clone, Default)]
pub struct DeviceState {
    /// Raw value and arrival time of each SpaceMouse axis; `EV_REL` values carry their time, `EV_ABS` ones none.
    axes: [(i32, Option<Instant>); 6],
    held_keys: Vec<u16>,
    gripper_closed: bool,
    /// The episode's end the operator has pressed for (`true`: success), not yet sent.
    verdict: Option<bool>,
    /// Gripper toggles so far, for the node's summary.
    pub toggles: u64,
}

impl DeviceState {
    /// Takes in one event that arrived at `now`.
    pub fn apply(&mut self, event: InputEvent, now: Instant) {
        use codes::*;
        let InputEvent { kind, code, value } = event;
        match kind {
            EV_ABS | EV_REL if code < 6 => self.axes[code as usize] = (value, (kind == EV_REL).then_some(now)),
            EV_KEY => {
                // 1: pressed, 2: auto-repeat, 0: released. Only a fresh press toggles.
                if value == 1 {
                    match code {
                        BTN_0 | KEY_SPACE => {
                            self.gripper_closed = !self.gripper_closed;
                            self.toggles += 1;
                        }
                        BTN_1 | KEY_ENTER => self.verdict = Some(true),
                        KEY_BACKSPACE => self.verdict = Some(false),
                        _ => {}
                    }
                }
                self.held_keys.retain(|&k| k != code);
                if value != 0 {
                    self.held_keys.push(code);
                }
            }
            _ => {}
        }
    }

    /// A new episode starts with the hand open (the driver and the simulator open it) and no verdict (a press
    /// between episodes does not end the next one); motion state is kept.
    pub fn new_episode(&mut self) {
        self.gripper_closed = false;
        self.verdict = None;
    }

    /// The episode's end the operator has pressed for since the last call (`true`: success).
    pub fn take_verdict(&mut self) -> Option<bool> {
        self.verdict.take()
    }

    /// The gripper target the operator has toggled to.
    pub fn gripper(&self) -> f32 {
        if self.gripper_closed { GRIPPER_CLOSED } else { GRIPPER_OPEN }
    }

    /// The command at `now` in the robot base frame, each of (x, y, z, rx, ry, rz) in [-1, 1] (fractions of the
    /// configured speeds), rotations already restricted to `cfg.rotation`.
    pub fn command(&self, cfg: &TeleopConfig, now: Instant) -> [f32; 6] {
        let mut cmd = match cfg.scheme {
            Scheme::SpaceMouse => {
                let deflection = |axis: usize| {
                    let (raw, at) = self.axes[axis];
                    let live = at.is_none_or(|t| now.saturating_duration_since(t) <= cfg.rel_hold);
                    let v = if live { (raw as f32 / cfg.full_scale).clamp(-1.0, 1.0) } else { 0.0 };
                    // Rescaled past the deadzone, so the command starts from zero rather than jumping.
                    if v.abs() <= cfg.deadzone { 0.0 } else { v.signum() * (v.abs() - cfg.deadzone) / (1.0 - cfg.deadzone) }
                };
                cfg.axes.source.map(|(axis, sign)| sign * deflection(axis))
            }
            Scheme::Keyboard => {
                use codes::*;
                let key = |plus: u16, minus: u16| self.held_keys.contains(&plus) as i32 as f32 - self.held_keys.contains(&minus) as i32 as f32;
                [key(KEY_W, KEY_S), key(KEY_A, KEY_D), key(KEY_R, KEY_F), 0.0, 0.0, key(KEY_Q, KEY_E)]
            }
        };
        match cfg.rotation {
            Rotation::None => cmd[3..].fill(0.0),
            Rotation::Yaw => cmd[3..5].fill(0.0),
            Rotation::Full => {}
        }
        cmd
    }
}

/// Integrates the operator's command into absolute targets, one control tick at a time.
#[derive(Debug, Clone)]
pub struct Teleop {
    cfg: TeleopConfig,
    /// The last target; `None` until the episode's first tick anchors it at the measured pose.
    target: Option<(Vec3, Quat)>,
}

impl Teleop {
    pub fn new(cfg: TeleopConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg, target: None })
    }

    pub fn config(&self) -> &TeleopConfig {
        &self.cfg
    }

    /// A new episode: the next tick anchors the target at the measured pose again.
    pub fn reset(&mut self) {
        self.target = None;
    }

    /// The action for the tick whose measured state is `state`: the previous target moved by the command for one
    /// control period (`v dt` and the rotation `exp(omega dt)` applied in the base frame), kept within
    /// `max_lead` of the measured hand position, and the toggled gripper.
    pub fn act(&mut self, device: &DeviceState, state: &RobotState, now: Instant) -> Result<Action> {
        let measured = Vec3::from(state.ee_position);
        let (position, orientation) = self.target.unwrap_or((measured, Quat::from_array(state.ee_orientation).normalize()));
        let cmd = device.command(&self.cfg, now);
        let dt = 1.0 / self.cfg.control_hz;
        let lead = position + Vec3::new(cmd[0], cmd[1], cmd[2]) * self.cfg.max_speed * dt - measured;
        let position = measured + lead.clamp_length_max(self.cfg.max_lead);
        let turn = Vec3::new(cmd[3], cmd[4], cmd[5]) * self.cfg.max_angular_speed * dt;
        let orientation = (Quat::from_scaled_axis(turn) * orientation).normalize();
        self.target = Some((position, orientation));
        let action = Action { position: position.to_array(), orientation: orientation.to_array(), gripper: device.gripper() };
        Ok(action.normalized()?)
    }
}

/// Events as they arrive, each with its arrival time; a read error is the last item.
pub type EventStream = mpsc::Receiver<std::io::Result<(InputEvent, Instant)>>;

/// Opens the device and reads it on a thread of its own, so a control tick never waits for it. A regular file is
/// read to its end and the stream then ends; a read error is passed on and ends the thread.
pub fn spawn_reader(path: &Path) -> Result<EventStream> {
    let mut file = std::fs::File::open(path).wrap_err_with(|| {
        format!("device {}: cannot open the input device (list them with `ls -l /dev/input/by-id`; reading needs the `input` group)", path.display())
    })?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(event) = InputEvent::read_from(&mut file).transpose() {
            let failed = event.is_err();
            if tx.send(event.map(|e| (e, Instant::now()))).is_err() || failed {
                break;
            }
        }
    });
    Ok(rx)
}

/// Takes in every event that has arrived; a read error names the device.
pub fn drain(events: &EventStream, device: &mut DeviceState, path: &Path) -> Result<()> {
    for event in events.try_iter() {
        let (event, at) = event.wrap_err_with(|| format!("device {}: reading the input device", path.display()))?;
        device.apply(event, at);
    }
    Ok(())
}

/// `glue teleop-check`: prints the command the device gives under `cfg`, `cfg.control_hz` times a second for
/// `seconds` (or until interrupted), one line each (`x +1.00 y +0.00 z +0.00 rx ... gripper open`), so `AXES`
/// and the buttons can be checked before an arm moves.
pub fn check(path: &Path, cfg: &TeleopConfig, seconds: Option<f32>, out: &mut impl Write) -> Result<()> {
    cfg.validate()?;
    let events = spawn_reader(path)?;
    let mut device = DeviceState::default();
    let period = Duration::from_secs_f32(1.0 / cfg.control_hz);
    let end = seconds.map(|s| Instant::now() + Duration::from_secs_f32(s.max(0.0)));
    loop {
        std::thread::sleep(period);
        drain(&events, &mut device, path)?;
        let cmd = device.command(cfg, Instant::now());
        let axes: Vec<String> = ["x", "y", "z", "rx", "ry", "rz"].iter().zip(cmd).map(|(n, v)| format!("{n} {v:+.2}")).collect();
        let gripper = if device.gripper_closed { "closed" } else { "open" };
        writeln!(out, "{}  gripper {gripper}", axes.join(" "))?;
        if end.is_some_and(|e| Instant::now() >= e) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::codes::*;
    use super::*;

    fn state_at(position: [f32; 3]) -> RobotState {
        RobotState { joints: [0.0; 7], gripper: 0.08, ee_position: position, ee_orientation: [1.0, 0.0, 0.0, 0.0] }
    }

    fn ev(kind: u16, code: u16, value: i32) -> InputEvent {
        InputEvent { kind, code, value }
    }

    #[test]
    fn events_round_trip_through_the_kernel_record_and_a_cut_record_is_an_error() {
        let events = [ev(EV_ABS, 2, -350), ev(EV_KEY, BTN_0, 1), ev(0, 0, 0)];
        let bytes: Vec<u8> = events.iter().flat_map(|e| e.to_bytes()).collect();
        assert_eq!(bytes.len(), 3 * EVENT_SIZE);
        let mut reader = bytes.as_slice();
        for e in events {
            assert_eq!(InputEvent::read_from(&mut reader).unwrap(), Some(e));
        }
        assert_eq!(InputEvent::read_from(&mut reader).unwrap(), None, "a clean end of file");
        let err = InputEvent::read_from(&mut &bytes[24..30]).unwrap_err();
        assert!(err.to_string().contains("6 of 24 bytes"), "{err}");
    }

    #[test]
    fn axis_maps_parse_permutations_with_signs_and_name_what_is_wrong() {
        let map: AxisMap = "-y,-x,-z,-ry,-rx,-rz".parse().unwrap();
        assert_eq!(map.source[0], (1, -1.0));
        assert_eq!(map.source[4], (3, -1.0));
        assert_eq!("x,y,z,rx,ry,rz".parse::<AxisMap>().unwrap(), AxisMap::default());
        assert!("x,y,z".parse::<AxisMap>().unwrap_err().contains("3 entries"));
        assert!("x,x,z,rx,ry,rz".parse::<AxisMap>().unwrap_err().contains("`x` appears twice"));
        assert!("x,y,w,rx,ry,rz".parse::<AxisMap>().unwrap_err().contains("unknown axis `w`"));
    }

    #[test]
    fn spacemouse_deflection_is_scaled_past_the_deadzone_and_mapped_to_the_base_frame() {
        let cfg = TeleopConfig { axes: "-y,x,z,rx,ry,rz".parse().unwrap(), ..TeleopConfig::default() };
        let now = Instant::now();
        let mut d = DeviceState::default();
        d.apply(ev(EV_ABS, 1, 350), now);
        d.apply(ev(EV_ABS, 0, 20), now); // inside the 10% deadzone
        d.apply(ev(EV_ABS, 5, -700), now); // beyond full scale: clamped
        d.apply(ev(EV_ABS, 3, 350), now); // roll: not commanded under the default yaw-only rotation
        let cmd = d.command(&cfg, now);
        assert_eq!(cmd, [-1.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
        d.apply(ev(EV_ABS, 1, 210), now); // 0.6 of full scale -> (0.6 - 0.1) / 0.9
        assert!((d.command(&cfg, now)[0] + 5.0 / 9.0).abs() < 1e-6);
        let full = TeleopConfig { rotation: Rotation::Full, ..cfg.clone() };
        assert_eq!(d.command(&full, now)[3], 1.0);
        let none = TeleopConfig { rotation: Rotation::None, ..cfg };
        assert_eq!(d.command(&none, now)[5], 0.0);
    }

    #[test]
    fn a_relative_axis_reads_zero_once_its_report_is_older_than_the_hold() {
        let cfg = TeleopConfig::default();
        let t0 = Instant::now();
        let mut d = DeviceState::default();
        d.apply(ev(EV_REL, 2, 350), t0);
        d.apply(ev(EV_ABS, 0, 350), t0);
        assert_eq!(d.command(&cfg, t0 + Duration::from_millis(100))[2], 1.0);
        let later = d.command(&cfg, t0 + Duration::from_millis(400));
        assert_eq!(later[2], 0.0, "the kernel never sends the zero of a released relative axis");
        assert_eq!(later[0], 1.0, "an absolute axis holds its value");
    }

    #[test]
    fn buttons_toggle_the_gripper_on_a_fresh_press_only() {
        let now = Instant::now();
        let mut d = DeviceState::default();
        assert_eq!(d.gripper(), GRIPPER_OPEN);
        d.apply(ev(EV_KEY, BTN_0, 1), now);
        d.apply(ev(EV_KEY, BTN_0, 2), now); // auto-repeat
        d.apply(ev(EV_KEY, BTN_0, 0), now);
        assert_eq!((d.gripper(), d.toggles), (GRIPPER_CLOSED, 1));
        d.apply(ev(EV_KEY, KEY_SPACE, 1), now);
        assert_eq!(d.gripper(), GRIPPER_OPEN);
        d.apply(ev(EV_KEY, BTN_0, 1), now);
        d.new_episode();
        assert_eq!(d.gripper(), GRIPPER_OPEN, "a new episode starts open");
    }

    #[test]
    fn the_operator_ends_an_episode_once_and_not_the_next_one() {
        let now = Instant::now();
        let mut d = DeviceState::default();
        assert_eq!(d.take_verdict(), None);
        d.apply(ev(EV_KEY, BTN_1, 1), now);
        d.apply(ev(EV_KEY, BTN_1, 0), now);
        assert_eq!((d.take_verdict(), d.take_verdict()), (Some(true), None), "taken once");
        d.apply(ev(EV_KEY, KEY_BACKSPACE, 1), now);
        assert_eq!(d.take_verdict(), Some(false));
        d.apply(ev(EV_KEY, KEY_ENTER, 1), now);
        d.new_episode();
        assert_eq!(d.take_verdict(), None, "a press before the episode began does not end it");
    }

    #[test]
    fn held_keys_command_full_speed_in_the_base_frame() {
        let cfg = TeleopConfig { scheme: Scheme::Keyboard, ..TeleopConfig::default() };
        let now = Instant::now();
        let mut d = DeviceState::default();
        for code in [KEY_W, KEY_D, KEY_R, KEY_F, KEY_E] {
            d.apply(ev(EV_KEY, code, 1), now);
        }
        d.apply(ev(EV_KEY, KEY_W, 2), now);
        assert_eq!(d.command(&cfg, now), [1.0, -1.0, 0.0, 0.0, 0.0, -1.0], "R and F cancel");
        d.apply(ev(EV_KEY, KEY_W, 0), now);
        assert_eq!(d.command(&cfg, now)[0], 0.0, "a released key stops");
    }

    #[test]
    fn targets_integrate_the_command_and_stay_within_the_lead_of_the_measured_hand() {
        let cfg = TeleopConfig { max_speed: 0.1, max_lead: 0.025, max_angular_speed: 1.0, ..TeleopConfig::default() };
        let now = Instant::now();
        let mut d = DeviceState::default();
        let mut t = Teleop::new(cfg).unwrap();
        let home = state_at([0.5, 0.0, 0.3]);
        let first = t.act(&d, &home, now).unwrap();
        assert_eq!((first.position, first.gripper), ([0.5, 0.0, 0.3], GRIPPER_OPEN), "no command: hold the measured pose");
        d.apply(ev(EV_ABS, 0, 350), now);
        d.apply(ev(EV_ABS, 5, 350), now);
        // The arm does not move (held back): the target advances 1 cm per tick at 0.1 m/s and 10 Hz, then stops
        // 2.5 cm ahead.
        let xs: Vec<f32> = (0..4).map(|_| t.act(&d, &home, now).unwrap().position[0]).collect();
        for (x, want) in xs.iter().zip([0.51, 0.52, 0.525, 0.525]) {
            assert!((x - want).abs() < 1e-6, "{xs:?}");
        }
        let q = Quat::from_array(t.act(&d, &home, now).unwrap().orientation);
        let (axis, angle) = q.mul_quat(Quat::from_array(home.ee_orientation).inverse()).to_axis_angle();
        assert!((angle - 0.5).abs() < 1e-4 && axis.z > 0.999, "five ticks of 0.1 rad about +z: {axis} {angle}");
        t.reset();
        let moved = state_at([0.4, 0.1, 0.2]);
        let anchored = t.act(&DeviceState::default(), &moved, now).unwrap();
        assert_eq!(anchored.position, moved.ee_position, "a new episode anchors at the measured pose");
    }

    #[test]
    fn the_check_prints_the_mapped_command_of_a_device_file() {
        let path = std::env::temp_dir().join(format!("glue-teleop-check-{}.events", std::process::id()));
        let events = [ev(EV_ABS, 1, -350), ev(EV_KEY, BTN_0, 1), ev(EV_KEY, BTN_0, 0)];
        std::fs::write(&path, events.iter().flat_map(|e| e.to_bytes()).collect::<Vec<u8>>()).unwrap();
        let cfg = TeleopConfig { axes: "-y,x,z,rx,ry,rz".parse().unwrap(), control_hz: 50.0, ..TeleopConfig::default() };
        let mut out = Vec::new();
        check(&path, &cfg, Some(0.1), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().last().unwrap() == "x +1.00 y +0.00 z +0.00 rx +0.00 ry +0.00 rz +0.00  gripper closed", "{text}");
        std::fs::remove_file(&path).ok();
        let err = check(Path::new("/nonexistent/event0"), &cfg, Some(0.0), &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/event0: cannot open the input device"), "{err:#}");
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let err = Teleop::new(TeleopConfig { max_speed: f32::NAN, ..TeleopConfig::default() }).unwrap_err();
        assert!(err.to_string().contains("max_speed"), "{err}");
        let err = Teleop::new(TeleopConfig { deadzone: 1.0, ..TeleopConfig::default() }).unwrap_err();
        assert!(err.to_string().contains("deadzone"), "{err}");
    }
}
