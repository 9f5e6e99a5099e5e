//! The master imports under way through the admin API, and how far each has read its image:
//! what `GET /v1/masters/imports` answers, so the CLI can draw a progress line while its
//! `POST /v1/masters` waits. An import is listed from its start until it ends, well or not.
//! The imports the web console started are kept, as they ended, for its masters page
//! (the last `KEPT_ENDED`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use image_tools::api::ImportProgress;
use image_tools::{MasterName, MasterVersion};

/// The imports under way, and how the console's last ones ended.
#[derive(Debug, Default)]
pub struct Running {
    entries: Mutex<Vec<Arc<Entry>>>,
    console: Mutex<std::collections::VecDeque<FromConsole>>,
}

/// How many of the console's imports are kept.
pub const KEPT_ENDED: usize = 8;

/// An import started from the web console: under way (`outcome` `None`) or as it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromConsole {
    pub name: MasterName,
    pub version: MasterVersion,
    /// The console user who started it.
    pub by: String,
    /// Controller clock seconds at its start.
    pub started: i64,
    /// The import's answer, or its error's words.
    pub outcome: Option<Result<image_tools::api::Imported, String>>,
}

#[derive(Debug)]
pub struct Entry {
    name: MasterName,
    version: MasterVersion,
    image: PathBuf,
    /// Controller clock seconds at its start.
    started: f64,
    size: AtomicU64,
    read: AtomicU64,
}

/// An import's place in [`Running`]; dropping it takes the import off the list.
#[derive(Debug)]
pub struct Listed<'a> {
    running: &'a Running,
    entry: Arc<Entry>,
}

impl Running {
    pub fn start(
        &self,
        name: MasterName,
        version: MasterVersion,
        image: PathBuf,
        started: f64,
    ) -> Listed<'_> {
        let entry = Arc::new(Entry {
            name,
            version,
            image,
            started,
            size: AtomicU64::new(0),
            read: AtomicU64::new(0),
        });
        self.entries().push(entry.clone());
        Listed {
            running: self,
            entry,
        }
    }

    /// Every import under way at `now` (controller clock seconds).
    pub fn list(&self, now: f64) -> Vec<ImportProgress> {
        self.entries()
            .iter()
            .map(|e| ImportProgress {
                name: e.name.clone(),
                version: e.version.clone(),
                image: e.image.clone(),
                size: e.size.load(Ordering::Relaxed),
                read: e.read.load(Ordering::Relaxed),
                elapsed_secs: (now - e.started).max(0.0),
            })
            .collect()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an import the console started, forgetting the oldest beyond `KEPT_ENDED`.
    pub fn console_started(&self, import: FromConsole) {
        let mut list = self.console.lock().unwrap_or_else(PoisonError::into_inner);
        list.push_front(import);
        list.truncate(KEPT_ENDED);
    }

    /// Records how the console's import of `name` `version` begun at `started` ended.
    pub fn console_ended(
        &self,
        name: &MasterName,
        version: &MasterVersion,
        started: i64,
        outcome: Result<image_tools::api::Imported, String>,
    ) {
        let mut list = self.console.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = list
            .iter_mut()
            .find(|i| i.name == *name && i.version == *version && i.started == started)
        {
            i.outcome = Some(outcome);
        }
    }

    /// The console's imports kept, the last first.
    pub fn from_console(&self) -> Vec<FromConsole> {
        let list = self.console.lock().unwrap_or_else(PoisonError::into_inner);
        list.iter().cloned().collect()
    }
}

impl Listed<'_> {
    /// The importer's progress callback: `read` bytes of `size` (0: unknown, kept as it was).
    pub fn update(&self, read: u64, size: u64) {
        if size > 0 {
            self.entry.size.store(size, Ordering::Relaxed);
        }
        self.entry.read.fetch_max(read, Ordering::Relaxed);
    }
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.running
            .entries()
            .retain(|e| !Arc::ptr_eq(e, &self.entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_is_listed_with_its_progress_until_it_ends() {
        let running = Running::default();
        let a = running.start(
            "win10".parse().unwrap(),
            "2".parse().unwrap(),
            "/srv/w.img".into(),
            100.0,
        );
        let b = running.start(
            "win10".parse().unwrap(),
            "3".parse().unwrap(),
            "/srv/w3.img".into(),
            101.0,
        );
        a.update(10, 40);
        a.update(30, 40);
        a.update(20, 40);
        let listed = running.list(104.0);
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (listed[0].read, listed[0].size, listed[0].elapsed_secs),
            (30, 40, 4.0),
            "a late callback never moves it back"
        );
        drop(a);
        let listed = running.list(105.0);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].version.as_str(), "3");
        drop(b);
        assert!(running.list(106.0).is_empty());
    }

    #[test]
    fn the_consoles_last_imports_are_kept_the_last_first_with_their_outcome() {
        let running = Running::default();
        for i in 0..KEPT_ENDED + 2 {
            running.console_started(FromConsole {
                name: "win10".parse().unwrap(),
                version: i.to_string().parse().unwrap(),
                by: "dsi".into(),
                started: i as i64,
                outcome: None,
            });
        }
        let v = |i: usize| -> MasterVersion { i.to_string().parse().unwrap() };
        let name: MasterName = "win10".parse().unwrap();
        running.console_ended(&name, &v(5), 5, Err("not a disk image".into()));
        // Another start of the same version is not this one.
        running.console_ended(&name, &v(6), 99, Err("no".into()));
        let kept = running.from_console();
        assert_eq!(kept.len(), KEPT_ENDED);
        assert_eq!(kept[0].started, KEPT_ENDED as i64 + 1);
        assert_eq!(kept[KEPT_ENDED - 1].started, 2);
        let five = kept.iter().find(|i| i.started == 5).unwrap();
        assert_eq!(five.outcome, Some(Err("not a disk image".into())));
        assert!(kept
            .iter()
            .filter(|i| i.started != 5)
            .all(|i| i.outcome.is_none()));
    }
}
