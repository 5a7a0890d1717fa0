//! Exit codes scripts can rely on (also in `dse --help`).

/// The command failed (the daemon or a datapath reported an error).
pub const FAILED: u8 = 1;
/// The command line is wrong (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// The change was based on a stale generation: read the rules and retry.
pub const CONFLICT: u8 = 3;
/// The input was refused: rules, a body, a name, an interface.
pub const INVALID: u8 = 4;
/// `dse serve` could not be reached.
pub const UNREACHABLE: u8 = 5;
/// The bearer token is missing or wrong.
pub const UNAUTHORIZED: u8 = 6;
/// No such datapath (or endpoint).
pub const NOT_FOUND: u8 = 7;

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What was wrong and what to do.
    pub message: String,
}

impl Failure {
    /// [`FAILED`].
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: FAILED,
            message: message.into(),
        }
    }

    /// [`USAGE`].
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }

    /// [`INVALID`].
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: INVALID,
            message: message.into(),
        }
    }

    /// [`NOT_FOUND`].
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure {
            code: NOT_FOUND,
            message: message.into(),
        }
    }

    /// [`UNREACHABLE`].
    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure {
            code: UNREACHABLE,
            message: message.into(),
        }
    }
}
