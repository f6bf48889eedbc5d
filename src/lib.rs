//! stockade: a container sandbox supervisor for the bash tools of AI agents.
//!
//! One command flows through four stages, each a module:
//! [`check`] (parse + escape rules) -> [`plan`] (profile + request -> container spec)
//! -> [`backend`] (run it in a container) -> [`audit`] (one hash-chained record).

pub mod agent;
pub mod audit;
pub mod backend;
pub mod canary;
pub mod cancel;
pub mod check;
pub mod config;
pub mod display;
pub mod doctor;
pub mod exec;
pub mod exit;
pub mod files;
pub mod inflight;
pub mod live;
pub mod mcp;
pub mod migrate;
pub mod plan;
pub mod planted;
pub mod profile;
pub mod seccomp;
pub mod secrets;
pub mod server;
pub mod service;
pub mod session;
pub mod state;
