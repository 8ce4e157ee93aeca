//! Search methods as ask/tell state machines over batches (docs/tuning.md, "Methods").
//!
//! A method proposes a batch of [`Request`]s, the driver runs the whole batch (in
//! parallel) and tells the method every outcome in proposal order. A method never sees
//! completion order, and batch sizes are part of its configuration, never the thread
//! count: that is what makes a search bit-identical whatever `parallel` is.

mod bo;
mod grid;
mod halving;
mod pbt;
mod random;

use crate::space::{Point, Space};
use crate::Error;
use serde::{Deserialize, Serialize};

/// What a method is told about the runner and the budget.
pub struct Ctx<'a> {
    /// The space.
    pub space: &'a Space,
    /// Rounds of a full-length trial.
    pub max_rounds: u32,
    /// The budget in client-epochs.
    pub budget: f64,
    /// Number of seeds each configuration is evaluated on.
    pub seeds: usize,
    /// Whether the runner continues trials from their state (promotions then cost only
    /// the extra rounds; otherwise they are re-run from round 0 and charged in full).
    pub can_continue: bool,
    /// Nominal client-epochs per round of a point, summed over the seeds.
    pub round_cost: &'a dyn Fn(&Point) -> Result<f64, Error>,
}

impl Ctx<'_> {
    /// Nominal cost of running `point` up to `rounds`, having `done` rounds already.
    pub fn cost(&self, point: &Point, done: u32, rounds: u32) -> Result<f64, Error> {
        let per_round = (self.round_cost)(point)?;
        let run = if self.can_continue {
            rounds.saturating_sub(done)
        } else {
            rounds
        };
        Ok(per_round * run as f64)
    }
}

/// One configuration to train (on every seed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    /// The line of training this extends (one per configuration; PBT members keep
    /// theirs when they copy another's state).
    pub lineage: usize,
    /// The configuration.
    pub point: Point,
    /// Rounds at the end of this request, counted from the lineage's start.
    pub rounds: u32,
    /// Continue from the current state of this lineage (`None`: start afresh).
    pub from: Option<usize>,
    /// What this request is, e.g. `rung 2/3 (bracket 1)` or `generation 4`.
    pub label: String,
    /// Whether its outcome is a candidate for the final choice (full length).
    pub last: bool,
}

/// A request's result, as a method sees it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The request.
    pub request: Request,
    /// Mean objective over the seeds, oriented so that higher is better; `None` when
    /// a seed failed.
    pub score: Option<f64>,
}

/// What a method plans to spend, before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Nominal client-epochs.
    pub cost: f64,
    /// `true`: the plan is fixed by the method's settings (a grid, a bracket, a
    /// population), and a plan over the budget is refused; `false`: the method sized
    /// itself to the budget.
    pub fixed: bool,
    /// One line, e.g. `grid of 5 points × 3 seeds × 20 rounds`.
    pub description: String,
}

/// A search method.
pub trait Method {
    /// Sizes the search (to the budget where the method allows) and says what it will cost.
    fn plan(&mut self, ctx: &Ctx) -> Result<Plan, Error>;
    /// The next batch, or `None` when done.
    fn next(&mut self, ctx: &Ctx) -> Result<Option<Vec<Request>>, Error>;
    /// The outcomes of the last batch, in its order (a truncated batch gives a prefix).
    fn tell(&mut self, outcomes: &[Outcome]);
    /// Whether it needs [`crate::TrialRunner::can_continue`] (a point that changes mid-line).
    fn needs_continue(&self) -> bool {
        false
    }
}

/// The `[method]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MethodConfig {
    /// Every grid point, full length.
    Grid,
    /// Points drawn from the prior, full length.
    Random {
        /// Trials (default: as many as the budget allows).
        #[serde(default)]
        trials: Option<usize>,
    },
    /// Successive halving: `trials` configurations at the smallest rung, the best 1/η
    /// promoted to η times the resource, up to full length.
    Halving {
        /// Reduction factor η (default 3).
        #[serde(default = "default_eta")]
        eta: f64,
        /// Smallest rung in rounds (default max_rounds / η², at least 1).
        #[serde(default)]
        min_rounds: Option<u32>,
        /// Rungs in client-epochs per trial instead of rounds: the smallest rung.
        #[serde(default)]
        min_epochs: Option<f64>,
        /// With `min_epochs`: the largest rung (full length), in client-epochs per trial.
        #[serde(default)]
        max_epochs: Option<f64>,
        /// Configurations at the first rung (default: as many as the budget allows).
        #[serde(default)]
        trials: Option<usize>,
    },
    /// Hyperband: successive halving over brackets that trade the number of
    /// configurations against the smallest rung.
    Hyperband {
        /// Reduction factor η (default 3).
        #[serde(default = "default_eta")]
        eta: f64,
        /// Smallest rung in rounds (default max_rounds / η², at least 1).
        #[serde(default)]
        min_rounds: Option<u32>,
        /// Rungs in client-epochs per trial instead of rounds: the smallest rung.
        #[serde(default)]
        min_epochs: Option<f64>,
        /// With `min_epochs`: the largest rung, in client-epochs per trial.
        #[serde(default)]
        max_epochs: Option<f64>,
        /// Passes over all brackets (default: as many as the budget allows).
        #[serde(default)]
        iterations: Option<usize>,
    },
    /// Bayesian optimisation: a Gaussian-process surrogate (Matérn 5/2) and expected
    /// improvement.
    Bo {
        /// Random points before the surrogate is used (default 5).
        #[serde(default = "default_initial")]
        initial: usize,
        /// Trials in all (default: as many as the budget allows).
        #[serde(default)]
        trials: Option<usize>,
        /// Points proposed per batch (kriging believer; default 1).
        #[serde(default = "one")]
        batch: usize,
        /// Random candidates scored per proposal (default 2000).
        #[serde(default = "default_candidates")]
        candidates: usize,
        /// Exploration margin ξ of expected improvement, in standardised units (default 0.01).
        #[serde(default = "default_xi")]
        xi: f64,
    },
    /// Population-based training: members train `interval` rounds, then the worst
    /// `fraction` copy the state and configuration of a member of the best `fraction`
    /// and perturb it.
    Pbt {
        /// Members (default 8).
        #[serde(default = "default_population")]
        population: usize,
        /// Rounds between exploit/explore steps (default 5).
        #[serde(default = "default_interval")]
        interval: u32,
        /// Fraction replaced each step, and fraction copied from (default 0.25).
        #[serde(default = "default_fraction")]
        fraction: f64,
        /// Relative perturbation of a copied configuration (default 0.2: ×0.8 or ×1.2).
        #[serde(default = "default_perturb")]
        perturb: f64,
        /// Probability of drawing a parameter anew instead (default 0.25).
        #[serde(default = "default_fraction")]
        resample: f64,
    },
}

fn default_eta() -> f64 {
    3.0
}
fn default_initial() -> usize {
    5
}
fn one() -> usize {
    1
}
fn default_candidates() -> usize {
    2000
}
fn default_xi() -> f64 {
    0.01
}
fn default_population() -> usize {
    8
}
fn default_interval() -> u32 {
    5
}
fn default_fraction() -> f64 {
    0.25
}
fn default_perturb() -> f64 {
    0.2
}

/// How big a rung is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Resource {
    /// Rounds.
    Rounds {
        /// Smallest rung.
        min: u32,
        /// Largest rung (full length).
        max: u32,
    },
    /// Client-epochs per trial.
    Epochs {
        /// Smallest rung.
        min: f64,
        /// Largest rung.
        max: f64,
    },
}

impl MethodConfig {
    /// Whether the method continues trials when the runner can (halving and Hyperband
    /// promote them, PBT changes their points mid-line), so that trials should keep
    /// what continuing needs.
    pub fn continues_trials(&self) -> bool {
        matches!(
            self,
            MethodConfig::Halving { .. }
                | MethodConfig::Hyperband { .. }
                | MethodConfig::Pbt { .. }
        )
    }

    /// The method's name as written.
    pub fn name(&self) -> &'static str {
        match self {
            MethodConfig::Grid => "grid",
            MethodConfig::Random { .. } => "random",
            MethodConfig::Halving { .. } => "halving",
            MethodConfig::Hyperband { .. } => "hyperband",
            MethodConfig::Bo { .. } => "bo",
            MethodConfig::Pbt { .. } => "pbt",
        }
    }

    /// Checks ranges; errors name the key under `method.`.
    pub fn validate(&self, max_rounds: u32) -> Result<(), Error> {
        let bad = |k: &str, v: &dyn std::fmt::Display, e: &str| {
            Err(Error::Config(format!("method.{k} = {v}: {e}")))
        };
        match self {
            MethodConfig::Grid => Ok(()),
            MethodConfig::Random { trials } => match trials {
                Some(0) => bad(
                    "trials",
                    &0,
                    "at least 1 (or leave it out: as many as the budget allows)",
                ),
                _ => Ok(()),
            },
            MethodConfig::Halving {
                eta,
                min_rounds,
                min_epochs,
                max_epochs,
                trials,
            } => {
                if *trials == Some(0) {
                    return bad("trials", &0, "at least 1");
                }
                resource_checked(*eta, *min_rounds, *min_epochs, *max_epochs, max_rounds)
                    .map(|_| ())
            }
            MethodConfig::Hyperband {
                eta,
                min_rounds,
                min_epochs,
                max_epochs,
                iterations,
            } => {
                if *iterations == Some(0) {
                    return bad("iterations", &0, "at least 1");
                }
                resource_checked(*eta, *min_rounds, *min_epochs, *max_epochs, max_rounds)
                    .map(|_| ())
            }
            MethodConfig::Bo {
                initial,
                trials,
                batch,
                candidates,
                xi,
            } => {
                if *initial == 0 {
                    return bad("initial", &0, "at least 1 random point");
                }
                if *trials == Some(0) {
                    return bad("trials", &0, "at least 1");
                }
                if *batch == 0 {
                    return bad("batch", &0, "at least 1");
                }
                if *candidates == 0 {
                    return bad("candidates", &0, "at least 1");
                }
                if !(xi.is_finite() && *xi >= 0.0) {
                    return bad("xi", xi, "a finite margin ≥ 0");
                }
                Ok(())
            }
            MethodConfig::Pbt {
                population,
                interval,
                fraction,
                perturb,
                resample,
            } => {
                if *population < 2 {
                    return bad("population", population, "at least 2 members");
                }
                if *interval == 0 {
                    return bad("interval", &0, "at least 1 round");
                }
                if *interval >= max_rounds {
                    return bad(
                        "interval",
                        interval,
                        &format!(
                            "fewer rounds than a full trial ({max_rounds}), or PBT never exploits"
                        ),
                    );
                }
                if !(*fraction > 0.0 && *fraction <= 0.5) {
                    return bad("fraction", fraction, "in (0, 0.5]");
                }
                if !(*perturb > 0.0 && *perturb < 1.0) {
                    return bad("perturb", perturb, "in (0, 1)");
                }
                if !(0.0..=1.0).contains(resample) {
                    return bad("resample", resample, "a probability in [0, 1]");
                }
                Ok(())
            }
        }
    }

    /// Builds the method; `seed` seeds its own random stream (never a trial's).
    pub fn build(&self, seed: u64, max_rounds: u32) -> Result<Box<dyn Method>, Error> {
        self.validate(max_rounds)?;
        let rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        Ok(match self.clone() {
            MethodConfig::Grid => Box::new(grid::Grid::default()),
            MethodConfig::Random { trials } => Box::new(random::Random::new(trials, rng)),
            MethodConfig::Halving {
                eta,
                min_rounds,
                min_epochs,
                max_epochs,
                trials,
            } => {
                let r = resource_checked(eta, min_rounds, min_epochs, max_epochs, max_rounds)?;
                Box::new(halving::Halving::new(
                    eta,
                    r,
                    halving::Shape::Single { trials },
                    rng,
                ))
            }
            MethodConfig::Hyperband {
                eta,
                min_rounds,
                min_epochs,
                max_epochs,
                iterations,
            } => {
                let r = resource_checked(eta, min_rounds, min_epochs, max_epochs, max_rounds)?;
                Box::new(halving::Halving::new(
                    eta,
                    r,
                    halving::Shape::Hyperband { iterations },
                    rng,
                ))
            }
            MethodConfig::Bo {
                initial,
                trials,
                batch,
                candidates,
                xi,
            } => Box::new(bo::Bo::new(initial, trials, batch, candidates, xi, rng)),
            MethodConfig::Pbt {
                population,
                interval,
                fraction,
                perturb,
                resample,
            } => Box::new(pbt::Pbt::new(
                population, interval, fraction, perturb, resample, rng,
            )),
        })
    }
}

fn resource_checked(
    eta: f64,
    min_rounds: Option<u32>,
    min_epochs: Option<f64>,
    max_epochs: Option<f64>,
    max_rounds: u32,
) -> Result<Resource, Error> {
    let bad = |k: &str, v: &dyn std::fmt::Display, e: &str| {
        Err(Error::Config(format!("method.{k} = {v}: {e}")))
    };
    if !(eta.is_finite() && eta > 1.0) {
        return bad("eta", &eta, "a reduction factor > 1 (3 is usual)");
    }
    match (min_rounds, min_epochs, max_epochs) {
        (Some(r), Some(_), _) => bad(
            "min_rounds",
            &r,
            "set min_rounds (rungs in rounds) or min_epochs (rungs in client-epochs), not both",
        ),
        (_, None, Some(m)) => bad(
            "max_epochs",
            &m,
            "only with min_epochs (rungs in client-epochs)",
        ),
        (_, Some(lo), None) => bad(
            "min_epochs",
            &lo,
            "needs max_epochs, the full-length rung in client-epochs per trial",
        ),
        (_, Some(lo), Some(hi)) => {
            if !(lo.is_finite() && lo > 0.0) {
                return bad("min_epochs", &lo, "a number of client-epochs > 0");
            }
            if !(hi.is_finite() && hi > lo) {
                return bad("max_epochs", &hi, &format!("more than min_epochs ({lo})"));
            }
            Ok(Resource::Epochs { min: lo, max: hi })
        }
        (r, None, None) => {
            let min =
                r.unwrap_or_else(|| ((max_rounds as f64 / (eta * eta)).floor() as u32).max(1));
            if min == 0 || min >= max_rounds {
                return bad(
                    "min_rounds",
                    &min,
                    &format!("at least 1 and fewer than a full trial's {max_rounds} rounds"),
                );
            }
            Ok(Resource::Rounds {
                min,
                max: max_rounds,
            })
        }
    }
}

/// Sorts indices by score, best first; failed (`None`) last; ties by index.
pub(crate) fn ranking(scores: &[Option<f64>]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| match (scores[a], scores[b]) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.cmp(&b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(&b),
    });
    idx
}

/// Mean nominal per-round cost of some points (for planning survivors not yet known).
pub(crate) fn mean_round_cost(ctx: &Ctx, points: &[Point]) -> Result<f64, Error> {
    if points.is_empty() {
        return Ok(0.0);
    }
    let mut s = 0.0;
    for p in points {
        s += (ctx.round_cost)(p)?;
    }
    Ok(s / points.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MethodConfig, String> {
        let v: toml::Value = toml::Value::Table(text.parse().unwrap());
        serde_path_to_error::deserialize::<_, MethodConfig>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn method_tables_parse_with_defaults_and_reject_unknown_keys() {
        assert_eq!(parse("name = \"grid\"").unwrap(), MethodConfig::Grid);
        assert_eq!(
            parse("name = \"hyperband\"\nmin_rounds = 2").unwrap(),
            MethodConfig::Hyperband {
                eta: 3.0,
                min_rounds: Some(2),
                min_epochs: None,
                max_epochs: None,
                iterations: None
            }
        );
        let e = parse("name = \"random\"\ntrails = 3").unwrap_err();
        assert!(e.contains("unknown field `trails`"), "{e}");
        let e = parse("name = \"annealing\"").unwrap_err();
        assert!(e.contains("unknown variant `annealing`"), "{e}");
    }

    #[test]
    fn ranges_are_checked_with_the_key_named() {
        let cases = [
            (
                "name = \"halving\"\neta = 1.0",
                "method.eta = 1: a reduction factor > 1",
            ),
            (
                "name = \"halving\"\nmin_rounds = 20",
                "method.min_rounds = 20: at least 1 and fewer than a full trial's 20 rounds",
            ),
            (
                "name = \"hyperband\"\nmin_epochs = 5.0",
                "method.min_epochs = 5: needs max_epochs",
            ),
            (
                "name = \"pbt\"\ninterval = 20",
                "method.interval = 20: fewer rounds than a full trial (20)",
            ),
            (
                "name = \"pbt\"\npopulation = 1",
                "method.population = 1: at least 2 members",
            ),
            (
                "name = \"bo\"\nxi = -1.0",
                "method.xi = -1: a finite margin ≥ 0",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap().validate(20).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn ranking_puts_failures_last_and_breaks_ties_by_order() {
        assert_eq!(
            ranking(&[Some(1.0), None, Some(2.0), Some(1.0)]),
            vec![2, 0, 3, 1]
        );
    }
}
