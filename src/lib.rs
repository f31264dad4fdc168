//! GLUE (global-local unified encoding via key-patch tracking) on dora-rs: the library behind the `glue` CLI
//! and the dora nodes. The library never imports dora; `nodes/*` adapt it to the dataflow.
//!
//! Dependency direction: `msg` imports nothing of ours; `recording` and `viz` build on `msg`; `sim` on `msg`;
//! `collect` and `bench` tie the simulator to recordings; `pretrain` trains the frozen local
//! encoder (`vit`) on simulator frames; `keypoints` extracts the first frame's keypoints with it; `track` (point
//! tracking, sec. III-B) scores itself against `sim`'s oracle tracks.

pub mod annotate;
pub mod arm;
pub mod bench;
pub mod camera;
pub mod collect;
pub mod compare;
pub mod curve;
pub mod dataflow;
pub mod device;
pub mod diffusion;
pub mod eval;
pub mod fusion;
pub mod ground;
pub mod keypoints;
pub mod losses;
pub mod model_bench;
pub mod msg;
pub mod plot;
pub mod policy;
pub mod pretrain;
pub mod recording;
pub mod report;
pub mod resnet;
pub mod sim;
pub mod stats;
pub mod teleop;
pub mod track;
pub mod train;
pub mod unet;
pub mod viz;
pub mod vit;
