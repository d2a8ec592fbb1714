//! The attach daemon's control protocol, both ends: one typed [`Request`]
//! that clients encode and the daemon parses, so the two can never drift.
//!
//! A request is one line; the answer is `OK [words]` (for `READ`, followed
//! by the chunk's bytes) or `ERR <why>`:
//!
//! - `CUT <snap> ALL|CHANGED` -> `OK <chunk> <chunk> ...` (the cut's chunks)
//! - `READ <snap> <chunk>` -> `OK <len>` then `len` bytes of ciphertext
//! - `FINISH <snap> OK|FAIL` -> `OK` (on OK, clears the captured change bits)
//! - `STOP` -> `OK` (the device is unmounted and the daemon exits; the
//!   connection may also just close) or `ERR <why>` (busy: nothing changed)
//! - `GROW <bytes>` -> `OK` once the device has its new size (online
//!   ModifyVolume)
//! - `HEALTH` -> `OK <io errors> <unix seconds of the latest, 0: none>`

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
}
