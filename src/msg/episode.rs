//! Episode boundaries, the task objects and the simulator's privileged object poses.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use serde::{Deserialize, Serialize};

use super::codec::{f32_array, tensor_meta, rows, check_finite, check_quat};
use super::{MetaValue, Metadata, MsgError, Message, VARIANTS, meta_strs, meta_one_of};

/// A task object in the scene and its instance id in the [`Segmentation`] image (0 is background).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Object name, e.g. `white_block`.
    pub name: String,
    /// Its instance id in the segmentation image.
    pub instance: u8,
}

/// Episode boundaries: a one-element Utf8 array holding JSON (`{"event": "start", ...}` or
/// `{"event": "end", ...}`) with metadata `kind: "episode"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EpisodeEvent {
    /// An episode begins; `grounding` runs on the next frame (DESIGN.md, "The graph").
    Start {
        /// Task name (non-empty), e.g. `stack-block`.
        task: String,
        /// Text queries naming the task objects, for grounding.
        text_query: Vec<String>,
        /// Scene seed.
        seed: u64,
        /// OOD condition, one of [`VARIANTS`].
        variant: String,
        /// Strength of the OOD condition in `[0, 1]`.
        strength: f32,
        /// Task objects and their segmentation instance ids (absent in JSON = none).
        #[serde(default)]
        objects: Vec<ObjectInfo>,
    },
    /// An episode ends.
    End {
        /// Whether the task succeeded.
        success: bool,
        /// Control ticks run.
        ticks: u64,
    },
}

impl Message for EpisodeEvent {
    const NAME: &'static str = "episode";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let json = serde_json::to_string(self).expect("an enum of strings and numbers always serialises");
        let meta = Metadata::from([("kind".to_owned(), MetaValue::Str("episode".to_owned()))]);
        (Arc::new(StringArray::from(vec![json])), meta)
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        meta_one_of(meta, "kind", &["episode"])?;
        let strings = array
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| MsgError::mismatch("data", "a Utf8 array", format!("{}", array.data_type())))?;
        if strings.len() != 1 || strings.null_count() != 0 {
            let got = format!("{} values ({} null)", strings.len(), strings.null_count());
            return Err(MsgError::mismatch("data", "exactly one non-null JSON string", got));
        }
        serde_json::from_str(strings.value(0)).map_err(|e| {
            MsgError::mismatch("data", "episode event JSON with \"event\": \"start\" or \"end\"", e.to_string())
        })
    }

    fn check(&self) -> Result<(), MsgError> {
        let Self::Start { task, variant, strength, .. } = self else { return Ok(()) };
        if task.is_empty() {
            return Err(MsgError::mismatch("task", "a non-empty task name", "\"\""));
        }
        if !VARIANTS.contains(&variant.as_str()) {
            return Err(MsgError::mismatch("variant", format!("one of {VARIANTS:?}"), format!("{variant:?}")));
        }
        match (0.0..=1.0).contains(strength) {
            true => Ok(()),
            false => Err(MsgError::mismatch("strength", "a finite value in [0, 1]", format!("{strength:?}"))),
        }
    }
}

/// Privileged simulator state for scripted experts: named object poses, shape `[N, 7]`
/// (x, y, z, qx, qy, qz, qw), names in metadata `names` (Strs), one per row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectPoses {
    /// Object names, one per pose.
    pub names: Vec<String>,
    /// Poses: position (m) and unit quaternion (x, y, z, w, within 1e-3).
    pub poses: Vec<[f32; 7]>,
}

impl Message for ObjectPoses {
    const NAME: &'static str = "object_poses";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let mut meta = tensor_meta(&[self.poses.len(), 7]);
        meta.insert("names".to_owned(), MetaValue::Strs(self.names.clone()));
        (f32_array(self.poses.concat()), meta)
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let poses = rows::<7>(array, meta)?;
        Ok(Self { names: meta_strs(meta, "names")?.to_vec(), poses })
    }

    fn check(&self) -> Result<(), MsgError> {
        if self.names.len() != self.poses.len() {
            let expected = format!("{} names (one per pose row)", self.poses.len());
            return Err(MsgError::mismatch("names", expected, self.names.len().to_string()));
        }
        for (i, pose) in self.poses.iter().enumerate() {
            let field = format!("poses[{i}]");
            check_finite(&field, pose)?;
            check_quat(&field, &[pose[3], pose[4], pose[5], pose[6]], 1e-3)?;
        }
        Ok(())
    }
}
