//! Tests of the whole rules module against the reference.
