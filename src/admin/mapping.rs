//! `nightcast calendar map ...`: the mapping rules through which calendar events in words
//! ("Formation Excel, niveau 2" at "Mairie de Lyon, salle 2") become sessions.

use anyhow::{bail, Result};
use clap::Subcommand;
use image_tools::api::{self, MappingRule, NewMappingRule};
use image_tools::{MasterName, MasterVersion, RoomName, SiteId};

use super::{printed, table, Printed};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum Map {
    /// Events whose title (SUMMARY) matches PATTERN run this master version. The same pattern
    /// again replaces its rule.
    Title {
        /// The course title to match, in any letter case; `*` stands for any text ("Excel*"
        /// matches "Excel, niveau 2"). Without `*`, the whole title must be this.
        pattern: String,
        /// The master and version these courses run, e.g. `--master office 3`.
        #[arg(long, num_args = 2, value_names = ["NAME", "VERSION"], required = true)]
        master: Vec<String>,
    },
    /// Events with this category (one value of CATEGORIES, in any letter case) run this master
    /// version.
    Category {
        /// The category, whole, as the calendar application shows it (e.g. "Bureautique").
        name: String,
        /// The master and version these courses run, e.g. `--master office 3`.
        #[arg(long, num_args = 2, value_names = ["NAME", "VERSION"], required = true)]
        master: Vec<String>,
    },
    /// Events whose place (LOCATION) matches PATTERN take place in this room. The same pattern
    /// again replaces its rule.
    Location {
        /// The place as the calendar writes it, in any letter case; `*` stands for any text
        /// ("Lyon, Salle 1*").
        pattern: String,
        /// The site (see `nightcast site list`).
        #[arg(long)]
        site: SiteId,
        /// The training room at that site (see `nightcast room list`).
        #[arg(long)]
        room: RoomName,
    },
    /// The rules, in the order they are tried (the first title or category rule that matches
    /// an event gives its master; the first location rule its room).
    List,
    /// Remove a rule by its id (the first column of `nightcast calendar map list`).
    Rm {
        /// The rule's id.
        id: i64,
    },
}

pub(super) fn run(client: &Client, cmd: Map) -> Result<Printed> {
    let master = |v: Vec<String>| -> Result<(MasterName, MasterVersion)> {
        let [name, version] = &v[..] else {
            bail!("--master takes a name and a version, e.g. `--master office 3`");
        };
        Ok((name.parse()?, version.parse()?))
    };
    let rule = match cmd {
        Map::List => {
            let rules: Vec<MappingRule> = client.ask("GET", "/v1/calendar/rules")?;
            let rows = rules.iter().map(|r| {
                let (matches, gives) = words(&r.rule);
                vec![r.id.to_string(), matches, gives]
            });
            let text = match rules.is_empty() {
                true => "no mapping rules: add one with `nightcast calendar map title|category|location`".to_owned(),
                false => table(&["ID", "MATCHES", "GIVES"], rows),
            };
            return printed(&rules, text);
        }
        Map::Rm { id } => {
            let done: api::Done = client.ask("DELETE", &format!("/v1/calendar/rules/{id}"))?;
            return printed(&done, format!("rule {id} removed"));
        }
        Map::Title { pattern, master: m } => {
            let (master, version) = master(m)?;
            NewMappingRule::Title {
                pattern,
                master,
                version,
            }
        }
        Map::Category { name, master: m } => {
            let (master, version) = master(m)?;
            NewMappingRule::Category {
                name,
                master,
                version,
            }
        }
        Map::Location {
            pattern,
            site,
            room,
        } => NewMappingRule::Location {
            pattern,
            site,
            room,
        },
    };
    let made: MappingRule = client.send("POST", "/v1/calendar/rules", &rule)?;
    let (matches, gives) = words(&made.rule);
    let mut text = format!("rule {}: {matches} -> {gives}", made.id);
    if let Some(old) = &made.replaced {
        text += &format!(" (was -> {})", words(old).1);
    }
    printed(&made, text)
}

/// What a rule matches and what it gives, in words.
fn words(rule: &NewMappingRule) -> (String, String) {
    match rule {
        NewMappingRule::Title {
            pattern,
            master,
            version,
        } => (format!("title {pattern:?}"), format!("{master} {version}")),
        NewMappingRule::Category {
            name,
            master,
            version,
        } => (format!("category {name:?}"), format!("{master} {version}")),
        NewMappingRule::Location {
            pattern,
            site,
            room,
        } => (format!("location {pattern:?}"), format!("{site}/{room}")),
    }
}
