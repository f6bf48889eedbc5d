pub mod common;

mod agent;
mod audit;
mod bad_input;
mod check_cli;
mod check_corpus;
mod check_props;
mod engine_faults;
mod exec;
mod faults;
mod image;
mod integrity;
mod live_corpus;
mod load;
mod profiles;
mod proxy;
mod record;
mod seccomp;
