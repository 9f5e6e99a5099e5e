//! Calendars in CSV, as spreadsheets write them. One header line, then one session per line:
//!
//! - the header names the columns `site,room,master,version,start,end`, in any order, in English
//!   or French (`site`, `salle`, `modèle` or `image`, `version`, `début`, `fin`), in any case,
//!   with or without accents; a column it does not know, or names twice, is refused with its name;
//! - fields are separated by commas or semicolons (French Excel), whichever the header uses, and
//!   may be quoted (`"Lyon, bâtiment A"`, a quote inside doubled: `""`), see [`split`];
//! - `start` and `end` are `YYYY-MM-DD HH:MM` or `DD/MM/YYYY H:MM` (see [`when`]), on the wall
//!   clock of the row's site: floating times ([`When::Local`](super::When::Local)), turned into
//!   UTC with the site's time zone when the rows are inserted (`db::calendar`), as before;
//! - a leading byte order mark (Excel's "CSV UTF-8") and CRLF line ends are read; blank lines,
//!   lines of empty cells and lines starting with `#` are skipped.
//!
//! Every error names the line, and the column (as the header names it) when there is one.

mod split;
mod when;

use super::{Error, Row};

pub const HEADER: &str = "site,room,master,version,start,end";

/// What the header may name, for error messages.
const COLUMNS: &str =
    "site, room (salle), master (modèle, image), version, start (début), end (fin), in any order";

/// The columns of a calendar, in the order of [`Row`]'s fields.
const NAMES: [&str; 6] = ["site", "room", "master", "version", "start", "end"];

/// Which of [`NAMES`] a header name means, from its folded form.
fn column(name: &str) -> Option<usize> {
    Some(match fold(name).as_str() {
        "site" => 0,
        "room" | "salle" => 1,
        "master" | "modele" | "image" => 2,
        "version" => 3,
        "start" | "debut" => 4,
        "end" | "fin" => 5,
        _ => return None,
    })
}

/// Lower case, no spaces, no French accents.
fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            c => c,
        })
        .collect()
}

/// Every row of `text`, or the first bad line.
pub fn parse(text: &str) -> Result<Vec<Row>, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let (header_line, header) = lines
        .by_ref()
        .find(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| Error::new(1, "empty calendar"))?;
    let sep = split::separator(header);
    let names = split::fields(header, sep).map_err(|b| {
        Error::new(
            header_line,
            format!("header, column {}: {}", b.field + 1, b.what),
        )
    })?;
    let at = columns(&names).map_err(|what| Error::new(header_line, what))?;
    let mut rows = Vec::new();
    for (line, row) in lines {
        if row.is_empty() || row.starts_with('#') {
            continue;
        }
        let named = |i: usize| match names.get(i) {
            Some(name) => format!("column `{name}`"),
            None => format!("field {}", i + 1),
        };
        let f = split::fields(row, sep)
            .map_err(|b| Error::new(line, format!("{}: {}", named(b.field), b.what)))?;
        if f.iter().all(String::is_empty) {
            continue;
        }
        if f.len() != names.len() {
            return Err(Error::new(
                line,
                format!("expected {} fields, found {}", names.len(), f.len()),
            ));
        }
        let value = |c: usize| {
            let v = &f[at[c]];
            if v.is_empty() {
                Err(Error::new(line, format!("{} is empty", named(at[c]))))
            } else {
                Ok(v.clone())
            }
        };
        let local = |c: usize| {
            let v = value(c)?;
            when::local(&v).ok_or_else(|| {
                Error::new(
                    line,
                    format!(
                        "{}: {v:?} is not a date and time ({})",
                        named(at[c]),
                        when::FORMS
                    ),
                )
            })
        };
        rows.push(Row {
            line,
            site: value(0)?,
            room: value(1)?,
            master: value(2)?,
            version: value(3)?,
            start: local(4)?,
            end: local(5)?,
            event: None,
            texts: None,
        });
    }
    Ok(rows)
}

/// Where each of [`NAMES`] is among the header's `names`, or what is wrong with them.
fn columns(names: &[String]) -> Result<[usize; 6], String> {
    let mut at: [Option<usize>; 6] = [None; 6];
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(format!("column {} of the header has no name", i + 1));
        }
        let c = column(name)
            .ok_or_else(|| format!("unknown column `{name}`: the header names {COLUMNS}"))?;
        if let Some(first) = at[c] {
            return Err(format!(
                "column `{name}` is named twice (as `{}` before)",
                names[first]
            ));
        }
        at[c] = Some(i);
    }
    let missing: Vec<&str> = NAMES
        .iter()
        .zip(at)
        .filter(|(_, a)| a.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the header must be `{HEADER}` ({COLUMNS}): missing {}",
            missing.join(", ")
        ));
    }
    Ok(at.map(|a| a.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::When;

    #[test]
    fn rows_keep_their_line_and_floating_times() {
        let rows = parse("\n# term\nsite, room, master, version, start, end\nlyon,salle-1,win10,1,2026-12-01 08:30,2026-12-01 17:00\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 4);
        assert_eq!(
            rows[0].start,
            When::Local("2026-12-01T08:30".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(parse("").unwrap_err().line, 1);
        assert_eq!(parse("# x\nroom,master\n").unwrap_err().line, 2);
        let e = parse(&format!("{HEADER}\n\nlyon,salle-1,win10\n")).unwrap_err();
        assert_eq!((e.line, e.what.as_str()), (3, "expected 6 fields, found 3"));
        let e = parse(&format!("{HEADER}\nlyon,s,w,1,3 dec,2026-12-01 17:00\n")).unwrap_err();
        assert!(e.line == 2 && e.what.contains("not a date"), "{e}");
    }

    fn local(s: &str) -> When {
        When::Local(s.parse().unwrap())
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_read() {
        let rows = parse(&format!(
            "\u{feff}{HEADER}\r\nlyon,salle-1,win10,1,2026-12-01 08:30,2026-12-01 17:00\r\n"
        ))
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].line, rows[0].version.as_str()), (2, "1"));
        assert_eq!(rows[0].end, local("2026-12-01T17:00"));
    }

    #[test]
    fn semicolons_are_detected_from_the_header() {
        let rows = parse("site;room;master;version;start;end\nlyon;salle-1;win10;1,5;2026-12-01 08:30;2026-12-01 17:00\n").unwrap();
        assert_eq!(rows[0].version, "1,5");
        assert_eq!(rows[0].start, local("2026-12-01T08:30"));
    }

    #[test]
    fn quoted_fields_hold_the_separator_and_doubled_quotes() {
        let rows = parse(&format!(
            "{HEADER}\n\"lyon\",\"Lyon, bâtiment A\",\"win \"\"10\"\"\",1,2026-12-01 08:30,2026-12-01 17:00\n"
        ))
        .unwrap();
        assert_eq!(rows[0].site, "lyon");
        assert_eq!(rows[0].room, "Lyon, bâtiment A");
        assert_eq!(rows[0].master, "win \"10\"");
        let e = parse(&format!(
            "{HEADER}\nlyon,\"salle-1,win10,1,2026-12-01 08:30,2026-12-01 17:00\n"
        ))
        .unwrap_err();
        assert!(
            e.line == 2 && e.what.contains("room") && e.what.contains("quote"),
            "{e}"
        );
        let e = parse(&format!(
            "{HEADER}\nlyon,\"salle-1\"x,win10,1,2026-12-01 08:30,2026-12-01 17:00\n"
        ))
        .unwrap_err();
        assert!(
            e.line == 2 && e.what.contains("room") && e.what.contains("quote"),
            "{e}"
        );
    }

    #[test]
    fn french_dates_and_short_hours_are_read_as_on_the_sites_wall_clock() {
        let rows = parse(&format!(
            "{HEADER}\nlyon,s,w,1,01/12/2026 8:30,01/12/2026T17:05\nlyon,s,w,1,2026-12-02 8:30,2026-12-02T17:00:00\n"
        ))
        .unwrap();
        assert_eq!(rows[0].start, local("2026-12-01T08:30"));
        assert_eq!(rows[0].end, local("2026-12-01T17:05"));
        assert_eq!(rows[1].start, local("2026-12-02T08:30"));
        assert_eq!(rows[1].end, local("2026-12-02T17:00"));
        for bad in [
            "32/12/2026 8:30",
            "01/13/2026 8:30",
            "1/12/26 8:30",
            "01/12/2026 8h30",
            "01/12/2026 24:00",
            "01/12/2026",
        ] {
            let e = parse(&format!("{HEADER}\nlyon,s,w,1,{bad},2026-12-02 10:00\n")).unwrap_err();
            assert!(
                e.line == 2 && e.what.contains("start") && e.what.contains("not a date"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn french_header_names_in_any_order_and_case_with_or_without_accents() {
        let text = "Salle;Modèle;Site;Version;Début;FIN\nsalle-1;win10;lyon;1;01/12/2026 08:30;01/12/2026 17:00\n";
        let rows = parse(text).unwrap();
        assert_eq!(
            (
                rows[0].site.as_str(),
                rows[0].room.as_str(),
                rows[0].master.as_str()
            ),
            ("lyon", "salle-1", "win10")
        );
        assert_eq!(rows[0].end, local("2026-12-01T17:00"));
        let rows = parse("image,debut,fin,salle,site,version\nwin10,2026-12-01 08:30,2026-12-01 17:00,salle-1,lyon,1\n").unwrap();
        assert_eq!(rows[0].start, local("2026-12-01T08:30"));
        assert_eq!(rows[0].master, "win10");
    }

    #[test]
    fn a_bad_header_names_the_column() {
        let e = parse(&format!("{HEADER},trainer\n")).unwrap_err();
        assert!(e.line == 1 && e.what.contains("`trainer`"), "{e}");
        let e = parse("site,salle,room,master,version,start,end\n").unwrap_err();
        assert!(
            e.line == 1 && e.what.contains("`room`") && e.what.contains("twice"),
            "{e}"
        );
        let e = parse("site,room,master,start,end\n").unwrap_err();
        assert!(
            e.line == 1 && e.what.contains("version") && e.what.contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_field_names_its_line_and_column() {
        let e = parse("site;salle;modele;version;debut;fin\nlyon;s;w;1;01/12/2026 8:30;demain\n")
            .unwrap_err();
        assert!(
            e.line == 2 && e.what.contains("`fin`") && e.what.contains("demain"),
            "{e}"
        );
        let e = parse(&format!(
            "{HEADER}\nlyon,,w,1,2026-12-01 08:30,2026-12-01 17:00\n"
        ))
        .unwrap_err();
        assert!(
            e.line == 2 && e.what.contains("`room`") && e.what.contains("empty"),
            "{e}"
        );
    }

    #[test]
    fn rows_of_empty_cells_are_blank_lines() {
        let rows = parse("site;room;master;version;start;end\r\n;;;;;\r\nlyon;s;w;1;01/12/2026 8:30;01/12/2026 9:30\r\n;;;;;\r\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 3);
    }
}
