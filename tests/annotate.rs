//! `glue annotate` on a copy of a shipped recording: every tick gains the tracker's keypoints, the first frame's
//! keypoints lie on the task objects, and everything else in the file is unchanged. `glue eval --keypoint-seed`
//! extracts and tracks the keypoints as `glue annotate --seed` does; `glue eval --force-visible` overrides the flags,
//! `glue eval --unlit-encoder` shows one encoder the frame without the lighting variant's lights, and
//! `glue eval --key-patches zeroed|first-frame` changes GLUE's key patches and nothing else.

use std::path::PathBuf;

use burn::tensor::Device;
use glue::annotate::annotate_episode;
use glue::recording::read_episode;
use glue::vit::GridEncoder;

/// The K-means seed reaches the evaluation's keypoint extraction: an episode `glue eval --keypoint-seed 1
/// --record` ran holds, on every tick, the keypoints `glue annotate --seed 1` computes from its frames, and seed 0
/// places them elsewhere on the same first frame; eval.json names the seed.
#[test]
fn eval_extracts_keypoints_with_the_given_kmeans_seed() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("glue-eval-kmeans-seed-{}", std::process::id()));
    let args = ["eval", "--checkpoint", "checkpoints/push-button-glue-small", "--task", "push-button", "--episodes", "1", "--keypoint-seed", "1", "--record", "--out"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glue")).args(args).arg(&dir).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(report["keypoint_seed"], 1);
    let recorded = std::fs::read_dir(dir.join("episodes")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "arrow")).unwrap();
    let keypoints = |path: &std::path::Path| read_episode(path).unwrap().ticks.into_iter().map(|t| t.keypoints.unwrap().points).collect::<Vec<_>>();
    let evaluated = keypoints(&recorded);
    let device = Device::flex();
    let encoder = GridEncoder::load(&root.join("checkpoints/local-vit-small"), 2, &device).unwrap();
    let copy = dir.join("copy.arrow");
    for seed in [1, 0] {
        std::fs::copy(&recorded, &copy).unwrap();
        annotate_episode(&copy, &encoder, 15, seed, &device).unwrap();
        let annotated = keypoints(&copy);
        if seed == 1 {
            assert_eq!(annotated, evaluated, "glue annotate --seed 1 reproduces the evaluation's keypoints");
        } else {
            assert_ne!(annotated[0], evaluated[0], "K-means seed 0 places the first frame's keypoints elsewhere");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn annotate_fills_the_keypoints_column_and_keeps_the_rest() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let source = root.join("recordings/stack-block-none-seed001000-ep0000.arrow");
    let dir = std::env::temp_dir().join(format!("glue-annotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(source.file_name().unwrap());
    std::fs::copy(&source, &copy).unwrap();
    let device = Device::flex();
    let encoder = GridEncoder::load(&root.join("checkpoints/local-vit-small"), 2, &device).unwrap();
    let before = read_episode(&source).unwrap();
    assert!(before.ticks.iter().all(|t| t.keypoints.is_none()), "the shipped recording has no tracker keypoints");
    let ticks = annotate_episode(&copy, &encoder, 15, 0, &device).unwrap();
    let after = read_episode(&copy).unwrap();
    assert_eq!(ticks, before.ticks.len());
    assert_eq!((after.info.clone(), after.success), (before.info.clone(), before.success));
    let objects: Vec<u8> = after.info.objects.iter().map(|o| o.instance).collect();
    for (a, b) in after.ticks.iter().zip(&before.ticks) {
        assert_eq!((&a.image, &a.action, &a.oracle_tracks), (&b.image, &b.action, &b.oracle_tracks));
        assert_eq!(a.keypoints.as_ref().unwrap().points.len(), 15, "frame {}", a.frame);
    }
    let first = &after.ticks[0];
    let seg = first.segmentation.as_ref().unwrap();
    for p in &first.keypoints.as_ref().unwrap().points {
        assert_eq!(p[2], 1.0, "every keypoint is visible on the first frame");
        let id = seg[p[1] as usize * after.info.width as usize + p[0] as usize];
        assert!(objects.contains(&id), "keypoint {p:?} is not on a task object (instance {id})");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `glue eval` on one push-button episode of held-out seed 1000 under `variant` (strength 0.5) with
/// `--record` and `extra`; returns eval.json and the recorded episode's ticks (the output folder is removed).
fn eval_one_recorded(tag: &str, variant: &str, extra: &[&str]) -> (serde_json::Value, Vec<glue::recording::Tick>) {
    let condition = ["--variant", variant, "--strength", "0.5"];
    eval_one_recorded_on("push-button", tag, &[&condition, extra].concat())
}

/// Runs `glue eval` with the shipped `task` checkpoint on one in-domain episode of held-out seed 1000 with
/// `--record` and `extra`; returns eval.json and the recorded episode's ticks (the output folder is removed).
fn eval_one_recorded_on(task: &str, tag: &str, extra: &[&str]) -> (serde_json::Value, Vec<glue::recording::Tick>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("glue-eval-{tag}-{}", std::process::id()));
    let checkpoint = format!("checkpoints/{task}-glue-small");
    let args = ["eval", "--checkpoint", &checkpoint, "--task", task, "--episodes", "1", "--seed-start", "1000", "--record"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glue")).args(args).args(extra).arg("--out").arg(&dir).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    let recorded = std::fs::read_dir(dir.join("episodes")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "arrow")).unwrap();
    let ticks = read_episode(&recorded).unwrap().ticks;
    std::fs::remove_dir_all(&dir).unwrap();
    (report, ticks)
}

/// `glue eval --key-patches swapped` and `--key-positions swapped` on one place-fruit episode (the shipped
/// checkpoint): trading the fruit's and the plate's key patches, or their keypoint positions, makes the policy act
/// differently from `live` on the same scene from its first chunk; the recordings keep the tracker's keypoints;
/// eval.json names the intervention and the object the gripper first closed over.
#[test]
fn eval_swapped_key_patches_and_positions_trade_the_objects() {
    let run = |tag: &str, extra: &[&str]| {
        let (report, ticks) = eval_one_recorded_on("place-fruit", &format!("swapped-{tag}"), extra);
        let actions: Vec<[u32; 8]> = ticks.iter().map(|t| t.action.to_array().map(f32::to_bits)).collect();
        (report, ticks[0].keypoints.clone().unwrap().points, actions)
    };
    let (live_report, tracked, live) = run("live", &[]);
    let (patches_report, patches_tracked, patches) = run("patches", &["--key-patches", "swapped"]);
    let (positions_report, positions_tracked, positions) = run("positions", &["--key-positions", "swapped"]);
    assert_eq!(patches_report["key_patches"], "swapped");
    assert_eq!(positions_report["key_positions"], "swapped");
    assert!(live_report.get("key_positions").is_none(), "eval.json names the option only when set");
    assert_eq!(patches_tracked, tracked, "the recording keeps the tracker's keypoints and flags");
    assert_eq!(positions_tracked, tracked, "the recording keeps the tracker's keypoints and flags");
    assert_ne!(patches[0], live[0], "trading the objects' key patches changed nothing the policy did");
    assert_ne!(positions[0], live[0], "trading the objects' keypoint positions changed nothing the policy did");
    for r in [&live_report, &patches_report, &positions_report] {
        let first = &r["per_episode"][0]["first_close"];
        assert!(first.is_null() || first == "fruit" || first == "plate", "first_close names a task object: {first}");
    }
}

/// The error of a push-button `glue eval` that must be refused before it runs (`extra` holds the bad option).
fn eval_refused(extra: &[&str]) -> String {
    let args = ["eval", "--checkpoint", "checkpoints/push-button-glue-small", "--task", "push-button", "--episodes", "1", "--out", "/tmp/never"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glue")).args(args).args(extra).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(!out.status.success(), "glue eval {extra:?} ran");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `glue eval --force-visible` (the intervention test of sec. III-C's zeroing): the policy sees the chosen keypoints
/// as visible. On an occlusion scene where the tracker flags keypoints hidden, the recorded keypoints (what the
/// policy saw) carry flags of 0 without the option and only 1 with `all`; eval.json names the intervention; a
/// query index beyond the task's queries is refused.
#[test]
fn eval_force_visible_sets_the_visibility_flags() {
    let run = |name: &str, extra: &[&str]| {
        let (report, ticks) = eval_one_recorded(&format!("force-visible-{name}"), "occlusion", extra);
        let flags: Vec<f32> = ticks.into_iter().flat_map(|t| t.keypoints.unwrap().points).map(|p| p[2]).collect();
        (report["force_visible"].as_str().map(String::from), flags)
    };
    let (named, flags) = run("tracker", &[]);
    assert_eq!(named, None, "eval.json names the option only when set");
    assert!(flags.contains(&0.0), "the tracker flags some keypoint hidden on this scene (else the test shows nothing)");
    let (named, flags) = run("forced", &["--force-visible", "all"]);
    assert_eq!(named.as_deref(), Some("all"));
    assert!(flags.iter().all(|&v| v == 1.0), "every keypoint the policy saw is visible");
    let err = eval_refused(&["--force-visible", "1"]);
    assert!(err.contains("--force-visible 1") && err.contains("red button"), "{err}");
}

/// `glue eval --unlit-encoder` (the lighting intervention): the named encoder sees each tick without the lighting
/// variant's lights. On one lit push-button episode the recordings keep the lit frames whichever encoder is
/// shown the unlit ones, the policy's actions change with either (so the unlit frame reaches that encoder), and
/// eval.json names the intervention; without `--variant lighting` it is refused.
#[test]
fn eval_unlit_encoder_shows_one_encoder_the_unlit_frame() {
    let run = |name: &str, extra: &[&str]| {
        let (report, ticks) = eval_one_recorded(&format!("unlit-{name}"), "lighting", extra);
        let actions: Vec<u32> = ticks.iter().flat_map(|t| t.action.to_array()).map(f32::to_bits).collect();
        (report["unlit_encoder"].as_str().map(String::from), ticks[0].image.clone(), actions)
    };
    let (named, lit_image, lit_actions) = run("lit", &[]);
    assert_eq!(named, None, "eval.json names the option only when set");
    for encoder in ["global", "local"] {
        let (named, image, actions) = run(encoder, &["--unlit-encoder", encoder]);
        assert_eq!(named.as_deref(), Some(encoder));
        assert_eq!(image, lit_image, "{encoder}: the recording keeps the lit frame");
        assert_ne!(actions, lit_actions, "{encoder}: the unlit frame changed nothing the policy did");
    }
    let err = eval_refused(&["--unlit-encoder", "global"]);
    assert!(err.contains("--variant lighting"), "{err}");
}

/// `glue eval --key-patches` (the key-patch interventions): on one push-button episode the tracker's keypoints of
/// the first tick (flags included; the ticks before the actions part) are the same whatever the key patches hold;
/// `first-frame` acts as `live` until the first chunk has run out (its first frame's patches are the live ones)
/// and differently after; `zeroed` differs from both; eval.json names the choice; the graph refuses it.
#[test]
fn eval_key_patches_change_the_actions_not_the_tracks() {
    let run = |patches: &str| {
        let (report, ticks) = eval_one_recorded(&format!("key-patches-{patches}"), "clutter", &["--key-patches", patches]);
        let actions: Vec<[u32; 8]> = ticks.iter().map(|t| t.action.to_array().map(f32::to_bits)).collect();
        (report["key_patches"].as_str().map(String::from), ticks[0].keypoints.clone().unwrap().points, actions)
    };
    let (named, tracked, live) = run("live");
    assert_eq!(named, None, "eval.json names the option only when set");
    assert!(tracked.iter().any(|p| p[2] == 1.0), "some keypoint is visible, so its key patch is an input");
    let (named, zeroed_tracked, zeroed) = run("zeroed");
    assert_eq!(named.as_deref(), Some("zeroed"));
    assert_eq!(zeroed_tracked, tracked, "the recording keeps the tracker's keypoints and flags");
    assert_ne!(zeroed[0], live[0], "zeroing the key patches changed nothing the policy did");
    let (named, first_tracked, first_frame) = run("first-frame");
    assert_eq!(named.as_deref(), Some("first-frame"));
    assert_eq!(first_tracked, tracked);
    assert_eq!(first_frame[..8], live[..8], "the first chunk is planned from the first frame: the same actions");
    assert_ne!(first_frame, live, "holding the first frame's key patches changed nothing the policy did");
    let err = eval_refused(&["--key-patches", "zeroed", "--dataflow"]);
    assert!(err.contains("--key-patches is in-process only"), "{err}");
    let err = eval_refused(&["--key-patches", "swapped"]);
    assert!(err.contains("--key-patches swapped") && err.contains("two or more text queries"), "{err}");
    let err = eval_refused(&["--key-positions", "swapped"]);
    assert!(err.contains("--key-positions swapped trades the keypoint positions") && err.contains("two or more text queries"), "{err}");
    let err = eval_refused(&["--key-positions", "swapped", "--dataflow"]);
    assert!(err.contains("--key-positions is in-process only"), "{err}");
}
