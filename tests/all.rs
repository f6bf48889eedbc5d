//! The integration test binary: one crate, modules under tests/suite/.

mod suite;
