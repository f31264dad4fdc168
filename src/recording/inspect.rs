//! `glue inspect`: an episode file summarised for people.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{EpisodeInfo, FORMAT, RecordingError, at};
use super::read::{load, parse_episode};

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
