//! One-time keypoint extraction (paper sec. III-B) on the shipped recordings' first frames with the shipped
//! small local ViT: the oracle grounder resolves each task's text queries and refuses unknown ones, keypoints lie
//! inside their masks, are shared among the objects as `allocate` says, spread over and cover each object,
//! repeat per seed, and `glue keypoints` writes the JSON and the overlay from either text queries or mask PNGs.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use glue::keypoints::{Grounder, Keypoint, KeypointsFile, Mask, OracleGrounder, allocate, extract_keypoints};
use glue::recording::{Episode, read_episode};
use glue::vit::GridEncoder;

const GLUE: &str = env!("CARGO_BIN_EXE_glue");
const WEIGHTS: &str = "checkpoints/local-vit-small";
/// Task, recording, and the names of its task objects.
const RECORDINGS: [(&str, &str, [&str; 2]); 3] = [
    ("push-button", "recordings/push-button-none-seed001000-ep0000.arrow", ["button base", "red button"]),
    ("stack-block", "recordings/stack-block-none-seed001000-ep0000.arrow", ["white block", "blue block"]),
    ("place-fruit", "recordings/place-fruit-none-seed001000-ep0000.arrow", ["fruit", "plate"]),
];
const K: usize = 15;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn first_frame(recording: &str) -> (Episode, RgbImage) {
    let episode = read_episode(root().join(recording)).unwrap();
    let tick = &episode.ticks[0];
    let image = RgbImage::from_raw(episode.info.width, episode.info.height, tick.image.clone()).unwrap();
    (episode, image)
}

/// The first frame and the masks of the task's own text queries.
fn task_masks(recording: &str) -> (Episode, RgbImage, Vec<Mask>) {
    let (episode, image) = first_frame(recording);
    let masks = OracleGrounder::from_episode(&episode).unwrap().ground(&image, &episode.info.text_query).unwrap();
    (episode, image, masks)
}

fn encoder() -> GridEncoder {
    GridEncoder::load(&root().join(WEIGHTS), 2, &Device::flex()).unwrap()
}

fn distance(a: &Keypoint, b: &Keypoint) -> f32 {
    (a.x - b.x).hypot(a.y - b.y)
}

#[test]
fn grounder_resolves_the_shipped_recordings_and_refuses_unknown_queries() {
    for (task, recording, names) in RECORDINGS {
        let (episode, image) = first_frame(recording);
        assert_eq!(episode.info.task, task);
        let grounder = OracleGrounder::from_episode(&episode).unwrap();
        let seg = episode.ticks[0].segmentation.as_ref().unwrap();
        let queries: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let masks = grounder.ground(&image, &queries).unwrap();
        for (name, mask) in names.iter().zip(&masks) {
            let object = episode.info.objects.iter().find(|o| o.name == *name).unwrap();
            let expected = Mask::from_instance(image.width(), image.height(), seg, object.instance).unwrap();
            assert_eq!(*mask, expected, "{task}: `{name}`");
            assert!(mask.area() >= 30, "{task}: `{name}` covers only {} px", mask.area());
        }
        // The task's own queries resolve too.
        assert_eq!(grounder.ground(&image, &episode.info.text_query).unwrap().len(), episode.info.text_query.len());
        let err = grounder.ground(&image, &["green cup".to_string()]).unwrap_err().to_string();
        assert!(err.contains("no task object matches `green cup`"), "{err}");
        for name in names {
            assert!(err.contains(&format!("`{name}`")), "{task}: the error lists `{name}`: {err}");
        }
    }
}

#[test]
fn keypoints_lie_inside_are_shared_by_area_and_cover_each_object() {
    let encoder = encoder();
    for (task, recording, _) in RECORDINGS {
        let (_, image, masks) = task_masks(recording);
        let start = std::time::Instant::now();
        let keypoints = extract_keypoints(&encoder, &image, &masks, K, 0, &Device::flex()).unwrap();
        eprintln!("{task}: {} keypoints in {:.0} ms", keypoints.len(), start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(keypoints.len(), K);
        let areas: Vec<usize> = masks.iter().map(Mask::area).collect();
        let alloc = allocate(&areas, K, 2).unwrap();
        assert_eq!(alloc.iter().sum::<usize>(), K);
        for (object, mask) in masks.iter().enumerate() {
            let mine: Vec<&Keypoint> = keypoints.iter().filter(|k| k.object == object).collect();
            assert_eq!(mine.len(), alloc[object], "{task}: object {object}");
            assert!(mine.len() >= 2);
            for k in &mine {
                let (x, y) = k.pixel();
                assert!(mask.contains(x, y), "{task}: {k:?} lies outside its mask");
            }
            // Spread: no two keypoints of an object crowd together.
            let min_gap = mine
                .iter()
                .enumerate()
                .flat_map(|(i, a)| mine[i + 1..].iter().map(move |b| distance(a, b)))
                .fold(f32::INFINITY, f32::min);
            // Coverage: the mean distance from a mask pixel to its nearest keypoint, against the mask's radius
            // (that of a disc of equal area) and against keypoints drawn at random from the mask.
            let pixels: Vec<Keypoint> = mask.pixels().map(|(x, y)| Keypoint::at_pixel(x, y, object)).collect();
            let coverage = |points: &[&Keypoint]| {
                pixels.iter().map(|p| points.iter().map(|k| distance(p, k)).fold(f32::INFINITY, f32::min)).sum::<f32>()
                    / pixels.len() as f32
            };
            let nearest = coverage(&mine);
            let radius = (mask.area() as f32 / std::f32::consts::PI).sqrt();
            let mut rng = ChaCha8Rng::seed_from_u64(object as u64);
            let draws = 64;
            let random = (0..draws)
                .map(|_| {
                    let mut idx: Vec<usize> = (0..pixels.len()).collect();
                    for i in 0..mine.len() {
                        let j = rng.random_range(i..idx.len());
                        idx.swap(i, j);
                    }
                    coverage(&idx[..mine.len()].iter().map(|&i| &pixels[i]).collect::<Vec<_>>())
                })
                .sum::<f32>()
                / draws as f32;
            // An even tiling gives each keypoint about area / n pixels, i.e. cells of side sqrt(area / n).
            let cell = (mask.area() as f32 / mine.len() as f32).sqrt();
            eprintln!(
                "{task}: object {object}: {} keypoints, area {} px, radius {radius:.1} px, mean distance to the nearest keypoint {nearest:.1} px (random keypoints {random:.1} px), min gap {min_gap:.1} px (cell {cell:.1} px)",
                mine.len(),
                mask.area()
            );
            assert!(
                min_gap >= 2.0 && min_gap > 0.5 * cell,
                "{task}: object {object}'s keypoints are {min_gap:.1} px apart"
            );
            assert!(
                nearest < 0.6 * radius,
                "{task}: object {object}: coverage {nearest:.1} px vs radius {radius:.1} px"
            );
            assert!(
                nearest < 0.85 * random,
                "{task}: object {object}: coverage {nearest:.1} px vs random {random:.1} px"
            );
        }
    }
}

#[test]
fn extraction_is_deterministic_per_seed() {
    let encoder = encoder();
    let device = Device::flex();
    let (_, image, masks) = task_masks(RECORDINGS[2].1);
    let a = extract_keypoints(&encoder, &image, &masks, K, 7, &device).unwrap();
    let b = extract_keypoints(&encoder, &image, &masks, K, 7, &device).unwrap();
    assert_eq!(a, b);
    let others: Vec<Vec<Keypoint>> =
        (8..11).map(|seed| extract_keypoints(&encoder, &image, &masks, K, seed, &device).unwrap()).collect();
    assert!(others.iter().any(|o| *o != a), "different seeds may pick different keypoints");
    // Too few keypoints for the objects is an error, before encoding.
    let err = extract_keypoints(&encoder, &image, &masks, 1, 0, &device).unwrap_err().to_string();
    assert!(err.contains("fewer than the 2 objects"), "{err}");
}

/// A scratch folder unique to one test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("glue-keypoints-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn glue(args: &[&str]) -> std::process::Output {
    Command::new(GLUE).args(args).current_dir(root()).output().unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_writes_keypoints_from_text_queries_and_from_mask_pngs() {
    let scratch = Scratch::new("cli");
    let recording = RECORDINGS[1].1;
    let out = scratch.path("text.json");
    let run =
        glue(&["keypoints", "--episode", recording, "--text", "white block", "blue block", "--out", path_str(&out)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let file = KeypointsFile::load(&out).unwrap();
    assert_eq!(file.keypoints.len(), K);
    assert_eq!(file.labels, ["white block", "blue block"]);
    let overlay = image::open(out.with_extension("png")).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (224, 224));

    // The same masks as PNGs, the image as a PNG: the same keypoints.
    let (_, image, masks) = task_masks(recording);
    let image_png = scratch.path("frame.png");
    image.save(&image_png).unwrap();
    let mut args = vec!["keypoints".to_string(), "--image".into(), path_str(&image_png).into(), "--masks".into()];
    for (i, mask) in masks.iter().enumerate() {
        let p = scratch.path(&format!("mask{i}.png"));
        mask.to_image().save(&p).unwrap();
        args.push(path_str(&p).into());
    }
    let out2 = scratch.path("masks.json");
    let overlay2 = scratch.path("overlay.png");
    args.extend(["--out".into(), path_str(&out2).into(), "--overlay".into(), path_str(&overlay2).into()]);
    args.extend(["--scale".into(), "2".into()]);
    let run = Command::new(GLUE).args(&args).current_dir(root()).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let file2 = KeypointsFile::load(&out2).unwrap();
    assert_eq!((file2.keypoints, file2.objects), (file.keypoints, file.objects));
    assert_eq!(image::open(&overlay2).unwrap().width(), 448);

    // Refusals say what is wrong.
    let run = glue(&["keypoints", "--episode", recording, "--text", "green cup", "--out", path_str(&out)]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("no task object matches `green cup`") && err.contains("`blue block`"), "{err}");
    let run = glue(&["keypoints", "--image", path_str(&image_png), "--text", "blue block", "--out", path_str(&out)]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--text needs --episode"));
}
