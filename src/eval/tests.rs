use super::dataflow::logged_place_stage;
use super::*;

#[test]
fn force_visible_sets_the_chosen_flags_only() {
    let keypoints = vec![[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [5.0, 6.0, 1.0], [7.0, 8.0, 0.0]];
    let objects = [Some(0), Some(1), Some(1), None];
    let flags = |force: ForceVisible| force.apply(keypoints.clone(), &objects).iter().map(|p| p[2]).collect::<Vec<_>>();
    assert_eq!(flags(ForceVisible::All), [1.0; 4]);
    assert_eq!(flags(ForceVisible::Object(1)), [0.0, 1.0, 1.0, 0.0]);
    assert_eq!(flags(ForceVisible::Object(0)), [1.0, 0.0, 1.0, 0.0]);
    assert_eq!(ForceVisible::Object(1).apply(keypoints.clone(), &objects)[1][..2], [3.0, 4.0], "positions kept");
    assert_eq!(ForceVisible::parse("all"), Ok(ForceVisible::All));
    assert_eq!(ForceVisible::parse(" 1 "), Ok(ForceVisible::Object(1)));
    assert!(ForceVisible::parse("plate").unwrap_err().contains("`all` or the index"));
    let json = serde_json::to_string(&[ForceVisible::All, ForceVisible::Object(1)]).unwrap();
    assert_eq!(json, r#"["all",{"object":1}]"#);
}

/// `--key-patches first-frame`: each keypoint keeps its first-frame feature while visible, a hidden one's is zero.
#[test]
fn first_frame_key_patches_are_zeroed_while_hidden() {
    let first = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let now = [[10.0, 10.0, 1.0], [20.0, 20.0, 0.0], [30.0, 30.0, 0.9]];
    assert_eq!(super::closed_loop::first_frame_features(&first, &now), [1.0, 2.0, 0.0, 0.0, 5.0, 6.0]);
    let all_visible = [[0.0, 0.0, 1.0]; 3];
    assert_eq!(super::closed_loop::first_frame_features(&first, &all_visible), first);
}

#[test]
fn wilson_interval_matches_known_values() {
    // 8/10: (0.4902, 0.9433); 0/10: (0, 0.2775); 50/100: (0.4038, 0.5962).
    let close = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3;
    assert!(close(wilson_95(8, 10), [0.4902, 0.9433]), "{:?}", wilson_95(8, 10));
    assert!(close(wilson_95(0, 10), [0.0, 0.2775]), "{:?}", wilson_95(0, 10));
    assert!(close(wilson_95(50, 100), [0.4038, 0.5962]), "{:?}", wilson_95(50, 100));
}

#[test]
fn the_place_stage_is_read_back_from_the_sim_nodes_line() {
    use crate::sim::{EpisodeSpec, Sim, SimConfig};
    let config = SimConfig { width: 16, height: 16, ..SimConfig::default() };
    let sim = Sim::new(&config, EpisodeSpec { task: TaskKind::PlaceFruit, seed: 4, condition: Condition::IN_DOMAIN });
    let lines = vec!["sim: something else".to_string(), sim_outcome_line(7, &sim)];
    let (grasped, held, error) = logged_place_stage(&lines, 7).unwrap();
    assert!(!grasped && !held);
    assert_eq!(Some(error), sim.place_error(), "the distance must survive the log line exactly");
    assert!(error > 0.1, "the fruit starts at least 17 cm from the plate's centre, read {error}");
    let err = logged_place_stage(&lines, 8).unwrap_err().to_string();
    assert!(err.contains("episode 8"), "{err}");
    let line = "sim: episode 8 (place-fruit) success=false grasped=maybe held_at_end=false place_error_m=0.2 after 3 ticks";
    let err = format!("{:#}", logged_place_stage(&[line.to_string()], 8).unwrap_err());
    assert!(err.contains("grasped=maybe"), "{err}");
    let line = "sim: episode 8 (place-fruit) success=false grasped=true held_at_end=false place_error_m=NaN after 3 ticks";
    let err = format!("{:#}", logged_place_stage(&[line.to_string()], 8).unwrap_err());
    assert!(err.contains("place_error_m=NaN"), "{err}");
}

/// The localisation error of `--object-pose-error`: per scene seed the same offsets (whatever else runs), their
/// spread is the given standard deviation, only x and y move, and 0 leaves the poses as they are.
#[test]
fn pose_errors_displace_each_object_horizontally_by_a_seeded_offset() {
    let poses = [[0.4, 0.1, 0.02, 0.0, 0.0, 0.6, 0.8], [0.6, -0.1, 0.03, 0.0, 0.0, 0.0, 1.0]];
    assert_eq!(PoseError::new(3, 2, 0.0).apply(&poses), poses.to_vec());
    let (a, b) = (PoseError::new(3, 2, 0.01), PoseError::new(3, 2, 0.01));
    assert_eq!(a, b);
    assert_ne!(a, PoseError::new(4, 2, 0.01));
    let moved = a.apply(&poses);
    for (m, p) in moved.iter().zip(&poses) {
        assert_eq!(m[2..], p[2..], "height and rotation stay");
        assert!(m[0] != p[0] && m[1] != p[1]);
    }
    let offsets: Vec<f32> = (0..2000).flat_map(|seed| PoseError::new(seed, 1, 0.01).offsets[0]).collect();
    let std = (offsets.iter().map(|v| v * v).sum::<f32>() / offsets.len() as f32).sqrt();
    assert!((std - 0.01).abs() < 0.0005, "spread {std}");
}

#[test]
fn failed_pick_and_place_episodes_are_sorted_by_stage() {
    let episode = |success, grasped, held, error| EpisodeResult {
        seed: 0,
        success,
        ticks: 1,
        invalid_actions: 0,
        grasped: Some(grasped),
        held_at_end: Some(held),
        place_error_m: Some(error),
    };
    let mut report = EvalReport {
        checkpoint: String::new(),
        policy: "glue".into(),
        task: "stack-block".into(),
        variant: "none".into(),
        strength: 0.0,
        keypoints: Keypoints::Tracker,
        k: 15,
        episodes: 5,
        successes: 1,
        success_rate: 0.2,
        wilson_95: wilson_95(1, 5),
        parallel: 1,
        temporal_ensemble: None,
        keypoint_seed: 0,
        unseen_at: None,
        object_pose_error: 0.0,
        force_visible: None,
        unlit_encoder: None,
        key_patches: KeyPatches::Live,
        latency: Latency::default(),
        per_episode: vec![
            episode(true, true, false, 0.01),
            episode(false, false, false, 0.30),
            episode(false, true, true, 0.05),
            episode(false, true, false, 0.07),
            episode(false, true, false, 0.09),
        ],
    };
    let stages = report.place_stages().unwrap();
    let median = stages.median_place_error_grasped_m.unwrap();
    assert!((median - 0.06).abs() < 1e-6, "median of 0.01, 0.05, 0.07, 0.09: {median}");
    let expected = PlaceStages { episodes: 5, successes: 1, not_grasped: 1, still_held: 1, released_off: 2, median_place_error_grasped_m: Some(median) };
    assert_eq!(stages, expected);
    assert!(stages.summary().contains("2 released off target; median final distance to target after a grasp 6.0 cm"), "{}", stages.summary());
    // A report written before the stage fields existed has no breakdown rather than a wrong one.
    report.per_episode[3].held_at_end = None;
    assert_eq!(report.place_stages(), None);
}
