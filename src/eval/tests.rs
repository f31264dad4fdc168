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

/// `--key-patches swapped`: object 0's three keypoints take object 1's two features in turn and object 1's take
/// object 0's first two; a keypoint with no object keeps its own; a hidden receiver is zeroed; one object is refused.
#[test]
fn swapped_key_patches_trade_features_between_objects() {
    use super::closed_loop::swapped_features;
    // Rows (C = 1): keypoints 0, 1, 4 on object 0; 2, 3 on object 1; 5 on none.
    let live = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let objects = [Some(0), Some(0), Some(1), Some(1), Some(0), None];
    let visible = [[0.0, 0.0, 1.0]; 6];
    assert_eq!(swapped_features(&live, &visible, &objects).unwrap(), [2.0, 3.0, 0.0, 1.0, 2.0, 5.0]);
    let mut hidden = visible;
    hidden[4][2] = 0.0;
    assert_eq!(swapped_features(&live, &hidden, &objects).unwrap(), [2.0, 3.0, 0.0, 1.0, 0.0, 5.0]);
    let err = swapped_features(&live, &visible, &[Some(0); 6]).unwrap_err().to_string();
    assert!(err.contains("on 1 object"), "{err}");
    let err = swapped_features(&live[..5], &visible, &objects).unwrap_err().to_string();
    assert!(err.contains("6 keypoints") && err.contains("5 feature values"), "{err}");
}

/// `--key-positions swapped`: each keypoint takes its partner's position and flag, paired as the features are
/// (object 0's three from object 1's two in turn, object 1's from object 0's first two; no object keeps its own).
#[test]
fn swapped_key_positions_trade_positions_and_flags_between_objects() {
    use super::closed_loop::swapped_positions;
    let points: Vec<[f32; 3]> = (0..6).map(|i| [i as f32, 10.0 * i as f32, if i == 2 { 0.0 } else { 1.0 }]).collect();
    let objects = [Some(0), Some(0), Some(1), Some(1), Some(0), None];
    let swapped = swapped_positions(&points, &objects).unwrap();
    let taken: Vec<usize> = swapped.iter().map(|p| p[0] as usize).collect();
    assert_eq!(taken, [2, 3, 0, 1, 2, 5]);
    assert_eq!(swapped[0], [2.0, 20.0, 0.0], "the flag travels with the position");
    let err = swapped_positions(&points, &objects[..5]).unwrap_err().to_string();
    assert!(err.contains("6 keypoints but 5 object labels"), "{err}");
    let err = swapped_positions(&points, &[None; 6]).unwrap_err().to_string();
    assert!(err.contains("on 0 object"), "{err}");
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
    let stage = logged_place_stage(&lines, 7).unwrap();
    assert!(!stage.grasped && !stage.held_at_end);
    assert_eq!(stage.first_close, None, "the gripper has not closed");
    assert_eq!(Some(stage.place_error_m), sim.place_error(), "the distance must survive the log line exactly");
    assert!(stage.place_error_m > 0.1, "the fruit starts at least 17 cm from the plate's centre, read {}", stage.place_error_m);
    let err = logged_place_stage(&lines, 8).unwrap_err().to_string();
    assert!(err.contains("episode 8"), "{err}");
    let line = "sim: episode 8 (place-fruit) success=false grasped=maybe held_at_end=false place_error_m=0.2 after 3 ticks";
    let err = format!("{:#}", logged_place_stage(&[line.to_string()], 8).unwrap_err());
    assert!(err.contains("grasped=maybe"), "{err}");
    let line = "sim: episode 8 (place-fruit) success=false grasped=true held_at_end=false place_error_m=NaN after 3 ticks";
    let err = format!("{:#}", logged_place_stage(&[line.to_string()], 8).unwrap_err());
    assert!(err.contains("place_error_m=NaN"), "{err}");
}

/// [`crate::sim::Sim::first_close`] names the object under the gripper when it first closes, only the first close
/// counts, and the name (with its space) survives the sim node's line.
#[test]
fn the_first_grasp_attempts_object_is_recorded_and_read_back() {
    use crate::msg::{Action, GRIPPER_MAX};
    use crate::sim::{EpisodeSpec, Sim, SimConfig};
    let config = SimConfig { width: 16, height: 16, ..SimConfig::default() };
    let mut sim = Sim::new(&config, EpisodeSpec { task: TaskKind::StackBlock, seed: 3, condition: Condition::IN_DOMAIN });
    let poses = sim.object_poses();
    let above = |name: &str| {
        let p = poses.poses[poses.names.iter().position(|n| n == name).unwrap()];
        [p[0], p[1], p[2] + 0.15]
    };
    let orientation = sim.robot_state().ee_orientation;
    let drive = |sim: &mut Sim, name: &str, gripper: f32| {
        for _ in 0..20 {
            sim.step(&Action { position: above(name), orientation, gripper });
        }
    };
    drive(&mut sim, "white block", GRIPPER_MAX);
    drive(&mut sim, "blue block", GRIPPER_MAX);
    assert_eq!(sim.first_close(), None, "an open gripper has not closed");
    drive(&mut sim, "blue block", 0.0);
    drive(&mut sim, "white block", 0.0);
    let (name, distance) = sim.first_close().unwrap();
    assert_eq!(name, "blue block", "the first close was over the blue block");
    assert!(distance < 0.02, "the TCP was driven over the block's centre: {distance} m");
    let stage = logged_place_stage(&[sim_outcome_line(2, &sim)], 2).unwrap();
    assert_eq!(stage.first_close.as_deref(), Some("blue block"));
    assert_eq!(stage.first_close_m, Some(distance), "the distance survives the log line exactly");
    let line = "sim: episode 8 (stack-block) success=false grasped=false held_at_end=false place_error_m=0.2 first_close=\"blue after 3 ticks";
    let err = format!("{:#}", logged_place_stage(&[line.to_string()], 8).unwrap_err());
    assert!(err.contains("first_close"), "{err}");
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
        first_close: None,
        first_close_m: None,
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
        key_positions: KeyPositions::Live,
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
    for (e, (name, d)) in report.per_episode.iter_mut().zip([("white block", 0.015625), ("blue block", 0.05), ("white block", 0.046875)]) {
        e.first_close = Some(name.to_string());
        e.first_close_m = Some(d);
    }
    let expected = FirstCloses { objects: vec![("blue block".to_string(), 1, Some(0.05)), ("white block".to_string(), 2, Some(0.03125))], never: 2 };
    let closes = report.first_closes().unwrap();
    assert_eq!(closes, expected, "counted by object with the median distance, two never closed");
    let line = "first closed the gripper nearest: blue block 1 (median 5.0 cm from its centre), white block 2 (median 3.1 cm from its centre), never closed 2";
    assert_eq!(closes.summary(), line);
    // A report written before the stage fields existed has no breakdown rather than a wrong one.
    report.per_episode[3].held_at_end = None;
    assert_eq!(report.place_stages(), None);
}
