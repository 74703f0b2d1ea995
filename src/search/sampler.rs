//! Which parameters trial `n` gets: the grid's `n`-th combination, or a draw from a generator
//! seeded by the search's seed and `n` alone, so a trial's parameters never depend on the order
//! trials ran in and a resumed search draws the same ones.

use serde_json::{Map, Value};

use super::space::{Method, SearchPlan, set_path};

/// SplitMix64: a small, well-mixed generator; one stream per (seed, trial).
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl SearchPlan {
    /// How many trials the search runs: `max_trials`, or the grid's size when smaller.
    pub fn trial_count(&self) -> u64 {
        match self.method {
            Method::Grid => {
                let size = self
                    .dims
                    .iter()
                    .fold(1u64, |acc, (_, _, d)| acc.saturating_mul(d.grid_len()));
                size.min(self.max_trials as u64)
            }
            Method::Random | Method::Asha { .. } | Method::Hyperband { .. } => self.max_trials as u64,
        }
    }

    /// The parameters of trial `n` (0-based), one value per dimension in the space's order.
    pub fn params(&self, n: u64) -> Vec<Value> {
        match self.method {
            Method::Grid => {
                // Mixed radix, the last dimension changing fastest.
                let mut rest = n;
                let mut out = vec![Value::Null; self.dims.len()];
                for (i, (_, _, d)) in self.dims.iter().enumerate().rev() {
                    let len = d.grid_len().max(1);
                    out[i] = d.grid_value(rest % len);
                    rest /= len;
                }
                out
            }
            Method::Random | Method::Asha { .. } | Method::Hyperband { .. } => {
                let mut rng = SplitMix(self.seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
                // Warm up so neighbouring seeds do not give correlated first draws.
                rng.next_u64();
                self.dims
                    .iter()
                    .map(|(_, _, d)| d.sample(rng.next_f64()))
                    .collect()
            }
        }
    }

    /// The parameters as an object by path, as the API shows them.
    pub fn params_object(&self, values: &[Value]) -> Value {
        let mut m = Map::new();
        for ((path, _, _), v) in self.dims.iter().zip(values) {
            m.insert(path.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// The base job and model spec with `values` set; the model is `None` when no dimension
    /// touches it (the trial trains the base model itself).
    pub fn apply(
        &self,
        job: &Value,
        model: &Value,
        values: &[Value],
    ) -> Result<(Value, Option<Value>), String> {
        let mut job = job.clone();
        let mut spec = model.clone();
        let mut touched = false;
        for ((path, p, _), v) in self.dims.iter().zip(values) {
            let target = if p.model {
                touched = true;
                &mut spec
            } else {
                &mut job
            };
            set_path(target, &p.steps, v.clone()).map_err(|m| format!("{path}: {m}"))?;
        }
        Ok((job, touched.then_some(spec)))
    }
}
