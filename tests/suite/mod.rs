pub mod common;

mod agent;
mod check_cli;
mod check_corpus;
mod check_props;
mod engine_faults;
mod exec;
mod faults;
mod image;
mod profiles;
mod proxy;
mod seccomp;
