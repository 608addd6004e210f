//! The checks a server runs on a decoded message before any work, as pure
//! functions of the message and of what the server serves (no state, no
//! I/O): the handlers call them (a party's `Infer`, `Pair` and `Session`
//! handlers, the dealer's `Provision`), and the fuzz target `messages`
//! (`fuzz/fuzz_targets/messages.rs`) hands every message it decodes to the
//! same functions. What needs the running server (the caller's certificate,
//! shutdown, the rendezvous, recording a manifest's plans) stays in the
//! handlers.

use mpc_core::Share;
use mpcvit_proto::v1::{Hello, InferRequest, PairHeader, SessionHeader};
use zeroize::Zeroizing;

use crate::error::ServerError;
use crate::id16;
use crate::stamp::SplitId;
use crate::tls::Role;

/// A client's request, admitted: the session id and the input share.
#[derive(Debug)]
pub struct Infer<M> {
    /// What `served` returned for the model (the party's entry for it).
    pub model: M,
    pub session: [u8; 16],
    pub input: Share,
}

/// Check a client's `InferRequest`: `served(name)` gives the model of that
/// name and its input length in ring elements if it is served; the session
/// id must be 16 bytes and the share exactly the input length (8 bytes per
/// element, little-endian). The share's bytes are wiped once read, whether
/// admitted or not.
pub fn infer<M>(
    r: InferRequest,
    served: impl FnOnce(&str) -> Option<(M, usize)>,
) -> Result<Infer<M>, ServerError> {
    let share_bytes = Zeroizing::new(r.input_share);
    let (model, input_len) =
        served(&r.model).ok_or_else(|| ServerError::unknown_model(&r.model))?;
    let session = id16(&r.session_id, "session id")?;
    if share_bytes.len() != input_len * 8 {
        return Err(ServerError::InputLength {
            // Served, so the name is the party's own (not a caller string).
            model: r.model,
            got: share_bytes.len(),
            elements: input_len,
        });
    }
    let input = Share::new(words(&share_bytes));
    Ok(Infer {
        model,
        session,
        input,
    })
}

/// Ring elements from little-endian bytes (whole 8-byte words; the caller
/// checked the length).
fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks_exact(8) gives 8 bytes")))
        .collect()
}

/// Party 1: check party 0's pair header: `served(name)` gives the model of
/// that name and the digest of its plans if it is served; the digests must
/// agree and the pairing id be 16 bytes. The model and the pairing id.
pub fn pair_header<M>(
    h: &PairHeader,
    served: impl FnOnce(&str) -> Option<(M, [u8; 32])>,
) -> Result<(M, [u8; 16]), ServerError> {
    let (model, digest) = served(&h.model).ok_or_else(|| ServerError::unknown_model(&h.model))?;
    if h.plan_digest != digest {
        return Err(ServerError::PlanMismatch {
            // Served, so the name is the party's own.
            model: h.model.clone(),
            peer: Role::Party(0),
        });
    }
    Ok((model, id16(&h.pairing_id, "pairing id")?))
}

/// Party 1: check that party 0's share (`h.split_id`) comes from the same
/// split as this party's (`ours`) for model `model` (the name as served);
/// [`ServerError::SplitMismatch`] names both identifiers.
pub fn same_split(h: &PairHeader, model: &str, ours: SplitId) -> Result<(), ServerError> {
    if h.split_id == ours.0 {
        return Ok(());
    }
    let theirs = match <[u8; 16]>::try_from(h.split_id.as_slice()) {
        Ok(id) => SplitId(id).to_string(),
        Err(_) if h.split_id.is_empty() => "none (an older party 0)".into(),
        Err(_) => format!("of {} bytes (not an identifier)", h.split_id.len()),
    };
    Err(ServerError::SplitMismatch {
        model: model.to_string(),
        party0: theirs,
        party1: ours.to_string(),
    })
}

/// Party 1: check party 0's session header; the session id.
pub fn session_header(h: &SessionHeader) -> Result<[u8; 16], ServerError> {
    id16(&h.session_id, "session id")
}

/// A party's hello at the dealer, admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartyHello {
    /// The party, 0 or 1 (the one its certificate names).
    pub party: usize,
    pub pairing: [u8; 16],
    /// The party's X25519 public key.
    pub public_key: [u8; 32],
}

/// The dealer: check a party's hello from `caller` (the role of its
/// certificate): the party it claims must be its own, the pairing id 16
/// bytes, the manifest at most [`crate::defaults::MAX_MANIFEST_BYTES`] and
/// the public key 32 bytes. (The manifest's plans and their digest are
/// checked by recording them.)
pub fn party_hello(h: &Hello, caller: Role) -> Result<PartyHello, ServerError> {
    let party = h.party as usize;
    if party > 1 || caller != Role::Party(party as u8) {
        return Err(ServerError::RoleClaim {
            caller,
            claimed: h.party,
        });
    }
    let pairing = id16(&h.pairing_id, "pairing id")?;
    let limit = crate::defaults::MAX_MANIFEST_BYTES;
    if h.manifest_json.len() > limit {
        return Err(ServerError::TooLarge {
            what: "manifest",
            size: h.manifest_json.len(),
            limit,
        });
    }
    let public_key = h
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| ServerError::FieldLength {
            field: "public key",
            got: h.public_key.len(),
            expected: 32,
        })?;
    Ok(PartyHello {
        party,
        pairing,
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn served(name: &str) -> Option<((), usize)> {
        (name == "small").then_some(((), 2))
    }

    #[test]
    fn infer_requests_are_checked_in_order() {
        let ok = InferRequest {
            model: "small".into(),
            session_id: vec![7; 16],
            input_share: [1u64, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let a = infer(ok.clone(), served).unwrap();
        assert_eq!(a.session, [7; 16]);
        assert_eq!(a.input.as_slice(), &[1, 2]);
        let code = |r: InferRequest| infer(r, served).unwrap_err().code();
        let unknown = InferRequest {
            model: "x".repeat(1 << 20),
            ..ok.clone()
        };
        let e = infer(unknown, served).unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.to_status().message().len() <= crate::error::MAX_STATUS_MESSAGE);
        let short_id = InferRequest {
            session_id: vec![7; 15],
            ..ok.clone()
        };
        assert_eq!(code(short_id), Code::InvalidArgument);
        let long_share = InferRequest {
            input_share: vec![0; 24],
            ..ok.clone()
        };
        assert_eq!(code(long_share), Code::InvalidArgument);
        let odd_share = InferRequest {
            input_share: vec![0; 15],
            ..ok
        };
        assert_eq!(code(odd_share), Code::InvalidArgument);
    }

    #[test]
    fn pair_and_session_headers() {
        let digest = [3u8; 32];
        let find = |name: &str| (name == "small").then_some(((), digest));
        let h = PairHeader {
            model: "small".into(),
            pairing_id: vec![1; 16],
            plan_digest: digest.to_vec(),
            split_id: vec![9; 16],
        };
        assert_eq!(pair_header(&h, find).unwrap().1, [1; 16]);
        same_split(&h, "small", SplitId([9; 16])).unwrap();
        let e = same_split(&h, "small", SplitId([8; 16])).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        let msg = e.to_string();
        assert!(
            msg.contains(&"09".repeat(16)) && msg.contains(&"08".repeat(16)),
            "both identifiers: {msg}"
        );
        let older = PairHeader {
            split_id: vec![],
            ..h.clone()
        };
        assert!(
            same_split(&older, "small", SplitId([8; 16]))
                .unwrap_err()
                .to_string()
                .contains("none")
        );
        let other = PairHeader {
            plan_digest: vec![4; 32],
            ..h.clone()
        };
        assert_eq!(
            pair_header(&other, find).unwrap_err().code(),
            Code::FailedPrecondition
        );
        let unknown = PairHeader {
            model: "big".into(),
            ..h
        };
        assert_eq!(
            pair_header(&unknown, find).unwrap_err().code(),
            Code::NotFound
        );
        let s = SessionHeader {
            pairing_id: vec![1; 16],
            session_id: vec![2; 3],
        };
        assert_eq!(
            session_header(&s).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn hellos_claim_their_own_role() {
        let h = Hello {
            party: 1,
            pairing_id: vec![5; 16],
            public_key: vec![9; 32],
            manifest_json: "{}".into(),
            plan_digest: vec![],
        };
        let ok = party_hello(&h, Role::Party(1)).unwrap();
        assert_eq!((ok.party, ok.pairing, ok.public_key), (1, [5; 16], [9; 32]));
        assert_eq!(
            party_hello(&h, Role::Party(0)).unwrap_err().code(),
            Code::Unauthenticated
        );
        let key = Hello {
            public_key: vec![9; 31],
            ..h.clone()
        };
        assert_eq!(
            party_hello(&key, Role::Party(1)).unwrap_err().code(),
            Code::InvalidArgument
        );
        let big = Hello {
            manifest_json: " ".repeat(crate::defaults::MAX_MANIFEST_BYTES + 1),
            ..h
        };
        assert_eq!(
            party_hello(&big, Role::Party(1)).unwrap_err().code(),
            Code::ResourceExhausted
        );
    }
}
