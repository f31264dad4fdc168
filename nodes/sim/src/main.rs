//! `sim` node: runs simulator episodes in lock step with whatever answers its `action` input.
//!
//! Settings (the node's `env:` in the dataflow YAML): `TASK` (push-button | stack-block | place-fruit),
//! `EPISODES` (default 1), `SEED_START` (default 0), `VARIANT` (none | clutter | occlusion | lighting),
//! `STRENGTH` (0..1, default 0.5 when a variant is set), `WIDTH`, `HEIGHT` (default 224).
//!
//! Outputs: `episode` (start/end events), `image`, `segmentation`, `robot_state`, `object_poses` (privileged, for
//! scripted experts only), `oracle_tracks`. Input: `action`, answering the frame it was computed for; the
//! simulator steps once per valid action, so the episode is the same whatever the graph's timing. An action
//! that fails validation is logged and replaced by a hold-position command: invalid data never moves the arm.
//! After each episode it prints its outcome (`success=`, and for a task that carries an object `grasped=`: whether
//! the gripper held it at some tick, `held_at_end=`, and `place_error_m=`: its final distance from its target). At the end of the run it prints its per-tick latency (physics step, render and publishing; mean, p95).

use std::time::Instant;

use dora_bridge::{Latency, decode, env_or, linger, send};
use dora_node_api::{DoraNode, Event};
use glue::msg::{Action, EpisodeEvent, Header, Image, ObjectInfo, Segmentation};
use glue::sim::ood::{Condition, Variant};
use glue::sim::task::TaskKind;
use glue::sim::{EpisodeSpec, Sim, SimConfig};

fn publish(node: &mut DoraNode, sim: &mut Sim, episode: u64) -> eyre::Result<()> {
    let obs = sim.observe();
    let h = Header { episode, frame: obs.frame as u64, timestamp_ns: obs.timestamp_ns };
    let (w, hgt) = (obs.image.width, obs.image.height);
    send(node, "image", &h, &Image { width: w, height: hgt, data: obs.image.rgb })?;
    send(node, "segmentation", &h, &Segmentation { width: w, height: hgt, data: obs.image.instance })?;
    send(node, "robot_state", &h, &obs.robot_state)?;
    send(node, "object_poses", &h, &sim.object_poses())?;
    send(node, "oracle_tracks", &h, &obs.oracle_tracks)
}

fn main() -> eyre::Result<()> {
    let task: TaskKind = env_or("TASK", TaskKind::StackBlock)?;
    let episodes: u64 = env_or("EPISODES", 1)?;
    let seed_start: u64 = env_or("SEED_START", 0)?;
    let variant: Variant = env_or("VARIANT", Variant::None)?;
    let default_strength = if variant == Variant::None { 0.0 } else { 0.5 };
    let condition = Condition::new(variant, env_or("STRENGTH", default_strength)?).map_err(|e| eyre::eyre!(e))?;
    let config = SimConfig { width: env_or("WIDTH", 224)?, height: env_or("HEIGHT", 224)?, ..SimConfig::default() };

    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut successes = 0;
    let mut latency = Latency::default();
    for episode in 0..episodes {
        let seed = seed_start + episode;
        let mut sim = Sim::new(&config, EpisodeSpec { task, seed, condition });
        let start = EpisodeEvent::Start {
            task: task.name().to_string(),
            text_query: task.text_query(),
            seed,
            variant: variant.name().to_string(),
            strength: condition.strength,
            objects: sim.objects().iter().map(|o| ObjectInfo { name: o.name.to_string(), instance: o.instance }).collect(),
        };
        send(&mut node, "episode", &Header { episode, frame: 0, timestamp_ns: 0 }, &start)?;
        publish(&mut node, &mut sim, episode)?;
        loop {
            let Some(event) = events.recv() else { return Ok(()) };
            match event {
                Event::Input { id, metadata, data } if id.as_str() == "action" => {
                    let action = match decode::<Action>(&metadata, &data) {
                        Ok((h, action)) if h.episode == episode && h.frame == sim.frame() as u64 => action,
                        Ok((h, _)) => {
                            eprintln!("sim: ignoring stale action for episode {} frame {}", h.episode, h.frame);
                            continue;
                        }
                        Err(e) => {
                            eprintln!("sim: rejected action, holding position: {e}");
                            sim.hold_action()
                        }
                    };
                    let start = Instant::now();
                    sim.step(&action);
                    if sim.done() {
                        latency.record(start);
                        break;
                    }
                    publish(&mut node, &mut sim, episode)?;
                    latency.record(start);
                }
                Event::Stop(_) => return Ok(()),
                _ => {}
            }
        }
        let end = EpisodeEvent::End { success: sim.success(), ticks: sim.frame() as u64 };
        send(&mut node, "episode", &Header { episode, frame: sim.frame() as u64, timestamp_ns: sim.timestamp_ns() }, &end)?;
        println!("{}", glue::eval::sim_outcome_line(episode, &sim));
        successes += u64::from(sim.success());
    }
    println!("sim: {successes}/{episodes} episodes succeeded ({task}, {variant})");
    eprintln!("sim: {}", latency.summary());
    linger(&mut events)
}
