//! What a run folder holds besides `train.json`: the checkpoint folders (`last/`, `best/`), the resumable
//! `state/`, and the epoch history (`metrics.csv`, `loss.png`), each replaced atomically where a reader may look.

use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use eyre::{Result, WrapErr, ensure, eyre};

use super::optim::Ema;
use super::{EpochRow, Progress, TrainConfig};
use crate::policy::PolicyNet;
use crate::policy::checkpoint::{
    LOCAL_ENCODER_DIR, MODEL_SAFETENSORS, NORMALIZER_JSON, POLICY_JSON, Precision, TRAINED_ON_JSON, TrainedOn, save_net,
};
use crate::policy::normalizer::Normalizer;

/// Copies a folder's files (one level) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).wrap_err_with(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Writes a checkpoint folder `dir` (replacing it) with `net`'s weights.
pub(super) fn write_checkpoint(dir: &Path, config: &TrainConfig, trained_on: &TrainedOn, normalizer: &Normalizer, net: &PolicyNet) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(tmp.join(POLICY_JSON), serde_json::to_string_pretty(&config.policy)?)?;
    normalizer.save(&tmp.join(NORMALIZER_JSON))?;
    std::fs::write(tmp.join(TRAINED_ON_JSON), serde_json::to_string_pretty(trained_on)?)?;
    save_net(net, &tmp.join(MODEL_SAFETENSORS), Precision::F16)?;
    if let Some(local) = &config.local_encoder {
        copy_dir(local, &tmp.join(LOCAL_ENCODER_DIR))?;
    }
    replace_dir(&tmp, dir)
}

/// Moves `tmp` to `dir`, removing an old `dir` first.
fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old)?;
    }
    std::fs::rename(tmp, dir).wrap_err_with(|| format!("cannot move {} to {}", tmp.display(), dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Saves what `--resume` needs into `dir`, atomically.
pub(super) fn save_state(dir: &Path, net: &PolicyNet, ema: &Ema<PolicyNet>, optimizer: &ModuleOptimizer, progress: &Progress) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    save_net(&net.valid(), &tmp.join("net.safetensors"), Precision::F32)?;
    save_net(&ema.model, &tmp.join("ema.safetensors"), Precision::F32)?;
    optimizer.save(tmp.join("optimizer.bpk")).map_err(|e| eyre!("cannot save the optimiser state: {e:?}"))?;
    std::fs::write(tmp.join("progress.json"), serde_json::to_string_pretty(progress)?)?;
    replace_dir(&tmp, dir)
}

/// The epoch history in `run/metrics.csv`, as [`write_metrics`] writes it; errors name the file and the row.
pub fn read_metrics(run: &Path) -> Result<Vec<EpochRow>> {
    let path = run.join("metrics.csv");
    let text = std::fs::read_to_string(&path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1).filter(|(_, l)| !l.is_empty()) {
        let bad = || eyre!("{} line {}: expected epoch,step,train_loss,val_loss,lr,seconds, got {line:?}", path.display(), i + 1);
        let f: Vec<&str> = line.split(',').collect();
        ensure!(f.len() == 6, bad());
        let val_loss = if f[3].is_empty() { None } else { Some(f[3].parse().map_err(|_| bad())?) };
        rows.push(EpochRow {
            epoch: f[0].parse().map_err(|_| bad())?,
            step: f[1].parse().map_err(|_| bad())?,
            train_loss: f[2].parse().map_err(|_| bad())?,
            val_loss,
            lr: f[4].parse().map_err(|_| bad())?,
            seconds: f[5].parse().map_err(|_| bad())?,
        });
    }
    ensure!(!rows.is_empty(), "{}: no epochs recorded", path.display());
    Ok(rows)
}

/// `metrics.csv` and `loss.png` from the epoch history.
pub(super) fn write_metrics(out: &Path, history: &[EpochRow]) -> Result<()> {
    let mut csv = String::from("epoch,step,train_loss,val_loss,lr,seconds\n");
    for r in history {
        csv += &format!(
            "{},{},{},{},{},{:.1}\n",
            r.epoch,
            r.step,
            r.train_loss,
            r.val_loss.map_or(String::new(), |v| v.to_string()),
            r.lr,
            r.seconds
        );
    }
    std::fs::write(out.join("metrics.csv"), csv)?;
    let chart = crate::plot::LineChart {
        title: "Training loss (noise-prediction MSE)".into(),
        x_label: "optimiser step".into(),
        y_label: "loss".into(),
        series: vec![
            crate::plot::Series { label: "train".into(), points: history.iter().map(|r| (r.step as f64, r.train_loss)).collect() },
            crate::plot::Series {
                label: "validation (EMA)".into(),
                points: history.iter().filter_map(|r| r.val_loss.map(|v| (r.step as f64, v))).collect(),
            },
        ],
        log_y: true,
    };
    chart.save_png(&out.join("loss.png"))
}
