pub mod common;

mod exec;
mod profiles;
