//! End-to-end properties of the built-in simulator: determinism, expert quality, OOD conditions that change only
//! what the camera sees, and oracle point tracks.

use glue::collect::{ExecutionNoise, run_expert, run_noisy_expert};
use glue::sim::expert::Expert;
use glue::sim::ood::{Condition, Variant};
use glue::sim::task::TaskKind;
use glue::sim::{EpisodeSpec, Sim, SimConfig};

fn spec(task: TaskKind, seed: u64, variant: Variant, strength: f32) -> EpisodeSpec {
    EpisodeSpec { task, seed, condition: Condition::new(variant, strength).unwrap() }
}

/// Everything an episode produces, tick by tick: images, segmentation, robot states, actions, oracle tracks.
fn trace(config: &SimConfig, spec: EpisodeSpec) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<[f32; 15]>, Vec<[f32; 8]>, Vec<Vec<[f32; 3]>>, bool) {
    let (mut images, mut segs, mut states, mut actions, mut tracks) = (vec![], vec![], vec![], vec![], vec![]);
    let outcome = run_expert(config, spec, |_, obs, action| {
        images.push(obs.image.rgb);
        segs.push(obs.image.instance);
        states.push(obs.robot_state.to_array());
        actions.push(action.to_array());
        tracks.push(obs.oracle_tracks.points);
        Ok(())
    })
    .unwrap();
    (images, segs, states, actions, tracks, outcome.success)
}

#[test]
fn same_task_seed_and_variant_give_the_same_episode_bit_for_bit() {
    let config = SimConfig::default();
    for task in TaskKind::ALL {
        let s = spec(task, 7, Variant::Clutter, 0.6);
        let (a, b) = (trace(&config, s), trace(&config, s));
        assert_eq!(a.0, b.0, "{task}: images differ between two runs");
        assert_eq!(a.2.iter().map(|x| x.map(f32::to_bits)).collect::<Vec<_>>(), b.2.iter().map(|x| x.map(f32::to_bits)).collect::<Vec<_>>(), "{task}: states differ");
        assert_eq!(a.4.len(), b.4.len());
        assert!(a.4.iter().zip(&b.4).all(|(x, y)| x.iter().zip(y).all(|(p, q)| p.map(f32::to_bits) == q.map(f32::to_bits))), "{task}: tracks differ");
    }
}

/// `glue eval --unlit-encoder`'s frame: a lighting-variant scene rendered under the default light is the clean
/// scene of the same seed, pixel for pixel, and not the lit frame.
#[test]
fn the_default_lighting_render_of_a_lit_scene_is_the_clean_scene() {
    let config = SimConfig::default();
    let mut lit = Sim::new(&config, spec(TaskKind::PlaceFruit, 1003, Variant::Lighting, 0.5));
    let mut clean = Sim::new(&config, spec(TaskKind::PlaceFruit, 1003, Variant::None, 0.0));
    let unlit = lit.render_default_lighting();
    let (lit_frame, clean_frame) = (lit.observe().image, clean.observe().image);
    assert_eq!(unlit.rgb, clean_frame.rgb, "the unlit render differs from the clean scene");
    assert_ne!(unlit.rgb, lit_frame.rgb, "the lights changed nothing");
}

#[test]
fn different_seeds_give_different_layouts() {
    let config = SimConfig::default();
    let poses = |seed| Sim::new(&config, spec(TaskKind::StackBlock, seed, Variant::None, 0.0)).object_poses().poses;
    assert_ne!(poses(1), poses(2));
}

/// The scripted experts must succeed on at least 95% of seeds in-domain (issue 2); 20 held-out seeds per task.
/// Without noise they never lose the carried object, so they never re-plan a pick.
#[test]
fn experts_succeed_on_at_least_95_percent_of_seeds() {
    let config = SimConfig { width: 64, height: 64, ..SimConfig::default() };
    for task in TaskKind::ALL {
        let outcomes: Vec<_> = (100..120).map(|seed| run_expert(&config, spec(task, seed, Variant::None, 0.0), |_, _, _| Ok(())).unwrap()).collect();
        let ok = outcomes.iter().filter(|o| o.success).count();
        assert!(ok >= 19, "{task}: expert succeeded on {ok}/20 seeds");
        assert!(outcomes.iter().all(|o| o.regrasps == 0), "{task}: a clean expert re-planned a pick: {outcomes:?}");
    }
}

/// Execution noise (`glue record --noise`) moves the arm off the expert's path while the recorded labels stay the
/// expert's clean commands: where the labels have stood still for 5 ticks, a clean arm has settled on them and a
/// noisy one sits centimetres away; the labels never move faster than the expert's speed; a noisy episode repeats
/// bit for bit.
#[test]
fn execution_noise_perturbs_the_arm_but_not_the_labels() {
    let config = SimConfig { width: 32, height: 32, ..SimConfig::default() };
    let run = |noise: Option<ExecutionNoise>| {
        let mut ticks = Vec::new();
        let outcome = run_noisy_expert(&config, spec(TaskKind::StackBlock, 3, Variant::None, 0.0), noise, |_, obs, label| {
            ticks.push((glam::Vec3::from(obs.robot_state.ee_position), glam::Vec3::from(label.position)));
            Ok(())
        })
        .unwrap();
        (ticks, outcome)
    };
    let largest_settled_offset = |ticks: &[(glam::Vec3, glam::Vec3)]| {
        ticks.windows(6).filter(|w| w.iter().all(|t| t.1 == w[0].1)).map(|w| w[5].0.distance(w[5].1)).fold(0.0, f32::max)
    };
    let noise = Some(ExecutionNoise::new(0.02, 1.0).unwrap());
    let (noisy, outcome) = run(noise);
    assert!(run(noise) == (noisy.clone(), outcome), "a noisy episode does not repeat");
    let (clean, _) = run(None);
    let (clean_offset, noisy_offset) = (largest_settled_offset(&clean), largest_settled_offset(&noisy));
    assert!(clean_offset < 0.01, "the clean arm settles {clean_offset} m from its label");
    assert!(noisy_offset > 0.015, "the noisy arm settles at most {noisy_offset} m from its label");
    let largest_label_step = noisy.windows(2).map(|w| w[1].1.distance(w[0].1)).fold(0.0, f32::max);
    assert!(largest_label_step <= 0.025 + 1e-4, "a label jumped {largest_label_step} m in one tick");
}

/// A grasp that misses under noise is re-planned from the object's current pose and the episode still succeeds
/// (stack-block seed 5 at 2 cm misses once); without the expert's compensation of the object's offset in the hand,
/// 4 of these 20 seeds at 1 cm released the block beside the blue one.
#[test]
fn noisy_experts_regrasp_after_a_miss_and_place_the_object_not_the_hand() {
    let config = SimConfig { width: 32, height: 32, ..SimConfig::default() };
    let noisy = |seed, std| run_noisy_expert(&config, spec(TaskKind::StackBlock, seed, Variant::None, 0.0), Some(ExecutionNoise::new(std, 1.0).unwrap()), |_, _, _| Ok(())).unwrap();
    let regrasped = noisy(5, 0.02);
    assert!(regrasped.regrasps >= 1 && regrasped.success, "seed 5 at 2 cm: {regrasped:?}");
    let failed: Vec<u64> = (0..20).filter(|&seed| !noisy(seed, 0.01).success).collect();
    assert!(failed.is_empty(), "noisy (1 cm) stack-block expert failed on seeds {failed:?}");
}

#[test]
fn a_robot_that_does_nothing_does_not_succeed() {
    let config = SimConfig { width: 32, height: 32, ..SimConfig::default() };
    for task in TaskKind::ALL {
        let mut sim = Sim::new(&config, spec(task, 3, Variant::None, 0.0));
        while !sim.done() {
            let hold = sim.hold_action();
            sim.step(&hold);
        }
        assert!(!sim.success(), "{task}: succeeded without acting");
        assert_eq!(sim.frame(), task.max_ticks());
        assert_eq!(sim.grasped_carried(), task.carried_object().map(|_| false), "{task}: grasped without acting");
        assert_eq!(sim.holding_carried(), task.carried_object().map(|_| false), "{task}: holding without acting");
        if let Some((_, tolerance)) = task.place_target() {
            let error = sim.place_error().unwrap();
            assert!(error > 2.0 * tolerance, "{task}: the carried object starts {error} m from its target, within twice the tolerance");
        } else {
            assert_eq!(sim.place_error(), None, "{task} places nothing");
        }
    }
}

/// The grasp stage that `glue eval` reports: the experts' pick-and-place episodes hold the carried object at some
/// tick (and push-button has no such stage).
#[test]
fn experts_grasp_the_carried_object() {
    let config = SimConfig { width: 32, height: 32, ..SimConfig::default() };
    for task in TaskKind::ALL {
        let mut grasped = None;
        let outcome = run_expert(&config, spec(task, 100, Variant::None, 0.0), |sim, _, _| {
            grasped = sim.grasped_carried().map(|g| g || grasped == Some(true));
            Ok(())
        })
        .unwrap();
        assert!(outcome.success, "{task}: expert failed on seed 100");
        assert_eq!(grasped, task.carried_object().map(|_| true), "{task}");
    }
}

/// The place stage that `glue eval` reports: a successful expert episode ends with the carried object released
/// within its task's tolerance of the target, the quantity the success check bounds.
#[test]
fn experts_release_the_carried_object_on_target() {
    let config = SimConfig { width: 32, height: 32, ..SimConfig::default() };
    for task in [TaskKind::StackBlock, TaskKind::PlaceFruit] {
        let mut sim = Sim::new(&config, spec(task, 100, Variant::None, 0.0));
        let mut expert = Expert::new(task, &sim.object_poses(), &sim.robot_state(), config.control_hz).unwrap();
        while !sim.done() {
            let action = expert.act(&sim.robot_state(), &sim.object_poses()).unwrap();
            sim.step(&action);
        }
        assert!(sim.success(), "{task}: expert failed on seed 100");
        assert_eq!(sim.holding_carried(), Some(false), "{task}: still holding after success");
        let (error, tolerance) = (sim.place_error().unwrap(), task.place_target().unwrap().1);
        assert!(error < tolerance, "{task}: placed {error} m from the target, tolerance {tolerance}");
    }
}

/// OOD conditions change the pixels but not the physics: the robot trajectory and the outcome are those of the
/// in-domain episode with the same seed.
#[test]
fn ood_conditions_change_only_what_the_camera_sees() {
    let config = SimConfig::default();
    let base = trace(&config, spec(TaskKind::PlaceFruit, 11, Variant::None, 0.0));
    for variant in [Variant::Clutter, Variant::Occlusion, Variant::Lighting] {
        let ood = trace(&config, spec(TaskKind::PlaceFruit, 11, variant, 1.0));
        assert_eq!(base.2, ood.2, "{variant}: robot states differ from in-domain");
        assert_eq!(base.3, ood.3, "{variant}: actions differ from in-domain");
        assert_eq!(base.5, ood.5);
        let changed = base.0[0].iter().zip(&ood.0[0]).filter(|(a, b)| a != b).count();
        assert!(changed > 224 * 224 / 20, "{variant}: only {changed} bytes of the first image changed");
    }
    let weak = trace(&config, spec(TaskKind::PlaceFruit, 11, Variant::Clutter, 0.0));
    assert_eq!(base.0, weak.0, "strength 0 must leave the scene in-domain");
}

#[test]
fn occlusion_hides_oracle_points_that_are_visible_in_domain() {
    let config = SimConfig::default();
    let visible = |variant, strength| {
        let mut sim = Sim::new(&config, spec(TaskKind::StackBlock, 4, variant, strength));
        sim.observe().oracle_tracks.points.iter().filter(|p| p[2] == 1.0).count()
    };
    let (clean, occluded) = (visible(Variant::None, 0.0), visible(Variant::Occlusion, 1.0));
    assert!(clean >= 6, "in-domain only {clean} oracle points visible");
    assert!(occluded < clean, "occlusion hid no oracle point ({occluded} vs {clean})");
}

/// Visible oracle points project onto pixels of their own object in the segmentation.
#[test]
fn visible_oracle_points_land_on_their_object() {
    let config = SimConfig::default();
    let mut sim = Sim::new(&config, spec(TaskKind::PlaceFruit, 2, Variant::None, 0.0));
    let obs = sim.observe();
    let instances: Vec<u8> = sim.objects().iter().map(|o| o.instance).collect();
    let mut checked = 0;
    for p in obs.oracle_tracks.points.iter().filter(|p| p[2] == 1.0) {
        let (x, y) = (p[0] as usize, p[1] as usize);
        let id = obs.image.instance[y * 224 + x];
        assert!(instances.contains(&id), "visible point at ({x}, {y}) lies on instance {id}");
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn images_have_the_configured_size_and_are_lit() {
    let config = SimConfig { width: 160, height: 96, ..SimConfig::default() };
    let mut sim = Sim::new(&config, spec(TaskKind::PushButton, 0, Variant::None, 0.0));
    let frame = sim.observe().image;
    assert_eq!(frame.rgb.len(), 160 * 96 * 3);
    let distinct: std::collections::BTreeSet<_> = frame.rgb.chunks(3).map(|c| (c[0], c[1], c[2])).collect();
    assert!(distinct.len() > 500, "a shaded, textured scene has many colours, got {}", distinct.len());
}
