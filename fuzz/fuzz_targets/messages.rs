//! Every protobuf message a server accepts, decoded as tonic decodes it,
//! then through the checks that need no running server: ids, the bounded
//! echo of a requested model name, and statuses' bounded messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcvit_proto::v1::{InferRequest, ListModelsRequest, PeerFrame, ProvisionRequest, peer_frame};
use mpcvit_server::ServerError;
use mpcvit_server::error::MAX_STATUS_MESSAGE;
use prost::Message;

fn bounded(e: ServerError) {
    let s = e.to_status();
    assert!(s.message().len() <= MAX_STATUS_MESSAGE + 32);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(r) = InferRequest::decode(bytes) {
                bounded(ServerError::unknown_model(&r.model));
                if let Err(e) = mpcvit_server::id16(&r.session_id, "session id") {
                    bounded(e);
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
                        bounded(ServerError::unknown_model(&h.model));
                        let _ = mpcvit_server::id16(&h.pairing_id, "pairing id");
                    }
                    peer_frame::Kind::Session(h) => {
                        let _ = mpcvit_server::id16(&h.pairing_id, "pairing id");
                        let _ = mpcvit_server::id16(&h.session_id, "session id");
                    }
                    _ => {}
                }
            }
        }
        _ => {
            if let Ok(r) = ProvisionRequest::decode(bytes)
                && let Some(mpcvit_proto::v1::provision_request::Kind::Hello(h)) = r.kind
            {
                let _ = mpcvit_server::id16(&h.pairing_id, "pairing id");
                if h.manifest_json.len() <= 1 << 20 {
                    let _ = model::ModelConfig::from_manifest_json(&h.manifest_json);
                }
            }
        }
    }
});
