//! `encoder` node: observation -> the policy's global condition, every frame (paper sec. III-C, eq. 3).
//!
//! Settings: `CHECKPOINT` (a checkpoint folder, see `glue::policy::checkpoint`; `--device` is the CPU here).
//! Inputs: `episode` (a start resets the condition history), `image`, `robot_state`, and for GLUE `keypoints`
//! (`[N, 3]` tracks: the tracker's, or the simulator's `oracle_tracks`). Inputs of one frame may arrive in any
//! order: they are joined by the header's (episode, frame).
//! Output: `condition` (`[n_obs_steps · step_dim]`) with the header of the frame it ends at. At the end of the run
//! the node prints its per-frame latency (mean, p95).

use std::collections::BTreeMap;
use std::time::Instant;

use dora_bridge::{Input, Latency, decode, next_input, send};
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
    let mut episode = 0u64;
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut latency = Latency::default();
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        let header = match id.as_str() {
            "episode" => {
                let (h, event) = decode::<EpisodeEvent>(&metadata, &data)?;
                if matches!(event, EpisodeEvent::Start { .. }) && h.episode >= episode {
                    episode = h.episode;
                    buffer.reset();
                    pending.clear();
                }
                continue;
            }
            "image" => {
                let (h, image) = decode::<Image>(&metadata, &data)?;
                pending.entry(h.frame).or_default().image = Some(image);
                h
            }
            "robot_state" => {
                let (h, state) = decode::<RobotState>(&metadata, &data)?;
                pending.entry(h.frame).or_default().state = Some(state);
                h
            }
            "keypoints" => {
                let (h, keypoints) = decode::<Keypoints>(&metadata, &data)?;
                pending.entry(h.frame).or_default().keypoints = Some(keypoints);
                h
            }
            other => eyre::bail!("encoder: unexpected input `{other}`"),
        };
        if header.episode != episode {
            pending.remove(&header.frame);
            continue;
        }
        let entry = pending.get_mut(&header.frame).expect("inserted above");
        entry.header = Some(header);
        let ready = entry.image.is_some() && entry.state.is_some() && (!glue || entry.keypoints.is_some());
        if !ready {
            continue;
        }
        let Pending { header: Some(h), image: Some(image), state: Some(state), keypoints } =
            pending.remove(&header.frame).expect("present")
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
