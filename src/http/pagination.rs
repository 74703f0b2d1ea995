//! `limit` + `after` cursor pagination shared by every list endpoint.

use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Query parameters of list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    pub after: Option<String>,
}

impl ListQuery {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
            Some(_) => Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }
}
