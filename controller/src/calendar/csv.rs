//! Calendars in CSV. Header (in this order): `site,room,master,version,start,end`, with `start`
//! and `end` as `YYYY-MM-DD HH:MM` in the site's own time zone. Blank lines and lines starting with
//! `#` are skipped; fields are split on commas (no quoting: no field may hold one).

use super::{Error, Row, When};

pub const HEADER: &str = "site,room,master,version,start,end";

/// Every row of `text`, or the first bad line.
pub fn parse(text: &str) -> Result<Vec<Row>, Error> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let header = lines
        .by_ref()
        .find(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| Error::new(1, "empty calendar"))?;
    if header.1.replace(' ', "") != HEADER {
        return Err(Error::new(
            header.0,
            format!("the header must be `{HEADER}`"),
        ));
    }
    let mut rows = Vec::new();
    for (line, row) in lines {
        if row.is_empty() || row.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = row.split(',').map(str::trim).collect();
        let [site, room, master, version, start, end] = f[..] else {
            return Err(Error::new(
                line,
                format!("expected 6 fields, found {}", f.len()),
            ));
        };
        let local = |t: &str| {
            t.replace(' ', "T")
                .parse::<jiff::civil::DateTime>()
                .map(When::Local)
                .map_err(|_| {
                    Error::new(
                        line,
                        format!("{t:?} is not a date and time (YYYY-MM-DD HH:MM)"),
                    )
                })
        };
        rows.push(Row {
            line,
            site: site.to_owned(),
            room: room.to_owned(),
            master: master.to_owned(),
            version: version.to_owned(),
            start: local(start)?,
            end: local(end)?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
