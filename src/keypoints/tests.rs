use std::collections::HashSet;

use image::Rgb;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::kmeans::{dist2, nearest};
use super::*;
use crate::msg::ObjectInfo;

fn objects() -> Vec<ObjectInfo> {
    vec![
        ObjectInfo { name: "button base".into(), instance: 3 },
        ObjectInfo { name: "red button".into(), instance: 4 },
        ObjectInfo { name: "white_block".into(), instance: 5 },
    ]
}

#[test]
fn box_grounder_masks_each_query_with_its_box_and_names_bad_input() {
    let g = BoxGrounder::parse("1,0,3,2; 0,1,1,3").unwrap();
    let image = RgbImage::new(4, 3);
    let masks = g.ground(&image, &["red block".into(), "plate".into()]).unwrap();
    let inside: Vec<Vec<(u32, u32)>> = masks.iter().map(|m| m.pixels().collect()).collect();
    assert_eq!(inside[0], vec![(1, 0), (2, 0), (1, 1), (2, 1)]);
    assert_eq!(inside[1], vec![(0, 1), (0, 2)]);
    let count = g.ground(&image, &["red block".into()]).unwrap_err().to_string();
    assert!(count.contains("1 text queries") && count.contains("2 boxes"), "{count}");
    let outside = BoxGrounder::parse("0,0,5,2").unwrap().ground(&image, &["x".into()]).unwrap_err().to_string();
    assert!(outside.contains("outside the 4x3 image"), "{outside}");
    for bad in ["1,2,3", "3,0,1,2", "a,0,1,2", ""] {
        let err = BoxGrounder::parse(bad).unwrap_err().to_string();
        assert!(err.contains("boxes:"), "{bad}: {err}");
    }
}

#[test]
fn grounder_matches_exact_names_then_words() {
    let g = OracleGrounder::new(objects(), 2, 1, vec![3, 4]).unwrap();
    assert_eq!(g.resolve("red button").unwrap().instance, 4);
    assert_eq!(g.resolve("  Red   Button ").unwrap().instance, 4);
    assert_eq!(g.resolve("base").unwrap().instance, 3);
    assert_eq!(g.resolve("white block").unwrap().instance, 5, "underscores read as spaces");
    assert_eq!(g.resolve("block").unwrap().instance, 5);
    let ambiguous = g.resolve("button").unwrap_err().to_string();
    assert!(ambiguous.contains("ambiguous") && ambiguous.contains("`red button`"), "{ambiguous}");
    let unknown = g.resolve("green cup").unwrap_err().to_string();
    assert!(unknown.contains("no task object matches `green cup`"), "{unknown}");
    assert!(unknown.contains("`button base` (instance 3), `red button` (instance 4)"), "{unknown}");
    assert!(g.resolve(" ").is_err());
}

#[test]
fn grounder_returns_instance_masks_and_empty_ones_for_unseen_objects() {
    let g = OracleGrounder::new(objects(), 3, 2, vec![0, 4, 4, 3, 3, 0]).unwrap();
    let img = RgbImage::new(3, 2);
    let masks = g.ground(&img, &["red button".into(), "button base".into()]).unwrap();
    assert_eq!(masks[0].pixels().collect::<Vec<_>>(), [(1, 0), (2, 0)]);
    assert_eq!(masks[1].pixels().collect::<Vec<_>>(), [(0, 1), (1, 1)]);
    assert_eq!(g.ground(&img, &["white block".into()]).unwrap()[0].area(), 0, "white block is out of view");
    assert!(
        g.ground(&RgbImage::new(2, 2), &["red button".into()]).unwrap_err().to_string().contains("image is 2x2")
    );
    assert!(OracleGrounder::new(objects(), 3, 3, vec![0; 8]).is_err());
}

#[test]
fn mask_png_round_trip() {
    let mask = Mask::from_fn(7, 5, |x, y| (x + y) % 3 == 0);
    let path = std::env::temp_dir().join(format!("glue-keypoints-mask-{}.png", std::process::id()));
    mask.to_image().save(&path).unwrap();
    let back = Mask::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(back, mask);
    assert_eq!(mask.area(), mask.pixels().count());
    assert!(!mask.contains(7, 0) && !mask.contains(0, 5));
    assert!(Mask::new(2, 2, vec![true; 3]).is_err());
    let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(2, 1, |x, _| Rgb([0, x as u8, 0])));
    assert_eq!(Mask::from_image(&rgb).pixels().collect::<Vec<_>>(), [(1, 0)]);
}

#[test]
fn allocation_sums_to_k_is_proportional_and_keeps_minimums() {
    let a = allocate(&[100, 300], 12, 2).unwrap();
    assert_eq!(a, [3, 9]);
    let a = allocate(&[10, 10_000], 15, 2).unwrap();
    assert_eq!(a, [2, 13], "a tiny object still gets two");
    let a = allocate(&[1, 5_000, 5_000], 15, 2).unwrap();
    assert_eq!(a.iter().sum::<usize>(), 15);
    assert_eq!(a[0], 1, "capped by its area");
    assert_eq!(allocate(&[50, 50, 50], 4, 2).unwrap().iter().sum::<usize>(), 4, "k < 2 N_obj: one each");
    for k in 3..40 {
        let a = allocate(&[40, 90, 700], k, 2).unwrap();
        assert_eq!(a.iter().sum::<usize>(), k);
        assert!(a.iter().all(|&n| n >= 1));
        assert!(a[0] <= a[1] && a[1] <= a[2], "{a:?}");
    }
    assert!(allocate(&[5, 5], 1, 2).unwrap_err().to_string().contains("fewer than the 2 objects"));
    assert!(allocate(&[5, 0], 4, 2).unwrap_err().to_string().contains("mask 1 is empty"));
    assert!(allocate(&[2, 2], 5, 2).is_err());
    assert!(allocate(&[], 5, 2).is_err());
}

/// Gaussian-ish blobs (sums of uniforms) around known centres.
fn blobs(centres: &[[f32; 3]], per: usize, spread: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut points = Vec::new();
    for c in centres {
        for _ in 0..per {
            for &v in c {
                let noise: f32 = (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() / 2.0;
                points.push(v + spread * noise);
            }
        }
    }
    points
}

#[test]
fn kmeans_recovers_well_separated_clusters() {
    let truth = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0], [10.0, 10.0, 10.0]];
    let points = blobs(&truth, 60, 0.5, 7);
    for seed in 0..10 {
        let result = kmeans(&points, 3, truth.len(), seed, 100);
        for (t, c) in truth.iter().enumerate() {
            let labels: HashSet<usize> = result.assignments[t * 60..(t + 1) * 60].iter().copied().collect();
            assert_eq!(labels.len(), 1, "seed {seed}: blob {t} split");
            let j = *labels.iter().next().unwrap();
            assert!(dist2(result.centre(j), c) < 0.1, "seed {seed}: centre {:?} vs {c:?}", result.centre(j));
        }
        let distinct: HashSet<usize> = result.assignments.iter().copied().collect();
        assert_eq!(distinct.len(), truth.len(), "seed {seed}: blobs merged");
    }
}

#[test]
fn kmeans_is_deterministic_and_survives_duplicates() {
    let points = blobs(&[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], 50, 1.0, 3);
    assert_eq!(kmeans(&points, 3, 6, 11, 50), kmeans(&points, 3, 6, 11, 50));
    assert_ne!(kmeans(&points, 3, 6, 11, 50).centres, kmeans(&points, 3, 6, 12, 50).centres);
    // Three distinct points, five clusters: no panic, every assignment valid and nearest.
    let dup = [0.0f32, 0.0, 1.0, 1.0, 0.0, 0.0, 5.0, 5.0, 1.0, 1.0, 5.0, 5.0];
    let result = kmeans(&dup, 2, 5, 0, 10);
    assert_eq!(result.k(), 5);
    for (i, &a) in result.assignments.iter().enumerate() {
        assert_eq!(a, nearest(&dup[i * 2..i * 2 + 2], &result.centres, 2).0);
    }
    assert_eq!(kmeans(&dup, 2, 1, 0, 10).centres.len(), 2);
}

/// A 4x4 grid (split 2, 2 patches per sub-image) over a 16x16 frame, one channel: value = 10·row + col.
fn ramp_grid() -> FeatureGrid {
    let data = (0..16).map(|i| (10 * (i / 4) + i % 4) as f32).collect();
    FeatureGrid::new(data, 4, 2, 1, 16, 16).unwrap()
}

#[test]
fn bilinear_upsampling_puts_features_at_patch_centres_within_each_sub_image() {
    let grid = ramp_grid();
    let at = |x, y| {
        let mut f = [0.0];
        grid.pixel_feature(x, y, &mut f);
        f[0]
    };
    // Patches are 4x4 pixels; patch (0, 0)'s centre is (2, 2), between pixels 1 and 2.
    assert_eq!(at(1, 1), 0.0, "within half a patch of the border: the edge patch");
    assert_eq!(at(0, 0), 0.0);
    // Pixel 2's centre (2.5) lies 1/8 of the way from patch centre 2 to 6.
    assert!((at(2, 1) - 0.125).abs() < 1e-6);
    assert!((at(3, 1) - 0.375).abs() < 1e-6);
    assert!((at(5, 1) - 0.875).abs() < 1e-6);
    assert_eq!(at(7, 1), 1.0, "right border of the left sub-image: clamped, no blend across the seam");
    assert_eq!(at(8, 1), 2.0, "first pixel of the right sub-image: its own edge patch");
    assert!((at(1, 3) - 3.75).abs() < 1e-6, "rows interpolate the same way");
    assert!((at(3, 3) - (0.375 + 3.75)).abs() < 1e-5, "bilinear = sum of the separable ramps");
    assert_eq!(at(15, 15), 33.0);
    assert!(FeatureGrid::new(vec![0.0; 15], 4, 2, 1, 16, 16).is_err());
    assert!(FeatureGrid::new(vec![0.0; 16], 4, 2, 1, 15, 16).is_err());
}

#[test]
fn selection_on_synthetic_features_is_inside_distinct_and_spread() {
    // Two channels varying smoothly over a 32x32 frame; two rectangular objects.
    let data: Vec<f32> = (0..8 * 8).flat_map(|i| [(i / 8) as f32, (i % 8) as f32]).collect();
    let features = FeatureGrid::new(data, 8, 2, 2, 32, 32).unwrap();
    let masks = [Mask::from_fn(32, 32, |x, y| x < 12 && y < 20), Mask::from_fn(32, 32, |x, y| x >= 16 && y >= 8)];
    let config = KeypointConfig { k: 10, ..KeypointConfig::default() };
    let kps = select_keypoints(&features, &masks, &config).unwrap();
    assert_eq!(kps.len(), 10);
    let alloc = allocate(&[masks[0].area(), masks[1].area()], 10, 2).unwrap();
    for (object, mask) in masks.iter().enumerate() {
        let mine: Vec<_> = kps.iter().filter(|k| k.object == object).collect();
        assert_eq!(mine.len(), alloc[object]);
        for k in &mine {
            let (x, y) = k.pixel();
            assert!(mask.contains(x, y), "{k:?} outside mask {object}");
            assert_eq!((k.x.fract(), k.y.fract()), (0.5, 0.5));
        }
        for (i, a) in mine.iter().enumerate() {
            for b in &mine[i + 1..] {
                assert!((a.x - b.x).hypot(a.y - b.y) > 2.0, "{a:?} and {b:?} crowd together");
            }
        }
    }
    assert_eq!(kps, select_keypoints(&features, &masks, &config).unwrap());
    // Subsampling still gives valid keypoints.
    let small = KeypointConfig { max_samples: 20, ..config };
    let kps = select_keypoints(&features, &masks, &small).unwrap();
    assert!(kps.iter().all(|k| masks[k.object].contains(k.pixel().0, k.pixel().1)));
    let wrong = [Mask::from_fn(16, 16, |_, _| true)];
    assert!(select_keypoints(&features, &wrong, &config).unwrap_err().to_string().contains("mask 0 is 16x16"));
}

#[test]
fn keypoints_file_round_trips() {
    let kps = vec![Keypoint::at_pixel(3, 4, 0), Keypoint::at_pixel(10, 2, 1)];
    let file = KeypointsFile::new(&kps, vec!["a".into(), "b".into()]);
    let json = serde_json::to_string(&file).unwrap();
    assert_eq!(json, r#"{"keypoints":[[3.5,4.5],[10.5,2.5]],"objects":[0,1],"labels":["a","b"]}"#);
    let back: KeypointsFile =
        serde_json::from_str(r#"{"keypoints":[[3.5,4.5],[10.5,2.5]],"objects":[0,1]}"#).unwrap();
    assert_eq!(back.to_keypoints().unwrap(), kps);
}

#[test]
fn overlay_draws_in_object_colours() {
    let img = RgbImage::from_pixel(20, 20, Rgb([100, 100, 100]));
    let masks = [Mask::from_fn(20, 20, |x, _| x < 10), Mask::from_fn(20, 20, |x, _| x >= 10)];
    let kps = [Keypoint::at_pixel(4, 4, 0), Keypoint::at_pixel(15, 15, 1)];
    let out = draw_overlay(&img, &masks, &kps, 2).unwrap();
    assert_eq!(out.dimensions(), (40, 40));
    assert_eq!(*out.get_pixel(9, 9), object_colour(0));
    assert_eq!(*out.get_pixel(31, 31), object_colour(1));
    assert_ne!(*out.get_pixel(0, 39), Rgb([100, 100, 100]), "masks are tinted");
}
