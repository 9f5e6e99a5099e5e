//! nightcast-agent: the node agent's local building blocks, as a library. The binary (`main.rs`)
//! is a thin command line over it; the network side (enrolment via the relay, fetching chunks over
//! QUIC) comes later and will drive these blocks.
//!
//! Module map:
//! - [`identity`]: the machine's stable hardware id (DMI UUID, machine-id, MAC) and its MACs.
//! - [`slots`]: the master slots (`current`, `next`, `previous`), a crash-safe state machine on
//!   disk with an event log.
//! - [`hypervisor`]: the session VM on a throw-away qcow2 overlay over the master: the
//!   [`hypervisor::Hypervisor`] trait, [`hypervisor::Qemu`] and [`hypervisor::Fake`].
//! - [`profile`]: machine profiles (firmware, acceleration, device models, the seat's identity)
//!   and the QEMU command line built from them; pure.
//! - [`qmp`]: QMP and guest agent clients (power button, `guest-ping`, `guest-exec`, files).
//! - [`health`]: did the guest boot (serial marker, guest agent, time limit); pure.
//!
//! Architecture invariants: nothing here reads the wall clock (time is passed in); nothing here
//! opens a network connection; nothing here writes to a master image once it is marked ready.

pub mod config;
pub mod daemon;
pub mod health;
pub mod hypervisor;
pub mod identity;
pub mod profile;
pub mod qmp;
pub mod slots;
