//! `encoder` node: observation -> the policy's global condition, every frame (paper sec. III-C, eq. 3).
//!
//! Settings: `CHECKPOINT` (a checkpoint folder, see `glue::policy::checkpoint`; `--device` is the CPU here).
//! Inputs: `episode` (a newer episode, announced by its start or by its first frame, resets the condition
//! history), `image`, `robot_state`, for GLUE and the keypoint-coordinate diagnostic (`glue train --policy
//! keypoints`) `keypoints` (`[N, 3]` tracks: the tracker's, or the simulator's `oracle_tracks`), and for the
//! privileged-state diagnostic (`glue train --policy state`) `object_poses` (the simulator's). The two diagnostics
//! need no `image`. Inputs a policy does not read are ignored. Inputs of one frame may
//! arrive in any order: they are joined by the header's (episode, frame).
//! Output: `condition` (`[n_obs_steps · step_dim]`) with the header of the frame it ends at. At the end of the run
//! the node prints its per-frame latency (mean, p95).

use std::collections::BTreeMap;
use std::time::Instant;

use dora_bridge::{CurrentEpisode, EpisodeOrder, Input, Latency, decode, next_input, send};
use dora_node_api::DoraNode;
use glue::msg::{Condition, EpisodeEvent, Header, Image, Keypoints, ObjectPoses, RobotState};
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
    object_poses: Option<ObjectPoses>,
}

/// Which inputs the checkpoint's policy reads besides the robot state.
#[derive(Clone, Copy)]
struct Reads {
    /// GLUE's key patches (from the image at the keypoints).
    key_patches: bool,
    keypoints: bool,
    images: bool,
    object_poses: bool,
}

impl Reads {
    fn of(policy: &Policy) -> Self {
        let kind = policy.config.policy;
        Self {
            key_patches: kind.uses_key_patches(),
            keypoints: policy.config.reads_keypoints(),
            images: kind.uses_images(),
            object_poses: kind.uses_object_poses(),
        }
    }
}

impl Pending {
    /// Adds what `part` brings: its header (the latest input's; all share episode and frame), and the payloads
    /// this frame still lacks.
    fn merge(&mut self, part: Pending) {
        self.header = part.header.or(self.header.take());
        self.image = self.image.take().or(part.image);
        self.state = self.state.take().or(part.state);
        self.keypoints = self.keypoints.take().or(part.keypoints);
        self.object_poses = self.object_poses.take().or(part.object_poses);
    }

    /// Whether every input the policy reads has arrived.
    fn ready(&self, reads: Reads) -> bool {
        self.state.is_some()
            && (!reads.images || self.image.is_some())
            && (!reads.keypoints || self.keypoints.is_some())
            && (!reads.object_poses || self.object_poses.is_some())
    }

    /// The step condition of this complete frame (eq. 3): key features at the keypoints (GLUE), then the policy's
    /// encoders over the frame.
    fn step_condition(self, policy: &Policy, reads: Reads) -> eyre::Result<(Header, Vec<f32>)> {
        let Pending { header: Some(h), image, state: Some(state), keypoints, object_poses } = self else {
            eyre::bail!("encoder: a frame without its header or robot state")
        };
        let keypoints = keypoints.map(|k| k.points).unwrap_or_default();
        let rgb = match image.filter(|_| reads.images) {
            Some(image) => image::RgbImage::from_raw(image.width, image.height, image.data)
                .ok_or_else(|| eyre::eyre!("encoder: image is not {}x{} rgb8", image.width, image.height))?,
            None => image::RgbImage::new(0, 0),
        };
        let features = if reads.key_patches { policy.key_features(&rgb, &keypoints)? } else { None };
        let state = state.to_array();
        let object_poses = object_poses.filter(|_| reads.object_poses).map(|p| p.poses).unwrap_or_default();
        let frame = Frame {
            image: rgb.as_raw(),
            width: rgb.width(),
            height: rgb.height(),
            state: &state,
            keypoints: &keypoints,
            key_features: features.as_deref(),
            object_poses: &object_poses,
        };
        let step = policy.step_condition(&frame).map_err(|e| eyre::eyre!("encoder: frame {}: {e:#}", h.frame))?;
        Ok((h, step))
    }
}

/// One input as the part of its frame it brings (nothing but the header for `episode`).
fn decode_input(id: &str, metadata: &dora_node_api::Metadata, data: &dora_node_api::DoraArray) -> eyre::Result<(Header, Pending)> {
    let mut part = Pending::default();
    let header = match id {
        "episode" => decode::<EpisodeEvent>(metadata, data)?.0,
        "image" => {
            let (h, image) = decode::<Image>(metadata, data)?;
            part.image = Some(image);
            h
        }
        "robot_state" => {
            let (h, state) = decode::<RobotState>(metadata, data)?;
            part.state = Some(state);
            h
        }
        "keypoints" => {
            let (h, keypoints) = decode::<Keypoints>(metadata, data)?;
            part.keypoints = Some(keypoints);
            h
        }
        "object_poses" => {
            let (h, object_poses) = decode::<ObjectPoses>(metadata, data)?;
            part.object_poses = Some(object_poses);
            h
        }
        other => eyre::bail!("encoder: unexpected input `{other}`"),
    };
    part.header = Some(header);
    Ok((header, part))
}

fn main() -> eyre::Result<()> {
    let checkpoint = std::env::var("CHECKPOINT").map_err(|_| eyre::eyre!("encoder: set CHECKPOINT to a checkpoint folder"))?;
    let policy = Policy::load(checkpoint.as_ref(), &burn::tensor::Device::flex())?;
    let reads = Reads::of(&policy);
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut buffer = ConditionBuffer::new(policy.config.n_obs_steps);
    let mut current = CurrentEpisode::default();
    // Inputs of one frame, joined by (episode, frame).
    let mut pending: BTreeMap<(u64, u64), Pending> = BTreeMap::new();
    let mut latency = Latency::default();
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        let (header, part) = decode_input(id.as_str(), &metadata, &data)?;
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
        entry.merge(part);
        if !entry.ready(reads) {
            continue;
        }
        let start = Instant::now();
        let (h, step) = pending.remove(&key).expect("present").step_condition(&policy, reads)?;
        let condition = Condition { values: buffer.push(step) };
        latency.record(start);
        send(&mut node, "condition", &h, &condition)?;
    }
    eprintln!("encoder: {}", latency.summary());
    Ok(())
}
