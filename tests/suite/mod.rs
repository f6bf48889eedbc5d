pub mod common;

mod agent;
mod exec;
mod image;
mod profiles;
mod seccomp;
