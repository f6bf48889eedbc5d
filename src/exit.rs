//! Documented process exit codes (docs/exit-codes.md).

/// The command ran longer than its timeout and was killed inside the sandbox.
pub const EXIT_TIMEOUT: u8 = 124;
/// stockade itself, the engine, or the configuration failed; the command may not have run.
pub const EXIT_STOCKADE_ERROR: u8 = 125;
/// The check stage (policy) denied the command; nothing ran.
pub const EXIT_DENIED: u8 = 126;
/// `stockade check`: the verdict was warn.
pub const EXIT_CHECK_WARN: u8 = 10;
/// `stockade check`: the verdict was deny.
pub const EXIT_CHECK_DENY: u8 = 11;
/// `stockade k8s pool claim`: the warm pool had no unclaimed pod; nothing was claimed or made.
pub const EXIT_POOL_EMPTY: u8 = 12;
