//! `expert` node: the scripted, privileged-state expert of `glue::sim::expert` as a policy in the graph.
//!
//! Inputs: `episode` (start events carry the task), `robot_state`, `object_poses` (privileged, from the simulator,
//! every frame: the expert plans on frame 0 and re-plans a pick when the carried object leaves the hand).
//! Output: `action` for the frame of the robot state it answers. Settings: `CONTROL_HZ` (default 10).

use dora_bridge::{Input, decode, env_or, next_input, send};
use dora_node_api::DoraNode;
use glue::msg::{Action, EpisodeEvent, Header, ObjectPoses, RobotState};
use glue::sim::expert::Expert;
use glue::sim::task::TaskKind;

/// Per-episode state: the task, the latest robot state and object poses, then the planned expert. Inputs from
/// different outputs may interleave in any order, so everything is keyed by the header's episode index, and the
/// expert answers a frame once it has both its robot state and its object poses (it watches the carried object).
#[derive(Default)]
struct Episode {
    id: u64,
    task: Option<TaskKind>,
    poses: Option<(Header, ObjectPoses)>,
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

    /// The expert's action for the frame whose robot state and object poses have both arrived, planning first
    /// (on frame 0) once the task is known.
    fn act(&mut self, control_hz: f32) -> eyre::Result<Option<(Header, Action)>> {
        let (Some(task), Some((hp, _)), Some((hs, _))) = (self.task, &self.poses, &self.state) else { return Ok(None) };
        if hp.frame != hs.frame {
            return Ok(None);
        }
        let ((_, poses), (h, state)) = (self.poses.take().expect("checked"), self.state.take().expect("checked"));
        if self.expert.is_none() {
            self.expert = Some(Expert::new(task, &poses, &state, control_hz)?);
        }
        let action = self.expert.as_mut().expect("planned above").act(&state, &poses)?;
        Ok(Some((h, action)))
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
                if current.is_current(&h) {
                    current.poses = Some((h, poses));
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
        if let Some((h, action)) = current.act(control_hz)? {
            send(&mut node, "action", &h, &action)?;
        }
    }
    Ok(())
}
