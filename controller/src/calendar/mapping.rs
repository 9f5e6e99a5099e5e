//! Mapping rules: what the words of a training tool's calendar mean in nightcast. Pure: an
//! event's [`Texts`] and the DSI's [`Rules`] in, the event's site, room and master out, or why
//! they could not be read.
//!
//! An event is read in nightcast's own forms first (`X-NIGHTCAST-MASTER`, a `SUMMARY` of
//! `NAME VERSION`, a `LOCATION` of `SITE/ROOM`) when the catalogue holds what they name; else
//! through the rules, in the order they were written (their ids): the first title or category
//! rule that matches gives the master, the first location rule the room.
//!
//! A pattern matches the whole text, letter case and runs of spaces ignored; `*` stands for any
//! run of characters, and is the only special character. A category rule matches one value of
//! `CATEGORIES`, whole, in any case. Deliberately not here: regular expressions (a DSI reads a
//! glob at a glance), and any guess: what no rule names is unmatched, never placed by likeness.

use std::collections::HashSet;

use super::Row;

/// What an iCalendar event says in words, as the rules read them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Texts {
    /// `SUMMARY`, unescaped ("" if none).
    pub title: String,
    /// `LOCATION`, unescaped.
    pub location: Option<String>,
    /// Every value of every `CATEGORIES`.
    pub categories: Vec<String>,
    /// The master came from `X-NIGHTCAST-MASTER`: it is what the event runs, rules or not.
    pub master_given: bool,
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Title(Pattern),
    /// One `CATEGORIES` value, [`normalize`]d.
    Category(String),
    Location(Pattern),
}

/// What a rule gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Master { name: String, version: String },
    Place { site: String, room: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: i64,
    pub matcher: Matcher,
    pub target: Target,
}

/// The rules in the order they are tried (by id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules(pub Vec<Rule>);

/// What the catalogue holds, as the rules' targets and nightcast's own forms are checked.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// (name, version)
    pub masters: HashSet<(String, String)>,
    /// (site, room)
    pub rooms: HashSet<(String, String)>,
}

/// An event no rule could read, for the DSI: its line, `UID`, words, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    pub line: usize,
    pub uid: String,
    pub title: String,
    pub location: String,
    pub why: String,
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: {:?} at {:?}: {}",
            self.line, self.title, self.location, self.why
        )
    }
}

/// A glob over [`normalize`]d text: `*` is any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// The pattern as the DSI wrote it, [`normalize`]d; empty is refused.
    pub fn new(text: &str) -> Result<Pattern, String> {
        let p = normalize(text);
        match p.is_empty() {
            true => Err("an empty pattern: give the text to match (`*` for any run)".into()),
            false => Ok(Pattern(p)),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        glob(&self.0, &normalize(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lower case, spaces trimmed, runs of white space made one space: what rules compare.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether `text` is `pattern` with each `*` standing for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = &parts[..] else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Gives `row` its site, room and master from its texts (a row without texts, from CSV, is left
/// as it is), or says what could not be read.
pub fn resolve(row: &mut Row, rules: &Rules, known: &Known) -> Result<(), String> {
    let Some(texts) = &row.texts else {
        return Ok(());
    };
    let mut why = Vec::new();
    let own_master = known
        .masters
        .contains(&(row.master.clone(), row.version.clone()));
    if !texts.master_given && !own_master {
        let hit = rules.0.iter().find(|r| match &r.matcher {
            Matcher::Title(p) => p.matches(&texts.title),
            Matcher::Category(c) => texts.categories.iter().any(|v| normalize(v) == *c),
            Matcher::Location(_) => false,
        });
        match hit.map(|r| (r.id, &r.target)) {
            Some((id, Target::Master { name, version })) => {
                if known.masters.contains(&(name.clone(), version.clone())) {
                    row.master = name.clone();
                    row.version = version.clone();
                } else {
                    why.push(format!(
                        "rule {id} gives master {name} {version}, which the catalogue no longer holds"
                    ));
                }
            }
            _ => why.push(match texts.categories.is_empty() {
                true => "no rule for its title".to_owned(),
                false => format!(
                    "no rule for its title nor its categories ({})",
                    texts.categories.join(", ")
                ),
            }),
        }
    }
    let own_place = known.rooms.contains(&(row.site.clone(), row.room.clone()));
    if !own_place {
        let location = texts.location.as_deref();
        let hit = location.and_then(|l| {
            rules.0.iter().find(|r| match &r.matcher {
                Matcher::Location(p) => p.matches(l),
                _ => false,
            })
        });
        match (location, hit.map(|r| (r.id, &r.target))) {
            (None, _) => why.push("no LOCATION".to_owned()),
            (Some(_), Some((id, Target::Place { site, room }))) => {
                if known.rooms.contains(&(site.clone(), room.clone())) {
                    row.site = site.clone();
                    row.room = room.clone();
                } else {
                    why.push(format!(
                        "rule {id} gives room {site}/{room}, which the catalogue no longer holds"
                    ));
                }
            }
            (Some(_), _) => why.push("no rule for its location".to_owned()),
        }
    }
    match why.is_empty() {
        true => Ok(()),
        false => Err(why.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::When;

    fn pattern(p: &str) -> Pattern {
        Pattern::new(p).unwrap()
    }

    #[test]
    fn a_glob_matches_the_whole_text_in_any_case_with_spaces_collapsed() {
        assert!(pattern("Excel*").matches("excel, niveau 2"));
        assert!(pattern("formation  EXCEL*").matches(" Formation Excel, niveau 2"));
        assert!(pattern("*niveau 2").matches("Excel niveau 2"));
        assert!(pattern("*excel*").matches("Formation Excel avancée"));
        assert!(pattern("a*b*c").matches("abc") && pattern("a*b*c").matches("a-b-b-c"));
        assert!(!pattern("a*b*c").matches("acb"));
        assert!(
            !pattern("ab*ba").matches("aba"),
            "overlapping prefix and suffix"
        );
        assert!(
            !pattern("Excel").matches("Excel 2"),
            "no * is an exact match"
        );
        assert!(pattern("Salle 1 (bâtiment A)").matches("SALLE 1 (BÂTIMENT A)"));
        assert!(pattern("*").matches(""));
        assert!(Pattern::new("  ").is_err());
    }

    fn row(title: &str, location: Option<&str>, categories: &[&str]) -> Row {
        let (site, room) = location.and_then(|l| l.split_once('/')).unwrap_or_default();
        let words: Vec<&str> = title.split_whitespace().collect();
        let (master, version) = match words[..] {
            [m, v] => (m, v),
            _ => ("", ""),
        };
        Row {
            line: 7,
            site: site.into(),
            room: room.into(),
            master: master.into(),
            version: version.into(),
            start: When::Unix(0),
            end: When::Unix(1),
            event: None,
            texts: Some(Texts {
                title: title.into(),
                location: location.map(str::to_owned),
                categories: categories.iter().map(|c| c.to_string()).collect(),
                master_given: false,
            }),
        }
    }

    fn rules() -> (Rules, Known) {
        let master = |n: &str, v: &str| Target::Master {
            name: n.into(),
            version: v.into(),
        };
        let rules = Rules(vec![
            Rule {
                id: 1,
                matcher: Matcher::Title(pattern("Excel*")),
                target: master("office", "3"),
            },
            Rule {
                id: 2,
                matcher: Matcher::Category("bureautique".into()),
                target: master("office", "2"),
            },
            Rule {
                id: 3,
                matcher: Matcher::Title(pattern("*")),
                target: master("gone", "1"),
            },
            Rule {
                id: 4,
                matcher: Matcher::Location(pattern("Lyon, Salle 1*")),
                target: Target::Place {
                    site: "lyon".into(),
                    room: "salle-1".into(),
                },
            },
        ]);
        let mut known = Known::default();
        known.masters.insert(("office".into(), "3".into()));
        known.masters.insert(("office".into(), "2".into()));
        known.masters.insert(("win10".into(), "1".into()));
        known.rooms.insert(("lyon".into(), "salle-1".into()));
        (rules, known)
    }

    #[test]
    fn own_forms_the_catalogue_holds_come_first_then_the_first_rule_that_matches() {
        let (rules, known) = rules();
        let mut r = row("win10 1", Some("lyon/salle-1"), &[]);
        resolve(&mut r, &rules, &known).unwrap();
        assert_eq!((r.master.as_str(), r.room.as_str()), ("win10", "salle-1"));

        // "Excel avancé" reads as NAME VERSION, but no such master: the rules decide.
        let mut r = row("Excel avancé", Some("Lyon, Salle 1 (bâtiment A)"), &[]);
        resolve(&mut r, &rules, &known).unwrap();
        assert_eq!(
            (
                r.master.as_str(),
                r.version.as_str(),
                r.site.as_str(),
                r.room.as_str()
            ),
            ("office", "3", "lyon", "salle-1")
        );

        // Rule 1 is tried before the category rule 2.
        let mut r = row("Excel pour tous", Some("lyon/salle-1"), &["Bureautique"]);
        resolve(&mut r, &rules, &known).unwrap();
        assert_eq!(r.version, "3");
        let mut r = row("Word", Some("lyon/salle-1"), &["Débutants", "BUREAUTIQUE"]);
        resolve(&mut r, &rules, &known).unwrap();
        assert_eq!(r.version, "2");
    }

    #[test]
    fn what_no_rule_reads_says_why_and_a_rule_to_a_master_gone_is_no_guess() {
        let (mut rules, known) = rules();
        let mut r = row("Réunion", Some("Salle du conseil"), &[]);
        let why = resolve(&mut r, &rules, &known).unwrap_err();
        assert_eq!(
            why,
            "rule 3 gives master gone 1, which the catalogue no longer holds; \
             no rule for its location"
        );
        rules.0.retain(|r| r.id != 3);
        let mut r = row("Réunion", None, &["Interne"]);
        let why = resolve(&mut r, &rules, &known).unwrap_err();
        assert_eq!(
            why,
            "no rule for its title nor its categories (Interne); no LOCATION"
        );
        // A row from CSV has no texts: left as it is.
        let mut csv = row("x", None, &[]);
        csv.texts = None;
        assert!(resolve(&mut csv, &rules, &known).is_ok());
    }
}
