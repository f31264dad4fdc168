use super::dataset::KeypointDropout;
use super::*;
use crate::policy::normalizer::{Normalizer, Range};
use crate::policy::{ModelSize, PolicyKind};

#[test]
fn metrics_read_back_as_written_and_a_bad_row_is_named() {
    let dir = std::env::temp_dir().join(format!("glue-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let history = vec![
        EpochRow { epoch: 1, step: 32, train_loss: 1.5, val_loss: Some(1.25), lr: 1e-4, seconds: 30.5 },
        EpochRow { epoch: 2, step: 64, train_loss: 0.75, val_loss: None, lr: 5e-5, seconds: 29.0 },
    ];
    write_metrics(&dir, &history).unwrap();
    assert_eq!(read_metrics(&dir).unwrap(), history);
    std::fs::write(dir.join("metrics.csv"), "epoch,step,train_loss,val_loss,lr,seconds\n1,32,x,1.0,0.0001,30\n").unwrap();
    let err = read_metrics(&dir).unwrap_err().to_string();
    assert!(err.contains("metrics.csv line 2: expected epoch,step,train_loss,val_loss,lr,seconds"), "{err}");
    std::fs::write(dir.join("metrics.csv"), "epoch,step,train_loss,val_loss,lr,seconds\n").unwrap();
    assert!(read_metrics(&dir).unwrap_err().to_string().contains("no epochs recorded"));
    std::fs::remove_dir_all(&dir).ok();
}

/// One 64x64 demo of 3 ticks, 2 visible keypoints, key features all 1; the state normaliser the identity over
/// `state_width` entries.
fn dataset(keypoint_dropout: f32, point_dropout: f32, state_width: usize) -> Dataset {
    let (ticks, n, c) = (3, 2, 4);
    let demo = Demo {
        path: PathBuf::from("demo.arrow"),
        task: "push-button".to_owned(),
        width: 64,
        height: 64,
        images: vec![vec![100u8; 64 * 64 * 3]; ticks],
        states: vec![[0.0; 15]; ticks],
        actions: vec![[0.0; 8]; ticks],
        keypoints: vec![vec![[10.0, 10.0, 1.0], [50.0, 40.0, 1.0]]; ticks],
        object_poses: Vec::new(),
    };
    let key_features = vec![vec![vec![1.0f32; n * c]; ticks]];
    let range = |d| Range { min: vec![-1.0; d], max: vec![1.0; d], constant_span: CONSTANT_SPAN };
    let demos = vec![demo];
    let keypoint_dropout = KeypointDropout::new(keypoint_dropout, &demos, &key_features);
    Dataset {
        demos,
        key_features: Some(key_features),
        normalizer: Normalizer { state: range(state_width), action: range(8) },
        keypoint_dropout,
        point_dropout,
    }
}

/// Per sample of a batch of `rows` at tick 2 (training crops when `train`): whether its key features are all
/// zero, and whether its keypoints share one cell.
fn unseen_rows(data: &Dataset, rows: usize, train: bool) -> Vec<(bool, bool)> {
    let config = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
    let batch = vec![Sample { demo: 0, t: 2 }; rows];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (obs, _) = data.batch(&config, &batch, train.then_some(&mut rng), &Device::flex());
    let patches = obs.key_patches.expect("GLUE batches carry key patches");
    let features: Vec<f32> = patches.features.into_data().try_to_vec().unwrap();
    let cells: Vec<i64> = patches.cells.into_data().convert::<i64>().try_to_vec().unwrap();
    let to = config.n_obs_steps;
    let per_frame = features.len() / (rows * to);
    (0..rows)
        .map(|r| {
            let rows_of_sample = r * to..(r + 1) * to;
            let values = &features[rows_of_sample.start * per_frame..rows_of_sample.end * per_frame];
            let zero = values.iter().all(|&v| v == 0.0);
            let same_cell = rows_of_sample.clone().all(|f| cells[2 * f] == cells[2 * f + 1]);
            (zero, same_cell)
        })
        .collect()
}

#[test]
fn keypoint_dropout_shows_a_share_of_training_samples_as_unseen() {
    // Always: every sample zeroed, both keypoints in the centre's cell.
    assert!(unseen_rows(&dataset(1.0, 0.0, 7), 8, true).iter().all(|&r| r == (true, true)));
    // Never: the recorded features and two distinct cells.
    assert!(unseen_rows(&dataset(0.0, 0.0, 7), 8, true).iter().all(|&r| r == (false, false)));
    // Validation batches (no random crop) are never dropped.
    assert!(unseen_rows(&dataset(1.0, 0.0, 7), 8, false).iter().all(|&r| r == (false, false)));
    // A share of 0.3: about 60 of 200 samples, each one whole (zeroed and moved together).
    let rows = unseen_rows(&dataset(0.3, 0.0, 7), 200, true);
    assert!(rows.iter().all(|&(zero, same)| zero == same), "{rows:?}");
    let dropped = rows.iter().filter(|r| r.0).count();
    assert!((35..=85).contains(&dropped), "{dropped} of 200 dropped at 0.3");
}

/// Per sample of a GLUE `--keypoint-coords` batch of `rows` at tick 2 (training crops when `train`), per
/// observation step, per keypoint: (its visibility flag in the state, whether its key patch is all zero); and
/// whether every step's two keypoints kept distinct cells.
fn lost_points(data: &Dataset, rows: usize, train: bool) -> Vec<(Vec<Vec<(f32, bool)>>, bool)> {
    let mut config = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
    config.set_n_keypoints(2).unwrap();
    let batch = vec![Sample { demo: 0, t: 2 }; rows];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (obs, _) = data.batch(&config, &batch, train.then_some(&mut rng), &Device::flex());
    let state: Vec<f32> = obs.state.into_data().try_to_vec().unwrap();
    let patches = obs.key_patches.expect("GLUE batches carry key patches");
    let features: Vec<f32> = patches.features.into_data().try_to_vec().unwrap();
    let cells: Vec<i64> = patches.cells.into_data().convert::<i64>().try_to_vec().unwrap();
    let (to, width, channels) = (config.n_obs_steps, config.state_width(), features.len() / (rows * config.n_obs_steps * 2));
    (0..rows)
        .map(|r| {
            let steps: Vec<Vec<(f32, bool)>> = (r * to..(r + 1) * to)
                .map(|f| {
                    (0..2)
                        .map(|i| {
                            let flag = state[f * width + width - 6 + 3 * i + 2];
                            let patch = &features[(f * 2 + i) * channels..(f * 2 + i + 1) * channels];
                            (flag, patch.iter().all(|&v| v == 0.0))
                        })
                        .collect()
                })
                .collect();
            let distinct = (r * to..(r + 1) * to).all(|f| cells[2 * f] != cells[2 * f + 1]);
            (steps, distinct)
        })
        .collect()
}

#[test]
fn point_dropout_shows_single_keypoints_lost_where_the_tracker_left_them() {
    let width = {
        let mut c = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
        c.set_n_keypoints(2).unwrap();
        c.state_width()
    };
    let every = |data: &Dataset, train: bool, want: (f32, bool)| {
        lost_points(data, 8, train).iter().all(|(steps, distinct)| *distinct && steps.iter().flatten().all(|&p| p == want))
    };
    // Always: every flag 0 and every key patch zeroed, the coordinates (so the two cells) kept.
    assert!(every(&dataset(0.0, 1.0, width), true, (0.0, true)));
    // Never, and never in validation batches: the recorded flags and features.
    assert!(every(&dataset(0.0, 0.0, width), true, (1.0, false)));
    assert!(every(&dataset(0.0, 1.0, width), false, (1.0, false)));
    // A chance of 0.3 per point: a lost point's flag and patch go together, it stays lost over the sample's
    // observation steps, and single points are lost (not only whole samples).
    let samples = lost_points(&dataset(0.0, 0.3, width), 200, true);
    let mut lost = 0;
    let mut one_of_two = 0;
    for (steps, distinct) in &samples {
        assert!(distinct);
        assert!(steps.iter().flatten().all(|&(flag, zero)| (flag == 0.0) == zero), "{steps:?}");
        assert!(steps.iter().all(|s| s == &steps[0]), "lost over some observation steps only: {steps:?}");
        let n = steps[0].iter().filter(|p| p.1).count();
        lost += n;
        one_of_two += usize::from(n == 1);
    }
    assert!((80..=160).contains(&lost), "{lost} of 400 points lost at 0.3");
    assert!(one_of_two > 40, "{one_of_two} of 200 samples lost one point of two");
}

#[test]
fn a_bad_dropout_stops_the_run_before_its_folder_is_made() {
    let out = std::env::temp_dir().join(format!("glue-keypoint-dropout-check-{}", std::process::id()));
    // (policy, --keypoint-dropout, --point-dropout, the error)
    let cases = [
        (PolicyKind::Glue, 1.5, 0.0, "keypoint_dropout: expected a share in [0, 1], got 1.5"),
        (PolicyKind::Glue, f32::NAN, 0.0, "keypoint_dropout: expected a share in [0, 1], got NaN"),
        (PolicyKind::Dp, 0.2, 0.0, "keypoint_dropout applies to GLUE's key patches; --policy dp has none"),
        (PolicyKind::Glue, 0.0, -0.1, "point_dropout: expected a chance in [0, 1], got -0.1"),
        (PolicyKind::GlueS, 0.0, 0.2, "point_dropout applies to keypoints; --policy glue-s reads none (add --keypoint-coords)"),
    ];
    for (policy, keypoint_dropout, point_dropout, says) in cases {
        let mut config = TrainConfig::new(PolicyConfig::new(policy, ModelSize::Small), vec![PathBuf::from("demos")]);
        config.keypoint_dropout = keypoint_dropout;
        config.point_dropout = point_dropout;
        let err = train(config, &out, &Device::flex()).expect_err("an invalid share must stop the run").to_string();
        assert_eq!(err, says);
        assert!(!out.exists(), "{} was created for a run that cannot start", out.display());
    }
}

#[test]
fn a_slow_first_epoch_shortens_the_run_and_later_epochs_lengthen_it_again() {
    // 10 minutes, 100 epochs asked for. A first epoch of 143 s (GPU warm-up) leaves 457 s: 3 more fit.
    assert_eq!(epochs_within_budget(100, 1, 600.0 - 143.0, 143.0), 4);
    // The second epoch takes 12 s: 445 s left, 37 more fit.
    assert_eq!(epochs_within_budget(100, 2, 600.0 - 155.0, 12.0), 39);
    // Fast epochs never lengthen the run past what was asked for.
    assert_eq!(epochs_within_budget(20, 2, 445.0, 1.0), 20);
    // Out of time: the run ends with the epoch just done, never before it.
    assert_eq!(epochs_within_budget(100, 7, -30.0, 12.0), 7);
}
