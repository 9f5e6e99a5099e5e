//! The master imports under way through the admin API, and how far each has read its image:
//! what `GET /v1/masters/imports` answers, so the CLI can draw a progress line while its
//! `POST /v1/masters` waits. An import is listed from its start until it ends, well or not.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use image_tools::api::ImportProgress;
use image_tools::{MasterName, MasterVersion};

/// The imports under way.
#[derive(Debug, Default)]
pub struct Running(Mutex<Vec<Arc<Entry>>>);

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
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
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
}
