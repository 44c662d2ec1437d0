//! The `maskaq` binary: parses the command line (`src/cli.rs`) and runs it; every failure ends
//! as one line on stderr and a non-zero exit code (`cli::EXIT_CODES`).

use std::process::ExitCode;

use clap::Parser;
use maskaq::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(2)
                }
                _ => {
                    eprintln!("{}", cli::one_line_usage_error(&e));
                    ExitCode::from(2)
                }
            };
        }
    };
    maskaq::interrupt::install();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if maskaq::interrupt::requested() => {
            let why = one_line(&format!("{e:#}"));
            if why == "interrupted" {
                eprintln!("maskaq: interrupted")
            } else {
                eprintln!("maskaq: interrupted {why}")
            }
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("maskaq: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Errors from libraries can span lines; the user gets one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
