//! End-to-end tests of the `glue` binary's recording workflow: `glue record` writes one readable Arrow IPC file
//! per episode, a `kill -9` keeps every finished episode and leaves the cut one as a `.partial` that `glue
//! inspect` reports as incomplete, damaged or foreign files are clear errors (never panics), pyarrow reads the
//! files as they are, `glue render` draws one GIF frame per tick, and bad command lines are refused.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::FileWriter;
use image::AnimationDecoder;
use image::codecs::gif::GifDecoder;

use glue::recording::{Episode, list_episodes, read_episode};

const GLUE: &str = env!("CARGO_BIN_EXE_glue");
const WIDTH: usize = 224;
const HEIGHT: usize = 224;
const COLUMNS: [&str; 9] =
    ["frame", "timestamp_ns", "image", "segmentation", "robot_state", "action", "keypoints", "oracle_tracks", "object_poses"];

/// A directory unique to one test (process id + test name), removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("glue-recording-cli-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `glue ARGS` to completion.
fn glue<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Output {
    Command::new(GLUE).args(args).stdin(Stdio::null()).output().expect("the glue binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `glue inspect FILES`.
fn inspect<P: AsRef<Path>>(files: &[P]) -> Output {
    let mut args = vec![OsStr::new("inspect").to_owned()];
    args.extend(files.iter().map(|f| f.as_ref().as_os_str().to_owned()));
    glue(args)
}

/// The names of everything in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The finished episodes in `dir` by a plain directory listing: visible `*.arrow` files, sorted.
fn arrow_files(dir: &Path) -> Vec<PathBuf> {
    names(dir).into_iter().filter(|n| n.ends_with(".arrow") && !n.starts_with('.')).map(|n| dir.join(n)).collect()
}

/// The hidden `.<stem>.arrow.partial` files in `dir`.
fn partial_files(dir: &Path) -> Vec<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n.ends_with(".arrow.partial"))
        .map(|n| dir.join(n))
        .collect()
}

/// Records `glue record --task TASK --episodes 1 --seed-start SEED` into `dir`; returns the one file written.
fn record_one(dir: &Path, task: &str, seed: u64) -> PathBuf {
    let out = glue(
        ["record", "--task", task, "--episodes", "1", "--seed-start", &seed.to_string(), "--out"]
            .map(OsStr::new)
            .into_iter()
            .chain([dir.as_os_str()]),
    );
    assert!(out.status.success(), "glue record failed: {}\n{}", out.status, stderr(&out));
    let files = arrow_files(dir);
    assert_eq!(files.len(), 1, "{:?}", names(dir));
    files.into_iter().next().unwrap()
}

/// The `N` of "... N intact ticks ..." in an error message.
fn intact_ticks(message: &str) -> Option<usize> {
    let words: Vec<&str> = message.split_whitespace().collect();
    let at = words
        .windows(2)
        .position(|w| w[0].eq_ignore_ascii_case("intact") && w[1].to_lowercase().starts_with("tick"))?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// Checks everything a recorded episode promises: header, outcome, and every tick's payload sizes.
fn check_episode(episode: &Episode, task: &str, seed: u64, index: u64) {
    let info = &episode.info;
    assert_eq!((info.task.as_str(), info.seed, info.episode), (task, seed, index));
    assert_eq!((info.variant.as_str(), info.strength), ("none", 0.0));
    assert_eq!((info.width as usize, info.height as usize), (WIDTH, HEIGHT));
    assert!(!info.objects.is_empty() && !info.text_query.is_empty(), "{info:?}");
    assert!(!episode.ticks.is_empty(), "episode {index} has no ticks");
    assert!(episode.success, "the expert should succeed on {task} seed {seed}");
    for (i, tick) in episode.ticks.iter().enumerate() {
        assert_eq!(tick.frame as usize, i, "frames are the control tick index");
        assert_eq!(tick.image.len(), WIDTH * HEIGHT * 3, "tick {i}: rgb8 image");
        let seg = tick.segmentation.as_ref().unwrap_or_else(|| panic!("tick {i}: segmentation missing"));
        assert_eq!(seg.len(), WIDTH * HEIGHT, "tick {i}: one instance id per pixel");
        let tracks = tick.oracle_tracks.as_ref().unwrap_or_else(|| panic!("tick {i}: oracle_tracks missing"));
        assert!(!tracks.points.is_empty(), "tick {i}: oracle_tracks is empty");
    }
    let times: Vec<u64> = episode.ticks.iter().map(|t| t.timestamp_ns).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "timestamps increase: {times:?}");
}

#[test]
fn record_writes_one_readable_file_per_episode() {
    let tmp = Scratch::new("record");
    let dir = tmp.path().join("episodes"); // does not exist yet: `glue record` creates it
    let out = glue(
        ["record", "--task", "push-button", "--episodes", "2", "--seed-start", "5", "--out"]
            .map(OsStr::new)
            .into_iter()
            .chain([dir.as_os_str()]),
    );
    assert!(out.status.success(), "glue record failed: {}\n{}", out.status, stderr(&out));
    assert!(stdout(&out).contains("2/2 succeeded"), "{}", stdout(&out));

    // Exactly the two finished files: no `.partial`, no temporary file left behind.
    let expected = ["push-button-none-seed000005-ep0000.arrow", "push-button-none-seed000006-ep0001.arrow"];
    assert_eq!(names(&dir), expected, "directory after recording");
    let files = arrow_files(&dir);
    assert_eq!(list_episodes(&dir).unwrap(), files);
    for (index, path) in files.iter().enumerate() {
        let episode = read_episode(path).unwrap_or_else(|e| panic!("{e}"));
        check_episode(&episode, "push-button", 5 + index as u64, index as u64);
        assert!(
            stdout(&out).contains(&format!("{} ({} ticks, success: true, re-grasps: 0)", path.display(), episode.ticks.len())),
            "{}",
            stdout(&out)
        );
    }
}

#[cfg(unix)]
#[test]
fn kill_9_mid_recording_keeps_finished_episodes_and_marks_the_cut_one() {
    use std::os::unix::process::ExitStatusExt;

    const EPISODES: usize = 50;
    let tmp = Scratch::new("kill9");
    let dir = tmp.path();
    let mut child = Command::new(GLUE)
        .args(["record", "--task", "stack-block", "--episodes", &EPISODES.to_string(), "--out"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the glue binary starts");

    // Wait for two finished episodes and the next one under way, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("glue record ended ({status}) before it could be killed; directory: {:?}", names(dir));
        }
        let done = arrow_files(dir).len();
        if done >= 2 && partial_files(dir).iter().any(|p| p.ends_with(partial_name(done))) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no 2 finished episodes within 120 s; directory: {:?}", names(dir));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no `finish`
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "glue record should have died of SIGKILL, not ended by itself: {status}");

    let finished = arrow_files(dir);
    assert!((2..EPISODES).contains(&finished.len()), "{:?}", names(dir));
    assert_eq!(list_episodes(dir).unwrap(), finished, "list_episodes lists exactly the finished files");
    let mut ticks = Vec::new();
    for (index, path) in finished.iter().enumerate() {
        // Episodes are finished in order, and none is touched by the kill.
        let name = path.file_name().unwrap().to_string_lossy();
        assert_eq!(name, format!("stack-block-none-seed{index:06}-ep{index:04}.arrow"));
        let episode = read_episode(path).unwrap_or_else(|e| panic!("finished episode unreadable after kill: {e}"));
        assert_eq!((episode.info.task.as_str(), episode.info.seed), ("stack-block", index as u64));
        assert!(!episode.ticks.is_empty());
        ticks.push(episode.ticks.len());
        let out = inspect(&[path]);
        assert!(out.status.success(), "glue inspect {name}: {}\n{}", out.status, stderr(&out));
        assert!(stdout(&out).contains(&format!("ticks: {} ", episode.ticks.len())), "{}", stdout(&out));
    }

    // Besides the finished files, the kill leaves at most the `.partial` of the episode under way and, if it
    // struck inside `finish`, that episode's temporary file.
    let partials = partial_files(dir);
    let leftovers: Vec<String> = names(dir)
        .into_iter()
        .filter(|n| !n.ends_with(".arrow") && !n.ends_with(".arrow.partial") && !n.ends_with(".arrow.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "unexpected files after kill: {leftovers:?}");
    assert!(partials.len() <= 1, "one episode at a time is recorded: {:?}", names(dir));
    let Some(partial) = partials.first() else {
        eprintln!("killed between two episodes: no .partial this time");
        return;
    };
    let done = finished.len();
    // Normally the cut episode is the next one. `finish` renames the complete file into place and syncs the
    // directory before it deletes the partial, so a kill in that window leaves the last finished episode's
    // partial beside it: stale, never listed, and holding every tick of that (complete) episode.
    let stale = partial.ends_with(partial_name(done - 1));
    assert!(stale || partial.ends_with(partial_name(done)), "a .partial of an unexpected episode: {:?}", names(dir));
    assert!(!list_episodes(dir).unwrap().contains(partial));
    assert!(read_episode(partial).is_err(), "a .partial must not read as an episode");
    let out = inspect(&[partial]);
    let err = stderr(&out);
    assert!(!out.status.success(), "glue inspect accepted a .partial: {}", stdout(&out));
    assert!(!err.contains("panicked"), "{err}");
    let lower = err.to_lowercase();
    assert!(lower.contains("incomplete") && lower.contains("intact"), "{err}");
    let intact = intact_ticks(&err).unwrap_or_else(|| panic!("no intact tick count in: {err}"));
    if stale {
        assert_eq!(intact, ticks[done - 1], "the stale partial holds the whole finished episode: {err}");
        eprintln!("killed inside finish of episode {}: stale partial with {intact} ticks", done - 1);
    } else {
        eprintln!("cut episode {done}: {intact} intact ticks");
    }
}

/// The hidden file `glue record --task stack-block` (seed start 0) streams episode `index` to.
fn partial_name(index: usize) -> String {
    format!(".stack-block-none-seed{index:06}-ep{index:04}.arrow.partial")
}

/// A tiny deterministic xorshift byte stream (no `rand` in tests needed).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn write_foreign_arrow(path: &Path) {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2, 3]))]).unwrap();
    let mut writer = FileWriter::try_new(File::create(path).unwrap(), &schema).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

#[test]
fn inspect_rejects_damaged_files_with_a_clear_message() {
    let tmp = Scratch::new("damaged");
    let dir = tmp.path();
    let good = record_one(&dir.join("good"), "push-button", 1);
    let ticks = read_episode(&good).unwrap().ticks.len();

    let out = inspect(&[&good]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("success: true"), "{report}");
    assert!(report.contains("task: push-button  seed: 1  variant: none"), "{report}");
    assert!(report.contains(&format!("ticks: {ticks} ")), "{report}");

    let bytes = fs::read(&good).unwrap();
    let half = dir.join("half.arrow");
    fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let random = dir.join("random.arrow");
    let junk = noise(4096);
    assert!(junk[0] != b'A' && junk[0] != 0xff, "the noise must not start like Arrow IPC");
    fs::write(&random, &junk).unwrap();
    let empty = dir.join("empty.arrow");
    fs::write(&empty, b"").unwrap();
    let foreign = dir.join("foreign.arrow");
    write_foreign_arrow(&foreign);

    // What src/recording says for each (ErrorKind's Display), loosely.
    let cases: [(&Path, &[&str]); 4] = [
        (&half, &["incomplete episode", "truncated", "0 intact ticks"]), // finished files hold one batch
        (&random, &["not an arrow ipc file", "0 ticks readable"]),
        (&empty, &["not an arrow ipc file", "0 ticks readable"]),
        (&foreign, &["not a glue episode", "glue.format", "x: int32"]),
    ];
    for (path, words) in cases {
        let out = inspect(&[path]);
        let err = stderr(&out);
        // Exit code 1 is the CLI's "file rejected"; a panic would be 101.
        assert_eq!(out.status.code(), Some(1), "glue inspect {}: {}\n{err}", path.display(), out.status);
        assert!(!err.contains("panicked"), "{err}");
        assert!(stdout(&out).is_empty(), "nothing reported for a bad file: {}", stdout(&out));
        assert!(err.starts_with(&path.display().to_string()), "the message names the file: {err}");
        let lower = err.to_lowercase();
        for word in words {
            assert!(lower.contains(word), "{}: expected {word:?} in: {err}", path.display());
        }
        assert!(read_episode(path).is_err());
    }
    assert_eq!(intact_ticks(&stderr(&inspect(&[&half]))), Some(0));

    // Several files: the good one is still reported, the bad one named, and the exit status is failure.
    let out = inspect(&[&good, &half]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("success: true"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("half.arrow") && !err.contains(&good.display().to_string()), "{err}");
}

/// The project venv's Python (with pyarrow), which the README's setup creates.
fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: pyarrow compatibility cannot be checked. Run the README setup in the repository root: \
         `python3 -m venv .venv && .venv/bin/pip install -q dora-rs-cli==1.1.0 pyarrow`",
        python.display()
    );
    python
}

#[test]
fn pyarrow_reads_recordings() {
    let python = venv_python();
    let tmp = Scratch::new("pyarrow");
    let path = record_one(tmp.path(), "stack-block", 2);
    let episode = read_episode(&path).unwrap();

    let script = r#"
import json, struct, sys
import pyarrow.ipc as ipc
table = ipc.open_file(sys.argv[1]).read_all()
meta = table.schema.metadata
print(json.dumps({
    "rows": table.num_rows,
    "columns": table.column_names,
    "task": meta[b"task"].decode(),
    "seed": int(meta[b"seed"]),
    "success": meta[b"success"].decode(),
    "frames": table.column("frame").to_pylist(),
    "image_bytes": [len(b) for b in table.column("image").to_pylist()],
    # float32 bit patterns, so the comparison is exact (no decimal round trip)
    "last_robot_state_bits": [struct.unpack("<I", struct.pack("<f", x))[0] for x in table.column("robot_state")[-1].as_py()],
    "last_object_poses_bits": [struct.unpack("<I", struct.pack("<f", x))[0] for x in table.column("object_poses")[-1].as_py()],
}))
"#;
    let out = Command::new(&python).arg("-c").arg(script).arg(&path).output().expect("the venv python runs");
    assert!(out.status.success(), "pyarrow failed to read {}:\n{}", path.display(), stderr(&out));
    let got: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));

    let n = episode.ticks.len();
    assert_eq!(got["rows"], n);
    assert_eq!(got["columns"], serde_json::json!(COLUMNS));
    assert_eq!(got["task"], episode.info.task.as_str());
    assert_eq!(got["seed"], episode.info.seed);
    assert_eq!(got["success"], episode.success.to_string());
    assert_eq!(got["frames"], serde_json::json!(episode.ticks.iter().map(|t| t.frame).collect::<Vec<_>>()));
    assert_eq!(got["image_bytes"], serde_json::json!(vec![WIDTH * HEIGHT * 3; n]));
    let bits: Vec<u32> = serde_json::from_value(got["last_robot_state_bits"].clone()).unwrap();
    let want: Vec<u32> = episode.ticks[n - 1].robot_state.to_array().iter().map(|x| x.to_bits()).collect();
    assert_eq!(bits, want, "robot_state float32 values are the same bits in Python and Rust");
    let bits: Vec<u32> = serde_json::from_value(got["last_object_poses_bits"].clone()).unwrap();
    let poses = episode.ticks[n - 1].object_poses.as_ref().expect("glue record writes object poses");
    let want: Vec<u32> = poses.iter().flatten().map(|x| x.to_bits()).collect();
    assert_eq!((bits.len(), bits), (14, want), "object_poses: two stack-block objects x 7, the same bits in Python and Rust");
}

/// `scripts/grasp_attempts.py` on two recordings of stack-block seed 5: the clean expert closes once, around the
/// block; with `--noise 0.02` its first grasp closes on nothing (the seed `tests/sim.rs` re-grasps on), it reopens
/// where it missed and grasps on a later try, never carrying an empty gripper.
#[test]
fn grasp_attempts_counts_a_miss_and_the_regrasp() {
    let tmp = Scratch::new("grasp-attempts");
    let mut rows = Vec::new();
    for (name, noise) in [("clean", "0"), ("noisy", "0.02")] {
        let dir = tmp.path().join(name);
        let args = ["record", "--task", "stack-block", "--seed-start", "5", "--width", "32", "--height", "32", "--noise", noise, "--out"];
        let out = glue(args.map(OsStr::new).into_iter().chain([dir.as_os_str()]));
        assert!(out.status.success(), "glue record --noise {noise}: {}", stderr(&out));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/grasp_attempts.py");
        let out = Command::new(venv_python()).arg(&script).args(arrow_files(&dir)).output().expect("the venv python runs");
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let row: Vec<String> = text.lines().nth(1).unwrap_or_else(|| panic!("no episode row: {text}")).split(" | ").skip(1).map(str::to_string).collect();
        rows.push(row);
    }
    assert_eq!(rows[0], ["1", "0", "0", "0", "True"], "clean expert: closings, missed, reopened, ran on, success");
    let count = |i: usize| rows[1][i].parse::<u32>().unwrap();
    assert!(count(0) >= 2 && count(1) >= 1 && count(2) == count(1) && count(3) == 0, "noisy expert: {:?}", rows[1]);
    assert_eq!(rows[1][4], "True", "the noisy expert's episode succeeds after re-grasping");
}

/// `scripts/first_frame_visibility.py` on push-button occlusion seeds 1008 and 1009 (held-out evaluation seeds, the
/// default image size): the occluder leaves part of the red button in view on 1008 and hides all of it, on every
/// tick, on 1009. The script pools an eval.json's successes by that split and names an eval.json it cannot read.
#[test]
fn first_frame_visibility_splits_seeds_by_the_hidden_button() {
    let tmp = Scratch::new("visibility");
    let dir = tmp.path().join("occlusion");
    let args = ["record", "--task", "push-button", "--variant", "occlusion", "--seed-start", "1008", "--episodes", "2", "--out"];
    let out = glue(args.map(OsStr::new).into_iter().chain([dir.as_os_str()]));
    assert!(out.status.success(), "glue record: {}", stderr(&out));
    let eval = tmp.path().join("eval.json");
    let per_episode = r#"{"per_episode": [{"seed": 1008, "success": true}, {"seed": 1009, "success": false}, {"seed": 7, "success": true}]}"#;
    fs::write(&eval, per_episode).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/first_frame_visibility.py");
    let run = |eval: &Path| Command::new(venv_python()).arg(&script).args(arrow_files(&dir)).arg("--eval").arg(eval).output().expect("the venv python runs");

    let out = run(&eval);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = |seed: &str| text.lines().find(|l| l.starts_with(seed)).unwrap_or_else(|| panic!("no row for {seed}: {text}")).to_string();
    let pixels: Vec<u32> = row("1008 |").split(['|', '/']).skip(1).map(|n| n.trim().parse().unwrap()).collect();
    assert!(pixels[0] > 0 && pixels[1] >= pixels[0], "seed 1008 shows the button on its first frame: {pixels:?}");
    assert_eq!(row("1009 |"), "1009 | 0 / 0", "seed 1009 hides it on every tick");
    assert!(text.contains("1 of 2 first frames hide a queried object; in 1 it stays hidden on every tick"), "{text}");
    assert!(text.contains("hidden: 0/1 episodes") && text.contains("visible: 1/1 episodes"), "seed 7 is not among the recordings: {text}");

    let out = run(&tmp.path().join("missing.json"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.json: not a readable eval.json"), "{}", stderr(&out));

    // --unoccluded: the same seeds without the occluder (the same layout) give each object's share in view.
    let clear = tmp.path().join("none");
    let args = ["record", "--task", "push-button", "--seed-start", "1008", "--episodes", "2", "--out"];
    let out = glue(args.map(OsStr::new).into_iter().chain([clear.as_os_str()]));
    assert!(out.status.success(), "glue record: {}", stderr(&out));
    let out = Command::new(venv_python()).arg(&script).args(arrow_files(&dir)).arg("--unoccluded").args(arrow_files(&clear)).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text.lines().position(|l| l.starts_with("object | seeds")).unwrap_or_else(|| panic!("no share table: {text}"));
    let fields: Vec<&str> = text.lines().nth(header + 1).unwrap().split(" | ").collect();
    let share: f64 = fields[2].parse().unwrap();
    assert_eq!((fields[1], fields[4]), ("2", "1"), "two seeds, the button hidden entirely on 1009: {text}");
    assert!(share > 0.0 && share < 0.5, "1008 shows part of the button, 1009 none: median share {share}");
    let out = Command::new(venv_python()).arg(&script).args(arrow_files(&dir)).arg("--unoccluded").arg(record_one(&tmp.path().join("other"), "push-button", 3)).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("--unoccluded: no seed in common"), "{}", stderr(&out));
}

/// `scripts/keypoint_quality.py` on place-fruit seed 1000, annotated, with and without the lighting variant: the
/// visible tracks stay on their objects, the fruit's keypoints are all visible before the arm reaches it, an
/// episode compared with itself has its keypoints 0 px from the base's and in the same order, and the script names
/// unannotated episodes and base episodes of other seeds.
#[test]
fn keypoint_quality_compares_the_tracks_with_the_base_episodes() {
    let tmp = Scratch::new("keypoint-quality");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = Vec::new();
    for variant in ["none", "lighting"] {
        let dir = tmp.path().join(variant);
        let args = ["record", "--task", "place-fruit", "--variant", variant, "--seed-start", "1000", "--out"];
        let out = glue(args.map(OsStr::new).into_iter().chain([dir.as_os_str()]));
        assert!(out.status.success(), "glue record: {}", stderr(&out));
        dirs.push(dir);
    }
    let unannotated = record_one(&tmp.path().join("plain"), "place-fruit", 1000);
    let out = Command::new(GLUE).arg("annotate").args(&dirs).current_dir(root).output().unwrap();
    assert!(out.status.success(), "glue annotate: {}", stderr(&out));
    let eval = tmp.path().join("eval.json");
    fs::write(&eval, r#"{"per_episode": [{"seed": 1000, "success": true}]}"#).unwrap();
    let script = root.join("scripts/keypoint_quality.py");
    let run = |episodes: &Path, base: &[PathBuf]| {
        let mut command = Command::new(venv_python());
        command.arg(&script).args(arrow_files(episodes)).arg("--base").args(base).arg("--eval").arg(&eval);
        command.output().expect("the venv python runs")
    };

    let out = run(&dirs[1], &arrow_files(&dirs[0]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // The last row starting with `prefix` (each condition's tracking row comes before its row of tenths).
    let fields = |prefix: &str| -> Vec<String> {
        let line = text.lines().filter(|l| l.starts_with(prefix)).last().unwrap_or_else(|| panic!("no `{prefix}` row: {text}"));
        line.split(" | ").map(str::to_string).collect()
    };
    for condition in ["variant", "base"] {
        for object in ["fruit", "plate"] {
            let row = fields(&format!("{condition} | {object} | 1 | "));
            let shares: Vec<f64> = row[3..].iter().map(|v| v.parse().unwrap()).collect();
            assert!(shares.iter().all(|v| (0.0..=1.0).contains(v)) && shares[1] <= shares[0], "{row:?}");
            assert!(shares[2] >= 0.9, "{condition}: the visible {object} tracks lie on the {object}: {row:?}");
        }
        let tenths: Vec<f64> = fields(&format!("{condition} | fruit | ")).last().unwrap().split(' ').map(|v| v.parse().unwrap()).collect();
        assert_eq!(tenths.len(), 10, "{text}");
        assert!(tenths[0] >= 0.9, "{condition}: the fruit is in view before the arm reaches it: {tenths:?}");
    }
    assert!(text.contains("eval.json successes: 1 episodes, mean visible share fruit") && text.contains("failures: 0 episodes, mean visible share -"), "{text}");

    let out = run(&dirs[0], &arrow_files(&dirs[0]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for object in ["fruit", "plate"] {
        assert!(text.contains(&format!("\n{object} | 1 | 0.0, 0.0 | 0.0 | 0.00\n")), "{object} against itself: {text}");
    }

    let out = run(&dirs[0], &[unannotated.clone()]);
    assert!(!out.status.success() && stderr(&out).contains("column keypoints; run glue annotate"), "{}", stderr(&out));
    let other = record_one(&tmp.path().join("other"), "place-fruit", 7);
    let out = Command::new(GLUE).arg("annotate").arg(&other).current_dir(root).output().unwrap();
    assert!(out.status.success(), "glue annotate: {}", stderr(&out));
    let out = run(&dirs[0], &[other]);
    assert!(!out.status.success() && stderr(&out).contains("--base: no seed in common"), "{}", stderr(&out));
}

/// Decodes every frame of a GIF.
fn gif_frames(path: &Path) -> Vec<image::RgbaImage> {
    let decoder = GifDecoder::new(BufReader::new(File::open(path).unwrap())).unwrap_or_else(|e| panic!("{e}"));
    let frames = decoder.into_frames().collect_frames().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    frames.into_iter().map(image::Frame::into_buffer).collect()
}

#[test]
fn render_writes_an_animated_gif() {
    let tmp = Scratch::new("render");
    let dir = tmp.path();
    let path = record_one(dir, "push-button", 3);
    let ticks = read_episode(&path).unwrap().ticks.len();

    let gif = dir.join("e.gif");
    let out = glue([
        OsStr::new("render"),
        path.as_os_str(),
        OsStr::new("--out"),
        gif.as_os_str(),
        OsStr::new("--oracle"),
        OsStr::new("--segmentation"),
    ]);
    assert!(out.status.success(), "glue render failed: {}\n{}", out.status, stderr(&out));
    assert!(stdout(&out).contains(&format!("({ticks} frames of {ticks} ticks)")), "{}", stdout(&out));
    let frames = gif_frames(&gif);
    assert_eq!(frames.len(), ticks, "one GIF frame per tick");
    let every = glue([OsStr::new("render"), path.as_os_str(), OsStr::new("--out"), gif.as_os_str(), OsStr::new("--every"), OsStr::new("2")]);
    assert!(every.status.success(), "glue render --every 2 failed: {}\n{}", every.status, stderr(&every));
    assert_eq!(gif_frames(&gif).len(), ticks.div_ceil(2), "--every 2 keeps ticks 0, 2, 4, ...");
    assert!(frames.iter().all(|f| f.dimensions() == (WIDTH as u32, HEIGHT as u32)));
    assert_ne!(frames[0], frames[ticks - 1], "the robot moves: first and last frame differ");

    // The overlays draw something: the same episode without them gives other pixels.
    let plain = dir.join("plain.gif");
    let out = glue([OsStr::new("render"), path.as_os_str(), OsStr::new("--out"), plain.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = gif_frames(&plain);
    assert_eq!(plain.len(), ticks);
    assert_ne!(plain[0], frames[0], "--oracle --segmentation change the picture");
}

#[test]
fn bad_cli_input_is_rejected() {
    let tmp = Scratch::new("badcli");
    let out_dir = tmp.path().join("never");
    let record = |extra: &[&str]| {
        let args = ["record"].iter().chain(extra).map(OsStr::new).chain([OsStr::new("--out"), out_dir.as_os_str()]);
        let out = glue(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "glue record {extra:?} was accepted: {}", stdout(&out));
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out_dir.exists(), "glue record {extra:?} created {} before failing", out_dir.display());
        err
    };

    let err = record(&["--task", "fold-towel", "--episodes", "1"]);
    assert!(err.contains("fold-towel"), "{err}");
    for task in ["push-button", "stack-block", "place-fruit"] {
        assert!(err.contains(task), "valid task {task} not listed: {err}");
    }

    let err = record(&["--task", "push-button", "--variant", "clutter", "--strength", "1.5"]);
    assert!(err.contains("strength") && err.contains("1.5"), "{err}");

    let err = record(&["--task", "push-button", "--variant", "fog"]);
    assert!(err.contains("fog") && err.contains("clutter") && err.contains("occlusion"), "{err}");

    for bad in ["0.5", "-0.01", "NaN"] {
        let err = record(&["--task", "stack-block", &format!("--noise={bad}")]);
        assert!(err.contains("--noise") && err.contains("[0, 0.1] m"), "--noise {bad}: {err}");
    }
    let err = record(&["--task", "stack-block", "--noise", "0.01", "--noise-correlation", "0"]);
    assert!(err.contains("--noise-correlation") && err.contains("positive"), "{err}");
}

/// `glue inspect FILES | head -1`: when the reader of stdout goes away, glue ends quietly by SIGPIPE, as other
/// command-line tools do, instead of panicking on the next print.
#[test]
fn a_closed_stdout_ends_glue_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let files: Vec<PathBuf> = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // 600 summaries, about 330 kB: more than a pipe buffers, so glue is still printing when the pipe closes.
    let many: Vec<&PathBuf> = files.iter().cycle().take(200 * files.len()).collect();
    let mut child = Command::new(GLUE).arg("inspect").args(&many).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // read a little, then close the pipe
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success() || out.status.signal() == Some(13), "{:?}: {stderr}", out.status);
}
