//! The closed loop's moving parts, shared by the dora nodes (`encoder`, `policy`) and `glue eval`, so the graph
//! and the in-process evaluation run the same code:
//!
//! * [`ConditionBuffer`]: the last `n_obs_steps` per-step conditions of an episode, concatenated oldest first into
//!   the U-Net's global condition (padded with the first step at an episode's start, as training pads);
//! * [`ActionQueue`]: action scheduling from chunks to per-tick commands. A chunk's `n_action_steps` actions are due
//!   at the planning frame's timestamp plus one control period each; an action whose due time is more than
//!   `max_lag` behind the current tick is dropped as stale (a slow policy never replays old plans), and the queue asks
//!   for a new chunk when it runs dry (Diffusion Policy's receding horizon). With temporal ensembling (ACT, Zhao et
//!   al. 2023, sec. 3.3) it asks for a chunk every tick instead and commands the weighted mean of every chunk's
//!   prediction for the tick, weights `exp(-m·i)` with `i = 0` for the oldest chunk;
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
    /// Chunks still in play, oldest first: the planning timestamp and the actions, one control period apart.
    chunks: VecDeque<(u64, Vec<[f32; 8]>)>,
    period_ns: u64,
    max_lag_ns: u64,
    /// Temporal-ensembling coefficient `m`; `None` executes each chunk to its end.
    ensemble: Option<f32>,
}

impl ActionQueue {
    /// A queue for a `control_hz` loop that executes whole chunks and drops actions more than `max_lag_ns` overdue.
    pub fn new(control_hz: f32, max_lag_ns: u64) -> Self {
        let period_ns = (1e9 / f64::from(control_hz)).round() as u64;
        Self { chunks: VecDeque::new(), period_ns, max_lag_ns, ensemble: None }
    }

    /// Temporal ensembling with coefficient `m` (ACT uses 0.01; larger values favour older chunks), or whole
    /// chunks for `None`.
    pub fn with_temporal_ensemble(mut self, m: Option<f32>) -> eyre::Result<Self> {
        if let Some(m) = m {
            eyre::ensure!(m.is_finite() && m >= 0.0, "temporal-ensemble coefficient must be finite and >= 0, got {m}");
        }
        self.ensemble = m;
        Ok(self)
    }

    /// Forgets every planned action.
    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    /// Whether a new chunk is needed at `now_ns`: every tick when ensembling, otherwise when nothing is due now or
    /// later.
    pub fn needs_chunk(&mut self, now_ns: u64) -> bool {
        self.drop_stale(now_ns);
        self.ensemble.is_some() || self.chunks.is_empty()
    }

    /// Adds a chunk planned from the observation taken at `planned_ns`; without ensembling it replaces what was
    /// left of the previous one.
    pub fn push_chunk(&mut self, planned_ns: u64, actions: &[[f32; 8]]) {
        if self.ensemble.is_none() {
            self.chunks.clear();
        }
        self.chunks.push_back((planned_ns, actions.to_vec()));
    }

    /// The action for the tick at `now_ns`: the first one that is not stale, or with ensembling the weighted mean
    /// of every chunk's action for this tick (quaternions sign-aligned to the oldest before averaging; the caller
    /// normalises through [`safe_action`]).
    pub fn next(&mut self, now_ns: u64) -> Option<[f32; 8]> {
        self.drop_stale(now_ns);
        match self.ensemble {
            None => {
                let (planned, actions) = self.chunks.front_mut()?;
                let action = actions.remove(0);
                *planned += self.period_ns;
                if actions.is_empty() {
                    self.chunks.pop_front();
                }
                Some(action)
            }
            Some(m) => {
                let votes: Vec<[f32; 8]> = self.chunks.iter().filter_map(|c| self.action_at(c, now_ns)).collect();
                let first = *votes.first()?;
                let (mut sum, mut total) = ([0.0f32; 8], 0.0f32);
                for (i, mut a) in votes.into_iter().enumerate() {
                    let dot: f32 = (3..7).map(|d| a[d] * first[d]).sum();
                    if dot < 0.0 {
                        (3..7).for_each(|d| a[d] = -a[d]);
                    }
                    let w = (-m * i as f32).exp();
                    sum.iter_mut().zip(a).for_each(|(s, v)| *s += w * v);
                    total += w;
                }
                Some(sum.map(|s| s / total))
            }
        }
    }

    /// A chunk's action for the tick at `now_ns`: the one due nearest to it, if due within `max_lag` of it.
    fn action_at(&self, (planned, actions): &(u64, Vec<[f32; 8]>), now_ns: u64) -> Option<[f32; 8]> {
        let k = (now_ns.checked_sub(*planned)? + self.period_ns / 2) / self.period_ns;
        let due = planned + k * self.period_ns;
        (due.abs_diff(now_ns) <= self.max_lag_ns).then(|| actions.get(k as usize).copied()).flatten()
    }

    /// Drops the actions more than `max_lag` overdue, and chunks with none left.
    fn drop_stale(&mut self, now_ns: u64) {
        let (period, lag) = (self.period_ns, self.max_lag_ns);
        self.chunks.retain_mut(|(planned, actions)| {
            while !actions.is_empty() && *planned + lag < now_ns {
                actions.remove(0);
                *planned += period;
            }
            !actions.is_empty()
        });
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
    fn temporal_ensemble_averages_overlapping_chunks_with_act_weights() {
        let ms = 1_000_000;
        let m = 0.5f32;
        let mut q = ActionQueue::new(10.0, 50 * ms).with_temporal_ensemble(Some(m)).unwrap();
        let chunk = |x: f32, qw: f32| -> Vec<[f32; 8]> { (0..3).map(|k| [x + k as f32, 0., 0., 0., 0., 0., qw, 0.04]).collect() };
        assert!(q.needs_chunk(0));
        q.push_chunk(0, &chunk(0.0, 1.0));
        assert_eq!(q.next(0).unwrap()[0], 0.0);
        // A chunk every tick: at 100 ms the old chunk says 1.0, the new one 10.0 (and the opposite-sign quaternion,
        // the same rotation, which must not cancel out).
        assert!(q.needs_chunk(100 * ms));
        q.push_chunk(100 * ms, &chunk(10.0, -1.0));
        let a = q.next(100 * ms).unwrap();
        let w1 = (-m).exp();
        assert!((a[0] - (1.0 + w1 * 10.0) / (1.0 + w1)).abs() < 1e-5, "{a:?}");
        assert!((a[6] - 1.0).abs() < 1e-6, "{a:?}");
        // At 300 ms the first chunk has run out; only the second votes.
        assert_eq!(q.next(300 * ms).unwrap()[0], 12.0);
        // Nothing left at 500 ms.
        assert!(q.next(500 * ms).is_none());
        assert!(ActionQueue::new(10.0, 0).with_temporal_ensemble(Some(f32::NAN)).is_err());
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
