//! Tracking quality on simulator episodes against the simulator's oracle tracks (`glue track --eval-sim`).

use std::time::Instant;

use serde::Serialize;

use super::klt::dist;
use super::{FrameView, KltConfig, KltTracker};
use crate::sim::ood::{Condition, Variant};
use crate::sim::task::TaskKind;
use crate::sim::{EpisodeSpec, SimConfig};

/// Tracking quality of one task under one condition against the simulator's oracle tracks.
#[derive(Clone, Debug, Serialize)]
pub struct SimEvalRow {
    pub task: String,
    pub variant: String,
    pub strength: f32,
    /// Episodes evaluated (episodes with no oracle point visible at frame 0 are skipped).
    pub episodes: usize,
    /// Points tracked, summed over episodes (the oracle points visible at frame 0).
    pub points: usize,
    /// Point-frames scored (frames after the first).
    pub point_frames: usize,
    /// Median pixel error over point-frames the oracle and the tracker both call visible.
    pub median_px: f32,
    /// 90th percentile of the same errors.
    pub p90_px: f32,
    /// Fraction of the same point-frames with an error above 5 px (a track on the wrong spot).
    pub wrong_5px: f32,
    /// Occlusion precision: of the point-frames the tracker calls not visible, the fraction the oracle calls
    /// not visible (NaN when the tracker flags none).
    pub occlusion_precision: f32,
    /// Occlusion recall: of the oracle-invisible point-frames, the fraction the tracker flags (NaN when none).
    pub occlusion_recall: f32,
    /// Oracle-invisible point-frames (the positives).
    pub occluded: usize,
    /// Of the oracle-visible point-frames, the fraction the tracker keeps visible.
    pub kept_visible: f32,
    /// False drops: visible point-frames the tracker turned lost while the oracle calls them visible, by the check
    /// that failed ([`super::PointDiagnostics`]): `[LK solve failed or left the image, forward-backward error,
    /// appearance]`.
    pub false_drops: [usize; 3],
    /// Tracker time per frame in milliseconds (this machine, one thread).
    pub ms_per_frame: f64,
}

fn quantile(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted[((sorted.len() - 1) as f32 * q).round() as usize]
}

fn ratio(a: usize, b: usize) -> f32 {
    if b == 0 { f32::NAN } else { a as f32 / b as f32 }
}

/// Runs the scripted expert for `episodes` seeds from `seed_start` on every task and condition, tracks the oracle
/// points visible at frame 0 from their frame-0 positions, and scores the tracks against the oracle (see
/// [`SimEvalRow`]). A variant other than `none` runs at `strength`.
pub fn evaluate_on_sim(
    config: &KltConfig,
    tasks: &[TaskKind],
    variants: &[Variant],
    episodes: u64,
    seed_start: u64,
    strength: f32,
) -> eyre::Result<Vec<SimEvalRow>> {
    let sim_config = SimConfig::default();
    let mut rows = Vec::new();
    for &task in tasks {
        for &variant in variants {
            let condition = Condition::new(variant, if variant == Variant::None { 0.0 } else { strength }).map_err(|e| eyre::eyre!(e))?;
            let (mut errors, mut evaluated, mut points) = (Vec::new(), 0, 0);
            let (mut tp, mut fp, mut positives, mut vis_total, mut vis_kept, mut point_frames) = (0, 0, 0, 0, 0, 0);
            let (mut seconds, mut frames) = (0.0f64, 0usize);
            let mut false_drops = [0usize; 3];
            for seed in seed_start..seed_start + episodes {
                let spec = EpisodeSpec { task, seed, condition };
                let mut state: Option<(KltTracker, Vec<usize>)> = None;
                let mut skipped = false;
                let mut out = Vec::new();
                let mut before: Vec<[f32; 3]> = Vec::new();
                crate::collect::run_expert(&sim_config, spec, |_, obs, _| {
                    let oracle = &obs.oracle_tracks.points;
                    if skipped {
                        return Ok(());
                    }
                    let Some((tracker, ids)) = state.as_mut() else {
                        let ids: Vec<usize> = (0..oracle.len()).filter(|&i| oracle[i][2] == 1.0).collect();
                        if ids.is_empty() {
                            skipped = true;
                            return Ok(());
                        }
                        let queries: Vec<[f32; 2]> = ids.iter().map(|&i| [oracle[i][0], oracle[i][1]]).collect();
                        let tracker = KltTracker::new(config.clone(), &obs.image, &queries)?;
                        before = tracker.current();
                        state = Some((tracker, ids));
                        return Ok(());
                    };
                    let start = Instant::now();
                    tracker.track_into(FrameView::from(&obs.image), &mut out)?;
                    seconds += start.elapsed().as_secs_f64();
                    frames += 1;
                    let diagnostics = tracker.diagnostics();
                    for (k, &i) in ids.iter().enumerate() {
                        let (truth, got) = (oracle[i], out[k]);
                        let (truly_visible, said_visible) = (truth[2] == 1.0, got[2] == 1.0);
                        if truly_visible && !said_visible && before[k][2] == 1.0 {
                            let d = diagnostics[k];
                            let check = if d.fb_error.is_nan() { 0 } else if d.fb_error > config.fb_threshold { 1 } else { 2 };
                            false_drops[check] += 1;
                        }
                        point_frames += 1;
                        if truly_visible {
                            vis_total += 1;
                            if said_visible {
                                vis_kept += 1;
                                errors.push(dist([truth[0], truth[1]], [got[0], got[1]]));
                            } else {
                                fp += 1;
                            }
                        } else {
                            positives += 1;
                            if !said_visible {
                                tp += 1;
                            }
                        }
                    }
                    std::mem::swap(&mut before, &mut out);
                    Ok(())
                })?;
                if let Some((_, ids)) = &state {
                    evaluated += 1;
                    points += ids.len();
                }
            }
            errors.sort_by(f32::total_cmp);
            rows.push(SimEvalRow {
                task: task.name().to_string(),
                variant: variant.name().to_string(),
                strength: condition.strength,
                episodes: evaluated,
                points,
                point_frames,
                median_px: quantile(&errors, 0.5),
                p90_px: quantile(&errors, 0.9),
                wrong_5px: ratio(errors.iter().filter(|&&e| e > 5.0).count(), errors.len()),
                occlusion_precision: ratio(tp, tp + fp),
                occlusion_recall: ratio(tp, positives),
                occluded: positives,
                kept_visible: ratio(vis_kept, vis_total),
                false_drops,
                ms_per_frame: if frames == 0 { f64::NAN } else { 1e3 * seconds / frames as f64 },
            });
        }
    }
    Ok(rows)
}

/// The rows of [`evaluate_on_sim`] as a text table.
pub fn sim_eval_table(rows: &[SimEvalRow]) -> String {
    let f = |v: f32, digits: usize| if v.is_nan() { "n/a".to_string() } else { format!("{v:.digits$}") };
    let mut s = format!(
        "{:<13} {:<10} {:>3} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>14} {:>6}\n",
        "task", "variant", "ep", "points", "pt-frm", "med px", "p90 px", ">5 px", "occl P", "occl R", "occl n", "kept", "drop lk/fb/app", "ms/f"
    );
    for r in rows {
        s += &format!(
            "{:<13} {:<10} {:>3} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>14} {:>6.2}\n",
            r.task,
            r.variant,
            r.episodes,
            r.points,
            r.point_frames,
            f(r.median_px, 2),
            f(r.p90_px, 2),
            f(r.wrong_5px, 3),
            f(r.occlusion_precision, 3),
            f(r.occlusion_recall, 3),
            r.occluded,
            f(r.kept_visible, 3),
            format!("{}/{}/{}", r.false_drops[0], r.false_drops[1], r.false_drops[2]),
            r.ms_per_frame
        );
    }
    s
}
