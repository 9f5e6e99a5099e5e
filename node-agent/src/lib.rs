//! nightcast-agent: the node agent as a library. The binary (`main.rs`) is a thin command line
//! over it.
//!
//! Module map:
//! - [`daemon`]: `nightcast-agent run`: enrolment through the relay, the plan, preparation of the
//!   next master (fetch, seeded assembly), reports; the I/O shell around [`workstation`].
//! - [`workstation`]: pure: what the workstation does at each tick (sessions, resets, swaps,
//!   rollbacks), what to prepare, when the night's work is done; tested in simulated time.
//! - [`station`]: the seat's workstation carried out (the VM built from the seat's profile, resets
//!   that do not block the loop, trial boots, bad versions recorded, rollbacks); the shell around
//!   [`workstation`], used by the daemon.
//! - [`verdicts`]: the master on trial and the versions that did not come up on this NUC, kept on
//!   disk.
//! - [`identity`]: the machine's stable hardware id (DMI UUID, machine-id, MAC) and its MACs.
//! - [`slots`]: the master slots (`current`, `next`, `previous`), a crash-safe state machine on
//!   disk with an event log.
//! - [`hypervisor`]: the session VM on a throw-away qcow2 overlay over the master: the
//!   [`hypervisor::Hypervisor`] trait, [`hypervisor::Qemu`] and [`hypervisor::Fake`].
//! - [`profile`]: machine profiles (firmware, acceleration, device models, the seat's identity)
//!   and the QEMU command line built from them; pure.
//! - [`profile_source`]: which profile a start uses (the NUC's override, the catalogue's, the
//!   NUC's default) and the catalogue's signed profiles this NUC verified, kept on disk.
//! - [`qmp`]: QMP and guest agent clients (power button, `guest-ping`, `guest-exec`, files).
//! - [`usb`]: pure: which USB devices plugged into the NUC the site's policy passes to the
//!   guest, read from sysfs, as QMP `device_add` / `device_del`.
//! - [`kiosk`]: the NUC's screen: the VM full screen during a session, a status page between
//!   sessions (what to show: pure; the agent as the X server's window manager: `kiosk::x11`).
//! - [`peers`]: peer sharing inside a site: the agent's peer server (verified chunks of what it
//!   holds, to its site's agents only), which chunk from whom (pure), the multi-source fetch.
//! - [`health`]: did the guest boot (serial marker, guest agent, time limit); pure.
//! - `config`: `agent.toml`.
//!
//! Architecture invariants: nothing but `daemon` reads the clock (time is passed in); nothing but
//! `daemon` and what it runs (`prepare`, `peers`) opens a network connection; nothing writes to a master image once it is marked ready.

pub mod config;
pub mod daemon;
mod enrol;
pub mod expect;
pub mod health;
pub mod hypervisor;
pub mod identity;
pub mod kiosk;
pub mod orders;
pub mod peers;
mod prepare;
pub mod profile;
pub mod profile_source;
pub mod qmp;
pub mod slots;
pub mod station;
pub mod usb;
pub mod verdicts;
pub mod workstation;
