//! Wire types of Courier. Generated code stays in its module; the layers above
//! build validated domain types from it.

/// The node-to-node and operator contract (`proto/peer.proto`).
pub mod peer {
    tonic::include_proto!("courier.peer.v1");
}

/// The client protocol (`proto/client.proto`), spoken over QUIC.
pub mod client {
    tonic::include_proto!("courier.client.v1");
}

pub mod code;
pub mod frame;

pub use code::Code;
