//! Demonstration collection: the scripted expert driving the simulator in-process, optionally recorded.
//!
//! This is the in-process twin of `dataflow.expert.yml` (sim node + expert node + recorder node): the same
//! `Sim`, `Expert` and `EpisodeWriter`, without a dora daemon, for `glue record`, tests and benchmarks.

use std::path::{Path, PathBuf};

use glam::Vec2;
use rand_chacha::ChaCha8Rng;

use crate::msg::{Action, ObjectPoses};
use crate::policy::gaussian_values;
use crate::recording::{EpisodeInfo, EpisodeWriter, ObjectInfo, Tick};
use crate::sim::expert::Expert;
use crate::sim::{self, EpisodeSpec, Observation, Sim, SimConfig};

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    /// Control ticks executed (observation-action pairs).
    pub ticks: u32,
    /// Picks the expert re-planned because the carried object left the hand ([`Expert::regrasps`]).
    pub regrasps: u32,
}

/// DART-style noise injection (Laskey et al., "DART: Noise Injection for Robust Imitation Learning", CoRL 2017):
/// the simulator executes the expert's commands plus a horizontal offset that drifts as an Ornstein-Uhlenbeck
/// process, while the recording keeps the expert's clean commands as labels. The demonstrations then visit states
/// off the expert's path (a TCP beside the object, a missed grasp the expert re-plans) labelled with the way back,
/// which scripted demonstrations otherwise never show. Horizontal only: a vertical offset would press the hand into
/// the table or grasp above the object, which teaches nothing a policy needs. The offset is not applied while the
/// expert lowers onto its target ([`Expert::on_target`]), so noisy demonstrations still place on target (training
/// keeps successful episodes only) and show the correction on the way down.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExecutionNoise {
    /// Stationary standard deviation of the offset along x and along y (m).
    pub std: f32,
    /// Correlation time of the offset (s): how long a drift lasts before it decays.
    pub correlation_s: f32,
}

impl ExecutionNoise {
    /// Checks the settings (`--noise`, `--noise-correlation`).
    pub fn new(std: f32, correlation_s: f32) -> eyre::Result<Self> {
        eyre::ensure!(std.is_finite() && (0.0..=0.1).contains(&std), "--noise: expected a standard deviation in [0, 0.1] m, got {std}");
        eyre::ensure!(correlation_s.is_finite() && correlation_s > 0.0, "--noise-correlation: expected a positive time in seconds, got {correlation_s}");
        Ok(ExecutionNoise { std, correlation_s })
    }
}

/// The offset process of one episode: starts at zero (the arm at home) and is seeded by the episode seed on its own
/// stream, so a noisy episode repeats bit for bit.
struct OffsetProcess {
    decay: f32,
    kick: f32,
    offset: Vec2,
    rng: ChaCha8Rng,
}

impl OffsetProcess {
    fn new(noise: ExecutionNoise, seed: u64, control_hz: f32) -> Self {
        let decay = (-1.0 / (control_hz * noise.correlation_s)).exp();
        let kick = noise.std * (1.0 - decay * decay).sqrt();
        OffsetProcess { decay, kick, offset: Vec2::ZERO, rng: sim::rng(seed, sim::STREAM_EXECUTION_NOISE) }
    }

    /// The offset of the next tick: `x' = a x + sqrt(1 - a^2) std e`, `a = exp(-dt / correlation)`, `e ~ N(0, I)`.
    fn step(&mut self) -> Vec2 {
        let e = gaussian_values(&mut self.rng, 2);
        self.offset = self.offset * self.decay + Vec2::new(e[0], e[1]) * self.kick;
        self.offset
    }
}

/// Runs the expert on `spec` until the episode is done, calling `on_tick` with the simulator (mutable, so that it
/// may render extra views of the tick), every observation and the action taken after it.
pub fn run_expert(config: &SimConfig, spec: EpisodeSpec, on_tick: impl FnMut(&mut Sim, Observation, &Action) -> eyre::Result<()>) -> eyre::Result<Outcome> {
    run_noisy_expert(config, spec, None, on_tick)
}

/// [`run_expert`] with the executed commands perturbed by `noise` when given; `on_tick` sees the expert's clean
/// command, the label to record.
pub fn run_noisy_expert(
    config: &SimConfig,
    spec: EpisodeSpec,
    noise: Option<ExecutionNoise>,
    mut on_tick: impl FnMut(&mut Sim, Observation, &Action) -> eyre::Result<()>,
) -> eyre::Result<Outcome> {
    let mut sim = Sim::new(config, spec);
    let mut expert = Expert::new(spec.task, &sim.object_poses(), &sim.robot_state(), config.control_hz)?;
    let mut offsets = noise.map(|n| OffsetProcess::new(n, spec.seed, config.control_hz));
    while !sim.done() {
        let obs = sim.observe();
        let label = expert.act(&obs.robot_state, &sim.object_poses())?;
        let mut executed = label;
        if let Some(offsets) = offsets.as_mut() {
            let drift = offsets.step().extend(0.0);
            let offset = if expert.on_target() { glam::Vec3::ZERO } else { drift };
            executed.position = (glam::Vec3::from(label.position) + offset).to_array();
            expert.set_execution_offset(offset);
        }
        on_tick(&mut sim, obs, &label)?;
        sim.step(&executed);
    }
    Ok(Outcome { success: sim.success(), ticks: sim.frame(), regrasps: expert.regrasps() })
}

/// The recording header of an episode of `sim`.
pub fn episode_info(sim: &Sim, episode: u64) -> EpisodeInfo {
    let spec = sim.spec();
    EpisodeInfo {
        episode,
        task: spec.task.name().to_string(),
        text_query: spec.task.text_query(),
        seed: spec.seed,
        variant: spec.condition.variant.name().to_string(),
        strength: spec.condition.strength,
        width: sim.config().width,
        height: sim.config().height,
        control_hz: sim.config().control_hz,
        objects: sim.objects().iter().map(|o| ObjectInfo { name: o.name.to_string(), instance: o.instance }).collect(),
    }
}

/// The recorded row of one observation, the task objects' poses at it, and the action taken after it (keypoints
/// stay empty until a tracker fills them).
pub fn tick(obs: Observation, poses: &ObjectPoses, action: &Action) -> Tick {
    Tick {
        frame: obs.frame,
        timestamp_ns: obs.timestamp_ns,
        image: obs.image.rgb,
        segmentation: Some(obs.image.instance),
        robot_state: obs.robot_state,
        action: *action,
        keypoints: None,
        oracle_tracks: Some(obs.oracle_tracks),
        object_poses: Some(poses.poses.clone()),
    }
}

/// Runs and records one expert episode into `out_dir` (with execution noise when given; the recorded actions are
/// the expert's clean commands); returns the file written and the outcome.
pub fn record_expert(config: &SimConfig, spec: EpisodeSpec, noise: Option<ExecutionNoise>, episode: u64, out_dir: &Path) -> eyre::Result<(PathBuf, Outcome)> {
    let mut writer: Option<EpisodeWriter> = None;
    let outcome = run_noisy_expert(config, spec, noise, |sim, obs, action| {
        if writer.is_none() {
            writer = Some(EpisodeWriter::create(out_dir, episode_info(sim, episode))?);
        }
        writer.as_mut().expect("created above").push(tick(obs, &sim.object_poses(), action))?;
        Ok(())
    })?;
    let writer = writer.ok_or_else(|| eyre::eyre!("episode {episode} ended before its first tick"))?;
    Ok((writer.finish(outcome.success)?, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_settings_are_checked() {
        assert!(ExecutionNoise::new(0.02, 1.0).is_ok());
        for (std, correlation) in [(-0.01, 1.0), (0.2, 1.0), (f32::NAN, 1.0), (0.02, 0.0), (0.02, f32::INFINITY)] {
            assert!(ExecutionNoise::new(std, correlation).is_err(), "accepted std {std}, correlation {correlation}");
        }
    }

    /// The offset process has the stationary standard deviation and the correlation time it is given: over a long
    /// run, std per axis within 10% of 2 cm, and the autocorrelation at one correlation time (10 ticks at 10 Hz)
    /// within 0.1 of exp(-1).
    #[test]
    fn offset_process_has_the_requested_spread_and_correlation() {
        let mut process = OffsetProcess::new(ExecutionNoise::new(0.02, 1.0).unwrap(), 7, 10.0);
        let xs: Vec<f32> = (0..100_000).map(|_| process.step().x).skip(100).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!((var.sqrt() - 0.02).abs() < 0.002, "std {}", var.sqrt());
        let lag = 10;
        let cov = xs.windows(lag + 1).map(|w| (w[0] - mean) * (w[lag] - mean)).sum::<f32>() / (xs.len() - lag) as f32;
        let rho = cov / var;
        assert!((rho - (-1.0f32).exp()).abs() < 0.1, "autocorrelation at 1 s: {rho}");
    }
}
