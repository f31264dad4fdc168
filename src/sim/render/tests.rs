//! The renderer's tests: projection, coverage, depth, shading, shadows, patterns and tessellation.

use glam::{Quat, Vec2, Vec3};

use super::material::CHECKER_OFFSET;
use super::mesh::{LOD_SEGMENTS, Mesh};
use super::raster::{Fixed, raster};
use super::*;
use crate::sim::shape::{Pose, Shape};

const BOX: u8 = 1;

fn camera(eye: Vec3, target: Vec3, width: u32, height: u32) -> Camera {
    Camera { eye, target, up: Vec3::Z, fov_y_deg: 50.0, width, height }
}

fn solid(shape: Shape, at: Vec3, color: Vec3, instance: u8) -> Drawable {
    Drawable { shape, pose: Pose::from_translation(at), material: Material::plain(color), instance }
}

fn cube(half: f32, at: Vec3, instance: u8) -> Drawable {
    solid(Shape::Box { half: Vec3::splat(half) }, at, Vec3::splat(0.7), instance)
}

/// Only the sun, no shadows, no ambient.
fn sun_only(direction: Vec3) -> Lighting {
    Lighting { ambient: Vec3::ZERO, sun_direction: direction, sun_color: Vec3::ONE, points: vec![], shadows: false }
}

fn rgb_at(frame: &Frame, x: usize, y: usize) -> Vec3 {
    let i = 3 * (y * frame.width as usize + x);
    Vec3::new(frame.rgb[i] as f32, frame.rgb[i + 1] as f32, frame.rgb[i + 2] as f32)
}

/// Mean colour over the pixels that show `instance`, and their count.
fn mean_colour(frame: &Frame, instance: u8) -> (Vec3, usize) {
    let mut sum = Vec3::ZERO;
    let mut count = 0;
    for (i, _) in frame.instance.iter().enumerate().filter(|&(_, &id)| id == instance) {
        sum += Vec3::new(frame.rgb[3 * i] as f32, frame.rgb[3 * i + 1] as f32, frame.rgb[3 * i + 2] as f32);
        count += 1;
    }
    (sum / count.max(1) as f32, count)
}

/// Mean colour of the 3x3 pixels around the projection of `p`.
fn patch_colour(frame: &Frame, cam: &Camera, p: Vec3) -> Vec3 {
    let s = cam.project(p).unwrap();
    let (cx, cy) = (s.x as usize, s.y as usize);
    let mut sum = Vec3::ZERO;
    for y in cy - 1..=cy + 1 {
        for x in cx - 1..=cx + 1 {
            sum += rgb_at(frame, x, y);
        }
    }
    sum / 9.0
}

#[test]
fn projection_of_known_points() {
    let cam = camera(Vec3::new(2.0, 0.0, 0.0), Vec3::ZERO, 224, 160);
    let centre = cam.project(Vec3::ZERO).unwrap();
    assert!((centre - Vec3::new(112.0, 80.0, 2.0)).abs().max_element() < 1e-4, "{centre}");
    // Looking along -X with Z up, the camera's right is +Y.
    let right = cam.project(Vec3::new(0.0, 0.3, 0.0)).unwrap();
    assert!(right.x > centre.x + 10.0 && (right.y - centre.y).abs() < 1e-3, "{right}");
    let up = cam.project(Vec3::new(0.0, 0.0, 0.3)).unwrap();
    assert!(up.y < centre.y - 10.0, "{up}");
    // Focal length in pixels: 80 / tan(25°); a 0.3 m offset at 2 m depth.
    let expected = 0.3 / 2.0 * 80.0 / 25f32.to_radians().tan();
    assert!((right.x - centre.x - expected).abs() < 1e-3);
    assert!(cam.project(Vec3::new(3.0, 0.0, 0.0)).is_none(), "behind the camera");
    assert!(cam.project(Vec3::new(2.0 - NEAR * 0.5, 0.0, 0.0)).is_none(), "closer than the near plane");
}

#[test]
fn depth_of_a_box_face_seen_head_on() {
    let cam = camera(Vec3::new(3.0, 0.0, 0.0), Vec3::ZERO, 192, 128);
    let frame = Renderer::new().render(&cam, &Lighting::default(), &[cube(0.25, Vec3::ZERO, BOX)]);
    let mut covered = 0;
    for (&id, &depth) in frame.instance.iter().zip(&frame.depth) {
        if id == BOX {
            covered += 1;
            assert!((depth - 2.75).abs() < 1e-5, "depth {depth}");
        } else {
            assert_eq!(depth, f32::INFINITY);
        }
    }
    // The face spans 0.5 m at 2.75 m: 0.5 / 2.75 * focal pixels on a side.
    let side = 0.5 / 2.75 * 64.0 / 25f32.to_radians().tan();
    let expected = side * side;
    assert!((covered as f32 - expected).abs() < 0.06 * expected, "{covered} vs {expected}");
}

#[test]
fn sphere_silhouette_has_the_analytic_area() {
    let (r, d) = (0.5, 2.0);
    let cam = camera(Vec3::new(d, 0.0, 0.0), Vec3::ZERO, 200, 200);
    let sphere = solid(Shape::Sphere { radius: r }, Vec3::ZERO, Vec3::ONE, 7);
    let frame = Renderer::new().render(&cam, &Lighting::default(), &[sphere]);
    let pixels = frame.instance.iter().filter(|&&id| id == 7).count() as f32;
    let focal = 100.0 / 25f32.to_radians().tan();
    let radius_px = focal * r / (d * d - r * r).sqrt();
    let expected = std::f32::consts::PI * radius_px * radius_px;
    assert!((pixels - expected).abs() < 0.03 * expected, "{pixels} vs {expected}");
}

#[test]
fn visibility_reports_occlusion() {
    let cam = camera(Vec3::new(4.0, 0.0, 0.5), Vec3::ZERO, 128, 128);
    let front = cube(0.2, Vec3::new(1.0, 0.0, 0.0), 1);
    let back = solid(Shape::Box { half: Vec3::new(0.2, 0.8, 0.2) }, Vec3::ZERO, Vec3::ONE, 2);
    let frame = Renderer::new().render(&cam, &Lighting::default(), &[front, back]);
    let on_front = Vec3::new(1.2, 0.0, 0.0);
    let hidden_on_back = Vec3::new(0.2, 0.0, 0.0);
    let exposed_on_back = Vec3::new(0.2, 0.6, 0.0);
    assert!(frame.visibility(&cam, on_front, 1).unwrap().2);
    let self_occluded = Vec3::new(0.8, 0.0, 0.0);
    assert!(!frame.visibility(&cam, self_occluded, 1).unwrap().2, "the far side of the same box");
    assert!(!frame.visibility(&cam, hidden_on_back, 2).unwrap().2);
    assert!(frame.visibility(&cam, exposed_on_back, 2).unwrap().2);
    assert!(!frame.visibility(&cam, exposed_on_back, 1).unwrap().2, "wrong instance");
    assert!(frame.visibility(&cam, Vec3::new(0.0, 5.0, 0.0), 2).is_none(), "outside the image");
    assert!(frame.visibility(&cam, Vec3::new(5.0, 0.0, 0.5), 2).is_none(), "behind the camera");
}

#[test]
fn head_on_face_is_brighter_than_grazing_face() {
    let cam = camera(Vec3::new(2.0, 0.0, 1.5), Vec3::ZERO, 128, 128);
    let lighting = sun_only(Vec3::new(1.0, 0.0, 0.15));
    let frame = Renderer::new().render(&cam, &lighting, &[cube(0.25, Vec3::ZERO, BOX)]);
    let front = patch_colour(&frame, &cam, Vec3::new(0.25, 0.0, 0.0));
    let top = patch_colour(&frame, &cam, Vec3::new(0.0, 0.0, 0.25));
    assert!(front.x > top.x + 60.0, "front {front} top {top}");
}

#[test]
fn coloured_point_light_tints_the_image() {
    let cam = camera(Vec3::new(2.0, 0.0, 0.5), Vec3::ZERO, 64, 64);
    let sphere = [solid(Shape::Sphere { radius: 0.3 }, Vec3::ZERO, Vec3::splat(0.8), 3)];
    let mut lighting = Lighting { ambient: Vec3::splat(0.3), points: vec![], ..sun_only(Vec3::ZERO) };
    let mut renderer = Renderer::new();
    let (neutral, _) = mean_colour(&renderer.render(&cam, &lighting, &sphere), 3);
    let red = PointLight { position: Vec3::new(1.0, 0.0, 0.5), color: Vec3::new(1.0, 0.1, 0.1), intensity: 1.0 };
    lighting.points.push(red);
    let (tinted, _) = mean_colour(&renderer.render(&cam, &lighting, &sphere), 3);
    assert!((neutral.x - neutral.z).abs() < 15.0, "neutral {neutral}");
    assert!(tinted.x > tinted.z + 40.0 && tinted.x > neutral.x + 20.0, "tinted {tinted}");
}

#[test]
fn floating_box_shadows_the_floor() {
    let cam = camera(Vec3::new(2.0, 0.0, 1.5), Vec3::ZERO, 128, 128);
    let floor = solid(Shape::Box { half: Vec3::new(1.0, 1.0, 0.05) }, Vec3::new(0.0, 0.0, -0.05), Vec3::ONE, 1);
    let blocker = cube(0.15, Vec3::new(0.0, 0.0, 0.6), 2);
    let mut lighting = Lighting { points: vec![], sun_direction: Vec3::Z, ..Lighting::default() };
    let mut renderer = Renderer::new();
    let below = Vec3::ZERO;
    let aside = Vec3::new(0.5, 0.5, 0.0);
    let lit = renderer.render(&cam, &lighting, &[floor, blocker]);
    lighting.shadows = false;
    let unshadowed = renderer.render(&cam, &lighting, &[floor, blocker]);
    assert!(lit.visibility(&cam, below, 1).unwrap().2, "the floor under the box is in view");
    let shadowed = patch_colour(&lit, &cam, below);
    assert!(shadowed.y + 60.0 < patch_colour(&unshadowed, &cam, below).y, "{shadowed}");
    assert!((patch_colour(&lit, &cam, aside) - patch_colour(&unshadowed, &cam, aside)).abs().max_element() < 1.0);
}

#[test]
fn patterns_move_with_the_object() {
    // A checker box seen from above; local points at cell centres keep their shade after a half-cell move.
    let cam = camera(Vec3::new(0.0, -0.01, 2.0), Vec3::ZERO, 128, 128);
    let lighting = sun_only(Vec3::Z);
    let material =
        Material { color: Vec3::ONE, specular: 0.0, pattern: Pattern::Checker { cell: 0.1, contrast: 0.8 } };
    let mut item = Drawable {
        shape: Shape::Box { half: Vec3::new(0.4, 0.4, 0.05) },
        pose: Pose::IDENTITY,
        material,
        instance: BOX,
    };
    let mut renderer = Renderer::new();
    let locals: Vec<Vec3> = (0..4)
        .map(|i| Vec3::new((i as f32 - CHECKER_OFFSET + 0.5) * 0.1 - 0.2, (0.5 - CHECKER_OFFSET) * 0.1, 0.05))
        .collect();
    let shades = |renderer: &mut Renderer, item: &Drawable| -> Vec<f32> {
        let frame = renderer.render(&cam, &lighting, std::slice::from_ref(item));
        locals.iter().map(|&l| patch_colour(&frame, &cam, item.pose.transform_point(l)).x).collect()
    };
    let before = shades(&mut renderer, &item);
    item.pose = Pose::new(Vec3::new(0.05, 0.0, 0.0), Quat::from_rotation_z(0.3));
    let after = shades(&mut renderer, &item);
    assert!((before[0] - before[1]).abs() > 100.0, "neighbouring cells differ: {before:?}");
    for (b, a) in before.iter().zip(&after) {
        assert!((b - a).abs() < 3.0, "{before:?} vs {after:?}");
    }
}

#[test]
fn textures_are_perspective_correct() {
    // A floor made of two huge triangles seen at a grazing angle: affine interpolation would shift the cells.
    let cam = camera(Vec3::new(0.0, -1.0, 0.4), Vec3::new(0.0, 1.0, 0.0), 256, 256);
    let checker = Pattern::Checker { cell: 0.25, contrast: 0.8 };
    let floor = Drawable {
        shape: Shape::Box { half: Vec3::new(3.0, 3.0, 0.05) },
        pose: Pose::from_translation(Vec3::new(0.0, 0.0, -0.05)),
        material: Material { color: Vec3::ONE, specular: 0.0, pattern: checker },
        instance: 1,
    };
    let frame = Renderer::new().render(&cam, &sun_only(Vec3::Z), &[floor]);
    let mut checked = 0;
    for kx in -2..2 {
        for ky in -2..8 {
            let centre = |k: i32| (k as f32 + 0.5 - CHECKER_OFFSET) * 0.25;
            let local = Vec3::new(centre(kx), centre(ky), 0.05);
            let world = floor.pose.transform_point(local);
            let Some((x, y, true)) = frame.visibility(&cam, world, 1) else { continue };
            let bright = rgb_at(&frame, x as usize, y as usize).x > 190.0;
            assert_eq!(bright, (kx + ky) % 2 == 0, "cell ({kx}, {ky}) at ({x}, {y})");
            checked += 1;
        }
    }
    assert!(checked > 25, "{checked} cells checked");
}

#[test]
fn noise_and_stripes_are_deterministic_and_vary() {
    let noise = Pattern::Noise { scale: 0.02, amplitude: 0.5 };
    let stripes = Pattern::Stripes { period: 0.05, contrast: 0.6 };
    for pattern in [noise, stripes] {
        let values: Vec<f32> =
            (0..200).map(|i| pattern.factor(Vec3::new(i as f32 * 0.0031, 0.01, -0.02))).collect();
        let again: Vec<f32> = (0..200).map(|i| pattern.factor(Vec3::new(i as f32 * 0.0031, 0.01, -0.02))).collect();
        assert_eq!(values, again);
        let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 0.4 && lo >= 0.0, "{pattern:?}: {lo}..{hi}");
    }
}

#[test]
fn near_plane_clips_instead_of_dropping() {
    // A floor passing under and behind the camera: its huge triangles cross the near plane.
    let cam = Camera {
        eye: Vec3::new(0.0, 0.0, 0.5),
        target: Vec3::new(1.0, 0.0, 0.5),
        up: Vec3::Z,
        fov_y_deg: 60.0,
        width: 64,
        height: 48,
    };
    let floor = solid(Shape::Box { half: Vec3::new(20.0, 20.0, 0.1) }, Vec3::new(0.0, 0.0, -0.1), Vec3::ONE, 4);
    let frame = Renderer::new().render(&cam, &Lighting::default(), &[floor]);
    let row = |y: usize| &frame.instance[y * 64..(y + 1) * 64];
    assert!(row(47).iter().all(|&id| id == 4), "bottom row shows the floor");
    assert!(row(0).iter().all(|&id| id == 0), "top row shows the wall");
    // The bottom row looks down 30°: depth = height / tan(30°) along the axis, up to a pixel's worth.
    let expected = 0.5 / (30f32 - 60.0 / 48.0 * 0.5).to_radians().tan();
    assert!((frame.depth[47 * 64 + 32] - expected).abs() < 0.01, "{}", frame.depth[47 * 64 + 32]);
}

#[test]
fn shared_edges_are_rasterized_once() {
    let p = |x: f32, y: f32| Fixed::new(Vec2::new(x, y)).unwrap();
    let (a, b, c, d) = (p(0.5, 0.5), p(6.5, 0.5), p(6.5, 6.5), p(0.5, 6.5));
    let mut hits = vec![0u8; 64];
    raster([a, b, c], 8, 8, |i, _, _, _| hits[i] += 1);
    raster([a, c, d], 8, 8, |i, _, _, _| hits[i] += 1);
    assert!(hits.iter().all(|&h| h <= 1), "{hits:?}");
    let covered = hits.iter().filter(|&&h| h == 1).count();
    // Centres 0.5..=6.5 on both axes: the top and left edges are in, the right and bottom edges out.
    assert_eq!(covered, 36);
    assert_eq!(hits[0], 1);
    assert_eq!(hits[3 * 8 + 3], 1, "a centre on the shared diagonal");
    assert_eq!(hits[6 * 8 + 6], 0, "the bottom-right corner");
}

#[test]
fn frames_of_any_size() {
    let mut renderer = Renderer::new();
    let mut frame = Frame::default();
    for (w, h) in [(1, 1), (7, 3), (3, 7), (224, 224)] {
        let cam = camera(Vec3::new(2.0, 0.0, 0.0), Vec3::ZERO, w, h);
        renderer.render_into(&cam, &Lighting::default(), &[cube(0.5, Vec3::ZERO, BOX)], &mut frame);
        assert_eq!((frame.width, frame.height), (w, h));
        assert_eq!(frame.rgb.len(), (w * h * 3) as usize);
        let centre = (h / 2 * w + w / 2) as usize;
        assert_eq!(frame.instance[centre], BOX, "{w}x{h}");
    }
}

#[test]
fn meshes_are_cached_per_shape() {
    let mut renderer = Renderer::new();
    let cam = camera(Vec3::new(2.0, 0.0, 0.0), Vec3::ZERO, 32, 32);
    let items = [cube(0.1, Vec3::ZERO, 1), cube(0.1, Vec3::Y * 0.3, 2), cube(0.2, Vec3::Y * -0.3, 3)];
    renderer.render(&cam, &Lighting::default(), &items);
    renderer.render(&cam, &Lighting::default(), &items);
    assert_eq!(renderer.cache.meshes.len(), 2);
}

#[test]
fn curved_meshes_are_closed_and_outward() {
    let shapes = [
        Shape::Sphere { radius: 0.1 },
        Shape::Capsule { radius: 0.05, half_height: 0.1 },
        Shape::Cylinder { radius: 0.05, half_height: 0.1 },
        Shape::Ellipsoid { radii: Vec3::new(0.05, 0.08, 0.1) },
        Shape::Box { half: Vec3::new(0.1, 0.2, 0.3) },
    ];
    for (shape, segments) in shapes.into_iter().flat_map(|s| LOD_SEGMENTS.map(|n| (s, n))) {
        let mesh = Mesh::of(&shape, segments);
        // Divergence theorem: the signed volume is positive only if every face winds outwards.
        let volume: f32 = mesh
            .triangles
            .iter()
            .map(|t| {
                let [a, b, c] = t.map(|i| mesh.positions[i as usize]);
                a.dot(b.cross(c)) / 6.0
            })
            .sum();
        let exact = match shape {
            Shape::Sphere { radius } => 4.0 / 3.0 * std::f32::consts::PI * radius.powi(3),
            Shape::Capsule { radius, half_height } => {
                std::f32::consts::PI * radius * radius * (2.0 * half_height + 4.0 / 3.0 * radius)
            }
            Shape::Cylinder { radius, half_height } => std::f32::consts::PI * radius * radius * 2.0 * half_height,
            Shape::Ellipsoid { radii } => 4.0 / 3.0 * std::f32::consts::PI * radii.x * radii.y * radii.z,
            Shape::Box { half } => 8.0 * half.x * half.y * half.z,
        };
        // Inscribed meshes: slightly smaller, converging with the number of segments.
        let low = 1.0 - 18.0 / (segments * segments) as f32;
        assert!(volume > low * exact && volume <= exact * 1.0001, "{shape:?}/{segments}: {volume} vs {exact}");
    }
}

/// A representative scene: a 12-link robot, a table, 5 task objects and 12 clutter objects.
fn bench_scene() -> Vec<Drawable> {
    let textured = |color: Vec3, pattern: Pattern| Material { color, specular: 0.3, pattern };
    let mut items = vec![Drawable {
        shape: Shape::Box { half: Vec3::new(0.6, 0.8, 0.02) },
        pose: Pose::from_translation(Vec3::new(0.5, 0.0, -0.02)),
        material: textured(Vec3::new(0.55, 0.42, 0.3), Pattern::Noise { scale: 0.05, amplitude: 0.15 }),
        instance: 1,
    }];
    for link in 0..12 {
        let t = link as f32 / 11.0;
        let at = Vec3::new(0.05 + 0.4 * t, 0.1 * (t * 3.0).sin(), 0.1 + 0.5 * (t * 3.1).sin());
        let shape = if link % 3 == 2 {
            Shape::Box { half: Vec3::new(0.04, 0.03, 0.05) }
        } else {
            Shape::Capsule { radius: 0.045, half_height: 0.08 }
        };
        let pose = Pose::new(at, Quat::from_rotation_y(0.4 * link as f32));
        items.push(Drawable { shape, pose, material: textured(Vec3::splat(0.85), Pattern::Plain), instance: 2 });
    }
    let shapes = [
        Shape::Box { half: Vec3::splat(0.025) },
        Shape::Cylinder { radius: 0.03, half_height: 0.05 },
        Shape::Sphere { radius: 0.035 },
        Shape::Ellipsoid { radii: Vec3::new(0.04, 0.03, 0.03) },
        Shape::Capsule { radius: 0.02, half_height: 0.04 },
    ];
    let patterns = [
        Pattern::Checker { cell: 0.02, contrast: 0.5 },
        Pattern::Stripes { period: 0.03, contrast: 0.5 },
        Pattern::Noise { scale: 0.015, amplitude: 0.4 },
    ];
    for i in 0..17 {
        let angle = i as f32 * 2.4;
        let at = Vec3::new(0.5 + 0.3 * angle.cos(), 0.45 * angle.sin(), 0.04);
        let color = Vec3::new(0.2 + 0.15 * (i % 5) as f32, 0.3 + 0.1 * (i % 3) as f32, 0.8 - 0.1 * (i % 4) as f32);
        items.push(Drawable {
            shape: shapes[i % 5],
            pose: Pose::new(at, Quat::from_rotation_z(angle)),
            material: textured(color, patterns[i % 3]),
            instance: 3 + i as u8,
        });
    }
    items
}

/// `cargo test --release -- --ignored --nocapture render_time`: the bench scene at 224x224 and 512x512,
/// reporting the mean over all frames and the best of 10 batches (robust to other load on the machine).
#[test]
#[ignore]
fn render_time() {
    let items = bench_scene();
    for size in [224, 512] {
        let cam = camera(Vec3::new(1.4, 0.0, 0.9), Vec3::new(0.45, 0.0, 0.1), size, size);
        let (lighting, mut renderer, mut frame) = (Lighting::default(), Renderer::new(), Frame::default());
        renderer.render_into(&cam, &lighting, &items, &mut frame);
        let mut batches = Vec::new();
        for _ in 0..10 {
            let start = std::time::Instant::now();
            for _ in 0..50 {
                renderer.render_into(&cam, &lighting, &items, &mut frame);
            }
            batches.push(start.elapsed().as_secs_f64() * 1e3 / 50.0);
        }
        let mean = batches.iter().sum::<f64>() / batches.len() as f64;
        let best = batches.iter().copied().fold(f64::MAX, f64::min);
        let triangles: usize =
            renderer.scene.items.iter().map(|g| renderer.cache.meshes[g.mesh].triangles.len()).sum();
        println!(
            "{} drawables, {triangles} triangles, {size}x{size}: mean {mean:.2} ms, best batch {best:.2} ms",
            items.len()
        );
    }
}
