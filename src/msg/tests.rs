use std::fmt;

use arrow::array::{Array, Float32Array, Int32Array, StringArray, UInt8Array, new_null_array};
use proptest::prelude::*;

use super::*;

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
