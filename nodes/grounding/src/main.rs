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

/// Where the masks come from (module doc): the simulator's segmentation, the operator's boxes, or the detector
/// (and segmenter).
enum Source {
    Oracle,
    Boxes(BoxGrounder),
    Detector(Box<OwlVitGrounder>),
}

impl Source {
    /// `BOXES`, `DETECTOR`, `DETECTION_THRESHOLD` and `SEGMENTER`, checked together.
    fn from_env(device: &burn::tensor::Device) -> eyre::Result<Self> {
        let boxes = match std::env::var("BOXES").unwrap_or_default().trim() {
            "" => None,
            text => Some(BoxGrounder::parse(text).map_err(|e| eyre::eyre!("grounding: BOXES: {e}"))?),
        };
        let segmenter = std::env::var("SEGMENTER").unwrap_or_default();
        match (std::env::var("DETECTOR").unwrap_or_default().trim(), boxes) {
            ("", boxes) => {
                eyre::ensure!(segmenter.trim().is_empty(), "grounding: SEGMENTER {segmenter} is set but DETECTOR is not: SAM segments the detector's boxes");
                Ok(boxes.map_or(Source::Oracle, Source::Boxes))
            }
            (_, Some(_)) => eyre::bail!("grounding: set BOXES or DETECTOR, not both"),
            (dir, None) => {
                let threshold: f32 = env_or("DETECTION_THRESHOLD", 0.1)?;
                let detector = OwlVitDetector::load(dir.as_ref(), device).map_err(|e| eyre::eyre!("grounding: DETECTOR {dir}: {e:#}"))?;
                let segmenter = match segmenter.trim() {
                    "" => None,
                    sam => Some(SamSegmenter::load(sam.as_ref(), device).map_err(|e| eyre::eyre!("grounding: SEGMENTER {sam}: {e:#}"))?),
                };
                let grounder = OwlVitGrounder::new(detector, segmenter, threshold).map_err(|e| eyre::eyre!("grounding: DETECTION_THRESHOLD: {e}"))?;
                Ok(Source::Detector(Box::new(grounder)))
            }
        }
    }

    /// The grounder of episode `episode`'s first frame `rgb`; `None` while the oracle still waits for the frame's
    /// segmentation. The detector runs here and its boxes are logged.
    fn grounder(&self, episode: u64, rgb: &image::RgbImage, queries: &[String], pending: &Pending) -> eyre::Result<Option<Box<dyn Grounder>>> {
        Ok(match (self, &pending.segmentation) {
            (Source::Boxes(boxes), _) => Some(Box::new(boxes.clone())),
            (Source::Detector(detector), _) => {
                let (detections, masks) = detector.ground_with_detections(rgb, queries)?;
                for (query, d) in queries.iter().zip(&detections) {
                    eprintln!("grounding: episode {episode}: {query:?} box {:?} score {:.3}", d.bbox.map(f32::round), d.score);
                }
                Some(Box::new(FixedMasks(masks)))
            }
            (Source::Oracle, Some(seg)) => {
                let objects = pending.start.as_ref().map(|(_, objects)| objects.clone()).unwrap_or_default();
                Some(Box::new(OracleGrounder::new(objects, seg.width, seg.height, seg.data.clone())?))
            }
            (Source::Oracle, None) => None,
        })
    }
}

impl Pending {
    /// Takes in one input of this episode: the start event's queries and objects, the earliest image, and the
    /// segmentation of that image's frame.
    fn accept(&mut self, header: Header, input: Part) {
        match input {
            Part::Start(queries, objects) => self.start = Some((queries, objects)),
            Part::Image(image) => {
                if self.image.as_ref().is_none_or(|(first, _)| header.frame < first.frame) {
                    self.image = Some((header, image));
                }
            }
            Part::Segmentation(seg) => {
                if self.image.as_ref().is_none_or(|(first, _)| first.frame == header.frame) && self.segmentation.is_none() {
                    self.segmentation = Some(seg);
                }
            }
            Part::Other => {}
        }
    }
}

/// What one input brings.
enum Part {
    Start(Vec<String>, Vec<ObjectInfo>),
    Image(Image),
    Segmentation(Segmentation),
    /// An episode event other than the start.
    Other,
}

/// One input as its header and what it brings.
fn decode_input(id: &str, metadata: &dora_node_api::Metadata, data: &dora_node_api::DoraArray) -> eyre::Result<(Header, Part)> {
    Ok(match id {
        "episode" => match decode::<EpisodeEvent>(metadata, data)? {
            (h, EpisodeEvent::Start { text_query, objects, .. }) => (h, Part::Start(text_query, objects)),
            (h, _) => (h, Part::Other),
        },
        "image" => {
            let (h, image) = decode::<Image>(metadata, data)?;
            (h, Part::Image(image))
        }
        "segmentation" => {
            let (h, seg) = decode::<Segmentation>(metadata, data)?;
            (h, Part::Segmentation(seg))
        }
        other => eyre::bail!("grounding: unexpected input `{other}`"),
    })
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
    let source = Source::from_env(&device)?;
    let encoder = GridEncoder::load(weights.as_ref(), 2, &device)?;
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut episodes: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut latency = Latency::default();
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        let (header, part) = decode_input(id.as_str(), &metadata, &data)?;
        let episode = header.episode;
        let e = episodes.entry(episode).or_default();
        e.accept(header, part);
        if e.done {
            continue;
        }
        let (Some((queries, _)), Some((h, image))) = (&e.start, &e.image) else { continue };
        let start = Instant::now();
        let rgb = image::RgbImage::from_raw(image.width, image.height, image.data.clone())
            .ok_or_else(|| eyre::eyre!("grounding: image is not {}x{} rgb8", image.width, image.height))?;
        let Some(grounder) = source.grounder(episode, &rgb, queries, e)? else { continue };
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
