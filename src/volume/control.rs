//! The attach daemon's control protocol, both ends: one typed [`Request`]
//! that clients encode and the daemon parses, one typed [`Reply`] that the
//! daemon encodes and clients parse, so the two can never drift, and the
//! client connection ([`ControlClient`]) that snapshots cut and read
//! through. The daemon's end (serving a connection) is `agent.rs`.
//!
//! A request is one line; the answer is `OK [words]` (for `READ`, followed
//! by the chunk's bytes) or `ERR <refusal> <why>`, the refusal one word
//! ([`Refusal`]) that clients act on; `<why>` is for people only:
//!
//! - `CUT <snap> ALL|CHANGED` -> `OK <chunk> <chunk> ...` (the cut's chunks),
//!   or `ERR TOO-MANY-CUTS` while the volume has the most cuts in progress
//! - `READ <snap> <chunk>` -> `OK <len>` then `len` bytes of ciphertext
//! - `FINISH <snap> OK|FAIL` -> `OK` (on OK, clears the captured change bits)
//! - `STOP` -> `OK` (the device is unmounted and the daemon exits; the
//!   connection may also just close) or `ERR <why>` (busy: nothing changed)
//! - `GROW <bytes>` -> `OK` once the device has its new size (online
//!   ModifyVolume)
//! - `HEALTH` -> `OK <io errors> <unix seconds of the latest, 0: none>`

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api_error::{ApiError, ApiResult};
use crate::ids::SnapshotId;
use crate::pipeline::AlignedBuf;
use crate::volume::{VolumeError, CHUNK_SIZE};

/// How long one request on the attach daemon's control socket may take
/// (a cut, one 512 KiB chunk): past it the daemon counts as hung, the
/// request fails and a frozen filesystem is thawed.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// One request to the attach daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Cut a snapshot: every chunk (`all`) or the changed ones.
    Cut { snapshot: String, all: bool },
    /// The ciphertext of one chunk as the cut `snapshot` saw it.
    Read { snapshot: String, chunk: u64 },
    /// End the cut `snapshot`; `ok` clears the captured change bits.
    Finish { snapshot: String, ok: bool },
    /// Unmount the device and exit (refused while it is busy).
    Stop,
    /// Grow the device online to `size` bytes.
    Grow { size: u64 },
    /// The I/O errors the device answered since it was attached.
    Health,
}

/// Snapshot ids on the wire: `snap-` and hex, nothing that could break a line.
fn check_id(id: &str) -> Result<String, String> {
    if id.len() <= 64 && id.starts_with("snap-") && id[5..].bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_string())
    } else {
        Err(format!(
            "'{}' is not a snapshot id",
            id.chars().take(64).collect::<String>()
        ))
    }
}

impl Request {
    /// The request line, without its newline.
    pub fn encode(&self) -> String {
        match self {
            Request::Cut { snapshot, all } => {
                format!("CUT {snapshot} {}", if *all { "ALL" } else { "CHANGED" })
            }
            Request::Read { snapshot, chunk } => format!("READ {snapshot} {chunk}"),
            Request::Finish { snapshot, ok } => {
                format!("FINISH {snapshot} {}", if *ok { "OK" } else { "FAIL" })
            }
            Request::Stop => "STOP".to_string(),
            Request::Grow { size } => format!("GROW {size}"),
            Request::Health => "HEALTH".to_string(),
        }
    }

    /// The verb, for messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Cut { .. } => "CUT",
            Request::Read { .. } => "READ",
            Request::Finish { .. } => "FINISH",
            Request::Stop => "STOP",
            Request::Grow { .. } => "GROW",
            Request::Health => "HEALTH",
        }
    }

    /// Parses a request line (the daemon's end); the error is what the
    /// daemon answers after `ERR`.
    pub fn parse(line: &str) -> Result<Request, String> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["CUT", id, mode @ ("ALL" | "CHANGED")] => Ok(Request::Cut {
                snapshot: check_id(id)?,
                all: *mode == "ALL",
            }),
            ["READ", id, chunk] => Ok(Request::Read {
                snapshot: check_id(id)?,
                chunk: chunk
                    .parse()
                    .map_err(|_| format!("'{chunk}' is not a chunk index"))?,
            }),
            ["FINISH", id, status @ ("OK" | "FAIL")] => Ok(Request::Finish {
                snapshot: check_id(id)?,
                ok: *status == "OK",
            }),
            ["STOP"] => Ok(Request::Stop),
            ["HEALTH"] => Ok(Request::Health),
            ["GROW", bytes] => Ok(Request::Grow {
                size: bytes
                    .parse()
                    .map_err(|_| format!("'{bytes}' is not a size in bytes"))?,
            }),
            _ => Err("unknown request".to_string()),
        }
    }
}

/// Why the daemon refused a request, as clients tell refusals apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The volume has the most snapshots cut and not finished
    /// ([`VolumeError::TooManyCuts`]); EC2's
    /// `SnapshotCreationPerVolumeRateExceeded`.
    TooManyCuts,
    /// Anything else: a malformed request, a device error, a busy unmount.
    Failed,
}

impl Refusal {
    /// The refusal word on the wire.
    fn word(self) -> &'static str {
        match self {
            Refusal::TooManyCuts => "TOO-MANY-CUTS",
            Refusal::Failed => "FAILED",
        }
    }

    /// The refusal of a device error.
    pub fn of(e: &VolumeError) -> Refusal {
        match e {
            VolumeError::TooManyCuts { .. } => Refusal::TooManyCuts,
            _ => Refusal::Failed,
        }
    }
}

/// The daemon's answer line to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK` and its words (a `READ`'s bytes follow the line).
    Done(String),
    /// `ERR`: refused, and why (for people).
    Refused(Refusal, String),
}

impl Reply {
    /// The answer line, without its newline.
    pub fn encode(&self) -> String {
        match self {
            Reply::Done(words) if words.is_empty() => "OK".to_string(),
            Reply::Done(words) => format!("OK {words}"),
            Reply::Refused(r, why) => format!("ERR {} {}", r.word(), why.replace('\n', " ")),
        }
    }

    /// Parses an answer line (a client's end). An `ERR` without a known
    /// refusal word (a daemon of an older keyvol) is [`Refusal::Failed`];
    /// an empty line (the daemon closed the connection) is refused too.
    pub fn parse(line: &str) -> Reply {
        let line = line.trim_end();
        if line == "OK" {
            return Reply::Done(String::new());
        }
        if let Some(words) = line.strip_prefix("OK ") {
            return Reply::Done(words.trim().to_string());
        }
        let why = line.strip_prefix("ERR ").unwrap_or(line);
        let (first, rest) = why.split_once(' ').unwrap_or((why, ""));
        match [Refusal::TooManyCuts, Refusal::Failed]
            .into_iter()
            .find(|r| r.word() == first)
        {
            Some(r) => Reply::Refused(r, rest.to_string()),
            None if why.is_empty() => Reply::Refused(
                Refusal::Failed,
                "the attach daemon closed the control connection".into(),
            ),
            None => Reply::Refused(Refusal::Failed, why.to_string()),
        }
    }
}

/// A connection to an attach daemon's control socket, one request at a
/// time, every request and answer bounded by [`CONTROL_TIMEOUT`]. The
/// daemon serves each connection on a thread of its own, and a cut stays
/// with the connection that made it (closing it abandons the cut).
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The control socket, for more connections to the same daemon.
    path: PathBuf,
}

impl ControlClient {
    /// Connects to the daemon at `path`, trying for 5 s (a daemon that was
    /// just started may not listen yet).
    pub fn connect(path: &Path) -> ApiResult<ControlClient> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match UnixStream::connect(path) {
                Ok(c) => {
                    let timeouts = c
                        .set_read_timeout(Some(CONTROL_TIMEOUT))
                        .and_then(|()| c.set_write_timeout(Some(CONTROL_TIMEOUT)));
                    timeouts.map_err(|e| ApiError::internal(format!("control socket: {e}")))?;
                    let writer = c
                        .try_clone()
                        .map_err(|e| ApiError::internal(format!("control socket: {e}")))?;
                    return Ok(ControlClient {
                        reader: BufReader::new(c),
                        writer,
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(ApiError::internal(format!(
                        "cannot reach the attach daemon at {}: {e}",
                        path.display()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The control socket this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `req` and returns the words of its `OK`; a refusal is an
    /// error by its [`Refusal`].
    fn request(&mut self, req: &Request) -> ApiResult<String> {
        let mut answer = String::new();
        let sent = writeln!(self.writer, "{}", req.encode())
            .and_then(|()| self.reader.read_line(&mut answer).map(drop));
        if let Err(e) = sent {
            // The conversation is out of step now: later requests fail at
            // once instead of reading a late answer.
            let _ = self.writer.shutdown(std::net::Shutdown::Both);
            return Err(io_error(req.verb(), e));
        }
        match Reply::parse(&answer) {
            Reply::Done(words) => Ok(words),
            Reply::Refused(Refusal::TooManyCuts, why) => {
                Err(ApiError::new("SnapshotCreationPerVolumeRateExceeded", why))
            }
            Reply::Refused(Refusal::Failed, why) => Err(ApiError::new("IncorrectState", why)),
        }
    }

    /// `CUT`: the chunks of the cut `snapshot` (every chunk if `all`).
    pub fn cut(&mut self, snapshot: &SnapshotId, all: bool) -> ApiResult<Vec<u64>> {
        let list = self.request(&Request::Cut {
            snapshot: snapshot.to_string(),
            all,
        })?;
        list.split_whitespace()
            .map(|c| {
                c.parse::<u64>()
                    .map_err(|_| ApiError::internal("the attach daemon sent a bad chunk list"))
            })
            .collect()
    }

    /// `READ`: the ciphertext of `chunk` at the cut `snapshot`, into `buf`.
    pub fn read_into(
        &mut self,
        snapshot: &SnapshotId,
        chunk: u64,
        buf: &mut AlignedBuf,
    ) -> ApiResult<()> {
        let len: usize = self
            .request(&Request::Read {
                snapshot: snapshot.to_string(),
                chunk,
            })?
            .parse()
            .map_err(|_| ApiError::internal("the attach daemon sent a bad length"))?;
        if len > CHUNK_SIZE as usize || len > buf.capacity() {
            return Err(ApiError::internal(
                "the attach daemon sent an oversized chunk",
            ));
        }
        buf.set_len(len);
        if let Err(e) = self.reader.read_exact(buf) {
            let _ = self.writer.shutdown(std::net::Shutdown::Both);
            return Err(io_error("READ", e));
        }
        Ok(())
    }

    /// `FINISH`: ends the cut `snapshot`; `ok` clears its change bits.
    pub fn finish(&mut self, snapshot: &SnapshotId, ok: bool) -> ApiResult<()> {
        self.request(&Request::Finish {
            snapshot: snapshot.to_string(),
            ok,
        })
        .map(drop)
    }
}

/// An I/O failure on the control socket, a timeout named as such.
fn io_error(verb: &str, e: std::io::Error) -> ApiError {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        return ApiError::internal(format!(
            "the attach daemon did not answer {verb} within {} s; it may be hung: \
             check `keyvol volume status`",
            CONTROL_TIMEOUT.as_secs()
        ));
    }
    ApiError::internal(format!("attach daemon ({verb}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_parses_back_to_itself() {
        let s = "snap-0123456789abcdef0".to_string();
        for r in [
            Request::Cut {
                snapshot: s.clone(),
                all: true,
            },
            Request::Cut {
                snapshot: s.clone(),
                all: false,
            },
            Request::Read {
                snapshot: s.clone(),
                chunk: 42,
            },
            Request::Finish {
                snapshot: s.clone(),
                ok: true,
            },
            Request::Finish {
                snapshot: s.clone(),
                ok: false,
            },
            Request::Stop,
            Request::Grow { size: 1 << 30 },
            Request::Health,
        ] {
            assert_eq!(Request::parse(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        for bad in [
            "",
            "CUT snap-1 SOME",
            "READ snap-1 x",
            "READ ../x 1",
            "GROW -1",
            "FINISH snap-1 MAYBE",
            "DROP",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_reply_parses_back_to_itself() {
        for r in [
            Reply::Done(String::new()),
            Reply::Done("3 4 5".into()),
            Reply::Refused(Refusal::TooManyCuts, "5 snapshots are in progress".into()),
            Reply::Refused(Refusal::Failed, "snapshot snap-1 is already cut".into()),
        ] {
            assert_eq!(Reply::parse(&r.encode()), r);
        }
        let cut_limit = VolumeError::TooManyCuts {
            in_progress: 5,
            max: 5,
        };
        assert_eq!(Refusal::of(&cut_limit), Refusal::TooManyCuts);
    }

    #[test]
    fn replies_without_a_refusal_word_are_failures() {
        assert_eq!(
            Reply::parse("ERR unknown request\n"),
            Reply::Refused(Refusal::Failed, "unknown request".into())
        );
        assert!(
            matches!(Reply::parse(""), Reply::Refused(Refusal::Failed, why) if !why.is_empty())
        );
    }
}
