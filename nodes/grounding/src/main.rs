//! `grounding` node: once per episode, text query -> object masks -> keypoints (paper sec. III-B, eq. 1).
//!
//! Inputs: `episode` (the start event carries the text queries and the task objects), `image` and, in simulation,
//! `segmentation` (the simulator's instance ids, which the oracle grounder turns into masks). With `BOXES` set (the
//! real robot, `glue::keypoints::BoxGrounder`: `x0,y0,x1,y1;...` in pixels, one box per text query, in query
//! order) the boxes are the masks and no segmentation is read; with `DETECTOR` set (an OWL-ViT checkpoint folder,
//! `glue::ground::OwlVitGrounder`) each text query's best detected box scoring at least `DETECTION_THRESHOLD`
//! (default 0.1) is segmented by SAM (`SEGMENTER`, a `SamModel` folder) or, without one, is its mask; the
//! detections are logged. On the first frame of each episode it emits `keypoints_init` (`[k, 3]`, all visible; all
//! invisible at the image centre when no queried object is in view) with that frame's header; later frames are
//! ignored. Settings: `WEIGHTS` (the frozen local encoder, a HF CLIP folder; default `checkpoints/local-vit-small`),
//! `K` (keypoints, default 15), `SEED` (K-means, default 0), `UNSEEN_AT` (`X,Y` in pixels: where the invisible
//! keypoints of a first frame without any queried object sit, `glue::annotate::first_frame_keypoints`; empty or unset: the
//! image centre), `BOXES`, `DETECTOR`, `DETECTION_THRESHOLD`, `SEGMENTER` (see above; `BOXES`
//! and `DETECTOR` empty or unset: the oracle grounder). At the end of the run it prints its latency per episode (mean, p95).

use std::collections::BTreeMap;
use std::time::Instant;

use dora_bridge::{Input, Latency, decode, env_or, next_input, send};
use dora_node_api::DoraNode;
use glue::annotate::{first_frame_keypoints, parse_unseen_at};
use glue::ground::sam::SamSegmenter;
use glue::ground::{OwlVitDetector, OwlVitGrounder};
use glue::keypoints::{BoxGrounder, Grounder, OracleGrounder};
use glue::msg::{EpisodeEvent, Header, Image, Keypoints, ObjectInfo, Segmentation};
use glue::vit::GridEncoder;

/// What one episode's first frame needs.
#[derive(Default)]
struct Pending {
    start: Option<(Vec<String>, Vec<ObjectInfo>)>,
    image: Option<(Header, Image)>,
    segmentation: Option<Segmentation>,
    done: bool,
}

fn main() -> eyre::Result<()> {
    let weights: String = env_or("WEIGHTS", glue::pretrain::SMALL_LOCAL_ENCODER.to_string())?;
    let k: usize = env_or("K", 15)?;
    let seed: u64 = env_or("SEED", 0)?;
    let unseen_at = match std::env::var("UNSEEN_AT").unwrap_or_default().trim() {
        "" => None,
        at => Some(parse_unseen_at(at).map_err(|e| eyre::eyre!("grounding: UNSEEN_AT: {e}"))?),
    };
    let device = burn::tensor::Device::flex();
    let boxes = match std::env::var("BOXES").unwrap_or_default().trim() {
        "" => None,
        text => Some(BoxGrounder::parse(text).map_err(|e| eyre::eyre!("grounding: BOXES: {e}"))?),
    };
    let detector = match std::env::var("DETECTOR").unwrap_or_default().trim() {
        "" => {
            let segmenter = std::env::var("SEGMENTER").unwrap_or_default();
            eyre::ensure!(segmenter.trim().is_empty(), "grounding: SEGMENTER {segmenter} is set but DETECTOR is not: SAM segments the detector's boxes");
            None
        }
        dir => {
            eyre::ensure!(boxes.is_none(), "grounding: set BOXES or DETECTOR, not both");
            let threshold: f32 = env_or("DETECTION_THRESHOLD", 0.1)?;
            let detector = OwlVitDetector::load(dir.as_ref(), &device).map_err(|e| eyre::eyre!("grounding: DETECTOR {dir}: {e:#}"))?;
            let segmenter = match std::env::var("SEGMENTER").unwrap_or_default().trim() {
                "" => None,
                sam => Some(SamSegmenter::load(sam.as_ref(), &device).map_err(|e| eyre::eyre!("grounding: SEGMENTER {sam}: {e:#}"))?),
            };
            Some(OwlVitGrounder::new(detector, segmenter, threshold).map_err(|e| eyre::eyre!("grounding: DETECTION_THRESHOLD: {e}"))?)
        }
    };
    let encoder = GridEncoder::load(weights.as_ref(), 2, &device)?;
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut episodes: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut latency = Latency::default();
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        let episode = match id.as_str() {
            "episode" => {
                let (h, event) = decode::<EpisodeEvent>(&metadata, &data)?;
                if let EpisodeEvent::Start { text_query, objects, .. } = event {
                    episodes.entry(h.episode).or_default().start = Some((text_query, objects));
                }
                h.episode
            }
            "image" => {
                let (h, image) = decode::<Image>(&metadata, &data)?;
                let e = episodes.entry(h.episode).or_default();
                if e.image.as_ref().is_none_or(|(first, _)| h.frame < first.frame) {
                    e.image = Some((h, image));
                }
                h.episode
            }
            "segmentation" => {
                let (h, seg) = decode::<Segmentation>(&metadata, &data)?;
                let e = episodes.entry(h.episode).or_default();
                if e.image.as_ref().is_none_or(|(first, _)| first.frame == h.frame) && e.segmentation.is_none() {
                    e.segmentation = Some(seg);
                }
                h.episode
            }
            other => eyre::bail!("grounding: unexpected input `{other}`"),
        };
        let e = episodes.get_mut(&episode).expect("inserted above");
        if e.done {
            continue;
        }
        let (Some((queries, objects)), Some((h, image))) = (&e.start, &e.image) else { continue };
        let start = Instant::now();
        let rgb = image::RgbImage::from_raw(image.width, image.height, image.data.clone())
            .ok_or_else(|| eyre::eyre!("grounding: image is not {}x{} rgb8", image.width, image.height))?;
        let grounder: Box<dyn Grounder> = match (&boxes, &detector, &e.segmentation) {
            (Some(boxes), _, _) => Box::new(boxes.clone()),
            (None, Some(detector), _) => {
                let (detections, masks) = detector.ground_with_detections(&rgb, queries)?;
                for (query, d) in queries.iter().zip(&detections) {
                    eprintln!("grounding: episode {episode}: {query:?} box {:?} score {:.3}", d.bbox.map(f32::round), d.score);
                }
                Box::new(FixedMasks(masks))
            }
            (None, None, Some(seg)) => Box::new(OracleGrounder::new(objects.clone(), seg.width, seg.height, seg.data.clone())?),
            (None, None, None) => continue,
        };
        let points = first_frame_keypoints(grounder.as_ref(), &encoder, &rgb, queries, k, seed, unseen_at, &device)
            .map_err(|err| eyre::eyre!("grounding: episode {episode}: {err:#}"))?;
        latency.record(start);
        send(&mut node, "keypoints_init", h, &Keypoints { points })?;
        e.done = true;
        // Older episodes will not come back.
        episodes.retain(|&id, _| id >= episode);
    }
    eprintln!("grounding: {}", latency.summary().replace("ticks", "episodes"));
    Ok(())
}

/// Masks already found for this frame (the detector's, logged with their boxes before keypoint selection).
struct FixedMasks(Vec<glue::keypoints::Mask>);

impl Grounder for FixedMasks {
    fn ground(&self, _: &image::RgbImage, _: &[String]) -> eyre::Result<Vec<glue::keypoints::Mask>> {
        Ok(self.0.clone())
    }
}
