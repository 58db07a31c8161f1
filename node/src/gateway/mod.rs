//! The client front door, in two: the transport-independent [`core`]
//! (hello, session check, `Method` → service → reply, pushes and their
//! subscriptions, limits per connection) and the transports under it,
//! each implementing [`core::Connection`]: [`quic`] (`courier/1`) and
//! [`web`] (WebTransport for browsers, on the same QUIC endpoint). A
//! transport plugs in beside the others without touching the services.

pub mod core;
pub mod doors;
mod methods;
pub mod model;
pub mod quic;
pub mod web;

pub use self::core::{Client, Connection, DatagramError, Door};
pub use quic::{ALPN, endpoint};
