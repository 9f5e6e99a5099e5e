use super::*;
use image_tools::import::{import_reader, ImportOptions};
use image_tools::{testimage, ChunkParams, LocalStore, SigningKey};
use image_tools::{MasterName, MasterVersion};

/// A store holding three versions of a small master, with their images.
struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalStore,
    key: SigningKey,
    versions: Vec<(VerifiedManifest, Vec<u8>)>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("store")).unwrap();
    let key = SigningKey::from_seed([7; 32]);
    let mut image = testimage::image_bytes(2 << 20, 1);
    let mut versions = Vec::new();
    for v in 1..=3 {
        let opts = ImportOptions {
            name: MasterName::new("win10").unwrap(),
            version: MasterVersion::new(&format!("v{v}")).unwrap(),
            params: ChunkParams::DEFAULT,
            threads: 1,
        };
        let report = import_reader(
            &image[..],
            image.len() as u64,
            &store,
            &key,
            &opts,
            &|_, _| {},
        )
        .unwrap();
        versions.push((report.manifest, image.clone()));
        image = testimage::evolve(&image, 0.2, v);
    }
    Fixture {
        _dir: dir,
        store,
        key,
        versions,
    }
}

impl Fixture {
    fn manifest(&self, v: usize) -> &VerifiedManifest {
        &self.versions[v - 1].0
    }
    fn image(&self, v: usize) -> &[u8] {
        &self.versions[v - 1].1
    }
    /// begin_next + assemble + mark_ready.
    fn fetch(&self, slots: &mut Slots, v: usize, now: u64) {
        slots.begin_next(self.manifest(v), now).unwrap();
        let (proof, _) = slots
            .assemble_next(self.manifest(v), &self.store, 1, &|_, _| {})
            .unwrap();
        slots.mark_ready(proof, now).unwrap();
    }
    fn install(&self, slots: &mut Slots, v: usize, now: u64) {
        self.fetch(slots, v, now);
        slots.swap(now).unwrap();
    }
    /// Which fixture version `slot` holds, checking its image byte for byte.
    fn holds(&self, slots: &Slots, slot: SlotName) -> Option<usize> {
        let held = slots.table().get(slot)?;
        let v: usize = held.version.as_str()[1..].parse().unwrap();
        let image = fs::read(slots.image_path(slot).unwrap()).unwrap();
        assert!(image == self.image(v), "{slot} image differs from v{v}");
        let manifest = slots.load_manifest(slot, &[self.key.public()]).unwrap();
        assert_eq!(manifest.bytes(), self.manifest(v).bytes());
        Some(v)
    }
}

fn held(seq: u64, v: u32) -> Held {
    Held {
        seq,
        name: MasterName::new("m").unwrap(),
        version: MasterVersion::new(&format!("v{v}")).unwrap(),
    }
}

fn version_dirs(slots: &Slots) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(slots.versions_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn referenced_dirs(slots: &Slots) -> Vec<String> {
    let mut names: Vec<String> = slots.table().referenced().map(Held::dir_name).collect();
    names.sort();
    names
}

fn log_lines(slots: &Slots) -> Vec<String> {
    fs::read_to_string(slots.events_path())
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn table_transitions_and_refusals() {
    let t = Table::default();
    assert_eq!(t.swap(), Err(TransitionError::NoNext));
    assert_eq!(t.rollback(), Err(TransitionError::NoPrevious));
    assert_eq!(t.mark_ready(1), Err(TransitionError::NoNext));
    let t = t.begin_next(held(0, 1).name, held(0, 1).version).unwrap();
    assert_eq!(t.next, Some(held(1, 1)));
    assert_eq!(t.info()[1].state, SlotState::Fetching);
    assert!(matches!(
        t.begin_next(held(0, 2).name, held(0, 2).version),
        Err(TransitionError::NextOccupied { .. })
    ));
    assert!(matches!(
        t.swap(),
        Err(TransitionError::NextNotReady { .. })
    ));
    assert!(matches!(
        t.mark_ready(7),
        Err(TransitionError::WrongNext { proof_seq: 7, .. })
    ));
    let t = t.mark_ready(1).unwrap();
    assert!(matches!(
        t.mark_ready(1),
        Err(TransitionError::AlreadyReady { .. })
    ));
    assert_eq!(t.info()[1].state, SlotState::Ready);
    let (t, dropped) = t.swap().unwrap();
    assert_eq!(dropped, None);
    assert_eq!(t.current, Some(held(1, 1)));
    assert_eq!(t.info()[0].state, SlotState::Active);
    assert_eq!(t.info()[1].state, SlotState::Empty);
    assert_eq!(t.gen, 3);

    let t = t.begin_next(held(0, 2).name, held(0, 2).version).unwrap();
    let (t, _) = t.swap_ready_for_test();
    let t = t.begin_next(held(0, 3).name, held(0, 3).version).unwrap();
    let (t, dropped) = t.swap_ready_for_test();
    assert_eq!(dropped, Some(held(1, 1)));
    assert_eq!(t.current, Some(held(7, 3)));
    assert_eq!(t.previous, Some(held(4, 2)));
    let r = t.rollback().unwrap();
    assert_eq!(r.current, Some(held(4, 2)));
    assert_eq!(r.previous, Some(held(7, 3)));
    let r = r.begin_next(held(0, 9).name, held(0, 9).version).unwrap();
    let (r, abandoned) = r.abandon_next().unwrap();
    assert_eq!(abandoned, held(11, 9));
    assert_eq!(r.next, None);
}

impl Table {
    fn swap_ready_for_test(&self) -> (Table, Option<Held>) {
        let seq = self.next.as_ref().unwrap().seq;
        self.mark_ready(seq).unwrap().swap().unwrap()
    }
}

#[test]
fn state_file_round_trips_and_refuses_junk() {
    let mut t = Table {
        gen: 9,
        current: Some(held(5, 2)),
        previous: Some(held(3, 1)),
        next: Some(held(9, 3)),
        next_ready: true,
    };
    assert_eq!(Table::decode(&t.encode()), Ok(t.clone()));
    t.next_ready = false;
    assert_eq!(Table::decode(&t.encode()), Ok(t.clone()));
    assert_eq!(
        Table::decode(&Table::default().encode()),
        Ok(Table::default())
    );
    let good = t.encode();
    for bad in [
        String::new(),
        "nightcast-slots 2\ngen 1\n".into(),
        "nightcast-slots 1\n".into(),
        good.replace("gen 9", "gen 8"),
        good.replace("gen 9", "gen x"),
        good.replace("current 5", "current 3"),
        good.replace(" fetching", " done"),
        good.replace(" fetching", ""),
        good.replace("m v2", "../m v2"),
        good.replace("current 5 m v2\n", ""),
        format!("{good}current 5 m v2\n"),
        format!("{good}gen 9\n"),
        format!("{good}bogus\n"),
    ] {
        assert!(Table::decode(&bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn lifecycle_swap_keeps_previous_and_rollback_restores_it() {
    let f = fixture();
    let data = tempfile::tempdir().unwrap();
    let (mut slots, recovery) = Slots::open(data.path(), 100).unwrap();
    assert_eq!(recovery, Recovery::default());
    assert!(slots.state().iter().all(|s| s.state == SlotState::Empty));

    f.install(&mut slots, 1, 101);
    assert_eq!(f.holds(&slots, SlotName::Current), Some(1));
    assert_eq!(slots.state()[2].state, SlotState::Empty);
    assert!(matches!(
        slots.load_manifest(SlotName::Previous, &[f.key.public()]),
        Err(SlotError::Transition(TransitionError::Empty {
            slot: SlotName::Previous
        }))
    ));

    f.fetch(&mut slots, 2, 102);
    assert_eq!(slots.state()[1].state, SlotState::Ready);
    assert_eq!(f.holds(&slots, SlotName::Next), Some(2));
    slots.swap(103).unwrap();
    assert_eq!(f.holds(&slots, SlotName::Current), Some(2));
    assert_eq!(f.holds(&slots, SlotName::Previous), Some(1));
    let states: Vec<SlotState> = slots.state().iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [SlotState::Active, SlotState::Empty, SlotState::Ready]
    );

    f.install(&mut slots, 3, 104);
    assert_eq!(f.holds(&slots, SlotName::Current), Some(3));
    assert_eq!(f.holds(&slots, SlotName::Previous), Some(2));
    assert_eq!(version_dirs(&slots), referenced_dirs(&slots), "v1 removed");

    slots.rollback(105).unwrap();
    assert_eq!(f.holds(&slots, SlotName::Current), Some(2));
    assert_eq!(f.holds(&slots, SlotName::Previous), Some(3));

    // What is on disk is what a restart sees.
    let table = slots.table().clone();
    drop(slots);
    let (slots, recovery) = Slots::open(data.path(), 106).unwrap();
    assert_eq!(recovery, Recovery::default());
    assert_eq!(slots.table(), &table);

    let log = log_lines(&slots);
    let kinds: Vec<&str> = log.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "begin_next",
            "ready",
            "swap",
            "begin_next",
            "ready",
            "swap",
            "begin_next",
            "ready",
            "swap",
            "rollback"
        ]
    );
    assert!(
        log[0].starts_with("101 gen=1 begin_next next=1-win10@v1"),
        "{}",
        log[0]
    );
    assert!(
        log[8].ends_with("swap current=7-win10@v3 previous=4-win10@v2 removed=1-win10@v1"),
        "{}",
        log[8]
    );
    assert!(log[9].starts_with("105 gen=10 rollback"), "{}", log[9]);
}

#[test]
fn swap_is_refused_until_next_is_ready_and_verified() {
    let f = fixture();
    let data = tempfile::tempdir().unwrap();
    let (mut slots, _) = Slots::open(data.path(), 1).unwrap();
    f.install(&mut slots, 1, 1);
    let before = slots.table().clone();
    let err = slots.swap(2).unwrap_err();
    assert!(
        matches!(err, SlotError::Transition(TransitionError::NoNext)),
        "{err}"
    );

    let path = slots.begin_next(f.manifest(2), 3).unwrap();
    assert!(matches!(
        slots.swap(4),
        Err(SlotError::Transition(TransitionError::NextNotReady { .. }))
    ));
    // The same manifest again resumes; another one is refused while next is taken.
    assert_eq!(slots.begin_next(f.manifest(2), 5).unwrap(), path);
    assert!(matches!(
        slots.begin_next(f.manifest(3), 5),
        Err(SlotError::Transition(TransitionError::NextOccupied { .. }))
    ));
    // An image that is not the manifest's cannot be marked ready.
    let mut wrong = f.image(2).to_vec();
    wrong[1 << 20] ^= 1;
    fs::write(&path, &wrong).unwrap();
    assert!(matches!(
        slots.verify_next(f.manifest(2)),
        Err(SlotError::ImageMismatch { .. })
    ));
    assert!(matches!(
        slots.verify_next(f.manifest(3)),
        Err(SlotError::ManifestMismatch { .. })
    ));
    fs::write(&path, f.image(2)).unwrap();
    let proof = slots.verify_next(f.manifest(2)).unwrap();
    assert_eq!(slots.state()[1].state, SlotState::Fetching);
    slots.mark_ready(proof, 6).unwrap();
    slots.swap(7).unwrap();
    assert_eq!(f.holds(&slots, SlotName::Current), Some(2));
    assert_eq!(slots.table().previous, before.current);

    // Abandoning a next removes its directory.
    slots.begin_next(f.manifest(3), 8).unwrap();
    let dir = slots.dir(SlotName::Next).unwrap();
    slots.abandon_next(9).unwrap();
    assert!(!dir.exists());
    assert_eq!(slots.state()[1].state, SlotState::Empty);
}

/// The states a transition is tried from, and the transition.
#[derive(Clone, Copy, Debug)]
enum Case {
    BeginNext,
    MarkReady,
    Swap,
    SwapDroppingPrevious,
    Rollback,
    AbandonNext,
}

fn setup(f: &Fixture, data: &Path, case: Case) -> Option<VerifiedImage> {
    let (mut slots, _) = Slots::open(data, 1).unwrap();
    f.install(&mut slots, 1, 1);
    match case {
        Case::BeginNext | Case::Rollback => f.install(&mut slots, 2, 2),
        Case::Swap => f.fetch(&mut slots, 2, 2),
        Case::SwapDroppingPrevious => {
            f.install(&mut slots, 2, 2);
            f.fetch(&mut slots, 3, 3);
        }
        Case::MarkReady | Case::AbandonNext => {
            slots.begin_next(f.manifest(2), 2).unwrap();
            let (proof, _) = slots
                .assemble_next(f.manifest(2), &f.store, 1, &|_, _| {})
                .unwrap();
            return Some(proof);
        }
    }
    None
}

fn run(
    f: &Fixture,
    slots: &mut Slots,
    case: Case,
    proof: Option<VerifiedImage>,
) -> Result<(), SlotError> {
    match case {
        Case::BeginNext => slots.begin_next(f.manifest(3), 10).map(|_| ()),
        Case::MarkReady => slots.mark_ready(proof.unwrap(), 10),
        Case::Swap | Case::SwapDroppingPrevious => slots.swap(10),
        Case::Rollback => slots.rollback(10),
        Case::AbandonNext => slots.abandon_next(10),
    }
}

#[test]
fn a_crash_between_any_two_steps_leaves_the_old_or_the_new_state() {
    let f = fixture();
    for case in [
        Case::BeginNext,
        Case::MarkReady,
        Case::Swap,
        Case::SwapDroppingPrevious,
        Case::Rollback,
        Case::AbandonNext,
    ] {
        // Where the transition ends without a crash: the state to expect after it.
        let after = {
            let data = tempfile::tempdir().unwrap();
            let proof = setup(&f, data.path(), case);
            let (mut slots, _) = Slots::open(data.path(), 5).unwrap();
            run(&f, &mut slots, case, proof).unwrap();
            slots.table().clone()
        };
        let mut crashes = 0;
        for n in 0.. {
            let data = tempfile::tempdir().unwrap();
            let proof = setup(&f, data.path(), case);
            let (mut slots, _) = Slots::open(data.path(), 5).unwrap();
            let before = slots.table().clone();
            let before_current = f.holds(&slots, SlotName::Current);
            slots.crash_after = Some(n);
            match run(&f, &mut slots, case, proof) {
                Ok(()) => break,
                Err(SlotError::Crash(step)) => {
                    crashes += 1;
                    drop(slots);
                    let (slots, recovery) = Slots::open(data.path(), 11).unwrap();
                    let t = slots.table();
                    assert!(
                        *t == before || *t == after,
                        "{case:?}, crash before {step}: {t:?}"
                    );
                    assert!(recovery.damaged.is_empty(), "{case:?} {step}: {recovery:?}");
                    // current is intact (and previous, next where they are complete).
                    let current = f.holds(&slots, SlotName::Current);
                    if *t == before {
                        assert_eq!(current, before_current, "{case:?} {step}");
                    }
                    if slots.state()[1].state == SlotState::Ready {
                        f.holds(&slots, SlotName::Next);
                    }
                    f.holds(&slots, SlotName::Previous);
                    assert_eq!(
                        version_dirs(&slots),
                        referenced_dirs(&slots),
                        "{case:?} {step}"
                    );
                    // The log accounts for the table's gen: the transition's own line, or a
                    // recovery line that says the commit was not logged.
                    let log = log_lines(&slots);
                    let last = log.last().unwrap();
                    assert!(
                        last.contains(&format!(" gen={} ", t.gen)),
                        "{case:?} {step}: {last}"
                    );
                    if step == "log" {
                        assert!(
                            last.contains(&format!("unlogged_gen={}", t.gen)),
                            "{case:?} {step}: {last}"
                        );
                    }
                    // Recovery is done once: a second open finds nothing.
                    drop(slots);
                    let (_, again) = Slots::open(data.path(), 12).unwrap();
                    assert_eq!(again, Recovery::default(), "{case:?} {step}");
                }
                Err(e) => panic!("{case:?}: {e}"),
            }
        }
        assert!(crashes >= 2, "{case:?}: only {crashes} crash points");
    }
}

#[test]
fn open_cleans_what_a_kill_9_leaves_and_keeps_current() {
    let f = fixture();
    let data = tempfile::tempdir().unwrap();
    let (mut slots, _) = Slots::open(data.path(), 1).unwrap();
    f.install(&mut slots, 1, 1);
    slots.begin_next(f.manifest(2), 2).unwrap();
    let next_dir = slots.dir(SlotName::Next).unwrap();
    drop(slots);
    let root = data.path().join("slots");
    // A half-written state file, a half-assembled image, an unreferenced version directory
    // (a begin_next that crashed before its commit), a stray file, a torn log line.
    fs::write(root.join(".nc-tmp-0123"), "nightcast-slots 1\ngen 9").unwrap();
    fs::write(next_dir.join(".nc-tmp-4567"), vec![1u8; 4096]).unwrap();
    fs::create_dir(root.join("v/9-win10@v9")).unwrap();
    fs::write(root.join("v/9-win10@v9/master.manifest"), b"x").unwrap();
    fs::write(root.join("v/.nc-tmp-89ab"), b"x").unwrap();
    let mut log = OpenOptions::new()
        .append(true)
        .open(root.join("events.log"))
        .unwrap();
    log.write_all(b"3 gen=3 swap curr").unwrap();
    drop(log);

    let (slots, recovery) = Slots::open(data.path(), 50).unwrap();
    assert_eq!(recovery.removed, [".nc-tmp-89ab", "9-win10@v9"]);
    assert_eq!(recovery.temp_files, 2);
    assert_eq!(recovery.unlogged_gen, None);
    assert_eq!(f.holds(&slots, SlotName::Current), Some(1));
    assert_eq!(slots.state()[1].state, SlotState::Fetching);
    assert_eq!(fs::read_dir(&next_dir).unwrap().count(), 1, "manifest only");
    assert_eq!(version_dirs(&slots), referenced_dirs(&slots));
    let log = log_lines(&slots);
    assert!(log.iter().all(|l| !l.contains("curr ")), "{log:?}");
    assert!(
        log.last()
            .unwrap()
            .starts_with("50 gen=4 recover removed=[.nc-tmp-89ab,9-win10@v9] temp_files=2"),
        "{log:?}"
    );
}

#[test]
fn open_refuses_to_guess() {
    let f = fixture();
    let data = tempfile::tempdir().unwrap();
    let (mut slots, _) = Slots::open(data.path(), 1).unwrap();
    f.install(&mut slots, 1, 1);
    // One agent at a time.
    assert!(matches!(
        Slots::open(data.path(), 1),
        Err(SlotError::Busy { .. })
    ));
    let current = slots.dir(SlotName::Current).unwrap();
    drop(slots);
    let state = data.path().join("slots/state");
    let good = fs::read_to_string(&state).unwrap();

    fs::write(&state, good.replace("gen", "gem")).unwrap();
    let err = Slots::open(data.path(), 2).unwrap_err();
    assert!(matches!(err, SlotError::StateCorrupt { .. }), "{err}");
    assert!(current.join(IMAGE_FILE).exists(), "nothing deleted");

    fs::remove_file(&state).unwrap();
    let err = Slots::open(data.path(), 2).unwrap_err();
    assert!(matches!(err, SlotError::StateMissing { .. }), "{err}");
    assert!(current.join(IMAGE_FILE).exists(), "nothing deleted");

    // Damage from outside is reported, not hidden.
    fs::write(&state, &good).unwrap();
    fs::remove_file(current.join(IMAGE_FILE)).unwrap();
    let (_, recovery) = Slots::open(data.path(), 3).unwrap();
    assert_eq!(
        recovery.damaged,
        [(SlotName::Current, current.join(IMAGE_FILE))]
    );
}
