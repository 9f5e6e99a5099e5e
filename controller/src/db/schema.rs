//! The schema, as the migrations that build it: each moves `PRAGMA user_version` up by one, in
//! an exclusive transaction. A database newer than this controller is refused, never downgraded.

use rusqlite::{Connection, TransactionBehavior};

use super::DbError;

/// Each entry moves the schema from version i to i+1.
const MIGRATIONS: &[&str] = &[
    // 1: the catalogue and the calendar.
    "CREATE TABLE sites (
        name TEXT PRIMARY KEY,
        tz TEXT NOT NULL,
        windows TEXT NOT NULL,
        cap_mbit INTEGER NOT NULL CHECK (cap_mbit > 0)
     );
     CREATE TABLE rooms (
        site TEXT NOT NULL REFERENCES sites(name) ON DELETE RESTRICT,
        name TEXT NOT NULL,
        PRIMARY KEY (site, name)
     );
     CREATE TABLE seats (
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (site, room, name),
        FOREIGN KEY (site, room) REFERENCES rooms(site, name) ON DELETE RESTRICT
     );
     CREATE TABLE masters (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        size INTEGER NOT NULL,
        stored_bytes INTEGER NOT NULL,
        manifest BLOB NOT NULL,
        imported_at INTEGER NOT NULL,
        PRIMARY KEY (name, version)
     );
     CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL,
        room TEXT NOT NULL,
        master TEXT NOT NULL,
        version TEXT NOT NULL,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL CHECK (end > start),
        FOREIGN KEY (site, room) REFERENCES rooms(site, name) ON DELETE RESTRICT,
        FOREIGN KEY (master, version) REFERENCES masters(name, version) ON DELETE RESTRICT
     );
     CREATE INDEX sessions_by_site ON sessions(site, start);",
    // 2: enrolled nodes, their last report, and what each relay holds.
    "CREATE TABLE nodes (
        site TEXT NOT NULL,
        node TEXT NOT NULL,
        role TEXT NOT NULL,
        enrolled_at INTEGER NOT NULL,
        last_seen INTEGER,
        PRIMARY KEY (site, node)
     );
     CREATE TABLE holdings (
        site TEXT NOT NULL,
        node TEXT NOT NULL,
        master TEXT NOT NULL,
        version TEXT NOT NULL,
        PRIMARY KEY (site, node, master, version),
        FOREIGN KEY (site, node) REFERENCES nodes(site, node) ON DELETE CASCADE
     );",
    // 3: daytime pushes, with who asked and why.
    "CREATE TABLE overrides (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL REFERENCES sites(name) ON DELETE CASCADE,
        master TEXT NOT NULL,
        version TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (length(reason) > 0),
        requested_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        until INTEGER NOT NULL,
        FOREIGN KEY (master, version) REFERENCES masters(name, version) ON DELETE CASCADE
     );",
    // 4: the fields of each node's last report (state, disk, errors...), as a JSON object.
    "ALTER TABLE nodes ADD COLUMN status TEXT NOT NULL DEFAULT '{}';",
    // 5: which agent sits at which seat (NULL: a spare; a seat holds at most one node and must
    // exist), and each site's takeover policy.
    "ALTER TABLE nodes ADD COLUMN room TEXT;
     ALTER TABLE nodes ADD COLUMN seat TEXT CHECK ((seat IS NULL) = (room IS NULL));
     CREATE UNIQUE INDEX nodes_one_per_seat ON nodes(site, room, seat) WHERE seat IS NOT NULL;
     CREATE TRIGGER nodes_seat_exists_on_insert BEFORE INSERT ON nodes
        WHEN NEW.seat IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM seats WHERE site = NEW.site AND room = NEW.room AND name = NEW.seat)
        BEGIN SELECT RAISE(ABORT, 'no such seat'); END;
     CREATE TRIGGER nodes_seat_exists_on_update BEFORE UPDATE OF room, seat ON nodes
        WHEN NEW.seat IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM seats WHERE site = NEW.site AND room = NEW.room AND name = NEW.seat)
        BEGIN SELECT RAISE(ABORT, 'no such seat'); END;
     ALTER TABLE sites ADD COLUMN takeover TEXT NOT NULL DEFAULT 'auto'
        CHECK (takeover IN ('auto', 'confirm'));",
    // 6: trust: enrolment tokens (hashes only), NUCs waiting for the DSI, every certificate
    // issued (for revocation), sites opened for new NUCs, revoked nodes. See `db::trust`.
    "CREATE TABLE tokens (
        secret_hash TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        site TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
     );
     CREATE TABLE enrolment_requests (
        node TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        role TEXT NOT NULL,
        public_key BLOB NOT NULL,
        mac TEXT NOT NULL,
        via TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        approved_at INTEGER
     );
     CREATE TABLE certificates (
        serial TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        node TEXT NOT NULL,
        role TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        issued_at INTEGER NOT NULL,
        revoked_at INTEGER
     );
     CREATE INDEX certificates_by_node ON certificates(node);
     ALTER TABLE sites ADD COLUMN accept_new_until INTEGER;
     ALTER TABLE nodes ADD COLUMN revoked_at INTEGER;",
    // 7: a master's manifest revision, raised when it is signed again (a key rotation), so the
    // server reads again only the manifests that changed.
    "ALTER TABLE masters ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;",
    // 8: which calendar a session comes from and which of its events it is (`UID`, and the
    // occurrence's start as its rule gave it, NULL for a single event), so that importing a new
    // export of that calendar compares instead of adding (see `calendar::sync`). Sessions added
    // by hand or from CSV have no source.
    "ALTER TABLE sessions ADD COLUMN source TEXT;
     ALTER TABLE sessions ADD COLUMN uid TEXT CHECK ((uid IS NULL) = (source IS NULL));
     ALTER TABLE sessions ADD COLUMN instance INTEGER CHECK (instance IS NULL OR uid IS NOT NULL);
     CREATE UNIQUE INDEX sessions_by_event ON sessions(source, uid, ifnull(instance, 'single'))
        WHERE source IS NOT NULL;",
    // 9: the DSI's mapping rules (see `calendar::mapping`): a title pattern or a category to a
    // master version, a location pattern to a room. `key` is the pattern or category as rules
    // compare it (`mapping::normalize`): one rule per kind and key. No foreign keys: a rule
    // never blocks removing a master or a room; one that names what is gone reads nothing.
    "CREATE TABLE calendar_rules (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('title', 'category', 'location')),
        pattern TEXT NOT NULL,
        key TEXT NOT NULL,
        master TEXT,
        version TEXT,
        site TEXT,
        room TEXT,
        CHECK ((kind = 'location') = (site IS NOT NULL AND room IS NOT NULL)),
        CHECK ((kind = 'location') = (master IS NULL AND version IS NULL)),
        UNIQUE (kind, key)
     );",
    // 10: calendar feeds the controller polls (`feeds`), each the calendar `source` of the
    // sessions it gives, and how its last poll went.
    "CREATE TABLE calendar_feeds (
        source TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        partial INTEGER NOT NULL DEFAULT 0,
        horizon_days INTEGER NOT NULL,
        added_at INTEGER NOT NULL,
        last_poll INTEGER,
        last_ok INTEGER,
        last_result TEXT,
        last_error TEXT
     );",
    // 11: where a session not from an iCalendar calendar came from: 'hand' (`session add`) or
    // 'csv:FILE'; NULL for a calendar's (its `source` says) and for sessions added before.
    "ALTER TABLE sessions ADD COLUMN origin TEXT;",
    // 12: emergency pushes: an override's deadline (NULL: a plain override), and each site's WAN
    // cap for them in the daytime (0: the night cap).
    "ALTER TABLE overrides ADD COLUMN deadline INTEGER;
     ALTER TABLE sites ADD COLUMN emergency_cap_mbit INTEGER NOT NULL DEFAULT 0
        CHECK (emergency_cap_mbit >= 0);",
    // 13: the web console's users: a role, the sites an operator or a read-only user sees (empty:
    // every site), and an argon2id hash in PHC form (never the password).
    "CREATE TABLE console_users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'readonly')),
        sites TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );",
    // 14: alerts: the conditions each channel (`webhook`, `email`) was last told are open, and
    // its last daily digest, so that a restart resends nothing.
    "CREATE TABLE alerts_sent (
        channel TEXT NOT NULL,
        key TEXT NOT NULL,
        condition TEXT NOT NULL,
        since INTEGER NOT NULL,
        PRIMARY KEY (channel, key)
     );
     CREATE TABLE alert_digests (
        channel TEXT PRIMARY KEY,
        last_at INTEGER NOT NULL
     );",
    // 15: what the DSI asked of a NUC (reset, rollback, wake), by whom and when; ids only grow
    // (an agent carries out those above the last it reported).
    "CREATE TABLE node_orders (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        site TEXT NOT NULL,
        node TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('reset', 'rollback', 'wake')),
        asked_by TEXT NOT NULL,
        asked_at INTEGER NOT NULL
     );
     CREATE INDEX node_orders_by_time ON node_orders(asked_at);",
    // 16: the machine profile the DSI assigns to a master (every version of it): JSON of
    // `image_tools::profile::Profile`, NULL once cleared (the NUCs' own then); `revision` only
    // grows, so that an agent tells a newer signed statement from an older one.
    "CREATE TABLE master_profiles (
        name TEXT PRIMARY KEY,
        profile TEXT,
        revision INTEGER NOT NULL,
        set_at INTEGER NOT NULL
     );",
    // 17: each site's USB policy: which devices plugged into its NUCs their guests get.
    "ALTER TABLE sites ADD COLUMN usb TEXT NOT NULL DEFAULT 'none'
        CHECK (usb IN ('none', 'storage', 'all'));",
    // 18: the site's peer sharing settings for its NUCs (NULL: each NUC's own configuration).
    "ALTER TABLE sites ADD COLUMN peer_upload_mbit INTEGER CHECK (peer_upload_mbit >= 0);
     ALTER TABLE sites ADD COLUMN peer_share_in_session INTEGER
        CHECK (peer_share_in_session IN (0, 1));",
    // 19: what each site's WAN link is like: a far one (satellite, 4G) fetches through the
    // controller's `far_listen` port.
    "ALTER TABLE sites ADD COLUMN link TEXT NOT NULL DEFAULT 'wired'
        CHECK (link IN ('wired', 'far'));",
];

/// Brings the database up to the last migration.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Brings the database up to migration `last` (tests build the databases of older versions).
pub(super) fn migrate_to(conn: &mut Connection, last: usize) -> Result<(), DbError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(last)
        .skip(version as usize)
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
