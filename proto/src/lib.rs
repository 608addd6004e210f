//! Generated gRPC types and services of `proto/mpcvit/v1` (client API,
//! party-to-party link, dealer). See the `.proto` files for the contract.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// `mpcvit.v1`.
pub mod v1 {
    tonic::include_proto!("mpcvit.v1");
}
