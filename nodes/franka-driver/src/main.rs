//! `franka-driver` node: the arm's side of the real-robot graph (`dataflow.yml`). It owns the control clock:
//! every `1 / CONTROL_HZ` s it publishes the measured `robot_state`, which the camera answers with the image of
//! that tick; the policy's `action`s become targets of the command guard (`glue::arm`: validated, clamped into
//! the workspace, dropped by a watchdog) and the servo moves the arm toward them within speed limits.
//!
//! Per episode: move to `HOME_JOINTS`, open the hand, publish the `episode` start (task and text queries), run
//! `MAX_TICKS` control ticks, bring the arm to rest, then wait for the operator's verdict in `VERDICT_FILE`
//! (`success` or `failure`; the file is consumed) and publish the episode's end with it.
//!
//! Settings: `BACKEND` (`franka`: the real arm, `franka.rs`; `dry-run`: no robot, `dry_run.rs`), `ROBOT_IP`
//! (default 172.16.0.2), `REALTIME` (`enforce` | `ignore`), `TASK`, `TEXT_QUERY` (`;`-separated; default the
//! task's), `EPISODES` (default 1), `MAX_TICKS` (default 300), `CONTROL_HZ` (default 10), `VERDICT_FILE`
//! (default `out/verdict`), `HOME_JOINTS` (7 joint angles in rad, `,`-separated; default the simulator's home),
//! `HOME_SPEED` (default 0.2), `GRASP_FORCE` (N, default 20), and the guard's `WORKSPACE`
//! (`xmin,ymin,zmin,xmax,ymax,zmax` m), `MAX_SPEED` (m/s), `MAX_ACCEL` (m/s²), `MAX_ANGULAR_SPEED` (rad/s),
//! `WATCHDOG_MS` (defaults: `glue::arm::SafetyConfig::default`), `MAX_ACTION_AGE_MS` (an action answering a tick
//! older than this is not followed: the loop has fallen behind the arm; default 300).
//! Inputs: `action` (the policy's or the operator's), optionally `end` (the teleoperating operator's end of the
//! episode, an `EpisodeEvent::End`: the episode stops at once and its success is taken from it, no verdict file).
//! Outputs: `episode`, `robot_state`. A rejected action (bad field, NaN) is
//! logged with its episode and frame and makes the arm hold; at the end of the run the node prints its tick
//! latency (mean, p95) and how many actions it rejected, clamped and found too old.

mod arm;
mod dry_run;
mod franka;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_bridge::{Latency, decode, env_or, linger, send};
use dora_node_api::{DoraNode, Event, EventStream};
use glue::arm::{CommandGuard, SafetyConfig};
use glue::msg::{Action, EpisodeEvent, Header, MsgError};
use glue::sim::task::TaskKind;

use arm::{Arm, Shared};

fn safety_config() -> eyre::Result<SafetyConfig> {
    let default = SafetyConfig::default();
    let (workspace_min, workspace_max) = match std::env::var("WORKSPACE").unwrap_or_default().trim() {
        "" => (default.workspace_min, default.workspace_max),
        text => SafetyConfig::parse_workspace(text)?,
    };
    let config = SafetyConfig {
        workspace_min,
        workspace_max,
        max_speed: env_or("MAX_SPEED", default.max_speed)?,
        max_accel: env_or("MAX_ACCEL", default.max_accel)?,
        max_angular_speed: env_or("MAX_ANGULAR_SPEED", default.max_angular_speed)?,
        watchdog_s: env_or("WATCHDOG_MS", default.watchdog_s * 1e3)? / 1e3,
    };
    config.check()?;
    Ok(config)
}

fn home() -> eyre::Result<[f64; 7]> {
    match std::env::var("HOME_JOINTS").unwrap_or_default().trim() {
        "" => Ok(glue::sim::franka::Q_HOME),
        text => {
            let v: Vec<f64> = text.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()
                .map_err(|e| eyre::eyre!("HOME_JOINTS={text:?}: expected 7 joint angles in rad ({e})"))?;
            v.try_into().map_err(|v: Vec<f64>| eyre::eyre!("HOME_JOINTS={text:?}: expected 7 joint angles, got {}", v.len()))
        }
    }
}

fn connect(safety: &SafetyConfig) -> eyre::Result<Box<dyn Arm>> {
    match std::env::var("BACKEND").unwrap_or_default().as_str() {
        "dry-run" => Ok(Box::new(dry_run::DryRun::new(safety.clone()))),
        "franka" => {
            let realtime = match std::env::var("REALTIME").unwrap_or_else(|_| "enforce".into()).as_str() {
                "enforce" => ::franka::RealtimeConfig::Enforce,
                "ignore" => ::franka::RealtimeConfig::Ignore,
                other => eyre::bail!("REALTIME={other:?}: expected `enforce` or `ignore`"),
            };
            let config = franka::FrankaConfig {
                ip: env_or("ROBOT_IP", "172.16.0.2".to_string())?,
                realtime,
                grasp_force: env_or("GRASP_FORCE", 20.0)?,
                home_speed: env_or("HOME_SPEED", 0.2)?,
            };
            Ok(Box::new(franka::Franka::connect(config, safety.clone())?))
        }
        other => eyre::bail!("BACKEND={other:?}: expected `franka` (the real arm) or `dry-run` (no robot)"),
    }
}

/// Waits for the operator's verdict on `episode` in `path` (`success` or `failure`), consuming the file;
/// `None` if the dataflow stops first.
fn verdict(path: &Path, episode: u64, events: &mut EventStream) -> eyre::Result<Option<bool>> {
    eprintln!("franka-driver: episode {episode} done; the arm holds. Judge it: echo success > {0}  (or: echo failure > {0})", path.display());
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let outcome = match text.trim() {
                "success" => true,
                "failure" => false,
                other => eyre::bail!("{}: expected `success` or `failure`, got {other:?}", path.display()),
            };
            std::fs::remove_file(path).map_err(|e| eyre::eyre!("removing {}: {e}", path.display()))?;
            return Ok(Some(outcome));
        }
        match events.recv_timeout(Duration::from_millis(200)) {
            Some(Event::Stop(_)) | None => return Ok(None),
            _ => {}
        }
    }
}

/// The run's settings, from the node's environment (module doc).
struct Settings {
    task: TaskKind,
    text_query: Vec<String>,
    episodes: u64,
    max_ticks: u64,
    period: Duration,
    max_age_ns: u64,
    verdict_file: PathBuf,
    home: [f64; 7],
}

impl Settings {
    fn from_env() -> eyre::Result<Self> {
        let task: TaskKind = env_or("TASK", TaskKind::PushButton)?;
        let text_query: Vec<String> = match std::env::var("TEXT_QUERY").unwrap_or_default().trim() {
            "" => task.text_query(),
            text => text.split(';').map(|q| q.trim().to_string()).filter(|q| !q.is_empty()).collect(),
        };
        let hz: f64 = env_or("CONTROL_HZ", 10.0)?;
        eyre::ensure!(hz.is_finite() && hz > 0.0, "CONTROL_HZ={hz}: expected a positive rate");
        Ok(Self {
            task,
            text_query,
            episodes: env_or("EPISODES", 1)?,
            max_ticks: env_or("MAX_TICKS", 300)?,
            period: Duration::from_secs_f64(1.0 / hz),
            max_age_ns: env_or::<u64>("MAX_ACTION_AGE_MS", 300)? * 1_000_000,
            verdict_file: env_or("VERDICT_FILE", PathBuf::from("out/verdict"))?,
            home: home()?,
        })
    }
}

/// What the run counts for its closing line.
#[derive(Default)]
struct Counts {
    latency: Latency,
    rejected: u64,
    clamped: u64,
    too_old: u64,
}

/// How an episode's control ticks ended.
enum Ticks {
    /// After `frames` ticks; `operator_end` is the teleoperating operator's verdict when they ended the episode.
    Done { frames: u64, operator_end: Option<bool> },
    /// The dataflow stopped (the arm is at rest).
    Stopped,
}

/// The node: the dora side, the arm, and the command guard both threads share.
struct Driver {
    node: DoraNode,
    events: EventStream,
    arm: Box<dyn Arm>,
    guard: Arc<Mutex<CommandGuard>>,
    settings: Settings,
    counts: Counts,
}

impl Driver {
    /// Episode `episode`: home, the `episode` start, the control ticks, the arm at rest, the verdict, the `episode`
    /// end. `false` when the dataflow stopped before the episode ended.
    fn episode(&mut self, episode: u64) -> eyre::Result<bool> {
        let settings = &self.settings;
        self.arm.home(&settings.home)?;
        self.guard.lock().expect("guard lock").hold();
        let shared = Shared { guard: self.guard.clone(), clock: Instant::now() };
        let start = EpisodeEvent::Start {
            task: settings.task.name().to_string(),
            text_query: settings.text_query.clone(),
            seed: episode,
            variant: "none".into(),
            strength: 0.0,
            objects: Vec::new(),
        };
        send(&mut self.node, "episode", &Header { episode, frame: 0, timestamp_ns: 0 }, &start)?;
        self.arm.start(shared.clone())?;
        let Ticks::Done { frames, operator_end } = self.control(episode, &shared)? else { return Ok(false) };
        self.guard.lock().expect("guard lock").hold();
        self.arm.stop()?;
        let success = match operator_end {
            Some(success) => success,
            None => match verdict(&self.settings.verdict_file, episode, &mut self.events)? {
                Some(success) => success,
                None => return Ok(false),
            },
        };
        let end = EpisodeEvent::End { success, ticks: frames };
        let header = Header { episode, frame: frames, timestamp_ns: shared.clock.elapsed().as_nanos() as u64 };
        send(&mut self.node, "episode", &header, &end)?;
        println!("franka-driver: episode {episode}: success={success} ticks={frames}");
        Ok(true)
    }

    /// The control ticks of `episode`: on the clock, the measured `robot_state`; between ticks, the inputs.
    fn control(&mut self, episode: u64, shared: &Shared) -> eyre::Result<Ticks> {
        let (mut frame, mut next_tick) = (0u64, Instant::now());
        let mut operator_end = None;
        while frame < self.settings.max_ticks && operator_end.is_none() {
            let now = Instant::now();
            if now >= next_tick {
                let tick = Instant::now();
                let state = self.arm.state()?;
                let h = Header { episode, frame, timestamp_ns: shared.clock.elapsed().as_nanos() as u64 };
                send(&mut self.node, "robot_state", &h, &state)?;
                self.counts.latency.record(tick);
                frame += 1;
                // On schedule; a tick that fell more than a period behind is not made up.
                next_tick += self.settings.period;
                if next_tick <= now {
                    next_tick = now + self.settings.period;
                }
                continue;
            }
            match self.events.recv_timeout(next_tick - now) {
                Some(Event::Input { id, metadata, data }) if id.as_str() == "action" => {
                    self.follow(episode, shared, decode::<Action>(&metadata, &data));
                }
                Some(Event::Input { id, metadata, data }) if id.as_str() == "end" => match decode::<EpisodeEvent>(&metadata, &data) {
                    Ok((h, EpisodeEvent::End { success, .. })) if h.episode == episode => operator_end = Some(success),
                    Ok((h, event)) => eprintln!("franka-driver: episode {episode}: ignoring `end` input {event:?} of episode {}", h.episode),
                    Err(e) => eprintln!("franka-driver: episode {episode}: ignoring an invalid `end` input: {e}"),
                },
                Some(Event::Input { id, .. }) => eyre::bail!("franka-driver: unexpected input `{id}`"),
                Some(Event::Stop(_)) | None => {
                    self.arm.stop()?;
                    return Ok(Ticks::Stopped);
                }
                Some(_) => {}
            }
        }
        Ok(Ticks::Done { frames: frame, operator_end })
    }

    /// An `action` input of `episode`: another episode's is ignored, one answering a tick older than
    /// `MAX_ACTION_AGE_MS` is not followed, a valid one becomes the guard's target (clamped into the workspace);
    /// a rejected one (a bad field, NaN) makes the arm hold.
    fn follow(&mut self, episode: u64, shared: &Shared, decoded: Result<(Header, Action), MsgError>) {
        let counts = &mut self.counts;
        match decoded {
            Ok((h, _)) if h.episode != episode => {}
            Ok((h, _)) if shared.clock.elapsed().as_nanos() as u64 > h.timestamp_ns + self.settings.max_age_ns => {
                counts.too_old += 1;
                let age = shared.clock.elapsed().as_nanos() as u64 - h.timestamp_ns;
                eprintln!("franka-driver: episode {episode} frame {}: action {} ms after its tick (MAX_ACTION_AGE_MS), not followed", h.frame, age / 1_000_000);
            }
            Ok((h, action)) => {
                let now_s = shared.clock.elapsed().as_secs_f64();
                match self.guard.lock().expect("guard lock").accept(&action, now_s) {
                    Ok(t) if t.clamped_by > 1e-3 => {
                        counts.clamped += 1;
                        eprintln!("franka-driver: episode {episode} frame {}: target clamped {:.3} m into WORKSPACE", h.frame, t.clamped_by);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        counts.rejected += 1;
                        eprintln!("franka-driver: episode {episode} frame {}: rejected action, holding: {e}", h.frame);
                    }
                }
            }
            Err(e) => {
                counts.rejected += 1;
                self.guard.lock().expect("guard lock").hold();
                eprintln!("franka-driver: episode {episode}: rejected action, holding: {e}");
            }
        }
    }

    /// Every episode in turn; `false` when the dataflow stopped first. Whatever fails inside an episode (a lost
    /// connection, a reflex, the dataflow), the guard holds and the servo is stopped before the error returns.
    fn run(&mut self) -> eyre::Result<bool> {
        for episode in 0..self.settings.episodes {
            match self.episode(episode) {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(error) => {
                    self.guard.lock().expect("guard lock").hold();
                    if let Err(stop) = self.arm.stop() {
                        eprintln!("franka-driver: stopping the arm after the error below failed too: {stop:#}");
                    }
                    return Err(error);
                }
            }
        }
        Ok(true)
    }
}

fn main() -> eyre::Result<()> {
    let settings = Settings::from_env()?;
    let safety = safety_config()?;
    let arm = connect(&safety)?;
    let guard = Arc::new(Mutex::new(CommandGuard::new(safety)?));
    let (node, events) = DoraNode::init_from_env()?;
    let mut driver = Driver { node, events, arm, guard, settings, counts: Counts::default() };
    if !driver.run()? {
        return Ok(());
    }
    let Counts { latency, rejected, clamped, too_old } = &driver.counts;
    eprintln!("franka-driver: {} ({rejected} actions rejected, {clamped} clamped, {too_old} too old)", latency.summary());
    linger(&mut driver.events)
}

#[cfg(test)]
mod tests;
