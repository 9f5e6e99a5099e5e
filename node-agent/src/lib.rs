//! nightcast-agent: the node agent's local building blocks, as a library. The binary (`main.rs`)
//! is a thin command line over it; the network side (enrolment via the relay, fetching chunks over
//! QUIC) comes later and will drive these blocks.
//!
//! Module map:
//! - [`identity`]: the machine's stable hardware id (DMI UUID, machine-id, MAC) and its MACs.
//!
//! Architecture invariants: nothing here reads the wall clock (time is passed in); nothing here
//! opens a network connection.

pub mod identity;
