//! Machine profiles: what a master needs from its VM, and the QEMU command line built from it.
//!
//! A [`Profile`] (`image_tools::profile`, shared with the controller's catalogue) says what the
//! guest needs (firmware, acceleration, disk and NIC models, memory and vCPUs, display, how it
//! proves it booted); a [`Seat`] says who the guest is (hostname and MAC, derived from the seat,
//! so they stay the same when a spare NUC takes the seat); a [`Host`] says what this NUC has (KVM,
//! CPUs, memory, firmware files, how the guest reaches the LAN); [`Paths`]
//! say where the session's files are. [`argv`] turns the four into QEMU's arguments.
//!
//! Devices a profile may add: a seat's persistent second disk (its file is per seat, see
//! [`Paths::persistent_disk`]), a virtual TPM (QEMU talks to `swtpm` on [`Paths::tpm_socket`]), a
//! sound card (on the NUC's output, [`Host::audio`]). USB passthrough is not in the command line:
//! devices are added while the VM runs (`usb`).
//!
//! Pure: nothing here reads a file, the clock or the machine. Probing the host and running QEMU is
//! `hypervisor`'s job.

use std::fmt;
use std::path::{Path, PathBuf};

pub use image_tools::profile::{
    Accel, Amount, DiskModel, DiskSize, Display, Firmware, HealthCheck, NicModel, Profile,
    UsbPolicy,
};

/// The QEMU id of the USB controller the NUC's passed devices go on, and its bus.
pub const USB_PASS_CONTROLLER: &str = "usbpass";
pub const USB_PASS_BUS: &str = "usbpass.0";

/// The accelerator actually used for one start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    Kvm,
    Tcg,
}

impl fmt::Display for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Chosen::Kvm => "kvm",
            Chosen::Tcg => "tcg",
        })
    }
}

/// A guest hostname: 1 to 63 of `[a-z0-9-]`, not starting or ending with `-` (RFC 1123). Windows
/// keeps only the first 15 characters as its NetBIOS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    pub fn new(value: &str) -> Result<Hostname, ProfileError> {
        let ok = !value.is_empty()
            && value.len() <= 63
            && !value.starts_with('-')
            && !value.ends_with('-')
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Hostname(value.to_owned()))
        } else {
            Err(ProfileError::Hostname(value.chars().take(80).collect()))
        }
    }

    /// `room-seat`, lower-cased, with every other character than `[a-z0-9]` made a `-`, runs of
    /// `-` folded, cut to 63.
    pub fn derive(room: &str, seat: &str) -> Result<Hostname, ProfileError> {
        let mut out = String::new();
        for c in format!("{room}-{seat}").chars() {
            let c = c.to_ascii_lowercase();
            let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            };
            if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
                out.push(c);
            }
        }
        out.truncate(63);
        let out = out.trim_end_matches('-');
        Hostname::new(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A MAC address; those derived here are unicast and locally administered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Who the guest is: the seat's, never the NUC's, so a spare that takes a seat gives its guest
/// the same hostname and MAC (and so the same DHCP reservation) as the NUC it replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seat {
    pub hostname: Hostname,
    pub mac: Mac,
}

impl Seat {
    /// The seat `room/seat` of `site`: hostname `room-seat`, MAC from a hash of all three.
    pub fn derive(site: &str, room: &str, seat: &str) -> Result<Seat, ProfileError> {
        Ok(Seat {
            hostname: Hostname::derive(room, seat)?,
            mac: derive_mac(site, room, seat),
        })
    }
}

/// The first 6 bytes of BLAKE3 over the seat's names, made unicast and locally administered.
pub fn derive_mac(site: &str, room: &str, seat: &str) -> Mac {
    let mut h = blake3::Hasher::new();
    for part in ["nightcast seat mac", site, room, seat] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    let d = d.as_bytes();
    Mac([(d[0] & 0xfc) | 0x02, d[1], d[2], d[3], d[4], d[5]])
}

/// How the guest's NIC reaches a network: QEMU's user-mode NAT (a DHCP server of its own), or a
/// bridge on the site LAN (the site's DHCP server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    Nat,
    Bridge(String),
}

/// What this NUC has and how it is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// `/dev/kvm` can be opened.
    pub kvm: bool,
    pub cpus: u64,
    pub memory_mib: u64,
    /// OVMF's code (read-only); must be the 4 MB build, matching the vars template.
    pub ovmf_code: PathBuf,
    /// OVMF's empty variable store, copied per seat.
    pub ovmf_vars: PathBuf,
    pub network: Network,
    /// The size in pixels of the screen the VM is shown on (read when it starts), which the
    /// guest's virtual screen takes as its preferred mode; `None`: QEMU's default (1280 x 800).
    pub screen: Option<(u32, u32)>,
    /// Where the guest's sound card plays.
    pub audio: AudioOut,
    /// `swtpm`, for profiles with a TPM.
    pub swtpm: PathBuf,
    /// The site's USB policy: the guest gets a USB controller for the NUC's devices unless it
    /// is `none` (the devices themselves are added while the VM runs, `usb`).
    pub usb: UsbPolicy,
}

/// The NUC's sound output as QEMU reaches it (`-audiodev`). The agent runs as a system service
/// with no desktop session, so no PipeWire or PulseAudio server of a user: ALSA, straight to the
/// NUC's sound card; `None` where the NUC has no sound card (and in tests): the guest still has
/// its card, which plays to nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioOut {
    None,
    Alsa,
}

impl AudioOut {
    fn driver(self) -> &'static str {
        match self {
            AudioOut::None => "none",
            AudioOut::Alsa => "alsa",
        }
    }
}

impl Host {
    /// Debian's file names (package `ovmf`): the 4 MB builds (mixing 2 MB and 4 MB files crashes
    /// the firmware).
    pub const OVMF_CODE: &'static str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    pub const OVMF_VARS: &'static str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
}

/// Where a session's files are. Unix socket paths must stay under 108 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The qcow2 overlay over the master.
    pub overlay: PathBuf,
    /// This seat's copy of OVMF's variables.
    pub vars: PathBuf,
    /// QMP (QEMU's control socket).
    pub qmp: PathBuf,
    /// The guest agent's channel.
    pub qga: PathBuf,
    /// Everything the guest writes to its first serial port.
    pub serial: PathBuf,
    /// The directory of the seats' persistent disks: kept across resets and master swaps.
    pub seats: PathBuf,
    /// The virtual TPM's state (emptied at every start) and the socket QEMU reaches it on.
    pub tpm_state: PathBuf,
    pub tpm_socket: PathBuf,
}

impl Paths {
    /// The usual names in the VM's directory.
    pub fn in_dir(dir: &Path, overlay: &Path) -> Paths {
        Paths {
            overlay: overlay.to_owned(),
            vars: dir.join("ovmf-vars.fd"),
            qmp: dir.join("qmp.sock"),
            qga: dir.join("qga.sock"),
            serial: dir.join("serial.log"),
            seats: dir.join("seats"),
            tpm_state: dir.join("tpm"),
            tpm_socket: dir.join("tpm.sock"),
        }
    }

    /// The persistent disk of `seat`: one file per seat (by its hostname), so a NUC moved to
    /// another seat does not hand one seat's files to another.
    pub fn persistent_disk(&self, seat: &Seat) -> PathBuf {
        self.seats.join(format!("{}.qcow2", seat.hostname))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("{0:?} is not a usable hostname: 1 to 63 of a-z 0-9 -, not starting or ending with -")]
    Hostname(String),
    #[error("the profile asks for KVM, and this NUC has no usable /dev/kvm")]
    NoKvm,
    #[error("path {0} cannot be passed to QEMU (not UTF-8, or contains a comma)")]
    Path(PathBuf),
    #[error("bridge name {0:?} is not an interface name")]
    Bridge(String),
}

/// Which accelerator to use: `kvm_failed` says a start under KVM did not come up before (a guest
/// that nested KVM cannot run), which `Auto` answers with TCG. The second value is the reason of a
/// fall back, to be reported.
pub fn choose_accel(
    want: Accel,
    kvm: bool,
    kvm_failed: bool,
) -> Result<(Chosen, Option<&'static str>), ProfileError> {
    match want {
        Accel::Tcg => Ok((Chosen::Tcg, None)),
        Accel::Kvm if kvm => Ok((Chosen::Kvm, None)),
        Accel::Kvm => Err(ProfileError::NoKvm),
        Accel::Auto if !kvm => Ok((Chosen::Tcg, Some("no usable /dev/kvm"))),
        Accel::Auto if kvm_failed => Ok((
            Chosen::Tcg,
            Some("the guest did not come up under KVM before"),
        )),
        Accel::Auto => Ok((Chosen::Kvm, None)),
    }
}

fn path_arg(p: &Path) -> Result<String, ProfileError> {
    match p.to_str() {
        Some(s) if !s.contains(',') => Ok(s.to_owned()),
        _ => Err(ProfileError::Path(p.to_owned())),
    }
}

/// Video memory for a `w` x `h` screen: two frames of 32-bit pixels, as a power of two from QEMU's
/// default 16 MiB to its largest, 256 MiB.
fn vga_memory_mib(w: u32, h: u32) -> u64 {
    let needed = (u64::from(w) * u64::from(h) * 4 * 2).div_ceil(1 << 20);
    needed.next_power_of_two().clamp(16, 256)
}

/// QEMU's arguments (the binary first) for `profile` on `host` as `seat`, with `accel`.
pub fn argv(
    name: &str,
    profile: &Profile,
    seat: &Seat,
    host: &Host,
    paths: &Paths,
    accel: Chosen,
) -> Result<Vec<String>, ProfileError> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |args: &[&str]| a.extend(args.iter().map(|s| (*s).to_owned()));
    let qemu = path_arg(&host.qemu)?;
    let overlay = path_arg(&paths.overlay)?;
    let qmp = path_arg(&paths.qmp)?;
    let qga = path_arg(&paths.qga)?;
    let serial = path_arg(&paths.serial)?;
    let memory = profile.memory.of(host.memory_mib, 256).to_string();
    let vcpus = profile.vcpus.of(host.cpus, 1).to_string();
    let name = name.replace(',', "_");
    push(&[&qemu, "-name", &name, "-nodefaults", "-no-user-config"]);
    push(&["-machine", "q35", "-accel", &accel.to_string()]);
    // `host` passes the NUC's CPU through; under TCG `max` offers every feature QEMU emulates
    // (Windows 11 needs more than the default qemu64 has).
    let cpu = match accel {
        Chosen::Kvm => "host",
        Chosen::Tcg => "max",
    };
    push(&["-cpu", cpu, "-m", &memory, "-smp", &vcpus]);
    if profile.firmware == Firmware::Uefi {
        let code = path_arg(&host.ovmf_code)?;
        let vars = path_arg(&paths.vars)?;
        push(&[
            "-drive",
            &format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={vars}"),
        ]);
    }
    // The overlay is thrown away at every reset: no point in flushing it.
    push(&[
        "-drive",
        &format!("file={overlay},format=qcow2,if=none,id=disk0,cache=unsafe,discard=unmap"),
    ]);
    match profile.disk {
        DiskModel::Virtio => push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]),
        // q35's own AHCI controller (ICH9): buses ide.0 to ide.5.
        DiskModel::Sata => push(&["-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=1"]),
    }
    if let Some(model) = profile.nic {
        let netdev = match &host.network {
            Network::Nat => "user,id=net0".to_owned(),
            Network::Bridge(br) => {
                let ok = !br.is_empty()
                    && br.len() < 16
                    && br
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !ok {
                    return Err(ProfileError::Bridge(br.clone()));
                }
                format!("bridge,id=net0,br={br}")
            }
        };
        let device = match model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000 => "e1000",
        };
        // No option ROM: the guest never boots from the network (and iPXE costs boot time).
        push(&[
            "-netdev",
            &netdev,
            "-device",
            &format!("{device},netdev=net0,mac={},romfile=", seat.mac),
        ]);
    }
    // The seat's identity, twice: fw_cfg for Linux guests, an SMBIOS OEM string (type 11) that
    // Windows reads through WMI.
    let hostname = seat.hostname.as_str();
    if profile.persistent_disk.is_some() {
        // Made by the agent before the start (`hypervisor::devices`); written through to the
        // NUC's disk (QEMU's default cache honours the guest's flushes), never reset. The serial
        // names it in the guest: /dev/disk/by-id/virtio-nightcast-data (or ata-..._nightcast-data).
        let data = path_arg(&paths.persistent_disk(seat))?;
        push(&[
            "-drive",
            &format!("file={data},format=qcow2,if=none,id=disk1,discard=unmap"),
        ]);
        match profile.disk {
            DiskModel::Virtio => push(&[
                "-device",
                "virtio-blk-pci,drive=disk1,serial=nightcast-data",
            ]),
            DiskModel::Sata => push(&[
                "-device",
                "ide-hd,drive=disk1,bus=ide.1,serial=nightcast-data",
            ]),
        }
    }
    if profile.tpm {
        // CRB is the interface Windows 11 expects under UEFI; SeaBIOS guests get the older TIS.
        let socket = path_arg(&paths.tpm_socket)?;
        let device = match profile.firmware {
            Firmware::Uefi => "tpm-crb",
            Firmware::Bios => "tpm-tis",
        };
        push(&[
            "-chardev",
            &format!("socket,id=chrtpm,path={socket}"),
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            &format!("{device},tpmdev=tpm0"),
        ]);
    }
    if profile.audio {
        // Intel HD Audio on q35's ICH9: every Windows since 7 and Linux have its driver.
        push(&[
            "-audiodev",
            &format!("{},id=snd0", host.audio.driver()),
            "-device",
            "ich9-intel-hda,id=hda",
            "-device",
            "hda-duplex,audiodev=snd0,bus=hda.0",
        ]);
    }
    if host.usb != UsbPolicy::None {
        push(&["-device", &format!("qemu-xhci,id={USB_PASS_CONTROLLER}")]);
    }
    push(&[
        "-fw_cfg",
        &format!("name=opt/nightcast/hostname,string={hostname}"),
        "-smbios",
        &format!("type=11,value=nightcast:hostname={hostname}"),
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=qga0,path={qga},server=on,wait=off"),
        "-device",
        "virtio-serial-pci,id=vser0",
        "-device",
        "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
    ]);
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={serial}"),
        "-serial",
        "chardev:serial0",
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=qmp0,path={qmp},server=on,wait=off"),
        "-mon",
        "chardev=qmp0,mode=control",
    ]);
    push(&["-vga", "std"]);
    if let Some((w, h)) = host.screen.filter(|_| profile.display != Display::None) {
        // The screen's size as the preferred mode of the EDID the virtual VGA gives: a guest
        // with a display driver (a Windows or Linux desktop, the Linux console) takes it and
        // fills the screen, where a mode of another shape would leave bars on two sides.
        push(&[
            "-global",
            &format!("VGA.xres={w}"),
            "-global",
            &format!("VGA.yres={h}"),
            "-global",
            &format!("VGA.vgamem_mb={}", vga_memory_mib(w, h)),
        ]);
    }
    match profile.display {
        Display::None => push(&["-display", "none"]),
        Display::GtkFullScreen => push(&[
            "-display",
            "gtk,full-screen=on,show-menubar=off,window-close=off",
        ]),
        Display::Kiosk => push(&[
            "-display",
            "sdl,window-close=off,grab-mod=lshift-lctrl-lalt",
            "-full-screen",
            "-device",
            "qemu-xhci,id=kiosk-usb",
            "-device",
            "usb-tablet,bus=kiosk-usb.0",
        ]),
    }
    Ok(a)
}

/// A NUC with KVM, 4 CPUs and 16 GiB, on NAT, no screen, sound or USB passthrough.
#[cfg(test)]
pub(crate) fn test_host() -> Host {
    Host {
        qemu: "qemu-system-x86_64".into(),
        kvm: true,
        cpus: 4,
        memory_mib: 16384,
        ovmf_code: Host::OVMF_CODE.into(),
        ovmf_vars: Host::OVMF_VARS.into(),
        network: Network::Nat,
        screen: None,
        audio: AudioOut::None,
        swtpm: "swtpm".into(),
        usb: UsbPolicy::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        test_host()
    }

    fn paths() -> Paths {
        Paths::in_dir(Path::new("/var/vm"), Path::new("/var/vm/overlay.qcow2"))
    }

    fn seat() -> Seat {
        Seat::derive("lyon", "salle-1", "poste_03").unwrap()
    }

    /// The value after each occurrence of `flag`.
    fn values<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn uefi_virtio_on_kvm() {
        let a = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host(),
            &paths(),
            Chosen::Kvm,
        )
        .unwrap();
        assert_eq!(a[0], "qemu-system-x86_64");
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        assert_eq!(values(&a, "-cpu"), ["host"]);
        assert_eq!(values(&a, "-m"), ["8192"]);
        assert_eq!(values(&a, "-smp"), ["2"]);
        assert_eq!(
            values(&a, "-drive"),
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,format=raw,unit=1,file=/var/vm/ovmf-vars.fd",
                "file=/var/vm/overlay.qcow2,format=qcow2,if=none,id=disk0,cache=unsafe,discard=unmap",
            ]
        );
        let devices = values(&a, "-device");
        assert!(devices.contains(&"virtio-blk-pci,drive=disk0,bootindex=1"));
        let mac = seat().mac.to_string();
        assert!(
            devices.contains(&format!("virtio-net-pci,netdev=net0,mac={mac},romfile=").as_str())
        );
        assert_eq!(values(&a, "-netdev"), ["user,id=net0"]);
        assert_eq!(
            values(&a, "-fw_cfg"),
            ["name=opt/nightcast/hostname,string=salle-1-poste-03"]
        );
        assert_eq!(
            values(&a, "-smbios"),
            ["type=11,value=nightcast:hostname=salle-1-poste-03"]
        );
        assert_eq!(values(&a, "-serial"), ["chardev:serial0"]);
        assert!(values(&a, "-chardev").contains(&"file,id=serial0,path=/var/vm/serial.log"));
        assert!(values(&a, "-chardev")
            .contains(&"socket,id=qga0,path=/var/vm/qga.sock,server=on,wait=off"));
        assert!(values(&a, "-chardev")
            .contains(&"socket,id=qmp0,path=/var/vm/qmp.sock,server=on,wait=off"));
        assert_eq!(values(&a, "-display"), ["none"]);
        assert!(a.contains(&"-nodefaults".to_owned()));
    }

    #[test]
    fn bios_sata_e1000_on_a_bridge_under_tcg() {
        let profile = Profile {
            firmware: Firmware::Bios,
            disk: DiskModel::Sata,
            nic: Some(NicModel::E1000),
            memory: Amount::Fixed(2048),
            vcpus: Amount::Percent(50),
            display: Display::GtkFullScreen,
            ..Profile::default()
        };
        let host = Host {
            network: Network::Bridge("br-lan".into()),
            ..host()
        };
        let a = argv("vm", &profile, &seat(), &host, &paths(), Chosen::Tcg).unwrap();
        assert_eq!(values(&a, "-accel"), ["tcg"]);
        assert_eq!(values(&a, "-cpu"), ["max"]);
        assert_eq!(values(&a, "-m"), ["2048"]);
        assert_eq!(values(&a, "-smp"), ["2"]);
        // No pflash: SeaBIOS, QEMU's default.
        assert_eq!(
            values(&a, "-drive"),
            ["file=/var/vm/overlay.qcow2,format=qcow2,if=none,id=disk0,cache=unsafe,discard=unmap"]
        );
        let devices = values(&a, "-device");
        assert!(devices.contains(&"ide-hd,drive=disk0,bus=ide.0,bootindex=1"));
        assert!(devices
            .iter()
            .any(|d| d.starts_with("e1000,netdev=net0,mac=")));
        assert_eq!(values(&a, "-netdev"), ["bridge,id=net0,br=br-lan"]);
        assert_eq!(
            values(&a, "-display"),
            ["gtk,full-screen=on,show-menubar=off,window-close=off"]
        );
    }

    #[test]
    fn the_kiosk_is_sdl_full_screen_without_close_with_a_tablet() {
        let profile = Profile {
            display: Display::Kiosk,
            ..Profile::default()
        };
        let a = argv("vm", &profile, &seat(), &host(), &paths(), Chosen::Kvm).unwrap();
        assert_eq!(
            values(&a, "-display"),
            ["sdl,window-close=off,grab-mod=lshift-lctrl-lalt"]
        );
        assert!(a.contains(&"-full-screen".to_owned()));
        let devices = values(&a, "-device");
        assert!(devices.contains(&"usb-tablet,bus=kiosk-usb.0"));
        assert!(devices.contains(&"qemu-xhci,id=kiosk-usb"));
        // Still one VGA screen, as for QMP's screendump.
        assert_eq!(values(&a, "-vga"), ["std"]);
        let p: Profile = toml::from_str("display = \"kiosk\"").unwrap();
        assert_eq!(p.display, Display::Kiosk);
    }

    #[test]
    fn a_guest_on_a_screen_takes_its_size_as_the_preferred_mode_of_its_edid() {
        let on = |display, screen| {
            let profile = Profile {
                display,
                ..Profile::default()
            };
            let host = Host { screen, ..host() };
            argv("vm", &profile, &seat(), &host, &paths(), Chosen::Kvm).unwrap()
        };
        let a = on(Display::Kiosk, Some((1920, 1080)));
        assert_eq!(
            values(&a, "-global"),
            ["VGA.xres=1920", "VGA.yres=1080", "VGA.vgamem_mb=16"]
        );
        // A 4K screen needs more video memory than QEMU's default.
        let a = on(Display::Kiosk, Some((3840, 2160)));
        assert!(values(&a, "-global").contains(&"VGA.vgamem_mb=64"));
        // No screen known, or no display: QEMU's own default mode.
        assert!(values(&on(Display::Kiosk, None), "-global").is_empty());
        assert!(values(&on(Display::None, Some((1920, 1080))), "-global").is_empty());
        assert_eq!(vga_memory_mib(1, 1), 16);
        assert_eq!(vga_memory_mib(16384, 16384), 256);
    }

    #[test]
    fn a_persistent_disk_is_the_seats_own_second_disk_of_the_masters_model() {
        let on = |disk| {
            let profile = Profile {
                disk,
                persistent_disk: Some("2G".parse().unwrap()),
                ..Profile::default()
            };
            argv("vm", &profile, &seat(), &host(), &paths(), Chosen::Kvm).unwrap()
        };
        let a = on(DiskModel::Virtio);
        let drives = values(&a, "-drive");
        assert_eq!(
            drives.last(),
            Some(&"file=/var/vm/seats/salle-1-poste-03.qcow2,format=qcow2,if=none,id=disk1,discard=unmap")
        );
        assert!(values(&a, "-device").contains(&"virtio-blk-pci,drive=disk1,serial=nightcast-data"));
        let a = on(DiskModel::Sata);
        assert!(
            values(&a, "-device").contains(&"ide-hd,drive=disk1,bus=ide.1,serial=nightcast-data")
        );
        // The master stays the boot disk.
        assert!(values(&a, "-device").contains(&"ide-hd,drive=disk0,bus=ide.0,bootindex=1"));
        // Another seat, another file.
        let other = Seat::derive("lyon", "salle-1", "poste-04").unwrap();
        assert_ne!(
            paths().persistent_disk(&seat()),
            paths().persistent_disk(&other)
        );
        // None by default.
        let a = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host(),
            &paths(),
            Chosen::Kvm,
        )
        .unwrap();
        assert!(!a.iter().any(|x| x.contains("disk1")));
    }

    #[test]
    fn a_tpm_is_swtpms_socket_crb_under_uefi_and_tis_under_bios() {
        let on = |firmware| {
            let profile = Profile {
                firmware,
                tpm: true,
                ..Profile::default()
            };
            argv("vm", &profile, &seat(), &host(), &paths(), Chosen::Kvm).unwrap()
        };
        let a = on(Firmware::Uefi);
        assert!(values(&a, "-chardev").contains(&"socket,id=chrtpm,path=/var/vm/tpm.sock"));
        assert_eq!(values(&a, "-tpmdev"), ["emulator,id=tpm0,chardev=chrtpm"]);
        assert!(values(&a, "-device").contains(&"tpm-crb,tpmdev=tpm0"));
        assert!(values(&on(Firmware::Bios), "-device").contains(&"tpm-tis,tpmdev=tpm0"));
        let a = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host(),
            &paths(),
            Chosen::Kvm,
        )
        .unwrap();
        assert!(values(&a, "-tpmdev").is_empty());
    }

    #[test]
    fn the_sound_card_plays_on_the_nucs_output_unless_the_profile_says_no_audio() {
        let a = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host(),
            &paths(),
            Chosen::Kvm,
        )
        .unwrap();
        assert_eq!(values(&a, "-audiodev"), ["none,id=snd0"]);
        let devices = values(&a, "-device");
        assert!(devices.contains(&"ich9-intel-hda,id=hda"));
        assert!(devices.contains(&"hda-duplex,audiodev=snd0,bus=hda.0"));
        let host = Host {
            audio: AudioOut::Alsa,
            ..host()
        };
        let a = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host,
            &paths(),
            Chosen::Kvm,
        )
        .unwrap();
        assert_eq!(values(&a, "-audiodev"), ["alsa,id=snd0"]);
        let silent = Profile {
            audio: false,
            ..Profile::default()
        };
        let a = argv("vm", &silent, &seat(), &host, &paths(), Chosen::Kvm).unwrap();
        assert!(values(&a, "-audiodev").is_empty());
        assert!(!values(&a, "-device").iter().any(|d| d.contains("hda")));
    }

    #[test]
    fn a_site_that_passes_usb_devices_gives_the_guest_a_controller_for_them() {
        let a = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host(),
            &paths(),
            Chosen::Kvm,
        )
        .unwrap();
        assert!(!values(&a, "-device").contains(&"qemu-xhci,id=usbpass"));
        for usb in [UsbPolicy::Storage, UsbPolicy::All] {
            let host = Host { usb, ..host() };
            let a = argv(
                "vm",
                &Profile::default(),
                &seat(),
                &host,
                &paths(),
                Chosen::Kvm,
            )
            .unwrap();
            assert!(values(&a, "-device").contains(&"qemu-xhci,id=usbpass"));
        }
    }

    #[test]
    fn no_nic_means_no_network_at_all() {
        let profile = Profile {
            nic: None,
            ..Profile::default()
        };
        let a = argv("vm", &profile, &seat(), &host(), &paths(), Chosen::Kvm).unwrap();
        assert!(values(&a, "-netdev").is_empty());
        assert!(!values(&a, "-device").iter().any(|d| d.contains("net0")));
    }

    #[test]
    fn refuses_what_would_break_the_command_line() {
        let bad = Paths {
            overlay: "/var/vm/a,b.qcow2".into(),
            ..paths()
        };
        let e = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host(),
            &bad,
            Chosen::Kvm,
        );
        assert_eq!(e, Err(ProfileError::Path("/var/vm/a,b.qcow2".into())));
        let host = Host {
            network: Network::Bridge("br0,x=y".into()),
            ..host()
        };
        let e = argv(
            "vm",
            &Profile::default(),
            &seat(),
            &host,
            &paths(),
            Chosen::Kvm,
        );
        assert_eq!(e, Err(ProfileError::Bridge("br0,x=y".into())));
    }

    #[test]
    fn acceleration_falls_back_to_tcg_only_when_allowed_and_says_why() {
        assert_eq!(
            choose_accel(Accel::Auto, true, false),
            Ok((Chosen::Kvm, None))
        );
        assert_eq!(
            choose_accel(Accel::Auto, false, false),
            Ok((Chosen::Tcg, Some("no usable /dev/kvm")))
        );
        assert!(matches!(
            choose_accel(Accel::Auto, true, true),
            Ok((Chosen::Tcg, Some(_)))
        ));
        assert_eq!(
            choose_accel(Accel::Kvm, false, false),
            Err(ProfileError::NoKvm)
        );
        assert_eq!(
            choose_accel(Accel::Kvm, true, true),
            Ok((Chosen::Kvm, None))
        );
        assert_eq!(
            choose_accel(Accel::Tcg, true, false),
            Ok((Chosen::Tcg, None))
        );
    }

    #[test]
    fn the_seat_identity_depends_on_the_seat_only() {
        let a = Seat::derive("lyon", "salle-1", "poste-03").unwrap();
        assert_eq!(a, Seat::derive("lyon", "salle-1", "poste-03").unwrap());
        assert_ne!(
            a.mac,
            Seat::derive("lyon", "salle-1", "poste-04").unwrap().mac
        );
        assert_ne!(
            a.mac,
            Seat::derive("nice", "salle-1", "poste-03").unwrap().mac
        );
        // Unicast, locally administered.
        assert_eq!(a.mac.0[0] & 0x03, 0x02);
        assert_eq!(a.hostname.as_str(), "salle-1-poste-03");
    }

    #[test]
    fn hostnames_are_rfc_1123_labels() {
        assert_eq!(
            Hostname::derive("Salle.A", "Poste__7").unwrap().as_str(),
            "salle-a-poste-7"
        );
        assert_eq!(
            Hostname::derive(&"r".repeat(60), "seat-9")
                .unwrap()
                .as_str(),
            format!("{}-se", "r".repeat(60))
        );
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(Hostname::new(bad).is_err(), "{bad:?}");
        }
        assert!(Hostname::new("poste-01").is_ok());
    }
}
