//! `recorder` node: writes every episode it sees to `OUT_DIR/*.arrow` (one Arrow IPC file per episode, see
//! `glue::recording`), crash-safe: a cut episode stays a `.partial` file that loaders ignore.
//!
//! Inputs: `episode`, `image`, `robot_state`, `action` (required), and, when the dataflow connects them,
//! `segmentation`, `oracle_tracks`, `keypoints`, `object_poses` (privileged simulator state, for training
//! `glue train --policy state`; an empty list, as the replay node sends for files without poses, is recorded as
//! none). A tick is written once every connected input has arrived for its
//! frame; the episode is finalised when its end event has come and all its ticks are written. Dora delivers each
//! input's messages in order, so an optional input that has delivered a later frame will not deliver this one (it
//! was dropped upstream, e.g. from a full queue): the tick is written with that column null, and the episode's
//! summary line counts the gaps, instead of the episode stalling there and staying `.partial`. A tick that lost a
//! required input the same way (on the real robot: a camera tick with no fresh frame, hence no image and no action)
//! is not written at all (the recorded frame indices show the hole) and the summary line counts it. When the
//! inputs close (the dataflow ends), nothing more will come: an episode whose end event has arrived is written with
//! the ticks it has (the last tick's action may still have been in the policy), one without it stays `.partial`.
//! Each run writes into its own folder `OUT_DIR/<dataflow id>` (time-ordered UUIDs), so runs never collide.
//! Settings: `OUT_DIR` (default `out/recordings`), `CONTROL_HZ` (default 10).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use dora_bridge::{Input, decode, env_or, next_input};
use dora_node_api::{DoraArray, DoraNode, Metadata};
use glue::msg::{Action, EpisodeEvent, Header, Image, Keypoints, ObjectPoses, RobotState, Segmentation};
use glue::recording::{EpisodeInfo, EpisodeWriter, Tick};

/// The parts of one tick received so far.
#[derive(Default)]
struct Parts {
    timestamp_ns: u64,
    image: Option<Image>,
    segmentation: Option<Segmentation>,
    robot_state: Option<RobotState>,
    action: Option<Action>,
    oracle_tracks: Option<Keypoints>,
    keypoints: Option<Keypoints>,
    object_poses: Option<ObjectPoses>,
}

/// One per-frame input, decoded and validated.
enum Part {
    Image(Image),
    Segmentation(Segmentation),
    RobotState(RobotState),
    Action(Action),
    OracleTracks(Keypoints),
    Keypoints(Keypoints),
    ObjectPoses(ObjectPoses),
}

/// Decodes the per-frame input `id` into its message type.
fn decode_part(id: &str, metadata: &Metadata, data: &DoraArray) -> eyre::Result<(Header, Part)> {
    Ok(match id {
        "image" => decode::<Image>(metadata, data).map(|(h, m)| (h, Part::Image(m)))?,
        "segmentation" => decode::<Segmentation>(metadata, data).map(|(h, m)| (h, Part::Segmentation(m)))?,
        "robot_state" => decode::<RobotState>(metadata, data).map(|(h, m)| (h, Part::RobotState(m)))?,
        "action" => decode::<Action>(metadata, data).map(|(h, m)| (h, Part::Action(m)))?,
        "oracle_tracks" => decode::<Keypoints>(metadata, data).map(|(h, m)| (h, Part::OracleTracks(m)))?,
        "keypoints" => decode::<Keypoints>(metadata, data).map(|(h, m)| (h, Part::Keypoints(m)))?,
        "object_poses" => decode::<ObjectPoses>(metadata, data).map(|(h, m)| (h, Part::ObjectPoses(m)))?,
        other => eyre::bail!("recorder: unexpected input `{other}`"),
    })
}

/// Which optional inputs this recorder's dataflow connects.
struct Connected {
    segmentation: bool,
    oracle_tracks: bool,
    keypoints: bool,
    object_poses: bool,
}

impl Part {
    /// The input this part arrives on.
    fn input(&self) -> &'static str {
        match self {
            Part::Image(_) => "image",
            Part::Segmentation(_) => "segmentation",
            Part::RobotState(_) => "robot_state",
            Part::Action(_) => "action",
            Part::OracleTracks(_) => "oracle_tracks",
            Part::Keypoints(_) => "keypoints",
            Part::ObjectPoses(_) => "object_poses",
        }
    }
}


impl Parts {
    fn set(&mut self, part: Part) {
        match part {
            Part::Image(m) => self.image = Some(m),
            Part::Segmentation(m) => self.segmentation = Some(m),
            Part::RobotState(m) => self.robot_state = Some(m),
            Part::Action(m) => self.action = Some(m),
            Part::OracleTracks(m) => self.oracle_tracks = Some(m),
            Part::Keypoints(m) => self.keypoints = Some(m),
            Part::ObjectPoses(m) => self.object_poses = Some(m),
        }
    }

    /// The connected optional inputs this tick lacks, by input name.
    fn missing_optional(&self, c: &Connected) -> Vec<&'static str> {
        [
            ("segmentation", c.segmentation && self.segmentation.is_none()),
            ("oracle_tracks", c.oracle_tracks && self.oracle_tracks.is_none()),
            ("keypoints", c.keypoints && self.keypoints.is_none()),
            ("object_poses", c.object_poses && self.object_poses.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, missing)| missing.then_some(name))
        .collect()
    }

    /// The required inputs this tick lacks, by input name.
    fn missing_required(&self) -> Vec<&'static str> {
        [("image", self.image.is_none()), ("robot_state", self.robot_state.is_none()), ("action", self.action.is_none())]
            .into_iter()
            .filter_map(|(name, missing)| missing.then_some(name))
            .collect()
    }

    /// Whether the tick can be written: the required inputs are here, and each connected optional input either is
    /// too or has `skipped` this tick.
    fn ready(&self, c: &Connected, skipped: impl Fn(&str) -> bool) -> bool {
        self.missing_required().is_empty() && self.missing_optional(c).iter().all(|name| skipped(name))
    }

    /// A required input this tick lacks and will never get (it has `skipped` this tick): the tick is lost.
    fn lost_input(&self, skipped: impl Fn(&str) -> bool) -> Option<&'static str> {
        self.missing_required().into_iter().find(|name| skipped(name))
    }

    fn into_tick(self, frame: u64) -> Tick {
        Tick {
            frame: frame as u32,
            timestamp_ns: self.timestamp_ns,
            image: self.image.expect("complete tick").data,
            segmentation: self.segmentation.map(|s| s.data),
            robot_state: self.robot_state.expect("complete tick"),
            action: self.action.expect("complete tick"),
            keypoints: self.keypoints,
            oracle_tracks: self.oracle_tracks,
            object_poses: self.object_poses.map(|p| p.poses).filter(|p| !p.is_empty()),
        }
    }
}

/// One episode being recorded.
struct Recording {
    episode: u64,
    /// The start event; per-frame inputs may arrive before it.
    start: Option<EpisodeEvent>,
    writer: Option<EpisodeWriter>,
    parts: BTreeMap<u64, Parts>,
    next_frame: u64,
    end: Option<(bool, u64)>,
    /// The newest frame each input has delivered.
    newest: BTreeMap<&'static str, u64>,
    /// Ticks written without an optional input that skipped their frame, by input name.
    gaps: BTreeMap<&'static str, u64>,
    /// Ticks not written because a required input skipped their frame, by the first such input's name.
    lost: BTreeMap<&'static str, u64>,
}

impl Recording {
    fn new(episode: u64) -> Self {
        Recording {
            episode,
            start: None,
            writer: None,
            parts: BTreeMap::new(),
            next_frame: 0,
            end: None,
            newest: BTreeMap::new(),
            gaps: BTreeMap::new(),
            lost: BTreeMap::new(),
        }
    }
}

/// Episodes being recorded, by episode index: inputs from different nodes interleave, so the last action of one
/// episode may arrive after the next episode's start, and a frame may arrive before its episode's start event.
struct Recorder {
    out_dir: PathBuf,
    control_hz: f32,
    connected: Connected,
    active: BTreeMap<u64, Recording>,
    /// Episodes already written (or abandoned): late inputs for them are dropped.
    closed: BTreeSet<u64>,
    /// The newest episode each per-frame input has delivered: an input that has moved on to a later episode will
    /// deliver nothing more of an earlier one (an episode the operator ended before the tracker's first keypoints,
    /// say), so its missing ticks there are skipped rather than waited for.
    latest_episode: BTreeMap<&'static str, u64>,
    /// Episodes written and how many of them succeeded.
    written: u32,
    succeeded: u32,
    /// Every input has closed: whatever a tick still lacks will never come.
    inputs_closed: bool,
}

impl Recorder {
    /// Writes every complete tick of `episode` in frame order, then finalises it once its end event is satisfied.
    fn flush(&mut self, episode: u64) -> eyre::Result<()> {
        let Some(rec) = self.active.get_mut(&episode) else { return Ok(()) };
        let Some(start) = rec.start.clone() else { return Ok(()) };
        loop {
            let frame = rec.next_frame;
            let Some(parts) = rec.parts.get(&frame) else {
                // A tick nothing has arrived for yet; once the inputs have closed, one before the episode's end is lost.
                if self.inputs_closed && rec.end.is_some_and(|(_, ticks)| frame < ticks) {
                    *rec.lost.entry("any input").or_default() += 1;
                    rec.next_frame += 1;
                    continue;
                }
                break;
            };
            // dora keeps each input in order, so one that has delivered a later frame or episode skipped this tick.
            let skipped = |name: &str| {
                self.inputs_closed
                    || rec.newest.get(name).is_some_and(|&f| f > frame)
                    || self.latest_episode.get(name).is_some_and(|&e| e > episode)
            };
            if !parts.ready(&self.connected, skipped) {
                let Some(name) = parts.lost_input(skipped) else { break };
                rec.parts.remove(&rec.next_frame);
                *rec.lost.entry(name).or_default() += 1;
                rec.next_frame += 1;
                continue;
            }
            let parts = rec.parts.remove(&rec.next_frame).expect("checked above");
            for name in parts.missing_optional(&self.connected) {
                *rec.gaps.entry(name).or_default() += 1;
            }
            if rec.writer.is_none() {
                let image = parts.image.as_ref().expect("complete tick");
                let info = episode_info(rec.episode, &start, image, self.control_hz)?;
                rec.writer = Some(EpisodeWriter::create(&self.out_dir, info)?);
            }
            rec.writer.as_mut().expect("created above").push(parts.into_tick(rec.next_frame))?;
            rec.next_frame += 1;
        }
        let Some((success, ticks)) = rec.end else { return Ok(()) };
        if rec.next_frame < ticks {
            return Ok(());
        }
        let rec = self.active.remove(&episode).expect("checked above");
        self.closed.insert(episode);
        match rec.writer {
            Some(writer) => {
                let path = writer.finish(success)?;
                let gaps: Vec<String> = rec.gaps.iter().map(|(name, n)| format!("{n} without {name}")).collect();
                let gaps = if gaps.is_empty() { String::new() } else { format!("; {} (skipped upstream, null)", gaps.join(", ")) };
                let lost: Vec<String> = rec.lost.iter().map(|(name, n)| format!("{n} without {name}")).collect();
                let lost = if lost.is_empty() { String::new() } else { format!("; {} ticks not written: {}", rec.lost.values().sum::<u64>(), lost.join(", ")) };
                let written = rec.next_frame - rec.lost.values().sum::<u64>();
                println!("recorder: wrote {} ({written} ticks, success: {success}{gaps}{lost})", path.display());
                self.written += 1;
                self.succeeded += success as u32;
            }
            None => eprintln!("recorder: episode {episode} ended with no complete tick; nothing written"),
        }
        Ok(())
    }
}

impl Recorder {
    /// Every input has closed (the dataflow is ending): each episode whose end event has come is written with the
    /// ticks it has, a tick still lacking a required input counted as not written and one lacking an optional input
    /// written with it null, as when an input moves on. Episodes without their end event stay `.partial`.
    fn close_inputs(&mut self) -> eyre::Result<()> {
        self.inputs_closed = true;
        let episodes: Vec<u64> = self.active.keys().copied().collect();
        for episode in episodes {
            self.flush(episode)?;
        }
        Ok(())
    }

    /// Takes one input (`Err`: an episode event) and writes what it completes, in this episode and in earlier ones
    /// that were waiting for this input.
    fn receive(&mut self, h: Header, part: Result<Part, EpisodeEvent>) -> eyre::Result<()> {
        if let Ok(part) = &part {
            if self.latest_episode.get(part.input()).is_none_or(|&e| h.episode > e) {
                self.latest_episode.insert(part.input(), h.episode);
                let earlier: Vec<u64> = self.active.range(..h.episode).map(|(&e, _)| e).collect();
                for episode in earlier {
                    self.flush(episode)?;
                }
            }
        }
        if self.closed.contains(&h.episode) {
            return Ok(());
        }
        let r = self.active.entry(h.episode).or_insert_with(|| Recording::new(h.episode));
        match part {
            Err(start @ EpisodeEvent::Start { .. }) => r.start = Some(start),
            Err(EpisodeEvent::End { success, ticks }) => r.end = Some((success, ticks)),
            Ok(part) if h.frame >= r.next_frame => {
                let newest = r.newest.entry(part.input()).or_insert(h.frame);
                *newest = (*newest).max(h.frame);
                let parts = r.parts.entry(h.frame).or_default();
                parts.timestamp_ns = h.timestamp_ns;
                parts.set(part);
            }
            Ok(_) => {}
        }
        self.flush(h.episode)
    }
}

fn episode_info(episode: u64, start: &EpisodeEvent, image: &Image, control_hz: f32) -> eyre::Result<EpisodeInfo> {
    let EpisodeEvent::Start { task, text_query, seed, variant, strength, objects } = start.clone() else {
        eyre::bail!("recorder: episode {episode} has no start event");
    };
    Ok(EpisodeInfo { episode, task, text_query, seed, variant, strength, width: image.width, height: image.height, control_hz, objects })
}

fn main() -> eyre::Result<()> {
    let (node, mut events) = DoraNode::init_from_env()?;
    let inputs = &node.node_config().inputs;
    let has = |name: &str| inputs.keys().any(|k| k.as_str() == name);
    let mut rec = Recorder {
        out_dir: PathBuf::from(env_or("OUT_DIR", "out/recordings".to_string())?).join(node.dataflow_id().to_string()),
        control_hz: env_or("CONTROL_HZ", 10.0)?,
        connected: Connected { segmentation: has("segmentation"), oracle_tracks: has("oracle_tracks"), keypoints: has("keypoints"), object_poses: has("object_poses") },
        active: BTreeMap::new(),
        closed: BTreeSet::new(),
        latest_episode: BTreeMap::new(),
        written: 0,
        succeeded: 0,
        inputs_closed: false,
    };
    std::fs::create_dir_all(&rec.out_dir)?;
    println!("recorder: writing episodes to {}", rec.out_dir.display());
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        let (h, part) = if id.as_str() == "episode" {
            let (h, ev) = decode::<EpisodeEvent>(&metadata, &data)?;
            (h, Err(ev))
        } else {
            let (h, part) = decode_part(id.as_str(), &metadata, &data)?;
            (h, Ok(part))
        };
        rec.receive(h, part)?;
        for (input, n) in events.drain_drop_counts() {
            eprintln!("recorder: dora dropped {n} `{input}` messages; give the input a deeper queue_size or queue_policy: backpressure");
        }
    }
    for (input, n) in events.drain_drop_counts() {
        eprintln!("recorder: dora dropped {n} `{input}` messages");
    }
    rec.close_inputs()?;
    for r in rec.active.values() {
        eprintln!("recorder: inputs closed during episode {}; its {} ticks stay in a .partial file", r.episode, r.next_frame);
    }
    println!("recorder: {} episodes in {}, {} succeeded", rec.written, rec.out_dir.display(), rec.succeeded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use glue::msg::ObjectInfo;
    use glue::recording::{list_episodes, read_episode};

    fn header(frame: u64) -> Header {
        Header { episode: 0, frame, timestamp_ns: 1_000 + frame }
    }

    fn required(frame: u64) -> [Part; 3] {
        let state = RobotState { joints: [0.0; 7], gripper: 0.04, ee_position: [0.4, 0.0, 0.3], ee_orientation: [0.0, 0.0, 0.0, 1.0] };
        let action = Action { position: [0.4, 0.0, 0.3 + frame as f32 * 0.01], orientation: [0.0, 0.0, 0.0, 1.0], gripper: 0.04 };
        [Part::Image(Image { width: 2, height: 2, data: vec![frame as u8; 12] }), Part::RobotState(state), Part::Action(action)]
    }

    fn keypoints(frame: u64) -> Part {
        Part::Keypoints(Keypoints { points: vec![[frame as f32, 1.0, 1.0]] })
    }

    /// A recorder writing into a fresh temporary folder named for the test, with only `keypoints` optionally connected.
    fn recorder(name: &str, keypoints: bool) -> (Recorder, PathBuf) {
        let out_dir = std::env::temp_dir().join(format!("glue-recorder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        let connected = Connected { segmentation: false, oracle_tracks: false, keypoints, object_poses: false };
        let rec = Recorder { out_dir: out_dir.clone(), control_hz: 10.0, connected, active: BTreeMap::new(), closed: BTreeSet::new(), latest_episode: BTreeMap::new(), written: 0, succeeded: 0, inputs_closed: false };
        (rec, out_dir)
    }

    /// Frames 0-3 with the tracker's keypoints for frame 1 dropped upstream: the episode is written whole once
    /// frame 2's keypoints show frame 1's will not come, tick 1 without keypoints, the others with theirs; a tick
    /// whose keypoints are merely late (no later frame seen yet) waits for them.
    #[test]
    fn an_optional_input_that_skipped_a_frame_leaves_that_tick_null_and_the_episode_whole() {
        let (mut rec, out_dir) = recorder("gaps", true);
        let objects = vec![ObjectInfo { name: "red button".into(), instance: 3 }];
        let start = EpisodeEvent::Start { task: "push-button".into(), text_query: vec!["red button".into()], seed: 7, variant: "none".into(), strength: 0.0, objects };
        rec.receive(header(0), Err(start)).unwrap();
        for frame in 0..4 {
            for part in required(frame) {
                rec.receive(header(frame), Ok(part)).unwrap();
            }
        }
        rec.receive(header(0), Ok(keypoints(0))).unwrap();
        rec.receive(header(0), Err(EpisodeEvent::End { success: true, ticks: 4 })).unwrap();
        assert_eq!(rec.active[&0].next_frame, 1, "tick 1 waits for keypoints that may still come");
        rec.receive(header(2), Ok(keypoints(2))).unwrap();
        assert_eq!(rec.active[&0].next_frame, 3, "frame 2's keypoints show frame 1's were skipped");
        rec.receive(header(3), Ok(keypoints(3))).unwrap();
        assert!(rec.active.is_empty() && rec.written == 1 && rec.succeeded == 1);

        let files = list_episodes(&out_dir).unwrap();
        assert_eq!(files.len(), 1);
        let episode = read_episode(&files[0]).unwrap();
        let got: Vec<Option<f32>> = episode.ticks.iter().map(|t| t.keypoints.as_ref().map(|k| k.points[0][0])).collect();
        assert_eq!(got, [Some(0.0), None, Some(2.0), Some(3.0)]);
        assert_eq!(episode.ticks.iter().map(|t| t.image[0]).collect::<Vec<_>>(), [0, 1, 2, 3], "every frame's image, in order");
        std::fs::remove_dir_all(&out_dir).unwrap();
    }

    /// The real robot's camera skipped frame 1's image: tick 1 waits while no later image has come (it may be late),
    /// and is dropped once frame 2's image shows it will not; the episode is written with frames 0, 2 and 3.
    #[test]
    fn a_tick_that_lost_a_required_input_upstream_is_left_out_and_the_episode_written() {
        let (mut rec, out_dir) = recorder("lost", false);
        let start = EpisodeEvent::Start { task: "push-button".into(), text_query: vec!["red button".into()], seed: 0, variant: "none".into(), strength: 0.0, objects: vec![] };
        rec.receive(header(0), Err(start)).unwrap();
        let [image2, ..] = required(2);
        for frame in 0..3 {
            for part in required(frame) {
                if frame >= 1 && matches!(part, Part::Image(_)) {
                    continue;
                }
                rec.receive(header(frame), Ok(part)).unwrap();
            }
        }
        assert_eq!(rec.active[&0].next_frame, 1, "tick 1 waits: no later image has come, so its image may be late");
        rec.receive(header(2), Ok(image2)).unwrap();
        assert_eq!(rec.active[&0].next_frame, 3, "frame 2's image shows frame 1's was skipped: tick 1 dropped, tick 2 written");
        for part in required(3) {
            rec.receive(header(3), Ok(part)).unwrap();
        }
        rec.receive(header(3), Err(EpisodeEvent::End { success: false, ticks: 4 })).unwrap();
        assert!(rec.active.is_empty() && rec.written == 1);
        let files = list_episodes(&out_dir).unwrap();
        let episode = read_episode(&files[0]).unwrap();
        assert_eq!(episode.ticks.iter().map(|t| t.frame).collect::<Vec<_>>(), [0, 2, 3], "frame indices show the hole");
        assert_eq!(episode.ticks.iter().map(|t| t.image[0]).collect::<Vec<_>>(), [0, 2, 3]);
        std::fs::remove_dir_all(&out_dir).unwrap();
    }

    /// Episode 0 ends after one tick whose keypoints never come (the tracker moved on to episode 1 before grounding
    /// answered): it waits while the tracker may still deliver, and is written, that tick without keypoints, once
    /// the tracker delivers episode 1.
    #[test]
    fn an_episode_an_optional_input_left_behind_is_written_once_that_input_moves_on() {
        let (mut rec, out_dir) = recorder("left-behind", true);
        let start = |seed| EpisodeEvent::Start { task: "push-button".into(), text_query: vec!["red button".into()], seed, variant: "none".into(), strength: 0.0, objects: vec![] };
        rec.receive(header(0), Err(start(0))).unwrap();
        for part in required(0) {
            rec.receive(header(0), Ok(part)).unwrap();
        }
        rec.receive(header(1), Err(EpisodeEvent::End { success: true, ticks: 1 })).unwrap();
        let next = |frame| Header { episode: 1, ..header(frame) };
        rec.receive(next(0), Err(start(1))).unwrap();
        for part in required(0) {
            rec.receive(next(0), Ok(part)).unwrap();
        }
        assert_eq!(rec.written, 0, "episode 0's keypoints may still come");
        rec.receive(next(0), Ok(keypoints(0))).unwrap();
        assert!(rec.closed.contains(&0) && rec.written == 1, "the tracker has moved on: episode 0 is written");
        let episode = read_episode(&list_episodes(&out_dir).unwrap()[0]).unwrap();
        assert_eq!((episode.info.episode, episode.success, episode.ticks.len()), (0, true, 1));
        assert!(episode.ticks[0].keypoints.is_none());
        std::fs::remove_dir_all(&out_dir).unwrap();
    }

    /// The dataflow ends while episode 0, whose end event has come, waits for a tick nothing arrived for and for its
    /// last tick's action (the policy still busy): once the inputs close it is written with its two complete ticks;
    /// episode 1, which has no end event, stays `.partial`.
    #[test]
    fn when_the_inputs_close_an_ended_episode_is_written_with_the_ticks_it_has() {
        let (mut rec, out_dir) = recorder("closed", true);
        let start = |seed| EpisodeEvent::Start { task: "push-button".into(), text_query: vec!["red button".into()], seed, variant: "none".into(), strength: 0.0, objects: vec![] };
        rec.receive(header(0), Err(start(0))).unwrap();
        for frame in [0, 1, 3] {
            for part in required(frame).into_iter().chain([keypoints(frame)]) {
                if frame < 3 || !matches!(part, Part::Action(_)) {
                    rec.receive(header(frame), Ok(part)).unwrap();
                }
            }
        }
        rec.receive(header(3), Err(EpisodeEvent::End { success: true, ticks: 4 })).unwrap();
        let next = |frame| Header { episode: 1, ..header(frame) };
        rec.receive(next(0), Err(start(1))).unwrap();
        for part in required(0).into_iter().chain([keypoints(0)]) {
            rec.receive(next(0), Ok(part)).unwrap();
        }
        assert_eq!((rec.written, rec.active[&0].next_frame), (0, 2), "tick 2 may still come while the inputs are open");
        rec.close_inputs().unwrap();
        assert_eq!(rec.written, 1);
        assert_eq!(rec.active.keys().collect::<Vec<_>>(), [&1], "episode 1 has not ended: it stays .partial");
        let files = list_episodes(&out_dir).unwrap();
        assert_eq!(files.len(), 1);
        let episode = read_episode(&files[0]).unwrap();
        assert_eq!((episode.info.episode, episode.success), (0, true));
        assert_eq!(episode.ticks.iter().map(|t| t.frame).collect::<Vec<_>>(), [0, 1]);
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
}
