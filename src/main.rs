//! `aims-api`: parse the command line, run the command, end with its exit status.
//!
//! The statuses and what each means are [`cli::Exit`] (and `aims-api(8)`, EXIT STATUS): a
//! command returns one, and a failure is mapped to one by `commands::Error::exit`, so no other
//! number is ever returned.

use std::process::ExitCode;

use aims_api::cli::{self, Exit};
use aims_api::commands;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os()) {
        Ok(command) => command,
        Err(usage) => {
            eprintln!("aims-api: {usage}");
            return ExitCode::from(Exit::Usage.code());
        }
    };
    let exit = match commands::run(command) {
        Ok(exit) => exit,
        Err(e) => {
            log::error!("{e}");
            eprintln!("aims-api: {e}");
            e.exit()
        }
    };
    ExitCode::from(exit.code())
}
