//! `aims-api`: parse the command line, run the command, map the outcome to an exit code.
//!
//! Exit codes: 0 success, 1 error (the message says what failed and what to do), 2 usage.

use std::process::ExitCode;

use aims_api::{cli, commands};

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os()) {
        Ok(command) => command,
        Err(usage) => {
            eprintln!("aims-api: {usage}");
            return ExitCode::from(2);
        }
    };
    match commands::run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("aims-api: {e}");
            ExitCode::from(1)
        }
    }
}
