//! Writing episodes: the Arrow columns of a batch of ticks and the crash-safe [`EpisodeWriter`] (see the module
//! docs of [`crate::recording`]).

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, ListArray, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::concat_batches;
use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};

use crate::msg::Keypoints;

use super::{EpisodeInfo, ErrorKind, RecordingError, Tick, at, check_tick, item, layout};

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

fn poses_list<'a>(rows: impl Iterator<Item = Option<&'a Vec<[f32; 7]>>>) -> Result<ArrayRef, ArrowError> {
    let (mut lengths, mut valid, mut values) = (Vec::new(), Vec::new(), Vec::<f32>::new());
    for row in rows {
        lengths.push(row.map_or(0, |p| p.len() * 7));
        valid.push(row.is_some());
        values.extend(row.into_iter().flatten().flatten());
    }
    let values = Arc::new(Float32Array::from(values));
    Ok(Arc::new(ListArray::try_new(item(), OffsetBuffer::from_lengths(lengths), values, Some(NullBuffer::from(valid)))?))
}

/// The ticks as one record batch of the episode schema (no metadata).
pub(super) fn ticks_batch(ticks: &[Tick]) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(ticks.iter().map(|t| t.frame))),
        Arc::new(UInt64Array::from_iter_values(ticks.iter().map(|t| t.timestamp_ns))),
        Arc::new(BinaryArray::from_iter_values(ticks.iter().map(|t| &t.image))),
        Arc::new(ticks.iter().map(|t| t.segmentation.as_deref()).collect::<BinaryArray>()),
        fixed_list(ticks.iter().flat_map(|t| t.robot_state.to_array()), 15)?,
        fixed_list(ticks.iter().flat_map(|t| t.action.to_array()), 8)?,
        keypoints_list(ticks.iter().map(|t| t.keypoints.as_ref()))?,
        keypoints_list(ticks.iter().map(|t| t.oracle_tracks.as_ref()))?,
        poses_list(ticks.iter().map(|t| t.object_poses.as_ref()))?,
    ];
    RecordBatch::try_new(Arc::new(layout()), columns)
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

pub(super) fn partial_path(dir: &Path, info: &EpisodeInfo) -> PathBuf {
    dir.join(format!(".{}.partial", info.file_name()))
}

pub(super) fn write_file(path: &Path, schema: &Schema, batch: &RecordBatch) -> Result<(), ErrorKind> {
    let file = BufWriter::new(File::create(path)?);
    let mut writer = FileWriter::try_new_with_options(file, schema, write_options()?)?;
    writer.write(batch)?;
    writer.finish()?;
    let file = writer.into_inner()?.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(file.sync_all()?)
}
