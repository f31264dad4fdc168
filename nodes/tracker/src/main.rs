//! `tracker` node: follows the episode's keypoints every frame with visibility (paper sec. III-B).
//!
//! Inputs: `episode` (a newer episode, announced by its start or any of its messages, forgets the previous
//! tracks), `image`, `keypoints_init` (the grounding node's keypoints on the episode's first frame). Output:
//! `keypoints` (`[N, 3]` = x, y, visible, indices stable for the whole episode) for the init frame and every later
//! frame. Frames that arrive before the init are kept and tracked as soon as it comes; an init that arrives
//! before its own frame (the two come from different nodes, in either order) waits for it. Settings: none (the tracker is `glue::track::KltTracker` with its documented
//! defaults; an episode whose grounding found no object keeps its invisible keypoints, see
//! `glue::annotate::EpisodeTracks`). At the end of the run the node prints its per-frame latency (mean, p95).

use std::collections::BTreeMap;
use std::time::Instant;

use dora_bridge::{CurrentEpisode, EpisodeOrder, Input, Latency, decode, next_input, send};
use dora_node_api::DoraNode;
use glue::msg::{EpisodeEvent, Header, Image, Keypoints};
use glue::annotate::EpisodeTracks;

fn rgb(image: Image) -> eyre::Result<image::RgbImage> {
    let (w, h) = (image.width, image.height);
    image::RgbImage::from_raw(w, h, image.data).ok_or_else(|| eyre::eyre!("tracker: image is not {w}x{h} rgb8"))
}

/// What an input carries besides its header.
enum Payload {
    None,
    Init(Keypoints),
    Frame(Image),
}

fn main() -> eyre::Result<()> {
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut current = CurrentEpisode::default();
    // The current episode's frames not tracked yet, by frame index.
    let mut waiting: BTreeMap<u64, (Header, Image)> = BTreeMap::new();
    let mut tracker: Option<EpisodeTracks> = None;
    // The current episode's keypoints_init while its frame has not arrived: (frame index, keypoints).
    let mut init: Option<(u64, Keypoints)> = None;
    let mut latency = Latency::default();
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        let (h, payload) = match id.as_str() {
            "episode" => (decode::<EpisodeEvent>(&metadata, &data)?.0, Payload::None),
            "keypoints_init" => {
                let (h, init) = decode::<Keypoints>(&metadata, &data)?;
                (h, Payload::Init(init))
            }
            "image" => {
                let (h, image) = decode::<Image>(&metadata, &data)?;
                (h, Payload::Frame(image))
            }
            other => eyre::bail!("tracker: unexpected input `{other}`"),
        };
        match current.observe(h.episode) {
            EpisodeOrder::Stale => continue,
            EpisodeOrder::New => {
                waiting.clear();
                tracker = None;
                init = None;
            }
            EpisodeOrder::Current => {}
        }
        match payload {
            Payload::None => {}
            Payload::Frame(image) => {
                waiting.insert(h.frame, (h, image));
            }
            Payload::Init(points) => {
                eyre::ensure!(tracker.is_none() && init.is_none(), "tracker: a second keypoints_init in episode {}", h.episode);
                init = Some((h.frame, points));
            }
        }
        if let Some((frame, _)) = &init
            && let Some((fh, first)) = waiting.remove(frame)
        {
            let (frame, points) = init.take().expect("matched above");
            let start = Instant::now();
            let t = EpisodeTracks::start(&rgb(first)?, &points.points)?;
            latency.record(start);
            send(&mut node, "keypoints", &fh, &Keypoints { points: t.current() })?;
            tracker = Some(t);
            waiting.retain(|&f, _| f > frame);
        }
        if let Some(t) = tracker.as_mut() {
            while let Some((_, (h, image))) = waiting.pop_first() {
                let start = Instant::now();
                let points = t.track(&rgb(image)?)?;
                latency.record(start);
                send(&mut node, "keypoints", &h, &Keypoints { points })?;
            }
        }
    }
    eprintln!("tracker: {}", latency.summary());
    for (input, n) in events.drain_drop_counts() {
        eprintln!("tracker: dora dropped {n} `{input}` messages (those frames have no keypoints); give the input a deeper queue_size or queue_policy: backpressure");
    }
    Ok(())
}
