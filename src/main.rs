//! `glue`: the command-line front end of the library (record, inspect, render, snapshot, features, keypoints,
//! track, pretrain, annotate, teleop-check, train, eval, report, compare, bench, ...).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use glue::collect::{ExecutionNoise, record_expert};
use glue::device::DeviceKind;
use glue::eval::{EvalConfig, Keypoints as EvalKeypoints};
use glue::keypoints::{FeatureGrid, Grounder, KeypointConfig, KeypointsFile, Mask, OracleGrounder};
use glue::policy::{ModelSize, PolicyConfig, PolicyKind};
use glue::pretrain::{PretrainConfig, SMALL_LOCAL_ENCODER};

/// The shipped GLUE checkpoint that the README's main job and `glue bench --suite loop` run.
const SHIPPED_GLUE: &str = "checkpoints/push-button-glue-small";
use glue::train::{ResumeOverrides, TrainConfig};
use glue::recording::{inspect, read_episode};
use glue::sim::ood::{Condition, Variant};
use glue::sim::task::TaskKind;
use glue::sim::{EpisodeSpec, Sim, SimConfig};
use glue::viz::{render_episode_gif, GifOptions};

#[derive(Parser)]
#[command(name = "glue", version, about = "GLUE on dora-rs: simulator, recordings and models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The episode to simulate: task, seed and OOD condition.
#[derive(clap::Args)]
struct Scene {
    /// push-button | stack-block | place-fruit
    #[arg(long)]
    task: TaskKind,
    /// none | clutter | occlusion | lighting
    #[arg(long, default_value = "none")]
    variant: Variant,
    /// Strength of the OOD condition in [0, 1] (default 0.5 with a variant, 0 without).
    #[arg(long)]
    strength: Option<f32>,
    /// Camera image size in pixels.
    #[arg(long, default_value_t = 224)]
    width: u32,
    #[arg(long, default_value_t = 224)]
    height: u32,
}

impl Scene {
    fn condition(&self) -> eyre::Result<Condition> {
        let default = if self.variant == Variant::None { 0.0 } else { 0.5 };
        Condition::new(self.variant, self.strength.unwrap_or(default)).map_err(|e| eyre::eyre!(e))
    }

    fn config(&self) -> eyre::Result<SimConfig> {
        eyre::ensure!((1..=2048).contains(&self.width) && (1..=2048).contains(&self.height), "--width/--height: expected 1..=2048 pixels");
        Ok(SimConfig { width: self.width, height: self.height, ..SimConfig::default() })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the scripted expert in the simulator and write one Arrow IPC file per episode.
    Record {
        #[command(flatten)]
        scene: Scene,
        #[arg(long, default_value_t = 1)]
        episodes: u64,
        #[arg(long, default_value_t = 0)]
        seed_start: u64,
        #[arg(long)]
        out: PathBuf,
        /// DART-style execution noise: standard deviation (m) of a horizontal offset added to the executed commands
        /// while the clean expert commands are recorded; missed grasps are re-planned by the expert (0: off).
        #[arg(long, default_value_t = 0.0)]
        noise: f32,
        /// Correlation time of the execution noise, seconds.
        #[arg(long, default_value_t = 1.0)]
        noise_correlation: f32,
    },
    /// Print an episode file's schema, length, task, seed, variant and success; non-zero exit if it is damaged.
    Inspect { files: Vec<PathBuf> },
    /// Draw an episode as an animated GIF, with optional overlays.
    Render {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Overlay the tracked keypoints (visible: filled, occluded: ring).
        #[arg(long)]
        keypoints: bool,
        /// Overlay the simulator's oracle point tracks.
        #[arg(long)]
        oracle: bool,
        /// Tint each instance of the segmentation.
        #[arg(long)]
        segmentation: bool,
        #[arg(long, default_value_t = 1)]
        scale: u32,
        /// Keep every N-th tick (each shown N times as long: real time, about 1/N the size).
        #[arg(long, default_value_t = 1)]
        every: u32,
    },
    /// Render the first frame of an episode to a PNG.
    Snapshot {
        #[command(flatten)]
        scene: Scene,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Encode an image with a Hugging Face CLIP vision checkpoint folder and write `last_hidden_state`
    /// [1, tokens, hidden] and `pooler_output` [1, hidden] to a safetensors file, as `CLIPVisionModel` returns them.
    Features {
        /// Folder with config.json, model.safetensors, preprocessor_config.json.
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Extract the first frame's keypoints (paper sec. III-B): object masks from PNGs or from text queries
    /// (the OWL-ViT detector's boxes with --detector, else the oracle grounder on a recorded episode's
    /// segmentation), K-means on the frozen ViT's per-pixel features
    /// inside each mask. Writes {"keypoints": [[x, y], ...], "objects": [i, ...], "labels": [...]} (pixel
    /// centres at +0.5) and an overlay PNG.
    Keypoints(KeypointsArgs),
    /// Train the frozen local ViT (small configuration) self-supervised on simulator frames, save it as a HF CLIP
    /// folder and report key-point correspondence against a random init.
    Pretrain {
        /// Optimiser steps.
        #[arg(long, default_value_t = PretrainConfig::default().steps)]
        steps: usize,
        /// Frames per step (two views each).
        #[arg(long, default_value_t = PretrainConfig::default().batch)]
        batch: usize,
        /// Seed of the initialisation and the view sampling (the random-init baseline uses seed + 1).
        #[arg(long, default_value_t = PretrainConfig::default().seed)]
        seed: u64,
        /// Peak AdamW learning rate.
        #[arg(long, default_value_t = PretrainConfig::default().lr)]
        lr: f64,
        /// InfoNCE temperature.
        #[arg(long, default_value_t = PretrainConfig::default().temperature)]
        temperature: f32,
        /// Training episodes per task and variant.
        #[arg(long, default_value_t = PretrainConfig::default().episodes)]
        episodes: u64,
        /// Held-out evaluation episodes per task and variant.
        #[arg(long, default_value_t = 2)]
        eval_episodes: u64,
        /// Cut view B of the `lighting` variant's frames from the same tick under the default studio light (module
        /// doc of `glue::pretrain`).
        #[arg(long)]
        relit_pairs: bool,
        /// Train nothing: evaluate the encoder already in --out (rewrites its correspondence.json and .png).
        #[arg(long, conflicts_with = "relit_pairs")]
        evaluate_only: bool,
        /// Output folder (config.json, model.safetensors, preprocessor_config.json, reports).
        #[arg(long, default_value = SMALL_LOCAL_ENCODER)]
        out: PathBuf,
    },
    /// Run a trained policy closed-loop in the simulator and write OUT/eval.json (success rate, 95% Wilson
    /// interval, per-episode results, latency).
    Eval(EvalArgs),
    /// Run keypoint extraction (oracle grounder on the recorded segmentation, K-means on the local ViT's
    /// features) and KLT tracking over recordings and store the tracks in their `keypoints` column, in place.
    Annotate {
        /// Recordings: .arrow files or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The frozen local encoder (HF CLIP folder).
        #[arg(long, default_value = SMALL_LOCAL_ENCODER)]
        weights: PathBuf,
        #[arg(long, default_value_t = 15)]
        k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Print the command a teleoperation device gives under the `teleop` node's settings, ten times a second, to
    /// check AXES and the buttons before a session (README, "Teleoperation").
    TeleopCheck {
        /// The evdev device, e.g. /dev/input/by-id/...-event-if00 (or a file of input_event records).
        #[arg(long)]
        device: PathBuf,
        /// spacemouse | keyboard
        #[arg(long, default_value = "spacemouse")]
        scheme: glue::teleop::Scheme,
        /// The device's axes in the robot base frame (the node's AXES), e.g. -y,x,z,rx,ry,rz.
        #[arg(long, default_value = "x,y,z,rx,ry,rz")]
        axes: glue::teleop::AxisMap,
        /// none | yaw | full
        #[arg(long, default_value = "yaw")]
        rotation: glue::teleop::Rotation,
        #[arg(long, default_value_t = 0.1)]
        deadzone: f32,
        #[arg(long, default_value_t = 350.0)]
        full_scale: f32,
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        seconds: Option<f32>,
    },
    /// Train a diffusion policy (GLUE, GLUE-S or Diffusion Policy) on recorded demonstrations.
    Train(TrainArgs),
    /// The study's tables (OUT/tables.md) and plots (OUT/success-TASK.png) from the eval.json files and training
    /// runs under STUDY (as `scripts/study.sh` lays them out).
    Report {
        #[arg(long, default_value = "out/study")]
        study: PathBuf,
        #[arg(long, default_value = "docs/results")]
        out: PathBuf,
    },
    /// Pool the episodes of several eval.json files per side and test whether side a's success rate differs from
    /// side b's (two-proportion z-test, two-sided), with each side's 95% Wilson interval; when a side holds several
    /// checkpoints (training runs), also their per-run rates and Welch's t-test with the runs as the unit.
    Compare {
        /// Side a: eval.json files, or folders holding one.
        #[arg(long, num_args = 1.., required = true)]
        a: Vec<PathBuf>,
        /// Side b: eval.json files, or folders holding one.
        #[arg(long, num_args = 1.., required = true)]
        b: Vec<PathBuf>,
    },
    /// Success rate against one evaluation setting (a sweep's eval.json files): a table with 95% Wilson intervals
    /// and a PNG chart, one curve per task and policy.
    Curve {
        /// eval.json files, or folders holding one.
        #[arg(required = true)]
        evals: Vec<PathBuf>,
        /// The setting on the x axis.
        #[arg(long, value_enum)]
        x: glue::curve::Axis,
        /// The chart (PNG).
        #[arg(long)]
        out: PathBuf,
    },
    /// Validation loss of several training runs against the step: a PNG chart and a table with each run's loss at
    /// the shortest run's length (runs on the same data and split share their validation samples).
    Losses {
        /// LABEL:DIR for each run folder (holding metrics.csv).
        #[arg(required = true)]
        runs: Vec<String>,
        /// The chart (PNG).
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure throughput and print a table: the simulator and recorder (`--suite sim`) or the models
    /// (`--suite models`, same shapes as benches/torch_reference.py).
    Bench {
        #[arg(long, value_enum, default_value = "sim")]
        suite: Suite,
        /// Episodes per simulator figure; timed runs per model case (after 2 warm-up runs).
        #[arg(long, default_value_t = 3)]
        repeats: u32,
        /// Model cases to run (default: all).
        #[arg(long, value_delimiter = ',')]
        cases: Vec<String>,
        /// The JSON printed by benches/torch_reference.py, for a PyTorch column and ratios.
        #[arg(long)]
        torch: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
    },
    /// Track points through a folder of PNG frames (name order) and write their tracks as JSON
    /// (`{"tracks": [frame][point] = [x, y, visible]}`, frame 0 included); or, with --eval-sim, score the tracker
    /// against the simulator's oracle tracks; or, with --bench, measure its frames per second.
    Track(TrackArgs),
}

/// `glue track` flags.
#[derive(clap::Args)]
struct EvalArgs {
    /// A checkpoint folder (a training run's best/ or last/, or a shipped checkpoints/ folder).
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    scene: Scene,
    #[arg(long, default_value_t = 10)]
    episodes: u64,
    /// First scene seed (training demonstrations use 0.., so evaluate on held-out seeds).
    #[arg(long, default_value_t = 1000)]
    seed_start: u64,
    /// Where GLUE's keypoints come from: the simulator's oracle tracks, or grounding + K-means + the tracker.
    #[arg(long, value_enum, default_value = "tracker")]
    keypoints: EvalKeypoints,
    /// Keypoints per episode (tracker mode).
    #[arg(long, default_value_t = 15)]
    k: usize,
    /// K-means seed of the keypoint extraction (tracker mode; `glue annotate --seed`, the grounding node's
    /// `SEED`): how much the result depends on where the keypoints fall.
    #[arg(long, default_value_t = 0)]
    keypoint_seed: u64,
    /// Local encoder for keypoint extraction (tracker mode).
    #[arg(long, default_value = SMALL_LOCAL_ENCODER)]
    keypoint_weights: PathBuf,
    /// Save one GIF per episode into OUT/videos.
    #[arg(long)]
    video: bool,
    /// Record the episodes (Arrow files, as `glue record` writes them) into OUT/episodes.
    #[arg(long)]
    record: bool,
    /// Seed of the sampling noise (episode i draws from seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Episodes run in lockstep, batched through the policy (vectorised evaluation; use 10-50 on a GPU).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Temporal ensembling (ACT): plan a chunk every tick and command the mean of every chunk's action for the
    /// tick, weighted exp(-M·i) from the oldest chunk (ACT uses 0.01). Off: execute each chunk's actions.
    #[arg(long, value_name = "M")]
    temporal_ensemble: Option<f32>,
    /// Where an episode's keypoints sit (invisible, key patches zeroed) when its first frame shows no queried
    /// object, in pixels of the frame; default: the image centre. The demonstrations' mean keypoint position puts
    /// them where the objects usually are (measured on push-button: no change; docs/results.md, "When grounding
    /// finds nothing").
    #[arg(long, value_name = "X,Y", value_parser = glue::annotate::parse_unseen_at)]
    unseen_at: Option<[f32; 2]>,
    /// The privileged-state policy only (`--policy state` checkpoints): perceive every task object displaced
    /// horizontally by a fixed offset per episode, N(0, STD²) per axis, in metres (a localisation error); 0
    /// feeds the true poses. In-process only.
    #[arg(long, value_name = "STD", default_value_t = 0.0)]
    object_pose_error: f32,
    /// An intervention test: the policy sees these keypoints as visible whatever the tracker says (their key
    /// patches never zeroed): `all`, or the index of a text query (e.g. 1: place-fruit's plate), whose object's
    /// keypoints are forced. In-process only.
    #[arg(long, value_name = "all|QUERY", value_parser = glue::eval::ForceVisible::parse)]
    force_visible: Option<glue::eval::ForceVisible>,
    /// An intervention test for `--variant lighting`: this encoder (`global`: the policy's image encoder;
    /// `local`: GLUE's frozen local ViT, the key patches) sees each tick rendered without the lighting
    /// variant's lights, everything else the lit frame. In-process only.
    #[arg(long, value_enum)]
    unlit_encoder: Option<glue::eval::UnlitEncoder>,
    /// An intervention test for GLUE, what its key patches hold: `live` (the paper's), `zeroed` (every feature
    /// zeroed, as an occluded keypoint's), `first-frame` (each keypoint's feature from the episode's first frame,
    /// zeroed while it is hidden), `swapped` (each object's keypoints carry the next object's live features, on
    /// tasks with two or more text queries); the keypoints' cells, flags and coordinates stay as tracked.
    /// In-process only.
    #[arg(long, value_enum, default_value_t = glue::eval::KeyPatches::Live)]
    key_patches: glue::eval::KeyPatches,
    /// An intervention test for the policies that read keypoints, where they are told the keypoints are: `live`
    /// (tracked), `swapped` (each object's keypoints take the next object's tracked positions and flags, so GLUE's
    /// key patch cells and the `--keypoint-coords` state point at the other object; the key patches stay the
    /// features at the tracked keypoints). With `--key-patches swapped` too, the objects' labels trade whole.
    /// Tasks with two or more text queries; in-process only.
    #[arg(long, value_enum, default_value_t = glue::eval::KeyPositions::Live)]
    key_positions: glue::eval::KeyPositions,
    /// Run the episodes through the dora graph (`dora run`, one episode at a time) instead of in-process: the
    /// same nodes as the README's main job, its episodes kept in OUT/episodes, its settings in OUT/dataflow.yml.
    #[arg(long)]
    dataflow: bool,
    /// The graph `--dataflow` runs.
    #[arg(long, default_value = "dataflow.sim.yml")]
    graph: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(clap::Args)]
struct TrackArgs {
    /// Folder of the frames, PNG files tracked in file-name order.
    #[arg(long, required_unless_present_any = ["eval_sim", "bench"], conflicts_with_all = ["eval_sim", "bench"])]
    frames: Option<PathBuf>,
    /// JSON list of the query points, `[[x, y], ...]` in pixels of the first frame.
    #[arg(long, required_unless_present_any = ["eval_sim", "bench"], conflicts_with_all = ["eval_sim", "bench"])]
    points: Option<PathBuf>,
    /// Output JSON file.
    #[arg(long, required_unless_present_any = ["eval_sim", "bench"], conflicts_with_all = ["eval_sim", "bench"])]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "klt")]
    tracker: TrackerKind,
    /// Run expert episodes of every task, clean and under each OOD variant, and print the tracking quality
    /// against the oracle tracks as a table.
    #[arg(long, conflicts_with = "bench")]
    eval_sim: bool,
    /// --eval-sim: episodes per task and variant.
    #[arg(long, default_value_t = 3)]
    episodes: u64,
    /// --eval-sim: first episode seed.
    #[arg(long, default_value_t = 0)]
    seed_start: u64,
    /// --eval-sim: strength of the OOD variants.
    #[arg(long, default_value_t = 0.5)]
    strength: f32,
    /// --eval-sim: only these tasks (default: all).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<TaskKind>,
    /// Print the tracker's frames per second (20 points, 224x224, one thread).
    #[arg(long)]
    bench: bool,
}

/// The point tracker behind `glue track`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TrackerKind {
    /// Pyramidal Lucas-Kanade with forward-backward and appearance checks and re-acquisition.
    Klt,
}

/// `glue eval`: in-process or through the graph; prints the success rate and, for pick-and-place, where the
/// failures ended.
fn eval(args: EvalArgs) -> eyre::Result<()> {
    let EvalArgs {
        checkpoint, scene, episodes, seed_start, keypoints, k, keypoint_seed, keypoint_weights, video, record, seed,
        parallel, temporal_ensemble, unseen_at, object_pose_error, force_visible, unlit_encoder, key_patches, key_positions, dataflow,
        graph, out,
        device,
    } = args;
    eyre::ensure!(episodes >= 1, "--episodes: expected at least 1");
    let config = EvalConfig {
        checkpoint,
        sim: scene.config()?,
        task: scene.task,
        episodes,
        condition: scene.condition()?,
        seed_start,
        keypoints,
        video: video.then(|| out.join("videos")),
        record: record.then(|| out.join("episodes")),
        seed,
        k,
        keypoint_seed,
        keypoint_weights,
        parallel,
        temporal_ensemble,
        unseen_at,
        object_pose_error,
        force_visible,
        unlit_encoder,
        key_patches,
        key_positions,
    };
    let report = if dataflow {
        eyre::ensure!(device == DeviceKind::Cpu, "--device {device:?}: the graph's nodes run on the CPU; --device is for the in-process evaluation");
        let exe = std::env::current_exe()?;
        let binaries = exe.parent().ok_or_else(|| eyre::eyre!("cannot locate the node binaries beside {}", exe.display()))?;
        let setup = glue::eval::DataflowSetup { graph, dora: glue::dataflow::dora_command(), binaries: binaries.to_path_buf() };
        glue::eval::evaluate_in_dataflow(&config, &out, &setup)?
    } else {
        glue::eval::evaluate(&config, &out, &device.device())?
    };
    let grasped = report.grasps().map(|g| format!(" (grasped the object in {g})")).unwrap_or_default();
    println!(
        "{} on {} ({}, strength {}): {}/{} succeeded{grasped}, success rate {:.2} (95% CI {:.2}-{:.2}); chunk latency mean {:.0} ms, p95 {:.0} ms; wrote {}",
        report.policy,
        report.task,
        report.variant,
        report.strength,
        report.successes,
        report.episodes,
        report.success_rate,
        report.wilson_95[0],
        report.wilson_95[1],
        report.latency.chunk_mean_ms,
        report.latency.chunk_p95_ms,
        out.join("eval.json").display()
    );
    if let Some(stages) = report.place_stages() {
        println!("{}", stages.summary());
    }
    if let Some(closes) = report.first_closes() {
        println!("{}", closes.summary());
    }
    Ok(())
}

fn track(args: TrackArgs) -> eyre::Result<()> {
    let TrackerKind::Klt = args.tracker;
    let config = glue::track::KltConfig::default();
    if args.bench {
        let report = glue::track::bench(400, 5)?;
        println!(
            "KLT tracker, {} points at {}x{}, {} frames x 5 runs, one thread: best {:.0} frames/s, median {:.0} frames/s ({:.1}% of point-frames visible); all points lost and searched for: {:.0} frames/s",
            report.points,
            report.width,
            report.height,
            report.frames,
            report.frames_per_s,
            report.median_frames_per_s,
            100.0 * report.visible_fraction,
            report.lost_frames_per_s
        );
        return Ok(());
    }
    if args.eval_sim {
        eyre::ensure!(args.episodes >= 1, "--episodes: expected at least 1");
        eyre::ensure!((0.0..=1.0).contains(&args.strength), "--strength: expected a number in [0, 1]");
        let tasks = if args.tasks.is_empty() { TaskKind::ALL.to_vec() } else { args.tasks.clone() };
        let rows = glue::track::evaluate_on_sim(&config, &tasks, &Variant::ALL, args.episodes, args.seed_start, args.strength)?;
        println!(
            "KLT vs oracle tracks, {} episode(s) per row from seed {}, OOD strength {} (med/p90 px: error where oracle and tracker both say visible; occl P/R: oracle-invisible = positive; kept: oracle-visible point-frames the tracker keeps visible)",
            args.episodes, args.seed_start, args.strength
        );
        print!("{}", glue::track::sim_eval_table(&rows));
        return Ok(());
    }
    let (frames, points, out) = (
        args.frames.expect("clap requires --frames"),
        args.points.expect("clap requires --points"),
        args.out.expect("clap requires --out"),
    );
    let queries = glue::track::read_points(&points)?;
    let tracks = glue::track::track_files(&frames, &queries, &config)?;
    let visible = tracks.tracks.last().map_or(0, |f| f.iter().filter(|p| p[2] == 1.0).count());
    std::fs::write(&out, serde_json::to_string(&tracks)?).map_err(|e| eyre::eyre!("--out {}: {e}", out.display()))?;
    println!(
        "tracked {} points through {} frames ({} visible in the last); wrote {}",
        queries.len(),
        tracks.tracks.len(),
        visible,
        out.display()
    );
    Ok(())
}

/// `glue keypoints` flags.
#[derive(clap::Args)]
struct KeypointsArgs {
    /// The first frame (PNG); default: the first tick of --episode.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Object masks (PNG, non-zero pixels inside), one per object.
    #[arg(long, num_args = 1.., conflicts_with = "text")]
    masks: Vec<PathBuf>,
    /// Text queries, one per object (default with --episode and no --masks: the episode's text_query), grounded
    /// by --detector, else by the oracle grounder on the segmentation of --episode's first tick.
    #[arg(long, num_args = 1..)]
    text: Vec<String>,
    /// A recorded episode (.arrow): its first tick's segmentation and objects ground --text; its image is the
    /// default --image.
    #[arg(long)]
    episode: Option<PathBuf>,
    /// Ground --text on --image with this open-vocabulary detector (an OWL-ViT checkpoint folder as Hugging Face
    /// publishes it, e.g. google/owlvit-base-patch32) instead of the oracle: each query's best box is its mask.
    #[arg(long, requires = "text")]
    detector: Option<PathBuf>,
    /// With --detector: a query whose best box scores below this is not in view (empty mask).
    #[arg(long, default_value_t = 0.1)]
    threshold: f32,
    /// With --detector: segment each kept box with this SAM checkpoint folder (Hugging Face `SamModel`, e.g.
    /// facebook/sam-vit-base); without it the box is the mask.
    #[arg(long, requires = "detector")]
    segmenter: Option<PathBuf>,
    /// The frozen encoder, a HF CLIP folder.
    #[arg(long, default_value = SMALL_LOCAL_ENCODER)]
    weights: PathBuf,
    /// Sub-images per side (the pre-segmentation grid N_grid).
    #[arg(long, default_value_t = 2)]
    split: usize,
    /// Keypoints in total, shared among the objects.
    #[arg(long, default_value_t = KeypointConfig::default().k)]
    k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The keypoints JSON.
    #[arg(long)]
    out: PathBuf,
    /// The overlay PNG (default: --out with the extension .png).
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Integer upscaling of the overlay.
    #[arg(long, default_value_t = 1)]
    scale: u32,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

/// What `glue bench` measures.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Suite {
    /// Simulator steps and recorder throughput.
    Sim,
    /// Model forward passes, training steps and GLUE inference.
    Models,
    /// The closed loop in-process (`glue eval`'s code, one episode at a time): each node's share of a control
    /// tick and the loop rate, with the shipped push-button GLUE checkpoint.
    Loop,
}

/// `glue train` flags; unset ones take the defaults of `TrainConfig::new` (Diffusion Policy's).
#[derive(clap::Args)]
struct TrainArgs {
    /// glue | glue-s | dp
    #[arg(long, value_enum, required_unless_present = "resume")]
    policy: Option<PolicyKind>,
    /// small (2-core CPU) | full (the paper's sizes)
    #[arg(long, value_enum, default_value = "small")]
    config: ModelSize,
    /// Recordings: .arrow files or folders of them (successful episodes are used).
    #[arg(long, num_args = 1.., required_unless_present = "resume")]
    data: Vec<PathBuf>,
    /// The run folder (checkpoints, metrics, loss.png).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run saved in --out from its last checkpoint (its train.json wins; --epochs and --lr may change).
    #[arg(long)]
    resume: bool,
    /// GLUE: the frozen local encoder, a HF CLIP folder (default checkpoints/local-vit-small at --config small).
    #[arg(long)]
    local_encoder: Option<PathBuf>,
    /// Initialise the global ViT from a HF CLIP folder (glue, glue-s).
    #[arg(long)]
    global_init: Option<PathBuf>,
    /// Start from the weights of a checkpoint folder (the same --policy; every weight of the new model must be in it
    /// with its shape): fine-tuning, or continuing a run elsewhere without its optimiser state.
    #[arg(long, conflicts_with_all = ["resume", "global_init"])]
    init: Option<PathBuf>,
    /// GLUE: the key patches' positional encoding, learned per cell or the fixed 2-D sine-cosine one.
    #[arg(long, value_enum)]
    local_pos: Option<glue::fusion::LocalPos>,
    /// Robot-state entries the policy sees, the first N of the state message: 7 = the paper's joint angles
    /// (default), 8 adds the gripper width.
    #[arg(long)]
    state_dim: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup_steps: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Observation steps T_o.
    #[arg(long)]
    n_obs_steps: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    #[arg(long)]
    val_fraction: Option<f32>,
    /// State and action dimensions whose range is under this count as constant (0: LeRobot's exact min-max).
    #[arg(long)]
    constant_span: Option<f32>,
    /// Wall-clock budget of this invocation in minutes: the epochs (and the cosine schedule) shrink to what fits.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// GLUE: the share of training samples (0-1) shown as if grounding found nothing: every keypoint invisible,
    /// every key patch zeroed, as in a fully occluded scene at inference (not in the paper; default 0).
    #[arg(long)]
    keypoint_dropout: Option<f32>,
    /// The chance (0-1) that each keypoint of a training sample is shown lost (flag 0, key patch zeroed,
    /// coordinates kept), as the tracker shows a lost point: GLUE, --keypoint-coords and the keypoint policy
    /// (not in the paper; default 0).
    #[arg(long)]
    point_dropout: Option<f32>,
    /// The tracked keypoints' (x, y, visible) join the robot state (GLUE: eq. 3's S), so the policy sees their
    /// positions to the pixel (GLUE: not only each key patch's grid cell). Not in the paper; GLUE-S and DP take it
    /// too, to compare with GLUE on equal inputs. With --init, a checkpoint without them is widened.
    #[arg(long)]
    keypoint_coords: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}


fn train(args: TrainArgs) -> eyre::Result<()> {
    let device = args.device.device();
    let report = if args.resume {
        glue::train::resume(&args.out, ResumeOverrides { epochs: args.epochs, lr: args.lr, max_minutes: args.max_minutes }, &device)?
    } else {
        glue::train::train(train_config(&args)?, &args.out, &device)?
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("checkpoints: {0}/best (lowest validation loss), {0}/last; loss curve: {0}/loss.png", args.out.display());
    Ok(())
}

/// The run's configuration from the flags.
fn train_config(args: &TrainArgs) -> eyre::Result<TrainConfig> {
    let kind = args.policy.expect("clap requires --policy without --resume");
    let mut policy = PolicyConfig::new(kind, args.config);
    if let Some(n) = args.n_obs_steps {
        policy.n_obs_steps = n;
        policy.unet.global_cond_dim = n * policy.step_dim();
    }
    if let Some(local_pos) = args.local_pos {
        policy.fusion.local_pos = local_pos;
    }
    if let Some(n) = args.state_dim {
        policy.set_state_dim(n)?;
    }
    let mut config = TrainConfig::new(policy, args.data.clone());
    if kind.uses_key_patches() {
        config.local_encoder = args.local_encoder.clone().or_else(|| {
            (args.config == ModelSize::Small).then(|| PathBuf::from(SMALL_LOCAL_ENCODER))
        });
    }
    config.global_init = args.global_init.clone();
    config.init = args.init.clone();
    config.epochs = args.epochs.unwrap_or(config.epochs);
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    config.lr = args.lr.unwrap_or(config.lr);
    config.warmup_steps = args.warmup_steps.unwrap_or(config.warmup_steps);
    config.seed = args.seed.unwrap_or(config.seed);
    config.checkpoint_every = args.checkpoint_every.unwrap_or(config.checkpoint_every);
    config.val_fraction = args.val_fraction.unwrap_or(config.val_fraction);
    config.constant_span = args.constant_span.unwrap_or(config.constant_span);
    config.max_minutes = args.max_minutes;
    config.keypoint_dropout = args.keypoint_dropout.unwrap_or(config.keypoint_dropout);
    config.point_dropout = args.point_dropout.unwrap_or(config.point_dropout);
    config.keypoint_coords = args.keypoint_coords;
    Ok(config)
}

/// `glue bench --suite loop`: `repeats` episodes of the shipped GLUE checkpoint with the perception pipeline.
fn loop_bench(repeats: u32, device: &burn::tensor::Device) -> eyre::Result<String> {
    let scene = Scene { task: TaskKind::PushButton, variant: Variant::None, strength: None, width: 224, height: 224 };
    let out = std::env::temp_dir().join(format!("glue-loop-bench-{}", std::process::id()));
    let config = EvalConfig {
        checkpoint: PathBuf::from(SHIPPED_GLUE),
        sim: scene.config()?,
        task: scene.task,
        episodes: u64::from(repeats),
        condition: scene.condition()?,
        seed_start: 1000,
        keypoints: glue::eval::Keypoints::Tracker,
        video: None,
        record: None,
        seed: 0,
        k: 15,
        keypoint_seed: 0,
        keypoint_weights: PathBuf::from(SMALL_LOCAL_ENCODER),
        parallel: 1,
        temporal_ensemble: None,
        unseen_at: None,
        object_pose_error: 0.0,
        force_visible: None,
        unlit_encoder: None,
        key_patches: glue::eval::KeyPatches::Live,
        key_positions: glue::eval::KeyPositions::Live,
    };
    let report = glue::eval::evaluate(&config, &out, device);
    std::fs::remove_dir_all(&out).ok();
    let report = report?;
    Ok(format!("{} episodes, {} ticks\n{}", report.episodes, report.per_episode.iter().map(|e| e.ticks).sum::<u32>(), report.latency.stages.table()))
}

fn keypoints(args: &KeypointsArgs) -> eyre::Result<()> {
    let overlay = args.overlay.clone().unwrap_or_else(|| args.out.with_extension("png"));
    eyre::ensure!(overlay != args.out, "--out {}: the overlay would overwrite it; pass --overlay", args.out.display());
    let episode = args.episode.as_ref().map(read_episode).transpose()?;
    let image = match (&args.image, &episode) {
        (Some(path), _) => {
            image::open(path).map_err(|e| eyre::eyre!("cannot read image {}: {e}", path.display()))?.into_rgb8()
        }
        (None, Some(ep)) => {
            let tick = ep.ticks.first().ok_or_else(|| eyre::eyre!("--episode: the episode has no ticks"))?;
            glue::viz::rgb_image(ep.info.width, ep.info.height, &tick.image)?
        }
        (None, None) => eyre::bail!("keypoints: pass --image or --episode"),
    };
    let device = args.device.device();
    let (masks, labels) = if !args.masks.is_empty() {
        let masks = args.masks.iter().map(|p| Mask::load(p)).collect::<eyre::Result<Vec<_>>>()?;
        (masks, args.masks.iter().map(|p| p.display().to_string()).collect::<Vec<_>>())
    } else if let Some(dir) = &args.detector {
        let detector = glue::ground::OwlVitDetector::load(dir, &device)
            .map_err(|e| eyre::eyre!("--detector {}: {e:#}", dir.display()))?;
        let segmenter = match &args.segmenter {
            Some(dir) => Some(
                glue::ground::sam::SamSegmenter::load(dir, &device)
                    .map_err(|e| eyre::eyre!("--segmenter {}: {e:#}", dir.display()))?,
            ),
            None => None,
        };
        let grounder = glue::ground::OwlVitGrounder::new(detector, segmenter, args.threshold)
            .map_err(|e| eyre::eyre!("--threshold: {e}"))?;
        let (detections, masks) = grounder.ground_with_detections(&image, &args.text)?;
        for (query, d) in args.text.iter().zip(&detections) {
            let [x0, y0, x1, y1] = d.bbox;
            let verdict = if d.score >= args.threshold { "kept" } else { "below --threshold: not in view" };
            println!("{query:?}: box {x0:.0},{y0:.0},{x1:.0},{y1:.0} score {:.3} ({verdict})", d.score);
        }
        (masks, args.text.clone())
    } else {
        let ep = episode.as_ref().ok_or_else(|| {
            eyre::eyre!("keypoints: --text needs --episode (the oracle grounder reads the simulator's segmentation), or pass --masks")
        })?;
        let queries = if args.text.is_empty() { ep.info.text_query.clone() } else { args.text.clone() };
        (OracleGrounder::from_episode(ep)?.ground(&image, &queries)?, queries)
    };
    let encoder = glue::vit::GridEncoder::load(&args.weights, args.split, &device)
        .map_err(|e| eyre::eyre!("--weights {}: {e:#}", args.weights.display()))?;
    let config = KeypointConfig { k: args.k, seed: args.seed, ..KeypointConfig::default() };
    glue::keypoints::allocate(&masks.iter().map(Mask::area).collect::<Vec<_>>(), config.k, config.min_per_object)?;
    let start = Instant::now();
    let features = FeatureGrid::encode(&encoder, &image, &device)?;
    let encoded = start.elapsed();
    let points = glue::keypoints::select_keypoints(&features, &masks, &config)?;
    let total = start.elapsed();
    KeypointsFile::new(&points, labels.clone()).save(&args.out)?;
    glue::viz::save_png(&glue::keypoints::draw_overlay(&image, &masks, &points, args.scale)?, &overlay)?;
    let counts: Vec<String> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| format!("{label}: {}", points.iter().filter(|p| p.object == i).count()))
        .collect();
    println!(
        "{} keypoints ({}) in {:.0} ms (encoding {:.0} ms, clustering {:.0} ms); wrote {} and {}",
        points.len(),
        counts.join(", "),
        total.as_secs_f64() * 1e3,
        encoded.as_secs_f64() * 1e3,
        (total - encoded).as_secs_f64() * 1e3,
        args.out.display(),
        overlay.display()
    );
    Ok(())
}

fn record(scene: &Scene, episodes: u64, seed_start: u64, out: &PathBuf, noise: ExecutionNoise) -> eyre::Result<()> {
    let (config, condition) = (scene.config()?, scene.condition()?);
    let noise = (noise.std > 0.0).then_some(noise);
    let bar = ProgressBar::new(episodes).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} episodes, {per_sec}, ETA {eta}").expect("valid template"),
    );
    let (mut successes, mut regrasps, mut regrasped) = (0, 0, 0);
    for i in 0..episodes {
        let spec = EpisodeSpec { task: scene.task, seed: seed_start + i, condition };
        let (path, outcome) = record_expert(&config, spec, noise, i, out)?;
        successes += outcome.success as u32;
        regrasps += outcome.regrasps;
        regrasped += (outcome.regrasps > 0) as u32;
        bar.set_message(format!("{} successes", successes));
        bar.suspend(|| println!("{} ({} ticks, success: {}, re-grasps: {})", path.display(), outcome.ticks, outcome.success, outcome.regrasps));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let noise = noise.map_or("no execution noise".to_string(), |n| format!("execution noise {} m, {} s", n.std, n.correlation_s));
    println!(
        "recorded {episodes} episodes of {} ({}, strength {}, {noise}) in {}: {successes}/{episodes} succeeded, {regrasped} with re-grasps ({regrasps} in all)",
        scene.task,
        condition.variant,
        condition.strength,
        out.display()
    );
    Ok(())
}

fn snapshot(scene: &Scene, seed: u64, out: &PathBuf) -> eyre::Result<()> {
    let mut sim = Sim::new(&scene.config()?, EpisodeSpec { task: scene.task, seed, condition: scene.condition()? });
    let f = sim.observe().image;
    glue::viz::save_png(&glue::viz::rgb_image(f.width, f.height, &f.rgb)?, out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn pretrain(config: &PretrainConfig, eval_episodes: u64, out: &PathBuf) -> eyre::Result<()> {
    eyre::ensure!(config.steps >= 1 && config.batch >= 1, "--steps and --batch: expected at least 1");
    eyre::ensure!(config.lr > 0.0 && config.temperature > 0.0, "--lr and --temperature: expected positive values");
    println!("rendering training frames ({} episodes x 3 tasks x 4 variants) ...", config.episodes);
    let bar = ProgressBar::new(config.steps as u64).with_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} steps, loss {msg}, {per_sec}, ETA {eta}").expect("valid template"),
    );
    let (summary, report) = glue::pretrain::run(config, out, eval_episodes, |step, loss| {
        if step == 0 {
            bar.reset_elapsed();
        }
        bar.set_message(format!("{loss:.3}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    println!(
        "trained on {} frames in {:.0} s (rendering {:.0} s): loss {:.3} -> {:.3}; wrote {}",
        summary.frames, summary.train_seconds, summary.render_seconds, summary.loss_start, summary.loss_end, out.display()
    );
    print_correspondence(&report);
    Ok(())
}

fn print_correspondence(report: &glue::pretrain::CorrespondenceReport) {
    println!(
        "correspondence on {} held-out pairs, frame 0 -> t at {:?} of the episode (error: matched cell centre to truth):",
        report.pairs, report.frame_fractions
    );
    let lighting = report.lighting;
    let sets = [
        ("all points", report.all, String::new()),
        ("moved > 16 px", report.moved, String::new()),
        (
            "lit -> unlit render of the same tick, lighting episodes",
            lighting.matches,
            format!(
                ", {} frames; cell cosine lit/unlit median: pretrained {:.3}, random init {:.3}; zero motion = a perfectly invariant encoder",
                lighting.frames, lighting.cosine_pretrained, lighting.cosine_random_init
            ),
        ),
    ];
    for (set, scores, extra) in sets {
        println!("  {set} ({} points{extra}):", scores.pretrained.points);
        for (name, s) in [("pretrained", scores.pretrained), ("random init", scores.random_init), ("zero motion", scores.zero_motion)] {
            println!("    {name:<12} median {:5.1} px, mean {:5.1} px, within {} px {:5.1}%", s.median_px, s.mean_px, report.within_px, 100.0 * s.within_16px);
        }
    }
}

fn run(cli: Cli) -> eyre::Result<bool> {
    match cli.command {
        Command::Record { scene, episodes, seed_start, out, noise, noise_correlation } => {
            record(&scene, episodes, seed_start, &out, ExecutionNoise::new(noise, noise_correlation)?)?
        }
        Command::Inspect { files } => {
            eyre::ensure!(!files.is_empty(), "inspect: expected at least one episode file");
            let mut all_ok = true;
            for f in &files {
                match inspect(f) {
                    Ok(report) => println!("{report}"),
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        all_ok = false;
                    }
                }
            }
            return Ok(all_ok);
        }
        Command::Render { file, out, keypoints, oracle, segmentation, scale, every } => {
            let episode = read_episode(&file)?;
            let opts = GifOptions { keypoints, oracle_tracks: oracle, segmentation, scale, every, ..GifOptions::default() };
            let frames = render_episode_gif(&episode, &out, &opts)?;
            println!("wrote {} ({frames} frames of {} ticks)", out.display(), episode.ticks.len());
        }
        Command::Snapshot { scene, seed, out } => snapshot(&scene, seed, &out)?,
        Command::Features { weights, image, out } => {
            glue::vit::features(&weights, &image, &out)?;
            println!("wrote {}", out.display());
        }
        Command::Keypoints(args) => keypoints(&args)?,
        Command::Pretrain { steps, batch, seed, lr, temperature, episodes, eval_episodes, relit_pairs, evaluate_only, out } => {
            if evaluate_only {
                println!("evaluating {} ...", out.display());
                print_correspondence(&glue::pretrain::evaluate_checkpoint(&out, eval_episodes, seed.wrapping_add(1))?);
            } else {
                let config = PretrainConfig { steps, batch, seed, lr, temperature, episodes, relit_pairs, ..PretrainConfig::default() };
                pretrain(&config, eval_episodes, &out)?;
            }
        }
        Command::Annotate { paths, weights, k, seed } => {
            let device = burn::tensor::Device::flex();
            let encoder = glue::vit::GridEncoder::load(&weights, 2, &device)?;
            for (file, ticks) in glue::annotate::annotate(&paths, &encoder, k, seed, &device)? {
                println!("{}: {ticks} ticks annotated", file.display());
            }
        }
        Command::TeleopCheck { device, scheme, axes, rotation, deadzone, full_scale, seconds } => {
            let cfg = glue::teleop::TeleopConfig { scheme, axes, rotation, deadzone, full_scale, ..Default::default() };
            glue::teleop::check(&device, &cfg, seconds, &mut std::io::stdout())?;
        }
        Command::Train(args) => train(args)?,
        Command::Eval(args) => eval(args)?,
        Command::Track(args) => track(args)?,
        Command::Report { study, out } => {
            print!("{}", glue::report::write(&study, &out)?);
            println!("wrote {0}/tables.md and {0}/success-*.png", out.display());
        }
        Command::Compare { a, b } => print!("{}", glue::compare::run(&a, &b)?),
        Command::Curve { evals, x, out } => print!("{}", glue::curve::run(&evals, x, &out)?),
        Command::Losses { runs, out } => print!("{}", glue::losses::run(&runs, &out)?),
        Command::Bench { suite, repeats, cases, torch, device } => {
            eyre::ensure!(repeats >= 1, "--repeats: expected at least 1");
            match suite {
                Suite::Sim => print!("{}", glue::bench::table(&glue::bench::run(repeats)?)),
                Suite::Loop => print!("{}", loop_bench(repeats, &device.device())?),
                Suite::Models => {
                    let torch = match torch {
                        Some(path) => {
                            let text = std::fs::read_to_string(&path)
                                .map_err(|e| eyre::eyre!("--torch {}: {e}", path.display()))?;
                            Some(serde_json::from_str::<serde_json::Value>(&text)?)
                        }
                        None => None,
                    };
                    let rows = glue::model_bench::run(&cases, repeats as usize, &device.device())?;
                    print!("{}", glue::model_bench::table(&rows, torch.as_ref()));
                }
            }
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of stdout goes away (`glue inspect ... | head`):
    // Rust ignores SIGPIPE, so every println! after that would panic instead.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
