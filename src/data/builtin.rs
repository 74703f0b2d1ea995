//! The small classic datasets shipped inside the binary (UCI, as distributed with scikit-learn).

use ndarray::Axis;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use super::{Budget, Dataset, Error, Labels, TaskHint};

/// A dataset embedded in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Digits,
    Iris,
    Wine,
    BreastCancer,
    Diabetes,
}

impl Builtin {
    pub fn parse(name: &str) -> Option<Builtin> {
        match name {
            "digits" => Some(Builtin::Digits),
            "iris" => Some(Builtin::Iris),
            "wine" => Some(Builtin::Wine),
            "breast_cancer" => Some(Builtin::BreastCancer),
            "diabetes" => Some(Builtin::Diabetes),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Digits => "digits",
            Builtin::Iris => "iris",
            Builtin::Wine => "wine",
            Builtin::BreastCancer => "breast_cancer",
            Builtin::Diabetes => "diabetes",
        }
    }

    fn csv(self) -> &'static [u8] {
        match self {
            Builtin::Digits => include_bytes!("../../data/classic/digits.csv"),
            Builtin::Iris => include_bytes!("../../data/classic/iris.csv"),
            Builtin::Wine => include_bytes!("../../data/classic/wine.csv"),
            Builtin::BreastCancer => include_bytes!("../../data/classic/breast_cancer.csv"),
            Builtin::Diabetes => include_bytes!("../../data/classic/diabetes.csv"),
        }
    }

    /// Decodes the embedded CSV.
    pub fn load(self) -> Result<Dataset, Error> {
        let (label, shape, task) = match self {
            Builtin::Digits => ("label", Some(vec![8, 8]), TaskHint::Classification),
            Builtin::Diabetes => ("target", None, TaskHint::Regression),
            Builtin::Iris | Builtin::Wine | Builtin::BreastCancer => {
                ("label", None, TaskHint::Classification)
            }
        };
        let mut d = super::csv::load(
            self.csv(),
            self.name(),
            Some(label),
            shape,
            task,
            &mut Budget::unlimited(),
        )?;
        if matches!(self, Builtin::Iris | Builtin::Wine) {
            // These two ship sorted by class, so Keras's `validation_split` (the last fraction,
            // taken before shuffling) would validate on one class only. A fixed seeded order keeps
            // the dataset the same on every server while making the last fraction representative.
            d = shuffled(d, 0);
        }
        Ok(d)
    }
}

/// The rows of `d` in a seeded random order (Fisher-Yates).
fn shuffled(d: Dataset, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..d.x.nrows()).collect();
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let labels = match d.labels {
        Labels::Classes(y) => Labels::Classes(y.select(Axis(0), &order)),
        Labels::Targets(y) => Labels::Targets(y.select(Axis(0), &order)),
    };
    Dataset {
        x: d.x.select_rows(&order),
        labels,
        input_shape: d.input_shape,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Labels;

    #[test]
    fn every_builtin_decodes_with_its_documented_size() {
        for (b, n, f) in [
            (Builtin::Digits, 1797, 64),
            (Builtin::Iris, 150, 4),
            (Builtin::Wine, 178, 13),
            (Builtin::BreastCancer, 569, 30),
            (Builtin::Diabetes, 442, 10),
        ] {
            let d = b.load().unwrap();
            assert_eq!((d.x.nrows(), d.x.ncols()), (n, f), "{}", b.name());
            assert_eq!(matches!(d.labels, Labels::Targets(_)), b == Builtin::Diabetes);
        }
    }

    #[test]
    fn class_sorted_builtins_have_every_class_in_their_last_fifth() {
        for b in [Builtin::Iris, Builtin::Wine] {
            let Labels::Classes(y) = b.load().unwrap().labels else {
                panic!()
            };
            let tail = &y.as_slice().unwrap()[y.len() * 4 / 5..];
            for class in 0..3 {
                assert!(
                    tail.contains(&class),
                    "{} lacks class {class} in its last fifth",
                    b.name()
                );
            }
            assert_eq!(b.load().unwrap().labels, Labels::Classes(y), "the order is fixed");
        }
    }
}
