//! Batches of cheap stateless calls run by one thread (`Kms::call_batch`):
//! while a call of a batch runs, the shared transaction hands its ticket
//! here instead of waiting for the commit, and the batch waits for all of
//! its tickets after its last call.

use std::cell::RefCell;

use serde_json::Value;

use super::operation::{is_prepared, is_read_only};
use super::RequestContext;

/// One call of a batch.
pub struct Call {
    pub ctx: RequestContext,
    pub operation: String,
    pub request: Value,
}

/// Does this call suit a batch: a stateless operation whose body runs on
/// the write connection in the shared transaction and takes microseconds?
/// State-changing operations (a durable commit each), the bodies that
/// compute for long (RSA, ECDH: on read connections, side by side) and
/// the operations prepared before their transaction (GenerateDataKeyPair
/// generates an RSA_4096 pair in up to seconds) would hold up the calls
/// queued behind them.
pub fn suits(operation: &str, request: &Value) -> bool {
    is_read_only(operation)
        && !is_prepared(operation)
        && !super::service::computes(operation, request)
}

thread_local! {
    /// The tickets of the batch call this thread is running, if it is.
    static DEFERRED: RefCell<Option<Vec<u64>>> = const { RefCell::new(None) };
}

/// Hands `ticket` to the batch this thread runs; false outside a batch,
/// where the caller waits for the commit itself.
pub(super) fn defer(ticket: u64) -> bool {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(tickets) => {
            tickets.push(ticket);
            true
        }
        None => false,
    })
}

/// While it lives, this thread's calls defer their tickets; dropping it
/// (also on a panic) ends that.
pub(super) struct Deferring(());

impl Deferring {
    pub(super) fn start() -> Self {
        DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::new()));
        Deferring(())
    }

    /// The tickets deferred since `start`.
    pub(super) fn tickets(&self) -> Vec<u64> {
        DEFERRED.with(|d| {
            d.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }
}

impl Drop for Deferring {
    fn drop(&mut self) {
        DEFERRED.with(|d| *d.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_cheap_stateless_calls_suit_a_batch() {
        let none = json!({});
        assert!(suits("Encrypt", &none));
        assert!(suits("GenerateDataKey", &none));
        assert!(suits("DescribeKey", &none));
        assert!(suits(
            "Decrypt",
            &json!({"EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
        ));
        assert!(!suits(
            "Decrypt",
            &json!({"EncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
        ));
        assert!(!suits("Sign", &none));
        assert!(!suits("GenerateDataKeyPair", &none));
        assert!(!suits("GenerateDataKeyPairWithoutPlaintext", &none));
        assert!(!suits("CreateKey", &none));
        assert!(!suits("NoSuchOperation", &none));
    }

    #[test]
    fn tickets_are_deferred_only_inside_a_batch() {
        assert!(!defer(1));
        {
            let d = Deferring::start();
            assert!(defer(2));
            assert!(defer(3));
            assert_eq!(d.tickets(), [2, 3]);
        }
        assert!(!defer(4));
    }
}
