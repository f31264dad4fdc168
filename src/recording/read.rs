//! Reading episodes: the IPC file checked message by message before arrow-rs parses it, a `.partial` stream
//! salvaged as far as it is intact, and every column and row validated.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use arrow::array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, ListArray, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamDecoder};

use crate::msg::{Action, Keypoints, RobotState};

use super::{Episode, EpisodeInfo, ErrorKind, FORMAT, Fault, RecordingError, OBJECT_POSES, Tick, at, check_tick, layout, parse};

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
pub(super) fn load(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>), ErrorKind> {
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
            Err(_) if want.name() == OBJECT_POSES => continue,
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
    /// Absent in files written before the column existed.
    object_poses: Option<&'a ListArray>,
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

fn poses_row(list: &ListArray, i: usize) -> Result<Option<Vec<[f32; 7]>>, Fault> {
    if list.is_null(i) {
        return Ok(None);
    }
    let flat = floats(&list.value(i), OBJECT_POSES)?;
    if !flat.len().is_multiple_of(7) {
        return Err((OBJECT_POSES, format!("expected [N, 7] flattened, got {} values", flat.len())));
    }
    Ok(Some(flat.chunks_exact(7).map(|c| c.try_into().expect("chunks of 7")).collect()))
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
            object_poses: match batch.column_by_name(OBJECT_POSES) {
                Some(_) => Some(column(batch, OBJECT_POSES)?),
                None => None,
            },
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
            object_poses: self.object_poses.map(|list| poses_row(list, i)).transpose()?.flatten(),
        })
    }
}

/// Builds the episode from a loaded file, validating schema, metadata and every row.
pub(super) fn parse_episode(schema: &Schema, batches: &[RecordBatch]) -> Result<Episode, ErrorKind> {
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
