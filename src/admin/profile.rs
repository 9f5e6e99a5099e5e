//! `nightcast master profile set | show | clear | list`: the machine profile the catalogue assigns
//! to a master (every version of it), which every NUC running it builds its VM from (see
//! docs/WORKSTATION.md). The controller signs it; relays pass it on and cannot change it.

use anyhow::Result;
use clap::Subcommand;
use image_tools::api::{MasterProfile, SetProfile};
use image_tools::profile::{
    parse_health_signals, Accel, Amount, DiskModel, DiskSize, Firmware, HealthCheck, NicModel,
    Profile,
};
use image_tools::MasterName;

use super::{printed, table, Printed};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Give a master (every version of it) the machine its VM needs on every NUC, e.g. BIOS and
    /// SATA for a Windows 7 image without virtio drivers. It replaces the master's previous
    /// profile whole: a setting not given takes its default. NUCs use it from their next VM
    /// start (a session under way keeps its VM); a NUC whose own config names the master
    /// (`[profiles.NAME]`) keeps its own.
    Set {
        /// The master's name (see `nightcast master list`).
        master: MasterName,
        /// bios (SeaBIOS: Windows 7) or uefi (OVMF: Windows 10/11, Linux).
        #[arg(long, default_value = "uefi")]
        firmware: Firmware,
        /// kvm, tcg (emulated, slow) or auto (KVM, and TCG when KVM cannot run the guest).
        #[arg(long, default_value = "auto")]
        accel: Accel,
        /// The disk the guest sees: virtio, or sata for images without virtio drivers.
        #[arg(long, default_value = "virtio")]
        disk: DiskModel,
        /// The network card the guest sees: virtio, e1000 (every Windows has its driver), or none.
        #[arg(long, default_value = "virtio", value_parser = nic)]
        nic: Nic,
        /// Memory: a share of the NUC's (60%) or MiB (4096).
        #[arg(long, default_value = "50%")]
        memory: Amount,
        /// Virtual CPUs: a number (2) or a share of the NUC's (50%).
        #[arg(long, default_value = "2")]
        vcpus: Amount,
        /// What proves the guest booted: serial (the line NIGHTCAST-READY on its first serial
        /// port), agent (the QEMU guest agent answers), or serial,agent (both).
        #[arg(long, default_value = "serial,agent", value_parser = health)]
        health: Health,
        /// Seconds the guest has to prove it booted; past that, a new version is rolled back.
        #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=3600))]
        within: u64,
        /// Give each seat a second disk of this size (512M, 2G) that it keeps from one session
        /// to the next (course material a trainer leaves for the week), while the master's disk
        /// is reset as always. It lives on the NUC: a spare that takes the seat starts with an
        /// empty one. Without it, no second disk (one made before stays on the NUC, unused).
        #[arg(long, value_name = "SIZE")]
        persistent_disk: Option<DiskSize>,
        /// Give the guest a virtual TPM 2.0 (Windows 11, BitLocker); it starts empty at every
        /// session, like the master's disk.
        #[arg(long)]
        tpm: bool,
        /// No sound card in the guest (by default it has one, played on the NUC's speakers or
        /// headphones).
        #[arg(long)]
        no_audio: bool,
    },
    /// Show a master's profile, or say that NUCs use their own.
    Show {
        /// The master's name (see `nightcast master list`).
        master: MasterName,
    },
    /// Remove a master's profile: each NUC's own default applies again from its next VM start.
    Clear {
        /// The master's name (see `nightcast master list`).
        master: MasterName,
    },
    /// Every master's profile.
    List,
}

/// `--nic`: a model or none.
#[derive(Clone, Copy, Debug)]
pub struct Nic(Option<NicModel>);

fn nic(s: &str) -> Result<Nic, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Nic(None));
    }
    s.parse()
        .map(|m| Nic(Some(m)))
        .map_err(|_| format!("{s:?}: expected virtio, e1000 or none"))
}

/// `--health`: which signals prove a boot.
#[derive(Clone, Copy, Debug)]
pub struct Health {
    serial: bool,
    agent: bool,
}

fn health(s: &str) -> Result<Health, String> {
    parse_health_signals(s)
        .map(|(serial, agent)| Health { serial, agent })
        .map_err(|e| e.to_string())
}

/// A profile in words, or what applies without one.
fn words(p: &MasterProfile) -> String {
    match &p.profile {
        Some(profile) => format!("{}: {profile}", p.name),
        None => format!(
            "{}: no profile in the catalogue: each NUC uses its own ([profile] in its agent.toml)",
            p.name
        ),
    }
}

pub(super) fn run(client: &Client, cmd: ProfileCmd) -> Result<Printed> {
    match cmd {
        ProfileCmd::Set {
            master,
            firmware,
            accel,
            disk,
            nic,
            memory,
            vcpus,
            health,
            within,
            persistent_disk,
            tpm,
            no_audio,
        } => {
            let profile = Profile {
                firmware,
                accel,
                disk,
                nic: nic.0,
                memory,
                vcpus,
                health: HealthCheck {
                    serial_marker: health.serial,
                    guest_agent: health.agent,
                    within_secs: within,
                },
                persistent_disk,
                tpm,
                audio: !no_audio,
                ..Profile::default()
            };
            let p = put(client, &master, Some(profile))?;
            let text = format!(
                "{}\nNUCs running {} build their VM from it from their next start (a session under way keeps its VM)",
                words(&p),
                p.name
            );
            printed(&p, text)
        }
        ProfileCmd::Clear { master } => {
            let p = put(client, &master, None)?;
            printed(&p, words(&p))
        }
        ProfileCmd::Show { master } => {
            let p: MasterProfile = client.ask("GET", &format!("/v1/masters/{master}/profile"))?;
            printed(&p, words(&p))
        }
        ProfileCmd::List => {
            let rows: Vec<MasterProfile> = client.ask("GET", "/v1/masters/profiles")?;
            let text = table(
                &["MASTER", "PROFILE"],
                rows.iter().map(|p| {
                    vec![
                        p.name.to_string(),
                        p.profile
                            .as_ref()
                            .map_or_else(|| "(each NUC's own)".to_owned(), ToString::to_string),
                    ]
                }),
            );
            printed(&rows, text)
        }
    }
}

fn put(client: &Client, master: &MasterName, profile: Option<Profile>) -> Result<MasterProfile> {
    client.send(
        "PUT",
        &format!("/v1/masters/{master}/profile"),
        &SetProfile { profile },
    )
}
