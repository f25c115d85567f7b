//! The command line. (Stub: being written.)

use std::process::ExitCode;

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
