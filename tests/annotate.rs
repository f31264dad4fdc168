//! `glue annotate` on a copy of a shipped recording: every tick gains the tracker's keypoints, the first frame's
//! keypoints lie on the task objects, and everything else in the file is unchanged.

use std::path::PathBuf;

use burn::tensor::Device;
use glue::annotate::annotate_episode;
use glue::recording::read_episode;
use glue::vit::GridEncoder;

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
