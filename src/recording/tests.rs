use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::FileReader;

use crate::msg::{Action, Keypoints, ObjectInfo, RobotState};

use super::*;
use super::write::{partial_path, ticks_batch, write_file};

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
        object_poses: (frame % 2 == 0).then(|| vec![[0.4, 0.01 * f, 0.02, 0.0, 0.0, 0.0, 1.0], [0.6, -0.1, 0.02, 0.0, 0.0, 0.6, 0.8]]),
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

/// A file written before the `object_poses` column existed (the same `glue.format`, one column fewer) reads with no
/// poses on any tick; every other column as written.
#[test]
fn files_without_object_poses_read_as_none() {
    let tmp = scratch("no-poses");
    let ticks = [tick(0), tick(1)];
    let columns: Vec<usize> = (0..layout().fields().len()).filter(|&i| layout().field(i).name() != OBJECT_POSES).collect();
    let mut meta = info(0).to_metadata();
    meta.insert("success".into(), "true".into());
    meta.insert("ticks".into(), "2".into());
    let schema = layout().project(&columns).unwrap().with_metadata(meta);
    let batch = ticks_batch(&ticks).unwrap().project(&columns).unwrap();
    let path = tmp.0.join("old.arrow");
    write_file(&path, &schema, &batch.with_schema(Arc::new(schema.clone())).unwrap()).unwrap();
    let episode = read_episode(&path).unwrap();
    assert!(ticks[0].object_poses.is_some(), "the fixture tick carries poses");
    for (read, written) in episode.ticks.iter().zip(&ticks) {
        assert_eq!(read.object_poses, None);
        assert_eq!(Tick { object_poses: None, ..written.clone() }, *read);
    }
}

/// Object poses must hold one unit-quaternion pose per task object of the episode; the error names the column.
#[test]
fn object_poses_of_another_shape_are_named() {
    let tmp = scratch("bad-poses");
    let mut writer = EpisodeWriter::create(&tmp.0, info(0)).unwrap();
    let mut bad = tick(0);
    bad.object_poses = Some(vec![[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]);
    let err = writer.push(bad).unwrap_err().to_string();
    assert!(err.contains("column \"object_poses\" row 0: expected [2, 7] (one pose per task object), got [1, 7]"), "{err}");
    let mut bad = tick(0);
    bad.object_poses.as_mut().unwrap()[1][6] = 3.0;
    let err = writer.push(bad).unwrap_err().to_string();
    assert!(err.contains("column \"object_poses\" row 0") && err.contains("poses[1]"), "{err}");
    assert_eq!(writer.ticks(), 0);
}
