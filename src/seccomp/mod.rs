//! Seccomp profiles in the Docker/OCI JSON format: import, resolve, compile, lint, diff, record.
