//! Party 1's session rendezvous: a client's request and party 0's `Session`
//! stream for the same session id meet here, whichever comes first. Each
//! half waits at most the join timeout for the other; an abandoned half is
//! removed (a waiting client's when its request ends, a waiting stream's by
//! a timer), so unmatched ids do not pile up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mpcvit_proto::v1::SessionHeader;
use tokio::sync::oneshot;

use super::lock;
use crate::bridge::PeerStream;
use crate::error::ServerError;
use crate::tls::Role;

/// One half of a session, waiting for the other. The number tells a slot
/// from a later one with the same id.
enum Slot {
    /// Party 0's stream arrived first.
    Peer(SessionHeader, PeerStream, u64),
    /// The client's request arrived first.
    Waiter(oneshot::Sender<(SessionHeader, PeerStream)>, u64),
}

/// The waiting halves, by session id.
#[derive(Default)]
pub(super) struct Rendezvous {
    slots: Mutex<HashMap<[u8; 16], Slot>>,
    counter: AtomicU64,
}

/// Removes a client's waiter when its request ends (answered, timed out or
/// cancelled), so abandoned session ids do not pile up.
struct WaiterGuard<'a> {
    rendezvous: &'a Rendezvous,
    sid: [u8; 16],
    n: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut slots = lock(&self.rendezvous.slots);
        if matches!(slots.get(&self.sid), Some(Slot::Waiter(_, m)) if *m == self.n) {
            slots.remove(&self.sid);
        }
    }
}

impl Rendezvous {
    fn next_number(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The client's half: wait up to `wait` for party 0's stream for
    /// session `sid`.
    pub async fn claim(
        &self,
        sid: [u8; 16],
        wait: Duration,
    ) -> Result<(SessionHeader, PeerStream), ServerError> {
        let n = self.next_number();
        let rx = {
            let mut slots = lock(&self.slots);
            match slots.remove(&sid) {
                Some(Slot::Peer(h, s, _)) => return Ok((h, s)),
                Some(w @ Slot::Waiter(..)) => {
                    slots.insert(sid, w);
                    return Err(ServerError::DuplicateSession { session: sid });
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(sid, Slot::Waiter(tx, n));
                    rx
                }
            }
        };
        let _guard = WaiterGuard {
            rendezvous: self,
            sid,
            n,
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(x)) => Ok(x),
            _ => Err(ServerError::NotJoined {
                peer: Role::Party(0),
                step: "open this session",
                waited: wait,
            }),
        }
    }

    /// Party 0's half: hand its stream for session `sid` to the waiting
    /// client, or leave it for `wait` (then the stream is dropped, which
    /// ends it at party 0).
    pub fn offer(
        self: &Arc<Self>,
        sid: [u8; 16],
        header: SessionHeader,
        stream: PeerStream,
        wait: Duration,
    ) -> Result<(), ServerError> {
        let mut slots = lock(&self.slots);
        match slots.remove(&sid) {
            Some(Slot::Waiter(w, _)) => {
                if let Err((_, s)) = w.send((header, stream)) {
                    drop(s);
                    return Err(ServerError::ClientGone);
                }
                Ok(())
            }
            Some(p @ Slot::Peer(..)) => {
                slots.insert(sid, p);
                Err(ServerError::DuplicateSession { session: sid })
            }
            None => {
                let n = self.next_number();
                slots.insert(sid, Slot::Peer(header, stream, n));
                let rv: Weak<Rendezvous> = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(rv) = rv.upgrade() {
                        let mut slots = lock(&rv.slots);
                        if matches!(slots.get(&sid), Some(Slot::Peer(_, _, m)) if *m == n) {
                            slots.remove(&sid);
                        }
                    }
                });
                Ok(())
            }
        }
    }
}
