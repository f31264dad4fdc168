//! `glue compare`: is one set of evaluations more successful than another?
//!
//! Pools the episodes of several `eval.json` files per side (e.g. one policy's four conditions, or its training
//! seeds), and tests the difference of the pooled success rates with the two-proportion z-test (pooled variance,
//! two-sided). Pooling treats every episode as independent: it covers evaluation noise, not the variance between
//! training seeds. This is how docs/results.md computes its pooled figures and p-values.

use std::fmt::Write as _;
use std::path::PathBuf;

use eyre::{Result, ensure};

use crate::eval::{EvalReport, wilson_95};

/// The episodes of one side, pooled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pooled {
    pub successes: usize,
    pub episodes: usize,
}

impl Pooled {
    pub fn of<'a>(reports: impl IntoIterator<Item = &'a EvalReport>) -> Self {
        reports.into_iter().fold(Self { successes: 0, episodes: 0 }, |sum, r| Self {
            successes: sum.successes + r.successes,
            episodes: sum.episodes + r.episodes,
        })
    }

    pub fn rate(&self) -> f64 {
        self.successes as f64 / self.episodes as f64
    }

    /// The 95% Wilson score interval of the pooled rate.
    pub fn wilson_95(&self) -> [f64; 2] {
        wilson_95(self.successes, self.episodes)
    }
}

/// The two-proportion z-test of `a` against `b` with the pooled variance: `(z, two-sided p)`. `z > 0` when `a`'s
/// rate is higher; `z = 0, p = 1` when both sides are all successes or all failures (no variance to test against).
pub fn two_proportion_z(a: Pooled, b: Pooled) -> (f64, f64) {
    let (n1, n2) = (a.episodes as f64, b.episodes as f64);
    let p = (a.successes + b.successes) as f64 / (n1 + n2);
    let se = (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return (0.0, 1.0);
    }
    let z = (a.rate() - b.rate()) / se;
    (z, erfc(z.abs() / std::f64::consts::SQRT_2))
}

/// The complementary error function by the Chebyshev fit of Numerical Recipes' `erfcc` (fractional error under
/// 1.2e-7 everywhere): enough for p-values.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The comparison as a table: each side's pooled success with its 95% Wilson interval, then the test.
pub fn table(a: &[EvalReport], b: &[EvalReport]) -> Result<String> {
    ensure!(!a.is_empty() && !b.is_empty(), "--a and --b: expected at least one eval.json each");
    let (pa, pb) = (Pooled::of(a), Pooled::of(b));
    let mut out = String::from("| side | files | tasks | policies | success | rate | 95% Wilson |\n|---|---|---|---|---|---|---|\n");
    for (name, reports, pooled) in [("a", a, pa), ("b", b, pb)] {
        let [lo, hi] = pooled.wilson_95();
        writeln!(
            out,
            "| {name} | {} | {} | {} | {}/{} | {:.1}% | {:.1}-{:.1}% |",
            reports.len(),
            distinct(reports, |r| &r.task),
            distinct(reports, |r| &r.policy),
            pooled.successes,
            pooled.episodes,
            100.0 * pooled.rate(),
            100.0 * lo,
            100.0 * hi
        )?;
    }
    let (z, p) = two_proportion_z(pa, pb);
    writeln!(
        out,
        "\na - b: {:+.1} points; two-proportion z-test (pooled variance): z = {z:.2}, two-sided p = {p:.4}",
        100.0 * (pa.rate() - pb.rate())
    )?;
    Ok(out)
}

fn distinct(reports: &[EvalReport], field: impl Fn(&EvalReport) -> &String) -> String {
    let mut names: Vec<&str> = reports.iter().map(|r| field(r).as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

/// `glue compare`'s whole job: read both sides and print the table.
pub fn run(a: &[PathBuf], b: &[PathBuf]) -> Result<String> {
    let read_all = |paths: &[PathBuf]| paths.iter().map(|p| EvalReport::read(p)).collect::<Result<Vec<_>>>();
    table(&read_all(a)?, &read_all(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(successes: usize, episodes: usize) -> Pooled {
        Pooled { successes, episodes }
    }

    #[test]
    fn erfc_matches_reference_values() {
        // erfc(0) = 1, erfc(1) = 0.157299207..., erfc(1.959964 / sqrt 2) = 0.0500000..., erfc(-1) = 1.842700792...
        for (x, want) in [(0.0, 1.0), (1.0, 0.157_299_207), (1.959_964 / std::f64::consts::SQRT_2, 0.05), (-1.0, 1.842_700_793)] {
            assert!((erfc(x) - want).abs() < 2e-7, "erfc({x}) = {}, expected {want}", erfc(x));
        }
    }

    #[test]
    fn z_test_matches_the_textbook_formula() {
        // 58/400 against 103/400: p = 161/800, se = sqrt(p (1-p) 2/400), z = -0.1125 / se = -3.9682..., p = 7.2416e-5
        let (z, p) = two_proportion_z(pooled(58, 400), pooled(103, 400));
        assert!((z + 3.968_2).abs() < 1e-4, "z = {z}");
        assert!((p - 7.2416e-5).abs() < 1e-8, "p = {p}");
        let (z, p) = two_proportion_z(pooled(103, 400), pooled(58, 400));
        assert!((z - 3.968_2).abs() < 1e-4 && (p - 7.2416e-5).abs() < 1e-8, "the test is symmetric: z = {z}, p = {p}");
        assert_eq!(two_proportion_z(pooled(0, 50), pooled(0, 50)), (0.0, 1.0), "no successes anywhere: nothing to test");
    }

    #[test]
    fn bad_eval_files_are_errors_that_name_the_field() {
        let dir = std::env::temp_dir().join(format!("glue-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = EvalReport::read(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("eval.json"), "{err:#}");
        std::fs::write(dir.join("eval.json"), "{\"episodes\": 3}").unwrap();
        assert!(format!("{:#}", EvalReport::read(&dir).unwrap_err()).contains("bad eval.json"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(table(&[], &[]).is_err(), "empty sides are an error");
    }
}
