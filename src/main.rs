//! The `clustersync` binary; the command line lives in the library's `cli` module.

use std::process::ExitCode;

fn main() -> ExitCode {
    clustersync::cli::main()
}
