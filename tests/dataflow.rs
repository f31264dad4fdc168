//! The dataflows under a real `dora run`: the simulator with the expert and the recorder, then replay of what it
//! recorded, the closed loop against in-process evaluation, the real-arm graphs in a dry run, teleoperation, and
//! the policy node refusing a checkpoint of another task. Needs the README set-up: the dora CLI in
//! `.venv/` and the node binaries built with `cargo build --release --workspace`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use glue::collect::run_expert;
use glue::dataflow::Graph;
use glue::recording::{list_episodes, read_episode, Episode, Tick};
use glue::sim::ood::Condition;
use glue::sim::task::TaskKind;
use glue::sim::{EpisodeSpec, SimConfig};
use glue::msg::Message;
use glue::teleop::{InputEvent, codes};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dora() -> PathBuf {
    let venv = root().join(".venv/bin/dora");
    assert!(venv.exists(), "{} is missing: run the README set-up (python3 -m venv .venv && .venv/bin/pip install dora-rs-cli==1.1.0 pyarrow)", venv.display());
    venv
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("glue-dataflow-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies a dataflow into `dir` with absolute node paths and the given `(node, KEY, value)` settings.
fn dataflow(name: &str, dir: &Path, settings: &[(&str, &str, &str)]) -> PathBuf {
    let mut graph = Graph::read(&root().join(name)).unwrap();
    graph.set_binaries(&root().join("target/release")).unwrap();
    for (node, key, value) in settings {
        graph.set_env(node, key, value).unwrap();
    }
    let path = dir.join(name);
    graph.write(&path).unwrap();
    path
}

/// Runs `dora run FILE` to completion (2 minutes at most) and returns its combined output.
fn dora_run(file: &Path) -> String {
    let (success, text) = dora_run_status(file);
    assert!(success, "dora run failed:\n{text}");
    text
}

/// Runs `dora run FILE` to completion (2 minutes at most): whether it succeeded, and its combined output.
fn dora_run_status(file: &Path) -> (bool, String) {
    let mut child = Command::new(dora())
        .arg("run")
        .arg(file)
        .current_dir(file.parent().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("dora run {} did not finish within 120 s", file.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The episodes of the single run folder the recorder created under `out`.
fn recorded(out: &Path) -> Vec<Episode> {
    let runs: Vec<_> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "expected one run folder in {}, got {runs:?}", out.display());
    list_episodes(&runs[0]).unwrap().iter().map(|p| read_episode(p).unwrap()).collect()
}

#[test]
fn sim_dataflow_records_the_same_episodes_as_the_in_process_loop_and_replay_round_trips() {
    let dir = temp_dir("sim");
    let out = dir.join("recordings");
    let file = dataflow("dataflow.expert.yml", &dir, &[("sim", "TASK", "stack-block"), ("sim", "EPISODES", "2"), ("sim", "SEED_START", "40"), ("recorder", "OUT_DIR", out.to_str().unwrap())]);
    let log = dora_run(&file);
    assert!(log.contains("2 episodes in"), "recorder summary missing:\n{log}");
    let episodes = recorded(&out);
    assert_eq!(episodes.len(), 2);

    for (i, ep) in episodes.iter().enumerate() {
        assert_eq!((ep.info.task.as_str(), ep.info.seed, ep.info.episode), ("stack-block", 40 + i as u64, i as u64));
        assert!(ep.success, "episode {i} did not succeed under dora");
        assert!(ep.ticks.iter().enumerate().all(|(f, t)| t.frame as usize == f), "frames are not contiguous");
        // The graph is lock-stepped, so it must reproduce the in-process expert episode exactly.
        let spec = EpisodeSpec { task: TaskKind::StackBlock, seed: 40 + i as u64, condition: Condition::IN_DOMAIN };
        let mut reference = Vec::new();
        run_expert(&SimConfig::default(), spec, |sim, obs, action| {
            reference.push((obs.image.rgb, *action, sim.object_poses().poses));
            Ok(())
        })
        .unwrap();
        assert_eq!(reference.len(), ep.ticks.len(), "episode {i}: tick count differs from the in-process run");
        for (t, (image, action, poses)) in ep.ticks.iter().zip(&reference) {
            assert!(t.image == *image && t.action == *action, "episode {i} frame {}: differs from the in-process run", t.frame);
            assert_eq!(t.object_poses.as_ref(), Some(poses), "episode {i} frame {}: recorded object poses", t.frame);
        }
    }

    let replayed = dir.join("replayed");
    let run_dir = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let file = dataflow("dataflow.replay.yml", &dir, &[("replay", "RECORDINGS", run_dir.to_str().unwrap()), ("replay", "SPEED", "0"), ("recorder", "OUT_DIR", replayed.to_str().unwrap())]);
    dora_run(&file);
    let again = recorded(&replayed);
    assert_eq!(again.len(), episodes.len());
    for (a, b) in episodes.iter().zip(&again) {
        assert_eq!(a.info, b.info);
        assert_eq!(a.success, b.success);
        assert!(a.ticks == b.ticks, "replayed episode {} differs from the recording", a.info.episode);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The full loop in the graph (sim -> grounding -> tracker -> encoder -> policy -> sim, the task's shipped GLUE
/// checkpoint; episode `i` on seed `seed_start + i` with the sampling noise a 50-episode run from seed 1000 gives
/// it), run by `glue eval --dataflow`, drives the same episodes as `glue eval` in-process: both run the same
/// library code (keypoint extraction, KLT tracking, `glue::policy::runtime`) in lock step with the simulator, so
/// every keypoint and every action must be bit-identical, and so must the two `eval.json` results.
fn graph_matches_eval(
    name: &str,
    checkpoint: PathBuf,
    task: TaskKind,
    condition: Condition,
    episodes: u64,
    seed_start: u64,
    temporal_ensemble: Option<f32>,
    unseen_at: Option<[f32; 2]>,
) {
    let dir = temp_dir(name);
    let config = glue::eval::EvalConfig {
        checkpoint,
        sim: SimConfig::default(),
        task,
        episodes,
        condition,
        seed_start,
        keypoints: glue::eval::Keypoints::Tracker,
        video: None,
        record: Some(dir.join("eval")),
        seed: seed_start - 1000,
        k: 15,
        keypoint_seed: 0,
        keypoint_weights: root().join("checkpoints/local-vit-small"),
        parallel: 1,
        temporal_ensemble,
        unseen_at,
        object_pose_error: 0.0,
        force_visible: None,
        unlit_encoder: None,
        key_patches: glue::eval::KeyPatches::Live,
        key_positions: glue::eval::KeyPositions::Live,
    };
    let setup = glue::eval::DataflowSetup { graph: root().join("dataflow.sim.yml"), dora: dora(), binaries: root().join("target/release") };
    let graph_report = glue::eval::evaluate_in_dataflow(&config, &dir.join("graph"), &setup).unwrap();
    let stages = &graph_report.latency.stages;
    let camera_free = !glue::policy::Policy::load(&config.checkpoint, &burn::tensor::Device::flex()).unwrap().config.policy.uses_images();
    for (node, ms) in stages.rows() {
        // With nothing found there is nothing to encode or track: grounding returns the invisible keypoints within
        // microseconds and the tracker passes them on unchanged (both can print 0.0 ms on an idle machine; the
        // keypoints compared below show they ran). The camera-free diagnostics' encoder is the identity on the
        // normalised state (well under the 0.1 ms printed).
        let idle = (unseen_at.is_some() && (node == "tracker" || node == "grounding")) || (camera_free && node == "encoder");
        assert!(ms > 0.0 || idle, "{node} reported no latency: {stages:?}");
    }
    let graph = recorded(&dir.join("graph/episodes"));
    assert_eq!(graph.len() as u64, episodes);

    let report = glue::eval::evaluate(&config, &dir.join("eval"), &burn::tensor::Device::flex()).unwrap();
    assert_eq!(
        serde_json::to_value(&graph_report.per_episode).unwrap(),
        serde_json::to_value(&report.per_episode).unwrap(),
        "glue eval --dataflow and glue eval disagree"
    );
    if task.carried_object().is_some() {
        let staged = report.per_episode.iter().all(|e| e.grasped.is_some() && e.held_at_end.is_some() && e.place_error_m.is_some());
        assert!(staged, "{task}: a pick-and-place episode without its stage: {:?}", report.per_episode);
    }
    let in_process = list_episodes(dir.join("eval")).unwrap();
    assert_eq!(in_process.len() as u64, episodes, "glue eval --record wrote {} episodes", in_process.len());
    for (i, path) in in_process.iter().enumerate() {
        let (in_process, graph) = (read_episode(path).unwrap(), &graph[i]);
        assert_eq!(in_process.ticks.len(), graph.ticks.len(), "episode {i}: tick counts differ");
        for (a, b) in graph.ticks.iter().zip(&in_process.ticks) {
            assert!(a.keypoints.is_some() && a.keypoints == b.keypoints, "episode {i} frame {}: keypoints differ", a.frame);
            if let (Some([x, y]), Some(k)) = (unseen_at, &a.keypoints) {
                assert!(k.points.iter().all(|p| *p == [x, y, 0.0]), "episode {i} frame {}: expected every keypoint invisible at {x},{y}: {:?}", a.frame, k.points);
            }
            assert!(a.action == b.action && a.image == b.image, "episode {i} frame {}: the graph and glue eval differ", a.frame);
            assert!(a.object_poses.is_some() && a.object_poses == b.object_poses, "episode {i} frame {}: object poses differ", a.frame);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The task's shipped GLUE checkpoint.
fn shipped(task: TaskKind) -> PathBuf {
    root().join(format!("checkpoints/{task}-glue-small"))
}

/// Two episodes: the second checks that each episode draws its own sampling noise (SEED + episode) in both.
#[test]
fn eval_through_the_sim_dataflow_matches_the_in_process_evaluation() {
    graph_matches_eval("policy", shipped(TaskKind::PushButton), TaskKind::PushButton, Condition::IN_DOMAIN, 2, 1000, None, None);
}

/// A pick-and-place episode (the shipped stack-block checkpoint, held-out seed 1006, which it completes): the
/// graph's sim node reports the same grasp, release and final distance to the target as `glue eval`. That
/// checkpoint reads the tracked keypoints' coordinates in its state (`--keypoint-coords`), so the encoder node's
/// path for them is compared here too.
#[test]
fn a_stack_block_episode_through_the_dataflow_matches_the_in_process_evaluation() {
    graph_matches_eval("policy-stack", shipped(TaskKind::StackBlock), TaskKind::StackBlock, Condition::IN_DOMAIN, 1, 1006, None, None);
}

/// With temporal ensembling (a chunk every tick, overlapping predictions averaged) in the node and in `glue eval`.
#[test]
fn eval_through_the_sim_dataflow_with_temporal_ensembling_matches_the_in_process_evaluation() {
    graph_matches_eval("policy-ensemble", shipped(TaskKind::PushButton), TaskKind::PushButton, Condition::IN_DOMAIN, 1, 1000, Some(0.01), None);
}

/// An occlusion scene whose button no frame shows (seed 1001 at strength 0.5), so grounding finds nothing: with
/// `UNSEEN_AT` the grounding node places the invisible keypoints where `glue eval --unseen-at` does, and the two
/// runs stay identical (the comparison includes every tick's keypoints, checked here to sit at the given point).
#[test]
fn an_episode_without_its_object_in_view_places_the_keypoints_alike_in_the_graph_and_in_process() {
    let at = [102.3, 177.7];
    let occlusion = Condition { variant: glue::sim::ood::Variant::Occlusion, strength: 0.5 };
    graph_matches_eval("policy-unseen", shipped(TaskKind::PushButton), TaskKind::PushButton, occlusion, 1, 1001, None, Some(at));
}

/// Trains a one-epoch policy (`kind`, with the tracks' coordinates in its state when `keypoint_coords`) on two
/// stack-block expert episodes and checks that the graph drives the same episode as `glue eval` with it (identical
/// behaviour is what is compared, not success).
fn trained_policy_runs_alike(name: &str, kind: glue::policy::PolicyKind, keypoint_coords: bool) {
    let dir = temp_dir(name);
    let spec = |seed| EpisodeSpec { task: TaskKind::StackBlock, seed, condition: Condition::IN_DOMAIN };
    for (i, seed) in [0, 1].into_iter().enumerate() {
        glue::collect::record_expert(&SimConfig::default(), spec(seed), None, i as u64, &dir.join("data")).unwrap();
    }
    if kind.uses_keypoint_coords() || keypoint_coords {
        // The perception pipeline's tracks (K = 15, as the grounding node and glue eval extract them).
        let device = burn::tensor::Device::flex();
        let encoder = glue::vit::GridEncoder::load(&root().join("checkpoints/local-vit-small"), 2, &device).unwrap();
        glue::annotate::annotate(&[dir.join("data")], &encoder, 15, 0, &device).unwrap();
    }
    let policy = glue::policy::PolicyConfig::new(kind, glue::policy::ModelSize::Small);
    let mut config = glue::train::TrainConfig::new(policy, vec![dir.join("data")]);
    (config.epochs, config.val_fraction, config.warmup_steps, config.keypoint_coords) = (1, 0.0, 0, keypoint_coords);
    glue::train::train(config, &dir.join("run"), &burn::tensor::Device::flex()).unwrap();
    graph_matches_eval(&format!("policy-{name}"), dir.join("run/last"), TaskKind::StackBlock, Condition::IN_DOMAIN, 1, 1000, None, None);
    std::fs::remove_dir_all(&dir).ok();
}

/// The privileged-state diagnostic in the graph: the encoder node conditions on `sim/object_poses` instead of the
/// image.
#[test]
fn the_privileged_state_policy_runs_alike_in_the_graph_and_in_process() {
    trained_policy_runs_alike("state", glue::policy::PolicyKind::State, false);
}

/// The keypoint-coordinate diagnostic in the graph: the encoder node conditions on `tracker/keypoints`' coordinates
/// instead of the image.
#[test]
fn the_keypoint_coordinate_policy_runs_alike_in_the_graph_and_in_process() {
    trained_policy_runs_alike("keypoints", glue::policy::PolicyKind::Keypoints, false);
}

/// GLUE-S with `--keypoint-coords` in the graph: the encoder node waits for `tracker/keypoints` as well as the image
/// (a policy's need for tracks comes from its checkpoint, not only from its kind).
#[test]
fn glue_s_with_keypoint_coords_runs_alike_in_the_graph_and_in_process() {
    trained_policy_runs_alike("glue-s-coords", glue::policy::PolicyKind::GlueS, true);
}

/// The policy node refuses to drive a task its checkpoint was not trained on: the shipped push-button
/// checkpoint in a place-fruit scene stops the graph with an error that names both tasks.
#[test]
fn the_policy_node_refuses_a_checkpoint_of_another_task() {
    let dir = temp_dir("wrong-task");
    let recordings = dir.join("recordings").display().to_string();
    let checkpoint = root().join("checkpoints/push-button-glue-small").display().to_string();
    let weights = root().join("checkpoints/local-vit-small").display().to_string();
    let file = dataflow(
        "dataflow.sim.yml",
        &dir,
        &[
            ("sim", "TASK", "place-fruit"),
            ("sim", "EPISODES", "1"),
            ("grounding", "WEIGHTS", &weights),
            ("encoder", "CHECKPOINT", &checkpoint),
            ("policy", "CHECKPOINT", &checkpoint),
            ("recorder", "OUT_DIR", &recordings),
        ],
    );
    let (success, text) = dora_run_status(&file);
    assert!(!success, "the graph ran a push-button checkpoint on place-fruit:\n{text}");
    assert!(text.contains("trained on push-button demonstrations (trained_on.json), not place-fruit"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Replay paces ticks by their recorded timestamps: at speed 1 streaming the episode takes its recorded duration
/// (as the replay node times it, so dora's start-up and the machine's load do not enter), at full speed (0) a
/// fraction of it.
#[test]
fn replay_streams_at_the_recorded_timing() {
    let dir = temp_dir("timing");
    let longest = list_episodes(&root().join("recordings"))
        .unwrap()
        .into_iter()
        .max_by_key(|p| read_episode(p).unwrap().ticks.len())
        .expect("recordings/ holds the shipped episodes");
    let duration = read_episode(&longest).unwrap().ticks.last().unwrap().timestamp_ns as f64 * 1e-9;
    let single = dir.join("one");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::copy(&longest, single.join(longest.file_name().unwrap())).unwrap();
    let timed = |speed: &str| {
        let out = dir.join(format!("out-{speed}"));
        let file = dataflow("dataflow.replay.yml", &dir, &[("replay", "RECORDINGS", single.to_str().unwrap()), ("replay", "SPEED", speed), ("recorder", "OUT_DIR", out.to_str().unwrap())]);
        let text = dora_run(&file);
        assert_eq!(recorded(&out).len(), 1);
        let line = text.lines().find(|l| l.contains("streamed in")).unwrap_or_else(|| panic!("no replay timing line:\n{text}"));
        line.rsplit("streamed in ").next().and_then(|t| t.trim_end_matches(" s").trim().parse::<f64>().ok()).unwrap_or_else(|| panic!("unreadable: {line}"))
    };
    let (fast, paced) = (timed("0"), timed("1"));
    assert!(paced >= duration && paced < duration + 1.0, "a {duration:.2} s episode streamed in {paced:.3} s at speed 1");
    assert!(fast < 0.5 * duration, "a {duration:.2} s episode streamed in {fast:.3} s at speed 0");
    std::fs::remove_dir_all(&dir).ok();
}

/// The real-arm graphs' dry run: the driver with no robot (`BACKEND: dry-run`; the age bound is not under test,
/// and tests run several graphs at once on two cores), a recorded push-button frame streamed by a shell loop as
/// the camera, the operator's box for grounding with the shipped local encoder, and the verdict file holding
/// `verdict`. Returns the recorded frame, the verdict file and the settings, to which a test adds its own.
fn dry_run_rig(dir: &Path, verdict: &str) -> (Episode, PathBuf, Vec<(&'static str, &'static str, String)>) {
    let source = read_episode(&root().join("recordings/push-button-none-seed001000-ep0000.arrow")).unwrap();
    let frame = dir.join("frame.rgb");
    std::fs::write(&frame, &source.ticks[0].image).unwrap();
    let verdict_file = dir.join("verdict");
    std::fs::write(&verdict_file, format!("{verdict}\n")).unwrap();
    let settings = vec![
        ("franka-driver", "BACKEND", "dry-run".to_string()),
        ("franka-driver", "VERDICT_FILE", verdict_file.display().to_string()),
        ("franka-driver", "MAX_ACTION_AGE_MS", "10000".to_string()),
        ("camera", "SOURCE", format!("while :; do cat {}; sleep 0.03; done", frame.display())),
        ("camera", "SOURCE_WIDTH", source.info.width.to_string()),
        ("camera", "SOURCE_HEIGHT", source.info.height.to_string()),
        ("grounding", "WEIGHTS", root().join("checkpoints/local-vit-small").display().to_string()),
        ("grounding", "DETECTOR", String::new()),
        ("grounding", "SEGMENTER", String::new()),
        ("grounding", "BOXES", "90,60,150,120".to_string()),
    ];
    (source, verdict_file, settings)
}

/// [`dataflow`] with owned setting values.
fn dataflow_with(name: &str, dir: &Path, settings: &[(&'static str, &'static str, String)]) -> PathBuf {
    let borrowed: Vec<(&str, &str, &str)> = settings.iter().map(|(node, key, value)| (*node, *key, value.as_str())).collect();
    dataflow(name, dir, &borrowed)
}

/// The real-robot graph (`dataflow.yml`) end to end without a robot: the driver's dry run (the simulator's
/// kinematics following the servo), a camera whose SOURCE command streams a recorded push-button frame as raw
/// rgb24, the operator's box for grounding, the shipped push-button checkpoint. The driver's clock runs at 5 Hz
/// here (10 in the file) to leave a loaded CI machine headroom. Checks: every tick is recorded with its image,
/// keypoints and a valid action; the arm moved under the policy (the dry-run state is measured, not commanded);
/// the operator's verdict file ends the episode and is consumed; no action was rejected.
#[test]
fn the_real_robot_graph_runs_in_a_dry_run_with_a_streamed_camera_and_the_operators_verdict() {
    let dir = temp_dir("real");
    let out = dir.join("recordings");
    let (source, verdict, mut settings) = dry_run_rig(&dir, "failure");
    let checkpoint = shipped(TaskKind::PushButton).display().to_string();
    let ticks = 12;
    settings.extend([
        ("franka-driver", "MAX_TICKS", ticks.to_string()),
        ("franka-driver", "CONTROL_HZ", "5".to_string()),
        ("encoder", "CHECKPOINT", checkpoint.clone()),
        ("policy", "CHECKPOINT", checkpoint),
        ("policy", "CONTROL_HZ", "5".to_string()),
        ("policy", "MAX_LAG_MS", "200".to_string()),
        ("recorder", "OUT_DIR", out.display().to_string()),
        ("recorder", "CONTROL_HZ", "5".to_string()),
    ]);
    let file = dataflow_with("dataflow.yml", &dir, &settings);
    let log = dora_run(&file);
    assert!(log.contains("episode 0: success=false ticks=12"), "driver outcome line missing:\n{log}");
    assert!(log.contains("0 actions rejected"), "{log}");
    assert!(!verdict.exists(), "the verdict file is consumed");
    let episodes = recorded(&out);
    assert_eq!(episodes.len(), 1);
    let ep = &episodes[0];
    assert_eq!((ep.info.task.as_str(), ep.success, ep.ticks.len()), ("push-button", false, ticks));
    assert_eq!(ep.info.text_query, TaskKind::PushButton.text_query());
    for t in &ep.ticks {
        assert_eq!(t.image, source.ticks[0].image, "frame {}: the camera's image", t.frame);
        let kp = t.keypoints.as_ref().expect("tracked keypoints recorded");
        assert_eq!(kp.points.len(), 15, "frame {}", t.frame);
        assert!(t.action.to_array().iter().all(|v| v.is_finite()), "frame {}", t.frame);
    }
    let first = glam::Vec3::from(ep.ticks[0].robot_state.ee_position);
    let last = glam::Vec3::from(ep.ticks[ticks - 1].robot_state.ee_position);
    assert!(first.distance(last) > 0.01, "the dry-run arm did not follow the policy: {first} -> {last}");
    // Grounding's keypoints come from inside the operator's box.
    let init = ep.ticks[0].keypoints.as_ref().unwrap();
    assert!(init.points.iter().all(|p| (90.0..150.0).contains(&p[0]) && (60.0..120.0).contains(&p[1])), "{init:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The operator's device: a FIFO into which a thread writes `at_start` at once and `in_episode` once the recorder
/// has begun writing an episode under `out` (the teleop node takes a press before an episode's first tick as
/// pressed between episodes, and drops it). Returns the FIFO's path and the thread, which ends after writing.
fn operator(dir: &Path, out: &Path, at_start: Vec<(u16, u16, i32)>, in_episode: Vec<(u16, u16, i32)>) -> (PathBuf, std::thread::JoinHandle<()>) {
    let device = dir.join("device.fifo");
    assert!(Command::new("mkfifo").arg(&device).status().unwrap().success());
    let (path, out) = (device.clone(), out.to_path_buf());
    let thread = std::thread::spawn(move || {
        use std::io::Write;
        let bytes = |events: Vec<(u16, u16, i32)>| -> Vec<u8> { events.into_iter().flat_map(|(kind, code, value)| InputEvent { kind, code, value }.to_bytes()).collect() };
        let mut fifo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        fifo.write_all(&bytes(at_start)).unwrap();
        let writing = || std::fs::read_dir(&out).ok()?.flatten().find_map(|run| std::fs::read_dir(run.path()).ok()?.flatten().find(|f| f.file_name().to_string_lossy().ends_with(".partial")));
        let deadline = Instant::now() + Duration::from_secs(60);
        while writing().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        fifo.write_all(&bytes(in_episode)).unwrap();
    });
    (device, thread)
}

/// Checks that the measured hand went from `from` to `to` along +x: by more than `min` m, and over five times as
/// far as along y or z.
fn assert_moved_along_x(from: &Tick, to: &Tick, min: f32) {
    let moved = glam::Vec3::from(to.robot_state.ee_position) - glam::Vec3::from(from.robot_state.ee_position);
    assert!(moved.x > min && moved.x > 5.0 * moved.y.abs().max(moved.z.abs()), "frames {} -> {}: the hand should move along +x: {moved}", from.frame, to.frame);
}

/// Teleoperation in the simulator (`dataflow.teleop.sim.yml`): the keyboard scheme with W held (+x) from the start
/// and one press of space (close the gripper) during the episode, unpaced. Every tick is recorded with the
/// operator's action; the target leads the measured hand by at most `MAX_LEAD`; the simulated hand moves along +x;
/// the gripper target opens the episode and is closed from the press on; the node reports the toggle.
#[test]
fn teleoperation_drives_the_simulator_and_is_recorded() {
    let dir = temp_dir("teleop-sim");
    let out = dir.join("recordings");
    let (device, operator) = operator(&dir, &out, vec![(codes::EV_KEY, codes::KEY_W, 1)], vec![(codes::EV_KEY, codes::KEY_SPACE, 1), (codes::EV_KEY, codes::KEY_SPACE, 0)]);
    let file = dataflow(
        "dataflow.teleop.sim.yml",
        &dir,
        &[
            ("sim", "TASK", "push-button"),
            ("teleop", "DEVICE", device.to_str().unwrap()),
            ("teleop", "SCHEME", "keyboard"),
            ("teleop", "PACE_HZ", "0"),
            ("recorder", "OUT_DIR", out.to_str().unwrap()),
        ],
    );
    let log = dora_run(&file);
    operator.join().unwrap();
    assert!(log.contains("1 gripper toggles"), "teleop summary missing:\n{log}");
    let episodes = recorded(&out);
    assert_eq!(episodes.len(), 1);
    let ticks = &episodes[0].ticks;
    assert!(ticks.len() > 30, "{} ticks", ticks.len());
    for t in ticks {
        let lead = glam::Vec3::from(t.action.position).distance(glam::Vec3::from(t.robot_state.ee_position));
        assert!(lead <= 0.05 + 1e-4, "frame {}: the target leads the hand by {lead} m", t.frame);
    }
    let closed_from = ticks.iter().position(|t| t.action.gripper == 0.0).expect("the gripper target never closed");
    assert!(closed_from >= 1 && ticks[closed_from..].iter().all(|t| t.action.gripper == 0.0), "gripper targets from frame {closed_from}");
    assert_moved_along_x(&ticks[0], &ticks[30], 0.05);
    std::fs::remove_dir_all(&dir).ok();
}

/// Teleoperation on the real-arm graph in a dry run (`dataflow.teleop.yml`, as the real-robot test above: a
/// streamed camera frame, the operator's box for grounding, 5 Hz): a SpaceMouse pushed along its -y axis, mapped
/// to the robot's +x by `AXES`, and its left button pressed during the episode. Every tick is recorded with its
/// image, the tracked keypoints (recorded live) and the operator's valid action; the dry-run arm moves along +x;
/// the driver rejects nothing; the training loader takes the episode with the tracker's keypoints.
#[test]
fn teleoperation_records_demonstrations_with_live_keypoints_on_the_real_arm_graph() {
    let dir = temp_dir("teleop-real");
    let out = dir.join("recordings");
    let (_, _, mut settings) = dry_run_rig(&dir, "success");
    let (device, operator) = operator(&dir, &out, vec![(codes::EV_ABS, 1, -350)], vec![(codes::EV_KEY, codes::BTN_0, 1), (codes::EV_KEY, codes::BTN_0, 0)]);
    let ticks = 12;
    settings.extend([
        ("franka-driver", "EPISODES", "1".to_string()),
        ("franka-driver", "MAX_TICKS", ticks.to_string()),
        ("franka-driver", "CONTROL_HZ", "5".to_string()),
        ("teleop", "DEVICE", device.display().to_string()),
        ("teleop", "AXES", "-y,x,z,rx,ry,rz".to_string()),
        ("teleop", "CONTROL_HZ", "5".to_string()),
        ("recorder", "OUT_DIR", out.display().to_string()),
        ("recorder", "CONTROL_HZ", "5".to_string()),
    ]);
    let file = dataflow_with("dataflow.teleop.yml", &dir, &settings);
    let log = dora_run(&file);
    operator.join().unwrap();
    assert!(log.contains("episode 0: success=true ticks=12"), "driver outcome line missing:\n{log}");
    assert!(log.contains("0 actions rejected") && log.contains("1 gripper toggles"), "{log}");
    let episodes = recorded(&out);
    assert_eq!(episodes.len(), 1);
    let ep = &episodes[0];
    assert_eq!((ep.success, ep.ticks.len()), (true, ticks));
    for t in &ep.ticks {
        assert_eq!(t.keypoints.as_ref().map(|k| k.points.len()), Some(15), "frame {}: tracked keypoints recorded", t.frame);
        assert!(t.action.check().is_ok(), "frame {}: {:?}", t.frame, t.action);
    }
    assert_eq!(ep.ticks[ticks - 1].action.gripper, 0.0, "the button closed the gripper");
    assert_moved_along_x(&ep.ticks[0], &ep.ticks[ticks - 1], 0.02);
    // The recording is training input as it stands: `glue train` loads it with the tracker's keypoints.
    let run = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let (demos, _, keypoints) = glue::train::data::load_demos(&[run], true, false).unwrap();
    assert_eq!((demos.len(), keypoints), (1, Some(glue::train::data::KeypointSource::Tracker)));
    std::fs::remove_dir_all(&dir).ok();
}

/// The operator ends a teleoperated episode with a key on the real-arm graph in a dry run: W (+x) held from the
/// start, Enter (success) pressed once the recorder has begun writing episode 0. Episode 0 stops early with
/// success and no verdict file; episode 1, which nobody ends, runs to `MAX_TICKS` and takes the verdict from the
/// file as usual.
#[test]
fn the_operator_ends_a_teleoperated_episode_with_a_key() {
    let dir = temp_dir("teleop-end");
    let out = dir.join("recordings");
    let (_, verdict, mut settings) = dry_run_rig(&dir, "failure");
    let (device, operator) = operator(&dir, &out, vec![(codes::EV_KEY, codes::KEY_W, 1)], vec![(codes::EV_KEY, codes::KEY_ENTER, 1), (codes::EV_KEY, codes::KEY_ENTER, 0)]);
    let max_ticks = 20;
    settings.extend([
        ("franka-driver", "EPISODES", "2".to_string()),
        ("franka-driver", "MAX_TICKS", max_ticks.to_string()),
        ("teleop", "DEVICE", device.display().to_string()),
        ("teleop", "SCHEME", "keyboard".to_string()),
        ("recorder", "OUT_DIR", out.display().to_string()),
    ]);
    let file = dataflow_with("dataflow.teleop.yml", &dir, &settings);
    let log = dora_run(&file);
    operator.join().unwrap();
    assert!(log.contains("teleop: episode 0 ended by the operator") && log.contains(&format!("episode 1: success=false ticks={max_ticks}")), "{log}");
    assert!(!verdict.exists(), "the second episode's verdict file is consumed");
    let episodes = recorded(&out);
    assert_eq!(episodes.len(), 2, "{log}");
    assert!(episodes[0].success && episodes[0].ticks.len() < max_ticks, "episode 0: success {} after {} ticks", episodes[0].success, episodes[0].ticks.len());
    assert_eq!((episodes[1].success, episodes[1].ticks.len()), (false, max_ticks));
    let moved = glam::Vec3::from(episodes[0].ticks.last().unwrap().robot_state.ee_position) - glam::Vec3::from(episodes[0].ticks[0].robot_state.ee_position);
    assert!(moved.x > 0.0, "W held: {moved}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `scripts/dry_run_real_graph.sh`, the README's no-robot run of `dataflow.yml`, still runs against the graph
/// file (it rewrites settings it names and fails when one is gone), reports every node and writes the recording.
/// The arm's clock runs 5 ticks; downstream nodes drop a tick the loop has already left behind, which a loaded
/// machine makes them do, so they report 1-5.
#[test]
fn the_dry_run_script_runs_the_real_graph_and_reports_every_node() {
    let dir = temp_dir("dry-run-script");
    let out = Command::new(root().join("scripts/dry_run_real_graph.sh"))
        .env("OUT", dir.join("run"))
        .env("TICKS", "5")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("franka-driver: 5 ticks") && text.contains("grounding: 1 episodes"), "{text}");
    assert!(text.contains("episode 0: success=false ticks=5"), "{text}");
    // The number after `prefix` in the report: `encoder: 4 ticks, ...`, the recording's `ticks: 4 (0.4 s at 10 Hz)`.
    let count = |prefix: &str| -> u32 {
        let at = text.find(prefix).unwrap_or_else(|| panic!("`{prefix}` missing:\n{text}")) + prefix.len();
        text[at..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count after `{prefix}`:\n{text}"))
    };
    for prefix in ["camera: ", "tracker: ", "encoder: ", "policy: ", "ticks: "] {
        assert!((1..=5).contains(&count(prefix)), "`{prefix}` reports {} of 5 ticks:\n{text}", count(prefix));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The grounding node with the open-vocabulary detector and the segmenter (`DETECTOR`, `SEGMENTER`: the tiny
/// random-weight OWL-ViT and SAM fixtures of the parity tests) on a replayed push-button episode: the episode's
/// text queries are detected on its first frame, each query's box and score logged, the boxes segmented, and the
/// keypoints extracted for that one episode.
#[test]
fn the_grounding_node_detects_and_segments_text_queries() {
    let dir = temp_dir("detector");
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let name = "push-button-none-seed001000-ep0000.arrow";
    std::fs::copy(root().join("recordings").join(name), recordings.join(name)).unwrap();
    let bin = root().join("target/release");
    let yaml = format!(
        "nodes:
  - id: replay
    path: {bin}/glue-replay
    outputs: [episode, image, segmentation, robot_state, oracle_tracks, keypoints, object_poses, action]
    env: {{ RECORDINGS: {recordings}, SPEED: \"0\" }}
  - id: grounding
    path: {bin}/glue-grounding
    inputs: {{ episode: replay/episode, image: replay/image }}
    outputs: [keypoints_init]
    env: {{ WEIGHTS: {weights}, DETECTOR: {detector}, SEGMENTER: {segmenter}, DETECTION_THRESHOLD: \"0.05\" }}
",
        bin = bin.display(),
        recordings = recordings.display(),
        weights = root().join("checkpoints/local-vit-small").display(),
        detector = root().join("tests/fixtures/owlvit-tiny").display(),
        segmenter = root().join("tests/fixtures/sam-tiny").display(),
    );
    let file = dir.join("detector.yml");
    std::fs::write(&file, yaml).unwrap();
    let log = dora_run(&file);
    let queries = read_episode(&recordings.join(name)).unwrap().info.text_query;
    for query in &queries {
        assert!(log.contains(&format!("grounding: episode 0: {query:?} box [")), "no detection logged for {query:?}:\n{log}");
    }
    assert!(log.contains("grounding: 1 episodes"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}
