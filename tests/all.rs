//! Integration tests: the real `stockade` binary against a real Docker engine, and library
//! checks that need fixtures.

mod suite;
