//! Validated request and resource types shared by the HTTP layer and storage.

pub mod dataset;
pub mod job;
pub mod labels;
pub mod model;
