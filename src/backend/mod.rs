//! Backends that run a planned command.
