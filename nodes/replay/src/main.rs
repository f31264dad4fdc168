//! `replay` node: streams recorded episodes back into the graph with the simulator's output ids (`episode`,
//! `image`, `segmentation`, `robot_state`, `oracle_tracks`, `keypoints`, `object_poses`) plus the recorded
//! `action`, at the recorded timing divided by `SPEED`. `object_poses` goes out on every tick, empty for files
//! recorded without the column (the recorder writes an empty list as "not recorded"), so a graph that connects it
//! replays old and new recordings alike.
//!
//! Episodes are numbered in stream order (files recorded separately may all be episode 0).
//! Settings: `RECORDINGS` (an episode file or a directory of `*.arrow`, default `recordings`), `SPEED` (default 1;
//! 0 streams as fast as possible), `LINGER_MS` (see `dora_bridge::linger`). Each episode's line on stdout gives the
//! time it took to stream.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dora_bridge::{env_or, linger, send};
use dora_node_api::{DoraNode, Event};
use glue::msg::{EpisodeEvent, Header, Image, ObjectPoses, Segmentation};
use glue::recording::{list_episodes, read_episode, Episode};

/// Streams `episode` as stream episode number `index`.
fn stream(node: &mut DoraNode, index: u64, episode: &Episode, speed: f64) -> eyre::Result<()> {
    let info = &episode.info;
    let start = EpisodeEvent::Start {
        task: info.task.clone(),
        text_query: info.text_query.clone(),
        seed: info.seed,
        variant: info.variant.clone(),
        strength: info.strength,
        objects: info.objects.clone(),
    };
    send(node, "episode", &Header { episode: index, frame: 0, timestamp_ns: 0 }, &start)?;
    let t0 = Instant::now();
    for tick in &episode.ticks {
        if speed > 0.0 {
            let due = t0 + Duration::from_secs_f64(tick.timestamp_ns as f64 * 1e-9 / speed);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let h = Header { episode: index, frame: tick.frame as u64, timestamp_ns: tick.timestamp_ns };
        send(node, "image", &h, &Image { width: info.width, height: info.height, data: tick.image.clone() })?;
        if let Some(seg) = &tick.segmentation {
            send(node, "segmentation", &h, &Segmentation { width: info.width, height: info.height, data: seg.clone() })?;
        }
        send(node, "robot_state", &h, &tick.robot_state)?;
        if let Some(tracks) = &tick.oracle_tracks {
            send(node, "oracle_tracks", &h, tracks)?;
        }
        if let Some(kp) = &tick.keypoints {
            send(node, "keypoints", &h, kp)?;
        }
        let poses = tick.object_poses.clone().unwrap_or_default();
        let names = if poses.is_empty() { Vec::new() } else { info.objects.iter().map(|o| o.name.clone()).collect() };
        send(node, "object_poses", &h, &ObjectPoses { names, poses })?;
        send(node, "action", &h, &tick.action)?;
    }
    let last = episode.ticks.last().map_or(0, |t| t.timestamp_ns);
    let end = EpisodeEvent::End { success: episode.success, ticks: episode.ticks.len() as u64 };
    send(node, "episode", &Header { episode: index, frame: episode.ticks.len() as u64, timestamp_ns: last }, &end)
}

fn main() -> eyre::Result<()> {
    let source = PathBuf::from(env_or("RECORDINGS", "recordings".to_string())?);
    let speed: f64 = env_or("SPEED", 1.0)?;
    eyre::ensure!(speed.is_finite() && speed >= 0.0, "SPEED: expected a finite number >= 0, got {speed}");
    let files = if source.is_dir() { list_episodes(&source)? } else { vec![source.clone()] };
    eyre::ensure!(!files.is_empty(), "RECORDINGS: no *.arrow episode in {}", source.display());

    let (mut node, mut events) = DoraNode::init_from_env()?;
    for (index, file) in files.iter().enumerate() {
        if let Some(Event::Stop(_)) = events.try_recv().ok() {
            break;
        }
        let episode = read_episode(file)?;
        let started = Instant::now();
        stream(&mut node, index as u64, &episode, speed)?;
        let (ticks, secs) = (episode.ticks.len(), started.elapsed().as_secs_f64());
        println!("replay: {} ({ticks} ticks, success: {}) streamed in {secs:.3} s", file.display(), episode.success);
    }
    linger(&mut events)
}
