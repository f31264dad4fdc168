//! The [`Grounder`]s that stand in for the detector + segmenter of eq. (1): the simulator's oracle and
//! operator-drawn boxes.

use eyre::{bail, ensure, eyre};
use image::RgbImage;

use super::{Grounder, Mask};
use crate::msg::ObjectInfo;
use crate::recording::Episode;

/// An **oracle** grounder: resolves text queries against the simulator's named task objects and returns their
/// ground-truth instance masks from the segmentation image of the same frame. It stands in for the detector +
/// segmenter of eq. (1) in simulation; it never looks at the image's pixels.
///
/// Matching, on names lower-cased with `_`, `-` and punctuation read as spaces: an object whose name equals
/// the query; else the single object whose name contains every word of the query ("button" would match "red
/// button" and "button base": ambiguous, an error); else an error listing the available objects.
#[derive(Clone, Debug)]
pub struct OracleGrounder {
    objects: Vec<ObjectInfo>,
    width: u32,
    height: u32,
    segmentation: Vec<u8>,
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

impl OracleGrounder {
    /// The task objects and the frame's instance segmentation (`width · height` ids, row-major).
    pub fn new(objects: Vec<ObjectInfo>, width: u32, height: u32, segmentation: Vec<u8>) -> eyre::Result<Self> {
        ensure!(
            segmentation.len() as u64 == u64::from(width) * u64::from(height),
            "oracle grounder: expected a {width}x{height} segmentation, got {} ids",
            segmentation.len()
        );
        Ok(Self { objects, width, height, segmentation })
    }

    /// The objects of a recorded episode and the segmentation of its first tick (recorded with segmentation).
    pub fn from_episode(episode: &Episode) -> eyre::Result<Self> {
        let info = &episode.info;
        let tick = episode.ticks.first().ok_or_else(|| eyre!("oracle grounder: the episode has no ticks"))?;
        let segmentation = tick.segmentation.clone().ok_or_else(|| {
            eyre!("oracle grounder: the episode's first tick has no segmentation (record with segmentation)")
        })?;
        ensure!(!info.objects.is_empty(), "oracle grounder: the episode lists no task objects");
        Self::new(info.objects.clone(), info.width, info.height, segmentation)
    }

    pub fn objects(&self) -> &[ObjectInfo] {
        &self.objects
    }

    fn available(&self) -> String {
        let names: Vec<String> =
            self.objects.iter().map(|o| format!("`{}` (instance {})", o.name, o.instance)).collect();
        names.join(", ")
    }

    /// The task object a query names (see the type's doc for the matching rules).
    pub fn resolve(&self, query: &str) -> eyre::Result<&ObjectInfo> {
        let q = words(query);
        ensure!(!q.is_empty(), "oracle grounder: empty text query; available objects: {}", self.available());
        if let Some(object) = self.objects.iter().find(|o| words(&o.name) == q) {
            return Ok(object);
        }
        let matches: Vec<&ObjectInfo> = self
            .objects
            .iter()
            .filter(|o| {
                let name = words(&o.name);
                q.iter().all(|w| name.contains(w))
            })
            .collect();
        match matches.as_slice() {
            [object] => Ok(object),
            [] => bail!("oracle grounder: no task object matches `{query}`; available objects: {}", self.available()),
            many => {
                let names: Vec<String> = many.iter().map(|o| format!("`{}`", o.name)).collect();
                bail!(
                    "oracle grounder: `{query}` is ambiguous, it matches {}; available objects: {}",
                    names.join(" and "),
                    self.available()
                )
            }
        }
    }
}

impl Grounder for OracleGrounder {
    fn ground(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<Vec<Mask>> {
        ensure!(
            image.dimensions() == (self.width, self.height),
            "oracle grounder: image is {}x{} but the segmentation is {}x{}",
            image.width(),
            image.height(),
            self.width,
            self.height
        );
        ensure!(!queries.is_empty(), "oracle grounder: no text queries");
        queries
            .iter()
            .map(|query| {
                let object = self.resolve(query)?;
                Mask::from_instance(self.width, self.height, &self.segmentation, object.instance)
            })
            .collect()
    }
}

/// Operator-drawn boxes, one per text query in query order, as the masks of eq. (1): the stand-in on the real
/// robot until the open-vocabulary detector + segmenter implement [`Grounder`] (the `grounding` node's `BOXES`
/// setting). The operator reads the boxes off a camera frame of the set-up scene; each mask is its whole box, so
/// K-means may put keypoints on background inside it: draw boxes tight.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxGrounder {
    /// `[x0, y0, x1, y1]` in pixels, x0 < x1 and y0 < y1, one per query.
    boxes: Vec<[u32; 4]>,
}

impl BoxGrounder {
    /// Parses `x0,y0,x1,y1;x0,y0,x1,y1;...` (pixels, one box per text query).
    pub fn parse(text: &str) -> eyre::Result<Self> {
        let boxes = text
            .split(';')
            .map(|b| {
                let v: Vec<u32> = b.split(',').map(|s| s.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|e| {
                    eyre!("boxes: `{b}`: expected x0,y0,x1,y1 as whole pixels ({e}); boxes are separated by `;`")
                })?;
                let [x0, y0, x1, y1] = v[..] else { bail!("boxes: `{b}`: expected 4 numbers x0,y0,x1,y1, got {}", v.len()) };
                ensure!(x0 < x1 && y0 < y1, "boxes: `{b}`: expected x0 < x1 and y0 < y1");
                Ok([x0, y0, x1, y1])
            })
            .collect::<eyre::Result<_>>()?;
        Ok(Self { boxes })
    }
}

impl Grounder for BoxGrounder {
    fn ground(&self, image: &RgbImage, queries: &[String]) -> eyre::Result<Vec<Mask>> {
        ensure!(
            queries.len() == self.boxes.len(),
            "box grounder: {} text queries ({queries:?}) but {} boxes; give one box per query, in query order",
            queries.len(),
            self.boxes.len()
        );
        let (w, h) = image.dimensions();
        self.boxes
            .iter()
            .map(|&[x0, y0, x1, y1]| {
                ensure!(x1 <= w && y1 <= h, "box grounder: box {x0},{y0},{x1},{y1} reaches outside the {w}x{h} image");
                Ok(Mask::from_fn(w, h, |x, y| (x0..x1).contains(&x) && (y0..y1).contains(&y)))
            })
            .collect()
    }
}
