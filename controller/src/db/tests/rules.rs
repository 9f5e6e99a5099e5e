//! Mapping rules in the catalogue: one per kind and pattern (any case, any spacing), the same
//! again replaces it; a rule's master or room must exist; ids name them for removal.

use super::*;
use crate::calendar::mapping::Target;

fn master(name: &str, version: &str) -> Target {
    Target::Master {
        name: name.into(),
        version: version.into(),
    }
}

#[test]
fn the_same_pattern_again_replaces_its_rule_and_what_is_missing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = sample(dir.path());
    let (m, b) = manifest("win10", "2");
    db.add_master(&m, &b, 0).unwrap();
    let (first, replaced) = db
        .add_rule("title", "Excel*", &master("win10", "1"))
        .unwrap();
    assert!(replaced.is_none());
    let (again, replaced) = db
        .add_rule("title", "  excel* ", &master("win10", "2"))
        .unwrap();
    assert_eq!(again.id, first.id, "replaced in place: its order kept");
    assert_eq!(replaced.unwrap().target, master("win10", "1"));
    // The same text as a category is another rule.
    db.add_rule("category", "Excel*", &master("win10", "1"))
        .unwrap();
    assert_eq!(db.rules().unwrap().len(), 2);

    let e = db
        .add_rule("title", "Word", &master("word", "1"))
        .unwrap_err();
    assert!(matches!(e, DbError::NoMaster { .. }), "{e}");
    let e = db
        .add_rule(
            "location",
            "Salle 9",
            &Target::Place {
                site: "lyon".into(),
                room: "salle-9".into(),
            },
        )
        .unwrap_err();
    assert!(matches!(e, DbError::NoRoom { .. }), "{e}");
    let e = db
        .add_rule("location", "Salle 1", &master("win10", "1"))
        .unwrap_err();
    assert!(e.to_string().contains("gives a site and room"), "{e}");
    assert!(db.add_rule("title", " * ", &master("win10", "1")).is_ok());
    assert!(db.add_rule("title", "   ", &master("win10", "1")).is_err());

    db.remove_rule(first.id).unwrap();
    assert!(matches!(db.remove_rule(first.id), Err(DbError::NoRule(_))));
    assert_eq!(db.rules().unwrap().len(), 2);
}
