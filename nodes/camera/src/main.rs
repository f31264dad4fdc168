//! `camera` node: a real camera's frames, each stamped with the control tick it answers.
//!
//! Settings: `SOURCE` (a shell command that writes raw rgb24 frames to its stdout, e.g. ffmpeg reading a V4L2
//! device: see the README's "The real robot"), `SOURCE_WIDTH`, `SOURCE_HEIGHT` (the size of those frames,
//! default 640x480), `WIDTH`, `HEIGHT` (the policy's input, default 224: each frame is centre-cropped to that
//! aspect ratio and resized, `glue::camera::fit`), `MAX_AGE_MS` (a frame older than this at a tick is not sent;
//! default 200).
//! Input: `tick`, the robot's state (`franka-driver/robot_state`): at each, the newest frame goes out with that
//! message's header (episode, frame, timestamp), so the image and the robot state of one control tick pair up in
//! the encoder as the simulator's do. A tick with no fresh frame sends nothing (that frame gets no action, and
//! the driver's watchdog holds the arm); each is logged.
//! Output: `image` (rgb8). At the end of the run it prints its per-tick latency (mean, p95) and the skipped ticks.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dora_bridge::{Input, Latency, decode, env_or, next_input, send};
use dora_node_api::DoraNode;
use glue::camera::{FrameReader, fit};
use glue::msg::{Image, RobotState};
use image::RgbImage;

/// What the reader thread shares: the newest frame and when it arrived, or why the source stopped.
#[derive(Default)]
struct Latest {
    frame: Option<(Instant, RgbImage)>,
    ended: Option<String>,
}

/// The capture command, killed when the node exits.
struct Source(Child);

impl Drop for Source {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn main() -> eyre::Result<()> {
    let source = std::env::var("SOURCE").map_err(|_| eyre::eyre!("camera: set SOURCE to a command that writes raw rgb24 frames to stdout"))?;
    let (sw, sh): (u32, u32) = (env_or("SOURCE_WIDTH", 640)?, env_or("SOURCE_HEIGHT", 480)?);
    let (width, height): (u32, u32) = (env_or("WIDTH", 224)?, env_or("HEIGHT", 224)?);
    let max_age = Duration::from_millis(env_or("MAX_AGE_MS", 200)?);
    let mut child = Command::new("sh").arg("-c").arg(&source).stdout(Stdio::piped()).spawn()
        .map_err(|e| eyre::eyre!("camera: starting SOURCE `{source}`: {e}"))?;
    let mut reader = FrameReader::new(child.stdout.take().expect("piped above"), sw, sh)?;
    let _source = Source(child);
    let latest = Arc::new(Mutex::new(Latest::default()));
    let shared = latest.clone();
    std::thread::spawn(move || {
        let ended = loop {
            match reader.next_frame() {
                Ok(Some(frame)) => shared.lock().expect("reader lock").frame = Some((Instant::now(), frame)),
                Ok(None) => break "the source ended".to_string(),
                Err(e) => break format!("{e:#}"),
            }
        };
        shared.lock().expect("reader lock").ended = Some(ended);
    });

    let (mut node, mut events) = DoraNode::init_from_env()?;
    let mut latency = Latency::default();
    let mut skipped = 0u64;
    while let Some(Input { id, metadata, data }) = next_input(&mut events) {
        if id.as_str() != "tick" {
            eyre::bail!("camera: unexpected input `{id}`");
        }
        let (h, _) = decode::<RobotState>(&metadata, &data)?;
        let start = Instant::now();
        let frame = {
            let latest = latest.lock().expect("camera lock");
            match &latest.frame {
                Some((at, frame)) if at.elapsed() <= max_age => Ok(frame.clone()),
                Some((at, _)) => Err(format!("newest frame is {} ms old (MAX_AGE_MS {})", at.elapsed().as_millis(), max_age.as_millis())),
                None => Err("no frame yet".to_string()),
            }
            .map_err(|why| latest.ended.as_ref().map_or(why.clone(), |ended| format!("{why}; {ended}")))
        };
        match frame {
            Ok(frame) => {
                let rgb = fit(&frame, width, height);
                send(&mut node, "image", &h, &Image { width, height, data: rgb.into_raw() })?;
                latency.record(start);
            }
            Err(why) => {
                skipped += 1;
                eprintln!("camera: episode {} frame {}: no image sent: {why}", h.episode, h.frame);
            }
        }
    }
    eprintln!("camera: {} ({skipped} ticks skipped)", latency.summary());
    Ok(())
}
