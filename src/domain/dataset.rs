//! Dataset kinds shared by parsing, storage and the HTTP views.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the labels are: class indices or real-valued regression targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    Classification,
    Regression,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Classification => "classification",
            DatasetKind::Regression => "regression",
        }
    }

    pub fn parse(s: &str) -> Option<DatasetKind> {
        match s {
            "classification" => Some(DatasetKind::Classification),
            "regression" => Some(DatasetKind::Regression),
            _ => None,
        }
    }
}
