//! Kinematics and solid model of the Franka Emika Panda arm with the Franka Hand.
//!
//! Kinematics run in `f64` on glam's `DVec3` / `DQuat` / `DAffine3`; poses handed to the renderer and the physics
//! scene are converted to the `f32` [`Pose`] of [`super::shape`]. The world frame is Z-up in metres with the robot
//! base (link 0 frame) at the origin and the table top at z = 0.
//!
//! Source of every published constant below: Franka Control Interface (FCI) documentation, page
//! "Robot and interface specifications" (<https://frankaemika.github.io/docs/control_parameters.html>), sections
//! "Denavit–Hartenberg parameters" and "Limits for Panda"; the hand mounting and TCP are the Franka Hand defaults
//! described there (flange-to-end-effector transform `F_T_EE`). The link solids are our own coarse approximation
//! of the arm's silhouette at its real dimensions, not taken from any published mesh.

use std::f64::consts::FRAC_PI_4;

use glam::{DAffine3, DMat3, DQuat, DVec3, Vec3};

use super::shape::{Pose, Shape};

/// Number of arm joints.
pub const DOF: usize = 7;

/// One row of the modified (Craig) Denavit–Hartenberg table: the transform from frame `i-1` to frame `i` is
/// `RotX(alpha) * TransX(a) * RotZ(q_i) * TransZ(d)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DhRow {
    /// Link length along the previous frame's x axis (m).
    pub a: f64,
    /// Link offset along the new frame's z axis (m).
    pub d: f64,
    /// Link twist about the previous frame's x axis (rad).
    pub alpha: f64,
}

/// pi / 2, for the tables below.
const HALF_PI: f64 = std::f64::consts::FRAC_PI_2;

/// Modified DH parameters of joints 1..=7 (FCI documentation, "Denavit–Hartenberg parameters").
pub const DH: [DhRow; DOF] = [
    DhRow { a: 0.0, d: 0.333, alpha: 0.0 },
    DhRow { a: 0.0, d: 0.0, alpha: -HALF_PI },
    DhRow { a: 0.0, d: 0.316, alpha: HALF_PI },
    DhRow { a: 0.0825, d: 0.0, alpha: HALF_PI },
    DhRow { a: -0.0825, d: 0.384, alpha: -HALF_PI },
    DhRow { a: 0.0, d: 0.0, alpha: HALF_PI },
    DhRow { a: 0.088, d: 0.0, alpha: HALF_PI },
];

/// Offset of the flange along the link 7 z axis (FCI documentation, DH table row "Flange": a = 0, d = 0.107,
/// alpha = 0).
pub const FLANGE_D: f64 = 0.107;

/// Lower joint position limits (rad) (FCI documentation, "Limits for Panda", `q_min`).
pub const Q_MIN: [f64; DOF] = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973];

/// Upper joint position limits (rad) (FCI documentation, "Limits for Panda", `q_max`).
pub const Q_MAX: [f64; DOF] = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973];

/// Maximum joint velocities (rad/s) (FCI documentation, "Limits for Panda", `q_dot_max`).
pub const QD_MAX: [f64; DOF] = [2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100];

/// Maximum translational speed of the end effector (m/s) (FCI documentation, "Limits for Panda", Cartesian
/// `p_dot_max`, translation).
pub const TCP_MAX_LINEAR_SPEED: f64 = 1.7;

/// Maximum rotational speed of the end effector (rad/s) (FCI documentation, "Limits for Panda", Cartesian
/// `p_dot_max`, rotation).
pub const TCP_MAX_ANGULAR_SPEED: f64 = 2.5;

/// The "ready" configuration used by Franka's examples: arm upright, hand pointing down in front of the base.
pub const Q_HOME: [f64; DOF] = [0.0, -FRAC_PI_4, 0.0, -3.0 * FRAC_PI_4, 0.0, HALF_PI, FRAC_PI_4];

/// Maximum opening of the Franka Hand, between the fingertip inner faces (m).
pub const GRIPPER_MAX_WIDTH: f64 = 0.08;

/// Rotation of the hand about the flange z axis (rad): the Franka Hand is mounted at -45 degrees.
pub const HAND_YAW: f64 = -FRAC_PI_4;

/// Distance of the tool centre point (between the fingertips) from the flange along its z axis (m).
pub const TCP_OFFSET: f64 = 0.1034;

/// World poses of the Panda's frames for one joint configuration, as rigid transforms (rotation matrix +
/// translation; `translation` is the frame origin, `matrix3` columns are the frame axes in world coordinates).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chain {
    /// Link frames 1..=7 (index 0 is frame 1; frame `i` rotates about its z axis with joint `i`).
    pub links: [DAffine3; DOF],
    /// Flange: link 7 frame moved [`FLANGE_D`] along its z axis.
    pub flange: DAffine3,
    /// Hand base: the flange rotated by [`HAND_YAW`] about its z axis; the fingers slide along its y axis.
    pub hand: DAffine3,
    /// Tool centre point: the hand frame moved [`TCP_OFFSET`] along its z axis (z points out of the gripper).
    pub tcp: DAffine3,
}

/// The transform from frame `i-1` to frame `i` for DH row `row` at joint angle `q`.
fn dh_transform(row: &DhRow, q: f64) -> DAffine3 {
    let (sa, ca) = row.alpha.sin_cos();
    let (st, ct) = q.sin_cos();
    let rotation =
        DMat3::from_cols(DVec3::new(ct, st * ca, st * sa), DVec3::new(-st, ct * ca, ct * sa), DVec3::new(0.0, -sa, ca));
    DAffine3::from_mat3_translation(rotation, DVec3::new(row.a, -sa * row.d, ca * row.d))
}

/// Forward kinematics: the world pose of every frame of the arm at joint configuration `q`.
pub fn forward(q: &[f64; DOF]) -> Chain {
    let mut links = [DAffine3::IDENTITY; DOF];
    let mut frame = DAffine3::IDENTITY;
    for (i, link) in links.iter_mut().enumerate() {
        frame *= dh_transform(&DH[i], q[i]);
        *link = frame;
    }
    let flange = frame * DAffine3::from_translation(DVec3::new(0.0, 0.0, FLANGE_D));
    let hand = flange * DAffine3::from_rotation_z(HAND_YAW);
    let tcp = hand * DAffine3::from_translation(DVec3::new(0.0, 0.0, TCP_OFFSET));
    Chain { links, flange, hand, tcp }
}

/// Rotation of a rigid transform as a unit quaternion.
pub fn rotation_of(frame: &DAffine3) -> DQuat {
    DQuat::from_mat3(&frame.matrix3).normalize()
}

/// Converts an `f64` rigid transform to the `f32` [`Pose`] used by the renderer and the physics scene.
pub fn to_pose(frame: &DAffine3) -> Pose {
    Pose::new(frame.translation.as_vec3(), rotation_of(frame).as_quat())
}

/// World position and orientation of the tool centre point at joint configuration `q`.
pub fn tcp_pose(q: &[f64; DOF]) -> (DVec3, DQuat) {
    let tcp = forward(q).tcp;
    (tcp.translation, rotation_of(&tcp))
}

/// Geometric Jacobian of the TCP at `q`: rows 0..3 map joint velocities to the TCP's linear velocity, rows 3..6
/// to its angular velocity, both in the world frame.
pub fn jacobian(q: &[f64; DOF]) -> [[f64; DOF]; 6] {
    chain_jacobian(&forward(q))
}

/// Geometric TCP Jacobian from an already computed chain (see [`jacobian`]).
fn chain_jacobian(chain: &Chain) -> [[f64; DOF]; 6] {
    let tip = chain.tcp.translation;
    let mut jac = [[0.0; DOF]; 6];
    for (i, link) in chain.links.iter().enumerate() {
        let axis = link.matrix3.z_axis;
        let linear = axis.cross(tip - link.translation);
        for k in 0..3 {
            jac[k][i] = linear[k];
            jac[k + 3][i] = axis[k];
        }
    }
    jac
}

/// Pose error of `frame` with respect to a target, as a 6-vector: position difference (m) then rotation vector
/// (axis times angle, rad, shortest way) that turns the current orientation into the target, both in world frame.
fn pose_error(frame: &DAffine3, target_position: DVec3, target_orientation: DQuat) -> [f64; 6] {
    let dp = target_position - frame.translation;
    let dr = rotation_vector(target_orientation * rotation_of(frame).conjugate());
    [dp.x, dp.y, dp.z, dr.x, dr.y, dr.z]
}

/// Rotation vector (axis * angle, angle in [0, pi]) of a unit quaternion.
fn rotation_vector(rotation: DQuat) -> DVec3 {
    let r = if rotation.w < 0.0 { -rotation } else { rotation };
    let v = DVec3::new(r.x, r.y, r.z);
    let s = v.length();
    if s < 1e-12 {
        return 2.0 * v;
    }
    v * (2.0 * s.atan2(r.w) / s)
}

/// Euclidean norms of the position and rotation parts of a pose error.
fn error_norms(e: &[f64; 6]) -> (f64, f64) {
    let p = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]).sqrt();
    let r = (e[3] * e[3] + e[4] * e[4] + e[5] * e[5]).sqrt();
    (p, r)
}

/// Clamps every joint into `[Q_MIN, Q_MAX]`.
fn clamp_to_limits(q: &[f64; DOF]) -> [f64; DOF] {
    std::array::from_fn(|i| q[i].clamp(Q_MIN[i], Q_MAX[i]))
}

/// Dot product of two equally long slices.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `a x = b` for a symmetric positive definite 6x6 matrix by Cholesky factorisation `a = L L^T`.
fn solve_spd6(a: &[[f64; 6]; 6], b: &[f64; 6]) -> [f64; 6] {
    let mut l = [[0.0; 6]; 6];
    for j in 0..6 {
        let d = (a[j][j] - dot(&l[j][..j], &l[j][..j])).max(1e-300).sqrt();
        l[j][j] = d;
        for i in j + 1..6 {
            l[i][j] = (a[i][j] - dot(&l[i][..j], &l[j][..j])) / d;
        }
    }
    let mut y = [0.0; 6];
    for i in 0..6 {
        y[i] = (b[i] - dot(&l[i][..i], &y[..i])) / l[i][i];
    }
    let mut x = [0.0; 6];
    for i in (0..6).rev() {
        let s: f64 = (i + 1..6).map(|k| l[k][i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i][i];
    }
    x
}

/// Damped least-squares step with a null-space secondary motion:
/// `dq = z + J^T (J J^T + lambda I)^-1 (e - J z)`, which tracks `e` and applies the part of `z` that does not
/// disturb the TCP. Columns flagged in `locked` are removed (those joints do not move).
fn dls_step(jac: &[[f64; DOF]; 6], e: &[f64; 6], lambda: f64, z: &[f64; DOF], locked: &[bool; DOF]) -> [f64; DOF] {
    let col = |r: usize, i: usize| if locked[i] { 0.0 } else { jac[r][i] };
    let z: [f64; DOF] = std::array::from_fn(|i| if locked[i] { 0.0 } else { z[i] });
    let mut a = [[0.0; 6]; 6];
    let mut rhs = [0.0; 6];
    for r in 0..6 {
        a[r] = std::array::from_fn(|c| (0..DOF).map(|i| col(r, i) * col(c, i)).sum());
        a[r][r] += lambda;
        rhs[r] = e[r] - (0..DOF).map(|i| col(r, i) * z[i]).sum::<f64>();
    }
    let y = solve_spd6(&a, &rhs);
    std::array::from_fn(|i| z[i] + (0..6).map(|r| col(r, i) * y[r]).sum::<f64>())
}

/// Joints that sit on a limit and that `dq` pushes further out.
fn joints_pushing_limits(q: &[f64; DOF], dq: &[f64; DOF]) -> [bool; DOF] {
    std::array::from_fn(|i| (q[i] <= Q_MIN[i] && dq[i] < 0.0) || (q[i] >= Q_MAX[i] && dq[i] > 0.0))
}

/// One constrained DLS step from `q`: joints blocked by their limits are taken out of the problem so the others
/// make up for them.
fn limited_dls_step(q: &[f64; DOF], jac: &[[f64; DOF]; 6], e: &[f64; 6], lambda: f64, z: &[f64; DOF]) -> [f64; DOF] {
    let dq = dls_step(jac, e, lambda, z, &[false; DOF]);
    let locked = joints_pushing_limits(q, &dq);
    if locked.contains(&true) { dls_step(jac, e, lambda, z, &locked) } else { dq }
}

/// Scales `dq` uniformly so that no joint moves by more than `max_i` (direction is preserved).
fn scale_to_bounds(dq: [f64; DOF], max: impl Fn(usize) -> f64) -> [f64; DOF] {
    let ratio = (0..DOF).map(|i| dq[i].abs() / max(i)).fold(1.0, f64::max);
    dq.map(|d| d / ratio)
}

/// Null-space pull: the fraction `gain` of the way from `q` back to [`Q_HOME`].
fn home_pull(q: &[f64; DOF], gain: f64) -> [f64; DOF] {
    std::array::from_fn(|i| gain * (Q_HOME[i] - q[i]))
}

/// Settings of [`solve_ik`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IkOptions {
    /// Maximum number of damped least-squares iterations.
    pub max_iterations: usize,
    /// The solve succeeds when the TCP is within this distance of the target (m).
    pub position_tolerance: f64,
    /// ... and its orientation within this angle of the target (rad).
    pub rotation_tolerance: f64,
    /// Damping added to `J J^T` at zero error (keeps steps bounded near singularities).
    pub min_damping: f64,
    /// Damping that grows with the squared error: `lambda = min_damping + error_damping * |e|^2 / 2`, so far
    /// targets take cautious steps and near ones converge quadratically (Levenberg–Marquardt style).
    pub error_damping: f64,
    /// Fraction of the way back to [`Q_HOME`] requested in the null space at the first iteration; it is halved
    /// at every further iteration, so that the (second-order) TCP disturbance of the pull cannot stall the solve.
    pub nullspace_gain: f64,
    /// Largest change of any joint in one iteration (rad); larger steps are scaled down uniformly.
    pub max_step: f64,
}

impl Default for IkOptions {
    fn default() -> Self {
        Self {
            max_iterations: 100,
            position_tolerance: 1e-4,
            rotation_tolerance: 1e-3,
            min_damping: 1e-6,
            error_damping: 1.0,
            nullspace_gain: 0.05,
            max_step: 0.4,
        }
    }
}

/// Result of [`solve_ik`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IkSolution {
    /// Joint configuration, always within [`Q_MIN`]..[`Q_MAX`]; the best one found if not converged.
    pub q: [f64; DOF],
    /// Distance from the TCP at `q` to the target position (m).
    pub position_error: f64,
    /// Angle between the TCP orientation at `q` and the target orientation (rad).
    pub rotation_error: f64,
    /// Whether both errors are within the tolerances of the options.
    pub converged: bool,
    /// Number of joint updates performed (all of them, even when the best configuration came earlier).
    pub iterations: usize,
}

/// Inverse kinematics of the TCP by damped least squares with error-adaptive damping, joint-limit clamping and a
/// null-space pull towards [`Q_HOME`] (keeps the elbow up and the redundancy resolution repeatable).
///
/// Starts from `seed` (clamped into the limits); from a good seed (the previous solution, target moved by a few
/// millimetres) it typically needs a single iteration, from a distant one 5-30. Deterministic. When the target cannot be reached, returns the closest configuration found
/// with `converged == false`.
pub fn solve_ik(target_position: DVec3, target_orientation: DQuat, seed: &[f64; DOF], opts: &IkOptions) -> IkSolution {
    let target_orientation = target_orientation.normalize();
    let mut q = clamp_to_limits(seed);
    let mut best: Option<IkSolution> = None;
    let mut performed = 0;
    for iterations in 0..=opts.max_iterations {
        performed = iterations;
        let chain = forward(&q);
        let e = pose_error(&chain.tcp, target_position, target_orientation);
        let (position_error, rotation_error) = error_norms(&e);
        let converged = position_error <= opts.position_tolerance && rotation_error <= opts.rotation_tolerance;
        let current = IkSolution { q, position_error, rotation_error, converged, iterations };
        if converged || best.is_none_or(|b| solution_cost(&current) < solution_cost(&b)) {
            best = Some(current);
        }
        if converged || iterations == opts.max_iterations {
            break;
        }
        let nullspace_gain = opts.nullspace_gain * 0.5f64.powi(iterations.min(64) as i32);
        q = ik_iteration(&q, &chain, &e, opts, nullspace_gain);
    }
    IkSolution { iterations: performed, ..best.expect("the loop runs at least once") }
}

/// Ranking of non-converged solutions: squared pose error (metres and radians weighted equally).
fn solution_cost(s: &IkSolution) -> f64 {
    s.position_error * s.position_error + s.rotation_error * s.rotation_error
}

/// One iteration of [`solve_ik`] from `q`, whose chain and pose error are given, with the null-space pull
/// `nullspace_gain` (see [`home_pull`]).
fn ik_iteration(q: &[f64; DOF], chain: &Chain, e: &[f64; 6], opts: &IkOptions, nullspace_gain: f64) -> [f64; DOF] {
    let lambda = opts.min_damping + 0.5 * opts.error_damping * e.iter().map(|v| v * v).sum::<f64>();
    let z = home_pull(q, nullspace_gain);
    let dq = limited_dls_step(q, &chain_jacobian(chain), e, lambda, &z);
    let dq = scale_to_bounds(dq, |_| opts.max_step);
    clamp_to_limits(&std::array::from_fn(|i| q[i] + dq[i]))
}

/// Rate (1/s) at which [`step_towards`] pulls the arm's redundant degree of freedom back towards [`Q_HOME`]
/// (the fraction of the remaining way requested per second, applied in the TCP's null space only).
pub const STEP_NULLSPACE_RATE: f64 = 1.0;

/// Damping of the single DLS step in [`step_towards`] (small: the step is already bounded by speed limits).
const STEP_DAMPING: f64 = 1e-4;

/// Limits the norm of a 3-vector held in `e[offset..offset + 3]` to `max`.
fn limit_norm3(e: &mut [f64; 6], offset: usize, max: f64) {
    let n = (e[offset] * e[offset] + e[offset + 1] * e[offset + 1] + e[offset + 2] * e[offset + 2]).sqrt();
    if n > max {
        for v in &mut e[offset..offset + 3] {
            *v *= max / n;
        }
    }
}

/// Moves the joints one control substep of `dt` seconds from `q` towards the TCP target, emulating a stiff
/// Cartesian impedance controller with velocity saturation.
///
/// The TCP error is first capped to what [`TCP_MAX_LINEAR_SPEED`] / [`TCP_MAX_ANGULAR_SPEED`] allow in `dt`;
/// one damped least-squares step then converts it to joint motion (plus a slow null-space drift towards
/// [`Q_HOME`] at [`STEP_NULLSPACE_RATE`]), which is scaled down uniformly so that no joint exceeds
/// [`QD_MAX`] * `dt`, and finally clamped into the joint limits. A target within one substep's reach is thus
/// reached (to first order) in one call; a far one is approached along a near-straight TCP path at top speed.
/// Call it repeatedly, feeding back the result.
pub fn step_towards(q: &[f64; DOF], target_position: DVec3, target_orientation: DQuat, dt: f64) -> [f64; DOF] {
    let q = clamp_to_limits(q);
    let chain = forward(&q);
    let mut e = pose_error(&chain.tcp, target_position, target_orientation.normalize());
    limit_norm3(&mut e, 0, TCP_MAX_LINEAR_SPEED * dt);
    limit_norm3(&mut e, 3, TCP_MAX_ANGULAR_SPEED * dt);
    let z = home_pull(&q, (STEP_NULLSPACE_RATE * dt).min(1.0));
    let dq = limited_dls_step(&q, &chain_jacobian(&chain), &e, STEP_DAMPING, &z);
    let dq = scale_to_bounds(dq, |i| QD_MAX[i] * dt);
    clamp_to_limits(&std::array::from_fn(|i| q[i] + dq[i]))
}

/// A solid piece of the robot: which part it belongs to, its shape and its world pose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobotSolid {
    /// The robot part this solid approximates.
    pub part: RobotPart,
    /// Shape in its local frame.
    pub shape: Shape,
    /// World pose of the shape's local frame.
    pub pose: Pose,
}

/// The rigid parts of the robot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RobotPart {
    /// Arm link 0..=7 (0 is the fixed base).
    Link(u8),
    /// Gripper body.
    Hand,
    /// Finger on the hand's +y side.
    LeftFinger,
    /// Finger on the hand's -y side.
    RightFinger,
}

/// A primitive of the solid model, in the frame of the part it belongs to.
#[derive(Clone, Copy, Debug)]
enum Primitive {
    /// Capsule whose axis (between the cap centres) runs from `a` to `b`.
    Capsule { a: [f64; 3], b: [f64; 3], radius: f64 },
    /// Cylinder whose axis runs from `a` to `b` (flat ends).
    Cylinder { a: [f64; 3], b: [f64; 3], radius: f64 },
    /// Box aligned with the part frame's axes.
    Box { centre: [f64; 3], half: [f64; 3] },
}

/// Solids of links 0..=7, each in its link frame (link 0 = world). Joint housings are capsules along the joint's
/// z axis; arm segments are capsules between joint centres, following the DH geometry.
const LINK_SOLIDS: [(u8, Primitive); 14] = [
    // Base: cylinder up to the bottom of link 1.
    (0, Primitive::Cylinder { a: [0.0, 0.0, 0.0], b: [0.0, 0.0, 0.15], radius: 0.07 }),
    // Link 1: vertical column below the shoulder (frame 1 sits at z = 0.333).
    (1, Primitive::Capsule { a: [0.0, 0.0, -0.13], b: [0.0, 0.0, 0.0], radius: 0.06 }),
    // Link 2: shoulder housing around joint 2, and the start of the upper arm (along -y2 towards frame 3).
    (2, Primitive::Capsule { a: [0.0, 0.0, -0.06], b: [0.0, 0.0, 0.06], radius: 0.06 }),
    (2, Primitive::Capsule { a: [0.0, 0.0, 0.0], b: [0.0, -0.12, 0.0], radius: 0.06 }),
    // Link 3: upper arm up to frame 3, and the elbow offset to joint 4's axis.
    (3, Primitive::Capsule { a: [0.0, 0.0, -0.19], b: [0.0, 0.0, 0.0], radius: 0.06 }),
    (3, Primitive::Capsule { a: [0.0, 0.0, 0.0], b: [0.0825, 0.0, 0.0], radius: 0.055 }),
    // Link 4: elbow housing around joint 4, and the offset back to the forearm axis.
    (4, Primitive::Capsule { a: [0.0, 0.0, -0.055], b: [0.0, 0.0, 0.055], radius: 0.06 }),
    (4, Primitive::Capsule { a: [0.0, 0.0, 0.0], b: [-0.0825, 0.0, 0.0], radius: 0.055 }),
    // Link 5: forearm along z5 from the elbow (z5 = -0.384) to the wrist, thinner near the wrist.
    (5, Primitive::Capsule { a: [0.0, 0.0, -0.30], b: [0.0, 0.0, -0.17], radius: 0.06 }),
    (5, Primitive::Capsule { a: [0.0, 0.0, -0.17], b: [0.0, 0.0, -0.06], radius: 0.045 }),
    // Link 6: wrist housing around joint 6, and the offset to joint 7's axis.
    (6, Primitive::Capsule { a: [0.0, 0.0, -0.04], b: [0.0, 0.0, 0.04], radius: 0.055 }),
    (6, Primitive::Capsule { a: [0.0, 0.0, 0.0], b: [0.088, 0.0, 0.0], radius: 0.05 }),
    // Link 7: the last joint's body down to the flange (z7 = 0.107).
    (7, Primitive::Capsule { a: [0.0, 0.0, 0.0], b: [0.0, 0.0, 0.06], radius: 0.045 }),
    (7, Primitive::Cylinder { a: [0.0, 0.0, 0.08], b: [0.0, 0.0, FLANGE_D], radius: 0.04 }),
];

/// Distance from the hand frame origin (flange) to the base of the fingers along the hand z axis (m).
const FINGER_BASE_Z: f64 = 0.0584;

/// Gripper body in the hand frame: 0.2 m along the finger axis (y), 0.06 m thick, from the flange to the fingers.
const HAND_SOLID: Primitive =
    Primitive::Box { centre: [0.0, 0.0, 0.5 * FINGER_BASE_Z], half: [0.03, 0.10, 0.5 * FINGER_BASE_Z] };

/// Half extents of a finger box in the hand frame: 0.02 m wide (x), 0.01 m thick (y, the closing direction),
/// 0.05 m long (z, from the finger base to 5 mm past the TCP).
const FINGER_HALF: [f64; 3] = [0.01, 0.005, 0.025];

/// World pose of a primitive's shape placed in `frame`.
fn place(frame: &DAffine3, primitive: &Primitive) -> (Shape, Pose) {
    let (shape, local) = match *primitive {
        Primitive::Capsule { a, b, radius } => {
            let (half_height, local) = segment_frame(a, b);
            (Shape::Capsule { radius: radius as f32, half_height }, local)
        }
        Primitive::Cylinder { a, b, radius } => {
            let (half_height, local) = segment_frame(a, b);
            (Shape::Cylinder { radius: radius as f32, half_height }, local)
        }
        Primitive::Box { centre, half } => {
            let half = Vec3::new(half[0] as f32, half[1] as f32, half[2] as f32);
            (Shape::Box { half }, DAffine3::from_translation(DVec3::from_array(centre)))
        }
    };
    (shape, to_pose(&(*frame * local)))
}

/// Half length of the segment `a`-`b` and a frame centred on it with z along it.
fn segment_frame(a: [f64; 3], b: [f64; 3]) -> (f32, DAffine3) {
    let (a, b) = (DVec3::from_array(a), DVec3::from_array(b));
    let axis = b - a;
    let rotation = DQuat::from_rotation_arc(DVec3::Z, axis.normalize());
    (0.5 * axis.length() as f32, DAffine3::from_rotation_translation(rotation, 0.5 * (a + b)))
}

/// World frame of link `index` (0 = base = world).
fn link_frame(chain: &Chain, index: u8) -> DAffine3 {
    match index {
        0 => DAffine3::IDENTITY,
        i => chain.links[usize::from(i) - 1],
    }
}

/// The solids approximating the robot at configuration `q` with the gripper opened to `gripper_width` (m,
/// clamped to `0..=GRIPPER_MAX_WIDTH`), at the Panda's real dimensions, for drawing and collision.
pub fn robot_solids(q: &[f64; DOF], gripper_width: f64) -> Vec<RobotSolid> {
    let chain = forward(q);
    let mut solids: Vec<RobotSolid> = LINK_SOLIDS
        .iter()
        .map(|(link, primitive)| {
            let (shape, pose) = place(&link_frame(&chain, *link), primitive);
            RobotSolid { part: RobotPart::Link(*link), shape, pose }
        })
        .collect();
    let (shape, pose) = place(&chain.hand, &HAND_SOLID);
    solids.push(RobotSolid { part: RobotPart::Hand, shape, pose });
    let half = Vec3::new(FINGER_HALF[0] as f32, FINGER_HALF[1] as f32, FINGER_HALF[2] as f32);
    let [left, right] = hand_finger_poses(&chain.hand, gripper_width);
    solids.push(RobotSolid { part: RobotPart::LeftFinger, shape: Shape::Box { half }, pose: left });
    solids.push(RobotSolid { part: RobotPart::RightFinger, shape: Shape::Box { half }, pose: right });
    solids
}

/// World poses of the centres of the two finger boxes ([left (+y of the hand), right (-y)]) at configuration `q`
/// with the gripper opened to `width` (m, clamped to `0..=GRIPPER_MAX_WIDTH`). The fingers slide symmetrically
/// along the hand's y axis; each fingertip's inner face lies `width / 2` from the TCP.
pub fn finger_poses(q: &[f64; DOF], width: f64) -> [Pose; 2] {
    hand_finger_poses(&forward(q).hand, width)
}

/// Finger box poses for a given hand frame (see [`finger_poses`]).
fn hand_finger_poses(hand: &DAffine3, width: f64) -> [Pose; 2] {
    let offset = 0.5 * width.clamp(0.0, GRIPPER_MAX_WIDTH) + FINGER_HALF[1];
    let z = FINGER_BASE_Z + FINGER_HALF[2];
    [offset, -offset].map(|y| to_pose(&(*hand * DAffine3::from_translation(DVec3::new(0.0, y, z)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [0, 1) (64-bit LCG, high bits).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.next()
        }

        /// A configuration inside the limits, `margin` rad away from them.
        fn config(&mut self, margin: f64) -> [f64; DOF] {
            std::array::from_fn(|i| self.range(Q_MIN[i] + margin, Q_MAX[i] - margin))
        }
    }

    fn assert_close(a: DVec3, b: DVec3, tol: f64) {
        assert!((a - b).length() < tol, "{a:?} vs {b:?}");
    }

    #[test]
    fn flange_at_zero_configuration() {
        let chain = forward(&[0.0; DOF]);
        assert_close(chain.flange.translation, DVec3::new(0.088, 0.0, 0.926), 1e-9);
        assert_close(chain.flange.matrix3.z_axis, DVec3::NEG_Z, 1e-9);
        assert_close(chain.links[3].translation, DVec3::new(0.0825, 0.0, 0.649), 1e-9);
    }

    /// Expected TCP at Q_HOME, worked by hand in the x-z plane from the DH table: the upper arm leans back 45
    /// degrees, the forearm is horizontal, the hand points down.
    #[test]
    fn tcp_at_home_points_down_in_front() {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let elbow = DVec3::new(-0.316 * s + 0.0825 * s, 0.0, 0.333 + 0.316 * s + 0.0825 * s);
        let wrist = elbow + DVec3::new(0.384, 0.0, 0.0825);
        let expected = wrist + DVec3::new(0.088, 0.0, -FLANGE_D - TCP_OFFSET);
        let (p, r) = tcp_pose(&Q_HOME);
        assert_close(p, expected, 1e-9);
        assert_close(p, DVec3::new(0.307, 0.0, 0.487), 1e-3);
        assert_close(r * DVec3::Z, DVec3::NEG_Z, 1e-9);
        assert_close(r * DVec3::X, DVec3::X, 1e-9);
    }

    #[test]
    fn jacobian_matches_finite_differences() {
        let mut rng = Lcg(7);
        let h = 1e-6;
        for _ in 0..20 {
            let q = rng.config(0.0);
            let jac = jacobian(&q);
            for i in 0..DOF {
                let (mut qp, mut qm) = (q, q);
                qp[i] += h;
                qm[i] -= h;
                let (tp, tm) = (forward(&qp).tcp, forward(&qm).tcp);
                let v = (tp.translation - tm.translation) / (2.0 * h);
                let w = rotation_vector(rotation_of(&tp) * rotation_of(&tm).conjugate()) / (2.0 * h);
                let column = DVec3::new(jac[0][i], jac[1][i], jac[2][i]);
                let angular = DVec3::new(jac[3][i], jac[4][i], jac[5][i]);
                assert_close(column, v, 1e-6);
                assert_close(angular, w, 1e-6);
            }
        }
    }

    #[test]
    fn ik_round_trip_from_perturbed_seed() {
        let mut rng = Lcg(42);
        for _ in 0..200 {
            let q = rng.config(0.05);
            let (p, r) = tcp_pose(&q);
            let seed: [f64; DOF] = std::array::from_fn(|i| q[i] + rng.range(-0.2, 0.2));
            let sol = solve_ik(p, r, &seed, &IkOptions::default());
            assert!(sol.converged, "{q:?} -> {sol:?}");
            let (p2, r2) = tcp_pose(&sol.q);
            assert!((p2 - p).length() < 1e-3 && r2.angle_between(r) < 1e-2, "{q:?} -> {sol:?}");
            assert!((p2 - p).length() - sol.position_error < 1e-9);
        }
    }

    fn within_limits(q: &[f64; DOF]) -> bool {
        (0..DOF).all(|i| Q_MIN[i] <= q[i] && q[i] <= Q_MAX[i])
    }

    #[test]
    fn ik_respects_joint_limits() {
        let mut rng = Lcg(3);
        for _ in 0..100 {
            let target = DVec3::new(rng.range(-1.2, 1.2), rng.range(-1.2, 1.2), rng.range(-0.3, 1.4));
            let orientation = DQuat::from_scaled_axis(DVec3::new(rng.next(), rng.next(), rng.next()) * 3.0);
            let seed = rng.config(-0.5);
            let sol = solve_ik(target, orientation, &seed, &IkOptions::default());
            assert!(within_limits(&sol.q), "{sol:?}");
        }
    }

    #[test]
    fn unreachable_target_is_reported() {
        let down = rotation_of(&forward(&Q_HOME).tcp);
        let sol = solve_ik(DVec3::new(1.5, 0.0, 0.5), down, &Q_HOME, &IkOptions::default());
        assert!(!sol.converged);
        assert!(sol.position_error > 0.3, "{sol:?}");
        assert!(within_limits(&sol.q));
    }

    #[test]
    fn tabletop_targets_are_solved_from_home() {
        let mut rng = Lcg(5);
        let down = tcp_pose(&Q_HOME).1;
        for _ in 0..500 {
            let p = DVec3::new(rng.range(0.25, 0.65), rng.range(-0.35, 0.35), rng.range(0.01, 0.46));
            let tilt = DQuat::from_rotation_y(rng.range(-0.2, 0.2));
            let r = DQuat::from_rotation_z(rng.range(-1.5, 1.5)) * tilt * down;
            let sol = solve_ik(p, r, &Q_HOME, &IkOptions::default());
            assert!(sol.converged, "{p:?} {sol:?}");
        }
    }

    #[test]
    fn warm_started_ik_needs_few_iterations() {
        let (p, r) = tcp_pose(&Q_HOME);
        let sol = solve_ik(p + DVec3::new(0.005, -0.003, 0.002), r, &Q_HOME, &IkOptions::default());
        assert!(sol.converged && sol.iterations <= 4, "{sol:?}");
    }

    #[test]
    fn step_towards_respects_speed_and_converges() {
        let (p, r) = tcp_pose(&Q_HOME);
        let target = p + DVec3::new(0.1, 0.15, -0.1);
        let target_r = DQuat::from_rotation_z(0.5) * r;
        let dt = 0.001;
        let mut q = Q_HOME;
        for _ in 0..1000 {
            let next = step_towards(&q, target, target_r, dt);
            assert!((0..DOF).all(|i| (next[i] - q[i]).abs() <= QD_MAX[i] * dt + 1e-12));
            assert!(within_limits(&next));
            let moved = (tcp_pose(&next).0 - tcp_pose(&q).0).length();
            assert!(moved <= TCP_MAX_LINEAR_SPEED * dt * 1.05, "{moved}");
            q = next;
        }
        let (p2, r2) = tcp_pose(&q);
        assert!((p2 - target).length() < 1e-4 && r2.angle_between(target_r) < 1e-3, "{p2:?} {r2:?}");
    }

    #[test]
    fn step_towards_drifts_redundancy_home_while_holding_the_tcp() {
        let (p, r) = tcp_pose(&Q_HOME);
        let seed: [f64; DOF] = std::array::from_fn(|i| Q_HOME[i] + [0.4, 0.0, -0.4, 0.0, 0.0, 0.0, 0.0][i]);
        let no_pull = IkOptions { nullspace_gain: 0.0, ..IkOptions::default() };
        let start = solve_ik(p, r, &seed, &no_pull).q;
        let distance = |q: &[f64; DOF]| (0..DOF).map(|i| (q[i] - Q_HOME[i]).powi(2)).sum::<f64>().sqrt();
        let mut q = start;
        for _ in 0..2000 {
            q = step_towards(&q, p, r, 0.005);
        }
        let (p2, r2) = tcp_pose(&q);
        assert!((p2 - p).length() < 1e-4 && r2.angle_between(r) < 1e-3);
        assert!(distance(&start) > 0.3 && distance(&q) < 0.01, "{start:?} -> {q:?}");
    }

    /// Lowest world z reached by a solid.
    fn lowest_z(shape: &Shape, pose: &Pose) -> f32 {
        let down = pose.rotation.inverse() * Vec3::NEG_Z;
        let support = match *shape {
            Shape::Box { half } => half * down.signum(),
            Shape::Sphere { radius } => down * radius,
            Shape::Capsule { radius, half_height } => Vec3::Z * half_height * down.z.signum() + down * radius,
            Shape::Cylinder { radius, half_height } => {
                let radial = Vec3::new(down.x, down.y, 0.0).normalize_or_zero() * radius;
                Vec3::Z * half_height * down.z.signum() + radial
            }
            Shape::Ellipsoid { radii } => radii * radii * down / (radii * down).length(),
        };
        pose.transform_point(support).z
    }

    #[test]
    fn solids_at_home_are_above_table() {
        let solids = robot_solids(&Q_HOME, GRIPPER_MAX_WIDTH);
        assert_eq!(solids.len(), LINK_SOLIDS.len() + 3);
        for s in solids.iter().filter(|s| s.part != RobotPart::Link(0)) {
            assert!(lowest_z(&s.shape, &s.pose) > -0.01, "{s:?}");
        }
        let base = solids.iter().find(|s| s.part == RobotPart::Link(0)).unwrap();
        assert!(lowest_z(&base.shape, &base.pose).abs() < 1e-6);
        let tip = solids.iter().find(|s| s.part == RobotPart::LeftFinger).unwrap();
        assert!(lowest_z(&tip.shape, &tip.pose) < tcp_pose(&Q_HOME).0.z as f32);
    }

    #[test]
    fn fingers_are_width_apart_around_tcp() {
        let mut rng = Lcg(11);
        for width in [0.0, 0.03, GRIPPER_MAX_WIDTH] {
            let q = rng.config(0.1);
            let [left, right] = finger_poses(&q, width);
            let chain = forward(&q);
            let y = chain.hand.matrix3.y_axis.as_vec3();
            let gap = (left.translation - right.translation).dot(y) - 2.0 * FINGER_HALF[1] as f32;
            assert!((gap - width as f32).abs() < 1e-6, "{gap} vs {width}");
            let mid = 0.5 * (left.translation + right.translation);
            let tip_mid = mid + chain.tcp.matrix3.z_axis.as_vec3() * (FINGER_HALF[2] as f32 - 0.005);
            assert!((tip_mid - chain.tcp.translation.as_vec3()).length() < 1e-5);
        }
        let [l, r] = finger_poses(&Q_HOME, 1.0);
        let gap = (l.translation - r.translation).length() - 2.0 * FINGER_HALF[1] as f32;
        assert!((gap - GRIPPER_MAX_WIDTH as f32).abs() < 1e-6);
    }
}
