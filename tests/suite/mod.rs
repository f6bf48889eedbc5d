pub mod common;

mod agent;
mod audit;
mod check_cli;
mod check_corpus;
mod check_props;
mod exec;
mod image;
mod profiles;
mod record;
mod seccomp;
