//! `recorder` node: writes every episode it sees to `OUT_DIR/*.arrow` (one Arrow IPC file per episode, see
//! `glue::recording`), crash-safe: a cut episode stays a `.partial` file that loaders ignore.
//!
//! Inputs: `episode`, `image`, `robot_state`, `action` (required), and, when the dataflow connects them,
//! `segmentation`, `oracle_tracks`, `keypoints`. A tick is written once every connected input has arrived for its
//! frame; the episode is finalised when its end event has come and all its ticks are written.
//! Settings: `OUT_DIR` (default `out/recordings`), `CONTROL_HZ` (default 10).

use std::collections::BTreeMap;
use std::path::PathBuf;

use dora_bridge::{decode, env_or, send as _};
use dora_node_api::{DoraNode, Event};
use glue::msg::{Action, EpisodeEvent, Image, Keypoints, RobotState, Segmentation};
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
}

/// Which optional inputs this recorder's dataflow connects.
struct Connected {
    segmentation: bool,
    oracle_tracks: bool,
    keypoints: bool,
}

impl Parts {
    fn complete(&self, c: &Connected) -> bool {
        self.image.is_some()
            && self.robot_state.is_some()
            && self.action.is_some()
            && (!c.segmentation || self.segmentation.is_some())
            && (!c.oracle_tracks || self.oracle_tracks.is_some())
            && (!c.keypoints || self.keypoints.is_some())
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
        }
    }
}

/// One episode being recorded.
struct Recording {
    episode: u64,
    start: EpisodeEvent,
    writer: Option<EpisodeWriter>,
    parts: BTreeMap<u64, Parts>,
    next_frame: u64,
    end: Option<(bool, u64)>,
}

struct Recorder {
    out_dir: PathBuf,
    control_hz: f32,
    connected: Connected,
    current: Option<Recording>,
}

impl Recorder {
    /// Writes every complete tick in frame order, then finalises the episode once its end event is satisfied.
    fn flush(&mut self) -> eyre::Result<()> {
        let Some(rec) = self.current.as_mut() else { return Ok(()) };
        while rec.parts.get(&rec.next_frame).is_some_and(|p| p.complete(&self.connected)) {
            let parts = rec.parts.remove(&rec.next_frame).expect("checked above");
            if rec.writer.is_none() {
                let image = parts.image.as_ref().expect("complete tick");
                let info = episode_info(rec.episode, &rec.start, image, self.control_hz)?;
                rec.writer = Some(EpisodeWriter::create(&self.out_dir, info)?);
            }
            rec.writer.as_mut().expect("created above").push(parts.into_tick(rec.next_frame))?;
            rec.next_frame += 1;
        }
        if let Some((success, ticks)) = rec.end {
            if rec.next_frame >= ticks {
                let rec = self.current.take().expect("checked above");
                match rec.writer {
                    Some(writer) => {
                        let path = writer.finish(success)?;
                        println!("recorder: wrote {} ({} ticks, success: {success})", path.display(), rec.next_frame);
                    }
                    None => eprintln!("recorder: episode {} ended with no complete tick; nothing written", rec.episode),
                }
            }
        }
        Ok(())
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
        out_dir: PathBuf::from(env_or("OUT_DIR", "out/recordings".to_string())?),
        control_hz: env_or("CONTROL_HZ", 10.0)?,
        connected: Connected { segmentation: has("segmentation"), oracle_tracks: has("oracle_tracks"), keypoints: has("keypoints") },
        current: None,
    };
    std::fs::create_dir_all(&rec.out_dir)?;
    while let Some(event) = events.recv() {
        let Event::Input { id, metadata, data } = event else {
            if matches!(event, Event::Stop(_)) {
                break;
            }
            continue;
        };
        if id.as_str() == "episode" {
            let (h, ev) = decode::<EpisodeEvent>(&metadata, &data)?;
            match ev {
                EpisodeEvent::Start { .. } => {
                    if let Some(old) = rec.current.take() {
                        eprintln!("recorder: episode {} restarted before it ended; its ticks stay in a .partial file", old.episode);
                    }
                    rec.current = Some(Recording { episode: h.episode, start: ev, writer: None, parts: BTreeMap::new(), next_frame: 0, end: None });
                }
                EpisodeEvent::End { success, ticks } => {
                    if let Some(r) = rec.current.as_mut().filter(|r| r.episode == h.episode) {
                        r.end = Some((success, ticks));
                    }
                }
            }
        } else {
            let Some(r) = rec.current.as_mut() else { continue };
            let (h, store): (_, Box<dyn FnOnce(&mut Parts)>) = match id.as_str() {
                "image" => { let (h, m) = decode::<Image>(&metadata, &data)?; (h, Box::new(move |p| p.image = Some(m))) }
                "segmentation" => { let (h, m) = decode::<Segmentation>(&metadata, &data)?; (h, Box::new(move |p| p.segmentation = Some(m))) }
                "robot_state" => { let (h, m) = decode::<RobotState>(&metadata, &data)?; (h, Box::new(move |p| p.robot_state = Some(m))) }
                "action" => { let (h, m) = decode::<Action>(&metadata, &data)?; (h, Box::new(move |p| p.action = Some(m))) }
                "oracle_tracks" => { let (h, m) = decode::<Keypoints>(&metadata, &data)?; (h, Box::new(move |p| p.oracle_tracks = Some(m))) }
                "keypoints" => { let (h, m) = decode::<Keypoints>(&metadata, &data)?; (h, Box::new(move |p| p.keypoints = Some(m))) }
                other => eyre::bail!("recorder: unexpected input `{other}`"),
            };
            if h.episode != r.episode || h.frame < r.next_frame {
                continue;
            }
            let parts = r.parts.entry(h.frame).or_default();
            parts.timestamp_ns = h.timestamp_ns;
            store(parts);
        }
        rec.flush()?;
    }
    if let Some(r) = rec.current {
        eprintln!("recorder: inputs closed during episode {}; its {} ticks stay in a .partial file", r.episode, r.next_frame);
    }
    Ok(())
}
