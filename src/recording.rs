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
//!
//! Schema metadata (strings): `glue.format` = [`FORMAT`], `episode`, `task`, `text_query` (JSON list), `seed`,
//! `variant`, `strength`, `width`, `height`, `control_hz`, `objects` (JSON list of `{name, instance}`),
//! `success` (`"true"`/`"false"`) and `ticks`. Record batches are ZSTD-compressed.
//!
//! Crash safety: [`EpisodeWriter`] streams every tick to `DIR/.<name>.partial` (IPC *stream* format, one batch
//! per tick, flushed after each, so a `kill -9` loses at most the tick being written); [`EpisodeWriter::finish`]
//! writes the complete IPC *file* to a temporary name, fsyncs it, renames it to `DIR/<name>` and removes the
//! partial. Loaders only ever read `*.arrow` ([`list_episodes`]), so a cut episode is never mistaken for a
//! complete one, and earlier episodes are never touched (the writer refuses to overwrite a finished file).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, ListArray, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::{FileReader, StreamDecoder};
use arrow::ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};

pub use crate::msg::ObjectInfo;
use crate::msg::{Action, Keypoints, Message, RobotState, VARIANTS};

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
    ])
}

fn write_options() -> Result<IpcWriteOptions, ArrowError> {
    IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))
}

fn fixed_list(values: impl Iterator<Item = f32>, size: i32) -> Result<ArrayRef, ArrowError> {
    let values = Arc::new(Float32Array::from_iter_values(values));
    Ok(Arc::new(FixedSizeListArray::try_new(item(), size, values, None)?))
}

fn keypoints_list<'a>(rows: impl Iterator<Item = Option<&'a Keypoints>>) -> Result<ArrayRef, ArrowError> {
    let (mut lengths, mut valid, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let flat = row.map(Keypoints::to_flat).unwrap_or_default();
        lengths.push(flat.len());
        valid.push(row.is_some());
        values.extend(flat);
    }
    let values = Arc::new(Float32Array::from(values));
    Ok(Arc::new(ListArray::try_new(
        item(),
        OffsetBuffer::from_lengths(lengths),
        values,
        Some(NullBuffer::from(valid)),
    )?))
}

/// The ticks as one record batch of the episode schema (no metadata).
fn ticks_batch(ticks: &[Tick]) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(ticks.iter().map(|t| t.frame))),
        Arc::new(UInt64Array::from_iter_values(ticks.iter().map(|t| t.timestamp_ns))),
        Arc::new(BinaryArray::from_iter_values(ticks.iter().map(|t| &t.image))),
        Arc::new(ticks.iter().map(|t| t.segmentation.as_deref()).collect::<BinaryArray>()),
        fixed_list(ticks.iter().flat_map(|t| t.robot_state.to_array()), 15)?,
        fixed_list(ticks.iter().flat_map(|t| t.action.to_array()), 8)?,
        keypoints_list(ticks.iter().map(|t| t.keypoints.as_ref()))?,
        keypoints_list(ticks.iter().map(|t| t.oracle_tracks.as_ref()))?,
    ];
    RecordBatch::try_new(Arc::new(layout()), columns)
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
    Ok(())
}

/// Records one episode crash-safely (see the module docs): [`EpisodeWriter::create`], [`EpisodeWriter::push`]
/// per tick, [`EpisodeWriter::finish`]. Dropping it without `finish` (or a crash) leaves only the `.partial`.
pub struct EpisodeWriter {
    dir: PathBuf,
    info: EpisodeInfo,
    stream: StreamWriter<BufWriter<File>>,
    batches: Vec<RecordBatch>,
}

impl EpisodeWriter {
    /// Validates `info`, creates `dir` if needed and starts `DIR/.<file_name>.partial`. Fails if the finished
    /// episode `DIR/<file_name>` already exists.
    pub fn create(dir: impl AsRef<Path>, info: EpisodeInfo) -> Result<Self, RecordingError> {
        let dir = dir.as_ref().to_owned();
        let target = dir.join(info.file_name());
        info.check().map_err(at(&target))?;
        fs::create_dir_all(&dir).map_err(|e| at(&dir)(e.into()))?;
        if target.exists() {
            return Err(at(&target)(ErrorKind::Exists));
        }
        let partial = partial_path(&dir, &info);
        let start = || -> Result<_, ErrorKind> {
            let schema = layout().with_metadata(info.to_metadata());
            let file = BufWriter::new(File::create(&partial)?);
            let mut stream = StreamWriter::try_new_with_options(file, &schema, write_options()?)?;
            stream.flush()?;
            Ok(stream)
        };
        let stream = start().map_err(at(&partial))?;
        Ok(Self { dir, info, stream, batches: Vec::new() })
    }

    /// Validates the tick (image sizes, every message) and appends it to the partial file, flushed.
    pub fn push(&mut self, tick: Tick) -> Result<(), RecordingError> {
        let row = self.batches.len();
        let partial = self.partial_path();
        check_tick(&self.info, &tick).map_err(|(column, problem)| {
            at(&partial)(ErrorKind::Column { column: column.into(), row: Some(row), problem })
        })?;
        let batch = ticks_batch(std::slice::from_ref(&tick)).map_err(|e| at(&partial)(e.into()))?;
        self.stream.write(&batch).and_then(|()| self.stream.flush()).map_err(|e| at(&partial)(e.into()))?;
        self.batches.push(batch);
        Ok(())
    }

    /// Ticks pushed so far.
    pub fn ticks(&self) -> usize {
        self.batches.len()
    }

    /// Where the unfinished episode streams to: `DIR/.<file_name>.partial`.
    pub fn partial_path(&self) -> PathBuf {
        partial_path(&self.dir, &self.info)
    }

    /// Writes the complete episode (one record batch, metadata with `success` and `ticks`) to a temporary file,
    /// fsyncs it, renames it to `DIR/<file_name>`, syncs the directory and removes the partial. Returns the path.
    /// On error the partial stays, so no recorded tick is lost.
    pub fn finish(self, success: bool) -> Result<PathBuf, RecordingError> {
        let target = self.dir.join(self.info.file_name());
        if target.exists() {
            return Err(at(&target)(ErrorKind::Exists));
        }
        let tmp = self.dir.join(format!(".{}.tmp", self.info.file_name()));
        let mut meta = self.info.to_metadata();
        meta.insert("success".to_owned(), success.to_string());
        meta.insert("ticks".to_owned(), self.batches.len().to_string());
        let schema = Arc::new(layout().with_metadata(meta));
        let batch = concat_batches(&schema, &self.batches).map_err(|e| at(&target)(e.into()))?;
        write_file(&tmp, &schema, &batch).map_err(at(&tmp))?;
        fs::rename(&tmp, &target).map_err(|e| at(&target)(e.into()))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| at(&self.dir)(e.into()))?;
        let partial = self.partial_path();
        drop(self.stream);
        fs::remove_file(&partial).map_err(|e| at(&partial)(e.into()))?;
        Ok(target)
    }
}

fn partial_path(dir: &Path, info: &EpisodeInfo) -> PathBuf {
    dir.join(format!(".{}.partial", info.file_name()))
}

fn write_file(path: &Path, schema: &Schema, batch: &RecordBatch) -> Result<(), ErrorKind> {
    let file = BufWriter::new(File::create(path)?);
    let mut writer = FileWriter::try_new_with_options(file, schema, write_options()?)?;
    writer.write(batch)?;
    writer.finish()?;
    let file = writer.into_inner()?.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(file.sync_all()?)
}

/// Largest decompressed buffer a file may declare (Arrow Binary offsets are i32 anyway).
const MAX_BUFFER: i64 = i32::MAX as i64;

/// Checks one encapsulated IPC message at `pos` before arrow-rs reads it: arrow-rs aborts the whole process
/// (allocation failure) on some corrupt lengths, which no `catch_unwind` can stop. Verifies the marker, the
/// flatbuffer, that the body lies inside the file and that every compressed buffer declares a plausible size.
/// Returns where the next message starts, or `None` at the end-of-stream marker.
fn check_message(bytes: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let take = |at: usize, len: usize| {
        let end = at.checked_add(len).filter(|&end| end <= bytes.len());
        end.map(|end| &bytes[at..end]).ok_or_else(|| format!("the message at byte {pos} runs past the end of the file"))
    };
    let word = |at| take(at, 4).map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    if word(pos)? != -1 {
        return Err(format!("no message marker at byte {pos}"));
    }
    let meta_len = word(pos + 4)?;
    if meta_len == 0 {
        return Ok(None);
    }
    let meta_len = usize::try_from(meta_len).map_err(|_| format!("negative message length at byte {pos}"))?;
    let message =
        arrow::ipc::root_as_message(take(pos + 8, meta_len)?).map_err(|e| format!("message at byte {pos}: {e}"))?;
    let body_at = pos + 8 + meta_len;
    let body = usize::try_from(message.bodyLength()).map_err(|_| format!("negative body length at byte {pos}"))?;
    let body = take(body_at, body)?;
    let batch =
        message.header_as_record_batch().or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
    for buffer in batch.filter(|b| b.compression().is_some()).and_then(|b| b.buffers()).into_iter().flatten() {
        let prefix = usize::try_from(buffer.offset()).ok().and_then(|at| body.get(at..at.checked_add(8)?));
        let declared = prefix.map(|p| i64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]));
        if buffer.length() != 0 && !declared.is_some_and(|d| (-1..=MAX_BUFFER).contains(&d)) {
            return Err(format!("message at byte {pos}: a compressed buffer declares an implausible size"));
        }
    }
    Ok(Some(body_at + body.len()))
}

/// Checks an IPC file's footer and every message it points to (see [`check_message`]).
fn check_file(bytes: &[u8]) -> Result<(), String> {
    let tail = bytes.len().checked_sub(10).filter(|&t| t >= 8 && bytes[t + 4..] == *b"ARROW1");
    let tail = tail.ok_or("no footer (the file ends without the closing ARROW1 magic)")?;
    let footer_len =
        usize::try_from(i32::from_le_bytes([bytes[tail], bytes[tail + 1], bytes[tail + 2], bytes[tail + 3]]));
    let footer_at = footer_len.ok().and_then(|len| tail.checked_sub(len)).ok_or("footer length out of range")?;
    let footer = arrow::ipc::root_as_footer(&bytes[footer_at..tail]).map_err(|e| format!("corrupt footer: {e}"))?;
    let blocks = footer.recordBatches().into_iter().flatten().chain(footer.dictionaries().into_iter().flatten());
    for block in blocks {
        let pos = usize::try_from(block.offset()).map_err(|_| "negative block offset")?;
        let end = check_message(bytes, pos)?.ok_or("a footer block points at the end-of-stream marker")?;
        if i64::try_from(end - pos).ok() != Some(i64::from(block.metaDataLength()) + block.bodyLength()) {
            return Err(format!("the footer block at byte {pos} disagrees with its message's length"));
        }
    }
    Ok(())
}

/// Runs an Arrow reader step, turning a panic (arrow-rs asserts on some corrupt inputs) into an error.
fn guarded<T>(read: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let what =
            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
        Err(ArrowError::IpcError(format!("reader failed on corrupt data: {}", what.unwrap_or_default())))
    })
}

/// Decodes the well-formed prefix of an IPC message stream starting at `start`; returns the schema (if read)
/// and the rows of the complete record batches.
fn salvage(bytes: &Buffer, start: usize) -> (Option<SchemaRef>, usize) {
    let mut end = start;
    while let Ok(Some(next)) = check_message(bytes, end) {
        end = next;
    }
    let mut stream = bytes.slice_with_length(start, end - start);
    let mut decoder = StreamDecoder::new();
    let mut rows = 0;
    while let Ok(Some(batch)) = guarded(|| decoder.decode(&mut stream)) {
        rows += batch.num_rows();
    }
    (decoder.schema(), rows)
}

/// Where the message stream of an IPC file starts: after the 6-byte magic and its zero padding (2 bytes in the
/// format spec; arrow-rs pads the header to 64 bytes). Messages begin with the 0xFFFFFFFF continuation marker.
fn stream_start(file: &[u8]) -> usize {
    6 + file.iter().skip(6).take_while(|&&b| b == 0).count()
}

/// Reads an IPC file; for anything that is not a complete file, an error saying what it is and how many ticks
/// are intact.
fn load(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>), ErrorKind> {
    let bytes = Buffer::from_vec(fs::read(path)?);
    if bytes.starts_with(b"ARROW1") {
        let read = check_file(&bytes).map_err(ArrowError::IpcError).and_then(|()| {
            guarded(|| {
                let reader = FileReader::try_new(io::Cursor::new(&bytes[..]), None)?;
                Ok((reader.schema(), reader.collect::<Result<Vec<_>, _>>()?))
            })
        });
        return read.map_err(|e| ErrorKind::Incomplete {
            reason: format!("truncated or corrupt Arrow IPC file ({e})"),
            intact_ticks: salvage(&bytes, stream_start(&bytes)).1,
        });
    }
    if !bytes.starts_with(&[0xff; 4]) {
        // A writer killed between creating its `.partial` and flushing the stream header leaves an empty one.
        let partial = path.extension().is_some_and(|e| e == "partial");
        if partial && bytes.len() < 4 && bytes.iter().all(|&b| b == 0xff) {
            let reason = "the .partial of a writer stopped before it wrote the stream header".to_owned();
            return Err(ErrorKind::Incomplete { reason, intact_ticks: 0 });
        }
        return Err(ErrorKind::NotArrow);
    }
    let (schema, intact_ticks) = salvage(&bytes, 0);
    if let Some(schema) = &schema {
        check_schema(schema)?;
    }
    let reason = "an IPC stream without footer, i.e. the .partial of a writer that never finished (crash, kill or \
                  abort); it is not a complete episode"
        .to_owned();
    Err(ErrorKind::Incomplete { reason, intact_ticks })
}

/// Checks the format marker and every column's presence and type.
fn check_schema(schema: &Schema) -> Result<(), ErrorKind> {
    match schema.metadata().get("glue.format") {
        Some(format) if format == FORMAT => {}
        Some(format) => return Err(ErrorKind::NotGlue(format!("format {format:?}, this reader knows {FORMAT:?}"))),
        None => {
            let columns =
                schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>();
            let why = format!("no \"glue.format\" schema metadata (columns: {})", columns.join(", "));
            return Err(ErrorKind::NotGlue(why));
        }
    }
    for want in layout().fields() {
        let problem = match schema.field_with_name(want.name()) {
            Ok(got) if got.data_type() == want.data_type() => continue,
            Ok(got) => format!("expected type {}, got {}", want.data_type(), got.data_type()),
            Err(_) => format!("missing (expected type {})", want.data_type()),
        };
        return Err(ErrorKind::Column { column: want.name().clone(), row: None, problem });
    }
    Ok(())
}

/// The episode columns of one batch, typed.
struct Columns<'a> {
    frame: &'a UInt32Array,
    timestamp_ns: &'a UInt64Array,
    image: &'a BinaryArray,
    segmentation: &'a BinaryArray,
    robot_state: &'a FixedSizeListArray,
    action: &'a FixedSizeListArray,
    keypoints: &'a ListArray,
    oracle_tracks: &'a ListArray,
}

fn column<'a, A: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a A, ErrorKind> {
    let typed = batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<A>());
    let problem = format!("missing or not a {}", std::any::type_name::<A>());
    typed.ok_or_else(|| ErrorKind::Column { column: name.to_owned(), row: None, problem })
}

fn floats(row: &ArrayRef, column: &'static str) -> Result<Vec<f32>, Fault> {
    let values = row.as_any().downcast_ref::<Float32Array>().ok_or((column, "Float32 values".to_owned()))?;
    match values.null_count() {
        0 => Ok(values.values().to_vec()),
        n => Err((column, format!("expected no null values, got {n}"))),
    }
}

fn fixed_row<const N: usize>(list: &FixedSizeListArray, i: usize, column: &'static str) -> Result<[f32; N], Fault> {
    let values = floats(&list.value(i), column)?;
    values.as_slice().try_into().map_err(|_| (column, format!("expected {N} values, got {}", values.len())))
}

fn keypoints_row(list: &ListArray, i: usize, column: &'static str) -> Result<Option<Keypoints>, Fault> {
    if list.is_null(i) {
        return Ok(None);
    }
    let flat = floats(&list.value(i), column)?;
    Keypoints::from_flat(&flat).map(Some).map_err(|e| (column, e.to_string()))
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, ErrorKind> {
        Ok(Self {
            frame: column(batch, "frame")?,
            timestamp_ns: column(batch, "timestamp_ns")?,
            image: column(batch, "image")?,
            segmentation: column(batch, "segmentation")?,
            robot_state: column(batch, "robot_state")?,
            action: column(batch, "action")?,
            keypoints: column(batch, "keypoints")?,
            oracle_tracks: column(batch, "oracle_tracks")?,
        })
    }

    fn tick(&self, i: usize) -> Result<Tick, Fault> {
        let required: [(&'static str, &dyn Array); 5] = [
            ("frame", self.frame),
            ("timestamp_ns", self.timestamp_ns),
            ("image", self.image),
            ("robot_state", self.robot_state),
            ("action", self.action),
        ];
        if let Some(&(column, _)) = required.iter().find(|(_, array)| array.is_null(i)) {
            return Err((column, "expected a value, got null".to_owned()));
        }
        Ok(Tick {
            frame: self.frame.value(i),
            timestamp_ns: self.timestamp_ns.value(i),
            image: self.image.value(i).to_vec(),
            segmentation: self.segmentation.is_valid(i).then(|| self.segmentation.value(i).to_vec()),
            robot_state: RobotState::from_array(fixed_row(self.robot_state, i, "robot_state")?),
            action: Action::from_array(fixed_row(self.action, i, "action")?),
            keypoints: keypoints_row(self.keypoints, i, "keypoints")?,
            oracle_tracks: keypoints_row(self.oracle_tracks, i, "oracle_tracks")?,
        })
    }
}

/// Builds the episode from a loaded file, validating schema, metadata and every row.
fn parse_episode(schema: &Schema, batches: &[RecordBatch]) -> Result<Episode, ErrorKind> {
    check_schema(schema)?;
    let meta = schema.metadata();
    let info = EpisodeInfo::from_metadata(meta)?;
    let success = parse(meta, "success", "\"true\" or \"false\"")?;
    let count: usize = parse(meta, "ticks", "an unsigned integer")?;
    let mut ticks = Vec::with_capacity(count);
    for batch in batches {
        let columns = Columns::of(batch)?;
        for i in 0..batch.num_rows() {
            let row = ticks.len();
            let tick = columns.tick(i).and_then(|t| check_tick(&info, &t).map(|()| t));
            ticks.push(tick.map_err(|(column, problem)| ErrorKind::Column {
                column: column.into(),
                row: Some(row),
                problem,
            })?);
        }
    }
    if ticks.len() != count {
        let problem = format!("says {count} ticks, but the file holds {} rows", ticks.len());
        return Err(ErrorKind::Metadata { key: "ticks".to_owned(), problem });
    }
    Ok(Episode { info, success, ticks })
}

/// Reads and validates a finished episode file: every column's type and length, the metadata, every row.
/// A `.partial`, truncated, corrupt or foreign file is an error saying so (see [`ErrorKind`]).
pub fn read_episode(path: impl AsRef<Path>) -> Result<Episode, RecordingError> {
    let path = path.as_ref();
    load(path).and_then(|(schema, batches)| parse_episode(&schema, &batches)).map_err(at(path))
}

/// The finished episodes in `dir` (`*.arrow`, never `.partial` or temporary files), sorted by name.
pub fn list_episodes(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, RecordingError> {
    let dir = dir.as_ref();
    let finished = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        p.is_file() && name.ends_with(".arrow") && !name.starts_with('.')
    };
    let entries = fs::read_dir(dir).and_then(|d| d.map(|e| e.map(|e| e.path())).collect::<io::Result<Vec<_>>>());
    let mut paths: Vec<PathBuf> = entries.map_err(|e| at(dir)(e.into()))?.into_iter().filter(|p| finished(p)).collect();
    paths.sort();
    Ok(paths)
}

/// A human-readable summary of an episode file, printed by `glue inspect`.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectReport {
    /// The file.
    pub path: PathBuf,
    /// Its `glue.format`.
    pub format: String,
    /// The episode header.
    pub info: EpisodeInfo,
    /// Whether the task succeeded.
    pub success: bool,
    /// Rows.
    pub ticks: usize,
    /// Column names and Arrow types, in file order.
    pub columns: Vec<(String, String)>,
}

/// Reads and validates an episode file (as [`read_episode`]) and summarises it. For a `.partial`, truncated,
/// corrupt or foreign file the error says what is wrong and how many ticks are intact.
pub fn inspect(path: impl AsRef<Path>) -> Result<InspectReport, RecordingError> {
    let path = path.as_ref();
    let (schema, batches) = load(path).map_err(at(path))?;
    let episode = parse_episode(&schema, &batches).map_err(at(path))?;
    Ok(InspectReport {
        path: path.to_owned(),
        format: FORMAT.to_owned(),
        columns: schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect(),
        ticks: episode.ticks.len(),
        success: episode.success,
        info: episode.info,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        writeln!(f, "file: {}  format: {}", self.path.display(), self.format)?;
        write!(f, "task: {}  seed: {}  variant: {} (strength {:.2})", i.task, i.seed, i.variant, i.strength)?;
        writeln!(f, "  text_query: {:?}", i.text_query)?;
        let seconds = self.ticks as f64 / f64::from(i.control_hz);
        writeln!(
            f,
            "ticks: {} ({seconds:.1} s at {} Hz)  image: {}x{} rgb8",
            self.ticks, i.control_hz, i.width, i.height
        )?;
        let objects = i.objects.iter().map(|o| format!("{} (instance {})", o.name, o.instance)).collect::<Vec<_>>();
        writeln!(f, "objects: {}", objects.join(", "))?;
        let columns = self.columns.iter().map(|(name, ty)| format!("{name}: {ty}")).collect::<Vec<_>>();
        writeln!(f, "columns: {}", columns.join(", "))?;
        write!(f, "success: {}", self.success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory unique to one test, removed when the test ends.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("glue-recording-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn info(episode: u64) -> EpisodeInfo {
        EpisodeInfo {
            episode,
            task: "stack-block".into(),
            text_query: vec!["white block".into(), "blue block".into()],
            seed: 3,
            variant: "clutter".into(),
            strength: 0.5,
            width: 4,
            height: 3,
            control_hz: 10.0,
            objects: vec![
                ObjectInfo { name: "white_block".into(), instance: 1 },
                ObjectInfo { name: "blue_block".into(), instance: 2 },
            ],
        }
    }

    fn tick(frame: u32) -> Tick {
        let f = frame as f32;
        Tick {
            frame,
            timestamp_ns: u64::from(frame) * 100_000_000,
            image: (0..36).map(|i| (i as u32 * 7 + frame) as u8).collect(),
            segmentation: frame.is_multiple_of(2).then(|| vec![frame as u8 % 3; 12]),
            robot_state: RobotState {
                joints: [0.1 * f, -0.2, 0.3, -1.5, 0.0, 1.6, 0.7],
                gripper: 0.04,
                ee_position: [0.5, 0.01 * f, 0.3],
                ee_orientation: [1.0, 0.0, 0.0, 0.0],
            },
            action: Action { position: [0.5, 0.0, 0.2 + 0.01 * f], orientation: [0.0, 1.0, 0.0, 0.0], gripper: 0.08 },
            keypoints: (frame % 3 != 1).then(|| Keypoints { points: vec![[1.5, 2.0, 1.0]; frame as usize % 3] }),
            oracle_tracks: Some(Keypoints { points: vec![[0.5, 1.0, 0.0], [3.0, 2.5, 1.0]] }),
        }
    }

    fn record(dir: &Path, episode: u64, n: u32, success: bool) -> PathBuf {
        let mut writer = EpisodeWriter::create(dir, info(episode)).unwrap();
        (0..n).for_each(|f| writer.push(tick(f)).unwrap());
        writer.finish(success).unwrap()
    }

    #[test]
    fn roundtrip_and_inspect() {
        let tmp = scratch("roundtrip");
        let dir = tmp.0.as_path();
        let path = record(dir, 7, 12, true);
        assert_eq!(path, dir.join("stack-block-clutter-seed000003-ep0007.arrow"));
        let episode = read_episode(&path).unwrap();
        assert_eq!(episode, Episode { info: info(7), success: true, ticks: (0..12).map(tick).collect() });
        assert_eq!(list_episodes(dir).unwrap(), vec![path.clone()]);
        let report = inspect(&path).unwrap().to_string();
        assert!(report.contains("task: stack-block  seed: 3  variant: clutter (strength 0.50)  text_query: [\"white block\", \"blue block\"]"), "{report}");
        assert!(report.contains("ticks: 12 (1.2 s at 10 Hz)  image: 4x3 rgb8"), "{report}");
        assert!(report.contains("robot_state: FixedSizeList(15 x non-null Float32)"), "{report}");
        assert!(report.ends_with("success: true"), "{report}");
        let err = EpisodeWriter::create(dir, info(7)).err().unwrap();
        assert!(matches!(err.kind, ErrorKind::Exists), "{err}");
    }

    #[test]
    fn file_layout_is_one_compressed_batch_with_metadata() {
        let tmp = scratch("layout");
        let dir = tmp.0.as_path();
        let path = record(dir, 0, 5, false);
        let reader = FileReader::try_new(File::open(&path).unwrap(), None).unwrap();
        assert_eq!(reader.num_batches(), 1);
        let meta = reader.schema().metadata().clone();
        for (key, value) in [
            ("glue.format", FORMAT),
            ("success", "false"),
            ("ticks", "5"),
            ("seed", "3"),
            ("text_query", "[\"white block\",\"blue block\"]"),
        ] {
            assert_eq!(meta.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert_eq!(
            meta.get("objects").unwrap(),
            r#"[{"name":"white_block","instance":1},{"name":"blue_block","instance":2}]"#
        );
        let bytes = fs::read(&path).unwrap();
        assert!(bytes.windows(4).any(|w| w == [0x28, 0xb5, 0x2f, 0xfd]), "ZSTD frame magic present");
    }

    #[test]
    fn killed_writer_leaves_only_a_partial() {
        let tmp = scratch("kill");
        let dir = tmp.0.as_path();
        let done = record(dir, 0, 3, true);
        let mut writer = EpisodeWriter::create(dir, info(1)).unwrap();
        (0..4).for_each(|f| writer.push(tick(f)).unwrap());
        let partial = writer.partial_path();
        std::mem::forget(writer); // like kill -9: no destructor, no finish; the flushed bytes are in the file
        fs::write(dir.join(".other.arrow.tmp"), b"").unwrap();
        fs::write(dir.join("notes.txt"), b"").unwrap();
        fs::create_dir(dir.join("dir.arrow")).unwrap();
        assert_eq!(list_episodes(dir).unwrap(), vec![done.clone()]);
        assert_eq!(read_episode(&done).unwrap().ticks.len(), 3);
        let err = inspect(&partial).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Incomplete { intact_ticks: 4, .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("incomplete") && text.contains("4 intact ticks"), "{text}");
        assert!(matches!(read_episode(&partial).unwrap_err().kind, ErrorKind::Incomplete { intact_ticks: 4, .. }));
    }

    /// A kill right after the `.partial` is created (its stream header not yet flushed) leaves an empty file: an
    /// incomplete episode with 0 intact ticks, where an empty `.arrow` file is simply not Arrow.
    #[test]
    fn an_empty_partial_is_an_incomplete_episode() {
        let tmp = scratch("empty-partial");
        let partial = partial_path(tmp.0.as_path(), &info(0));
        fs::write(&partial, b"").unwrap();
        let err = inspect(&partial).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Incomplete { intact_ticks: 0, .. }), "{err}");
        assert!(err.to_string().contains("stopped before it wrote the stream header"), "{err}");
        let arrow = tmp.0.join("empty.arrow");
        fs::write(&arrow, b"").unwrap();
        assert!(matches!(inspect(&arrow).unwrap_err().kind, ErrorKind::NotArrow));
    }

    #[test]
    fn cut_partial_counts_only_complete_ticks() {
        let tmp = scratch("cut-partial");
        let dir = tmp.0.as_path();
        let mut writer = EpisodeWriter::create(dir, info(0)).unwrap();
        (0..3).for_each(|f| writer.push(tick(f)).unwrap());
        let partial = writer.partial_path();
        drop(writer);
        let bytes = fs::read(&partial).unwrap();
        fs::write(&partial, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(inspect(&partial).unwrap_err().kind, ErrorKind::Incomplete { intact_ticks: 2, .. }));
    }

    #[test]
    fn truncated_files_are_clear_errors() {
        let tmp = scratch("truncate");
        let dir = tmp.0.as_path();
        let path = record(dir, 0, 6, true);
        let bytes = fs::read(&path).unwrap();
        let cut = dir.join("cut.arrow");
        for len in (0..bytes.len()).step_by(37).chain([bytes.len() - 1, bytes.len() - 6, 8, 6, 1]) {
            fs::write(&cut, &bytes[..len]).unwrap();
            let err = inspect(&cut).unwrap_err();
            let ok = match &err.kind {
                ErrorKind::Incomplete { intact_ticks, .. } => *intact_ticks == 0 || *intact_ticks == 6,
                ErrorKind::NotArrow => len < 6,
                _ => false,
            };
            assert!(ok, "length {len}: {err}");
            assert!(err.to_string().contains("ticks readable"), "{err}");
        }
        fs::write(&cut, &bytes[..bytes.len() - 6]).unwrap();
        let err = read_episode(&cut).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Incomplete { intact_ticks: 6, .. }), "footer gone, data intact: {err}");
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let tmp = scratch("flip");
        let dir = tmp.0.as_path();
        let bytes = fs::read(record(dir, 0, 4, true)).unwrap();
        let path = dir.join("flipped.arrow");
        for pos in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[pos] ^= 0x5a;
            fs::write(&path, &flipped).unwrap();
            let _ = inspect(&path);
        }
    }

    #[test]
    fn random_bytes_are_clear_errors() {
        let tmp = scratch("random");
        let dir = tmp.0.as_path();
        let path = dir.join("noise.arrow");
        let mut state = 0x9e3779b97f4a7c15u64;
        for len in [0usize, 3, 100, 5000] {
            for prefix in [&b""[..], b"ARROW1\0\0", &[0xff; 4]] {
                let noise = (0..len).map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                });
                fs::write(&path, prefix.iter().copied().chain(noise).collect::<Vec<_>>()).unwrap();
                let err = inspect(&path).unwrap_err();
                assert!(
                    matches!(err.kind, ErrorKind::NotArrow | ErrorKind::Incomplete { intact_ticks: 0, .. }),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn foreign_arrow_file_is_not_a_glue_episode() {
        let tmp = scratch("foreign");
        let dir = tmp.0.as_path();
        let path = dir.join("other.arrow");
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(arrow::array::Int32Array::from(vec![1, 2]))]).unwrap();
        write_file(&path, &schema, &batch).unwrap();
        let err = inspect(&path).unwrap_err();
        assert!(
            err.to_string().contains("not a glue episode: no \"glue.format\" schema metadata (columns: x: Int32)"),
            "{err}"
        );
        let mut wrong = layout();
        wrong.fields = wrong
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "frame" => Arc::new(Field::new("frame", DataType::Int64, false)),
                _ => f.clone(),
            })
            .collect();
        let schema = wrong.with_metadata(info(0).to_metadata());
        write_file(&path, &schema, &RecordBatch::new_empty(Arc::new(schema.clone()))).unwrap();
        let err = read_episode(&path).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: column \"frame\": expected type UInt32, got Int64", path.display()));
    }

    #[test]
    fn invalid_rows_and_metadata_are_named() {
        let tmp = scratch("invalid");
        let dir = tmp.0.as_path();
        let mut writer = EpisodeWriter::create(dir, info(0)).unwrap();
        let mut bad = tick(0);
        bad.image.pop();
        let err = writer.push(bad).unwrap_err();
        assert!(err.to_string().ends_with("column \"image\" row 0: expected 36 bytes (4x3 rgb8), got 35"), "{err}");
        let mut bad = tick(0);
        bad.action.gripper = f32::NAN;
        let err = writer.push(bad).unwrap_err();
        assert!(err.to_string().contains("column \"action\" row 0: action.gripper"), "{err}");
        assert_eq!(writer.ticks(), 0);
        let mut wrong = info(0);
        wrong.variant = "fog".into();
        let err = EpisodeWriter::create(dir, wrong).err().unwrap();
        assert!(err.to_string().contains("metadata \"variant\": expected one of"), "{err}");
        let mut meta = info(0).to_metadata();
        meta.insert("success".into(), "yes".into());
        meta.insert("ticks".into(), "1".into());
        let schema = layout().with_metadata(meta);
        let path = dir.join("meta.arrow");
        write_file(&path, &schema, &ticks_batch(&[tick(0)]).unwrap()).unwrap();
        let err = read_episode(&path).unwrap_err();
        assert!(
            err.to_string().ends_with("metadata \"success\": expected \"true\" or \"false\", got \"yes\""),
            "{err}"
        );
    }
}
