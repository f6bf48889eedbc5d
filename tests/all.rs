//! Integration tests: the real `stockade` binary against a real Docker engine.

mod suite;
