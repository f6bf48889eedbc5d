//! Integration tests, one binary (see tests/suite/).
mod suite;
