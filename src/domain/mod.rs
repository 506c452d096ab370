//! The pure core: what a message is, which targets it goes to, how call
//! outcomes become a disposition, and what a dead-lettered message says about
//! itself.
//!
//! Nothing here performs I/O or knows about lapin or reqwest; the edges
//! (`broker`, `api`) convert at the boundary, so every rule below is tested with
//! plain unit tests.

pub mod dead_letter;
pub mod failure;
pub mod filter;
pub mod message;
pub mod outcome;
pub mod target;

pub use dead_letter::{HeaderValue, Reason};
pub use message::{InboundMessage, InvalidPayload, MessageId};
pub use outcome::{decide, CallFailure, CallOutcome, DeadLetter, Disposition, FailureKind};
pub use target::{BadTargetName, BodyShape, TargetName, TargetSet};
