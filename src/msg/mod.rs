//! The one message contract between dora nodes (DESIGN.md, "Messages").
//!
//! Every message type is defined once here with its Arrow encoding, its decoding and its validation, so nodes
//! never hand-parse arrays. The library never imports dora: metadata is our own [`Metadata`] map, whose
//! [`MetaValue`] variants mirror dora's `Parameter` one to one; the bridge crate converts between the two.
//!
//! Conventions follow the dora node-hub so hub nodes interoperate:
//! - images are a flat `UInt8` array with metadata `encoding` (`"rgb8"`; `"bgr8"` is accepted and converted to
//!   rgb on decode), `width`, `height` (Int) and `primitive: "image"` (optional on decode, as older hub nodes
//!   omit it, but checked when present);
//! - tensors are a flat `Float32` array with metadata `shape` (Ints) and `dtype: "float32"`;
//! - joint vectors carry `encoding: "jointstate"` and the component `names`.
//!
//! Every message also carries a [`Header`] (`episode`, `frame`, `timestamp_ns` as Int) so recordings and replays
//! line up. Decoding rejects anything malformed with a [`MsgError`] that names the message, the field, what was
//! expected and what came.

use std::collections::BTreeMap;
use std::fmt;

use arrow::array::{Array, ArrayRef};

mod codec;
mod episode;
mod image;
mod perception;
mod robot;
#[cfg(test)]
mod tests;

pub use episode::{EpisodeEvent, ObjectInfo, ObjectPoses};
pub use image::{Image, Segmentation};
pub use perception::{Condition, Keypoints};
pub use robot::{Action, ActionChunk, RobotState};

/// One metadata value; the variants mirror dora's `Parameter` (bool, integer, float, string and their lists).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list of integers (e.g. a tensor `shape`).
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f64>),
    /// A list of strings (e.g. joint `names`).
    Strs(Vec<String>),
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(v) => write!(f, "Bool {v}"),
            Self::Int(v) => write!(f, "Int {v}"),
            Self::Float(v) => write!(f, "Float {v}"),
            Self::Str(v) => write!(f, "Str {v:?}"),
            Self::Ints(v) => write!(f, "Ints {v:?}"),
            Self::Floats(v) => write!(f, "Floats {v:?}"),
            Self::Strs(v) => write!(f, "Strs {v:?}"),
        }
    }
}

/// The metadata map sent beside every message's array (dora's `MetadataParameters`, ordered for determinism).
pub type Metadata = BTreeMap<String, MetaValue>;

/// The OOD conditions an episode may run under (paper sec. IV): `none` is in-distribution.
pub const VARIANTS: [&str; 4] = ["none", "clutter", "occlusion", "lighting"];

/// Largest gripper opening width in metres (Franka hand).
pub const GRIPPER_MAX: f32 = 0.08;

/// Why a message was rejected: which message and field, and what was expected against what came.
#[derive(Debug, Clone, PartialEq)]
pub struct MsgError {
    /// The message's [`Message::NAME`] (`"metadata"` when raised by a bare metadata helper).
    pub message: &'static str,
    /// The field or metadata key at fault, e.g. `"gripper"`, `"frame"`, `"actions[2].orientation"`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// The two ways a field can be wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A metadata key is absent; `expected` names its type, e.g. `"Int"`.
    Missing {
        /// The expected value type.
        expected: String,
    },
    /// A value is present but wrong.
    Mismatch {
        /// The expected shape, type or range.
        expected: String,
        /// What came instead.
        got: String,
    },
}

impl MsgError {
    fn missing(field: &str, expected: &str) -> Self {
        let problem = Problem::Missing { expected: expected.to_owned() };
        Self { message: "metadata", field: field.to_owned(), problem }
    }

    fn mismatch(field: impl Into<String>, expected: impl Into<String>, got: impl Into<String>) -> Self {
        let problem = Problem::Mismatch { expected: expected.into(), got: got.into() };
        Self { message: "metadata", field: field.into(), problem }
    }

    /// Attributes the error to `message` (used by [`Message`]'s provided methods).
    fn within(mut self, message: &'static str) -> Self {
        self.message = message;
        self
    }

    /// Prefixes the field with a parent path, e.g. `gripper` -> `actions[3].gripper`.
    fn under(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl fmt::Display for MsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Missing { expected } => {
                write!(f, "{}: missing metadata {:?} ({expected})", self.message, self.field)
            }
            Problem::Mismatch { expected, got } => {
                write!(f, "{}.{}: expected {expected}, got {got}", self.message, self.field)
            }
        }
    }
}

impl std::error::Error for MsgError {}

/// Episode index, frame index and capture time, carried in every message's metadata
/// (keys `episode`, `frame`, `timestamp_ns`, as Int) so recordings and replays line up (DESIGN.md).
///
/// Metadata integers are i64: values above `i64::MAX` (about 292 years of nanoseconds) saturate on encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Episode index.
    pub episode: u64,
    /// Frame (control tick) index within the episode.
    pub frame: u64,
    /// Capture time in nanoseconds.
    pub timestamp_ns: u64,
}

impl Header {
    /// Writes the three header keys into `meta`.
    pub fn write(&self, meta: &mut Metadata) {
        for (key, value) in [("episode", self.episode), ("frame", self.frame), ("timestamp_ns", self.timestamp_ns)] {
            meta.insert(key.to_owned(), MetaValue::Int(i64::try_from(value).unwrap_or(i64::MAX)));
        }
    }

    /// Reads the three header keys from `meta`; each must be a non-negative Int.
    pub fn read(meta: &Metadata) -> Result<Self, MsgError> {
        Ok(Self {
            episode: meta_u64(meta, "episode")?,
            frame: meta_u64(meta, "frame")?,
            timestamp_ns: meta_u64(meta, "timestamp_ns")?,
        })
    }
}

fn meta_get<'a, T>(
    meta: &'a Metadata,
    key: &str,
    expected: &str,
    pick: impl FnOnce(&'a MetaValue) -> Option<T>,
) -> Result<T, MsgError> {
    let value = meta.get(key).ok_or_else(|| MsgError::missing(key, expected))?;
    pick(value).ok_or_else(|| MsgError::mismatch(key, expected, value.to_string()))
}

/// Reads an Int metadata value; the error names the key and what came instead.
pub fn meta_int(meta: &Metadata, key: &str) -> Result<i64, MsgError> {
    meta_get(meta, key, "Int", |v| match v {
        MetaValue::Int(i) => Some(*i),
        _ => None,
    })
}

/// Reads a non-negative Int metadata value as u64.
pub fn meta_u64(meta: &Metadata, key: &str) -> Result<u64, MsgError> {
    meta_get(meta, key, "Int >= 0", |v| match v {
        MetaValue::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    })
}

/// Reads a Str metadata value.
pub fn meta_str<'a>(meta: &'a Metadata, key: &str) -> Result<&'a str, MsgError> {
    meta_get(meta, key, "Str", |v| match v {
        MetaValue::Str(s) => Some(s.as_str()),
        _ => None,
    })
}

/// Reads an Ints metadata value.
pub fn meta_ints<'a>(meta: &'a Metadata, key: &str) -> Result<&'a [i64], MsgError> {
    meta_get(meta, key, "Ints", |v| match v {
        MetaValue::Ints(s) => Some(s.as_slice()),
        _ => None,
    })
}

/// Reads a Strs metadata value.
pub fn meta_strs<'a>(meta: &'a Metadata, key: &str) -> Result<&'a [String], MsgError> {
    meta_get(meta, key, "Strs", |v| match v {
        MetaValue::Strs(s) => Some(s.as_slice()),
        _ => None,
    })
}

/// Checks that a Str metadata value is one of `allowed`, returning it.
fn meta_one_of<'a>(meta: &'a Metadata, key: &str, allowed: &[&str]) -> Result<&'a str, MsgError> {
    let value = meta_str(meta, key)?;
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(MsgError::mismatch(key, format!("one of {allowed:?}"), format!("{value:?}")))
    }
}

/// Checks an optional Str key: absent is fine, present must equal `want`.
fn meta_optional(meta: &Metadata, key: &str, want: &str) -> Result<(), MsgError> {
    if meta.contains_key(key) {
        meta_one_of(meta, key, &[want])?;
    }
    Ok(())
}

/// A message between dora nodes: one Arrow array plus metadata, with a [`Header`] in the metadata.
///
/// Implementors supply [`Message::NAME`], `encode_body`, `decode_body` and `check`; callers use the provided
/// [`Message::encode`], [`Message::decode`] and [`Message::validate`], which add the header and attribute errors
/// to the message.
pub trait Message: Sized {
    /// The message name used in errors (and as the dataflow output id where there is one).
    const NAME: &'static str;

    /// Encodes the payload: the array and its message-specific metadata (no header).
    fn encode_body(&self) -> (ArrayRef, Metadata);

    /// Parses the payload from the array and metadata without value validation (that is `check`'s job).
    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError>;

    /// Checks value invariants (finite values, ranges, lengths); errors are not yet attributed to the message.
    fn check(&self) -> Result<(), MsgError>;

    /// Checks value invariants, with errors attributed to this message; producers call it before sending.
    fn validate(&self) -> Result<(), MsgError> {
        self.check().map_err(|e| e.within(Self::NAME))
    }

    /// Encodes the message and `header` into an Arrow array and metadata.
    fn encode(&self, header: &Header) -> (ArrayRef, Metadata) {
        let (array, mut meta) = self.encode_body();
        header.write(&mut meta);
        (array, meta)
    }

    /// Decodes and validates a message; any malformed part is an error naming the field.
    fn decode(array: &dyn Array, meta: &Metadata) -> Result<(Header, Self), MsgError> {
        let decoded = Header::read(meta).and_then(|header| Ok((header, Self::decode_body(array, meta)?)));
        let (header, message) = decoded.map_err(|e| e.within(Self::NAME))?;
        message.validate()?;
        Ok((header, message))
    }
}
