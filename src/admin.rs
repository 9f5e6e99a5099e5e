//! The admin commands: each is one call to the controller's admin API, printed for a person (or as
//! JSON with `--json`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use image_tools::api::{self, Link, NodeRole, Takeover};
use image_tools::profile::UsbPolicy;
use image_tools::report::Report;
use image_tools::{MasterName, MasterVersion, NodeId, RoomName, SeatName, SiteId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::{Client, IMPORT_TIMEOUT};
use crate::local_time::Zones;

mod feeds;
mod mapping;
mod profile;
mod progress;

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Sites: a building with its own VLAN, relay, time zone, night windows and WAN cap.
    #[command(subcommand)]
    Site(Site),
    /// Rooms of a site.
    #[command(subcommand)]
    Room(Room),
    /// Seats of a room (one NUC each).
    #[command(subcommand)]
    Seat(Seat),
    /// Masters: import a disk image as a new version, list, remove, set their machine profile.
    #[command(subcommand)]
    Master(Master),
    /// The training calendar.
    #[command(subcommand)]
    Calendar(Calendar),
    /// Sessions in the calendar.
    #[command(subcommand)]
    Session(Session),
    /// Will every room have its master in time? Per site and session: bytes to fetch, verdict.
    Plan,
    /// Enrolled relays and NUCs: when they were last heard from and what they hold; and NUCs
    /// waiting for the DSI to let them in (PENDING).
    Fleet,
    /// Let a waiting NUC in, or shut a relay or NUC out for good.
    #[command(subcommand)]
    Node(Node),
    /// Daytime pushes: let a site's relay fetch a master outside its night windows.
    #[command(subcommand)]
    Override(Override),
    /// Print a one-time token that enrols one relay (or agent) of a site.
    Enroll {
        /// What the token enrols: the site's relay, or one NUC (agent).
        #[arg(long, default_value = "relay", value_parser = one_of::<NodeRole>(&["relay", "agent"]))]
        role: NodeRole,
        /// The site it enrols at; it must exist (see `nightcast site list`).
        #[arg(long)]
        site: SiteId,
        /// How many hours the token stays usable.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum Site {
    /// Add a site. An existing site is refused: change it with `nightcast site set`.
    Add {
        /// The site's name, e.g. lyon (letters, digits, `-`, `_`, `.`).
        name: SiteId,
        /// IANA time zone, e.g. Europe/Paris.
        #[arg(long)]
        tz: String,
        /// Night windows in local time, e.g. 22:00-06:00 or 20:00-07:00,12:00-14:00.
        #[arg(long, default_value = "22:00-06:00")]
        windows: String,
        /// WAN bandwidth the relay may use in its windows, in Mbit/s.
        #[arg(long)]
        cap_mbit: u64,
        /// When a NUC goes silent: `auto`, a spare of the site takes its seat by itself (if only
        /// one seat is silent); `confirm`, the DSI confirms with `nightcast seat replace`.
        /// Default auto (change it later with `nightcast site set`).
        #[arg(long, value_parser = one_of::<Takeover>(&["auto", "confirm"]))]
        takeover: Option<Takeover>,
        /// What the site's WAN link is like: wired (fibre, DSL, cable: the default) or far
        /// (satellite or 4G: long round trips and random loss; its relay fetches through the
        /// controller's far_listen port, sent with BBR). The relay moves by itself at its next
        /// plan (within a minute); nothing to change on the site.
        #[arg(long, value_parser = one_of::<Link>(&["wired", "far"]))]
        link: Option<Link>,
    },
    /// Change a site: only what is given changes (the rest, night windows included, stays).
    Set {
        /// The site to change (see `nightcast site list`).
        name: SiteId,
        /// IANA time zone, e.g. Europe/Paris.
        #[arg(long)]
        tz: Option<String>,
        /// Night windows in local time, e.g. 22:00-06:00 or 20:00-07:00,12:00-14:00.
        #[arg(long)]
        windows: Option<String>,
        /// WAN bandwidth the relay may use in its windows, in Mbit/s.
        #[arg(long)]
        cap_mbit: Option<u64>,
        /// When a NUC goes silent: `auto` (a spare takes its seat by itself) or `confirm` (the
        /// DSI confirms with `nightcast seat replace`).
        #[arg(long, value_parser = one_of::<Takeover>(&["auto", "confirm"]))]
        takeover: Option<Takeover>,
        /// Daytime WAN cap of an emergency push (`override push --deadline`), in Mbit/s; 0 (the
        /// default): the night cap.
        #[arg(long, value_name = "MBIT")]
        emergency_cap_mbit: Option<u64>,
        /// Which USB devices plugged into the site's NUCs the trainees' workstations get: none
        /// (the default), storage (USB sticks and card readers only) or all (except hubs,
        /// keyboards and mice, which the workstation has anyway). Used from each NUC's next
        /// session; a device plugged in during a session reaches it within seconds.
        #[arg(long)]
        usb: Option<UsbPolicy>,
        /// How fast each NUC of the site may send to the other NUCs of the site (peer sharing),
        /// in Mbit/s; 0: as fast as it can. Keeps a NUC's network free for its own session.
        /// Until set, each NUC uses its own setting (300 unless its configuration says
        /// otherwise). Applied by each NUC within a minute, without a restart.
        #[arg(long, value_name = "MBIT")]
        peer_upload_mbit: Option<u64>,
        /// Whether a NUC with a session running still sends to the other NUCs of the site: no
        /// (each NUC's default) keeps its disk and network for the trainee; yes lets a room
        /// fill faster in the daytime (check the cap above). Applied within a minute.
        #[arg(long, value_name = "yes|no", value_parser = yes_no())]
        peer_share_in_session: Option<bool>,
        /// What the site's WAN link is like: wired (fibre, DSL, cable: the default) or far
        /// (satellite or 4G: long round trips and random loss; its relay fetches through the
        /// controller's far_listen port, sent with BBR). The relay moves by itself at its next
        /// plan (within a minute); nothing to change on the site.
        #[arg(long, value_parser = one_of::<Link>(&["wired", "far"]))]
        link: Option<Link>,
    },
    /// List the sites.
    List,
    /// Remove a site. Refused while it has rooms, seats, sessions or enrolled relays and NUCs
    /// (the refusal names them); `--force` removes them with it (its relays and NUCs revoked).
    Rm {
        /// The site to remove.
        name: SiteId,
        /// Also remove its rooms, seats and sessions, and revoke and forget its relays and NUCs.
        #[arg(long)]
        force: bool,
    },
    /// Let new NUCs of this site in by themselves for a while (a spare swap with nobody on site
    /// typing anything); `--for 0` closes it again. Outside such a time, a new NUC waits in
    /// `nightcast fleet` until `nightcast node approve`.
    AcceptNew {
        /// The site whose new NUCs may come in (see `nightcast site list`).
        site: SiteId,
        /// For how long: e.g. 30m, 2h, 1d (at most 7d).
        #[arg(long = "for", value_parser = parse_minutes)]
        for_minutes: u64,
    },
}

/// Relays and NUCs by their node id (a NUC's is its hardware id, as `nightcast fleet` shows it).
#[derive(Debug, Subcommand)]
pub enum Node {
    /// Let a NUC that waits (PENDING in `nightcast fleet`) in: it gets its certificate the next
    /// time it asks (within a minute), for the key shown in the fleet.
    Approve {
        /// The waiting NUC's id (its hardware id, as `nightcast fleet` shows it).
        node: NodeId,
    },
    /// Revoke every certificate of a relay or NUC: it is refused at once by the controller and
    /// within one plan refresh by its relay, also if the controller is unreachable afterwards. It
    /// cannot enrol again until it is removed.
    Revoke {
        /// The relay's or NUC's id (see `nightcast fleet`).
        node: NodeId,
    },
    /// Reset a NUC now: its VM is stopped and what the guest wrote is thrown away; a session
    /// under way starts again from the pristine master. Done at the NUC's next plan (seconds).
    Reset {
        /// The NUC's id (see `nightcast fleet`).
        node: NodeId,
    },
    /// Put a NUC back on the master it ran before the last swap, then reset it (a new version
    /// that misbehaves there). Done at the NUC's next plan.
    Rollback {
        /// The NUC's id (see `nightcast fleet`).
        node: NodeId,
    },
    /// Wake a NUC that is off: its site's relay sends the Wake-on-LAN packet to the MAC address
    /// the NUC last reported, at its next plan.
    Wake {
        /// The NUC's id (see `nightcast fleet`).
        node: NodeId,
    },
    /// Revoke a relay or NUC and forget it (seat, holdings): it may then enrol again as a new NUC
    /// (re-imaging a known NUC).
    Rm {
        /// The relay's or NUC's id (see `nightcast fleet`).
        node: NodeId,
    },
}

/// `POST /v1/nodes/NODE/KIND` (reset, rollback, wake): the answer and its words.
fn order(client: &Client, node: &NodeId, kind: &str) -> Result<Printed> {
    let o: api::Ordered = client.ask("POST", &format!("/v1/nodes/{node}/{kind}"))?;
    let human = format!(
        "{} of {} at {} asked (order {}): the NUC does it at its next plan",
        o.kind.as_str(),
        o.node,
        o.site,
        o.order
    );
    printed(&o, human)
}

/// An argument among `names` (listed in `--help`), as its type.
fn one_of<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

/// `yes` or `no`, as a bool.
fn yes_no() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["yes", "no"]).map(|s| s == "yes")
}

/// A site's peer upload cap and in-session sharing, in words ("each NUC's own" until set).
fn peer_settings(s: &api::SiteInfo) -> (String, String) {
    let own = || "each NUC's own".to_owned();
    let cap = match s.peer_upload_mbit {
        None => own(),
        Some(0) => "uncapped".to_owned(),
        Some(m) => format!("{m} Mbit/s"),
    };
    let share = match s.peer_share_in_session {
        None => own(),
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
    };
    (cap, share)
}

/// A site's link in words: "wired", "far (port 4437)", or "far (no far_listen)".
fn link_words(s: &api::SiteInfo) -> String {
    match (s.link, s.far_port) {
        (Link::Wired, _) => "wired".to_owned(),
        (Link::Far, Some(port)) => format!("far (port {port})"),
        (Link::Far, None) => "far (no far_listen)".to_owned(),
    }
}

/// What the DSI must know of a far site the controller cannot serve as such (empty otherwise).
fn far_link_note(s: &api::SiteInfo) -> String {
    match (s.link, s.far_port) {
        (Link::Far, None) => format!(
            "\nnote: the controller has no far_listen, so nothing changes for {}'s relay yet: it \
             keeps fetching through the controller's usual port. The setting is kept; add \
             far_listen to the controller's configuration and restart it to serve the site with \
             BBR.",
            s.name
        ),
        _ => String::new(),
    }
}

/// `30m`, `2h`, `1d` or plain minutes.
fn parse_minutes(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "m"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30m, 2h or 1d"))?;
    let factor = match unit {
        "m" | "min" => 1,
        "h" => 60,
        "d" => 24 * 60,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use m, h or d)")),
    };
    n.checked_mul(factor)
        .filter(|m| *m <= 7 * 24 * 60)
        .ok_or_else(|| format!("{s:?}: at most 7d"))
}

#[derive(Debug, Subcommand)]
pub enum Room {
    /// Add a training room to a site.
    Add {
        /// The site (see `nightcast site list`).
        site: SiteId,
        /// The room's name, e.g. salle-1.
        room: RoomName,
    },
    /// List the rooms, with their seats and sessions to come.
    List {
        /// Only this site's rooms.
        #[arg(long)]
        site: Option<SiteId>,
    },
    /// Remove a room. Refused while it has seats or sessions (the refusal names them);
    /// `--force` removes them with it (its NUCs become spares).
    Rm {
        /// The room's site.
        site: SiteId,
        /// The room to remove.
        room: RoomName,
        /// Also remove its seats and sessions (past ones too).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Seat {
    /// Add a seat to a room.
    Add {
        /// The room's site (see `nightcast site list`).
        site: SiteId,
        /// The room (see `nightcast room list`).
        room: RoomName,
        /// The seat's name, e.g. pc-1.
        seat: SeatName,
    },
    /// Put a NUC (an agent of the site, by node id) at a seat: whatever was there becomes a spare,
    /// and the NUC leaves its previous seat.
    Assign {
        /// The seat's site.
        site: SiteId,
        /// The seat's room.
        room: RoomName,
        /// The seat (see `nightcast seat list`).
        seat: SeatName,
        /// The NUC's node id (see `nightcast fleet`).
        node: NodeId,
    },
    /// Confirm a takeover: the spare NUC takes the seat (the seat's NUC becomes a spare).
    Replace {
        /// The seat's site.
        site: SiteId,
        /// The seat's room.
        room: RoomName,
        /// The seat whose NUC went silent (see `nightcast seat list`).
        seat: SeatName,
        /// The spare's node id (see `nightcast seat list` or `nightcast fleet`).
        #[arg(long = "with")]
        with: NodeId,
    },
    /// Remove a seat. Refused while a NUC sits at it; `--force` removes it all the same (the
    /// NUC becomes a spare of the site).
    Rm {
        /// The seat's site.
        site: SiteId,
        /// The seat's room.
        room: RoomName,
        /// The seat to remove.
        seat: SeatName,
        /// Remove it even if a NUC sits at it.
        #[arg(long)]
        force: bool,
    },
    /// Each seat with its NUC and when it was last heard from ("silent" if too long ago), then
    /// the spares.
    List {
        /// Only this site's seats and spares.
        #[arg(long)]
        site: Option<SiteId>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Master {
    /// Import a disk image (raw, qcow2, VMDK, VHDX, VHD, VDI) that is on the controller's disk.
    ///
    /// Only that file is read: an image with a backing file, an external data file or VMDK extents
    /// in other files is refused. The master is recorded only once its manifest and every chunk
    /// in the controller's store have been checked.
    Import {
        /// The disk image, a path on the controller's machine (e.g. /srv/masters/win10.qcow2).
        image: PathBuf,
        /// The master's name, e.g. win10 (one name per kind of training PC).
        #[arg(long)]
        name: MasterName,
        /// The new version's name, e.g. 1 or 2026-11 (a version already there is refused).
        #[arg(long)]
        version: MasterVersion,
        /// The image's format: raw, qcow2, vmdk, vhdx, vpc (VHD) or vdi. Without it, it is detected
        /// from the first bytes (pass `--format raw` for a raw disk that looks like another format).
        #[arg(long)]
        format: Option<image_tools::import::ImageFormat>,
        /// Import a raw file even if it does not look like a disk (under 1 MiB, or no partition
        /// table or file system recognised at its start).
        #[arg(long)]
        force: bool,
    },
    /// List the master versions, with the machine profile each runs with.
    List,
    /// The machine profile of a master (firmware, disk and network models, memory, CPUs, health
    /// check) that every NUC builds its VM from.
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    /// What a master version costs each site that runs the master or holds a version of it: the
    /// bytes its relay still lacks (compressed, as they cross the WAN; chunks it holds already are
    /// not counted), and the night-window time and nights that takes at the site's WAN cap.
    Cost {
        /// The master's name (see `nightcast master list`).
        name: MasterName,
        /// The version, e.g. the one just imported.
        version: MasterVersion,
    },
    /// Remove a master version (refused while an upcoming session needs it).
    Rm {
        /// The master's name (see `nightcast master list`).
        name: MasterName,
        /// The version to remove.
        version: MasterVersion,
    },
}

#[derive(Debug, Subcommand)]
pub enum Override {
    /// Push a master to a site now (an emergency): the relay may use the WAN in the daytime for it.
    ///
    /// With `--deadline`, the NUCs of the rooms whose sessions run it must run it by then: the
    /// relay fetches at the site's emergency cap (`nightcast site set --emergency-cap-mbit`), the
    /// NUCs swap at the end of their session, and the answer says, room by room, whether every
    /// NUC will make it (`--dry-run` first to see it without pushing; `nightcast plan` while it
    /// runs).
    Push {
        /// The site whose relay fetches it (see `nightcast site list`).
        #[arg(
            long,
            required_unless_present = "all_sites",
            conflicts_with = "all_sites"
        )]
        site: Option<SiteId>,
        /// Every site whose calendar runs this master version from now on (needs --deadline).
        #[arg(long, requires = "deadline")]
        all_sites: bool,
        /// The master's name (see `nightcast master list`).
        #[arg(long)]
        master: MasterName,
        /// The master's version.
        #[arg(long)]
        version: MasterVersion,
        /// Why (kept with the override, shown in `override list`).
        #[arg(long)]
        reason: String,
        /// Who asks (defaults to $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        /// How long the override lasts, in hours (1-72); with --deadline, at least until then.
        #[arg(long, default_value_t = 4)]
        hours: u64,
        /// When every NUC must run it, in the site's time: HH:MM today (e.g. 14:00, the start of
        /// the afternoon session) or "YYYY-MM-DD HH:MM".
        #[arg(long)]
        deadline: Option<String>,
        /// Show the verdict per room (who will run it by the deadline, who will not and when),
        /// and push nothing.
        #[arg(long, requires = "deadline")]
        dry_run: bool,
    },
    /// The overrides in force.
    List,
}

#[derive(Debug, Subcommand)]
pub enum Calendar {
    /// Import sessions from CSV (header site,room,master,version,start,end) or iCalendar (.ics).
    /// An .ics file is a calendar kept in step: importing a newer export of it adds, moves and
    /// removes sessions so the catalogue holds what it says (past sessions are left alone).
    Import {
        /// The calendar file: .ics as Google Calendar, Thunderbird or Outlook export it, or CSV.
        file: PathBuf,
        /// Show what the import would add, move and remove, and change nothing (.ics only).
        #[arg(long)]
        dry_run: bool,
        /// Which calendar this is, if not the file's name (.ics only): give the same name to
        /// every new export of one calendar, whatever its file is called.
        #[arg(long)]
        source: Option<String>,
        /// How many days ahead an event that repeats for ever (no end date) gives sessions
        /// (.ics only; up to 731). Import a newer export later to go further.
        #[arg(long, default_value_t = api::DEFAULT_HORIZON_DAYS)]
        horizon_days: u32,
        /// Import the events the mapping rules can read even if some match no rule (.ics
        /// only); those are still listed, with their line and title, and not imported.
        #[arg(long)]
        partial: bool,
    },
    /// The mapping rules: which course titles or categories run which master, and which
    /// places are which room, for calendars that do not use nightcast's own names.
    #[command(subcommand)]
    Map(mapping::Map),
    /// Subscribe to a calendar feed (an https:// link a training-management tool publishes):
    /// the controller polls it and applies it as an import of that calendar each time.
    Subscribe {
        /// The feed's https:// URL (plain HTTP is refused).
        url: String,
        /// The calendar's name (letters, digits, '.', '_', '-'): the sessions it gives are
        /// this calendar's. Give the name of an imported calendar to have the feed take it over.
        #[arg(long)]
        source: String,
        /// Apply what the mapping rules can read even if some events match no rule (they are
        /// listed in `calendar subscriptions`). Without it, such an event makes the poll fail.
        #[arg(long)]
        partial: bool,
        /// How many days ahead an event that repeats for ever gives sessions (up to 731).
        #[arg(long, default_value_t = api::DEFAULT_HORIZON_DAYS)]
        horizon_days: u32,
    },
    /// Stop polling a calendar feed; the sessions it gave stay.
    Unsubscribe {
        /// The calendar's name, as `calendar subscriptions` lists it.
        source: String,
    },
    /// The calendar feeds, and how each one's last poll went (what it changed, or why it
    /// changed nothing).
    Subscriptions,
}

#[derive(Debug, Subcommand)]
pub enum Session {
    /// List the sessions.
    List,
    /// Add one session; times are YYYY-MM-DD HH:MM in the site's time zone. Refused if it clashes
    /// with another session of the room or is already over.
    Add {
        /// The site (see `nightcast site list`).
        #[arg(long)]
        site: SiteId,
        /// The training room (see `nightcast room list`).
        #[arg(long)]
        room: RoomName,
        /// The master the room's NUCs run (see `nightcast master list`).
        #[arg(long)]
        master: MasterName,
        /// The master's version.
        #[arg(long)]
        version: MasterVersion,
        /// When the session starts, e.g. "2030-01-08 08:30" (the site's time zone).
        #[arg(long)]
        start: String,
        /// When it ends, e.g. "2030-01-08 17:00" (the site's time zone).
        #[arg(long)]
        end: String,
    },
    /// Move a session to new times (same site, room and master); refused if they clash with
    /// another session of the room or are already over.
    Move {
        /// The session's id (the first column of `nightcast session list`).
        id: i64,
        /// When it starts now, e.g. "2030-01-08 13:30" (the site's time zone).
        #[arg(long)]
        start: String,
        /// When it ends now, e.g. "2030-01-08 17:00" (the site's time zone).
        #[arg(long)]
        end: String,
    },
    /// Remove a session by its id (see `session list`).
    Rm {
        /// The session's id (the first column of `nightcast session list`).
        id: i64,
    },
}

/// The admin token: from `--token-file`, else from NIGHTCAST_TOKEN.
pub fn token(file: Option<&Path>) -> Result<String> {
    if let Some(file) = file {
        return Ok(std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the admin token {}", file.display()))?
            .trim()
            .to_owned());
    }
    match std::env::var("NIGHTCAST_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        _ => bail!(
            "no admin token: pass --token-file CONTROLLER_DATA/admin.token (or set NIGHTCAST_TOKEN)"
        ),
    }
}

/// What a command prints: the answer as JSON (`--json`), or in words for a person.
struct Printed {
    json: String,
    human: String,
}

fn printed(answer: &impl Serialize, human: String) -> Result<Printed> {
    Ok(Printed {
        json: serde_json::to_string_pretty(answer)?,
        human,
    })
}

/// A listing (`GET path`): its rows as a table of `headers`, each row's cells from `cells`.
fn listed<T: DeserializeOwned + Serialize>(
    client: &Client,
    path: &str,
    headers: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> Result<Printed> {
    let rows: Vec<T> = client.ask("GET", path)?;
    printed(&rows, table(headers, rows.iter().map(cells)))
}

pub fn run(client: &Client, cmd: Admin, as_json: bool) -> Result<()> {
    let out = match cmd {
        Admin::Site(Site::Add {
            name,
            tz,
            windows,
            cap_mbit,
            takeover,
            link,
        }) => {
            let body = api::NewSite {
                name: name.clone(),
                tz,
                windows,
                cap_mbit,
                takeover,
                link,
            };
            let done: api::Done = client.send("POST", "/v1/sites", &body)?;
            let mut human = format!("site {name} saved");
            if link == Some(Link::Far) {
                let s: api::SiteInfo = client
                    .ask::<Vec<api::SiteInfo>>("GET", "/v1/sites")?
                    .into_iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| anyhow::anyhow!("site {name} is not in the site list"))?;
                human.push_str(&far_link_note(&s));
            }
            printed(&done, human)?
        }
        Admin::Site(Site::Set {
            name,
            tz,
            windows,
            cap_mbit,
            takeover,
            emergency_cap_mbit,
            usb,
            peer_upload_mbit,
            peer_share_in_session,
            link,
        }) => {
            let change = api::SiteChange {
                tz,
                windows,
                cap_mbit,
                takeover,
                emergency_cap_mbit,
                usb,
                peer_upload_mbit,
                peer_share_in_session,
                link,
            };
            if change == api::SiteChange::default() {
                bail!("nothing to change: give --tz, --windows, --cap-mbit, --takeover, --emergency-cap-mbit, --usb, --peer-upload-mbit, --peer-share-in-session or --link");
            }
            let s: api::SiteInfo = client.send("PATCH", &format!("/v1/sites/{name}"), &change)?;
            let emergency = match s.emergency_cap_mbit {
                0 => "the night cap".to_owned(),
                e => format!("{e} Mbit/s"),
            };
            let (peer_cap, peer_in_session) = peer_settings(&s);
            let human = format!(
                "site {} is now: {}, windows {}, WAN cap {} Mbit/s, takeover {}, emergency pushes in the daytime at {emergency}, USB devices passed: {}, NUC upload to peers: {peer_cap}, serving peers during sessions: {peer_in_session}, link: {}{}",
                s.name,
                s.tz,
                s.windows,
                s.cap_mbit,
                s.takeover.as_str(),
                s.usb,
                link_words(&s),
                far_link_note(&s)
            );
            printed(&s, human)?
        }
        Admin::Site(Site::Rm { name, force }) => {
            let r: api::PlaceRemoved =
                client.ask("DELETE", &format!("/v1/sites/{name}{}", forced(force)))?;
            printed(&r, removed(&format!("site {name}"), &r))?
        }
        Admin::Room(Room::List { site }) => {
            let path = match &site {
                Some(s) => format!("/v1/rooms?site={s}"),
                None => "/v1/rooms".to_owned(),
            };
            listed(
                client,
                &path,
                &["SITE", "ROOM", "SEATS", "SESSIONS TO COME"],
                |r: &api::RoomInfo| {
                    vec![
                        r.site.to_string(),
                        r.room.to_string(),
                        r.seats.to_string(),
                        r.upcoming_sessions.to_string(),
                    ]
                },
            )?
        }
        Admin::Room(Room::Rm { site, room, force }) => {
            let r: api::PlaceRemoved = client.ask(
                "DELETE",
                &format!("/v1/rooms/{site}/{room}{}", forced(force)),
            )?;
            printed(&r, removed(&format!("room {site}/{room}"), &r))?
        }
        Admin::Seat(Seat::Rm {
            site,
            room,
            seat,
            force,
        }) => {
            let path = format!("/v1/seats/{site}/{room}/{seat}{}", forced(force));
            let r: api::PlaceRemoved = client.ask("DELETE", &path)?;
            printed(&r, removed(&format!("seat {site}/{room}/{seat}"), &r))?
        }
        Admin::Site(Site::List) => listed(
            client,
            "/v1/sites",
            &[
                "SITE",
                "TIME ZONE",
                "WINDOWS",
                "WAN Mbit",
                "TAKEOVER",
                "EMERGENCY Mbit",
                "USB",
                "PEER UPLOAD",
                "PEERS IN SESSION",
                "LINK",
            ],
            |s: &api::SiteInfo| {
                let (peer_cap, peer_in_session) = peer_settings(s);
                vec![
                    s.name.to_string(),
                    s.tz.clone(),
                    s.windows.clone(),
                    s.cap_mbit.to_string(),
                    s.takeover.as_str().to_owned(),
                    match s.emergency_cap_mbit {
                        0 => "night cap".to_owned(),
                        e => e.to_string(),
                    },
                    s.usb.to_string(),
                    peer_cap,
                    peer_in_session,
                    link_words(s),
                ]
            },
        )?,
        Admin::Site(Site::AcceptNew { site, for_minutes }) => {
            let open: api::AcceptingNew = client.send(
                "POST",
                &format!("/v1/sites/{site}/accept-new"),
                &api::AcceptNew {
                    minutes: for_minutes,
                },
            )?;
            let human = match open.until {
                Some(until) => format!(
                    "site {site} lets new NUCs in by themselves until {}",
                    zones(client)?.time(&site, until)
                ),
                None => format!("site {site} no longer lets new NUCs in by themselves"),
            };
            printed(&open, human)?
        }
        Admin::Node(Node::Approve { node }) => {
            let a: api::Approved = client.ask("POST", &format!("/v1/nodes/{node}/approve"))?;
            let human = format!(
                "{} {} of site {} approved (MAC {}, key {}): it gets its certificate at its next request",
                a.role, a.node, a.site, a.mac, a.key
            );
            printed(&a, human)?
        }
        Admin::Node(Node::Revoke { node }) => {
            let r: api::Revoked = client.ask("POST", &format!("/v1/nodes/{node}/revoke"))?;
            let human = format!(
                "{} revoked ({} certificate(s)): refused from now on",
                r.node, r.certificates_revoked
            );
            printed(&r, human)?
        }
        Admin::Node(Node::Reset { node }) => order(client, &node, "reset")?,
        Admin::Node(Node::Rollback { node }) => order(client, &node, "rollback")?,
        Admin::Node(Node::Wake { node }) => order(client, &node, "wake")?,
        Admin::Node(Node::Rm { node }) => {
            let r: api::Removed = client.ask("DELETE", &format!("/v1/nodes/{node}"))?;
            let human = format!(
                "{} revoked and removed: it may enrol again as a new NUC",
                r.node
            );
            printed(&r, human)?
        }
        Admin::Room(Room::Add { site, room }) => {
            let body = api::NewRoom {
                site: site.clone(),
                room: room.clone(),
            };
            let done: api::Done = client.send("POST", "/v1/rooms", &body)?;
            printed(&done, format!("room {room} added to {site}"))?
        }
        Admin::Master(Master::Import {
            image,
            name,
            version,
            format,
            force,
        }) => {
            let image = std::fs::canonicalize(&image).unwrap_or(image);
            let body = api::ImportMaster {
                image,
                name: name.clone(),
                version: version.clone(),
                format,
                force,
            };
            let wait = client.timeout.max(IMPORT_TIMEOUT);
            let m = progress::while_importing(client, &name, &version, || {
                client.send_waiting("POST", "/v1/masters", &body, wait)
            })?;
            let human = format!(
                "{} {} imported: {} chunks, {} new in the store ({})",
                m.name,
                m.version,
                m.chunks,
                m.new_chunks,
                human(m.new_stored_bytes)
            );
            printed(&m, human)?
        }
        Admin::Master(Master::List) => listed(
            client,
            "/v1/masters",
            &["MASTER", "VERSION", "SIZE", "STORED", "PROFILE"],
            |m: &api::MasterInfo| {
                vec![
                    m.name.to_string(),
                    m.version.to_string(),
                    human(m.size),
                    human(m.stored_bytes),
                    m.profile
                        .as_ref()
                        .map_or_else(|| "(each NUC's own)".to_owned(), ToString::to_string),
                ]
            },
        )?,
        Admin::Master(Master::Cost { name, version }) => listed(
            client,
            &format!("/v1/masters/{name}/{version}/cost"),
            &[
                "SITE",
                "RELAY HOLDS",
                "TO FETCH",
                "OF",
                "WINDOW TIME",
                "NIGHTS",
            ],
            |c: &api::SiteCost| {
                let holds: Vec<String> = c.holds.iter().map(ToString::to_string).collect();
                let (time, nights) = match (c.relay, c.window_secs, c.nights) {
                    (false, _, _) => ("(no relay)".to_owned(), "-".to_owned()),
                    (true, Some(w), Some(n)) => (duration(w), n.to_string()),
                    _ => ("over 60 days".to_owned(), "-".to_owned()),
                };
                vec![
                    c.site.to_string(),
                    if holds.is_empty() {
                        "-".to_owned()
                    } else {
                        holds.join(", ")
                    },
                    human(c.missing_bytes),
                    human(c.stored_bytes),
                    time,
                    nights,
                ]
            },
        )?,
        Admin::Master(Master::Profile(cmd)) => profile::run(client, cmd)?,
        Admin::Master(Master::Rm { name, version }) => {
            let done: api::Done = client.ask("DELETE", &format!("/v1/masters/{name}/{version}"))?;
            printed(&done, format!("{name} {version} removed"))?
        }
        Admin::Calendar(Calendar::Import {
            file,
            dry_run,
            source,
            horizon_days,
            partial,
        }) => {
            let is_ics = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("ics"));
            if !is_ics {
                if dry_run || source.is_some() || partial {
                    bail!("--dry-run, --source and --partial are for iCalendar (.ics) files: a CSV file only adds sessions");
                }
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let body = api::CalendarFile {
                    file_name: file.display().to_string(),
                    text,
                };
                let n: api::CalendarImported = client.send("POST", "/v1/calendar", &body)?;
                printed(&n, format!("{} sessions imported", n.imported))?
            } else {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let named = file.file_name().map(|n| n.to_string_lossy().into_owned());
                let body = api::CalendarSync {
                    source: source
                        .or(named)
                        .unwrap_or_else(|| file.display().to_string()),
                    file_name: file.display().to_string(),
                    bytes,
                    dry_run,
                    horizon_days: Some(horizon_days),
                    partial,
                };
                let s: api::CalendarSynced = client.send("POST", "/v1/calendar/sync", &body)?;
                let zones = zones(client)?;
                let one = |x: &api::SyncedSession| {
                    format!(
                        "{}/{} {} {}  {}",
                        x.site,
                        x.room,
                        x.master,
                        x.version,
                        zones.span(&x.site, x.start, x.end)
                    )
                };
                let mut out = format!(
                    "calendar {}: {} added, {} moved, {} removed, {} unchanged; {} past and {} cancelled skipped",
                    s.source,
                    s.added.len(),
                    s.moved.len(),
                    s.removed.len(),
                    s.unchanged,
                    s.past_skipped,
                    s.cancelled
                );
                for a in &s.added {
                    out += &format!("\n  + {}", one(a));
                }
                for m in &s.moved {
                    out += &format!("\n  ~ {}\n    -> {}", one(&m.before), one(&m.after));
                }
                for r in &s.removed {
                    out += &format!("\n  - {}", one(r));
                }
                for n in &s.notes {
                    out += &format!("\n  line {}: {}", n.line, n.note);
                }
                if !s.unmatched.is_empty() {
                    for u in &s.unmatched {
                        out += &format!("\n  not imported, no mapping rule: {u}");
                    }
                    if !s.applied && !partial {
                        out += "\nwithout --partial, this import will be refused for them (or add rules with `nightcast calendar map`)";
                    }
                }
                match (s.applied, s.added.len() + s.moved.len() + s.removed.len()) {
                    (_, 0) => out += "\nnothing to change",
                    (false, _) => {
                        out +=
                            "\ndry run: nothing changed (run it again without --dry-run to apply)"
                    }
                    (true, _) => {}
                }
                printed(&s, out)?
            }
        }
        Admin::Calendar(Calendar::Map(cmd)) => mapping::run(client, cmd)?,
        Admin::Calendar(Calendar::Subscribe {
            url,
            source,
            partial,
            horizon_days,
        }) => feeds::subscribe(client, url, source, partial, horizon_days)?,
        Admin::Calendar(Calendar::Unsubscribe { source }) => feeds::unsubscribe(client, &source)?,
        Admin::Calendar(Calendar::Subscriptions) => feeds::list(client)?,
        Admin::Session(Session::List) => {
            let zones = zones(client)?;
            listed(
                client,
                "/v1/sessions",
                &["ID", "SITE", "ROOM", "MASTER", "VERSION", "START", "SOURCE"],
                |s: &api::SessionInfo| {
                    vec![
                        s.id.to_string(),
                        s.site.to_string(),
                        s.room.to_string(),
                        s.master.to_string(),
                        s.version.to_string(),
                        zones.time(&s.site, s.start),
                        origin(&s.origin),
                    ]
                },
            )?
        }
        Admin::Session(Session::Add {
            site,
            room,
            master,
            version,
            start,
            end,
        }) => {
            let human = format!("session added: {site}/{room} {master} {version} from {start}");
            let body = api::NewSession {
                site,
                room,
                master,
                version,
                start,
                end,
            };
            let done: api::Done = client.send("POST", "/v1/sessions", &body)?;
            printed(&done, human)?
        }
        Admin::Session(Session::Move { id, start, end }) => {
            let human = format!("session {id} moved: from {start} to {end}");
            let body = api::MoveSession { start, end };
            let done: api::Done = client.send("POST", &format!("/v1/sessions/{id}/move"), &body)?;
            printed(&done, human)?
        }
        Admin::Session(Session::Rm { id }) => {
            let sessions: Vec<api::SessionInfo> = client.ask("GET", "/v1/sessions")?;
            let origin = sessions.into_iter().find(|s| s.id == id).map(|s| s.origin);
            let done: api::Done = client.ask("DELETE", &format!("/v1/sessions/{id}"))?;
            let mut human = format!("session {id} removed");
            if let Some(api::SessionOrigin::Calendar { source, feed }) = origin {
                human += &format!(
                    "\nnote: it came from calendar {source}: its next {} adds it again unless \
                     its event is removed or cancelled there",
                    match feed {
                        true => "poll",
                        false => "import",
                    }
                );
            }
            printed(&done, human)?
        }
        Admin::Seat(Seat::Add { site, room, seat }) => {
            let human = format!("seat {seat} added to {site}/{room}");
            let body = api::NewSeat { site, room, seat };
            let done: api::Done = client.send("POST", "/v1/seats", &body)?;
            printed(&done, human)?
        }
        Admin::Seat(Seat::Assign {
            site,
            room,
            seat,
            node,
        }) => bind(client, "assign", site, room, seat, node)?,
        Admin::Seat(Seat::Replace {
            site,
            room,
            seat,
            with,
        }) => bind(client, "replace", site, room, seat, with)?,
        Admin::Seat(Seat::List { site }) => {
            let path = match &site {
                Some(s) => format!("/v1/seats?site={s}"),
                None => "/v1/seats".to_owned(),
            };
            let seats: api::Seats = client.ask("GET", &path)?;
            printed(&seats, seat_table(&seats, &zones(client)?))?
        }
        Admin::Plan => {
            let plan: Vec<api::PlanRow> = client.ask("GET", "/v1/plan")?;
            let zones = zones(client)?;
            let mut human = plan_table(&plan, &zones);
            // Emergency pushes in force, room by room (a controller without them: none).
            let pushes: Vec<api::PushRoom> = client.ask("GET", "/v1/pushes").unwrap_or_default();
            if !pushes.is_empty() {
                human.push_str("\n\nEmergency pushes:\n");
                human.push_str(&crate::push_words::push_table(&pushes, &zones, true));
            }
            printed(&plan, human)?
        }
        Admin::Override(Override::Push {
            site,
            all_sites,
            master,
            version,
            reason,
            by,
            hours,
            deadline,
            dry_run,
        }) => {
            let body = api::NewOverride {
                site: site.clone(),
                all_sites,
                master: master.clone(),
                version: version.clone(),
                reason,
                by,
                hours,
                deadline,
                dry_run,
            };
            let made: api::OverrideMade = client.send("POST", "/v1/overrides", &body)?;
            let zones = zones(client)?;
            let mut human: Vec<String> = if dry_run {
                vec![format!(
                    "dry run: nothing pushed; {master} {version} would reach these rooms:"
                )]
            } else if made.made.is_empty() {
                site.iter()
                    .map(|site| {
                        format!(
                            "override {} recorded: {site} may fetch {master} {version} now, until {}",
                            made.id,
                            zones.time(site, made.until)
                        )
                    })
                    .collect()
            } else {
                made.made
                    .iter()
                    .map(|o| {
                        format!(
                            "override {} recorded: {} may fetch {master} {version} now, until {}",
                            o.id,
                            o.site,
                            zones.time(&o.site, o.until)
                        )
                    })
                    .collect()
            };
            if !made.rooms.is_empty() {
                human.push(crate::push_words::push_table(&made.rooms, &zones, true));
            }
            printed(&made, human.join("\n"))?
        }
        Admin::Override(Override::List) => {
            let zones = zones(client)?;
            listed(
                client,
                "/v1/overrides",
                &[
                    "ID", "SITE", "MASTER", "VERSION", "BY", "UNTIL", "DEADLINE", "REASON",
                ],
                |o: &api::OverrideInfo| {
                    vec![
                        o.id.to_string(),
                        o.site.to_string(),
                        o.master.to_string(),
                        o.version.to_string(),
                        o.by.clone(),
                        zones.time(&o.site, o.until),
                        o.deadline
                            .map_or_else(|| "-".to_owned(), |d| zones.time(&o.site, d)),
                        o.reason.clone(),
                    ]
                },
            )?
        }
        Admin::Fleet => {
            let zones = zones(client)?;
            listed(
                client,
                "/v1/fleet",
                &[
                    "SITE",
                    "NODE",
                    "ROLE",
                    "LAST SEEN",
                    "SEAT",
                    "HOLDS",
                    "STATE",
                    "VM PROFILE",
                    "ATTENTION",
                ],
                |n: &api::FleetRow| fleet_row(n, &zones),
            )?
        }
        Admin::Enroll {
            role,
            site,
            ttl_hours,
        } => {
            let body = api::NewToken {
                role,
                site,
                ttl_hours,
            };
            let token: api::Token = client.send("POST", "/v1/tokens", &body)?;
            printed(&token, token.token.clone())?
        }
    };
    println!("{}", if as_json { out.json } else { out.human });
    Ok(())
}

/// Where a session came from, in words (a file by its name, not its path).
fn origin(o: &api::SessionOrigin) -> String {
    let name = |f: &str| {
        Path::new(f)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.to_owned())
    };
    match o {
        api::SessionOrigin::Calendar { source, feed: true } => format!("feed {source}"),
        api::SessionOrigin::Calendar { source, .. } => format!("calendar {source}"),
        api::SessionOrigin::Csv { file } => format!("CSV {}", name(file)),
        api::SessionOrigin::Hand => "by hand".to_owned(),
        api::SessionOrigin::Unknown => "-".to_owned(),
    }
}

/// The query of a removal.
fn forced(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

/// What a removal took with it, in words.
fn removed(what: &str, r: &api::PlaceRemoved) -> String {
    let mut with = Vec::new();
    for (n, kind) in [
        (r.rooms, "room(s)"),
        (r.seats, "seat(s)"),
        (r.sessions, "session(s)"),
    ] {
        // A room's own row, or a seat's, is not "with" it.
        let own = (r.seat.is_none() && r.room.is_some() && kind == "room(s)")
            || (r.seat.is_some() && kind == "seat(s)");
        if n > 0 && !own {
            with.push(format!("{n} {kind}"));
        }
    }
    let names = |v: &[NodeId]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !r.nodes_removed.is_empty() {
        with.push(format!(
            "relays and NUCs revoked and forgotten: {}",
            names(&r.nodes_removed)
        ));
    }
    let mut out = format!("{what} removed");
    if !with.is_empty() {
        out.push_str(&format!(" with {}", with.join(", ")));
    }
    if !r.unseated.is_empty() {
        out.push_str(&format!("; now spares: {}", names(&r.unseated)));
    }
    out
}

/// `seat assign` and `seat replace`: one call, and what changed.
fn bind(
    client: &Client,
    how: &str,
    site: SiteId,
    room: RoomName,
    seat: SeatName,
    node: NodeId,
) -> Result<Printed> {
    let body = api::SeatBind {
        site,
        room,
        seat,
        node,
    };
    let b: api::SeatBound = client.send("POST", &format!("/v1/seats/{how}"), &body)?;
    let mut out = format!("{} now sits at {} {}/{}", b.node, b.site, b.room, b.seat);
    if let Some(old) = &b.replaced {
        out.push_str(&format!(", replacing {old} (now a spare)"));
    }
    if let Some(from) = &b.moved_from {
        out.push_str(&format!("; {from} is left empty"));
    }
    printed(&b, out)
}

/// `seat list`: the seats, then the spares.
fn seat_table(v: &api::Seats, zones: &Zones) -> String {
    let seats = v.seats.iter().map(|s| {
        let (node, last_seen) = match &s.node {
            Some(node) => (node.to_string(), zones.last_seen(&s.site, s.last_seen)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let silent = if s.silent { "silent" } else { "" };
        vec![
            s.site.to_string(),
            s.room.to_string(),
            s.seat.to_string(),
            node,
            last_seen,
            silent.to_owned(),
        ]
    });
    let headers = ["SITE", "ROOM", "SEAT", "NODE", "LAST SEEN", ""];
    let mut out = table(&headers, seats);
    out.push_str("\n\n");
    if v.spares.is_empty() {
        out.push_str("no spares");
        return out;
    }
    let spares = v.spares.iter().map(|s| {
        let note = match (s.recent, &s.waiting) {
            (_, Some(w)) => w.clone(),
            (true, None) => String::new(),
            (false, None) => "not heard from lately: cannot take over".to_owned(),
        };
        vec![
            s.site.to_string(),
            s.node.to_string(),
            zones.last_seen(&s.site, s.last_seen),
            note,
        ]
    });
    out.push_str(&table(&["SITE", "SPARE", "LAST SEEN", ""], spares));
    out
}

/// A row of `fleet`: a node, or a request to enrol.
fn fleet_row(n: &api::FleetRow, zones: &Zones) -> Vec<String> {
    vec![
        n.site.to_string(),
        n.node.to_string(),
        n.role.to_string(),
        zones.last_seen(&n.site, n.last_seen),
        n.seat.clone(),
        n.holding.clone(),
        n.state.clone(),
        vm_profile(n),
        n.attention.clone(),
    ]
}

/// A NUC's last VM start, short: where its profile came from, firmware, disk and NIC.
fn vm_profile(n: &api::FleetRow) -> String {
    let Report::Agent(a) = &n.status else {
        return String::new();
    };
    match &a.profile {
        Some(v) => format!(
            "{}: {} {} {}",
            v.from.word(),
            v.profile.firmware,
            v.profile.disk,
            v.profile.nic.map_or("no-nic", |m| m.word())
        ),
        None => String::new(),
    }
}

/// A text table: the headers, then the rows, columns padded to their widest cell.
fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// Each site's time zone, for times in words (one `GET /v1/sites` per command).
fn zones(client: &Client) -> Result<Zones> {
    let sites: Vec<api::SiteInfo> = client.ask("GET", "/v1/sites")?;
    Ok(Zones::new(&sites))
}

fn human(bytes: u64) -> String {
    image_tools::cli::human(bytes)
}

/// `1 h 20 min`, `45 min`.
fn duration(secs: i64) -> String {
    let minutes = (secs + 59) / 60;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// A plan row's verdict in words, with what to do about it.
fn verdict(row: &api::PlanRow, zones: &Zones) -> String {
    use api::{Reason, Verdict};
    let silent = |since: &Option<i64>| match since {
        Some(t) => format!("relay silent since {}", zones.time(&row.site, *t)),
        None => "relay silent since it enrolled (it never reported)".to_owned(),
    };
    match &row.verdict {
        Verdict::OnTime { night: Some(n), .. } => format!("on time (night of {n})"),
        Verdict::OnTime { night: None, .. } => "on time (already there)".to_owned(),
        Verdict::AtRisk {
            reason: Reason::RelaySilent { since },
            ..
        } => format!(
            "AT RISK: {}: see `nightcast fleet` and the relay's own status",
            silent(since)
        ),
        Verdict::AtRisk {
            slack_secs,
            needed_secs,
            ..
        } => {
            let left = needed_secs + slack_secs;
            let share = (needed_secs * 100).checked_div(left).unwrap_or(100);
            format!(
                "AT RISK: needs {} of the {} of night window left ({share} %)",
                duration(*needed_secs),
                duration(left)
            )
        }
        Verdict::Late {
            reason: Reason::NoRelay,
            ..
        } => format!(
            "LATE: no relay: nothing reaches {} until one is enrolled (`nightcast enroll --site {}`, then `nightcast-relay enroll` on the relay)",
            row.site, row.site
        ),
        Verdict::Late {
            shortfall_bytes,
            override_secs,
            reason,
        } => {
            let mut out = format!(
                "LATE: {} short; fix: an override of about {} at the site's cap (`nightcast override push`), or import it earlier",
                human(*shortfall_bytes),
                duration(*override_secs)
            );
            if let Reason::RelaySilent { since } = reason {
                out.push_str(&format!("; and the {}", silent(since)));
            }
            out
        }
        Verdict::UnknownMaster {} => "unknown_master".to_owned(),
    }
}

fn plan_table(plan: &[api::PlanRow], zones: &Zones) -> String {
    let mut out = Vec::new();
    let mut site = None;
    for row in plan {
        if site != Some(&row.site) {
            out.push(row.site.to_string());
            site = Some(&row.site);
        }
        let verdict = verdict(row, zones);
        out.push(format!(
            "  {}  {:<12} {:<24} {:>11} to fetch  {}",
            zones.time(&row.site, row.start),
            row.room.as_str(),
            format!("{} {}", row.master, row.version),
            human(row.new_bytes),
            verdict
        ));
        out.extend(row.failed.iter().map(|f| format!("      {f}")));
    }
    if out.is_empty() {
        "no upcoming sessions".to_owned()
    } else {
        out.join("\n")
    }
}
