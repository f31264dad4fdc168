//! `glue compare`: is one set of evaluations more successful than another?
//!
//! Pools the episodes of several `eval.json` files per side (e.g. one policy's four conditions, or its training
//! seeds), and tests the difference of the pooled success rates with the two-proportion z-test (pooled variance,
//! two-sided). Pooling treats every episode as independent: it covers evaluation noise, not the variance between
//! training seeds. This is how docs/results.md computes its pooled figures and p-values.
//!
//! When a side holds the evaluations of several training runs (distinct `checkpoint`s), the runs are also compared
//! as the unit: each run's pooled success rate is one sample, and Welch's t-test (unequal variances, two-sided)
//! asks whether the mean per-run rates differ; that test covers the variance between training seeds too.
//!
//! When the two sides evaluated the same scenes (each episode's task, condition and scene seed once per side, the
//! same set on both), the episodes also pair by scene, and the exact McNemar test asks whether the scenes only one
//! side solved lean to one side: the test for an intervention on one checkpoint (`glue eval --key-patches`,
//! `--force-visible`, ...), whose episodes share their scenes and their sampling noise.

use std::collections::BTreeMap;
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

/// Two evaluations of the same scenes, episode by episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paired {
    /// Scenes side a solved and side b did not.
    pub a_only: usize,
    /// Scenes side b solved and side a did not.
    pub b_only: usize,
    pub both: usize,
    pub neither: usize,
}

impl Paired {
    /// The episodes of `a` and `b` paired by scene (task, variant, strength, scene seed); `None` unless each scene
    /// occurs once per side and both sides hold the same scenes.
    pub fn of(a: &[EvalReport], b: &[EvalReport]) -> Option<Self> {
        type Scene = (String, String, u32, u64);
        let scenes = |side: &[EvalReport]| -> Option<BTreeMap<Scene, bool>> {
            let mut map = BTreeMap::new();
            for r in side {
                for e in &r.per_episode {
                    let scene = (r.task.clone(), r.variant.clone(), r.strength.to_bits(), e.seed);
                    if map.insert(scene, e.success).is_some() {
                        return None;
                    }
                }
            }
            Some(map)
        };
        let (sa, sb) = (scenes(a)?, scenes(b)?);
        if sa.is_empty() || !sa.keys().eq(sb.keys()) {
            return None;
        }
        let mut paired = Self { a_only: 0, b_only: 0, both: 0, neither: 0 };
        for (x, y) in sa.values().zip(sb.values()) {
            match (x, y) {
                (true, false) => paired.a_only += 1,
                (false, true) => paired.b_only += 1,
                (true, true) => paired.both += 1,
                (false, false) => paired.neither += 1,
            }
        }
        Some(paired)
    }

    /// The exact McNemar test's two-sided p: twice the binomial(`a_only + b_only`, 1/2) tail at the smaller count,
    /// at most 1.
    pub fn mcnemar_exact(&self) -> f64 {
        let n = self.a_only + self.b_only;
        let k = self.a_only.min(self.b_only);
        let ln_choose = |i: usize| ln_gamma(n as f64 + 1.0) - ln_gamma(i as f64 + 1.0) - ln_gamma((n - i) as f64 + 1.0);
        let tail: f64 = (0..=k).map(|i| (ln_choose(i) - n as f64 * std::f64::consts::LN_2).exp()).sum();
        (2.0 * tail).min(1.0)
    }
}

/// Each training run's evaluations pooled, a run being one checkpoint (`eval.json`'s `checkpoint`), by path.
pub fn runs(reports: &[EvalReport]) -> Vec<(String, usize, Pooled)> {
    let mut by_run: BTreeMap<&str, Vec<&EvalReport>> = BTreeMap::new();
    for r in reports {
        by_run.entry(r.checkpoint.as_str()).or_default().push(r);
    }
    by_run.into_iter().map(|(run, rs)| (run.to_string(), rs.len(), Pooled::of(rs))).collect()
}

/// Welch's t-test of the mean of `a` against the mean of `b` (unequal variances, Welch-Satterthwaite degrees of
/// freedom): `(t, df, two-sided p)`. `None` when a side has fewer than two values or neither side varies.
pub fn welch_t(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let mean_and_sq_error = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        (mean, variance / n)
    };
    let ((ma, sa), (mb, sb)) = (mean_and_sq_error(a), mean_and_sq_error(b));
    let se2 = sa + sb;
    if se2 == 0.0 {
        return None;
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (a.len() - 1) as f64 + sb * sb / (b.len() - 1) as f64);
    Some((t, df, student_t_two_sided(t, df)))
}

/// Two-sided p-value of Student's t with `df` degrees of freedom: `P(|T| >= |t|) = I_{df/(df+t²)}(df/2, 1/2)`.
fn student_t_two_sided(t: f64, df: f64) -> f64 {
    regularized_beta(df / (df + t * t), 0.5 * df, 0.5)
}

/// The regularized incomplete beta function `I_x(a, b)`, by its continued fraction (evaluated with the modified
/// Lentz method), taken directly where it converges fast (`x < (a+1)/(a+b+2)`) and through
/// `I_x(a, b) = 1 - I_{1-x}(b, a)` elsewhere.
fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction `1 / (1 + d1 / (1 + d2 / (1 + ...)))` of `I_x(a, b)`, with `d_{2m} = m (b - m) x /
/// ((a + 2m - 1)(a + 2m))` and `d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))`.
fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (mut c, mut d) = (1.0, 1.0 / guard(1.0 - (a + b) * x / (a + 1.0)));
    let mut fraction = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        for coefficient in [even, odd] {
            d = 1.0 / guard(1.0 + coefficient * d);
            c = guard(1.0 + coefficient / c);
            fraction *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-14 {
            break;
        }
    }
    fraction
}

/// `ln Γ(x)` by the Lanczos approximation (g = 7, nine coefficients; relative error about 1e-15), with the
/// reflection formula below 1/2.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin().abs()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let series = COEFFICIENTS[1..].iter().enumerate().fold(COEFFICIENTS[0], |sum, (i, c)| sum + c / (x + i as f64 + 1.0));
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
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
        "\na - b: {:+.1} points; two-proportion z-test (pooled variance): z = {z:.2}, two-sided p = {}",
        100.0 * (pa.rate() - pb.rate()),
        p_value(p)
    )?;
    if let Some(paired) = Paired::of(a, b) {
        writeln!(
            out,
            "paired by scene ({} scenes): a only {}, b only {}, both {}, neither {}; exact McNemar two-sided p = {}",
            paired.a_only + paired.b_only + paired.both + paired.neither,
            paired.a_only,
            paired.b_only,
            paired.both,
            paired.neither,
            p_value(paired.mcnemar_exact())
        )?;
    }
    let (runs_a, runs_b) = (runs(a), runs(b));
    if runs_a.len() > 1 || runs_b.len() > 1 {
        out.push_str("\n| side | run (checkpoint) | files | success | rate |\n|---|---|---|---|---|\n");
        for (name, side) in [("a", &runs_a), ("b", &runs_b)] {
            for (run, files, pooled) in side.iter() {
                let rate = 100.0 * pooled.rate();
                writeln!(out, "| {name} | {run} | {files} | {}/{} | {rate:.1}% |", pooled.successes, pooled.episodes)?;
            }
        }
        let rates = |side: &[(String, usize, Pooled)]| side.iter().map(|(_, _, p)| p.rate()).collect::<Vec<_>>();
        let (ra, rb) = (rates(&runs_a), rates(&runs_b));
        let side = |r: &[f64]| {
            let mean = 100.0 * r.iter().sum::<f64>() / r.len() as f64;
            let noun = if r.len() == 1 { "run" } else { "runs" };
            format!("{} {noun} (mean rate {mean:.1}%)", r.len())
        };
        write!(out, "\ntraining runs as the unit: a {}, b {}; ", side(&ra), side(&rb))?;
        match welch_t(&ra, &rb) {
            Some((t, df, p)) => {
                writeln!(out, "Welch's t-test on the per-run rates: t = {t:.2}, df = {df:.1}, two-sided p = {}", p_value(p))?
            }
            None => writeln!(out, "no test (it needs at least two runs per side, and some spread between them)")?,
        }
    }
    Ok(out)
}

/// A p-value to four decimals, or in scientific notation below 10^-4 (where four decimals would print 0).
fn p_value(p: f64) -> String {
    if p < 1e-4 { format!("{p:.1e}") } else { format!("{p:.4}") }
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
    fn student_t_matches_closed_forms_and_tables() {
        // df = 1: p = 1 - 2 atan|t| / pi; df = 2: p = 1 - |t| / sqrt(t² + 2).
        for t in [0.0, 0.5, 2.47, 10.0, -3.0] {
            let cauchy = 1.0 - 2.0 * f64::atan(f64::abs(t)) / std::f64::consts::PI;
            assert!((student_t_two_sided(t, 1.0) - cauchy).abs() < 1e-10, "df 1, t {t}");
            let two = 1.0 - f64::abs(t) / (t * t + 2.0).sqrt();
            assert!((student_t_two_sided(t, 2.0) - two).abs() < 1e-10, "df 2, t {t}");
        }
        // The 97.5% quantile at df = 4 is 2.776445; numerical integration of the density at the other two.
        for (t, df, want) in [(2.776_445_105, 4.0, 0.05), (2.0, 3.0, 0.139_325_969), (1.5, 7.5, 0.174_480_571)] {
            let p = student_t_two_sided(t, df);
            assert!((p - want).abs() < 1e-8, "t {t}, df {df}: p = {p}, expected {want}");
        }
        assert!((ln_gamma(0.5) - 0.5 * std::f64::consts::PI.ln()).abs() < 1e-13, "Γ(1/2) = sqrt(pi)");
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12, "Γ(10) = 9!");
    }

    #[test]
    fn welch_t_matches_a_hand_computation() {
        // means 0.485 and 0.365, variances 0.004075 and 0.001875 over three runs each: t = 0.12 / sqrt(0.0059 / 3),
        // df = (0.0059/3)² / ((0.004075/3)² / 2 + (0.001875/3)² / 2); p by numerical integration of the density.
        let (t, df, p) = welch_t(&[0.43, 0.47, 0.555], &[0.34, 0.415, 0.34]).unwrap();
        assert!((t - 2.694_532_279).abs() < 1e-8, "t = {t}");
        assert!((df - 3.518_916_568).abs() < 1e-8, "df = {df}");
        assert!((p - 0.062_398_365).abs() < 1e-8, "p = {p}");
        assert_eq!(welch_t(&[0.5], &[0.1, 0.2]), None, "one run on a side: no test");
        assert_eq!(welch_t(&[0.5, 0.5], &[0.5, 0.5]), None, "no spread: no test");
    }

    #[test]
    fn table_pools_episodes_and_compares_runs_as_the_unit() {
        let eval = |checkpoint: &str, successes: usize| {
            let mut report = crate::report::tests::report("push-button", "glue", "none", 15, successes);
            report.checkpoint = checkpoint.into();
            report
        };
        // Side a: two runs of two files each (43/100 and 47/100); side b: one run of two files.
        let a = [eval("a0", 20), eval("a0", 23), eval("a1", 25), eval("a1", 22)];
        let b = [eval("b0", 17), eval("b0", 17)];
        let out = table(&a, &b).unwrap();
        assert!(out.contains("| a | 4 | push-button | glue | 90/200 | 45.0% |"), "{out}");
        assert!(out.contains("| a | a0 | 2 | 43/100 | 43.0% |") && out.contains("| a | a1 | 2 | 47/100 | 47.0% |"), "{out}");
        assert!(out.contains("a 2 runs (mean rate 45.0%), b 1 run (mean rate 34.0%); no test"), "{out}");
        let b = [eval("b0", 17), eval("b1", 20)];
        let out = table(&a, &b).unwrap();
        let (t, df, p) = welch_t(&[0.43, 0.47], &[0.34, 0.40]).unwrap();
        let line = format!("t = {t:.2}, df = {df:.1}, two-sided p = {p:.4}");
        assert!(out.contains(&line), "{out}");
        let single = table(&[eval("a0", 20)], &[eval("b0", 10)]).unwrap();
        assert!(!single.contains("training runs as the unit"), "one run per side: the episode test only\n{single}");
    }

    /// Reference values: 15 / 1 discordant pairs give 2 (1 + 16) / 2^16; 14 / 2 give 2 (1 + 16 + 120) / 2^16;
    /// balanced or no discordant pairs give 1.
    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        let p = |a_only, b_only| Paired { a_only, b_only, both: 0, neither: 0 }.mcnemar_exact();
        assert!((p(15, 1) - 34.0 / 65536.0).abs() < 1e-12, "{}", p(15, 1));
        assert!((p(2, 14) - 274.0 / 65536.0).abs() < 1e-12, "{}", p(2, 14));
        assert!((p(29, 0) - 2.0f64.powi(-28)).abs() < 1e-18, "{}", p(29, 0));
        assert_eq!(p(3, 4), 1.0);
        assert_eq!(p(0, 0), 1.0);
        assert_eq!(p_value(p(23, 0)), "2.4e-7", "a tiny p is not printed as 0");
        assert_eq!(p_value(0.0042), "0.0042");
    }

    /// Episodes pair by scene seed within one cell, the McNemar line appears only then, and sides with other scenes
    /// or a scene twice (two training runs on the same seeds) do not pair.
    #[test]
    fn evaluations_of_the_same_scenes_pair_by_seed() {
        let eval = |outcomes: &[bool], seed_start: u64| {
            let mut report = crate::report::tests::report("place-fruit", "glue", "none", 15, outcomes.iter().filter(|&&s| s).count());
            report.episodes = outcomes.len();
            report.per_episode = outcomes
                .iter()
                .enumerate()
                .map(|(i, &success)| crate::eval::EpisodeResult {
                    seed: seed_start + i as u64,
                    success,
                    ticks: 1,
                    invalid_actions: 0,
                    grasped: None,
                    held_at_end: None,
                    place_error_m: None,
                    first_close: None,
                    first_close_m: None,
                })
                .collect();
            report
        };
        let a = eval(&[true, true, false, true, false], 1000);
        let b = eval(&[false, true, true, false, false], 1000);
        let paired = Paired::of(std::slice::from_ref(&a), std::slice::from_ref(&b)).unwrap();
        assert_eq!(paired, Paired { a_only: 2, b_only: 1, both: 1, neither: 1 });
        let out = table(std::slice::from_ref(&a), std::slice::from_ref(&b)).unwrap();
        assert!(out.contains("paired by scene (5 scenes): a only 2, b only 1, both 1, neither 1; exact McNemar two-sided p = 1.0000"), "{out}");
        let other_seeds = eval(&[false, true, true, false, false], 2000);
        assert_eq!(Paired::of(std::slice::from_ref(&a), std::slice::from_ref(&other_seeds)), None);
        assert!(!table(std::slice::from_ref(&a), &[other_seeds]).unwrap().contains("paired"));
        assert_eq!(Paired::of(&[a.clone(), a.clone()], &[b.clone(), b.clone()]), None, "a scene twice on a side");
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
