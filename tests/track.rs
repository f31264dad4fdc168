//! Point tracking (`glue::track`, `glue track`): accuracy on synthetic sequences with exact ground truth
//! (translation, rotation, zoom), occlusion flags and re-acquisition under a sweeping occluder, determinism,
//! the frame-0 convention, small checks against the simulator's oracle tracks (clean, and plain surfaces under
//! moving lights), and the CLI with its errors.
//!
//! Run with `--nocapture` to see the measured figures.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use glue::sim::ood::Variant;
use glue::sim::task::TaskKind;
use glue::track::synthetic::{Motion, Occluder, Texture, render_gray};
use glue::track::{KltConfig, KltTracker, evaluate_on_sim, track_sequence};
use image::GrayImage;

const GLUE: &str = env!("CARGO_BIN_EXE_glue");
const W: u32 = 224;
const H: u32 = 224;

/// A synthetic sequence: the texture under one motion per frame (frame 0 is the identity, so plane points are
/// frame-0 pixels), with an optional occluder per frame.
struct Sequence {
    motions: Vec<Motion>,
    occluders: Vec<Option<Occluder>>,
}

impl Sequence {
    fn new(frames: usize, motion: impl Fn(f32) -> Motion) -> Self {
        Sequence { motions: (0..frames).map(|t| motion(t as f32)).collect(), occluders: vec![None; frames] }
    }

    fn frames(&self, texture: &Texture) -> Vec<GrayImage> {
        self.motions.iter().zip(&self.occluders).map(|(m, o)| render_gray(texture, W, H, m, o.as_ref())).collect()
    }

    /// Ground truth `[x, y, visible]` of plane point `q` at frame `t`.
    fn truth(&self, q: [f32; 2], t: usize) -> ([f32; 2], bool) {
        let p = self.motions[t].forward(q, W, H);
        let inside = p[0] >= 0.0 && p[1] >= 0.0 && p[0] < W as f32 && p[1] < H as f32;
        (p, inside && !self.occluders[t].is_some_and(|o| o.covers(p)))
    }
}

/// Scores of tracks against the ground truth (frames after the first).
#[derive(Debug, Default)]
struct Scores {
    /// Errors where truth and tracker both say visible.
    errors: Vec<f32>,
    true_visible: usize,
    kept_visible: usize,
    /// Occluded = positive.
    occluded: usize,
    flagged: usize,
    flagged_correctly: usize,
}

impl Scores {
    fn median(&self) -> f32 {
        let mut e = self.errors.clone();
        e.sort_by(f32::total_cmp);
        e[e.len() / 2]
    }
    fn recall(&self) -> f32 {
        self.flagged_correctly as f32 / self.occluded as f32
    }
    fn precision(&self) -> f32 {
        self.flagged_correctly as f32 / self.flagged as f32
    }
    fn kept(&self) -> f32 {
        self.kept_visible as f32 / self.true_visible as f32
    }
}

fn score(seq: &Sequence, points: &[[f32; 2]], tracks: &[Vec<[f32; 3]>], frames: std::ops::Range<usize>) -> Scores {
    let mut s = Scores::default();
    for t in frames {
        for (q, got) in points.iter().zip(&tracks[t]) {
            let (p, visible) = seq.truth(*q, t);
            let said_visible = got[2] == 1.0;
            if visible {
                s.true_visible += 1;
                if said_visible {
                    s.kept_visible += 1;
                    s.errors.push(((p[0] - got[0]).powi(2) + (p[1] - got[1]).powi(2)).sqrt());
                }
            } else {
                s.occluded += 1;
            }
            if !said_visible {
                s.flagged += 1;
                s.flagged_correctly += usize::from(!visible);
            }
        }
    }
    s
}

/// A 6x6 grid of query points in the central part of frame 0.
fn grid(lo: f32, hi: f32, n: usize) -> Vec<[f32; 2]> {
    let step = (hi - lo) / (n - 1) as f32;
    (0..n * n).map(|i| [lo + step * (i % n) as f32, lo + step * (i / n) as f32]).collect()
}

#[test]
fn translation_rotation_and_zoom_are_tracked_within_2px() {
    let texture = Texture::new(11);
    let points = grid(62.0, 162.0, 6);
    let cases: [(&str, Sequence); 4] = [
        ("translation", Sequence::new(20, |t| Motion { shift: [2.5 * t, -1.5 * t], angle_deg: 0.0, scale: 1.0 })),
        ("rotation", Sequence::new(20, |t| Motion { shift: [0.0, 0.0], angle_deg: 1.5 * t, scale: 1.0 })),
        ("zoom", Sequence::new(20, |t| Motion { shift: [0.0, 0.0], angle_deg: 0.0, scale: 1.0 + 0.02 * t })),
        ("combined", Sequence::new(20, |t| Motion { shift: [1.5 * t, t], angle_deg: -t, scale: 1.0 - 0.01 * t })),
    ];
    for (name, seq) in &cases {
        let tracks = track_sequence(&seq.frames(&texture), &points, &KltConfig::default()).unwrap();
        let s = score(seq, &points, &tracks, 1..20);
        println!(
            "{name:<12} median error {:.3} px, max {:.3} px, kept visible {:.3} ({} point-frames)",
            s.median(),
            s.errors.iter().cloned().fold(0.0, f32::max),
            s.kept(),
            s.true_visible
        );
        assert!(s.median() < 2.0, "{name}: median error {} px", s.median());
        assert!(s.kept() > 0.9, "{name}: only {} of the visible point-frames kept visible", s.kept());
    }
}

/// Translation and a slow rotation over 30 frames; a flat grey 50x80 rectangle sweeps left to right across the
/// centre during frames 6..=18 and is gone afterwards.
fn occlusion_sequence() -> Sequence {
    let mut seq = Sequence::new(30, |t| Motion { shift: [t, 0.5 * t], angle_deg: 0.4 * t, scale: 1.0 });
    for t in 6..=18 {
        let x0 = 20.0 + 10.0 * (t - 6) as f32;
        seq.occluders[t] = Some(Occluder { x0, y0: 70.0, x1: x0 + 50.0, y1: 150.0, grey: 128 });
    }
    seq
}

#[test]
fn occluded_points_are_flagged_and_reacquired_when_the_occluder_leaves() {
    let texture = Texture::new(5);
    let seq = occlusion_sequence();
    let points = grid(50.0, 170.0, 6);
    let tracks = track_sequence(&seq.frames(&texture), &points, &KltConfig::default()).unwrap();
    assert_eq!(tracks.len(), 30);
    assert!(tracks.iter().all(|f| f.len() == points.len()));
    let all = score(&seq, &points, &tracks, 1..30);
    let during = score(&seq, &points, &tracks, 6..19);
    let after = score(&seq, &points, &tracks, 21..30);
    println!(
        "occlusion: {} occluded point-frames; recall {:.3}, precision {:.3}; median error on visible {:.3} px; \
         kept visible {:.3} during, {:.3} after (median error after {:.3} px)",
        all.occluded,
        all.recall(),
        all.precision(),
        all.median(),
        during.kept(),
        after.kept(),
        after.median()
    );
    assert!(all.occluded >= 20, "the occluder must hide enough point-frames ({})", all.occluded);
    assert!(all.recall() > 0.7, "occlusion recall {}", all.recall());
    assert!(all.median() < 2.0, "median error {}", all.median());
    // Re-acquisition: once the occluder has left, the previously hidden points are visible again, accurately.
    let hidden: Vec<usize> = (0..points.len()).filter(|&i| (6..19).any(|t| !seq.truth(points[i], t).1)).collect();
    assert!(hidden.len() >= 4, "{} points hidden", hidden.len());
    let last = &tracks[29];
    let back = hidden
        .iter()
        .filter(|&&i| {
            let (p, _) = seq.truth(points[i], 29);
            last[i][2] == 1.0 && ((p[0] - last[i][0]).powi(2) + (p[1] - last[i][1]).powi(2)).sqrt() < 2.0
        })
        .count();
    println!("re-acquired {back} of the {} hidden points by the last frame", hidden.len());
    assert!(back as f32 >= 0.8 * hidden.len() as f32, "only {back} of {} hidden points re-acquired", hidden.len());
    assert!(after.kept() > 0.8 && after.median() < 2.0, "after the occluder: kept {} median {}", after.kept(), after.median());
}

#[test]
fn tracking_is_deterministic() {
    let texture = Texture::new(5);
    let seq = occlusion_sequence();
    let frames = seq.frames(&texture);
    let points = grid(50.0, 170.0, 5);
    let bits = |t: Vec<Vec<[f32; 3]>>| t.into_iter().flatten().flat_map(|p| p.map(f32::to_bits)).collect::<Vec<_>>();
    let a = bits(track_sequence(&frames, &points, &KltConfig::default()).unwrap());
    let b = bits(track_sequence(&frames, &points, &KltConfig::default()).unwrap());
    assert_eq!(a, b);
}

#[test]
fn frame_zero_is_the_queries_and_indices_never_change() {
    let texture = Texture::new(2);
    let seq = Sequence::new(4, |t| Motion { shift: [3.0 * t, 0.0], angle_deg: 0.0, scale: 1.0 });
    let frames = seq.frames(&texture);
    // One point off the right edge after a few frames: it stays in the output, flagged not visible.
    let points = vec![[100.0, 100.0], [219.0, 120.0], [0.0, 0.0]];
    let tracks = track_sequence(&frames, &points, &KltConfig::default()).unwrap();
    assert_eq!(tracks[0], points.iter().map(|p| [p[0], p[1], 1.0]).collect::<Vec<_>>());
    assert!(tracks.iter().all(|f| f.len() == 3 && f.iter().all(|p| p[0].is_finite() && (p[2] == 0.0 || p[2] == 1.0))));
    assert_eq!(tracks[3][1][2], 0.0, "the point that left the image is not visible");
    assert!((tracks[3][0][0] - 109.0).abs() < 0.5 && tracks[3][0][2] == 1.0, "{:?}", tracks[3][0]);
    let mut tracker = KltTracker::new(KltConfig::default(), &frames[0], &points).unwrap();
    assert_eq!(tracker.track(&frames[1]), tracks[1]);
}

#[test]
fn sim_episode_tracks_follow_the_oracle() {
    let rows = evaluate_on_sim(&KltConfig::default(), &[TaskKind::PushButton], &[Variant::None], 1, 0, 0.5).unwrap();
    print!("{}", glue::track::sim_eval_table(&rows));
    let r = &rows[0];
    assert_eq!(r.episodes, 1);
    assert!(r.points > 0 && r.point_frames > 0);
    assert!(r.median_px < 3.0, "median error {} px", r.median_px);
    assert!(r.kept_visible > 0.5, "kept visible {}", r.kept_visible);
}

/// Place-fruit's plate is a plain surface: its points' templates are faint (below `min_texture`), and the lighting
/// variant's moving coloured spots give it texture. Judged by the NCC, not failed outright as a flat template
/// seeing texture once was, the points stay visible as often as in clean light (over these three episodes 0.873
/// lit against 0.854 clean; the outright rule kept 0.805 lit), while the tracker still flags the hidden ones.
#[test]
fn plain_surfaces_keep_their_points_under_moving_lights() {
    let rows = evaluate_on_sim(&KltConfig::default(), &[TaskKind::PlaceFruit], &[Variant::None, Variant::Lighting], 3, 1000, 0.5).unwrap();
    print!("{}", glue::track::sim_eval_table(&rows));
    let (clean, lit) = (&rows[0], &rows[1]);
    assert!(
        lit.kept_visible >= clean.kept_visible - 0.02,
        "under lighting the tracker keeps {} of the visible point-frames, clean {}",
        lit.kept_visible,
        clean.kept_visible
    );
    assert!(lit.occlusion_recall > 0.9, "lighting: occlusion recall {}", lit.occlusion_recall);
    assert!(lit.median_px < 1.0, "lighting: median error {} px", lit.median_px);
}

/// A directory unique to one test, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("glue-track-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn glue_track(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(GLUE).arg("track").args(args).current_dir(cwd).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn cli_writes_tracks_per_frame_and_refuses_bad_inputs() {
    let tmp = Scratch::new("cli");
    let dir = &tmp.0;
    let texture = Texture::new(9);
    let seq = Sequence::new(6, |t| Motion { shift: [2.0 * t, 1.0 * t], angle_deg: 0.0, scale: 1.0 });
    fs::create_dir_all(dir.join("frames")).unwrap();
    for (t, f) in seq.frames(&texture).iter().enumerate() {
        f.save(dir.join(format!("frames/{t:04}.png"))).unwrap();
    }
    fs::write(dir.join("frames/notes.txt"), "not a frame").unwrap();
    fs::write(dir.join("points.json"), "[[80, 90], [120.5, 100], [150, 60]]").unwrap();
    let (ok, stdout, stderr) = glue_track(&["--frames", "frames", "--points", "points.json", "--out", "tracks.json"], dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tracked 3 points through 6 frames"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(dir.join("tracks.json")).unwrap()).unwrap();
    let tracks = v["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 6, "outer list: frames");
    for frame in tracks {
        let frame = frame.as_array().unwrap();
        assert_eq!(frame.len(), 3, "per frame: one row per point");
        assert!(frame.iter().all(|p| p.as_array().unwrap().len() == 3));
    }
    assert_eq!(tracks[0][1], serde_json::json!([120.5, 100.0, 1.0]));
    let last = tracks[5][0].as_array().unwrap();
    assert!((last[0].as_f64().unwrap() - 90.0).abs() < 0.5 && (last[1].as_f64().unwrap() - 95.0).abs() < 0.5, "{last:?}");

    let fails = |args: &[&str], needle: &str| {
        let (ok, _, stderr) = glue_track(args, dir);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: expected `{needle}` in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let base = |frames: &'static str, points: &'static str| vec!["--frames", frames, "--points", points, "--out", "o.json"];
    fails(&base("missing", "points.json"), "no such directory");
    fs::create_dir_all(dir.join("empty")).unwrap();
    fails(&base("empty", "points.json"), "no .png files");
    fs::write(dir.join("bad.json"), "{\"points\": [[1, 2]]}").unwrap();
    fails(&base("frames", "bad.json"), "[N, 2]");
    fs::write(dir.join("bad.json"), "[[1, 2], [3, 4, 5]]").unwrap();
    fails(&base("frames", "bad.json"), "points[1]");
    fs::write(dir.join("outside.json"), "[[10, 10], [300, 20]]").unwrap();
    fails(&base("frames", "outside.json"), "points[1]");
    fails(&base("frames", "nope.json"), "--points");
    GrayImage::new(100, 100).save(dir.join("frames/0009.png")).unwrap();
    fails(&base("frames", "points.json"), "different sizes");
    fails(&["--frames", "frames"], "--points");
}
