//! The slot table and its transitions, pure: which master version each slot holds, how `begin_next`,
//! `mark_ready`, `swap`, `rollback` and `abandon_next` change it, its text form in `slots/state`,
//! and the events logged for each (see the parent module for why this survives a crash).

use std::fmt;

use image_tools::{MasterName, MasterVersion};

use super::STATE_HEADER;

/// One of the three slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotName {
    Current,
    Next,
    Previous,
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotName::Current => "current",
            SlotName::Next => "next",
            SlotName::Previous => "previous",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Empty,
    /// `next` has its manifest; its image is being fetched and assembled (or is not verified yet).
    Fetching,
    /// Complete and verified: `next` after `mark_ready`, and `previous`.
    Ready,
    /// `current`: what the sessions run.
    Active,
}

/// A master version held in a slot, with the sequence number naming its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub seq: u64,
    pub name: MasterName,
    pub version: MasterVersion,
}

impl Held {
    /// `<seq>-<name>@<version>`: unique, and safe as a file name (the ids are validated).
    pub fn dir_name(&self) -> String {
        format!("{}-{}@{}", self.seq, self.name, self.version)
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} (#{})", self.name, self.version, self.seq)
    }
}

/// What `state()` reports for one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot: SlotName,
    pub state: SlotState,
    pub held: Option<Held>,
}

/// The slot table: the pure core of the state machine. Transitions return the new table and never
/// touch a disk; [`Slots`] commits them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Committed transitions so far.
    pub gen: u64,
    pub current: Option<Held>,
    pub next: Option<Held>,
    pub next_ready: bool,
    pub previous: Option<Held>,
}

/// A transition that the table's state does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("slot next already holds {held}: abandon it first")]
    NextOccupied { held: Held },
    #[error("slot next is empty")]
    NoNext,
    #[error("slot next holds {held}, which is not ready (not fully assembled and verified)")]
    NextNotReady { held: Held },
    #[error("slot next holds {held}, which is already ready")]
    AlreadyReady { held: Held },
    #[error("the proof of verification is for #{proof_seq}, but slot next holds {held}")]
    WrongNext { proof_seq: u64, held: Held },
    #[error("slot previous is empty: nothing to roll back to")]
    NoPrevious,
    #[error("slot {slot} is empty")]
    Empty { slot: SlotName },
}

impl Table {
    pub fn info(&self) -> [SlotInfo; 3] {
        let info = |slot, held: &Option<Held>, full| SlotInfo {
            slot,
            state: if held.is_some() {
                full
            } else {
                SlotState::Empty
            },
            held: held.clone(),
        };
        let next_state = if self.next_ready {
            SlotState::Ready
        } else {
            SlotState::Fetching
        };
        [
            info(SlotName::Current, &self.current, SlotState::Active),
            info(SlotName::Next, &self.next, next_state),
            info(SlotName::Previous, &self.previous, SlotState::Ready),
        ]
    }

    pub fn get(&self, slot: SlotName) -> Option<&Held> {
        match slot {
            SlotName::Current => self.current.as_ref(),
            SlotName::Next => self.next.as_ref(),
            SlotName::Previous => self.previous.as_ref(),
        }
    }

    /// The versions this table keeps (their directories must not be deleted).
    pub fn referenced(&self) -> impl Iterator<Item = &Held> {
        [&self.current, &self.next, &self.previous]
            .into_iter()
            .flatten()
    }

    fn bumped(&self) -> Table {
        Table {
            gen: self.gen + 1,
            ..self.clone()
        }
    }

    /// `next`: Empty -> Fetching, for a new directory numbered with the new `gen`.
    pub fn begin_next(
        &self,
        name: MasterName,
        version: MasterVersion,
    ) -> Result<Table, TransitionError> {
        if let Some(held) = &self.next {
            return Err(TransitionError::NextOccupied { held: held.clone() });
        }
        let mut t = self.bumped();
        t.next = Some(Held {
            seq: t.gen,
            name,
            version,
        });
        t.next_ready = false;
        Ok(t)
    }

    /// `next`: Fetching -> Ready, for the directory numbered `seq`.
    pub fn mark_ready(&self, seq: u64) -> Result<Table, TransitionError> {
        let held = self.next.as_ref().ok_or(TransitionError::NoNext)?;
        if held.seq != seq {
            return Err(TransitionError::WrongNext {
                proof_seq: seq,
                held: held.clone(),
            });
        }
        if self.next_ready {
            return Err(TransitionError::AlreadyReady { held: held.clone() });
        }
        let mut t = self.bumped();
        t.next_ready = true;
        Ok(t)
    }

    /// next -> current -> previous; returns the new table and the old `previous`, now unreferenced.
    pub fn swap(&self) -> Result<(Table, Option<Held>), TransitionError> {
        let next = self.next.clone().ok_or(TransitionError::NoNext)?;
        if !self.next_ready {
            return Err(TransitionError::NextNotReady { held: next });
        }
        let mut t = self.bumped();
        let dropped = t.previous.take();
        t.previous = t.current.take();
        t.current = Some(next);
        t.next = None;
        t.next_ready = false;
        Ok((t, dropped))
    }

    /// `previous` becomes `current` again, and `current` becomes `previous` (kept, so the DSI can
    /// roll forward or inspect it). `next` is left alone.
    pub fn rollback(&self) -> Result<Table, TransitionError> {
        if self.previous.is_none() {
            return Err(TransitionError::NoPrevious);
        }
        let mut t = self.bumped();
        std::mem::swap(&mut t.current, &mut t.previous);
        Ok(t)
    }

    /// `next` -> Empty; returns the abandoned version, now unreferenced.
    pub fn abandon_next(&self) -> Result<(Table, Held), TransitionError> {
        let held = self.next.clone().ok_or(TransitionError::NoNext)?;
        let mut t = self.bumped();
        t.next = None;
        t.next_ready = false;
        Ok((t, held))
    }

    /// The `state` file's text.
    pub fn encode(&self) -> String {
        let mut out = format!("{STATE_HEADER}\ngen {}\n", self.gen);
        let line = |out: &mut String, key: &str, h: &Held, extra: &str| {
            out.push_str(&format!(
                "{key} {} {} {}{extra}\n",
                h.seq, h.name, h.version
            ));
        };
        if let Some(h) = &self.current {
            line(&mut out, "current", h, "");
        }
        if let Some(h) = &self.previous {
            line(&mut out, "previous", h, "");
        }
        if let Some(h) = &self.next {
            let extra = if self.next_ready {
                " ready"
            } else {
                " fetching"
            };
            line(&mut out, "next", h, extra);
        }
        out
    }

    /// Parses what [`Table::encode`] writes, and checks the table's invariants.
    pub fn decode(text: &str) -> Result<Table, String> {
        let mut lines = text.lines();
        if lines.next() != Some(STATE_HEADER) {
            return Err(format!("first line is not {STATE_HEADER:?}"));
        }
        let mut gen = None;
        let mut t = Table::default();
        let mut seen_next = false;
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            let words: Vec<&str> = line.split(' ').collect();
            let held = |w: &[&str]| -> Result<Held, String> {
                let [seq, name, version] = w else {
                    return Err(format!("line {n}: expected <seq> <name> <version>"));
                };
                Ok(Held {
                    seq: seq
                        .parse()
                        .map_err(|_| format!("line {n}: bad sequence number {seq:?}"))?,
                    name: MasterName::new(name).map_err(|e| format!("line {n}: {e}"))?,
                    version: MasterVersion::new(version).map_err(|e| format!("line {n}: {e}"))?,
                })
            };
            let dup = || format!("line {n}: {} given twice", words[0]);
            match words[0] {
                "gen" if words.len() == 2 && gen.is_none() => {
                    gen = Some(
                        words[1]
                            .parse::<u64>()
                            .map_err(|_| format!("line {n}: bad gen"))?,
                    )
                }
                "current" if t.current.is_none() => t.current = Some(held(&words[1..])?),
                "previous" if t.previous.is_none() => t.previous = Some(held(&words[1..])?),
                "next" if !seen_next && words.len() == 5 => {
                    seen_next = true;
                    t.next = Some(held(&words[1..4])?);
                    t.next_ready = match words[4] {
                        "ready" => true,
                        "fetching" => false,
                        other => return Err(format!("line {n}: bad next state {other:?}")),
                    };
                }
                "gen" | "current" | "previous" | "next" if words.len() > 1 => return Err(dup()),
                _ => return Err(format!("line {n}: unexpected {line:?}")),
            }
        }
        t.gen = gen.ok_or("no gen line")?;
        let seqs: Vec<u64> = t.referenced().map(|h| h.seq).collect();
        if seqs.iter().any(|&s| s > t.gen) {
            return Err("a slot's sequence number is above gen".into());
        }
        if (1..seqs.len()).any(|i| seqs[..i].contains(&seqs[i])) {
            return Err("two slots share a directory".into());
        }
        if t.previous.is_some() && t.current.is_none() {
            return Err("previous without current".into());
        }
        Ok(t)
    }
}

/// A transition, as logged (one line each in `events.log`, and through `tracing`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    BeganNext {
        next: Held,
    },
    NextReady {
        next: Held,
    },
    Swapped {
        current: Held,
        previous: Option<Held>,
        removed: Option<Held>,
    },
    RolledBack {
        current: Held,
        previous: Option<Held>,
    },
    AbandonedNext {
        next: Held,
    },
    /// What `open` found and cleaned after a crash (only logged when it found something).
    Recovered {
        removed: Vec<String>,
        temp_files: usize,
        /// The table's gen, when the log's last line was older (a crash between commit and log).
        unlogged_gen: Option<u64>,
    },
}

fn opt(h: &Option<Held>) -> String {
    h.as_ref().map_or_else(|| "-".into(), |h| h.dir_name())
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::BeganNext { next } => write!(f, "begin_next next={}", next.dir_name()),
            Event::NextReady { next } => write!(f, "ready next={}", next.dir_name()),
            Event::Swapped {
                current,
                previous,
                removed,
            } => write!(
                f,
                "swap current={} previous={} removed={}",
                current.dir_name(),
                opt(previous),
                opt(removed)
            ),
            Event::RolledBack { current, previous } => write!(
                f,
                "rollback current={} previous={}",
                current.dir_name(),
                opt(previous)
            ),
            Event::AbandonedNext { next } => write!(f, "abandon_next next={}", next.dir_name()),
            Event::Recovered {
                removed,
                temp_files,
                unlogged_gen,
            } => {
                write!(
                    f,
                    "recover removed=[{}] temp_files={temp_files}",
                    removed.join(",")
                )?;
                if let Some(g) = unlogged_gen {
                    write!(f, " unlogged_gen={g}")?;
                }
                Ok(())
            }
        }
    }
}
