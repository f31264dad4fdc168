//! Point tracking (paper sec. III-B, "Real-Time Key Points Tracking"): a pyramidal Lucas-Kanade tracker (KLT)
//! with per-point visibility, occlusion handling and re-acquisition.
//!
//! The paper tracks its one-time keypoints with an off-the-shelf learned tracker (CoTracker) that returns, for
//! every frame, each query point's pixel and a visibility flag. [`KltTracker`] produces the same output — `N`
//! rows of `[x, y, visible]` (visible is exactly 1.0 or 0.0), the [`crate::msg::Keypoints`] convention — with a
//! classical tracker that runs at over a thousand frames per second on one CPU core (`glue track --bench`). Both sit behind the
//! [`PointTracker`] trait (`track(&mut self, frame) -> Vec<[f32; 3]>`), so a CoTracker3 port (online mode, one
//! frame in, N tracks out) can later replace it without touching the callers.
//!
//! # Algorithm
//!
//! Every frame is converted to grayscale (`0.299 R + 0.587 G + 0.114 B`, 0..255 as `f32`), and an image
//! pyramid is built once per frame ([`KltConfig::levels`] levels, each a `[1 4 6 4 1]/16` blur decimated by 2;
//! 224 → 112 → 56 px by default) with Scharr gradients (`[3 10 3] ⊗ [-1 0 1] / 32`) at every level. The
//! pyramid of the previous frame is kept, so each frame's pyramid is built exactly once, into reused buffers.
//!
//! A visible point is tracked from frame t to t+1 coarse to fine (Bouguet's pyramidal LK): at each level the
//! `(2r+1)²` window around the point in frame t ([`KltConfig::window_radius`], 15x15 by default) gives the
//! template, its gradients and the 2x2 structure tensor `G`; Gauss-Newton steps `δ = G⁻¹ Σ (I − J) ∇I` move
//! the window in frame t+1 until `|δ|` < [`KltConfig::epsilon`] or [`KltConfig::max_iterations`]; the
//! displacement, doubled, seeds the next finer level. `I − J` is taken with both windows' means removed, which
//! makes the solve insensitive to brightness offsets (the lighting OOD condition). All sampling is bilinear;
//! because the window offsets are integers, the four bilinear weights are computed once per window. The first
//! guess is the point's last position plus its last velocity. A level-0 window whose smaller eigenvalue of
//! `G` (per pixel) is below [`KltConfig::min_eigenvalue`] has no usable texture and the track fails.
//!
//! # Visibility
//!
//! A tracked point stays visible only when all of these hold:
//! 1. the LK solve succeeded and landed inside the image;
//! 2. forward-backward: tracking the new position back from t+1 to t returns within
//!    [`KltConfig::fb_threshold`] px of where it started;
//! 3. appearance: the normalised cross-correlation (NCC) between the `(2r+1)²` patch at the new position
//!    ([`KltConfig::template_radius`]) and the point's *first-frame* template is at least
//!    [`KltConfig::ncc_keep`]. The NCC is Gaussian-weighted ([`KltConfig::template_sigma`]) so that the patch
//!    centre counts most, which tolerates the rotation and scale changes a fixed template sees over time. NCC
//!    ignores gain and offset, so lighting changes pass while an occluder does not; but a patch whose mean
//!    brightness differs from the template's by more than a factor [`KltConfig::max_gain`] fails (a dark object
//!    is not a bright one with a similar pattern). A flat patch (weighted standard deviation below
//!    [`KltConfig::min_texture`]) only matches a flat template of similar brightness (within
//!    [`KltConfig::flat_tolerance`] grey levels): a flat-colour occluder fails every textured template. A faint
//!    template (a plain surface, below `min_texture`) against a textured patch is judged by the NCC like any
//!    other: uneven light (a coloured spot moving over a plain plate) gives a plain surface texture, and failing
//!    that case outright flagged such points lost while they were in view (measured in docs/results.md, "the
//!    tracker's flat-template rule"); an all-flat template has no pattern and scores 0.
//!
//! Otherwise the point becomes *lost* (visible = 0): it keeps a predicted position, its last position plus its
//! last velocity, the velocity damped by [`KltConfig::damping`] every frame, so an occluded point coasts along
//! and stops. The first-frame template is never updated, so a track cannot drift onto an occluder.
//!
//! # Re-acquisition
//!
//! In every frame, a lost point (including a visible one whose checks just failed) is searched for around its
//! prediction. The search radius starts at [`KltConfig::search_radius`] plus [`KltConfig::search_speed_gain`]
//! times the point's speed when it was lost and grows by [`KltConfig::search_growth`] px per lost frame; it is
//! capped per point at half the distance to the nearest look-alike of its template in the first frame (a local
//! NCC maximum reaching `ncc_keep` 3 px or more away, looked for within [`KltConfig::max_search_radius`]), so a
//! point on a repeated texture or a straight edge is only searched for where it cannot be confused. Small radii
//! are deliberate: objects rarely move while hidden, and on the simulator the wide searches found shadow edges
//! and robot parts more often than the point. The search matches the template exhaustively on pyramid level 1
//! (half the template radius, integer positions) and keeps its three best local maxima; these and the
//! prediction itself are refined at full resolution (NCC hill-climbing in 1 px steps, then pyramidal LK from the
//! point's first-frame position in the first frame for the sub-pixel position). The point is re-acquired
//! (visible again, velocity reset) when the best NCC reaches [`KltConfig::ncc_reacquire`] (above `ncc_keep`:
//! hysteresis against flickering on an occluder's edge) and no other candidate 3 px or more away comes within
//! [`KltConfig::ambiguity_margin`] of it. [`KltTracker::diagnostics`] reports each point's checks.
//!
//! Point indices never change: every frame returns exactly the `N` points given at construction, in order.
//! Everything is deterministic (no randomness, no threads).

mod bench;
mod files;
mod klt;
mod pyramid;
mod sim_eval;
pub mod synthetic;

pub use bench::{BenchReport, bench};
pub use files::{TracksFile, list_frames, parse_points, read_points, track_files};
pub use klt::{FrameView, KltConfig, KltTracker, PointDiagnostics, PointTracker, track_sequence};
pub use sim_eval::{SimEvalRow, evaluate_on_sim, sim_eval_table};
