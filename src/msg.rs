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
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, Float32Array, PrimitiveArray, StringArray, UInt8Array};
use arrow::datatypes::{Float32Type, UInt8Type};
use serde::{Deserialize, Serialize};

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

/// The values of a non-null primitive array of type `T`; the error names field `data`.
fn values<T: ArrowPrimitiveType>(array: &dyn Array) -> Result<&[T::Native], MsgError> {
    let typed = array.as_any().downcast_ref::<PrimitiveArray<T>>().ok_or_else(|| {
        MsgError::mismatch("data", format!("a {} array", T::DATA_TYPE), format!("{}", array.data_type()))
    })?;
    match typed.null_count() {
        0 => Ok(&typed.values()[..]),
        n => Err(MsgError::mismatch("data", "no nulls", format!("{n} nulls"))),
    }
}

fn f32_array(values: Vec<f32>) -> ArrayRef {
    Arc::new(Float32Array::from(values))
}

/// Tensor metadata: `shape` and `dtype: "float32"`.
fn tensor_meta(shape: &[usize]) -> Metadata {
    let shape = shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
    Metadata::from([
        ("shape".to_owned(), MetaValue::Ints(shape)),
        ("dtype".to_owned(), MetaValue::Str("float32".to_owned())),
    ])
}

/// Checks a tensor's `dtype`, that its `shape` metadata is `[cols]` (or `[N, cols]` when `matrix`), and that
/// the array length agrees with the shape.
fn tensor<'a>(array: &'a dyn Array, meta: &Metadata, matrix: bool, cols: usize) -> Result<&'a [f32], MsgError> {
    let data = values::<Float32Type>(array)?;
    meta_one_of(meta, "dtype", &["float32"])?;
    let shape = meta_ints(meta, "shape")?;
    let rows = match (matrix, shape) {
        (false, &[c]) if c == cols as i64 => Some(1),
        (true, &[n, c]) if c == cols as i64 => u64::try_from(n).ok(),
        _ => None,
    };
    let Some(rows) = rows else {
        let form = if matrix { format!("[N, {cols}] with N >= 0") } else { format!("[{cols}]") };
        return Err(MsgError::mismatch("shape", form, format!("{shape:?}")));
    };
    let want = u128::from(rows) * cols as u128;
    if want == data.len() as u128 {
        Ok(data)
    } else {
        Err(MsgError::mismatch("data", format!("{want} f32 values (shape {shape:?})"), data.len().to_string()))
    }
}

/// A fixed-shape `[N]` tensor as an array.
fn fixed<const N: usize>(array: &dyn Array, meta: &Metadata) -> Result<[f32; N], MsgError> {
    let data = tensor(array, meta, false, N)?;
    Ok(*data.first_chunk::<N>().expect("tensor() checked the length is N"))
}

/// Rows of a `[N, C]` tensor.
fn rows<const C: usize>(array: &dyn Array, meta: &Metadata) -> Result<Vec<[f32; C]>, MsgError> {
    Ok(tensor(array, meta, true, C)?.as_chunks::<C>().0.to_vec())
}

fn check_finite(field: &str, values: &[f32]) -> Result<(), MsgError> {
    match values.iter().all(|v| v.is_finite()) {
        true => Ok(()),
        false => Err(MsgError::mismatch(field, "finite values", format!("{values:?}"))),
    }
}

/// Checks a finite quaternion (x, y, z, w) whose norm is within `tol` of 1.
fn check_quat(field: &str, q: &[f32; 4], tol: f64) -> Result<(), MsgError> {
    let norm = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    match (norm - 1.0).abs() <= tol {
        true => Ok(()),
        false => Err(MsgError::mismatch(
            field,
            format!("a unit quaternion (x, y, z, w) with |norm - 1| <= {tol}"),
            format!("{q:?} (norm {norm})"),
        )),
    }
}

/// Checks a gripper width in `[0 - tol, GRIPPER_MAX + tol]` metres (NaN fails).
fn check_gripper(field: &str, width: f32, tol: f32) -> Result<(), MsgError> {
    match (-tol..=GRIPPER_MAX + tol).contains(&width) {
        true => Ok(()),
        false => {
            let range =
                if tol == 0.0 { format!("[0, {GRIPPER_MAX}]") } else { format!("[0, {GRIPPER_MAX}] (+/- {tol})") };
            Err(MsgError::mismatch(field, format!("a finite width in {range} m"), format!("{width:?}")))
        }
    }
}

/// Checks `width, height >= 1` and `data.len() == width * height * channels` for a raster of `encoding`.
fn check_raster(width: u32, height: u32, len: usize, channels: u64, encoding: &str) -> Result<(), MsgError> {
    for (field, value) in [("width", width), ("height", height)] {
        if value == 0 {
            return Err(MsgError::mismatch(field, ">= 1", "0"));
        }
    }
    let want = u64::from(width) * u64::from(height) * channels;
    match want == len as u64 {
        true => Ok(()),
        false => {
            Err(MsgError::mismatch("data", format!("{want} bytes ({width}x{height} {encoding})"), len.to_string()))
        }
    }
}

/// Raster metadata in the node-hub convention.
fn raster_meta(width: u32, height: u32, encoding: &str, primitive: &str) -> Metadata {
    Metadata::from([
        ("encoding".to_owned(), MetaValue::Str(encoding.to_owned())),
        ("width".to_owned(), MetaValue::Int(width.into())),
        ("height".to_owned(), MetaValue::Int(height.into())),
        ("primitive".to_owned(), MetaValue::Str(primitive.to_owned())),
    ])
}

/// Reads an image dimension: an Int in `1..=u32::MAX`.
fn meta_dim(meta: &Metadata, key: &str) -> Result<u32, MsgError> {
    meta_get(meta, key, "Int in 1..=4294967295", |v| match v {
        MetaValue::Int(i) => u32::try_from(*i).ok().filter(|&d| d >= 1),
        _ => None,
    })
}

/// An RGB camera image (rgb8, row-major, `width * height * 3` bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels (>= 1).
    pub width: u32,
    /// Height in pixels (>= 1).
    pub height: u32,
    /// Pixels, rgb8.
    pub data: Vec<u8>,
}

impl Message for Image {
    const NAME: &'static str = "image";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let array: ArrayRef = Arc::new(UInt8Array::from(self.data.clone()));
        (array, raster_meta(self.width, self.height, "rgb8", "image"))
    }

    /// Accepts `rgb8` and `bgr8` (converted to rgb).
    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let bytes = values::<UInt8Type>(array)?;
        let encoding = meta_one_of(meta, "encoding", &["rgb8", "bgr8"])?;
        meta_optional(meta, "primitive", "image")?;
        let (width, height) = (meta_dim(meta, "width")?, meta_dim(meta, "height")?);
        check_raster(width, height, bytes.len(), 3, encoding)?;
        let mut data = bytes.to_vec();
        if encoding == "bgr8" {
            data.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
        }
        Ok(Self { width, height, data })
    }

    fn check(&self) -> Result<(), MsgError> {
        check_raster(self.width, self.height, self.data.len(), 3, "rgb8")
    }
}

/// Instance segmentation: one instance id per pixel (0 = background), encoding `mono8`,
/// primitive `segmentation`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Width in pixels (>= 1).
    pub width: u32,
    /// Height in pixels (>= 1).
    pub height: u32,
    /// Instance id per pixel, row-major.
    pub data: Vec<u8>,
}

impl Message for Segmentation {
    const NAME: &'static str = "segmentation";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let array: ArrayRef = Arc::new(UInt8Array::from(self.data.clone()));
        (array, raster_meta(self.width, self.height, "mono8", "segmentation"))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let data = values::<UInt8Type>(array)?.to_vec();
        meta_one_of(meta, "encoding", &["mono8"])?;
        meta_optional(meta, "primitive", "segmentation")?;
        Ok(Self { width: meta_dim(meta, "width")?, height: meta_dim(meta, "height")?, data })
    }

    fn check(&self) -> Result<(), MsgError> {
        check_raster(self.width, self.height, self.data.len(), 1, "mono8")
    }
}

/// The arm's measured state: a `jointstate` vector of 15 Float32 (shape `[15]`) in the order of
/// [`RobotState::NAMES`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobotState {
    /// Joint angles, rad.
    pub joints: [f32; 7],
    /// Gripper opening width, m, in `[0, 0.08]` (1e-3 tolerance for sensor noise).
    pub gripper: f32,
    /// End-effector position, m, in the robot base frame.
    pub ee_position: [f32; 3],
    /// End-effector orientation, quaternion (x, y, z, w), unit within 1e-3.
    pub ee_orientation: [f32; 4],
}

impl RobotState {
    /// Component names, sent as metadata `names`; decoding requires exactly this list.
    pub const NAMES: [&'static str; 15] = [
        "joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "joint7", "gripper", "ee_x", "ee_y", "ee_z",
        "ee_qx", "ee_qy", "ee_qz", "ee_qw",
    ];

    /// The flat vector in [`RobotState::NAMES`] order.
    pub fn to_array(&self) -> [f32; 15] {
        let mut out = [0.0; 15];
        out[..7].copy_from_slice(&self.joints);
        out[7] = self.gripper;
        out[8..11].copy_from_slice(&self.ee_position);
        out[11..].copy_from_slice(&self.ee_orientation);
        out
    }

    /// Splits a flat vector in [`RobotState::NAMES`] order (no validation).
    pub fn from_array(a: [f32; 15]) -> Self {
        let mut state = Self { joints: [0.0; 7], gripper: a[7], ee_position: [0.0; 3], ee_orientation: [0.0; 4] };
        state.joints.copy_from_slice(&a[..7]);
        state.ee_position.copy_from_slice(&a[8..11]);
        state.ee_orientation.copy_from_slice(&a[11..]);
        state
    }
}

impl Message for RobotState {
    const NAME: &'static str = "robot_state";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let mut meta = tensor_meta(&[15]);
        meta.insert("encoding".to_owned(), MetaValue::Str("jointstate".to_owned()));
        meta.insert("names".to_owned(), MetaValue::Strs(Self::NAMES.map(str::to_owned).to_vec()));
        (f32_array(self.to_array().to_vec()), meta)
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let values = fixed::<15>(array, meta)?;
        meta_one_of(meta, "encoding", &["jointstate"])?;
        let names = meta_strs(meta, "names")?;
        if names != Self::NAMES {
            return Err(MsgError::mismatch("names", format!("{:?}", Self::NAMES), format!("{names:?}")));
        }
        Ok(Self::from_array(values))
    }

    fn check(&self) -> Result<(), MsgError> {
        check_finite("joints", &self.joints)?;
        check_gripper("gripper", self.gripper, 1e-3)?;
        check_finite("ee_position", &self.ee_position)?;
        check_finite("ee_orientation", &self.ee_orientation)?;
        check_quat("ee_orientation", &self.ee_orientation, 1e-3)
    }
}

/// The absolute end-effector target commanded to the sim or the real arm: flat Float32, shape `[8]`, in the
/// order of [`Action::to_array`].
///
/// Decoding rejects non-finite values, a gripper outside `[0, 0.08]` m and a quaternion with `|norm - 1| > 1e-2`:
/// producers normalise (policies through [`Action::normalized`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Action {
    /// Target position, m, robot base frame.
    pub position: [f32; 3],
    /// Target orientation, quaternion (x, y, z, w).
    pub orientation: [f32; 4],
    /// Target gripper opening width, m, in `[0, 0.08]`.
    pub gripper: f32,
}

impl Action {
    /// `[x, y, z, qx, qy, qz, qw, gripper]`.
    pub fn to_array(&self) -> [f32; 8] {
        let [x, y, z] = self.position;
        let [qx, qy, qz, qw] = self.orientation;
        [x, y, z, qx, qy, qz, qw, self.gripper]
    }

    /// Inverse of [`Action::to_array`] (no validation).
    pub fn from_array(a: [f32; 8]) -> Self {
        Self { position: [a[0], a[1], a[2]], orientation: [a[3], a[4], a[5], a[6]], gripper: a[7] }
    }

    /// For policy outputs: normalises the quaternion, clamps nothing, and returns a valid action or the error
    /// (non-finite value, zero-norm quaternion, gripper out of range).
    pub fn normalized(mut self) -> Result<Self, MsgError> {
        check_finite("orientation", &self.orientation).map_err(|e| e.within(Self::NAME))?;
        let norm = self.orientation.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        if norm < 1e-6 {
            let got = format!("{:?} (norm {norm})", self.orientation);
            return Err(MsgError::mismatch("orientation", "a non-zero quaternion", got).within(Self::NAME));
        }
        self.orientation = self.orientation.map(|v| (f64::from(v) / norm) as f32);
        self.validate().map(|()| self)
    }
}

impl Message for Action {
    const NAME: &'static str = "action";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        (f32_array(self.to_array().to_vec()), tensor_meta(&[8]))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        fixed::<8>(array, meta).map(Self::from_array)
    }

    fn check(&self) -> Result<(), MsgError> {
        check_finite("position", &self.position)?;
        check_finite("orientation", &self.orientation)?;
        check_quat("orientation", &self.orientation, 1e-2)?;
        check_gripper("gripper", self.gripper, 0.0)
    }
}

/// Tracked keypoints, shape `[N, 3]` = (x, y in pixels, visible in {0, 1}); N = 0 is an empty array with
/// shape `[0, 3]`. The tracker keeps a stable index per keypoint (DESIGN.md, "The graph").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Keypoints {
    /// `[x, y, visible]` per keypoint.
    pub points: Vec<[f32; 3]>,
}

impl Keypoints {
    /// The row-major flat vector `[x0, y0, v0, x1, ...]`.
    pub fn to_flat(&self) -> Vec<f32> {
        self.points.concat()
    }

    /// Splits a flat vector into rows; the length must be a multiple of 3 (no value validation).
    pub fn from_flat(flat: &[f32]) -> Result<Self, MsgError> {
        match flat.len() % 3 {
            0 => Ok(Self { points: flat.as_chunks::<3>().0.to_vec() }),
            _ => Err(MsgError::mismatch("data", "a multiple of 3 values ([N, 3])", flat.len().to_string())
                .within(Self::NAME)),
        }
    }
}

impl Message for Keypoints {
    const NAME: &'static str = "keypoints";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        (f32_array(self.to_flat()), tensor_meta(&[self.points.len(), 3]))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        rows::<3>(array, meta).map(|points| Self { points })
    }

    fn check(&self) -> Result<(), MsgError> {
        for (i, &[x, y, visible]) in self.points.iter().enumerate() {
            if !(x.is_finite() && y.is_finite()) {
                return Err(MsgError::mismatch(format!("points[{i}].xy"), "finite pixels", format!("({x:?}, {y:?})")));
            }
            if visible != 0.0 && visible != 1.0 {
                return Err(MsgError::mismatch(
                    format!("points[{i}].visible"),
                    "exactly 0 or 1",
                    format!("{visible:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// A policy's action horizon: shape `[H, 8]`, H >= 1, each row an [`Action`].
#[derive(Debug, Clone, PartialEq)]
pub struct ActionChunk {
    /// The actions in execution order.
    pub actions: Vec<Action>,
}

impl Message for ActionChunk {
    const NAME: &'static str = "action_chunk";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let flat = self.actions.iter().flat_map(|a| a.to_array()).collect();
        (f32_array(flat), tensor_meta(&[self.actions.len(), 8]))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        rows::<8>(array, meta).map(|rows| Self { actions: rows.into_iter().map(Action::from_array).collect() })
    }

    fn check(&self) -> Result<(), MsgError> {
        if self.actions.is_empty() {
            return Err(MsgError::mismatch("actions", "at least one action (H >= 1)", "0"));
        }
        for (i, action) in self.actions.iter().enumerate() {
            action.check().map_err(|e| e.under(&format!("actions[{i}]")))?;
        }
        Ok(())
    }
}

/// The encoder's global condition `W` for the policy (eq. 3 per observation step, the steps concatenated):
/// shape `[W]`, float32, every value finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub values: Vec<f32>,
}

impl Message for Condition {
    const NAME: &'static str = "condition";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        (f32_array(self.values.clone()), tensor_meta(&[self.values.len()]))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let data = values::<Float32Type>(array)?;
        meta_one_of(meta, "dtype", &["float32"])?;
        match meta_ints(meta, "shape")? {
            &[w] if w == data.len() as i64 && w > 0 => Ok(Self { values: data.to_vec() }),
            shape => Err(MsgError::mismatch("shape", format!("[{}] (one value per array element, W >= 1)", data.len()), format!("{shape:?}"))),
        }
    }

    fn check(&self) -> Result<(), MsgError> {
        check_finite("values", &self.values)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, new_null_array};
    use proptest::prelude::*;

    fn unit_quat() -> impl Strategy<Value = [f32; 4]> {
        prop::array::uniform4(-1.0f32..1.0)
            .prop_filter("non-degenerate", |q| q.iter().map(|v| v * v).sum::<f32>() > 0.01)
            .prop_map(|q| {
                let n = q.iter().map(|v| v * v).sum::<f32>().sqrt();
                q.map(|v| v / n)
            })
    }

    fn header() -> impl Strategy<Value = Header> {
        (0..=i64::MAX as u64, 0..=i64::MAX as u64, 0..=i64::MAX as u64)
            .prop_map(|(episode, frame, timestamp_ns)| Header { episode, frame, timestamp_ns })
    }

    fn action() -> impl Strategy<Value = Action> {
        (prop::array::uniform3(-2.0f32..2.0), unit_quat(), 0.0f32..=GRIPPER_MAX)
            .prop_map(|(position, orientation, gripper)| Action { position, orientation, gripper })
    }

    fn robot_state() -> impl Strategy<Value = RobotState> {
        (prop::array::uniform7(-3.0f32..3.0), 0.0f32..=GRIPPER_MAX, prop::array::uniform3(-2.0f32..2.0), unit_quat())
            .prop_map(|(joints, gripper, ee_position, ee_orientation)| RobotState {
                joints,
                gripper,
                ee_position,
                ee_orientation,
            })
    }

    fn keypoints(max: usize) -> impl Strategy<Value = Keypoints> {
        let point =
            (0.0f32..224.0, 0.0f32..224.0, prop::bool::ANY).prop_map(|(x, y, v)| [x, y, f32::from(u8::from(v))]);
        prop::collection::vec(point, 0..max).prop_map(|points| Keypoints { points })
    }

    fn image() -> impl Strategy<Value = Image> {
        (1u32..8, 1u32..8).prop_flat_map(|(width, height)| {
            prop::collection::vec(any::<u8>(), (width * height * 3) as usize).prop_map(move |data| Image {
                width,
                height,
                data,
            })
        })
    }

    fn segmentation() -> impl Strategy<Value = Segmentation> {
        (1u32..8, 1u32..8).prop_flat_map(|(width, height)| {
            prop::collection::vec(any::<u8>(), (width * height) as usize).prop_map(move |data| Segmentation {
                width,
                height,
                data,
            })
        })
    }

    fn episode_event() -> impl Strategy<Value = EpisodeEvent> {
        let object = (".{0,10}", any::<u8>()).prop_map(|(name, instance)| ObjectInfo { name, instance });
        let start = (
            ("[a-z][a-z-]{0,12}", prop::collection::vec(".{0,10}", 0..3), any::<u64>()),
            (0usize..4, 0.0f32..=1.0, prop::collection::vec(object, 0..3)),
        )
            .prop_map(|((task, text_query, seed), (v, strength, objects))| EpisodeEvent::Start {
                task,
                text_query,
                seed,
                variant: VARIANTS[v].to_owned(),
                strength,
                objects,
            });
        let end = (any::<bool>(), any::<u64>()).prop_map(|(success, ticks)| EpisodeEvent::End { success, ticks });
        prop_oneof![start, end]
    }

    fn object_poses() -> impl Strategy<Value = ObjectPoses> {
        let pose = (prop::array::uniform3(-1.0f32..1.0), unit_quat())
            .prop_map(|(p, q)| [p[0], p[1], p[2], q[0], q[1], q[2], q[3]]);
        prop::collection::vec(("[a-z_]{1,8}", pose), 0..5).prop_map(|pairs| {
            let (names, poses) = pairs.into_iter().unzip();
            ObjectPoses { names, poses }
        })
    }

    /// Decodes and expects a rejection naming `field`.
    fn rejects<M: Message + fmt::Debug>(array: &dyn Array, meta: &Metadata, field: &str) -> MsgError {
        let err = M::decode(array, meta).expect_err("malformed message must be rejected");
        assert_eq!((err.message, err.field.as_str()), (M::NAME, field), "{err}");
        err
    }

    fn roundtrip<M: Message + PartialEq + fmt::Debug>(message: &M, header: &Header) {
        let (array, meta) = message.encode(header);
        let (h, decoded) = M::decode(array.as_ref(), &meta).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((&h, &decoded), (header, message));
    }

    /// Mutations every message must reject: header keys missing, wrong-typed or negative; nulls in the array.
    fn rejects_common<M: Message + fmt::Debug>(message: &M, header: &Header) {
        let (array, meta) = message.encode(header);
        for key in ["episode", "frame", "timestamp_ns"] {
            let mut m = meta.clone();
            m.remove(key);
            let err = rejects::<M>(array.as_ref(), &m, key);
            assert_eq!(err.to_string(), format!("{}: missing metadata {key:?} (Int >= 0)", M::NAME));
            for bad in [MetaValue::Str("1".into()), MetaValue::Int(-1), MetaValue::Float(1.0)] {
                m.insert(key.to_owned(), bad);
                rejects::<M>(array.as_ref(), &m, key);
            }
        }
        if !array.is_empty() {
            rejects::<M>(new_null_array(array.data_type(), array.len()).as_ref(), &meta, "data");
        }
    }

    /// A wrong array type (Int32) for the same metadata.
    fn rejects_int32<M: Message + fmt::Debug>(message: &M, header: &Header) {
        let (array, meta) = message.encode(header);
        let ints = Int32Array::from(vec![0; array.len()]);
        let err = rejects::<M>(&ints, &meta, "data");
        assert!(err.to_string().contains("got Int32"), "{err}");
    }

    fn with(meta: &Metadata, key: &str, value: MetaValue) -> Metadata {
        let mut m = meta.clone();
        m.insert(key.to_owned(), value);
        m
    }

    fn without(meta: &Metadata, key: &str) -> Metadata {
        let mut m = meta.clone();
        m.remove(key);
        m
    }

    fn floats(values: Vec<f32>) -> Float32Array {
        Float32Array::from(values)
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn every_message_roundtrips(
            h in header(), img in image(), seg in segmentation(), rs in robot_state(), a in action(),
            kp in keypoints(20), chunk in prop::collection::vec(action(), 1..16), ev in episode_event(),
            poses in object_poses(), cond in prop::collection::vec(-1e3f32..1e3, 1..64),
        ) {
            roundtrip(&img, &h);
            roundtrip(&seg, &h);
            roundtrip(&rs, &h);
            roundtrip(&a, &h);
            roundtrip(&kp, &h);
            roundtrip(&ActionChunk { actions: chunk }, &h);
            roundtrip(&Condition { values: cond }, &h);
            roundtrip(&ev, &h);
            roundtrip(&poses, &h);
        }

        #[test]
        fn every_message_rejects_bad_header_nulls_and_array_type(
            h in header(), img in image(), seg in segmentation(), rs in robot_state(), a in action(),
            kp in keypoints(5), ev in episode_event(), poses in object_poses(),
        ) {
            let chunk = ActionChunk { actions: vec![a] };
            rejects_common(&img, &h);
            rejects_common(&seg, &h);
            rejects_common(&rs, &h);
            rejects_common(&a, &h);
            rejects_common(&kp, &h);
            rejects_common(&chunk, &h);
            rejects_common(&ev, &h);
            rejects_common(&poses, &h);
            rejects_int32(&img, &h);
            rejects_int32(&seg, &h);
            rejects_int32(&rs, &h);
            rejects_int32(&a, &h);
            rejects_int32(&kp, &h);
            rejects_int32(&chunk, &h);
            rejects_int32(&ev, &h);
            rejects_int32(&poses, &h);
        }

        #[test]
        fn image_rejects_malformed(h in header(), img in image(), cut in 1usize..4) {
            let (array, meta) = img.encode(&h);
            let short = UInt8Array::from(img.data[..img.data.len().saturating_sub(cut)].to_vec());
            let err = rejects::<Image>(&short, &meta, "data");
            prop_assert!(err.to_string().contains(&format!("{}x{} rgb8", img.width, img.height)), "{err}");
            rejects::<Image>(array.as_ref(), &with(&meta, "encoding", MetaValue::Str("jpeg".into())), "encoding");
            rejects::<Image>(array.as_ref(), &without(&meta, "encoding"), "encoding");
            rejects::<Image>(array.as_ref(), &with(&meta, "primitive", MetaValue::Str("mask".into())), "primitive");
            rejects::<Image>(array.as_ref(), &without(&meta, "height"), "height");
            rejects::<Image>(array.as_ref(), &with(&meta, "width", MetaValue::Int(0)), "width");
            rejects::<Image>(array.as_ref(), &with(&meta, "width", MetaValue::Str("224".into())), "width");
            rejects::<Image>(array.as_ref(), &with(&meta, "width", MetaValue::Int(img.width as i64 + 1)), "data");
            prop_assert!(Image::decode(array.as_ref(), &without(&meta, "primitive")).is_ok());
        }

        #[test]
        fn bgr8_is_converted_to_rgb(h in header(), img in image()) {
            let (array, meta) = img.encode(&h);
            let (_, decoded) = Image::decode(array.as_ref(), &with(&meta, "encoding", MetaValue::Str("bgr8".into()))).unwrap();
            for (bgr, rgb) in decoded.data.chunks(3).zip(img.data.chunks(3)) {
                prop_assert_eq!(bgr, &[rgb[2], rgb[1], rgb[0]][..]);
            }
        }

        #[test]
        fn segmentation_rejects_malformed(h in header(), seg in segmentation()) {
            let (array, meta) = seg.encode(&h);
            let long = UInt8Array::from([seg.data.clone(), vec![0]].concat());
            rejects::<Segmentation>(&long, &meta, "data");
            rejects::<Segmentation>(array.as_ref(), &with(&meta, "encoding", MetaValue::Str("rgb8".into())), "encoding");
            rejects::<Segmentation>(array.as_ref(), &with(&meta, "primitive", MetaValue::Str("image".into())), "primitive");
            rejects::<Segmentation>(array.as_ref(), &with(&meta, "height", MetaValue::Int(-3)), "height");
        }

        #[test]
        fn robot_state_rejects_malformed(
            h in header(), rs in robot_state(), i in 0usize..15,
            bad in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)],
        ) {
            let (array, meta) = rs.encode(&h);
            let mut values = rs.to_array();
            values[i] = bad;
            let field = match i { 0..=6 => "joints", 7 => "gripper", 8..=10 => "ee_position", _ => "ee_orientation" };
            rejects::<RobotState>(&floats(values.to_vec()), &meta, field);
            rejects::<RobotState>(&floats(values[..14].to_vec()), &meta, "data");
            let short = floats(rs.to_array()[..14].to_vec());
            rejects::<RobotState>(&short, &with(&meta, "shape", MetaValue::Ints(vec![14])), "shape");
            rejects::<RobotState>(array.as_ref(), &with(&meta, "shape", MetaValue::Ints(vec![3, 5])), "shape");
            rejects::<RobotState>(array.as_ref(), &with(&meta, "dtype", MetaValue::Str("float64".into())), "dtype");
            rejects::<RobotState>(array.as_ref(), &with(&meta, "encoding", MetaValue::Str("pose".into())), "encoding");
            rejects::<RobotState>(array.as_ref(), &without(&meta, "names"), "names");
            let mut names = RobotState::NAMES.map(str::to_owned).to_vec();
            names.swap(0, 1);
            rejects::<RobotState>(array.as_ref(), &with(&meta, "names", MetaValue::Strs(names)), "names");
            let mut open = rs;
            open.gripper = 0.0825;
            rejects::<RobotState>(open.encode(&h).0.as_ref(), &meta, "gripper");
            open.gripper = 0.0805;
            prop_assert!(RobotState::decode(open.encode(&h).0.as_ref(), &meta).is_ok(), "1e-3 tolerance");
            let mut skew = rs;
            skew.ee_orientation = rs.ee_orientation.map(|v| v * 1.01);
            rejects::<RobotState>(skew.encode(&h).0.as_ref(), &meta, "ee_orientation");
        }

        #[test]
        fn action_rejects_malformed(
            h in header(), a in action(), i in 0usize..8, bad in prop_oneof![Just(f32::NAN), Just(f32::INFINITY)],
            g in prop_oneof![-1.0f32..-1e-6, 0.0801f32..1.0],
        ) {
            let (array, meta) = a.encode(&h);
            let mut values = a.to_array();
            values[i] = bad;
            let field = match i { 0..=2 => "position", 3..=6 => "orientation", _ => "gripper" };
            rejects::<Action>(&floats(values.to_vec()), &meta, field);
            rejects::<Action>(&floats([a.to_array().to_vec(), vec![0.0]].concat()), &meta, "data");
            rejects::<Action>(array.as_ref(), &with(&meta, "shape", MetaValue::Ints(vec![9])), "shape");
            rejects::<Action>(array.as_ref(), &with(&meta, "shape", MetaValue::Str("[8]".into())), "shape");
            rejects::<Action>(array.as_ref(), &without(&meta, "dtype"), "dtype");
            let mut wide = a;
            wide.gripper = g;
            let err = rejects::<Action>(wide.encode(&h).0.as_ref(), &meta, "gripper");
            prop_assert!(err.to_string().starts_with("action.gripper: expected a finite width in [0, 0.08] m, got"), "{err}");
            let mut skew = a;
            skew.orientation = a.orientation.map(|v| v * 1.02);
            rejects::<Action>(skew.encode(&h).0.as_ref(), &meta, "orientation");
            let renormed = skew.normalized().unwrap().orientation;
            prop_assert!(renormed.iter().zip(a.orientation).all(|(r, o)| (r - o).abs() < 1e-5), "{renormed:?}");
        }

        #[test]
        fn keypoints_reject_malformed(h in header(), kp in keypoints(12), extra in 1usize..3) {
            let (array, meta) = kp.encode(&h);
            let n = kp.points.len();
            rejects::<Keypoints>(&floats([kp.to_flat(), vec![0.0; extra]].concat()), &meta, "data");
            rejects::<Keypoints>(array.as_ref(), &with(&meta, "shape", MetaValue::Ints(vec![n as i64 + 1, 3])), "data");
            rejects::<Keypoints>(array.as_ref(), &with(&meta, "shape", MetaValue::Ints(vec![n as i64, 2])), "shape");
            rejects::<Keypoints>(array.as_ref(), &with(&meta, "shape", MetaValue::Ints(vec![n as i64 * 3])), "shape");
            rejects::<Keypoints>(array.as_ref(), &with(&meta, "shape", MetaValue::Ints(vec![-1, 3])), "shape");
            if let Some(last) = n.checked_sub(1) {
                let cases = [(0, f32::NAN, "xy"), (1, f32::INFINITY, "xy"), (2, 0.5, "visible"), (2, 2.0, "visible"), (2, f32::NAN, "visible")];
                for (col, bad, field) in cases {
                    let mut flat = kp.to_flat();
                    flat[last * 3 + col] = bad;
                    rejects::<Keypoints>(&floats(flat), &meta, &format!("points[{last}].{field}"));
                }
            }
        }

        #[test]
        fn action_chunk_rejects_malformed(
            h in header(), actions in prop::collection::vec(action(), 1..6), row in any::<prop::sample::Index>(),
        ) {
            let chunk = ActionChunk { actions };
            let (_, meta) = chunk.encode(&h);
            let r = row.index(chunk.actions.len());
            let mut bad = chunk.clone();
            bad.actions[r].gripper = -0.5;
            rejects::<ActionChunk>(bad.encode(&h).0.as_ref(), &meta, &format!("actions[{r}].gripper"));
            bad.actions[r].gripper = 0.0;
            bad.actions[r].position[1] = f32::NAN;
            rejects::<ActionChunk>(bad.encode(&h).0.as_ref(), &meta, &format!("actions[{r}].position"));
            let empty = ActionChunk { actions: vec![] }.encode(&h);
            rejects::<ActionChunk>(empty.0.as_ref(), &empty.1, "actions");
            let seven = MetaValue::Ints(vec![chunk.actions.len() as i64, 7]);
            rejects::<ActionChunk>(chunk.encode(&h).0.as_ref(), &with(&meta, "shape", seven), "shape");
        }

        #[test]
        fn condition_rejects_malformed(h in header(), values in prop::collection::vec(-1e3f32..1e3, 2..64), i in any::<prop::sample::Index>()) {
            let cond = Condition { values };
            let (array, meta) = cond.encode(&h);
            let wrong = MetaValue::Ints(vec![cond.values.len() as i64 + 1]);
            rejects::<Condition>(array.as_ref(), &with(&meta, "shape", wrong), "shape");
            let mut bad = cond.clone();
            bad.values[i.index(cond.values.len())] = f32::INFINITY;
            rejects::<Condition>(bad.encode(&h).0.as_ref(), &meta, "values");
            let empty = Condition { values: vec![] }.encode(&h);
            rejects::<Condition>(empty.0.as_ref(), &empty.1, "shape");
        }

        #[test]
        fn episode_event_rejects_malformed(
            h in header(), task in "[a-z]{1,8}", variant in "[a-z]{1,10}",
            strength in prop_oneof![1.0001f32..10.0, -10.0f32..-0.0001],
        ) {
            let start = |task: &str, variant: &str, strength: f32| EpisodeEvent::Start {
                task: task.into(), text_query: vec![], seed: 1, variant: variant.into(), strength, objects: vec![],
            };
            let (array, meta) = start(&task, "none", 0.5).encode(&h);
            if !VARIANTS.contains(&variant.as_str()) {
                rejects::<EpisodeEvent>(start(&task, &variant, 0.5).encode(&h).0.as_ref(), &meta, "variant");
            }
            rejects::<EpisodeEvent>(start(&task, "clutter", strength).encode(&h).0.as_ref(), &meta, "strength");
            // JSON has no NaN: serde_json writes null, which decoding rejects as malformed data.
            rejects::<EpisodeEvent>(start(&task, "clutter", f32::NAN).encode(&h).0.as_ref(), &meta, "data");
            rejects::<EpisodeEvent>(start("", "clutter", 0.5).encode(&h).0.as_ref(), &meta, "task");
            rejects::<EpisodeEvent>(&StringArray::from(vec!["{\"event\":\"pause\"}"]), &meta, "data");
            rejects::<EpisodeEvent>(&StringArray::from(vec!["{}", "{}"]), &meta, "data");
            rejects::<EpisodeEvent>(array.as_ref(), &with(&meta, "kind", MetaValue::Str("start".into())), "kind");
            rejects::<EpisodeEvent>(array.as_ref(), &without(&meta, "kind"), "kind");
        }

        #[test]
        fn object_poses_reject_malformed(
            h in header(), poses in object_poses().prop_filter("non-empty", |p| !p.poses.is_empty()),
        ) {
            let (array, meta) = poses.encode(&h);
            let mut names = poses.names.clone();
            names.push("extra".into());
            rejects::<ObjectPoses>(array.as_ref(), &with(&meta, "names", MetaValue::Strs(names)), "names");
            rejects::<ObjectPoses>(array.as_ref(), &with(&meta, "names", MetaValue::Ints(vec![1])), "names");
            let mut bad = poses.clone();
            bad.poses[0][3..].iter_mut().for_each(|v| *v *= 1.1);
            rejects::<ObjectPoses>(bad.encode(&h).0.as_ref(), &meta, "poses[0]");
            bad.poses[0][0] = f32::NAN;
            rejects::<ObjectPoses>(bad.encode(&h).0.as_ref(), &meta, "poses[0]");
        }
    }

    #[test]
    fn errors_read_well() {
        let h = Header::default();
        let img = Image { width: 224, height: 224, data: vec![0; 1000] };
        let (array, meta) = img.encode(&h);
        assert_eq!(
            Image::decode(array.as_ref(), &meta).unwrap_err().to_string(),
            "image.data: expected 150528 bytes (224x224 rgb8), got 1000"
        );
        let a = Action { position: [0.0; 3], orientation: [0.0, 0.0, 0.0, 1.0], gripper: f32::NAN };
        assert_eq!(
            a.validate().unwrap_err().to_string(),
            "action.gripper: expected a finite width in [0, 0.08] m, got NaN"
        );
        let rs = RobotState::from_array([0.0; 15]);
        let (array, meta) = rs.encode(&h);
        assert_eq!(
            RobotState::decode(array.as_ref(), &without(&meta, "frame")).unwrap_err().to_string(),
            "robot_state: missing metadata \"frame\" (Int >= 0)"
        );
    }

    #[test]
    fn start_event_without_objects_decodes() {
        let json = r#"{"event":"start","task":"stack-block","text_query":["white block"],"seed":3,"variant":"none","strength":0.0}"#;
        let meta = with(&EpisodeEvent::End { success: true, ticks: 0 }.encode(&Header::default()).1, "kind", MetaValue::Str("episode".into()));
        let (_, event) = EpisodeEvent::decode(&StringArray::from(vec![json]), &meta).unwrap();
        assert!(matches!(event, EpisodeEvent::Start { seed: 3, ref objects, .. } if objects.is_empty()));
    }

    #[test]
    fn normalized_rejects_degenerate_quaternions() {
        let a = |orientation, gripper| Action { position: [0.1, 0.2, 0.3], orientation, gripper };
        assert_eq!(a([0.0, 0.0, 0.0, 2.0], 0.04).normalized(), Ok(a([0.0, 0.0, 0.0, 1.0], 0.04)));
        assert_eq!(a([0.0; 4], 0.04).normalized().unwrap_err().field, "orientation");
        assert_eq!(a([f32::NAN, 0.0, 0.0, 1.0], 0.04).normalized().unwrap_err().field, "orientation");
        assert_eq!(a([0.0, 0.0, 0.0, 1.0], 0.09).normalized().unwrap_err().field, "gripper");
    }

    #[test]
    fn empty_keypoints_need_consistent_shape() {
        let h = Header::default();
        let (array, meta) = Keypoints::default().encode(&h);
        assert_eq!(meta.get("shape"), Some(&MetaValue::Ints(vec![0, 3])));
        assert_eq!(Keypoints::decode(array.as_ref(), &meta).unwrap().1, Keypoints::default());
        rejects::<Keypoints>(array.as_ref(), &with(&meta, "shape", MetaValue::Ints(vec![2, 3])), "data");
        assert_eq!(Keypoints::from_flat(&[1.0; 4]).unwrap_err().field, "data");
    }

    #[test]
    fn header_saturates_above_i64() {
        let mut meta = Metadata::new();
        Header { episode: u64::MAX, frame: 1, timestamp_ns: 2 }.write(&mut meta);
        assert_eq!(meta_int(&meta, "episode"), Ok(i64::MAX));
        assert_eq!(meta_u64(&meta, "frame"), Ok(1));
        assert_eq!(meta_str(&meta, "frame").unwrap_err().to_string(), "metadata.frame: expected Str, got Int 1");
    }
}
