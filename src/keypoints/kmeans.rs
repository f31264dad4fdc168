//! Seeded K-means: k-means++ initialisation, then Lloyd iterations.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The result of [`kmeans`]: `k` centres (`k x dim`, row-major) and each point's cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    pub centres: Vec<f32>,
    pub assignments: Vec<usize>,
    pub dim: usize,
    /// Lloyd iterations run.
    pub iterations: usize,
}

impl KMeans {
    pub fn k(&self) -> usize {
        self.centres.len() / self.dim
    }

    pub fn centre(&self, j: usize) -> &[f32] {
        &self.centres[j * self.dim..(j + 1) * self.dim]
    }
}

pub(super) fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index of the centre nearest to `p` (ties to the lower index) and the squared distance.
pub(super) fn nearest(p: &[f32], centres: &[f32], dim: usize) -> (usize, f32) {
    centres
        .chunks_exact(dim)
        .map(|c| dist2(p, c))
        .enumerate()
        .fold((0, f32::INFINITY), |best, (j, d)| if d < best.1 { (j, d) } else { best })
}

/// K-means of `n = points.len() / dim` points (row-major) into `k` clusters (`1 <= k <= n`): k-means++
/// initialisation (first centre uniform, each further one drawn with probability proportional to the squared
/// distance to the nearest chosen centre) from a `ChaCha8` stream seeded with `seed`, then Lloyd iterations
/// until no assignment changes or `max_iterations`. A cluster left empty is moved onto the point farthest from
/// its centre. Deterministic for a given input and seed; the returned assignments are each point's nearest
/// centre.
pub fn kmeans(points: &[f32], dim: usize, k: usize, seed: u64, max_iterations: usize) -> KMeans {
    assert!(dim > 0 && points.len() % dim == 0, "kmeans: {} values are not rows of {dim}", points.len());
    let n = points.len() / dim;
    assert!(k >= 1 && k <= n, "kmeans: k = {k} needs 1..={n}");
    let point = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // k-means++.
    let first = rng.random_range(0..n);
    let mut centres: Vec<f32> = point(first).to_vec();
    let mut chosen = vec![false; n];
    chosen[first] = true;
    let mut d2: Vec<f64> = (0..n).map(|i| f64::from(dist2(point(i), point(first)))).collect();
    for _ in 1..k {
        let total: f64 = d2.iter().sum();
        let next = if total > 0.0 {
            let mut u = rng.random_range(0.0..total);
            let mut pick = (0..n).rev().find(|&i| d2[i] > 0.0).expect("a positive distance");
            for (i, &d) in d2.iter().enumerate().filter(|(_, d)| **d > 0.0) {
                if u < d {
                    pick = i;
                    break;
                }
                u -= d;
            }
            pick
        } else {
            // Every point coincides with a centre: any point not chosen yet.
            let free: Vec<usize> = (0..n).filter(|&i| !chosen[i]).collect();
            free[rng.random_range(0..free.len())]
        };
        chosen[next] = true;
        centres.extend_from_slice(point(next));
        for (i, d) in d2.iter_mut().enumerate() {
            *d = d.min(f64::from(dist2(point(i), point(next))));
        }
    }

    // Lloyd.
    let mut assignments = vec![usize::MAX; n];
    let mut iterations = 0;
    loop {
        iterations += 1;
        let mut changed = false;
        for (i, a) in assignments.iter_mut().enumerate() {
            let (j, _) = nearest(point(i), &centres, dim);
            changed |= *a != j;
            *a = j;
        }
        if !changed || iterations >= max_iterations.max(1) {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assignments.iter().enumerate() {
            counts[a] += 1;
            for (s, &v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(point(i)) {
                *s += f64::from(v);
            }
        }
        let mut spread: Option<Vec<f32>> = None;
        for j in 0..k {
            if counts[j] > 0 {
                for (c, s) in centres[j * dim..(j + 1) * dim].iter_mut().zip(&sums[j * dim..(j + 1) * dim]) {
                    *c = (s / counts[j] as f64) as f32;
                }
            } else {
                // Empty: move onto the point farthest from its (old) centre.
                let spread = spread.get_or_insert_with(|| {
                    (0..n)
                        .map(|i| dist2(point(i), &centres[assignments[i] * dim..(assignments[i] + 1) * dim]))
                        .collect()
                });
                let far = (0..n).fold(0, |b, i| if spread[i] > spread[b] { i } else { b });
                spread[far] = 0.0;
                centres[j * dim..(j + 1) * dim].copy_from_slice(point(far));
            }
        }
    }
    KMeans { centres, assignments, dim, iterations }
}
