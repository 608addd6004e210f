//! Every protobuf message a server accepts, decoded as tonic decodes it,
//! then handed to the checks its handler runs on it before any work
//! (`mpcvit_server::admission`, the functions the handlers call), against a
//! party that serves one model, [`MODEL`]: a client's `InferRequest`,
//! party 0's `Pair` (and its split) and `Session` headers at party 1, a party's hello at the
//! dealer (from either party's certificate) and the manifest it carries.
//! Every refusal's status message must stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcvit_proto::v1::{
    InferRequest, ListModelsRequest, PeerFrame, ProvisionRequest, peer_frame, provision_request,
};
use mpcvit_server::ServerError;
use mpcvit_server::admission;
use mpcvit_server::error::MAX_STATUS_MESSAGE;
use mpcvit_server::stamp::SplitId;
use mpcvit_server::tls::Role;
use prost::Message;

/// The model the fuzzed party serves, its input length in ring elements
/// (small, so that the fuzzer reaches admitted requests) and the digest of
/// its plans.
const MODEL: &str = "small";
const INPUT_LEN: usize = 4;
const DIGEST: [u8; 32] = [7; 32];
/// The split its share comes from.
const SPLIT: SplitId = SplitId([9; 16]);

fn bounded(e: ServerError) {
    let s = e.to_status();
    assert!(s.message().len() <= MAX_STATUS_MESSAGE + 32);
}

fn served<T>(value: T) -> impl FnOnce(&str) -> Option<((), T)> {
    move |name| (name == MODEL).then_some(((), value))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(r) = InferRequest::decode(bytes) {
                match admission::infer(r, served(INPUT_LEN)) {
                    Ok(a) => assert_eq!(a.input.len(), INPUT_LEN),
                    Err(e) => bounded(e),
                }
            }
        }
        1 => {
            let _ = ListModelsRequest::decode(bytes);
        }
        2 => {
            if let Ok(PeerFrame { kind: Some(k) }) = PeerFrame::decode(bytes) {
                match k {
                    peer_frame::Kind::Pair(h) => {
                        if let Err(e) = admission::pair_header(&h, served(DIGEST)) {
                            bounded(e);
                        }
                        if let Err(e) = admission::same_split(&h, MODEL, SPLIT) {
                            bounded(e);
                        }
                    }
                    peer_frame::Kind::Session(h) => {
                        if let Err(e) = admission::session_header(&h) {
                            bounded(e);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {
            if let Ok(ProvisionRequest {
                kind: Some(provision_request::Kind::Hello(h)),
            }) = ProvisionRequest::decode(bytes)
            {
                for caller in [Role::Party(0), Role::Party(1)] {
                    match admission::party_hello(&h, caller) {
                        // Admitted: the dealer then records the manifest's
                        // plans, which starts by parsing it.
                        Ok(_) => {
                            if let Err(e) = model::ModelConfig::from_manifest_json(&h.manifest_json)
                            {
                                bounded(ServerError::Model(e));
                            }
                        }
                        Err(e) => bounded(e),
                    }
                }
            }
        }
    }
});
