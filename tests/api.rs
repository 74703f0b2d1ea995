//! API tests: the real server on 127.0.0.1:0 with a temporary database, driven over HTTP.
//!
//! One test binary (each extra binary costs a link); the resource suites are sub-modules.

mod api {
    pub mod support;

    mod aliases;
    mod auth;
    mod browser;
    mod cluster;
    mod contract;
    mod datasets;
    mod errors;
    mod hostile_uploads;
    mod jobs;
    mod metrics;
    mod models;
    mod openapi;
    mod runs;
    mod saved_models;
    mod searches;
    mod server;
    mod training;
    mod v2;
    mod webhooks;
}
