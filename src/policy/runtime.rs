//! The closed loop's moving parts, shared by the dora nodes (`encoder`, `policy`) and `glue eval`, so the graph
//! and the in-process evaluation run the same code:
//!
//! * [`ConditionBuffer`]: the last `n_obs_steps` per-step conditions of an episode, concatenated oldest first into
//!   the U-Net's global condition (padded with the first step at an episode's start, as training pads);
//! * [`ActionQueue`]: action scheduling from chunks to per-tick commands. A chunk's `n_action_steps` actions are due
//!   at the planning frame's timestamp plus one control period each; an action whose due time is more than
//!   `max_lag` behind the current tick is dropped as stale (a slow policy never replays old plans), and the queue asks
//!   for a new chunk when it runs dry (Diffusion Policy's receding horizon);
//! * [`safe_action`]: the last check before a command leaves: gripper clamped into its range, quaternion
//!   normalised, anything non-finite refused.

use std::collections::VecDeque;

use crate::msg::Action;

/// The last `n_obs_steps` per-step conditions.
#[derive(Debug, Clone)]
pub struct ConditionBuffer {
    steps: VecDeque<Vec<f32>>,
    n_obs_steps: usize,
}

impl ConditionBuffer {
    pub fn new(n_obs_steps: usize) -> Self {
        assert!(n_obs_steps >= 1, "n_obs_steps must be at least 1");
        Self { steps: VecDeque::with_capacity(n_obs_steps), n_obs_steps }
    }

    /// Forgets the episode.
    pub fn reset(&mut self) {
        self.steps.clear();
    }

    /// Adds the newest step and returns the global condition `[n_obs_steps · step_dim]`.
    pub fn push(&mut self, step: Vec<f32>) -> Vec<f32> {
        if self.steps.len() == self.n_obs_steps {
            self.steps.pop_front();
        }
        self.steps.push_back(step);
        let pad = self.n_obs_steps - self.steps.len();
        let first = self.steps.front().expect("just pushed");
        std::iter::repeat_n(first, pad).chain(self.steps.iter()).flatten().copied().collect()
    }
}

/// Planned actions with their due times.
#[derive(Debug, Clone)]
pub struct ActionQueue {
    queue: VecDeque<(u64, [f32; 8])>,
    period_ns: u64,
    max_lag_ns: u64,
}

impl ActionQueue {
    /// A queue for a `control_hz` loop that drops actions more than `max_lag_ns` overdue.
    pub fn new(control_hz: f32, max_lag_ns: u64) -> Self {
        Self { queue: VecDeque::new(), period_ns: (1e9 / f64::from(control_hz)).round() as u64, max_lag_ns }
    }

    /// Forgets every planned action.
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// Whether a new chunk is needed at `now_ns` (nothing due now or later).
    pub fn needs_chunk(&mut self, now_ns: u64) -> bool {
        self.drop_stale(now_ns);
        self.queue.is_empty()
    }

    /// Queues a chunk planned from the observation taken at `planned_ns`, replacing what was left.
    pub fn push_chunk(&mut self, planned_ns: u64, actions: &[[f32; 8]]) {
        self.queue = actions.iter().enumerate().map(|(k, a)| (planned_ns + k as u64 * self.period_ns, *a)).collect();
    }

    /// The action for the tick at `now_ns`: the first one that is not stale.
    pub fn next(&mut self, now_ns: u64) -> Option<[f32; 8]> {
        self.drop_stale(now_ns);
        self.queue.pop_front().map(|(_, a)| a)
    }

    fn drop_stale(&mut self, now_ns: u64) {
        while self.queue.front().is_some_and(|&(due, _)| due + self.max_lag_ns < now_ns) {
            self.queue.pop_front();
        }
    }
}

/// The command a policy output becomes, or why it cannot be sent: gripper clamped into `[0, 0.08]` m, quaternion
/// normalised ([`Action::normalized`]), non-finite values refused.
pub fn safe_action(a: [f32; 8]) -> eyre::Result<Action> {
    let mut action = Action::from_array(a);
    eyre::ensure!(action.gripper.is_finite(), "policy action has a non-finite gripper: {a:?}");
    action.gripper = action.gripper.clamp(0.0, 0.08);
    action.normalized().map_err(|e| eyre::eyre!("policy action refused: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_buffer_pads_then_slides() {
        let mut b = ConditionBuffer::new(2);
        assert_eq!(b.push(vec![1.0, 1.5]), vec![1.0, 1.5, 1.0, 1.5]);
        assert_eq!(b.push(vec![2.0, 2.5]), vec![1.0, 1.5, 2.0, 2.5]);
        assert_eq!(b.push(vec![3.0, 3.5]), vec![2.0, 2.5, 3.0, 3.5]);
        b.reset();
        assert_eq!(b.push(vec![4.0, 4.5]), vec![4.0, 4.5, 4.0, 4.5]);
    }

    #[test]
    fn queue_executes_in_order_and_drops_stale_actions() {
        let ms = 1_000_000;
        let mut q = ActionQueue::new(10.0, 50 * ms);
        assert!(q.needs_chunk(0));
        let chunk: Vec<[f32; 8]> = (0..4).map(|k| [k as f32; 8]).collect();
        q.push_chunk(0, &chunk);
        assert_eq!(q.next(0).unwrap()[0], 0.0);
        assert_eq!(q.next(100 * ms).unwrap()[0], 1.0);
        // 250 ms later than the plan's tick 2 (due at 200 ms): tick 2 is stale, tick 3 (due 300 ms) is on time.
        assert_eq!(q.next(300 * ms).unwrap()[0], 3.0);
        assert!(q.needs_chunk(400 * ms));
        q.push_chunk(400 * ms, &chunk);
        // A whole chunk overdue is dropped entirely.
        assert!(q.needs_chunk(2000 * ms));
        assert!(q.next(2000 * ms).is_none());
    }

    #[test]
    fn safe_action_clamps_normalises_and_refuses() {
        let a = safe_action([0.4, 0.0, 0.2, 0.0, 0.0, 0.0, 2.0, 0.09]).unwrap();
        assert_eq!(a.gripper, 0.08);
        assert!((a.orientation[3] - 1.0).abs() < 1e-6);
        assert!(safe_action([f32::NAN, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0, 0.04]).is_err());
        assert!(safe_action([0.4, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0, f32::NAN]).is_err());
        assert!(safe_action([0.4, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.04]).is_err());
    }
}
