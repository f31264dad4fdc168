//! `glue train` end to end on the shipped stack-block recording: a run resumes exactly where it stopped, the loss
//! goes down, every policy's checkpoint loads and acts, a NaN loss stops the run and keeps the last good
//! checkpoint, `--init` starts from a checkpoint's weights (widening a 7-entry robot state to 8), GLUE without keypoint tracks is refused with a message
//! that says what is missing, a checkpoint names the task it was trained on and refuses another (the shipped
//! ones included), the privileged-state diagnostic reads the recorded object poses (and refuses recordings
//! without them), and the keypoint-coordinate diagnostic reads the recorded keypoint tracks.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::SeedableRng;

use glue::policy::checkpoint::TrainedOn;
use glue::policy::observation::Frame;
use glue::policy::{ModelSize, Policy, PolicyConfig, PolicyKind};
use glue::recording::{EpisodeWriter, list_episodes, read_episode};
use glue::sim::ood::Condition;
use glue::sim::task::TaskKind;
use glue::sim::{EpisodeSpec, SimConfig};
use glue::train::{ResumeOverrides, TrainConfig, resume, train};

const EPISODE: &str = "recordings/stack-block-none-seed001000-ep0000.arrow";
const LOCAL_ENCODER: &str = "checkpoints/local-vit-small";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A run folder unique to one test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("glue-train-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// burn's initialisers draw from a process-wide RNG, so seeded runs repeat only when no other test draws from
/// it at the same time: every training test holds this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fast configuration: one episode, no validation split, no warmup.
fn config(policy: PolicyKind, epochs: usize) -> TrainConfig {
    let mut c = TrainConfig::new(PolicyConfig::new(policy, ModelSize::Small), vec![root().join(EPISODE)]);
    c.epochs = epochs;
    c.batch_size = 16;
    c.lr = 1e-3;
    c.warmup_steps = 0;
    c.val_fraction = 0.0;
    c.checkpoint_every = 1;
    if policy.uses_key_patches() {
        c.local_encoder = Some(root().join(LOCAL_ENCODER));
    }
    c
}

fn train_losses(run: &Path) -> Vec<f64> {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    csv.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect()
}

/// `glue train` flags of [`config`] for the CLI.
fn cli_args(policy: PolicyKind, epochs: usize, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--policy", policy.name(), "--data"].map(String::from).to_vec();
    args.push(root().join(EPISODE).display().to_string());
    args.extend(["--out".to_string(), out.display().to_string()]);
    for (flag, value) in [("--epochs", epochs.to_string()), ("--batch-size", "16".into()), ("--lr", "1e-3".into()),
        ("--warmup-steps", "0".into()), ("--val-fraction", "0".into()), ("--checkpoint-every", "1".into())]
    {
        args.extend([flag.to_string(), value]);
    }
    args
}

#[test]
fn a_killed_run_resumes_where_it_stopped() {
    let _serial = serial();
    let (straight, killed) = (Scratch::new("straight"), Scratch::new("killed"));
    let glue = env!("CARGO_BIN_EXE_glue");
    let status = std::process::Command::new(glue).args(cli_args(PolicyKind::GlueS, 3, &straight.0)).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    // Kill -9 as soon as the first epoch's state is on disk.
    let mut child = std::process::Command::new(glue)
        .args(cli_args(PolicyKind::GlueS, 3, &killed.0))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = killed.0.join("state/progress.json");
    let t = std::time::Instant::now();
    while !progress.exists() {
        assert!(t.elapsed().as_secs() < 120, "no checkpoint within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = std::process::Command::new(glue).args(["train", "--resume", "--out"]).arg(&killed.0).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming after epoch"), "{stderr}");
    let (a, b) = (train_losses(&straight.0), train_losses(&killed.0));
    assert_eq!((a.len(), b.len()), (3, 3));
    // The same seeded data order, crops, noise and schedule: equal up to float reassociation (the first run in a
    // process differs from later ones at ~1e-3 relative on the flex backend; a lost optimiser state or a
    // restarted schedule would not stay this close).
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-2 * x.abs(), "straight {a:?} vs resumed {b:?}");
    }
    // Step counter and learning-rate schedule continue exactly.
    let columns = |run: &Path| -> Vec<(String, String)> {
        let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        csv.lines().skip(1).map(|l| { let f: Vec<&str> = l.split(',').collect(); (f[1].to_string(), f[4].to_string()) }).collect()
    };
    assert_eq!(columns(&straight.0), columns(&killed.0));
    // Training into an existing run without --resume is refused.
    let again = std::process::Command::new(glue).args(cli_args(PolicyKind::GlueS, 3, &killed.0)).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn the_loss_goes_down() {
    let _serial = serial();
    let run = Scratch::new("loss");
    // 80 steps: the noise-prediction loss leaves its ~1.0 plateau (predicting zero noise) and falls.
    let report = train(config(PolicyKind::Dp, 20), &run.0, &Device::flex()).unwrap();
    let losses = train_losses(&run.0);
    assert_eq!(report.epochs, 20);
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    assert!(mean(&losses[17..]) < 0.85 * mean(&losses[..3]), "loss per epoch: {losses:?}");
    assert!(run.0.join("loss.png").is_file());
}

#[test]
fn a_time_budget_shortens_the_run_and_its_schedule() {
    let _serial = serial();
    let run = Scratch::new("budget");
    let mut c = config(PolicyKind::Dp, 50);
    // Far less than one epoch's time: the run stops after its first epoch, with a checkpoint, and records the new
    // length (the cosine schedule's end) in train.json.
    c.max_minutes = Some(1e-4);
    // The episode twice, one copy validating: metrics.json names the validation recording.
    c.data = vec![root().join(EPISODE), root().join(EPISODE)];
    c.val_fraction = 0.5;
    let report = train(c, &run.0, &Device::flex()).unwrap();
    assert_eq!(report.epochs, 1);
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.0.join("metrics.json")).unwrap()).unwrap();
    assert_eq!((report.train_episodes, report.val_episodes), (1, 1));
    assert_eq!(metrics["val_recordings"], serde_json::json!([root().join(EPISODE)]), "{metrics}");
    assert_eq!(train_losses(&run.0).len(), 1);
    let saved: TrainConfig = serde_json::from_str(&std::fs::read_to_string(run.0.join("train.json")).unwrap()).unwrap();
    assert_eq!((saved.epochs, saved.max_minutes), (1, Some(1e-4)));
    Policy::load(&run.0.join("last"), &Device::flex()).unwrap();
}

/// Loads `run/best` and asks it for actions on the episode's first two frames.
fn act(run: &Path) -> Vec<[f32; 8]> {
    act_with_keypoints_moved(&run.join("best"), 0.0)
}

/// The actions of the checkpoint folder `checkpoint` on the episode's first two frames with every oracle track
/// moved by `shift` pixels (GLUE's key patches stay those of the recorded tracks), the same sampling noise every call.
fn act_with_keypoints_moved(checkpoint: &Path, shift: f32) -> Vec<[f32; 8]> {
    let policy = Policy::load(checkpoint, &Device::flex()).unwrap();
    let episode = read_episode(root().join(EPISODE)).unwrap();
    let (w, h) = (episode.info.width, episode.info.height);
    let ticks = &episode.ticks[..2];
    let states: Vec<[f32; 15]> = ticks.iter().map(|t| t.robot_state.to_array()).collect();
    let tracks: Vec<Vec<[f32; 3]>> = ticks.iter().map(|t| t.oracle_tracks.clone().unwrap().points).collect();
    let features: Vec<Option<Vec<f32>>> = ticks
        .iter()
        .zip(&tracks)
        .map(|(t, k)| policy.key_features(&image::RgbImage::from_raw(w, h, t.image.clone()).unwrap(), k).unwrap())
        .collect();
    let moved: Vec<Vec<[f32; 3]>> = tracks.iter().map(|k| k.iter().map(|&[x, y, v]| [x + shift, y, v]).collect()).collect();
    let history: Vec<Frame<'_>> = (0..2)
        .map(|i| Frame {
            image: &ticks[i].image,
            width: w,
            height: h,
            state: &states[i],
            keypoints: &moved[i],
            key_features: features[i].as_deref(),
            object_poses: &[],
        })
        .collect();
    policy.act(&history, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap()
}

#[test]
fn every_policy_trains_saves_loads_and_acts() {
    let _serial = serial();
    for policy in [PolicyKind::Glue, PolicyKind::GlueS, PolicyKind::Dp] {
        let run = Scratch::new(policy.name());
        train(config(policy, 1), &run.0, &Device::flex()).unwrap();
        let actions = act(&run.0);
        assert_eq!(actions.len(), 8, "{policy:?}: n_action_steps actions");
        for a in &actions {
            assert!(a.iter().all(|v| v.is_finite()), "{policy:?}: {a:?}");
            // Denormalised into the workspace, not left in [-1, 1] units: z of the table-top task is above 0.
            assert!(a[2] > -0.5 && a[2] < 1.5, "{policy:?}: {a:?}");
        }
        if policy == PolicyKind::Glue {
            assert!(run.0.join("best/local_encoder/model.safetensors").is_file(), "GLUE checkpoints carry their local encoder");
        }
        let loaded = Policy::load(&run.0.join("best"), &Device::flex()).unwrap();
        let frames = read_episode(root().join(EPISODE)).unwrap().ticks.len();
        assert_eq!(loaded.trained_on, Some(TrainedOn { task: "stack-block".into(), episodes: 1, frames }), "{policy:?}");
        loaded.check_task("stack-block").unwrap();
        let e = format!("{:#}", loaded.check_task("place-fruit").unwrap_err());
        assert!(e.contains("trained on stack-block") && e.contains("not place-fruit"), "{e}");
    }
}

/// `glue train --state-dim 8` feeds the gripper width (the 8th robot-state entry) to the policy: the checkpoint
/// says so, its normaliser covers 8 entries, and the same observation with another width gives other actions (the
/// same sampling noise), which a 7-entry policy cannot see. `--state-dim 16` is refused by name.
#[test]
fn state_dim_8_feeds_the_gripper_width() {
    let _serial = serial();
    let run = Scratch::new("state-dim");
    let mut args = cli_args(PolicyKind::GlueS, 1, &run.0);
    args.extend(["--state-dim".to_string(), "8".to_string()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glue")).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let policy = Policy::load(&run.0.join("best"), &Device::flex()).unwrap();
    assert_eq!((policy.config.state_dim, policy.normalizer.state.dim()), (8, 8));

    assert_ne!(act_with_gripper_width(&run.0, 0.0), act_with_gripper_width(&run.0, 0.08), "the gripper width does not reach the policy");

    let bad = Scratch::new("state-dim-bad");
    let mut args = cli_args(PolicyKind::GlueS, 1, &bad.0);
    args.extend(["--state-dim".to_string(), "16".to_string()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glue")).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--state-dim") && err.contains("got 16"), "{err}");
}

/// The actions of `run/last` on the episode's first two frames with the gripper width set to `width` (GLUE-S: no
/// keypoints needed), the same sampling noise every call.
fn act_with_gripper_width(run: &Path, width: f32) -> Vec<[f32; 8]> {
    let policy = Policy::load(&run.join("last"), &Device::flex()).unwrap();
    let episode = read_episode(root().join(EPISODE)).unwrap();
    let (w, h) = (episode.info.width, episode.info.height);
    let states: Vec<[f32; 15]> = episode.ticks[..2]
        .iter()
        .map(|t| {
            let mut s = t.robot_state.to_array();
            s[7] = width;
            s
        })
        .collect();
    let history: Vec<Frame<'_>> = (0..2)
        .map(|i| Frame { image: &episode.ticks[i].image, width: w, height: h, state: &states[i], keypoints: &[], key_features: None, object_poses: &[] })
        .collect();
    policy.act(&history, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap()
}

/// `--init` from a 7-entry checkpoint into a `--state-dim 8` run widens the U-Net's condition with zero weights:
/// at a zero learning rate the new checkpoint acts as the old one did and ignores the gripper width, trained it
/// learns to use it; a run with fewer entries than its `--init` checkpoint is refused by name.
#[test]
fn init_widens_a_checkpoints_robot_state() {
    let _serial = serial();
    let (joints, widened) = (Scratch::new("widen-from"), Scratch::new("widen-to"));
    let device = Device::flex();
    train(config(PolicyKind::GlueS, 1), &joints.0, &device).unwrap();
    // A GLUE-S run of `state_dim` entries starting from `init`.
    let from = |state_dim: usize, init: &Path| {
        let mut c = config(PolicyKind::GlueS, 1);
        c.policy.set_state_dim(state_dim).unwrap();
        c.init = Some(init.join("last"));
        c
    };
    let mut c = from(8, &joints.0);
    c.lr = 0.0;
    train(c, &widened.0, &device).unwrap();
    assert_eq!(Policy::load(&widened.0.join("last"), &device).unwrap().config.state_dim, 8);

    let before = act_with_gripper_width(&joints.0, 0.04);
    for width in [0.0, 0.08] {
        let after = act_with_gripper_width(&widened.0, width);
        let gap = before.iter().flatten().zip(after.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(gap < 1e-4, "width {width}: the widened policy's actions differ by {gap}");
    }
    // Trained (lr as in `config`), the new weights learn: the width reaches the actions.
    let trained = Scratch::new("widen-trained");
    train(from(8, &joints.0), &trained.0, &device).unwrap();
    assert_ne!(act_with_gripper_width(&trained.0, 0.0), act_with_gripper_width(&trained.0, 0.08));

    let err = format!("{:#}", train(from(6, &widened.0), &widened.0.join("narrower"), &device).unwrap_err());
    assert!(err.contains("--init") && err.contains("feeds 8 robot-state entries and 0 keypoints' coordinates, this run 6"), "{err}");
}

/// GLUE `--keypoint-coords`: the tracks' coordinates join eq. 3's S (7 + 16 x 3 entries per step). A run starting
/// `--init` from a GLUE checkpoint without them widens it with zero weights: at a zero learning rate it acts as the
/// checkpoint did wherever the keypoints are; trained, the coordinates reach the actions. Narrowing back is refused.
#[test]
fn glue_keypoint_coords_widen_a_checkpoint() {
    let _serial = serial();
    let (plain, widened, trained) = (Scratch::new("coords-from"), Scratch::new("coords-to"), Scratch::new("coords-trained"));
    let device = Device::flex();
    train(config(PolicyKind::Glue, 1), &plain.0, &device).unwrap();
    let from = |lr: f64, init: &Path| {
        let mut c = config(PolicyKind::Glue, 1);
        c.keypoint_coords = true;
        c.init = Some(init.join("last"));
        c.lr = lr;
        c
    };
    train(from(0.0, &plain.0), &widened.0, &device).unwrap();
    let config = Policy::load(&widened.0.join("last"), &device).unwrap().config;
    assert_eq!((config.n_keypoints, config.fusion.state_dim, config.step_dim()), (16, 55, 128 + 64 + 55));

    let before = act_with_keypoints_moved(&plain.0.join("last"), 0.0);
    for shift in [0.0, 40.0] {
        let after = act_with_keypoints_moved(&widened.0.join("last"), shift);
        let gap = before.iter().flatten().zip(after.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(gap < 1e-4, "shift {shift}: the widened policy's actions differ by {gap}");
    }
    train(from(1e-3, &plain.0), &trained.0, &device).unwrap();
    assert_ne!(act_with_keypoints_moved(&trained.0.join("last"), 0.0), act_with_keypoints_moved(&trained.0.join("last"), 40.0), "the coordinates do not reach the actions");

    let mut narrower = config_without_coords_from(&trained.0);
    narrower.lr = 0.0;
    let err = format!("{:#}", train(narrower, &trained.0.join("narrower"), &device).unwrap_err());
    assert!(err.contains("--init") && err.contains("16 keypoints' coordinates, this run 7 and 0"), "{err}");
}

/// GLUE-S and DP `--keypoint-coords`, to compare with GLUE on equal inputs: the coordinates join their state (7 + 16
/// x 3 entries after the CLS token or the ResNet features) and reach the actions once trained; the privileged-state
/// diagnostic, which reads the true poses, refuses them.
#[test]
fn the_baselines_take_keypoint_coords_too() {
    let _serial = serial();
    let device = Device::flex();
    for policy in [PolicyKind::GlueS, PolicyKind::Dp] {
        let run = Scratch::new(&format!("coords-{}", policy.name()));
        let mut c = config(policy, 1);
        c.keypoint_coords = true;
        train(c, &run.0, &device).unwrap();
        let loaded = Policy::load(&run.0.join("last"), &device).unwrap().config;
        let plain = PolicyConfig::new(policy, ModelSize::Small);
        assert_eq!((loaded.n_keypoints, loaded.step_dim()), (16, plain.step_dim() + 16 * 3), "{policy:?}");
        assert!(loaded.reads_keypoints(), "{policy:?}: the encoder node must wait for the tracks");
        let (here, moved) = (act_with_keypoints_moved(&run.0.join("last"), 0.0), act_with_keypoints_moved(&run.0.join("last"), 40.0));
        assert_ne!(here, moved, "{policy:?}: the coordinates do not reach the actions");
    }
    let mut state = config(PolicyKind::State, 1);
    state.keypoint_coords = true;
    let err = format!("{:#}", train(state, &Scratch::new("coords-state").0, &device).unwrap_err());
    assert!(err.contains("--keypoint-coords: --policy state reads no keypoint coordinates"), "{err}");
}

/// A plain GLUE run starting `--init` from `run/last`.
fn config_without_coords_from(run: &Path) -> TrainConfig {
    let mut c = config(PolicyKind::Glue, 1);
    c.init = Some(run.join("last"));
    c
}

#[test]
fn demonstrations_of_two_tasks_are_refused() {
    let run = Scratch::new("two-tasks");
    let mut c = config(PolicyKind::Dp, 1);
    c.data.push(root().join("recordings/push-button-none-seed001000-ep0000.arrow"));
    let err = format!("{:#}", train(c, &run.0, &Device::flex()).unwrap_err());
    assert!(err.contains("a push-button episode among stack-block ones (train one task per run)"), "{err}");
}

/// Every shipped GLUE checkpoint (`checkpoints/<task>-glue-small`) loads, says in `trained_on.json` that it was
/// trained on the task its folder names, and refuses the other tasks, in the library and in `glue eval`.
#[test]
fn shipped_checkpoints_name_their_task_and_refuse_others() {
    let tasks = ["push-button", "stack-block", "place-fruit"];
    let mut shipped = 0;
    for entry in std::fs::read_dir(root().join("checkpoints")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some(task) = tasks.iter().find(|t| name == format!("{t}-glue-small")) else { continue };
        let policy = Policy::load(&dir, &Device::flex()).unwrap();
        let trained_on = policy.trained_on.as_ref().unwrap_or_else(|| panic!("{name}: no trained_on.json"));
        assert_eq!(&trained_on.task, task, "{name}");
        for other in tasks.iter().filter(|t| *t != task) {
            let e = format!("{:#}", policy.check_task(other).unwrap_err());
            assert!(e.contains(&format!("trained on {task}")), "{name} on {other}: {e}");
            let out = Scratch::new(&format!("wrong-task-{name}-{other}"));
            let run = std::process::Command::new(env!("CARGO_BIN_EXE_glue"))
                .args(["eval", "--checkpoint", &dir.display().to_string(), "--task", other, "--episodes", "1", "--out"])
                .arg(&out.0)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(!run.status.success() && stderr.contains(&format!("not {other}")), "{name} on {other}: {stderr}");
        }
        shipped += 1;
    }
    assert_eq!(shipped, tasks.len(), "one shipped GLUE checkpoint per task under checkpoints/");
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let _serial = serial();
    let run = Scratch::new("nan");
    let device = Device::flex();
    train(config(PolicyKind::Dp, 1), &run.0, &device).unwrap();
    let weights = run.0.join("last/model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let err = resume(&run.0, ResumeOverrides { epochs: Some(3), lr: Some(1e30), ..Default::default() }, &device).unwrap_err().to_string();
    assert!(err.contains("loss became") && err.contains("last good checkpoint"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), before, "the last checkpoint must be untouched");
    Policy::load(&run.0.join("last"), &device).unwrap();
}

/// The f16 tensors of a checkpoint by name, as bit patterns with -0 read as +0 (the header's metadata map is
/// written in no fixed order, so whole files are not compared; a zero weight may come back as -0).
fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<u16>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let offsets: Vec<usize> = serde_json::from_value(info["data_offsets"].clone()).unwrap();
            let bits = data[offsets[0]..offsets[1]].chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
            (name, bits.map(|b| if b == 0x8000 { 0 } else { b }).collect())
        })
        .collect()
}

#[test]
fn init_starts_a_run_from_a_checkpoints_weights() {
    let _serial = serial();
    let (first, second) = (Scratch::new("init-from"), Scratch::new("init-to"));
    let device = Device::flex();
    train(config(PolicyKind::Dp, 1), &first.0, &device).unwrap();
    // With a zero learning rate the weights never move, so the new run's checkpoint (EMA of constant weights) holds
    // exactly the weights it started from; a fresh initialisation would not.
    let mut c = config(PolicyKind::Dp, 1);
    c.init = Some(first.0.join("last"));
    c.lr = 0.0;
    train(c, &second.0, &device).unwrap();
    let (a, b) = (tensors(&first.0.join("last/model.safetensors")), tensors(&second.0.join("last/model.safetensors")));
    assert!(a.len() > 100, "{} tensors", a.len());
    assert!(a == b, "the run did not start from --init's weights");
    // Another policy's checkpoint is refused before training, naming both.
    let mut c = config(PolicyKind::GlueS, 1);
    c.init = Some(first.0.join("last"));
    let err = format!("{:#}", train(c, &second.0.join("mismatch"), &device).unwrap_err());
    assert!(err.contains("--init") && err.contains("dp") && err.contains("glue-s"), "{err}");
}

#[test]
fn glue_without_keypoint_tracks_is_refused() {
    let _serial = serial();
    let dir = Scratch::new("no-keypoints");
    std::fs::create_dir_all(&dir.0).unwrap();
    let episode = read_episode(root().join(EPISODE)).unwrap();
    let mut writer = EpisodeWriter::create(&dir.0, episode.info.clone()).unwrap();
    for mut tick in episode.ticks.into_iter().take(5) {
        tick.keypoints = None;
        tick.oracle_tracks = None;
        writer.push(tick).unwrap();
    }
    writer.finish(true).unwrap();
    let mut c = config(PolicyKind::Glue, 1);
    c.data = vec![dir.0.clone()];
    let err = format!("{:#}", train(c, &dir.0.join("run"), &Device::flex()).unwrap_err());
    assert!(err.contains("keypoint tracks") && err.contains("glue annotate"), "{err}");
}

#[test]
fn missing_or_mismatched_checkpoints_are_clear_errors() {
    let device = Device::flex();
    let err = |dir: &Path| format!("{:#}", Policy::load(dir, &device).err().expect("must fail"));
    let scratch = Scratch::new("bad-checkpoint");
    assert!(err(&scratch.0).contains("checkpoint folder missing"));
    // A copy of the shipped checkpoint whose policy.json names another policy: the weights do not fit.
    std::fs::create_dir_all(&scratch.0).unwrap();
    let shipped = root().join("checkpoints/push-button-glue-small");
    for name in ["model.safetensors", "normalizer.json"] {
        std::fs::copy(shipped.join(name), scratch.0.join(name)).unwrap();
    }
    let config = serde_json::to_string(&PolicyConfig::new(PolicyKind::Dp, ModelSize::Small)).unwrap();
    std::fs::write(scratch.0.join("policy.json"), config).unwrap();
    let e = err(&scratch.0);
    assert!(e.contains("does not fit the policy in policy.json") && e.contains("cond_encoder.weight"), "{e}");
    std::fs::remove_file(scratch.0.join("model.safetensors")).unwrap();
    assert!(err(&scratch.0).contains("checkpoint weights missing"));
    std::fs::write(scratch.0.join("normalizer.json"), "{\"state\": {\"min\": [0], \"max\": [1]}}").unwrap();
    assert!(err(&scratch.0).contains("normalizer"));
}

/// The privileged-state diagnostic (`--policy state`): trained on recordings with the `object_poses` column, the
/// checkpoint takes its object count from them (stack-block: 2, so 7 + 2 x 9 state values), loads and acts without
/// an image, and the same robot state with the blocks elsewhere gives other actions (the poses reach the policy).
/// A pose list of the wrong length is refused at inference, and recordings without the column at training, by name.
#[test]
fn the_privileged_state_policy_reads_the_object_poses() {
    let _serial = serial();
    let data = Scratch::new("state-data");
    let spec = EpisodeSpec { task: TaskKind::StackBlock, seed: 0, condition: Condition::IN_DOMAIN };
    glue::collect::record_expert(&SimConfig::default(), spec, None, 0, &data.0).unwrap();
    let run = Scratch::new("state");
    let mut c = config(PolicyKind::State, 1);
    c.data = vec![data.0.clone()];
    train(c, &run.0, &Device::flex()).unwrap();
    let policy = Policy::load(&run.0.join("last"), &Device::flex()).unwrap();
    assert_eq!((policy.config.n_objects, policy.normalizer.state.dim(), policy.config.step_dim()), (2, 25, 25));

    let episode = read_episode(&list_episodes(&data.0).unwrap()[0]).unwrap();
    let states: Vec<[f32; 15]> = episode.ticks[..2].iter().map(|t| t.robot_state.to_array()).collect();
    let act = |poses: &[Vec<[f32; 7]>]| {
        let history: Vec<Frame<'_>> = (0..2)
            .map(|i| Frame { image: &[], width: 0, height: 0, state: &states[i], keypoints: &[], key_features: None, object_poses: &poses[i] })
            .collect();
        policy.act(&history, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
    };
    let recorded: Vec<Vec<[f32; 7]>> = episode.ticks[..2].iter().map(|t| t.object_poses.clone().unwrap()).collect();
    let moved: Vec<Vec<[f32; 7]>> = recorded.iter().map(|p| p.iter().map(|&[x, y, z, qx, qy, qz, qw]| [x + 0.1, y - 0.1, z, qx, qy, qz, qw]).collect()).collect();
    let (here, there) = (act(&recorded).unwrap(), act(&moved).unwrap());
    assert!(here.iter().flatten().all(|v| v.is_finite()), "{here:?}");
    assert_ne!(here, there, "the object poses do not reach the policy");
    let one: Vec<Vec<[f32; 7]>> = recorded.iter().map(|p| p[..1].to_vec()).collect();
    let err = format!("{:#}", act(&one).unwrap_err());
    assert!(err.contains("object poses: expected [2, 7]") && err.contains("got [1, 7]"), "{err}");

    let old = Scratch::new("state-old");
    let err = format!("{:#}", train(config(PolicyKind::State, 1), &old.0, &Device::flex()).unwrap_err());
    assert!(err.contains("needs the object_poses column") && err.contains(EPISODE), "{err}");
}

/// The keypoint-coordinate diagnostic (`--policy keypoints`): trained on the recording's tracks (this one carries
/// the simulator's oracle tracks, 16 points), the checkpoint takes its keypoint count from them (7 + 16 x 3 state
/// values), loads and acts without an image,
/// and the same robot state with the keypoints elsewhere gives other actions (the coordinates reach the policy). A
/// keypoint list of the wrong length, or a non-finite coordinate, is refused at inference by name.
#[test]
fn the_keypoint_coordinate_policy_reads_the_tracks() {
    let _serial = serial();
    let run = Scratch::new("keypoints");
    train(config(PolicyKind::Keypoints, 1), &run.0, &Device::flex()).unwrap();
    let policy = Policy::load(&run.0.join("last"), &Device::flex()).unwrap();
    assert_eq!((policy.config.n_keypoints, policy.normalizer.state.dim(), policy.config.step_dim()), (16, 55, 55));

    let episode = read_episode(&root().join(EPISODE)).unwrap();
    let states: Vec<[f32; 15]> = episode.ticks[..2].iter().map(|t| t.robot_state.to_array()).collect();
    let act = |keypoints: &[Vec<[f32; 3]>]| {
        let history: Vec<Frame<'_>> = (0..2)
            .map(|i| Frame { image: &[], width: 0, height: 0, state: &states[i], keypoints: &keypoints[i], key_features: None, object_poses: &[] })
            .collect();
        policy.act(&history, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
    };
    let tracked: Vec<Vec<[f32; 3]>> = episode.ticks[..2].iter().map(|t| t.oracle_tracks.clone().unwrap().points).collect();
    let moved: Vec<Vec<[f32; 3]>> = tracked.iter().map(|k| k.iter().map(|&[x, y, v]| [x + 30.0, y - 30.0, v]).collect()).collect();
    let (here, there) = (act(&tracked).unwrap(), act(&moved).unwrap());
    assert!(here.iter().flatten().all(|v| v.is_finite()), "{here:?}");
    assert_ne!(here, there, "the keypoint coordinates do not reach the policy");
    let fewer: Vec<Vec<[f32; 3]>> = tracked.iter().map(|k| k[..15].to_vec()).collect();
    let err = format!("{:#}", act(&fewer).unwrap_err());
    assert!(err.contains("keypoints: expected [16, 3]") && err.contains("got [15, 3]"), "{err}");
    let mut nan = tracked.clone();
    nan[1][3][0] = f32::NAN;
    let err = format!("{:#}", act(&nan).unwrap_err());
    assert!(err.contains("keypoints are not finite"), "{err}");
}

/// `glue eval --object-pose-error` perturbs what the privileged-state policy is told, so it is refused for a policy
/// that reads no object poses, with the reason.
#[test]
fn object_pose_error_is_refused_for_image_policies() {
    let out = Scratch::new("pose-error");
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_glue"))
        .args(["eval", "--checkpoint", "checkpoints/push-button-glue-small", "--task", "push-button", "--episodes", "1", "--object-pose-error", "0.01", "--out"])
        .arg(&out.0)
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && err.contains("--object-pose-error applies to the privileged-state policy") && err.contains("glue reads no object poses"), "{err}");
}

/// `glue eval --key-patches zeroed|first-frame` is an intervention on GLUE's key patches and `--key-positions` one
/// on the keypoints a policy reads: a GLUE-S checkpoint without `--keypoint-coords`, which has neither, is refused
/// by name before any episode runs.
#[test]
fn keypoint_interventions_are_refused_without_keypoints() {
    let _serial = serial();
    let run = Scratch::new("key-patches-glue-s");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glue")).args(cli_args(PolicyKind::GlueS, 1, &run.0)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let no_patches = "--key-patches: the glue-s policy has no key patches";
    let refusals = [
        (["--key-patches", "zeroed"], no_patches),
        (["--key-patches", "first-frame"], no_patches),
        (["--key-positions", "swapped"], "--key-positions: the glue-s policy reads no keypoints"),
    ];
    for (option, message) in refusals {
        let result = std::process::Command::new(env!("CARGO_BIN_EXE_glue"))
            .args(["eval", "--checkpoint"])
            .arg(run.0.join("last"))
            .args(["--task", "stack-block", "--episodes", "1"])
            .args(option)
            .arg("--out")
            .arg(run.0.join("eval"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success() && err.contains(message), "{option:?}: {err}");
        assert!(!run.0.join("eval/eval.json").exists(), "{option:?}: nothing is evaluated");
    }
}
