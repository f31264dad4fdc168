//! `glue`: the command-line front end of the library (record, inspect, render, snapshot, features, bench,
//! pretrain).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use glue::collect::record_expert;
use glue::pretrain::PretrainConfig;
use glue::recording::{inspect, read_episode};
use glue::sim::ood::{Condition, Variant};
use glue::sim::task::TaskKind;
use glue::sim::{EpisodeSpec, Sim, SimConfig};
use glue::viz::{render_episode_gif, GifOptions};

#[derive(Parser)]
#[command(name = "glue", version, about = "GLUE on dora-rs: simulator, recordings and models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The episode to simulate: task, seed and OOD condition.
#[derive(clap::Args)]
struct Scene {
    /// push-button | stack-block | place-fruit
    #[arg(long)]
    task: TaskKind,
    /// none | clutter | occlusion | lighting
    #[arg(long, default_value = "none")]
    variant: Variant,
    /// Strength of the OOD condition in [0, 1] (default 0.5 with a variant, 0 without).
    #[arg(long)]
    strength: Option<f32>,
    /// Camera image size in pixels.
    #[arg(long, default_value_t = 224)]
    width: u32,
    #[arg(long, default_value_t = 224)]
    height: u32,
}

impl Scene {
    fn condition(&self) -> eyre::Result<Condition> {
        let default = if self.variant == Variant::None { 0.0 } else { 0.5 };
        Condition::new(self.variant, self.strength.unwrap_or(default)).map_err(|e| eyre::eyre!(e))
    }

    fn config(&self) -> eyre::Result<SimConfig> {
        eyre::ensure!((1..=2048).contains(&self.width) && (1..=2048).contains(&self.height), "--width/--height: expected 1..=2048 pixels");
        Ok(SimConfig { width: self.width, height: self.height, ..SimConfig::default() })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the scripted expert in the simulator and write one Arrow IPC file per episode.
    Record {
        #[command(flatten)]
        scene: Scene,
        #[arg(long, default_value_t = 1)]
        episodes: u64,
        #[arg(long, default_value_t = 0)]
        seed_start: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print an episode file's schema, length, task, seed, variant and success; non-zero exit if it is damaged.
    Inspect { files: Vec<PathBuf> },
    /// Draw an episode as an animated GIF, with optional overlays.
    Render {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Overlay the tracked keypoints (visible: filled, occluded: ring).
        #[arg(long)]
        keypoints: bool,
        /// Overlay the simulator's oracle point tracks.
        #[arg(long)]
        oracle: bool,
        /// Tint each instance of the segmentation.
        #[arg(long)]
        segmentation: bool,
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
    /// Render the first frame of an episode to a PNG.
    Snapshot {
        #[command(flatten)]
        scene: Scene,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Encode an image with a Hugging Face CLIP vision checkpoint folder and write `last_hidden_state`
    /// [1, tokens, hidden] and `pooler_output` [1, hidden] to a safetensors file, as `CLIPVisionModel` returns them.
    Features {
        /// Folder with config.json, model.safetensors, preprocessor_config.json.
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train the frozen local ViT (small configuration) self-supervised on simulator frames, save it as a HF CLIP
    /// folder and report key-point correspondence against a random init.
    Pretrain {
        /// Optimiser steps.
        #[arg(long, default_value_t = PretrainConfig::default().steps)]
        steps: usize,
        /// Frames per step (two views each).
        #[arg(long, default_value_t = PretrainConfig::default().batch)]
        batch: usize,
        /// Seed of the initialisation and the view sampling (the random-init baseline uses seed + 1).
        #[arg(long, default_value_t = PretrainConfig::default().seed)]
        seed: u64,
        /// Peak AdamW learning rate.
        #[arg(long, default_value_t = PretrainConfig::default().lr)]
        lr: f64,
        /// InfoNCE temperature.
        #[arg(long, default_value_t = PretrainConfig::default().temperature)]
        temperature: f32,
        /// Training episodes per task and variant.
        #[arg(long, default_value_t = PretrainConfig::default().episodes)]
        episodes: u64,
        /// Held-out evaluation episodes per task and variant.
        #[arg(long, default_value_t = 2)]
        eval_episodes: u64,
        /// Output folder (config.json, model.safetensors, preprocessor_config.json, reports).
        #[arg(long, default_value = "checkpoints/local-vit-small")]
        out: PathBuf,
    },
    /// Measure simulator and recorder throughput and print a table.
    Bench {
        /// Episodes per figure.
        #[arg(long, default_value_t = 3)]
        repeats: u32,
    },
}

fn record(scene: &Scene, episodes: u64, seed_start: u64, out: &PathBuf) -> eyre::Result<()> {
    let (config, condition) = (scene.config()?, scene.condition()?);
    let bar = ProgressBar::new(episodes).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} episodes, {per_sec}, ETA {eta}").expect("valid template"),
    );
    let mut successes = 0;
    for i in 0..episodes {
        let spec = EpisodeSpec { task: scene.task, seed: seed_start + i, condition };
        let (path, outcome) = record_expert(&config, spec, i, out)?;
        successes += outcome.success as u32;
        bar.set_message(format!("{} successes", successes));
        bar.suspend(|| println!("{} ({} ticks, success: {})", path.display(), outcome.ticks, outcome.success));
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("recorded {episodes} episodes of {} ({}, strength {}) in {}: {successes}/{episodes} succeeded", scene.task, condition.variant, condition.strength, out.display());
    Ok(())
}

fn snapshot(scene: &Scene, seed: u64, out: &PathBuf) -> eyre::Result<()> {
    let mut sim = Sim::new(&scene.config()?, EpisodeSpec { task: scene.task, seed, condition: scene.condition()? });
    let f = sim.observe().image;
    glue::viz::save_png(&glue::viz::rgb_image(f.width, f.height, &f.rgb)?, out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn pretrain(config: &PretrainConfig, eval_episodes: u64, out: &PathBuf) -> eyre::Result<()> {
    eyre::ensure!(config.steps >= 1 && config.batch >= 1, "--steps and --batch: expected at least 1");
    eyre::ensure!(config.lr > 0.0 && config.temperature > 0.0, "--lr and --temperature: expected positive values");
    println!("rendering training frames ({} episodes x 3 tasks x 4 variants) ...", config.episodes);
    let bar = ProgressBar::new(config.steps as u64).with_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} steps, loss {msg}, {per_sec}, ETA {eta}").expect("valid template"),
    );
    let (summary, report) = glue::pretrain::run(config, out, eval_episodes, |step, loss| {
        if step == 0 {
            bar.reset_elapsed();
        }
        bar.set_message(format!("{loss:.3}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    println!(
        "trained on {} frames in {:.0} s (rendering {:.0} s): loss {:.3} -> {:.3}; wrote {}",
        summary.frames, summary.train_seconds, summary.render_seconds, summary.loss_start, summary.loss_end, out.display()
    );
    println!(
        "correspondence on {} held-out pairs, frame 0 -> t at {:?} of the episode (error: matched cell centre to truth):",
        report.pairs, report.frame_fractions
    );
    for (set, scores) in [("all points", report.all), ("moved > 16 px", report.moved)] {
        println!("  {set} ({} points):", scores.pretrained.points);
        for (name, s) in [("pretrained", scores.pretrained), ("random init", scores.random_init), ("zero motion", scores.zero_motion)] {
            println!("    {name:<12} median {:5.1} px, mean {:5.1} px, within {} px {:5.1}%", s.median_px, s.mean_px, report.within_px, 100.0 * s.within_16px);
        }
    }
    Ok(())
}

fn run(cli: Cli) -> eyre::Result<bool> {
    match cli.command {
        Command::Record { scene, episodes, seed_start, out } => record(&scene, episodes, seed_start, &out)?,
        Command::Inspect { files } => {
            eyre::ensure!(!files.is_empty(), "inspect: expected at least one episode file");
            let mut all_ok = true;
            for f in &files {
                match inspect(f) {
                    Ok(report) => println!("{report}"),
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        all_ok = false;
                    }
                }
            }
            return Ok(all_ok);
        }
        Command::Render { file, out, keypoints, oracle, segmentation, scale } => {
            let episode = read_episode(&file)?;
            let opts = GifOptions { keypoints, oracle_tracks: oracle, segmentation, scale, ..GifOptions::default() };
            render_episode_gif(&episode, &out, &opts)?;
            println!("wrote {} ({} frames)", out.display(), episode.ticks.len());
        }
        Command::Snapshot { scene, seed, out } => snapshot(&scene, seed, &out)?,
        Command::Features { weights, image, out } => {
            glue::vit::features(&weights, &image, &out)?;
            println!("wrote {}", out.display());
        }
        Command::Pretrain { steps, batch, seed, lr, temperature, episodes, eval_episodes, out } => {
            let config = PretrainConfig { steps, batch, seed, lr, temperature, episodes, ..PretrainConfig::default() };
            pretrain(&config, eval_episodes, &out)?;
        }
        Command::Bench { repeats } => {
            eyre::ensure!(repeats >= 1, "--repeats: expected at least 1");
            print!("{}", glue::bench::table(&glue::bench::run(repeats)?));
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
