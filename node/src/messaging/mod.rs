//! The messaging service: chats as replicated ordered logs (see `logic.rs`
//! for the model and `docs/architecture.md` for the design).

pub mod logic;

pub use logic::{ChatError, ChatKind};
