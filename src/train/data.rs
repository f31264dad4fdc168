//! Demonstrations for training: recorded episodes (Arrow, `recording`) read into memory, cut into training
//! samples the way Diffusion Policy's `SequenceSampler` does: for every tick `t`, the observation steps
//! `t - T_o + 1 ..= t` and the actions `t - T_o + 1 .. t - T_o + 1 + T_p`, indices clamped into the episode (the
//! first frame repeats before the start, the last action after the end).

use std::path::{Path, PathBuf};

use eyre::{Result, WrapErr, bail, ensure};
use rand::seq::SliceRandom;

use crate::recording::{Episode, list_episodes, read_episode};

/// Where a demonstration's keypoint tracks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeypointSource {
    /// The recording's `keypoints` column (perception pipeline: grounding + tracker).
    Tracker,
    /// The simulator's ground-truth point tracks (`oracle_tracks`).
    Oracle,
}

/// One successful episode in memory.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The recording it came from.
    pub path: PathBuf,
    /// Its task (`EpisodeInfo::task`).
    pub task: String,
    pub width: u32,
    pub height: u32,
    /// rgb8 frames.
    pub images: Vec<Vec<u8>>,
    /// Full robot state vectors ([`crate::msg::RobotState::to_array`]).
    pub states: Vec<[f32; 15]>,
    /// Actions ([`crate::msg::Action::to_array`]).
    pub actions: Vec<[f32; 8]>,
    /// Keypoints per frame (empty when not loaded).
    pub keypoints: Vec<Vec<[f32; 3]>>,
    /// The task objects' poses per frame (privileged-state policy; empty when not loaded).
    pub object_poses: Vec<Vec<[f32; 7]>>,
}

impl Demo {
    /// Ticks in the episode.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether the episode has no ticks.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// Reads every successful episode under `paths` (files or folders of `.arrow` recordings); failed episodes are
/// skipped and counted. With `keypoints`, each episode must carry the tracks (tracker column first, oracle
/// second) with one count across all episodes; the source used is returned. With `object_poses`, each episode
/// must carry the `object_poses` column on every tick.
pub fn load_demos(paths: &[PathBuf], keypoints: bool, object_poses: bool) -> Result<(Vec<Demo>, usize, Option<KeypointSource>)> {
    let mut demos: Vec<Demo> = Vec::new();
    let mut failed = 0;
    let mut source = None;
    for file in recording_files(paths)? {
        let episode = read_episode(&file).wrap_err_with(|| format!("cannot read {}", file.display()))?;
        if !episode.success {
            failed += 1;
            continue;
        }
        let this_source = if keypoints { Some(keypoint_source(&episode, &file)?) } else { None };
        if let (Some(a), Some(b)) = (source, this_source) {
            ensure!(a == b, "{}: keypoints come from {b:?} but earlier episodes used {a:?}", file.display());
        }
        source = source.or(this_source);
        let demo = Demo::from_episode(episode, file, this_source, object_poses)?;
        if let Some(first) = demos.first() {
            demo.check_alike(first)?;
        }
        if !demo.is_empty() {
            demos.push(demo);
        }
    }
    ensure!(!demos.is_empty(), "no successful episodes among the recordings ({failed} failed)");
    Ok((demos, failed, source))
}

/// The `.arrow` recordings named by `paths`: files, and the episodes of folders.
fn recording_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(list_episodes(path).wrap_err_with(|| format!("cannot list {}", path.display()))?);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("training data not found: {}", path.display());
        }
    }
    ensure!(!files.is_empty(), "no .arrow recordings under {paths:?}");
    Ok(files)
}

/// Where the keypoints of `episode` (read from `file`) come from: the tracker's column when every tick has it,
/// else the simulator's oracle tracks; an error when neither covers every tick.
fn keypoint_source(episode: &Episode, file: &Path) -> Result<KeypointSource> {
    if episode.ticks.iter().all(|t| t.keypoints.is_some()) {
        Ok(KeypointSource::Tracker)
    } else if episode.ticks.iter().all(|t| t.oracle_tracks.is_some()) {
        Ok(KeypointSource::Oracle)
    } else {
        bail!(
            "{}: the policy (GLUE, or the keypoint-coordinate diagnostic) needs keypoint tracks on every tick and \
             this episode has neither a keypoints nor an \
             oracle_tracks column (run `glue annotate` on it, or record from the simulator)",
            file.display()
        )
    }
}

impl Demo {
    /// The demonstration in `episode` (read from `path`), with the keypoints of `keypoints` (see
    /// [`keypoint_source`]) and, when `object_poses`, the task objects' poses, which every tick must carry.
    fn from_episode(episode: Episode, path: PathBuf, keypoints: Option<KeypointSource>, object_poses: bool) -> Result<Self> {
        ensure!(
            !object_poses || episode.ticks.iter().all(|t| t.object_poses.is_some()),
            "{}: the privileged-state policy needs the object_poses column on every tick, and this episode lacks it \
             (recorded before the column existed, or by a dataflow without sim/object_poses: record it again with \
             `glue record`)",
            path.display()
        );
        let n = episode.ticks.len();
        let mut demo = Demo {
            path,
            task: episode.info.task.clone(),
            width: episode.info.width,
            height: episode.info.height,
            images: Vec::with_capacity(n),
            states: Vec::with_capacity(n),
            actions: Vec::with_capacity(n),
            keypoints: Vec::new(),
            object_poses: Vec::new(),
        };
        for tick in episode.ticks {
            demo.images.push(tick.image);
            demo.states.push(tick.robot_state.to_array());
            demo.actions.push(tick.action.to_array());
            if object_poses {
                demo.object_poses.push(tick.object_poses.expect("checked"));
            }
            match keypoints {
                Some(KeypointSource::Tracker) => demo.keypoints.push(tick.keypoints.expect("checked").points),
                Some(KeypointSource::Oracle) => demo.keypoints.push(tick.oracle_tracks.expect("checked").points),
                None => {}
            }
        }
        Ok(demo)
    }

    /// Checks that this demonstration can train beside `first`: the same task, frame size and keypoint count.
    fn check_alike(&self, first: &Demo) -> Result<()> {
        if let (Some(ours), Some(theirs)) = (self.keypoints.first(), first.keypoints.first()) {
            ensure!(
                ours.len() == theirs.len(),
                "{}: {} keypoints per frame but earlier episodes have {} (train one task per run)",
                self.path.display(),
                ours.len(),
                theirs.len()
            );
        }
        ensure!(
            self.task == first.task,
            "{}: a {} episode among {} ones (train one task per run)",
            self.path.display(),
            self.task,
            first.task
        );
        ensure!(
            (self.width, self.height) == (first.width, first.height),
            "{}: frames are {}x{} but earlier episodes are {}x{}",
            self.path.display(),
            self.width,
            self.height,
            first.width,
            first.height
        );
        Ok(())
    }
}

/// A training sample: tick `t` of demo `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub demo: usize,
    pub t: usize,
}

/// The observation ticks of a sample (`T_o`, oldest first, clamped at 0).
pub fn obs_ticks(t: usize, n_obs_steps: usize) -> impl Iterator<Item = usize> {
    (0..n_obs_steps).map(move |i| (t + i + 1).saturating_sub(n_obs_steps))
}

/// The action ticks of a sample (`T_p`, from the first observation step, clamped into `0..len`).
pub fn action_ticks(t: usize, n_obs_steps: usize, horizon: usize, len: usize) -> impl Iterator<Item = usize> {
    let start = t as isize - n_obs_steps as isize + 1;
    (0..horizon as isize).map(move |i| (start + i).clamp(0, len as isize - 1) as usize)
}

/// Splits demos into training and validation sets by episode: a seeded shuffle, then the last
/// `round(fraction · n)` episodes (at least 1 when `fraction > 0` and there are 2 or more) validate.
pub fn split(n: usize, fraction: f32, rng: &mut impl rand::Rng) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut n_val = (fraction * n as f32).round() as usize;
    if fraction > 0.0 && n >= 2 {
        n_val = n_val.max(1);
    }
    n_val = n_val.min(n.saturating_sub(1));
    let val = order.split_off(n - n_val);
    (order, val)
}

/// Every tick of the given demos as a sample.
pub fn samples(demos: &[Demo], which: &[usize]) -> Vec<Sample> {
    which.iter().flat_map(|&d| (0..demos[d].len()).map(move |t| Sample { demo: d, t })).collect()
}

/// `path`'s file name for messages.
pub fn short(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn windows_follow_diffusion_policy() {
        assert_eq!(obs_ticks(0, 2).collect::<Vec<_>>(), vec![0, 0]);
        assert_eq!(obs_ticks(5, 2).collect::<Vec<_>>(), vec![4, 5]);
        // Actions start at the first observation step and repeat the last one past the end.
        assert_eq!(action_ticks(5, 2, 4, 100).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
        assert_eq!(action_ticks(0, 2, 4, 100).collect::<Vec<_>>(), vec![0, 0, 1, 2]);
        assert_eq!(action_ticks(9, 2, 4, 10).collect::<Vec<_>>(), vec![8, 9, 9, 9]);
    }

    #[test]
    fn split_is_by_episode_seeded_and_disjoint() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (train, val) = split(10, 0.2, &mut rng);
        assert_eq!((train.len(), val.len()), (8, 2));
        assert!(val.iter().all(|v| !train.contains(v)));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        assert_eq!(split(10, 0.2, &mut rng), (train, val));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        assert_eq!(split(2, 0.1, &mut rng).1.len(), 1);
        assert_eq!(split(1, 0.1, &mut rng).1.len(), 0);
    }
}
