//! The audit log: one append-only, hash-chained JSONL file of execution records.

mod record;

pub use record::{Finish, Record, RecordBody, Start};
