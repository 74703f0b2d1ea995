//! Turns stored datasets into engine inputs for a job: features, targets in the form the loss
//! wants, and the validation data (a split or a second dataset).

use ndarray::Array2;

use crate::data::Labels;
use crate::domain::job::{DatasetFacts, Validation};
use crate::nn::{Data, Loss, Rows, Targets};
use crate::store::{self, Store};

/// The facts validation needs about a stored dataset.
pub async fn facts(store: &Store, dataset_id: &str) -> Result<DatasetFacts, store::Error> {
    let row = store::datasets::get(store, dataset_id).await?;
    Ok(DatasetFacts {
        n_samples: row.n_samples as usize,
        n_features: row.n_features as usize,
        n_classes: row.n_classes.map(|k| k as usize),
        n_targets: row.n_targets.map(|k| k as usize),
    })
}

/// Class labels become one-hot rows for `categorical_crossentropy`; otherwise targets are kept.
pub fn targets(labels: Labels, loss: Loss, units: usize) -> Targets {
    match (labels, loss) {
        (Labels::Classes(c), Loss::CategoricalCrossentropy) => {
            let mut onehot = Array2::<f32>::zeros((c.len(), units));
            for (i, &k) in c.iter().enumerate() {
                if (k as usize) < units {
                    onehot[(i, k as usize)] = 1.0;
                }
            }
            Targets::Dense(onehot)
        }
        (Labels::Classes(c), _) => Targets::Classes(c),
        (Labels::Targets(t), _) => Targets::Dense(t),
    }
}

/// Training and validation data for a job, the same on every run of it (the split is taken
/// before any shuffling), so a resumed job sees exactly the data it started with.
///
/// The inputs come from the dataset cache and are shared, not copied: a validation split is two
/// views of the cached array. Stored features were checked to be finite when the dataset was
/// created, so the trainer does not scan them again.
pub async fn load(
    store: &Store,
    dataset_id: &str,
    validation: &Validation,
    loss: Loss,
    units: usize,
) -> Result<(Data, Option<Data>), LoadError> {
    let train = store::datasets::load_arrays(store, dataset_id).await?;
    let data = Data::new(Rows::known_finite(train.x), targets(train.labels, loss, units));
    match validation {
        Validation::None => Ok((data, None)),
        Validation::Split(f) => {
            let (t, v) = data.split_validation(*f)?;
            Ok((t, Some(v)))
        }
        Validation::Dataset(id) => {
            let val = store::datasets::load_arrays(store, id).await?;
            let vy = targets(val.labels, loss, units);
            Ok((data, Some(Data::new(Rows::known_finite(val.x), vy))))
        }
    }
}

/// Loading a job's data failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the dataset: {0}")]
    Store(#[from] store::Error),
    #[error(transparent)]
    Nn(#[from] crate::nn::Error),
}
