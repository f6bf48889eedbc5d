pub mod common;

mod agent;
mod check_cli;
mod check_corpus;
mod check_props;
mod exec;
mod faults;
mod image;
mod profiles;
mod seccomp;
