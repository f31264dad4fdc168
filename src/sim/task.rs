//! The paper's real-world tasks (sec. V-A) rebuilt in the simulator: objects, randomised layouts and success checks.
//!
//! `fold-towel` is not provided: rapier has no cloth model and a rigid stand-in would not be an honest towel.

use std::f32::consts::{FRAC_PI_4, PI};
use std::fmt;
use std::str::FromStr;

use glam::{Quat, Vec3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::render::{Material, Pattern};
use super::shape::{Pose, Shape};

/// Instance id of the table in the segmentation image (0 is the background wall).
pub const TABLE_INSTANCE: u8 = 1;
/// Instance id shared by every robot link, the hand and the fingers.
pub const ROBOT_INSTANCE: u8 = 2;
/// First instance id of task objects; distractors and occluders start at [`super::ood::FIRST_DISTRACTOR_INSTANCE`].
pub const FIRST_OBJECT_INSTANCE: u8 = 3;

/// One of the paper's real-world tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Close the gripper and press the red button; the button's position varies.
    PushButton,
    /// Stack the white block on the blue block; both positions (and yaws) vary.
    StackBlock,
    /// Grasp the fruit and place it into the plate; the fruit's position and orientation vary.
    PlaceFruit,
}

impl TaskKind {
    pub const ALL: [TaskKind; 3] = [TaskKind::PushButton, TaskKind::StackBlock, TaskKind::PlaceFruit];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::PushButton => "push-button",
            TaskKind::StackBlock => "stack-block",
            TaskKind::PlaceFruit => "place-fruit",
        }
    }

    /// The task-relevant text queries of eq. (1), one per object the keypoints should come from.
    pub fn text_query(self) -> Vec<String> {
        let q: &[&str] = match self {
            TaskKind::PushButton => &["red button"],
            TaskKind::StackBlock => &["white block", "blue block"],
            TaskKind::PlaceFruit => &["fruit", "plate"],
        };
        q.iter().map(|s| s.to_string()).collect()
    }

    /// The object a pick-and-place task carries (its grasp is the first stage of the task); `None` for
    /// push-button, which grasps nothing.
    pub fn carried_object(self) -> Option<&'static str> {
        match self {
            TaskKind::PushButton => None,
            TaskKind::StackBlock => Some("white block"),
            TaskKind::PlaceFruit => Some("fruit"),
        }
    }

    /// What a pick-and-place task puts its carried object on, and the largest horizontal distance between the two
    /// centres that its success check accepts (m); `None` for push-button.
    pub fn place_target(self) -> Option<(&'static str, f32)> {
        match self {
            TaskKind::PushButton => None,
            TaskKind::StackBlock => Some(("blue block", STACK_TOLERANCE)),
            TaskKind::PlaceFruit => Some(("plate", PLATE_TOLERANCE)),
        }
    }

    /// Episode length limit in 10 Hz control ticks (about twice what the scripted expert needs).
    pub fn max_ticks(self) -> u32 {
        match self {
            TaskKind::PushButton => 100,
            TaskKind::StackBlock | TaskKind::PlaceFruit => 200,
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskKind::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<_> = TaskKind::ALL.iter().map(|t| t.name()).collect();
            format!("unknown task `{s}`: expected one of {}", names.join(", "))
        })
    }
}

/// How an object is held in the world.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mount {
    /// A free rigid body (mass from density).
    Free { density: f32 },
    /// Fixed to the table.
    Fixed,
    /// A push button cap: slides along world Z on a spring relative to the object at index `base`.
    Button { base: usize, travel: f32 },
}

/// One object of a task layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectSpec {
    /// The name the text query refers to (e.g. "white block"); parts that no query names get descriptive names.
    pub name: &'static str,
    pub shape: Shape,
    pub material: Material,
    /// Initial pose; the shape rests on the table (z = 0) unless mounted otherwise.
    pub pose: Pose,
    pub mount: Mount,
    pub instance: u8,
}

/// Button travel (m) and the depression (m) that counts as a press.
pub const BUTTON_TRAVEL: f32 = 0.012;
pub const BUTTON_PRESS_DEPTH: f32 = 0.007;

pub const BLOCK_WHITE_HALF: f32 = 0.0225;
pub const BLOCK_BLUE_HALF: f32 = 0.03;
const PLATE_RADIUS: f32 = 0.09;
const PLATE_HALF_HEIGHT: f32 = 0.006;
/// Stack-block succeeds with the white block's centre within this horizontal distance of the blue block's (m).
const STACK_TOLERANCE: f32 = 0.025;
/// Place-fruit succeeds with the fruit's centre this far inside the plate (2 cm from its rim, m).
const PLATE_TOLERANCE: f32 = PLATE_RADIUS - 0.02;
/// Fruit semi-axes: elongated along its local x, so its yaw matters for the grasp.
pub const FRUIT_RADII: Vec3 = Vec3::new(0.045, 0.027, 0.027);

fn material(color: [f32; 3], specular: f32, pattern: Pattern) -> Material {
    Material { color: Vec3::from(color), specular, pattern }
}

fn yaw(angle: f32) -> Quat {
    Quat::from_rotation_z(angle)
}

/// Uniform sample of an (x, y) position in the reachable part of the table in front of the robot.
fn table_xy(rng: &mut ChaCha8Rng) -> Vec3 {
    Vec3::new(rng.random_range(0.38..0.62), rng.random_range(-0.18..0.18), 0.0)
}

/// Samples positions until they are at least `min_dist` apart (deterministic for a given rng state).
fn separated_xy(rng: &mut ChaCha8Rng, n: usize, min_dist: f32) -> Vec<Vec3> {
    let mut out: Vec<Vec3> = Vec::with_capacity(n);
    while out.len() < n {
        let p = table_xy(rng);
        if out.iter().all(|q| q.distance(p) >= min_dist) {
            out.push(p);
        }
    }
    out
}

/// The randomised initial layout of `task` for an episode seed (sec. V-A: positions, and for the fruit the
/// orientation, vary). Only the task RNG stream is used, so OOD variants of a seed share this layout.
pub fn layout(task: TaskKind, rng: &mut ChaCha8Rng) -> Vec<ObjectSpec> {
    let first = FIRST_OBJECT_INSTANCE;
    match task {
        TaskKind::PushButton => {
            let p = table_xy(rng);
            let base_h = 0.015;
            vec![
                ObjectSpec {
                    name: "button base",
                    shape: Shape::Cylinder { radius: 0.045, half_height: base_h },
                    material: material([0.12, 0.12, 0.13], 0.3, Pattern::Plain),
                    pose: Pose::from_translation(p + Vec3::Z * base_h),
                    mount: Mount::Fixed,
                    instance: first,
                },
                ObjectSpec {
                    name: "red button",
                    shape: Shape::Cylinder { radius: 0.026, half_height: 0.01 },
                    material: material([0.85, 0.05, 0.04], 0.6, Pattern::Noise { scale: 0.01, amplitude: 0.15 }),
                    pose: Pose::from_translation(p + Vec3::Z * (2.0 * base_h + 0.01)),
                    mount: Mount::Button { base: 0, travel: BUTTON_TRAVEL },
                    instance: first + 1,
                },
            ]
        }
        TaskKind::StackBlock => {
            let ps = separated_xy(rng, 2, 0.14);
            let (yw, yb) = (rng.random_range(-FRAC_PI_4..FRAC_PI_4), rng.random_range(-FRAC_PI_4..FRAC_PI_4));
            vec![
                ObjectSpec {
                    name: "white block",
                    shape: Shape::Box { half: Vec3::splat(BLOCK_WHITE_HALF) },
                    material: material([0.9, 0.9, 0.88], 0.2, Pattern::Checker { cell: 0.015, contrast: 0.25 }),
                    pose: Pose::new(ps[0] + Vec3::Z * BLOCK_WHITE_HALF, yaw(yw)),
                    mount: Mount::Free { density: 600.0 },
                    instance: first,
                },
                ObjectSpec {
                    name: "blue block",
                    shape: Shape::Box { half: Vec3::splat(BLOCK_BLUE_HALF) },
                    material: material([0.08, 0.2, 0.75], 0.2, Pattern::Stripes { period: 0.02, contrast: 0.3 }),
                    pose: Pose::new(ps[1] + Vec3::Z * BLOCK_BLUE_HALF, yaw(yb)),
                    mount: Mount::Free { density: 600.0 },
                    instance: first + 1,
                },
            ]
        }
        TaskKind::PlaceFruit => {
            let ps = separated_xy(rng, 2, 0.17);
            let fruit_yaw = rng.random_range(-PI..PI);
            vec![
                ObjectSpec {
                    name: "fruit",
                    shape: Shape::Ellipsoid { radii: FRUIT_RADII },
                    material: material([0.95, 0.55, 0.08], 0.5, Pattern::Noise { scale: 0.008, amplitude: 0.2 }),
                    pose: Pose::new(ps[0] + Vec3::Z * FRUIT_RADII.z, yaw(fruit_yaw)),
                    mount: Mount::Free { density: 700.0 },
                    instance: first,
                },
                ObjectSpec {
                    name: "plate",
                    shape: Shape::Cylinder { radius: PLATE_RADIUS, half_height: PLATE_HALF_HEIGHT },
                    material: material([0.92, 0.92, 0.95], 0.7, Pattern::Stripes { period: 0.03, contrast: 0.12 }),
                    pose: Pose::from_translation(ps[1] + Vec3::Z * PLATE_HALF_HEIGHT),
                    mount: Mount::Fixed,
                    instance: first + 1,
                },
            ]
        }
    }
}

/// What the success checks read from the world.
pub struct SuccessView<'a> {
    pub objects: &'a [ObjectSpec],
    /// Current pose of each object, index-aligned with `objects`.
    pub poses: Vec<Pose>,
    /// Current linear speed of each object (m/s).
    pub speeds: Vec<f32>,
    /// Index of the object held by the grasp constraint, if any.
    pub grasped: Option<usize>,
}

impl SuccessView<'_> {
    fn index(&self, name: &str) -> usize {
        self.objects.iter().position(|o| o.name == name).unwrap_or_else(|| panic!("task layout has no `{name}`"))
    }

    fn released_and_still(&self, i: usize) -> bool {
        self.grasped != Some(i) && self.speeds[i] < 0.05
    }

    /// Horizontal distance between the centres of objects `a` and `b` (m).
    fn horizontal_distance(&self, a: usize, b: usize) -> f32 {
        self.poses[a].translation.truncate().distance(self.poses[b].translation.truncate())
    }
}

/// Pick-and-place tasks: the horizontal distance (m) from the carried object's centre to its target's
/// ([`TaskKind::place_target`]), the place stage's error that [`success`] bounds; `None` for push-button.
pub fn place_error(task: TaskKind, view: &SuccessView) -> Option<f32> {
    let carried = task.carried_object()?;
    let (target, _) = task.place_target()?;
    Some(view.horizontal_distance(view.index(carried), view.index(target)))
}

/// Whether `task` is accomplished in the current world state.
pub fn success(task: TaskKind, view: &SuccessView) -> bool {
    match task {
        TaskKind::PushButton => {
            let (base, cap) = (view.index("button base"), view.index("red button"));
            let rest = view.objects[cap].pose.translation.z - view.objects[base].pose.translation.z;
            let now = view.poses[cap].translation.z - view.poses[base].translation.z;
            rest - now >= BUTTON_PRESS_DEPTH
        }
        TaskKind::StackBlock => {
            let (w, b) = (view.index("white block"), view.index("blue block"));
            let (pw, pb) = (view.poses[w].translation, view.poses[b].translation);
            let on_top = (pw.z - (pb.z + BLOCK_BLUE_HALF + BLOCK_WHITE_HALF)).abs() < 0.01;
            on_top && view.horizontal_distance(w, b) < STACK_TOLERANCE && view.released_and_still(w)
        }
        TaskKind::PlaceFruit => {
            let (f, p) = (view.index("fruit"), view.index("plate"));
            let (pf, pp) = (view.poses[f].translation, view.poses[p].translation);
            let inside = view.horizontal_distance(f, p) < PLATE_TOLERANCE;
            let resting = pf.z < pp.z + PLATE_HALF_HEIGHT + FRUIT_RADII.y + 0.012;
            inside && resting && view.released_and_still(f)
        }
    }
}
