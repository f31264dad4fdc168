//! The built-in simulator: a Franka Panda on a table with rigid-body physics (rapier3d), the paper's real-world
//! tasks (sec. V-A), the OOD conditions of sec. V-C, a software third-person camera and scripted experts.
//!
//! One [`Sim`] is one episode. It is deterministic: the same task, seed and condition give the same episode bit
//! for bit (fixed physics step, seeded ChaCha streams, single-threaded rapier).

pub mod expert;
pub mod franka;
pub mod ood;
pub mod physics;
pub mod render;
pub mod shape;
pub mod task;

use glam::{Quat, Vec3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::msg::{Action, Keypoints, ObjectPoses, RobotState};
use ood::{Condition, Disturbance};
use physics::Physics;
use render::{Camera, Drawable, Frame, Material, Pattern, Renderer};
use shape::{Pose, Shape};
use task::{ObjectSpec, SuccessView, TaskKind};

/// Simulator settings that are not part of an episode's identity.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Camera image size in pixels (224x224 by default; the paper uses up to 512x512).
    pub width: u32,
    pub height: u32,
    /// Control rate of observations and actions (the paper's demonstrations are sampled at 10 Hz).
    pub control_hz: f32,
    /// Physics steps per control tick.
    pub substeps: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { width: 224, height: 224, control_hz: 10.0, substeps: 20 }
    }
}

/// What identifies an episode: task, seed and OOD condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeSpec {
    pub task: TaskKind,
    pub seed: u64,
    pub condition: Condition,
}

/// Oracle tracked points per task object.
pub const ORACLE_POINTS_PER_OBJECT: usize = 8;

/// RNG streams of an episode seed: the layout, the oracle points, the OOD disturbance and the execution noise of
/// demonstration collection never share draws.
const STREAM_LAYOUT: u64 = 0;
const STREAM_ORACLE: u64 = 1;
const STREAM_OOD: u64 = 2;
pub(crate) const STREAM_EXECUTION_NOISE: u64 = 3;

pub(crate) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// One camera observation with the robot state and the oracle point tracks.
#[derive(Clone, Debug)]
pub struct Observation {
    pub frame: u32,
    pub timestamp_ns: u64,
    /// RGB, depth and instance segmentation of the same render pass.
    pub image: Frame,
    pub robot_state: RobotState,
    /// Projected pixel and visibility of every oracle surface point (`[M, 3]` = x, y, visible).
    pub oracle_tracks: Keypoints,
}

/// A surface point fixed on a task object, followed by the oracle tracker.
#[derive(Clone, Copy, Debug)]
struct OraclePoint {
    object: usize,
    local: Vec3,
}

/// One simulated episode.
pub struct Sim {
    config: SimConfig,
    spec: EpisodeSpec,
    objects: Vec<ObjectSpec>,
    physics: Physics,
    camera: Camera,
    disturbance: Disturbance,
    renderer: Renderer,
    oracle: Vec<OraclePoint>,
    frame: u32,
    /// Index of the task's carried object, and whether the gripper has held it at any tick so far.
    carried: Option<(usize, bool)>,
    /// Pick-and-place tasks: the object nearest the TCP at the first tick the gripper was commanded closed, and
    /// its horizontal distance, m ([`Sim::first_close`]).
    first_close: Option<(usize, f32)>,
}

/// A gripper command below this width (m, half the Franka hand's opening) counts as closing in [`Sim::first_close`].
const CLOSING_WIDTH: f32 = 0.5 * franka::GRIPPER_MAX_WIDTH as f32;

/// The fixed third-person camera, looking at the workspace from the front right like the paper's RealSense.
pub fn default_camera(width: u32, height: u32) -> Camera {
    Camera {
        eye: Vec3::new(1.05, 0.32, 0.55),
        target: Vec3::new(0.38, 0.0, 0.25),
        up: Vec3::Z,
        fov_y_deg: 55.0,
        width,
        height,
    }
}

fn table_drawable() -> Drawable {
    Drawable {
        shape: Shape::Box { half: Vec3::new(0.65, 0.6, 0.02) },
        pose: Pose::from_translation(Vec3::new(0.35, 0.0, -0.02)),
        material: Material { color: Vec3::new(0.55, 0.4, 0.27), specular: 0.15, pattern: Pattern::Noise { scale: 0.02, amplitude: 0.25 } },
        instance: task::TABLE_INSTANCE,
    }
}

const ROBOT_WHITE: Vec3 = Vec3::new(0.85, 0.86, 0.88);
const ROBOT_DARK: Vec3 = Vec3::new(0.15, 0.15, 0.17);

/// A random point on the upper, camera-facing part of `shape`'s surface (local frame).
fn surface_point(shape: &Shape, rng: &mut ChaCha8Rng) -> Vec3 {
    let mut u = || rng.random_range(-1.0f32..1.0);
    match *shape {
        Shape::Box { half } => {
            let (a, b) = (u(), u());
            match (u() * 2.5 + 2.5) as u32 {
                0 | 1 => Vec3::new(a * half.x, b * half.y, half.z),
                2 => Vec3::new(half.x, a * half.y, b * half.z),
                3 => Vec3::new(a * half.x, half.y, b * half.z),
                _ => Vec3::new(a * half.x, -half.y, b * half.z),
            }
        }
        Shape::Cylinder { radius, half_height } => {
            let angle = u() * std::f32::consts::PI;
            let r = radius * u().abs().sqrt() * 0.9;
            Vec3::new(r * angle.cos(), r * angle.sin(), half_height)
        }
        Shape::Sphere { radius } => Vec3::new(u(), u(), u().abs()).normalize_or(Vec3::Z) * radius,
        Shape::Capsule { radius, half_height } => Vec3::new(u() * 0.5, u() * 0.5, 1.0).normalize() * radius + Vec3::Z * half_height * u(),
        Shape::Ellipsoid { radii } => Vec3::new(u(), u(), u().abs() + 0.3).normalize() * radii,
    }
}

impl Sim {
    /// Starts the episode `spec`: samples the layout, places the arm at its home posture with the gripper open.
    pub fn new(config: &SimConfig, spec: EpisodeSpec) -> Self {
        let objects = task::layout(spec.task, &mut rng(spec.seed, STREAM_LAYOUT));
        let camera = default_camera(config.width, config.height);
        let disturbance = Disturbance::new(spec.condition, &objects, &camera, &mut rng(spec.seed, STREAM_OOD));
        let queries = spec.task.text_query();
        let mut oracle_rng = rng(spec.seed, STREAM_ORACLE);
        let oracle = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| queries.iter().any(|q| q == o.name))
            .flat_map(|(i, o)| {
                (0..ORACLE_POINTS_PER_OBJECT).map(|_| OraclePoint { object: i, local: surface_point(&o.shape, &mut oracle_rng) }).collect::<Vec<_>>()
            })
            .collect();
        let dt = 1.0 / (config.control_hz * config.substeps as f32);
        let physics = Physics::new(&objects, franka::Q_HOME, franka::GRIPPER_MAX_WIDTH, dt, config.substeps);
        let carried = spec.task.carried_object().map(|name| {
            let index = objects.iter().position(|o| o.name == name).unwrap_or_else(|| panic!("task layout has no `{name}`"));
            (index, false)
        });
        Sim { config: config.clone(), spec, objects, physics, camera, disturbance, renderer: Renderer::new(), oracle, frame: 0, carried, first_close: None }
    }

    pub fn spec(&self) -> &EpisodeSpec {
        &self.spec
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn camera(&self) -> &Camera {
        &self.camera
    }

    /// Task objects with their names and instance ids.
    pub fn objects(&self) -> &[ObjectSpec] {
        &self.objects
    }

    /// Control ticks elapsed since the episode started.
    pub fn frame(&self) -> u32 {
        self.frame
    }

    pub fn timestamp_ns(&self) -> u64 {
        (self.frame as f64 * 1e9 / self.config.control_hz as f64).round() as u64
    }

    /// Joint angles, gripper opening and TCP pose of the arm.
    pub fn robot_state(&self) -> RobotState {
        let (q, width) = self.physics.arm();
        let (p, r) = franka::tcp_pose(&q);
        RobotState {
            joints: q.map(|v| v as f32),
            gripper: width as f32,
            ee_position: p.as_vec3().to_array(),
            ee_orientation: r.as_quat().normalize().to_array(),
        }
    }

    /// Privileged object poses for scripted experts (never given to learned policies).
    pub fn object_poses(&self) -> ObjectPoses {
        let poses = self.physics.object_poses();
        ObjectPoses {
            names: self.objects.iter().map(|o| o.name.to_string()).collect(),
            poses: poses.iter().map(|p| {
                let (t, r) = (p.translation, p.rotation);
                [t.x, t.y, t.z, r.x, r.y, r.z, r.w]
            }).collect(),
        }
    }

    fn drawables(&self) -> Vec<Drawable> {
        let (q, width) = self.physics.arm();
        let mut items = vec![table_drawable()];
        for solid in franka::robot_solids(&q, width) {
            let color = match solid.part {
                franka::RobotPart::Link(7) | franka::RobotPart::LeftFinger | franka::RobotPart::RightFinger => ROBOT_DARK,
                _ => ROBOT_WHITE,
            };
            let material = Material { color, specular: 0.5, pattern: Pattern::Plain };
            items.push(Drawable { shape: solid.shape, pose: solid.pose, material, instance: task::ROBOT_INSTANCE });
        }
        for (spec, pose) in self.objects.iter().zip(self.physics.object_poses()) {
            items.push(Drawable { shape: spec.shape, pose, material: spec.material, instance: spec.instance });
        }
        items.extend_from_slice(self.disturbance.drawables());
        items
    }

    /// The camera's view of the current tick under the default studio light, the disturbance's drawables kept:
    /// what [`Self::observe`] would show without the `lighting` variant's lights (`glue eval --unlit-encoder`).
    pub fn render_default_lighting(&mut self) -> render::Frame {
        let items = self.drawables();
        self.renderer.render(&self.camera, &render::Lighting::default(), &items)
    }

    /// Renders the camera and reads the robot and oracle tracks at the current tick.
    pub fn observe(&mut self) -> Observation {
        let items = self.drawables();
        let t = self.frame as f32 / self.config.control_hz;
        let image = self.renderer.render(&self.camera, &self.disturbance.lighting(t), &items);
        let poses = self.physics.object_poses();
        let points = self
            .oracle
            .iter()
            .map(|p| {
                let world = poses[p.object].transform_point(p.local);
                match image.visibility(&self.camera, world, self.objects[p.object].instance) {
                    Some((x, y, visible)) => [x, y, if visible { 1.0 } else { 0.0 }],
                    None => {
                        let q = self.camera.project(world).unwrap_or(Vec3::splat(-1.0));
                        [q.x, q.y, 0.0]
                    }
                }
            })
            .collect();
        Observation {
            frame: self.frame,
            timestamp_ns: self.timestamp_ns(),
            image,
            robot_state: self.robot_state(),
            oracle_tracks: Keypoints { points },
        }
    }

    /// Applies one action for one control tick. The action must already be validated (see `msg::Action`).
    pub fn step(&mut self, action: &Action) {
        let orientation = Quat::from_array(action.orientation).normalize();
        self.physics.step(Vec3::from(action.position), orientation, action.gripper);
        self.frame += 1;
        if let Some((index, held)) = &mut self.carried {
            *held |= self.physics.grasped() == Some(*index);
        }
        if self.carried.is_some() && self.first_close.is_none() && action.gripper < CLOSING_WIDTH {
            self.first_close = self.nearest_object(Vec3::from(self.robot_state().ee_position));
        }
    }

    /// The task object whose centre is horizontally nearest `point`, and that distance (m).
    fn nearest_object(&self, point: Vec3) -> Option<(usize, f32)> {
        let distance = |pose: &Pose| (pose.translation.truncate() - point.truncate()).length();
        self.physics.object_poses().iter().map(distance).enumerate().min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Pick-and-place tasks: the name of the task object whose centre is horizontally nearest the TCP at the first
    /// tick the gripper was commanded closed (below half its opening), and that distance (m): where the policy's
    /// first grasp attempt went. `None` for a task that carries nothing and while the gripper has not closed.
    pub fn first_close(&self) -> Option<(&'static str, f32)> {
        self.first_close.map(|(i, d)| (self.objects[i].name, d))
    }

    /// Whether the gripper has held the task's carried object ([`TaskKind::carried_object`]) at any tick of the
    /// episode: the first stage of a pick-and-place, which separates failures to grasp from failures to place.
    /// `None` for a task that carries nothing.
    pub fn grasped_carried(&self) -> Option<bool> {
        self.carried.map(|(_, held)| held)
    }

    /// Whether the gripper holds the task's carried object now; `None` for a task that carries nothing. With
    /// [`Sim::grasped_carried`] and [`Sim::place_error`] it tells a failed pick-and-place's stage: never grasped,
    /// still holding at the end, or released off target.
    pub fn holding_carried(&self) -> Option<bool> {
        self.carried.map(|(index, _)| self.physics.grasped() == Some(index))
    }

    /// Pick-and-place tasks: the carried object's horizontal distance from its target now, m ([`task::place_error`]).
    pub fn place_error(&self) -> Option<f32> {
        task::place_error(self.spec.task, &self.success_view())
    }

    /// A command that holds the arm where it is (TCP pose and gripper opening): what a watchdog sends when no
    /// valid command is available.
    pub fn hold_action(&self) -> Action {
        let s = self.robot_state();
        Action { position: s.ee_position, orientation: s.ee_orientation, gripper: s.gripper }
    }

    /// Whether the task's success condition holds now.
    pub fn success(&self) -> bool {
        task::success(self.spec.task, &self.success_view())
    }

    fn success_view(&self) -> SuccessView<'_> {
        SuccessView { objects: &self.objects, poses: self.physics.object_poses(), speeds: self.physics.object_speeds(), grasped: self.physics.grasped() }
    }

    /// The episode is over when the task succeeded or the tick limit is reached.
    pub fn done(&self) -> bool {
        self.frame >= self.spec.task.max_ticks() || self.success()
    }
}
