//! `glue track`'s file side: points JSON in, PNG frames in, tracks JSON out.

use std::fs;
use std::path::{Path, PathBuf};

use image::GrayImage;
use serde::Serialize;

use super::{KltConfig, KltTracker};

/// `glue track`'s output file: `tracks[frame][point] = [x, y, visible]`, frame 0 included.
#[derive(Clone, Debug, Serialize)]
pub struct TracksFile {
    pub tracks: Vec<Vec<[f32; 3]>>,
}

/// Parses a points file's text: a JSON list of `[x, y]` pixel pairs, at least one.
pub fn parse_points(text: &str) -> eyre::Result<Vec<[f32; 2]>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| eyre::eyre!("not valid JSON ({e})"))?;
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::Bool(_) => "a boolean".to_string(),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(_) => "a string".to_string(),
        serde_json::Value::Array(a) => format!("a list of {} values", a.len()),
        serde_json::Value::Object(_) => "an object".to_string(),
    };
    let list = value
        .as_array()
        .ok_or_else(|| eyre::eyre!("points: expected a list of [x, y] pairs (shape [N, 2]), got {}", kind(&value)))?;
    eyre::ensure!(!list.is_empty(), "points: expected at least one [x, y] pair, got an empty list");
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let pair = item.as_array().filter(|a| a.len() == 2);
            let xy = pair.and_then(|a| Some([a[0].as_f64()? as f32, a[1].as_f64()? as f32]));
            xy.ok_or_else(|| eyre::eyre!("points[{i}]: expected [x, y], two numbers (pixels of frame 0), got {}", match item {
                serde_json::Value::Array(a) if a.len() == 2 => "a pair that is not two numbers".to_string(),
                other => kind(other),
            }))
        })
        .collect()
}

/// Reads a points file (see [`parse_points`]).
pub fn read_points(path: &Path) -> eyre::Result<Vec<[f32; 2]>> {
    let text = fs::read_to_string(path).map_err(|e| eyre::eyre!("--points {}: {e}", path.display()))?;
    parse_points(&text).map_err(|e| eyre::eyre!("--points {}: {e}", path.display()))
}

/// The PNG files of `dir` (extension `png`, any case), in file-name order; fails when `dir` is missing or holds
/// no PNG.
pub fn list_frames(dir: &Path) -> eyre::Result<Vec<PathBuf>> {
    eyre::ensure!(dir.is_dir(), "--frames {}: no such directory", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| eyre::eyre!("--frames {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    eyre::ensure!(!files.is_empty(), "--frames {}: no .png files in this directory", dir.display());
    Ok(files)
}

fn load_gray(path: &Path) -> eyre::Result<GrayImage> {
    Ok(image::open(path).map_err(|e| eyre::eyre!("{}: {e}", path.display()))?.to_luma8())
}

/// Tracks the points of `points` (frame-0 pixels) through the PNGs of `frames_dir` in name order.
pub fn track_files(frames_dir: &Path, points: &[[f32; 2]], config: &KltConfig) -> eyre::Result<TracksFile> {
    let files = list_frames(frames_dir)?;
    let first = load_gray(&files[0])?;
    let mut tracker = KltTracker::new(config.clone(), &first, points)
        .map_err(|e| eyre::eyre!("--points (first frame {}): {e}", files[0].display()))?;
    let mut tracks = vec![tracker.current()];
    for path in &files[1..] {
        let frame = load_gray(path)?;
        eyre::ensure!(
            frame.dimensions() == first.dimensions(),
            "{}: frames of different sizes: {}x{} here, {}x{} in the first frame {}",
            path.display(),
            frame.width(),
            frame.height(),
            first.width(),
            first.height(),
            files[0].display()
        );
        tracks.push(tracker.track(&frame));
    }
    Ok(TracksFile { tracks })
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn points_json_errors_name_the_field_and_shape() {
        assert_eq!(parse_points("[[1, 2], [3.5, 4]]").unwrap(), vec![[1.0, 2.0], [3.5, 4.0]]);
        assert!(parse_points("{\"a\": 1}").unwrap_err().to_string().contains("[N, 2]"));
        assert!(parse_points("[]").unwrap_err().to_string().contains("at least one"));
        let e = parse_points("[[1, 2], [3]]").unwrap_err().to_string();
        assert!(e.contains("points[1]") && e.contains("[x, y]"), "{e}");
        assert!(parse_points("[[1, \"a\"]]").unwrap_err().to_string().contains("points[0]"));
        assert!(parse_points("[[1, 2]").unwrap_err().to_string().contains("JSON"));
    }
}
