//! A calendar file the DSI imports (ics), into an in-memory catalogue with a site `lyon` and a
//! room `salle-1` (no master: a row that parses is refused at its master, with its line).
#![no_main]
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use nightcast_controller::db::{Db, DbError};

fn db() -> &'static Mutex<Db> {
    static DB: OnceLock<Mutex<Db>> = OnceLock::new();
    DB.get_or_init(|| {
        let db = Db::open(Path::new(":memory:")).expect("an in-memory catalogue");
        db.add_site("lyon", "Europe/Paris", "22:00-06:00", 20, None)
            .expect("a site");
        db.add_room("lyon", "salle-1").expect("a room");
        Mutex::new(db)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut db = db().lock().unwrap_or_else(|e| e.into_inner());
    match db.import_ics("term.ics", &text) {
        Ok(_) => {}
        Err(DbError::Calendar { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1))
        }
        Err(e) => panic!("not a calendar error: {e}"),
    }
});
