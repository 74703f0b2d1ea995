//! Dataset kinds and metadata shared by parsing, storage and the HTTP views.
