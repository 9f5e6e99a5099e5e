//! The seat's workstation, carried out: the I/O shell around `workstation`'s decisions. At every
//! tick it gathers the VM's state and its boot's health check, asks [`Workstation::step`] what to
//! do, and does it with the hypervisor, the slots and the verdicts file:
//! - the VM is built from the seat's machine profile ([`Machines`]: the master's profile, the
//!   seat's hostname and MAC, also on a spare that took the seat, the NUC's facts), unless the
//!   config gives a raw command line;
//! - a reset presses the ACPI power button of a guest that came up and lets the loop go on while
//!   it powers off (up to the grace time): what comes after the reset waits for it, nothing
//!   blocks; a guest that did not come up (hung, panicked) is stopped at once;
//! - a master that did not come up is recorded as bad on this NUC (`verdicts`) before it is
//!   rolled back; the master on trial is kept there too, so a power cut during its first boot
//!   resumes the trial instead of forgetting it.
//!
//! Used by the daemon; also usable on its own (the guest tests drive it with real slots and a
//! real VM, without a relay).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use image_tools::wire::{MasterRef, Order, OrderKind, SessionEntry};
use jiff::civil::Date;

use crate::daemon::label;
use crate::health::Health;
use crate::hypervisor::{Hypervisor, Machine, VmStatus};
use crate::profile::{Host, ProfileError, Seat};
use crate::profile_source::{Choices, Source};
use crate::slots::{SlotName, SlotState, Slots};
use crate::verdicts::{manifest_hash, BadMaster, Verdicts};
use crate::workstation::{Action, Held, Inputs, Workstation};

/// How the VM of a seat is built: the site and this NUC, the NUC's facts, the profiles.
#[derive(Clone, Debug)]
pub struct Machines {
    pub site: String,
    pub node: String,
    pub host: Host,
    /// The profiles to choose from: the NUC's own and the catalogue's.
    pub profiles: Choices,
}

impl Machines {
    /// The machine for `master` at `seat` (room, seat); a NUC without a seat is `spare/<node>`;
    /// and where its profile came from.
    pub fn machine(
        &self,
        seat: Option<&(String, String)>,
        master: Option<&MasterRef>,
    ) -> Result<(Machine, Source), ProfileError> {
        let seat = match seat {
            Some((room, seat)) => Seat::derive(&self.site, room, seat)?,
            None => Seat::derive(&self.site, "spare", &self.node)?,
        };
        let (profile, source) = self.profiles.choose(master.map(|m| m.name.as_str()));
        Ok((
            Machine {
                profile,
                seat,
                host: self.host.clone(),
            },
            source,
        ))
    }
}

/// What the station did and saw, for the status and the reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct News {
    pub resets: u64,
    pub last_reset: Option<i64>,
    pub swaps: u64,
    pub last_swap: Option<i64>,
    pub rollbacks: u64,
    /// The last of the DSI's orders carried out (`orders`).
    pub orders_done: u64,
    /// The health check of the VM's boot, in words.
    pub boot: String,
    /// Seconds from the last start to its guest's health signal.
    pub boot_secs: Option<f64>,
    /// The accelerator of the last start (`kvm`, or `tcg` and why).
    pub accel: Option<String>,
    /// The machine profile of the last start: "master version: where it came from: profile".
    pub profile: Option<String>,
    /// The same, for the report.
    #[serde(skip)]
    pub vm_profile: Option<image_tools::report::VmProfile>,
    /// Slot contents, as "name version".
    pub current: Option<String>,
    pub next: Option<String>,
    pub next_state: String,
    pub previous: Option<String>,
    /// Errors since the daemon last took them (they reach `last_error` in the status).
    #[serde(skip)]
    pub errors: Vec<String>,
}

/// What the daemon knows this tick.
#[derive(Clone, Debug)]
pub struct Tick<'a> {
    pub now: i64,
    pub local: Option<(Date, u32)>,
    pub sessions: &'a [SessionEntry],
    /// This NUC's seat (room, seat), if it has one.
    pub seat: Option<&'a (String, String)>,
}

/// A reset waiting for the guest to power off after the ACPI button.
#[derive(Debug)]
struct Stopping {
    until: tokio::time::Instant,
    why: String,
    /// What comes after the reset.
    rest: Vec<Action>,
}

#[derive(Debug)]
pub struct Station {
    data: PathBuf,
    hv: Box<dyn Hypervisor + Send>,
    slots: Arc<Mutex<Slots>>,
    ws: Workstation,
    held: Held,
    verdicts: Verdicts,
    machines: Option<Machines>,
    stopping: Option<Stopping>,
    /// When the VM last started, for the time to its health signal.
    started: Option<tokio::time::Instant>,
    /// The guest of the VM's current boot was seen healthy: it can take the ACPI power button
    /// (one that did not come up is stopped at once).
    healthy: bool,
    pub news: News,
}

impl Station {
    /// The station of the NUC whose data directory is `data`; resumes a trial the verdicts file
    /// holds.
    pub fn new(
        data: PathBuf,
        hv: Box<dyn Hypervisor + Send>,
        slots: Arc<Mutex<Slots>>,
        end_of_day: u32,
        machines: Option<Machines>,
    ) -> Station {
        let mut news = News::default();
        let verdicts = Verdicts::load(&data).unwrap_or_else(|e| {
            tracing::error!("{e}");
            news.errors.push(e.to_string());
            Verdicts::default()
        });
        news.orders_done = crate::orders::load(&data);
        let mut ws = Workstation::new(end_of_day);
        if let Some(t) = &verdicts.trial {
            tracing::warn!(master = %label(&t.master), boots = t.boots, "a new master was on trial when the agent stopped: its trial goes on");
        }
        ws.resume_trial(verdicts.trial.clone());
        let mut station = Station {
            data,
            hv,
            slots,
            ws,
            held: Held::default(),
            verdicts,
            machines,
            stopping: None,
            started: None,
            healthy: false,
            news,
        };
        station.refresh_slots();
        station
    }

    pub fn held(&self) -> &Held {
        &self.held
    }

    pub fn session(&self) -> Option<&SessionEntry> {
        self.ws.session()
    }

    pub fn verdicts(&self) -> &Verdicts {
        &self.verdicts
    }

    /// Carries out the DSI's new orders for NUC `node` at `now` (reset: the VM stopped at once
    /// and its writes thrown away; rollback: the previous master back, then the same; wake: it is
    /// awake), and keeps the last one done. A session under way starts again at the next tick.
    pub fn obey(&mut self, now: i64, orders: &[Order], node: &str) {
        for o in crate::orders::to_do(orders, node, self.news.orders_done) {
            tracing::warn!(
                order = o.id,
                kind = o.kind.as_str(),
                "the DSI asked for this from the controller"
            );
            match o.kind {
                OrderKind::Wake => {}
                OrderKind::Reset | OrderKind::Rollback => {
                    self.stopping = None;
                    self.healthy = false;
                    self.ws.stopped();
                    if o.kind == OrderKind::Rollback {
                        if self.held.previous.is_none() {
                            self.error(
                                "the DSI asked to roll back, but this NUC holds no previous master"
                                    .into(),
                            );
                        } else {
                            self.rollback(now);
                        }
                    }
                    self.finish_reset(now, "the DSI asked for it");
                }
            }
            self.news.orders_done = o.id;
            if let Err(e) = crate::orders::save(&self.data, o.id) {
                self.error(format!("cannot keep the last order done: {e}"));
            }
        }
    }

    /// Something is about to change within a second that the next tick should see at once: a
    /// guest booting towards its health signal, or one powering off for a reset. The daemon
    /// ticks faster meanwhile, so that neither the next boot nor the health signal waits for a
    /// whole tick.
    pub fn watching(&self) -> bool {
        let booting = self.started.is_some()
            && !self.healthy
            && (self.ws.session().is_some() || self.ws.is_trial_booting());
        self.stopping.is_some() || booting
    }

    /// The VM is in use between sessions: a trial boot, or a reset waiting for the guest.
    pub fn busy(&self) -> Option<&'static str> {
        if self.stopping.is_some() {
            Some("stopping the VM")
        } else if self.ws.is_trial_booting() {
            Some("booting the new master once to check it")
        } else {
            None
        }
    }

    /// The catalogue's profiles, verified: from the next VM start on (a running VM keeps its own).
    pub fn set_catalogue_profiles(&mut self, catalogue: BTreeMap<String, crate::profile::Profile>) {
        if let Some(m) = &mut self.machines {
            m.profiles.catalogue = catalogue;
        }
    }

    /// The site's USB policy: the guest's USB controller from the next VM start on, the devices
    /// passed by it from then.
    pub fn set_usb_policy(&mut self, usb: crate::profile::UsbPolicy) {
        if let Some(m) = &mut self.machines {
            if m.host.usb != usb {
                tracing::info!(%usb, "the site's USB policy: used from the next VM start");
                m.host.usb = usb;
            }
        }
    }

    pub fn hypervisor(&mut self) -> &mut (dyn Hypervisor + Send) {
        &mut *self.hv
    }

    fn error(&mut self, what: String) {
        tracing::error!("{what}");
        self.news.errors.push(what);
    }

    /// `m` is published with the manifest hashed `hash`: a bad version republished may be
    /// tried again.
    pub fn republished(&mut self, m: &MasterRef, hash: &str) {
        if self.verdicts.republished(m, hash) {
            tracing::info!(master = %label(m), "a version that failed here was republished: it will be tried again");
            self.save_verdicts();
        }
    }

    fn save_verdicts(&mut self) {
        if let Err(e) = self.verdicts.save(&self.data) {
            self.error(e.to_string());
        }
    }

    /// Copies the slot table, when the preparation is not holding the slots.
    pub fn refresh_slots(&mut self) {
        let Ok(slots) = self.slots.try_lock() else {
            return;
        };
        let master = |slot: SlotName| {
            slots.table().get(slot).map(|h| MasterRef {
                name: h.name.clone(),
                version: h.version.clone(),
            })
        };
        self.held = Held {
            current: master(SlotName::Current),
            next: master(SlotName::Next),
            next_ready: slots.state()[1].state == SlotState::Ready,
            previous: master(SlotName::Previous),
        };
        let text = |m: &Option<MasterRef>| m.as_ref().map(label);
        self.news.current = text(&self.held.current);
        self.news.next = text(&self.held.next);
        self.news.previous = text(&self.held.previous);
        self.news.next_state = match slots.state()[1].state {
            SlotState::Empty => "empty",
            SlotState::Fetching => "fetching",
            SlotState::Ready => "ready",
            SlotState::Active => "active",
        }
        .into();
    }

    fn current_image(&self) -> Option<PathBuf> {
        self.slots
            .try_lock()
            .ok()
            .and_then(|s| s.image_path(SlotName::Current))
    }

    /// One tick: the VM's state and health, the decisions, carried out.
    pub fn tick(&mut self, t: &Tick) {
        if let Some(st) = &self.stopping {
            let off = !matches!(self.hv.status(), Ok(VmStatus::Running));
            if !off && tokio::time::Instant::now() < st.until {
                return;
            }
            if let Some(st) = self.stopping.take() {
                self.finish_reset(t.now, &st.why);
                self.carry_out(t, st.rest);
            }
            return;
        }
        let vm = self.hv.status().unwrap_or(VmStatus::Failed { code: None });
        if vm == VmStatus::Running {
            self.hv.sync_usb();
        }
        let boot = self.boot_health();
        let held = self.held.clone();
        let actions = self.ws.step(&Inputs {
            now: t.now,
            local: t.local,
            sessions: t.sessions,
            vm,
            boot,
            held: &held,
        });
        self.carry_out(t, actions);
    }

    /// The health check of the VM's boot while it runs for a session or a trial boot.
    fn boot_health(&mut self) -> Option<Health> {
        if self.ws.session().is_none() && !self.ws.is_trial_booting() {
            return None;
        }
        let health = match self.hv.boot_health() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the guest's boot");
                return None;
            }
        };
        let text = match &health {
            None => "no health check".to_owned(),
            Some(Health::Waiting { missing }) => {
                format!("booting (no {} yet)", missing.join(", no "))
            }
            Some(Health::Healthy) => {
                self.healthy = true;
                if self.news.boot_secs.is_none() {
                    self.news.boot_secs = self.started.map(|s| s.elapsed().as_secs_f64());
                }
                match self.news.boot_secs {
                    Some(s) => format!("healthy ({s:.1} s after the start)"),
                    None => "healthy".into(),
                }
            }
            Some(Health::Failed(f)) => format!("did not come up: {f}"),
        };
        if text != self.news.boot {
            tracing::info!(boot = %text, "guest");
            self.news.boot = text;
        }
        health
    }

    fn carry_out(&mut self, t: &Tick, actions: Vec<Action>) {
        let mut actions = actions.into_iter();
        while let Some(action) = actions.next() {
            match action {
                Action::Reset(why) => {
                    if let Some(grace) = self.press_power_button() {
                        self.stopping = Some(Stopping {
                            until: tokio::time::Instant::now() + grace,
                            why: why.to_owned(),
                            rest: actions.collect(),
                        });
                        return;
                    }
                    self.finish_reset(t.now, why);
                }
                Action::VmFailed(code) => self.error(format!("the VM failed (exit {code:?})")),
                Action::Proven(m) => {
                    tracing::info!(master = %label(&m), "the new master came up on this NUC: it is good");
                }
                Action::MarkBad { master, why } => self.mark_bad(t.now, master, why),
                Action::Rollback => self.rollback(t.now),
                Action::Swap(to) => self.swap(t.now, &to),
                Action::Boot => {
                    if self.start_vm(t).is_ok() {
                        self.ws.booting();
                        tracing::info!("booting the new master once, to see that it comes up");
                    }
                }
                Action::Start(s) => self.start_session(t, s),
            }
        }
        if self.ws.trial() != self.verdicts.trial.as_ref() {
            self.verdicts.trial = self.ws.trial().cloned();
            self.save_verdicts();
        }
    }

    /// The ACPI power button for a reset: how long to give the guest, if it was pressed.
    fn press_power_button(&mut self) -> Option<std::time::Duration> {
        if !std::mem::take(&mut self.healthy) {
            return None;
        }
        match self.hv.power_button() {
            Ok(grace) => grace,
            Err(e) => {
                tracing::warn!(error = %e, "cannot press the power button: stopping the VM");
                None
            }
        }
    }

    fn stop_vm(&mut self, why: &str) {
        if let Err(e) = self.hv.stop() {
            self.error(format!("cannot stop the VM ({why}): {e}"));
        }
    }

    /// The agent stops: the VM too (this may wait for the guest's power-off).
    pub fn shut_down(&mut self, why: &str) {
        self.stopping = None;
        if self.healthy {
            self.stop_vm(why);
        } else if let Err(e) = self.hv.stop_now() {
            self.error(format!("cannot stop the VM ({why}): {e}"));
        }
        self.ws.stopped();
    }

    /// The reset: VM stopped (at once: the guest was asked before, or did not come up), overlay
    /// thrown away and made again over `current`.
    fn finish_reset(&mut self, now: i64, why: &str) {
        if let Err(e) = self.hv.stop_now() {
            self.error(format!("cannot stop the VM ({why}): {e}"));
        }
        self.refresh_slots();
        if let Some(image) = self.current_image() {
            match self.hv.prepare(&image) {
                Ok(()) => {
                    self.news.resets += 1;
                    self.news.last_reset = Some(now);
                    tracing::info!(%why, "workstation reset: the next session starts from the pristine master");
                }
                Err(e) => self.error(format!("reset failed ({why}): {e}")),
            }
        }
    }

    fn mark_bad(&mut self, now: i64, master: MasterRef, why: String) {
        let manifest = self
            .slots
            .try_lock()
            .ok()
            .and_then(|s| s.manifest_path(SlotName::Current))
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| manifest_hash(&b))
            .unwrap_or_default();
        self.error(format!(
            "{} did not come up on this NUC: {why}; it is not tried again here until it is republished",
            label(&master)
        ));
        self.verdicts.mark_bad(BadMaster {
            master,
            manifest,
            why,
            when: now,
        });
        self.verdicts.trial = None;
        self.save_verdicts();
    }

    /// Swaps `next` (`to`, ready) in between sessions, and resets onto it.
    fn swap(&mut self, now: i64, to: &MasterRef) {
        self.stop_vm("a new master comes in");
        let swapped = match self.slots.try_lock() {
            Ok(mut slots) => slots.swap(now.max(0) as u64),
            Err(_) => return, // the preparation holds the slots: next tick
        };
        match swapped {
            Ok(()) => {
                self.news.swaps += 1;
                self.news.last_swap = Some(now);
                self.ws.swapped(now, to.clone());
                tracing::info!(master = %label(to), "swapped in between sessions: on trial until its guest comes up");
                self.finish_reset(now, "a new master");
            }
            Err(e) => self.error(format!("swap failed: {e}")),
        }
    }

    /// Back to the previous master.
    fn rollback(&mut self, now: i64) {
        if let Ok(mut slots) = self.slots.try_lock() {
            match slots.rollback(now.max(0) as u64) {
                Ok(()) => {
                    self.news.rollbacks += 1;
                    tracing::error!("rolled back to the previous master");
                }
                Err(e) => tracing::error!(error = %e, "cannot roll back"),
            }
        }
        self.refresh_slots();
    }

    /// Starts the VM on `current`, built for this seat and master.
    fn start_vm(&mut self, t: &Tick) -> Result<(), ()> {
        let Some(image) = self.current_image() else {
            self.error("the VM is to start but no master is here yet".into());
            return Err(());
        };
        if let Some(machines) = &self.machines {
            match machines.machine(t.seat, self.held.current.as_ref()) {
                Ok((m, source)) => {
                    if let Err(e) = self.hv.set_machine(&m) {
                        self.error(format!("cannot set the VM up: {e}"));
                        return Err(());
                    }
                    let master = self.news.current.clone().unwrap_or_default();
                    let said = format!("{master}: {source}: {}", m.profile);
                    if self.news.profile.as_ref() != Some(&said) {
                        tracing::info!(%master, from = %source, profile = %m.profile, "the VM's machine profile");
                    }
                    self.news.profile = Some(said);
                    self.news.vm_profile =
                        self.held
                            .current
                            .clone()
                            .map(|master| image_tools::report::VmProfile {
                                master,
                                from: source,
                                profile: m.profile.clone(),
                            });
                }
                Err(e) => {
                    self.error(format!("no machine for this seat: {e}"));
                    return Err(());
                }
            }
        }
        match self.hv.start(&image) {
            Ok(()) => {
                self.started = Some(tokio::time::Instant::now());
                self.healthy = false;
                self.news.boot_secs = None;
                let accel = self.hv.accel();
                if accel != self.news.accel {
                    if let Some(a) = accel.as_ref().filter(|a| a.contains("fell back")) {
                        tracing::warn!(accel = %a, "the guest runs under TCG, slowly");
                    }
                    self.news.accel = accel;
                }
                Ok(())
            }
            Err(e) => {
                self.error(format!("cannot start the VM: {e}"));
                self.ws.stopped();
                Err(())
            }
        }
    }

    fn start_session(&mut self, t: &Tick, s: SessionEntry) {
        if self.held.current.as_ref() != Some(&s.master) {
            let why = match self.verdicts.bad(&s.master) {
                Some(b) => format!("it did not come up on this NUC ({})", b.why),
                None => "it is not ready".into(),
            };
            tracing::warn!(
                "session needs {} but {why}: running {}",
                label(&s.master),
                self.news.current.clone().unwrap_or_default()
            );
        }
        if self.start_vm(t).is_ok() {
            tracing::info!(master = %label(&s.master), "session started");
            self.ws.started(s);
        }
    }
}
