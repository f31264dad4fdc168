//! `encoder` node: observation -> the policy's global condition, every frame (paper sec. III-C, eq. 3).
//!
//! Settings: `CHECKPOINT` (a checkpoint folder, see `glue::policy::checkpoint`; `--device` is the CPU here).
//! Inputs: `episode` (a newer episode, announced by its start or by its first frame, resets the condition
//! history), `image`, `robot_state`, and for GLUE `keypoints` (`[N, 3]` tracks: the tracker's, or the simulator's `oracle_tracks`). Inputs of one frame may arrive in any
//! order: they are joined by the header's (episode, frame).
//! Output: `condition` (`[n_obs_steps · step_dim]`) with the header of the frame it ends at. At the end of the run
//! the node prints its per-frame latency (mean, p95).

use std::collections::BTreeMap;
use std::time::Instant;

use dora_bridge::{CurrentEpisode, EpisodeOrder, Input, Latency, decode, next_input, send};
use dora_node_api::DoraNode;
use glue::msg::{Condition, EpisodeEvent, Header, Image, Keypoints, RobotState};
use glue::policy::Policy;
use glue::policy::observation::Frame;
use glue::policy::runtime::ConditionBuffer;

/// What has arrived for one frame.
#[derive(Default)]
struct Pending {
    header: Option<Header>,
    image: Option<Image>,
    state: Option<RobotState>,
    keypoints: Option<Keypoints>,
}

fn main() -> eyre::Result<()> {
    let checkpoint = std::env::var("CHECKPOINT").map_err(|_| eyre::eyre!("encoder: set CHECKPOINT to a checkpoint folder"))?;
    let policy = Policy::load(checkpoint.as_ref(), &burn::tensor::Device::flex())?;
    let glue = policy.config.policy.uses_key_patches();
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut buffer = ConditionBuffer::new(policy.config.n_obs_steps);
    let mut current = CurrentEpisode::default();
    // Inputs of one frame, joined by (episode, frame).
    let mut pending: BTreeMap<(u64, u64), Pending> = BTreeMap::new();
    let mut latency = Latency::default();
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        let mut part = Pending::default();
        let header = match id.as_str() {
            "episode" => decode::<EpisodeEvent>(&metadata, &data)?.0,
            "image" => {
                let (h, image) = decode::<Image>(&metadata, &data)?;
                part.image = Some(image);
                h
            }
            "robot_state" => {
                let (h, state) = decode::<RobotState>(&metadata, &data)?;
                part.state = Some(state);
                h
            }
            "keypoints" => {
                let (h, keypoints) = decode::<Keypoints>(&metadata, &data)?;
                part.keypoints = Some(keypoints);
                h
            }
            other => eyre::bail!("encoder: unexpected input `{other}`"),
        };
        match current.observe(header.episode) {
            EpisodeOrder::Stale => continue,
            EpisodeOrder::New => {
                buffer.reset();
                pending.retain(|&(e, _), _| e >= header.episode);
            }
            EpisodeOrder::Current => {}
        }
        if id.as_str() == "episode" {
            continue;
        }
        let key = (header.episode, header.frame);
        let entry = pending.entry(key).or_default();
        entry.header = Some(header);
        entry.image = entry.image.take().or(part.image);
        entry.state = entry.state.take().or(part.state);
        entry.keypoints = entry.keypoints.take().or(part.keypoints);
        let ready = entry.image.is_some() && entry.state.is_some() && (!glue || entry.keypoints.is_some());
        if !ready {
            continue;
        }
        let Pending { header: Some(h), image: Some(image), state: Some(state), keypoints } =
            pending.remove(&key).expect("present")
        else {
            unreachable!("checked ready")
        };
        let start = Instant::now();
        let keypoints = keypoints.map(|k| k.points).unwrap_or_default();
        let rgb = image::RgbImage::from_raw(image.width, image.height, image.data)
            .ok_or_else(|| eyre::eyre!("encoder: image is not {}x{} rgb8", image.width, image.height))?;
        let features = policy.key_features(&rgb, &keypoints)?;
        let state = state.to_array();
        let frame = Frame {
            image: rgb.as_raw(),
            width: rgb.width(),
            height: rgb.height(),
            state: &state,
            keypoints: &keypoints,
            key_features: features.as_deref(),
        };
        let step = policy.step_condition(&frame).map_err(|e| eyre::eyre!("encoder: frame {}: {e:#}", h.frame))?;
        let condition = Condition { values: buffer.push(step) };
        latency.record(start);
        send(&mut node, "condition", &h, &condition)?;
    }
    eprintln!("encoder: {}", latency.summary());
    Ok(())
}
