//! The admin commands: each is one call to the controller's admin API, printed for a person (or as
//! JSON with `--json`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{Client, IMPORT_TIMEOUT};

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
    /// Masters: import a disk image as a new version, list, remove.
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
        #[arg(long, value_parser = ["relay", "agent"], default_value = "relay")]
        role: String,
        #[arg(long)]
        site: String,
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum Site {
    /// Add a site, or change its time zone, windows or cap.
    Add {
        name: String,
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
        /// Default auto for a new site; unchanged for an existing one.
        #[arg(long, value_parser = ["auto", "confirm"])]
        takeover: Option<String>,
    },
    /// List the sites.
    List,
    /// Let new NUCs of this site in by themselves for a while (a spare swap with nobody on site
    /// typing anything); `--for 0` closes it again. Outside such a time, a new NUC waits in
    /// `nightcast fleet` until `nightcast node approve`.
    AcceptNew {
        site: String,
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
    Approve { node: String },
    /// Revoke every certificate of a relay or NUC: it is refused at once by the controller and
    /// within one plan refresh by its relay, also if the controller is unreachable afterwards. It
    /// cannot enrol again until it is removed.
    Revoke { node: String },
    /// Revoke a relay or NUC and forget it (seat, holdings): it may then enrol again as a new NUC
    /// (re-imaging a known NUC).
    Rm { node: String },
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
    Add { site: String, room: String },
}

#[derive(Debug, Subcommand)]
pub enum Seat {
    /// Add a seat to a room.
    Add {
        site: String,
        room: String,
        seat: String,
    },
    /// Put a NUC (an agent of the site, by node id) at a seat: whatever was there becomes a spare,
    /// and the NUC leaves its previous seat.
    Assign {
        site: String,
        room: String,
        seat: String,
        node: String,
    },
    /// Confirm a takeover: the spare NUC takes the seat (the seat's NUC becomes a spare).
    Replace {
        site: String,
        room: String,
        seat: String,
        /// The spare's node id (see `nightcast seat list` or `nightcast fleet`).
        #[arg(long = "with")]
        with: String,
    },
    /// Each seat with its NUC and when it was last heard from ("silent" if too long ago), then
    /// the spares.
    List {
        #[arg(long)]
        site: Option<String>,
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
        image: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// The image's format: raw, qcow2, vmdk, vhdx, vpc (VHD) or vdi. Without it, it is detected
        /// from the first bytes (pass `--format raw` for a raw disk that looks like another format).
        #[arg(long)]
        format: Option<image_tools::import::ImageFormat>,
    },
    /// List the master versions.
    List,
    /// Remove a master version (refused while an upcoming session needs it).
    Rm { name: String, version: String },
}

#[derive(Debug, Subcommand)]
pub enum Override {
    /// Push a master to a site now (an emergency): the relay may use the WAN in the daytime for it.
    Push {
        #[arg(long)]
        site: String,
        #[arg(long)]
        master: String,
        #[arg(long)]
        version: String,
        /// Why (kept with the override, shown in `override list`).
        #[arg(long)]
        reason: String,
        /// Who asks (defaults to $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        /// How long the override lasts, in hours (1-72).
        #[arg(long, default_value_t = 4)]
        hours: u64,
    },
    /// The overrides in force.
    List,
}

#[derive(Debug, Subcommand)]
pub enum Calendar {
    /// Import sessions from CSV (header site,room,master,version,start,end) or iCalendar (.ics).
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum Session {
    /// List the sessions.
    List,
    /// Add one session; times are YYYY-MM-DD HH:MM in the site's time zone.
    Add {
        #[arg(long)]
        site: String,
        #[arg(long)]
        room: String,
        #[arg(long)]
        master: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
    },
    /// Remove a session by its id (see `session list`).
    Rm { id: i64 },
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

/// How a reply is shown to a person.
type Render = Box<dyn Fn(&Value) -> String>;

pub fn run(client: &Client, cmd: Admin, as_json: bool) -> Result<()> {
    let (value, human): (Value, Render) = match cmd {
        Admin::Site(Site::Add {
            name,
            tz,
            windows,
            cap_mbit,
            takeover,
        }) => {
            let mut body =
                json!({"name": name, "tz": tz, "windows": windows, "cap_mbit": cap_mbit});
            if let Some(t) = takeover {
                body["takeover"] = json!(t);
            }
            let v = client.call("POST", "/v1/sites", Some(&body))?;
            (v, Box::new(move |_| format!("site {name} saved")))
        }
        Admin::Site(Site::List) => (
            client.call("GET", "/v1/sites", None)?,
            Box::new(|v| {
                table(
                    v,
                    &["SITE", "TIME ZONE", "WINDOWS", "WAN Mbit", "TAKEOVER"],
                    &["name", "tz", "windows", "cap_mbit", "takeover"],
                )
            }),
        ),
        Admin::Site(Site::AcceptNew { site, for_minutes }) => {
            let v = client.call(
                "POST",
                &format!("/v1/sites/{site}/accept-new"),
                Some(&json!({ "minutes": for_minutes })),
            )?;
            (
                v,
                Box::new(move |v| match v["until"].as_i64() {
                    Some(until) => format!(
                        "site {site} lets new NUCs in by themselves until {} UTC",
                        cell("until", &json!(until))
                    ),
                    None => format!("site {site} no longer lets new NUCs in by themselves"),
                }),
            )
        }
        Admin::Node(Node::Approve { node }) => (
            client.call("POST", &format!("/v1/nodes/{node}/approve"), None)?,
            Box::new(|v| {
                format!(
                    "{} {} of site {} approved (MAC {}, key {}): it gets its certificate at its next request",
                    v["role"].as_str().unwrap_or(""),
                    v["node"].as_str().unwrap_or(""),
                    v["site"].as_str().unwrap_or(""),
                    v["mac"].as_str().unwrap_or(""),
                    v["key"].as_str().unwrap_or("")
                )
            }),
        ),
        Admin::Node(Node::Revoke { node }) => (
            client.call("POST", &format!("/v1/nodes/{node}/revoke"), None)?,
            Box::new(|v| {
                format!(
                    "{} revoked ({} certificate(s)): refused from now on",
                    v["node"].as_str().unwrap_or(""),
                    v["certificates_revoked"]
                )
            }),
        ),
        Admin::Node(Node::Rm { node }) => (
            client.call("DELETE", &format!("/v1/nodes/{node}"), None)?,
            Box::new(|v| {
                format!(
                    "{} revoked and removed: it may enrol again as a new NUC",
                    v["node"].as_str().unwrap_or("")
                )
            }),
        ),
        Admin::Room(Room::Add { site, room }) => {
            let v = client.call(
                "POST",
                "/v1/rooms",
                Some(&json!({"site": site, "room": room})),
            )?;
            (v, Box::new(move |_| format!("room {room} added to {site}")))
        }
        Admin::Master(Master::Import {
            image,
            name,
            version,
            format,
        }) => {
            let image = std::fs::canonicalize(&image).unwrap_or(image);
            let body = json!({"image": image, "name": name, "version": version,
                              "format": format.map(|f| f.as_str())});
            (
                client.call_waiting(
                    "POST",
                    "/v1/masters",
                    Some(&body),
                    client.timeout.max(IMPORT_TIMEOUT),
                )?,
                Box::new(|v| {
                    format!(
                        "{} {} imported: {} chunks, {} new in the store ({})",
                        v["name"].as_str().unwrap_or(""),
                        v["version"].as_str().unwrap_or(""),
                        v["chunks"],
                        v["new_chunks"],
                        image_tools::cli::human(v["new_stored_bytes"].as_u64().unwrap_or(0))
                    )
                }),
            )
        }
        Admin::Master(Master::List) => (
            client.call("GET", "/v1/masters", None)?,
            Box::new(|v| {
                table(
                    v,
                    &["MASTER", "VERSION", "SIZE", "STORED"],
                    &["name", "version", "size", "stored_bytes"],
                )
            }),
        ),
        Admin::Master(Master::Rm { name, version }) => {
            let v = client.call("DELETE", &format!("/v1/masters/{name}/{version}"), None)?;
            (v, Box::new(move |_| format!("{name} {version} removed")))
        }
        Admin::Calendar(Calendar::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body = json!({"file_name": file.display().to_string(), "text": text});
            (
                client.call("POST", "/v1/calendar", Some(&body))?,
                Box::new(|v| format!("{} sessions imported", v["imported"])),
            )
        }
        Admin::Session(Session::List) => (
            client.call("GET", "/v1/sessions", None)?,
            Box::new(|v| {
                table(
                    v,
                    &["ID", "SITE", "ROOM", "MASTER", "VERSION", "START (UTC)"],
                    &["id", "site", "room", "master", "version", "start"],
                )
            }),
        ),
        Admin::Session(Session::Add {
            site,
            room,
            master,
            version,
            start,
            end,
        }) => {
            let body = json!({"site": site, "room": room, "master": master, "version": version,
                              "start": start, "end": end});
            let v = client.call("POST", "/v1/sessions", Some(&body))?;
            (
                v,
                Box::new(move |_| {
                    format!("session added: {site}/{room} {master} {version} from {start}")
                }),
            )
        }
        Admin::Session(Session::Rm { id }) => {
            let v = client.call("DELETE", &format!("/v1/sessions/{id}"), None)?;
            (v, Box::new(move |_| format!("session {id} removed")))
        }
        Admin::Seat(Seat::Add { site, room, seat }) => {
            let body = json!({"site": site, "room": room, "seat": seat});
            let v = client.call("POST", "/v1/seats", Some(&body))?;
            (
                v,
                Box::new(move |_| format!("seat {seat} added to {site}/{room}")),
            )
        }
        Admin::Seat(Seat::Assign {
            site,
            room,
            seat,
            node,
        }) => bind(client, "assign", &site, &room, &seat, &node)?,
        Admin::Seat(Seat::Replace {
            site,
            room,
            seat,
            with,
        }) => bind(client, "replace", &site, &room, &seat, &with)?,
        Admin::Seat(Seat::List { site }) => {
            let path = match &site {
                Some(s) => format!("/v1/seats?site={s}"),
                None => "/v1/seats".to_owned(),
            };
            (client.call("GET", &path, None)?, Box::new(seat_table))
        }
        Admin::Plan => (client.call("GET", "/v1/plan", None)?, Box::new(plan_table)),
        Admin::Override(Override::Push {
            site,
            master,
            version,
            reason,
            by,
            hours,
        }) => {
            let body = json!({"site": site, "master": master, "version": version, "reason": reason,
                              "by": by, "hours": hours});
            let v = client.call("POST", "/v1/overrides", Some(&body))?;
            (
                v,
                Box::new(move |v| {
                    format!(
                        "override {} recorded: {site} may fetch {master} {version} now, until {}",
                        v["id"],
                        cell("start", &v["until"])
                    )
                }),
            )
        }
        Admin::Override(Override::List) => (
            client.call("GET", "/v1/overrides", None)?,
            Box::new(|v| {
                table(
                    v,
                    &[
                        "ID",
                        "SITE",
                        "MASTER",
                        "VERSION",
                        "BY",
                        "UNTIL (UTC)",
                        "REASON",
                    ],
                    &["id", "site", "master", "version", "by", "until", "reason"],
                )
            }),
        ),
        Admin::Fleet => (
            client.call("GET", "/v1/fleet", None)?,
            Box::new(|v| {
                table(
                    v,
                    &[
                        "SITE",
                        "NODE",
                        "ROLE",
                        "LAST SEEN (UTC)",
                        "SEAT",
                        "HOLDS",
                        "STATE",
                        "ATTENTION",
                    ],
                    &[
                        "site",
                        "node",
                        "role",
                        "last_seen",
                        "seat",
                        "holding",
                        "state",
                        "attention",
                    ],
                )
            }),
        ),
        Admin::Enroll {
            role,
            site,
            ttl_hours,
        } => {
            let body = json!({"role": role, "site": site, "ttl_hours": ttl_hours});
            (
                client.call("POST", "/v1/tokens", Some(&body))?,
                Box::new(|v| v["token"].as_str().unwrap_or("").to_owned()),
            )
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", human(&value));
    }
    Ok(())
}

/// `seat assign` and `seat replace`: one call, and what changed.
fn bind(
    client: &Client,
    how: &str,
    site: &str,
    room: &str,
    seat: &str,
    node: &str,
) -> Result<(Value, Render)> {
    let body = json!({"site": site, "room": room, "seat": seat, "node": node});
    let v = client.call("POST", &format!("/v1/seats/{how}"), Some(&body))?;
    let (site, room, seat, node) = (
        site.to_owned(),
        room.to_owned(),
        seat.to_owned(),
        node.to_owned(),
    );
    Ok((
        v,
        Box::new(move |v| {
            let mut out = format!("{node} now sits at {site} {room}/{seat}");
            if let Some(old) = v["replaced"].as_str() {
                out.push_str(&format!(", replacing {old} (now a spare)"));
            }
            if let Some(from) = v["moved_from"].as_str() {
                out.push_str(&format!("; {from} is left empty"));
            }
            out
        }),
    ))
}

/// `seat list`: the seats, then the spares.
fn seat_table(v: &Value) -> String {
    let seats: Vec<Value> = v["seats"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let mut s = s.clone();
                    s["node"] = json!(s["node"].as_str().unwrap_or("-"));
                    if s["node"] == "-" {
                        s["last_seen"] = json!("-");
                    }
                    s["silent"] = json!(if s["silent"] == true { "silent" } else { "" });
                    s
                })
                .collect()
        })
        .unwrap_or_default();
    let spares: Vec<Value> = v["spares"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let mut s = s.clone();
                    let note = match (s["recent"] == true, s["waiting"].as_str()) {
                        (_, Some(w)) => w.to_owned(),
                        (true, None) => String::new(),
                        (false, None) => "not heard from lately: cannot take over".to_owned(),
                    };
                    s["note"] = json!(note);
                    s
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = table(
        &json!(seats),
        &["SITE", "ROOM", "SEAT", "NODE", "LAST SEEN (UTC)", ""],
        &["site", "room", "seat", "node", "last_seen", "silent"],
    );
    out.push_str("\n\n");
    if spares.is_empty() {
        out.push_str("no spares");
    } else {
        out.push_str(&table(
            &json!(spares),
            &["SITE", "SPARE", "LAST SEEN (UTC)", ""],
            &["site", "node", "last_seen", "note"],
        ));
    }
    out
}

/// A text table of `keys` from an array of objects; byte counts and times made readable.
fn table(v: &Value, headers: &[&str], keys: &[&str]) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|row| keys.iter().map(|k| cell(k, &row[*k])).collect())
                .collect()
        })
        .unwrap_or_default();
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

fn cell(key: &str, v: &Value) -> String {
    match (key, v) {
        ("size" | "stored_bytes", Value::Number(n)) => {
            image_tools::cli::human(n.as_u64().unwrap_or(0))
        }
        ("last_seen", Value::Null) => "never".to_owned(),
        ("start" | "last_seen" | "until", Value::Number(n)) => {
            jiff::Timestamp::from_second(n.as_i64().unwrap_or(0))
                .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default()
        }
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
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

fn plan_table(v: &Value) -> String {
    let mut out = Vec::new();
    let mut site = "";
    for row in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let this = row["site"].as_str().unwrap_or("");
        if this != site {
            out.push(this.to_owned());
            site = this;
        }
        let detail = &row["detail"];
        let verdict = match row["verdict"].as_str().unwrap_or("") {
            "on_time" => match detail["night"].as_str() {
                Some(n) => format!("on time (night of {n})"),
                None => "on time (already there)".to_owned(),
            },
            "at_risk" => format!(
                "AT RISK: {} min to spare",
                detail["slack_secs"].as_i64().unwrap_or(0) / 60
            ),
            "late" => format!(
                "LATE: {} short; fix: an override of about {} at the site's cap (`nightcast override push`), or import it earlier",
                image_tools::cli::human(detail["shortfall_bytes"].as_u64().unwrap_or(0)),
                duration(detail["override_secs"].as_i64().unwrap_or(0))
            ),
            other => other.to_owned(),
        };
        out.push(format!(
            "  {}  {:<12} {:<24} {:>11} to fetch  {}",
            cell("start", &row["start"]),
            row["room"].as_str().unwrap_or(""),
            format!(
                "{} {}",
                row["master"].as_str().unwrap_or(""),
                row["version"].as_str().unwrap_or("")
            ),
            image_tools::cli::human(row["new_bytes"].as_u64().unwrap_or(0)),
            verdict
        ));
    }
    if out.is_empty() {
        "no upcoming sessions".to_owned()
    } else {
        out.join("\n")
    }
}
