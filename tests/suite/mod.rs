pub mod common;

mod exec;
mod image;
mod profiles;
mod record;
mod seccomp;
