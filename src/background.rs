//! Starting a long-running helper process (the attach daemon, a snapshot
//! job) detached from the terminal, and waiting for its one "ready" line.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::api_error::{ApiError, ApiResult};

/// Runs `cmd` in its own process group, stdin closed and stderr appended to
/// `log`, and returns the first line it prints on stdout. When it exits
/// before printing one, the error carries the last line of its log (an
/// aws-style `An error occurred (Code) ...` line keeps its code).
pub fn start_and_wait_ready(mut cmd: Command, log: &Path, what: &str) -> ApiResult<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| ApiError::internal(format!("opening {}: {e}", log.display())))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::internal(format!("starting {what}: {e}")))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    if !line.trim().is_empty() {
        return Ok(line);
    }
    let status = child.wait().ok();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if let Some(rest) = last.strip_prefix("An error occurred (") {
        if let Some((code, msg)) = rest.split_once(')') {
            let msg = msg.split_once(": ").map(|(_, m)| m).unwrap_or(msg);
            return Err(ApiError::new(code, msg));
        }
    }
    Err(ApiError::internal(format!(
        "{what} exited ({}) before it was ready: {last}",
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown status".into())
    )))
}
