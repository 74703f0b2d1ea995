//! The small classic datasets shipped inside the binary (UCI, as distributed with scikit-learn).

use super::{Dataset, Error, TaskHint};

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
        super::csv::load(self.csv(), self.name(), Some(label), shape, task)
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
            assert_eq!(d.x.dim(), (n, f), "{}", b.name());
            assert_eq!(matches!(d.labels, Labels::Targets(_)), b == Builtin::Diabetes);
        }
    }
}
