//! The in-process closed loop of [`evaluate`]: episodes in lockstep, the per-episode work (simulation, grounding,
//! tracking, acting) spread over the cores, one batched encoder pass and one batched DDIM run per control tick.

use std::cell::OnceCell;
use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use eyre::{Result, WrapErr, ensure, eyre};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{
    EpisodeResult, EvalConfig, EvalReport, ForceVisible, KeyPatches, KeyPositions, Keypoints, Latency, PoseError, StageTimes,
    UnlitEncoder,
    video_name, write_report,
};
use crate::annotate::{EpisodeTracks, first_frame_keypoints_by_object};
use crate::collect::{episode_info, tick};
use crate::fusion::is_visible;
use crate::keypoints::OracleGrounder;
use crate::msg::ObjectPoses;
use crate::policy::Policy;
use crate::policy::observation::Frame;
use crate::policy::runtime::{ActionQueue, ConditionBuffer, safe_action};
use crate::recording::EpisodeWriter;
use crate::sim::ood::Variant;
use crate::sim::{EpisodeSpec, Observation, Sim};
use crate::vit::GridEncoder;

/// Runs `config.episodes` closed-loop episodes and writes `eval.json` (and GIFs) into `out`.
///
/// Episodes run `config.parallel` at a time in lockstep: one batched encoder pass and one batched DDIM run per
/// control tick serve them all (the vectorised environments of policy evaluation), the per-episode simulation and
/// tracking spread over the cores. Each episode draws its own sampling noise, so its actions are those of a
/// one-at-a-time run up to the float rounding of batched kernels.
pub fn evaluate(config: &EvalConfig, out: &Path, device: &Device) -> Result<EvalReport> {
    ensure!(config.parallel > 0, "--parallel must be at least 1");
    let policy = Policy::load(&config.checkpoint, device)?;
    check_options(config, &policy)?;
    let grid = match config.keypoints {
        Keypoints::Tracker => Some(GridEncoder::load(&config.keypoint_weights, 2, device)?),
        Keypoints::Oracle => None,
    };
    std::fs::create_dir_all(out).wrap_err_with(|| format!("cannot create {}", out.display()))?;
    let lockstep = Lockstep { config, policy: &policy, grid: grid.as_ref(), device };
    let mut timings = Timings::default();
    let mut results = Vec::new();
    let indices: Vec<u64> = (0..config.episodes).collect();
    for group in indices.chunks(config.parallel) {
        let mut episodes = group.iter().map(|&index| Episode::start(config, &policy, index)).collect::<Result<Vec<_>>>()?;
        while lockstep.tick(&mut episodes, &mut timings)? {}
        for episode in episodes {
            let (result, times) = episode.finish(config)?;
            timings.stages.add(&times);
            results.push(result);
        }
    }
    write_report(config, policy.config.policy.name(), results, timings.latency(), out)
}

/// The options that only some policies, variants or keypoint sources accept, checked against the loaded policy.
fn check_options(config: &EvalConfig, policy: &Policy) -> Result<()> {
    ensure!(
        config.object_pose_error >= 0.0 && config.object_pose_error.is_finite(),
        "--object-pose-error: expected a standard deviation >= 0 m, got {}",
        config.object_pose_error
    );
    ensure!(
        config.object_pose_error == 0.0 || policy.config.policy.uses_object_poses(),
        "--object-pose-error applies to the privileged-state policy (--policy state); {} reads no object poses",
        policy.config.policy.name()
    );
    policy.check_task(config.task.name()).wrap_err_with(|| format!("--checkpoint {}", config.checkpoint.display()))?;
    if let Some(encoder) = config.unlit_encoder {
        ensure!(
            config.condition.variant == Variant::Lighting,
            "--unlit-encoder: expected --variant lighting (it shows one encoder the frame without the lighting variant's lights), got {}",
            config.condition.variant.name()
        );
        let kind = policy.config.policy;
        let has = match encoder {
            UnlitEncoder::Global => kind.uses_images(),
            UnlitEncoder::Local => kind.uses_key_patches(),
        };
        ensure!(has, "--unlit-encoder {encoder:?}: the {} policy has no such encoder", kind.name());
    }
    ensure!(
        config.key_patches == KeyPatches::Live || policy.config.policy.uses_key_patches(),
        "--key-patches: the {} policy has no key patches (GLUE's only), so only `live` applies",
        policy.config.policy.name()
    );
    ensure!(
        config.key_positions == KeyPositions::Live || policy.config.policy.uses_keypoints() || policy.config.n_keypoints > 0,
        "--key-positions: the {} policy reads no keypoints, so only `live` applies",
        policy.config.policy.name()
    );
    let swaps = [
        (config.key_patches == KeyPatches::Swapped, "--key-patches swapped", "key patches"),
        (config.key_positions == KeyPositions::Swapped, "--key-positions swapped", "keypoint positions"),
    ];
    for (option, what) in swaps.iter().filter(|s| s.0).map(|s| (s.1, s.2)) {
        let queries = config.task.text_query();
        ensure!(
            queries.len() >= 2,
            "{option} trades the {what} between objects: expected a task with two or more text queries (stack-block, place-fruit), got {} with {queries:?}",
            config.task.name()
        );
        ensure!(
            config.keypoints == Keypoints::Tracker,
            "{option} needs grounding's object of each keypoint, which --keypoints oracle does not give: use --keypoints tracker (the default)"
        );
    }
    if let Some(ForceVisible::Object(n)) = config.force_visible {
        let queries = config.task.text_query();
        ensure!(
            n < queries.len() && config.keypoints == Keypoints::Tracker,
            "--force-visible {n}: expected the index of one of {}'s text queries {queries:?} (0..{}), with --keypoints tracker",
            config.task.name(),
            queries.len()
        );
    }
    Ok(())
}

/// [`KeyPatches::FirstFrame`]: the first frame's key features (`N x C` row-major), each keypoint's kept while the
/// tracker shows it visible now and zeroed while hidden, as sec. III-C zeroes an occluded one.
pub(super) fn first_frame_features(first: &[f32], keypoints: &[[f32; 3]]) -> Vec<f32> {
    let width = first.len() / keypoints.len().max(1);
    keypoints
        .iter()
        .zip(first.chunks(width.max(1)))
        .flat_map(|(point, feature)| if is_visible(point) { feature.to_vec() } else { vec![0.0; feature.len()] })
        .collect()
}

/// The pairing of [`KeyPatches::Swapped`] and [`KeyPositions::Swapped`]: for each keypoint (its text-query index in
/// `objects`), the keypoint it takes from: keypoint `j` of object `q` takes keypoint `j mod n` of the `n` of the
/// next object in query order (cyclically); a keypoint grounding gave no object takes its own.
pub(super) fn swap_donors(objects: &[Option<usize>]) -> Result<Vec<usize>> {
    let mut members: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, object) in objects.iter().enumerate() {
        if let Some(q) = object {
            members.entry(*q).or_default().push(i);
        }
    }
    ensure!(members.len() >= 2, "swapping keypoints between objects: keypoints on {} object(s), expected two or more", members.len());
    let order: Vec<usize> = members.keys().copied().collect();
    let mut donor: Vec<usize> = (0..objects.len()).collect();
    for (k, q) in order.iter().enumerate() {
        let next = &members[&order[(k + 1) % order.len()]];
        for (j, &i) in members[q].iter().enumerate() {
            donor[i] = next[j % next.len()];
        }
    }
    Ok(donor)
}

/// [`KeyPatches::Swapped`]: `live` (`N x C` row-major, one row per keypoint) with each row taken from its
/// [`swap_donors`] keypoint's, zeroed while its own keypoint in `keypoints` is hidden, as sec. III-C zeroes an
/// occluded one.
pub(super) fn swapped_features(live: &[f32], keypoints: &[[f32; 3]], objects: &[Option<usize>]) -> Result<Vec<f32>> {
    ensure!(
        objects.len() == keypoints.len() && live.len() % keypoints.len().max(1) == 0,
        "swapped key patches: {} keypoints, {} object labels and {} feature values (expected N labels and N x C values)",
        keypoints.len(),
        objects.len(),
        live.len()
    );
    let width = live.len() / keypoints.len().max(1);
    Ok(keypoints
        .iter()
        .zip(swap_donors(objects)?)
        .flat_map(|(point, d)| if is_visible(point) { live[d * width..(d + 1) * width].to_vec() } else { vec![0.0; width] })
        .collect())
}

/// [`KeyPositions::Swapped`]: each keypoint's position and flag taken from its [`swap_donors`] keypoint's.
pub(super) fn swapped_positions(keypoints: &[[f32; 3]], objects: &[Option<usize>]) -> Result<Vec<[f32; 3]>> {
    ensure!(
        objects.len() == keypoints.len(),
        "swapped key positions: {} keypoints but {} object labels",
        keypoints.len(),
        objects.len()
    );
    Ok(swap_donors(objects)?.into_iter().map(|d| keypoints[d]).collect())
}

/// Milliseconds since `t`.
fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One episode's current tick: the simulator's observation, its image, the keypoints, the task objects' poses
/// (recorded, and read by the privileged-state policy only), and the frame under the default light for
/// [`EvalConfig::unlit_encoder`].
type Observed = (Observation, RgbImage, Vec<[f32; 3]>, ObjectPoses, Option<RgbImage>);

/// One episode in flight.
struct Episode {
    index: u64,
    spec: EpisodeSpec,
    sim: Sim,
    buffer: ConditionBuffer,
    queue: ActionQueue,
    /// The episode's own sampling noise (seed `config.seed + index`), so a result does not depend on which
    /// episodes share its batch.
    rng: ChaCha8Rng,
    tracker: Option<EpisodeTracks>,
    /// Each tracked keypoint's text-query index, from grounding (see [`ForceVisible`]).
    objects: Vec<Option<usize>>,
    writer: Option<EpisodeWriter>,
    frames: Vec<RgbImage>,
    invalid: u32,
    /// This tick's observation, camera image and keypoints.
    current: Option<Observed>,
    /// How the privileged-state policy perceives the objects' poses ([`EvalConfig::object_pose_error`]).
    pose_error: PoseError,
    /// Per-episode work (sim, grounding, tracker), summed over the episode's ticks.
    times: StageTimes,
    /// The key features of the episode's first frame, for [`KeyPatches::FirstFrame`].
    first_key_features: OnceCell<Vec<f32>>,
}

impl Episode {
    /// Episode `index` of `config` (scene seed `seed_start + index`), before its first tick.
    fn start(config: &EvalConfig, policy: &Policy, index: u64) -> Result<Self> {
        let sim_config = &config.sim;
        let period_ns = (1e9 / f64::from(sim_config.control_hz)) as u64;
        let spec = EpisodeSpec { task: config.task, seed: config.seed_start + index, condition: config.condition };
        let sim = Sim::new(sim_config, spec);
        let writer = match &config.record {
            Some(dir) => Some(EpisodeWriter::create(dir, episode_info(&sim, index))?),
            None => None,
        };
        let pose_error = PoseError::new(spec.seed, sim.objects().len(), config.object_pose_error);
        Ok(Episode {
            index,
            spec,
            sim,
            buffer: ConditionBuffer::new(policy.config.n_obs_steps),
            queue: ActionQueue::new(sim_config.control_hz, period_ns / 2).with_temporal_ensemble(config.temporal_ensemble)?,
            rng: ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(index)),
            tracker: None,
            objects: Vec::new(),
            writer,
            frames: Vec::new(),
            invalid: 0,
            current: None,
            pose_error,
            times: StageTimes::default(),
            first_key_features: OnceCell::new(),
        })
    }

    /// Observes this tick and tracks its keypoints (none yet on an episode's first tick in tracker mode:
    /// [`Self::ground`] extracts them).
    fn observe(&mut self, config: &EvalConfig) -> Result<()> {
        let (w, h) = (config.sim.width, config.sim.height);
        let started = Instant::now();
        let obs = self.sim.observe();
        let image = RgbImage::from_raw(w, h, obs.image.rgb.clone()).ok_or_else(|| eyre!("frame size"))?;
        let unlit = match config.unlit_encoder {
            Some(_) => Some(RgbImage::from_raw(w, h, self.sim.render_default_lighting().rgb).ok_or_else(|| eyre!("frame size"))?),
            None => None,
        };
        self.times.sim_ms += ms_since(started);
        let started = Instant::now();
        let keypoints = match (config.keypoints, self.tracker.as_mut()) {
            (Keypoints::Oracle, _) => obs.oracle_tracks.points.clone(),
            (Keypoints::Tracker, Some(t)) => t.track(&image)?,
            (Keypoints::Tracker, None) => Vec::new(),
        };
        let keypoints = match config.force_visible {
            Some(force) => force.apply(keypoints, &self.objects),
            None => keypoints,
        };
        self.times.tracker_ms += ms_since(started);
        let poses = self.sim.object_poses();
        self.current = Some((obs, image, keypoints, poses, unlit));
        Ok(())
    }

    /// The first frame's keypoints, as the grounding node extracts them (the oracle grounder on the simulator's
    /// segmentation, K-means on `encoder`'s features), and the tracker started on them.
    fn ground(&mut self, config: &EvalConfig, encoder: &GridEncoder, device: &Device) -> Result<()> {
        let started = Instant::now();
        let (w, h) = (config.sim.width, config.sim.height);
        let (obs, image, keypoints, _, _) = self.current.as_mut().expect("observed before grounding");
        let grounder = OracleGrounder::new(episode_info(&self.sim, self.index).objects, w, h, obs.image.instance.clone())?;
        let queries = self.spec.task.text_query();
        let init = first_frame_keypoints_by_object(&grounder, encoder, image, &queries, config.k, config.keypoint_seed, config.unseen_at, device)?;
        let (init, objects): (Vec<[f32; 3]>, Vec<Option<usize>>) = init.into_iter().unzip();
        let tracker = EpisodeTracks::start(image, &init)?;
        *keypoints = match config.force_visible {
            Some(force) => force.apply(tracker.current(), &objects),
            None => tracker.current(),
        };
        self.objects = objects;
        self.tracker = Some(tracker);
        self.times.grounding_ms += ms_since(started);
        Ok(())
    }

    /// Executes this tick's queued action (every command through [`safe_action`]; a failing one is replaced by a
    /// hold and counted), records the tick, and steps the simulation.
    fn act(&mut self, config: &EvalConfig) -> Result<()> {
        let (obs, image, keypoints, poses, _) = self.current.take().expect("observed before acting");
        let action = match self.queue.next(obs.timestamp_ns).map(safe_action) {
            Some(Ok(action)) => action,
            _ => {
                self.invalid += 1;
                self.sim.hold_action()
            }
        };
        if let Some(writer) = self.writer.as_mut() {
            let mut row = tick(obs, &poses, &action);
            row.keypoints = Some(crate::msg::Keypoints { points: keypoints });
            writer.push(row)?;
        }
        if config.video.is_some() {
            self.frames.push(image);
        }
        let started = Instant::now();
        self.sim.step(&action);
        self.times.sim_ms += ms_since(started);
        Ok(())
    }

    /// The finished episode's outcome and time by stage; closes its recording and writes its GIF.
    fn finish(self, config: &EvalConfig) -> Result<(EpisodeResult, StageTimes)> {
        let result = EpisodeResult::of(&self.sim, self.invalid);
        if let Some(writer) = self.writer {
            writer.finish(result.success)?;
        }
        eprintln!("episode {} (seed {}): {} in {} ticks", self.index, self.spec.seed, if result.success { "success" } else { "failure" }, result.ticks);
        if let Some(dir) = &config.video {
            std::fs::create_dir_all(dir)?;
            crate::viz::save_gif(self.frames.into_iter().map(Ok), 10, &dir.join(video_name(config, self.spec.seed)))?;
        }
        Ok((result, self.times))
    }

    /// This tick's observation (between [`Self::observe`] and [`Self::act`]).
    fn current(&self) -> &Observed {
        self.current.as_ref().expect("observed this tick")
    }
}

/// What the run measures for [`Latency`].
#[derive(Default)]
struct Timings {
    /// Each batched DDIM run.
    chunk_ms: Vec<f64>,
    /// Each lockstep tick.
    tick_ms: Vec<f64>,
    /// Summed over episode-ticks.
    stages: StageTimes,
    episode_ticks: usize,
}

impl Timings {
    fn latency(&self) -> Latency {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let p95 = |v: &[f64]| {
            let mut sorted = v.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted.get((sorted.len() * 95 / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
        };
        Latency {
            chunk_mean_ms: mean(&self.chunk_ms),
            chunk_p95_ms: p95(&self.chunk_ms),
            tick_mean_ms: mean(&self.tick_ms),
            tick_p95_ms: p95(&self.tick_ms),
            stages: self.stages.scaled(1.0 / self.episode_ticks.max(1) as f64),
        }
    }
}

/// What every tick of a group of episodes shares: the settings, the policy and the keypoint encoder.
struct Lockstep<'a> {
    config: &'a EvalConfig,
    policy: &'a Policy,
    /// The local encoder of keypoint extraction, in tracker mode.
    grid: Option<&'a GridEncoder>,
    device: &'a Device,
}

impl Lockstep<'_> {
    /// One control tick of every episode still running; false when all are done.
    fn tick(&self, episodes: &mut [Episode], timings: &mut Timings) -> Result<bool> {
        let mut active: Vec<&mut Episode> = episodes.iter_mut().filter(|e| !e.sim.done()).collect();
        if active.is_empty() {
            return Ok(false);
        }
        let t = Instant::now();
        timings.episode_ticks += active.len();
        for_each_parallel(&mut active, |e| e.observe(self.config))?;
        if let Some(encoder) = self.grid {
            for e in active.iter_mut().filter(|e| e.tracker.is_none()) {
                e.ground(self.config, encoder, self.device)?;
            }
        }
        let started = Instant::now();
        let steps = self.step_conditions(&active)?;
        timings.stages.encoder_ms += ms_since(started);
        self.plan_due(&mut active, steps, timings)?;
        for_each_parallel(&mut active, |e| e.act(self.config))?;
        timings.tick_ms.push(ms_since(t));
        Ok(true)
    }

    /// One batched encoder pass over every episode's frame: the step conditions, in `active`'s order.
    fn step_conditions(&self, active: &[&mut Episode]) -> Result<Vec<Vec<f32>>> {
        let (config, policy) = (self.config, self.policy);
        let current: Vec<&Observed> = active.iter().map(|e| e.current()).collect();
        // The frame each encoder sees: the lit one, or for the --unlit-encoder, the same tick under the default light.
        let seen_by = |encoder: UnlitEncoder| -> Vec<&RgbImage> {
            current.iter().map(|c| if config.unlit_encoder == Some(encoder) { c.4.as_ref().unwrap_or(&c.1) } else { &c.1 }).collect()
        };
        let images = seen_by(UnlitEncoder::Global);
        let keypoints: Vec<Vec<[f32; 3]>> = current.iter().map(|c| c.2.clone()).collect();
        // --key-patches zeroed: the key patches are selected as if every keypoint were occluded (features zeroed,
        // cells kept); the frame keeps the tracker's flags and coordinates.
        let hidden: Vec<Vec<[f32; 3]>>;
        let patched = if config.key_patches == KeyPatches::Zeroed {
            hidden = keypoints.iter().map(|points| points.iter().map(|&[x, y, _]| [x, y, 0.0]).collect()).collect();
            &hidden
        } else {
            &keypoints
        };
        let mut features = policy.key_features_batch(&seen_by(UnlitEncoder::Local), patched)?;
        // --key-positions swapped: the positions and flags the policy is told (cells, coordinates); the features
        // above stay those at the tracked keypoints.
        let positions: Vec<Vec<[f32; 3]>> = match config.key_positions {
            KeyPositions::Live => keypoints,
            KeyPositions::Swapped => active.iter().zip(&keypoints).map(|(e, points)| swapped_positions(points, &e.objects)).collect::<Result<_>>()?,
        };
        match (config.key_patches, features.as_mut()) {
            (KeyPatches::FirstFrame, Some(features)) => {
                for ((now, e), points) in features.iter_mut().zip(active).zip(&positions) {
                    let first = e.first_key_features.get_or_init(|| now.clone());
                    *now = first_frame_features(first, points);
                }
            }
            (KeyPatches::Swapped, Some(features)) => {
                for ((now, e), points) in features.iter_mut().zip(active).zip(&positions) {
                    *now = swapped_features(now, points, &e.objects)?;
                }
            }
            _ => {}
        }
        let states: Vec<Vec<f32>> = current.iter().map(|c| c.0.robot_state.to_array().to_vec()).collect();
        let perceived: Vec<Vec<[f32; 7]>> = if policy.config.policy.uses_object_poses() {
            active.iter().zip(&current).map(|(e, c)| e.pose_error.apply(&c.3.poses)).collect()
        } else {
            vec![Vec::new(); current.len()]
        };
        let frames: Vec<Frame<'_>> = (0..current.len())
            .map(|j| Frame {
                image: images[j].as_raw(),
                width: config.sim.width,
                height: config.sim.height,
                state: &states[j],
                keypoints: &positions[j],
                key_features: features.as_ref().map(|f| f[j].as_slice()),
                object_poses: &perceived[j],
            })
            .collect();
        policy.step_conditions(&frames)
    }

    /// Appends each episode's step condition to its history, then one batched DDIM run for the episodes whose
    /// action queue ran dry, each with its own generator.
    fn plan_due(&self, active: &mut [&mut Episode], steps: Vec<Vec<f32>>, timings: &mut Timings) -> Result<()> {
        let mut conditions = Vec::with_capacity(active.len());
        let mut due = Vec::new();
        for (j, (e, step)) in active.iter_mut().zip(steps).enumerate() {
            conditions.push(e.buffer.push(step));
            if e.queue.needs_chunk(e.current().0.timestamp_ns) {
                due.push(j);
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let mut rngs: Vec<ChaCha8Rng> = due.iter().map(|&j| active[j].rng.clone()).collect();
        let refs: Vec<&[f32]> = due.iter().map(|&j| conditions[j].as_slice()).collect();
        let chunks = self.policy.plan_batch(&refs, &mut rngs)?;
        for ((&j, chunk), rng) in due.iter().zip(chunks).zip(rngs) {
            let now = active[j].current().0.timestamp_ns;
            active[j].queue.push_chunk(now, &chunk);
            active[j].rng = rng;
        }
        timings.chunk_ms.push(ms_since(t));
        timings.stages.policy_ms += ms_since(t);
        Ok(())
    }
}

/// Runs `f` on every item, the items split over the machine's cores (the simulator's render and physics and the
/// tracker are per-episode CPU work).
fn for_each_parallel<T: Send>(items: &mut [&mut T], f: impl Fn(&mut T) -> Result<()> + Sync) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(items.len()).max(1);
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks_mut(per.max(1))
            .map(|chunk| scope.spawn(|| chunk.iter_mut().try_for_each(|item| f(item))))
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| eyre!("an evaluation worker panicked"))?)
    })
}
