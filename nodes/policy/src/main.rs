//! `policy` node: global condition -> action chunks (U-Net + DDIM) -> one command per control tick.
//!
//! Settings: `CHECKPOINT` (the encoder's), `SEED` (sampling noise: episode i draws from SEED + i; default 0),
//! `CONTROL_HZ` (default 10), `MAX_LAG_MS` (planned actions more overdue than this are dropped; default 50),
//! `TEMPORAL_ENSEMBLE` (ACT's coefficient `m`, e.g. 0.01: a chunk every tick, overlapping predictions averaged;
//! empty or unset: execute each chunk's `n_action_steps` actions).
//! Inputs: `condition` (from `encoder`), `robot_state` (for the hold command), `episode` (a newer episode,
//! announced by its start or its first condition, clears the plan; the start of an episode of a task other than
//! the one in the checkpoint's `trained_on.json` stops the node with an error).
//! Outputs: `action_chunk` (each newly sampled chunk, `[n_action_steps, 8]`) and `action` for every condition's
//! frame. Scheduling is `glue::policy::runtime::ActionQueue`; every command passes `safe_action` first, and when a
//! command cannot be made valid the node sends a hold at the measured pose instead: invalid data never moves the
//! arm (each hold is logged with its episode and frame). At the end of the run it prints its per-tick latency and
//! that of chunk sampling (mean, p95).

use std::time::Instant;

use dora_bridge::{CurrentEpisode, EpisodeOrder, Input, Latency, decode, env_or, next_input, send};
use dora_node_api::DoraNode;
use eyre::WrapErr;
use glue::msg::{Action, ActionChunk, Condition, EpisodeEvent, RobotState};
use glue::policy::Policy;
use glue::policy::runtime::{ActionQueue, safe_action};
use rand_chacha::rand_core::SeedableRng;

/// Holding the measured end-effector pose and gripper opening.
fn hold(state: &RobotState) -> Action {
    Action { position: state.ee_position, orientation: state.ee_orientation, gripper: state.gripper.clamp(0.0, 0.08) }
}

/// Episode i samples from SEED + i, as `glue eval` does, so both give the same episodes.
fn episode_rng(seed: u64, episode: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(episode))
}

fn main() -> eyre::Result<()> {
    let checkpoint = std::env::var("CHECKPOINT").map_err(|_| eyre::eyre!("policy: set CHECKPOINT to a checkpoint folder"))?;
    let policy = Policy::load(checkpoint.as_ref(), &burn::tensor::Device::flex())?;
    let seed: u64 = env_or("SEED", 0)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ensemble = match std::env::var("TEMPORAL_ENSEMBLE").unwrap_or_default().trim() {
        "" => None,
        m => Some(m.parse::<f32>().map_err(|e| eyre::eyre!("policy: TEMPORAL_ENSEMBLE={m:?}: expected a number ({e})"))?),
    };
    let mut queue = ActionQueue::new(env_or("CONTROL_HZ", 10.0)?, env_or::<u64>("MAX_LAG_MS", 50)? * 1_000_000)
        .with_temporal_ensemble(ensemble)?;
    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut current = CurrentEpisode::default();
    let mut state: Option<(u64, RobotState)> = None;
    let (mut latency, mut chunk_latency) = (Latency::default(), Latency::default());
    let mut holds = 0u64;
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        match id.as_str() {
            "episode" => {
                let (h, event) = decode::<EpisodeEvent>(&metadata, &data)?;
                if let EpisodeEvent::Start { task, .. } = &event {
                    policy.check_task(task).wrap_err_with(|| format!("policy: episode {}: CHECKPOINT={checkpoint}", h.episode))?;
                }
                if current.observe(h.episode) == EpisodeOrder::New {
                    queue.clear();
                    rng = episode_rng(seed, h.episode);
                }
            }
            "robot_state" => {
                let (h, s) = decode::<RobotState>(&metadata, &data)?;
                state = Some((h.frame, s));
            }
            "condition" => {
                let (h, condition) = decode::<Condition>(&metadata, &data)?;
                match current.observe(h.episode) {
                    EpisodeOrder::Stale => continue,
                    EpisodeOrder::New => {
                        queue.clear();
                        rng = episode_rng(seed, h.episode);
                    }
                    EpisodeOrder::Current => {}
                }
                let start = Instant::now();
                if queue.needs_chunk(h.timestamp_ns) {
                    let actions = policy.plan(&condition.values, &mut rng)?;
                    chunk_latency.record(start);
                    queue.push_chunk(h.timestamp_ns, &actions);
                    let chunk: Result<Vec<Action>, _> = actions.iter().map(|&a| safe_action(a)).collect();
                    if let Ok(actions) = chunk {
                        send(&mut node, "action_chunk", &h, &ActionChunk { actions })?;
                    }
                }
                let action = match queue.next(h.timestamp_ns).map(safe_action) {
                    Some(Ok(action)) => action,
                    other => {
                        let Some((_, s)) = state.as_ref() else {
                            eyre::bail!("policy: no valid action and no robot_state to hold at (frame {})", h.frame)
                        };
                        holds += 1;
                        match other {
                            Some(Err(e)) => eprintln!("policy: episode {} frame {}: {e:#}; holding", h.episode, h.frame),
                            _ => eprintln!("policy: episode {} frame {}: no planned action is due; holding", h.episode, h.frame),
                        }
                        hold(s)
                    }
                };
                latency.record(start);
                send(&mut node, "action", &h, &action)?;
            }
            other => eyre::bail!("policy: unexpected input `{other}`"),
        }
    }
    eprintln!("policy: {} ({holds} holds); chunks: {}", latency.summary(), chunk_latency.summary().replace("ticks", "chunks"));
    Ok(())
}
