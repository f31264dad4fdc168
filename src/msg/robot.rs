//! The arm's side of the contract: its measured state, the commanded action and the policy's action chunk.

use arrow::array::{Array, ArrayRef};

use super::codec::{f32_array, tensor_meta, fixed, rows, check_finite, check_quat, check_gripper};
use super::{MetaValue, Metadata, MsgError, Message, meta_strs, meta_one_of};

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
