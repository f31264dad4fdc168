//! Episode recordings: one Arrow IPC file per episode, one row per control tick (DESIGN.md, "Recordings").
//!
//! Schema (all standard Arrow types, so pyarrow/pandas read the files as they are):
//!
//! | column          | type                         | content                                            |
//! |-----------------|------------------------------|----------------------------------------------------|
//! | `frame`         | `UInt32`                     | control tick index                                 |
//! | `timestamp_ns`  | `UInt64`                     | capture time                                       |
//! | `image`         | `Binary`                     | raw rgb8, `width x height` from the metadata       |
//! | `segmentation`  | `Binary`, nullable           | instance id per pixel                              |
//! | `robot_state`   | `FixedSizeList<Float32, 15>` | [`RobotState::to_array`]                           |
//! | `action`        | `FixedSizeList<Float32, 8>`  | [`Action::to_array`], issued after this observation |
//! | `keypoints`     | `List<Float32>`, nullable    | tracker keypoints, flattened `[N, 3]`              |
//! | `oracle_tracks` | `List<Float32>`, nullable    | simulator ground-truth tracks, flattened `[M, 3]`  |
//! | `object_poses`  | `List<Float32>`, nullable    | simulator task-object poses, flattened `[N, 7]`    |
//!
//! Schema metadata (strings): `glue.format` = [`FORMAT`], `episode`, `task`, `text_query` (JSON list), `seed`,
//! `variant`, `strength`, `width`, `height`, `control_hz`, `objects` (JSON list of `{name, instance}`),
//! `success` (`"true"`/`"false"`) and `ticks`. Record batches are ZSTD-compressed.
//!
//! `object_poses` (x, y, z, qx, qy, qz, qw per task object, in the order of the `objects` metadata) is the
//! privileged simulator state of [`crate::msg::ObjectPoses`], for the privileged-state policy
//! (`glue train --policy state`); files written before it existed lack the column and read with `None`.
//!
//! Crash safety: [`EpisodeWriter`] streams every tick to `DIR/.<name>.partial` (IPC *stream* format, one batch
//! per tick, flushed after each, so a `kill -9` loses at most the tick being written); [`EpisodeWriter::finish`]
//! writes the complete IPC *file* to a temporary name, fsyncs it, renames it to `DIR/<name>` and removes the
//! partial. Loaders only ever read `*.arrow` ([`list_episodes`]), so a cut episode is never mistaken for a
//! complete one, and earlier episodes are never touched (the writer refuses to overwrite a finished file).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use arrow::error::ArrowError;

use crate::msg::{Action, Keypoints, Message, RobotState, VARIANTS};

mod inspect;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use crate::msg::ObjectInfo;
pub use inspect::{InspectReport, inspect};
pub use read::{list_episodes, read_episode};
pub use write::EpisodeWriter;

/// Value of the `glue.format` schema metadata key; bumped on any incompatible schema change.
pub const FORMAT: &str = "glue-episode/1";

/// Everything known about an episode before its first tick; stored in the schema metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeInfo {
    /// Episode index (the message [`crate::msg::Header`]'s `episode`).
    pub episode: u64,
    /// Task name; letters, digits, `-` and `_` only, as it names the file.
    pub task: String,
    /// Text queries naming the task objects, for grounding.
    pub text_query: Vec<String>,
    /// Scene seed.
    pub seed: u64,
    /// OOD condition, one of [`VARIANTS`].
    pub variant: String,
    /// OOD strength in `[0, 1]`.
    pub strength: f32,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Control rate (rows per second).
    pub control_hz: f32,
    /// Task objects and their segmentation instance ids.
    pub objects: Vec<ObjectInfo>,
}

impl EpisodeInfo {
    /// The finished file's name, `{task}-{variant}-seed{seed:06}-ep{episode:04}.arrow`. The episode index is
    /// part of it because one seed may be recorded more than once (e.g. another session or condition strength).
    pub fn file_name(&self) -> String {
        format!("{}-{}-seed{:06}-ep{:04}.arrow", self.task, self.variant, self.seed, self.episode)
    }

    fn check(&self) -> Result<(), ErrorKind> {
        let bad = |key: &str, expected: &str, got: String| {
            Err(ErrorKind::Metadata { key: key.to_owned(), problem: format!("expected {expected}, got {got}") })
        };
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok(&self.task) {
            return bad("task", "a non-empty name of letters, digits, '-' and '_'", format!("{:?}", self.task));
        }
        if !VARIANTS.contains(&self.variant.as_str()) {
            return bad("variant", &format!("one of {VARIANTS:?}"), format!("{:?}", self.variant));
        }
        if !(0.0..=1.0).contains(&self.strength) {
            return bad("strength", "a value in [0, 1]", self.strength.to_string());
        }
        if self.width == 0 || self.height == 0 {
            return bad("width", "width and height >= 1", format!("{}x{}", self.width, self.height));
        }
        if !(self.control_hz.is_finite() && self.control_hz > 0.0) {
            return bad("control_hz", "a finite rate > 0", self.control_hz.to_string());
        }
        Ok(())
    }

    fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("glue.format".to_owned(), FORMAT.to_owned()),
            ("episode".to_owned(), self.episode.to_string()),
            ("task".to_owned(), self.task.clone()),
            ("text_query".to_owned(), to_json(&self.text_query)),
            ("seed".to_owned(), self.seed.to_string()),
            ("variant".to_owned(), self.variant.clone()),
            ("strength".to_owned(), self.strength.to_string()),
            ("width".to_owned(), self.width.to_string()),
            ("height".to_owned(), self.height.to_string()),
            ("control_hz".to_owned(), self.control_hz.to_string()),
            ("objects".to_owned(), to_json(&self.objects)),
        ])
    }

    fn from_metadata(meta: &HashMap<String, String>) -> Result<Self, ErrorKind> {
        let info = Self {
            episode: parse(meta, "episode", "an unsigned integer")?,
            task: value(meta, "task")?.to_owned(),
            text_query: json(meta, "text_query", "a JSON list of strings")?,
            seed: parse(meta, "seed", "an unsigned integer")?,
            variant: value(meta, "variant")?.to_owned(),
            strength: parse(meta, "strength", "a number")?,
            width: parse(meta, "width", "an unsigned integer")?,
            height: parse(meta, "height", "an unsigned integer")?,
            control_hz: parse(meta, "control_hz", "a number")?,
            objects: json(meta, "objects", "a JSON list of {\"name\", \"instance\"}")?,
        };
        info.check().map(|()| info)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lists of strings and integers always serialise")
}

fn value<'a>(meta: &'a HashMap<String, String>, key: &str) -> Result<&'a str, ErrorKind> {
    let problem = "missing".to_owned();
    meta.get(key).map(String::as_str).ok_or_else(|| ErrorKind::Metadata { key: key.to_owned(), problem })
}

fn parse<T: std::str::FromStr>(meta: &HashMap<String, String>, key: &str, expected: &str) -> Result<T, ErrorKind> {
    let v = value(meta, key)?;
    let problem = format!("expected {expected}, got {v:?}");
    v.parse().map_err(|_| ErrorKind::Metadata { key: key.to_owned(), problem })
}

fn json<T: serde::de::DeserializeOwned>(
    meta: &HashMap<String, String>,
    key: &str,
    expected: &str,
) -> Result<T, ErrorKind> {
    let v = value(meta, key)?;
    let problem = |e: serde_json::Error| format!("expected {expected}, got {v:?} ({e})");
    serde_json::from_str(v).map_err(|e| ErrorKind::Metadata { key: key.to_owned(), problem: problem(e) })
}

/// One control tick: the observation and the action commanded after observing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Control tick index.
    pub frame: u32,
    /// Capture time, ns.
    pub timestamp_ns: u64,
    /// Camera image, rgb8, `width * height * 3` bytes.
    pub image: Vec<u8>,
    /// Instance segmentation, `width * height` bytes, when recorded.
    pub segmentation: Option<Vec<u8>>,
    /// Measured robot state.
    pub robot_state: RobotState,
    /// The command issued after observing this tick.
    pub action: Action,
    /// Tracker keypoints, when recorded.
    pub keypoints: Option<Keypoints>,
    /// Simulator ground-truth point tracks, when recorded.
    pub oracle_tracks: Option<Keypoints>,
    /// Simulator task-object poses `[N, 7]` (position, quaternion xyzw), in `EpisodeInfo::objects` order, when
    /// recorded.
    pub object_poses: Option<Vec<[f32; 7]>>,
}

/// A recorded episode, as read back by [`read_episode`].
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// The episode header.
    pub info: EpisodeInfo,
    /// Whether the task succeeded.
    pub success: bool,
    /// The ticks in recording order.
    pub ticks: Vec<Tick>,
}

/// Why a recording could not be written or read; always names the file.
#[derive(Debug)]
pub struct RecordingError {
    /// The file (or directory) concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong with a recording.
#[derive(Debug)]
pub enum ErrorKind {
    /// The operating system refused a read, write, rename or sync.
    Io(io::Error),
    /// Arrow refused to encode (writer side).
    Arrow(ArrowError),
    /// Not Arrow IPC at all (neither the file magic nor a stream header).
    NotArrow,
    /// Arrow IPC, but not a glue episode (no or another `glue.format`).
    NotGlue(String),
    /// A `.partial` stream or a truncated/corrupt file: the episode is not complete, `intact_ticks` are readable.
    Incomplete {
        /// What is wrong.
        reason: String,
        /// Complete ticks that can still be read.
        intact_ticks: usize,
    },
    /// A column is missing, mistyped, or a row fails validation.
    Column {
        /// Column name.
        column: String,
        /// Row index, where one row is at fault.
        row: Option<usize>,
        /// Expected against found.
        problem: String,
    },
    /// A schema metadata key (or [`EpisodeInfo`] field) is missing or malformed.
    Metadata {
        /// Metadata key.
        key: String,
        /// Expected against found.
        problem: String,
    },
    /// The writer refuses to overwrite a finished episode.
    Exists,
}

impl From<io::Error> for ErrorKind {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ArrowError> for ErrorKind {
    fn from(e: ArrowError) -> Self {
        Self::Arrow(e)
    }
}

impl fmt::Display for RecordingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        match &self.kind {
            ErrorKind::Io(e) => write!(f, "{e}"),
            ErrorKind::Arrow(e) => write!(f, "arrow: {e}"),
            ErrorKind::NotArrow => {
                write!(f, "not an Arrow IPC file or stream (no ARROW1 magic, no stream header); 0 ticks readable")
            }
            ErrorKind::NotGlue(why) => write!(f, "not a glue episode: {why}"),
            ErrorKind::Incomplete { reason, intact_ticks } => {
                write!(f, "incomplete episode: {reason}; {intact_ticks} intact ticks readable")
            }
            ErrorKind::Column { column, row: Some(row), problem } => {
                write!(f, "column {column:?} row {row}: {problem}")
            }
            ErrorKind::Column { column, row: None, problem } => write!(f, "column {column:?}: {problem}"),
            ErrorKind::Metadata { key, problem } => write!(f, "metadata {key:?}: {problem}"),
            ErrorKind::Exists => write!(f, "already exists; refusing to overwrite a finished episode"),
        }
    }
}

impl std::error::Error for RecordingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            ErrorKind::Arrow(e) => Some(e),
            _ => None,
        }
    }
}

/// Attaches a path to a path-less error.
fn at(path: &Path) -> impl FnOnce(ErrorKind) -> RecordingError + '_ {
    move |kind| RecordingError { path: path.to_owned(), kind }
}

fn item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, false))
}

/// The one column a file may lack: files written before it existed read with `Tick::object_poses` `None`.
const OBJECT_POSES: &str = "object_poses";

/// The column layout, without metadata.
fn layout() -> Schema {
    Schema::new(vec![
        Field::new("frame", DataType::UInt32, false),
        Field::new("timestamp_ns", DataType::UInt64, false),
        Field::new("image", DataType::Binary, false),
        Field::new("segmentation", DataType::Binary, true),
        Field::new("robot_state", DataType::FixedSizeList(item(), 15), false),
        Field::new("action", DataType::FixedSizeList(item(), 8), false),
        Field::new("keypoints", DataType::List(item()), true),
        Field::new("oracle_tracks", DataType::List(item()), true),
        Field::new(OBJECT_POSES, DataType::List(item()), true),
    ])
}

/// A column and what is wrong with it.
type Fault = (&'static str, String);

/// Checks a tick against the episode: image sizes and every message's validation.
fn check_tick(info: &EpisodeInfo, tick: &Tick) -> Result<(), Fault> {
    let pixels = u64::from(info.width) * u64::from(info.height);
    let size = |column, len: usize, channels: u64, encoding| {
        let want = pixels * channels;
        if len as u64 == want {
            return Ok(());
        }
        Err((column, format!("expected {want} bytes ({}x{} {encoding}), got {len}", info.width, info.height)))
    };
    size("image", tick.image.len(), 3, "rgb8")?;
    tick.segmentation.as_ref().map_or(Ok(()), |s| size("segmentation", s.len(), 1, "mono8"))?;
    tick.robot_state.validate().map_err(|e| ("robot_state", e.to_string()))?;
    tick.action.validate().map_err(|e| ("action", e.to_string()))?;
    for (column, points) in [("keypoints", &tick.keypoints), ("oracle_tracks", &tick.oracle_tracks)] {
        points.as_ref().map_or(Ok(()), Keypoints::validate).map_err(|e| (column, e.to_string()))?;
    }
    if let Some(poses) = &tick.object_poses {
        if poses.len() != info.objects.len() {
            let want = info.objects.len();
            return Err((OBJECT_POSES, format!("expected [{want}, 7] (one pose per task object), got [{}, 7]", poses.len())));
        }
        let names = info.objects.iter().map(|o| o.name.clone()).collect();
        crate::msg::ObjectPoses { names, poses: poses.clone() }.validate().map_err(|e| (OBJECT_POSES, e.to_string()))?;
    }
    Ok(())
}
