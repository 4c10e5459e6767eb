//! Agent fleet SPEC.
