//! `expert` node: the scripted, privileged-state expert of `glue::sim::expert` as a policy in the graph.
//!
//! Inputs: `episode` (start events carry the task), `robot_state`, `object_poses` (privileged, from the simulator).
//! Output: `action` for the frame of the robot state it answers. Settings: `CONTROL_HZ` (default 10).

use dora_bridge::{Input, decode, env_or, next_input, send};
use dora_node_api::DoraNode;
use glue::msg::{EpisodeEvent, Header, ObjectPoses, RobotState};
use glue::sim::expert::Expert;
use glue::sim::task::TaskKind;

/// Per-episode state: the task, the frame-0 inputs needed to plan, then the planned expert. Inputs from different
/// outputs may interleave in any order, so everything is keyed by the header's episode index.
#[derive(Default)]
struct Episode {
    id: u64,
    task: Option<TaskKind>,
    poses: Option<ObjectPoses>,
    state: Option<(Header, RobotState)>,
    expert: Option<Expert>,
}

impl Episode {
    /// Starts buffering for a newer episode; messages of older episodes are dropped.
    fn is_current(&mut self, h: &Header) -> bool {
        if h.episode > self.id {
            *self = Episode { id: h.episode, ..Episode::default() };
        }
        h.episode == self.id
    }

    /// Plans once the task, the object poses and the robot state of frame 0 are all known.
    fn plan(&mut self, control_hz: f32) -> eyre::Result<()> {
        if let (None, Some(task), Some(poses), Some((_, state))) = (&self.expert, self.task, &self.poses, &self.state) {
            self.expert = Some(Expert::new(task, poses, state, control_hz)?);
        }
        Ok(())
    }
}

fn main() -> eyre::Result<()> {
    let control_hz: f32 = env_or("CONTROL_HZ", 10.0)?;
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut current = Episode::default();
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        match id.as_str() {
            "episode" => {
                if let (h, EpisodeEvent::Start { task, .. }) = decode::<EpisodeEvent>(&metadata, &data)? {
                    if current.is_current(&h) {
                        current.task = Some(task.parse().map_err(|e: String| eyre::eyre!(e))?);
                    }
                }
            }
            "object_poses" => {
                let (h, poses) = decode::<ObjectPoses>(&metadata, &data)?;
                if current.is_current(&h) && h.frame == 0 {
                    current.poses = Some(poses);
                }
            }
            "robot_state" => {
                let (h, state) = decode::<RobotState>(&metadata, &data)?;
                if current.is_current(&h) {
                    current.state = Some((h, state));
                }
            }
            other => eyre::bail!("expert: unexpected input `{other}`"),
        }
        current.plan(control_hz)?;
        if let Some(expert) = current.expert.as_mut() {
            if let Some((h, state)) = current.state.take() {
                send(&mut node, "action", &h, &expert.act(&state))?;
            }
        }
    }
    Ok(())
}
