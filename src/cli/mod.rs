//! Shared CLI plumbing: the error type, the aws-CLI-shaped error line and
//! output formatting (json, text, table; timestamps as RFC 3339).

pub mod configure;
pub mod host;
pub mod iam;
pub mod kms;
pub mod serve;
pub mod volume;

use serde_json::Value;

use keyvol::kms::KmsError;

/// A CLI failure: a service error of an operation, or a usage error.
#[derive(Debug)]
pub enum CliError {
    Service {
        operation: String,
        error: KmsError,
    },
    Api {
        operation: String,
        error: keyvol::api_error::ApiError,
    },
    Usage(String),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    pub fn service(operation: &str, error: KmsError) -> Self {
        CliError::Service {
            operation: operation.to_string(),
            error,
        }
    }

    pub fn api(operation: &str, error: keyvol::api_error::ApiError) -> Self {
        CliError::Api {
            operation: operation.to_string(),
            error,
        }
    }

    /// Prints the error as the aws CLI does and returns the exit code.
    pub fn report(&self) -> i32 {
        match self {
            CliError::Service { operation, error } => {
                eprintln!(
                    "\nAn error occurred ({}) when calling the {} operation: {}",
                    error.code, operation, error.message
                );
                254
            }
            CliError::Api { operation, error } => {
                eprintln!(
                    "\nAn error occurred ({}) when calling the {} operation: {}",
                    error.code, operation, error.message
                );
                254
            }
            CliError::Usage(m) => {
                eprintln!("\nkeyvol: error: {m}");
                252
            }
        }
    }
}

/// Prints a response in the chosen output format.
pub fn print(v: Value, output: &str, q: Option<&keyvol::output::Query>) -> Result<(), CliError> {
    let lines = keyvol::output::render(v, output, q).map_err(CliError::usage)?;
    keyvol::output::print_lines(&lines);
    Ok(())
}

/// Runs `completion` or `man` of the CLI `cmd` and prints what it says.
pub fn print_docs(cmd: clap::Command, which: &str, m: &clap::ArgMatches) -> Result<(), CliError> {
    if let Some(text) = keyvol::clidocs::run(cmd, which, m).map_err(CliError::usage)? {
        keyvol::output::print_lines(&[text.trim_end().to_string()]);
    }
    Ok(())
}
