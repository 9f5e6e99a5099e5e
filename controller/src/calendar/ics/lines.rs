//! Content lines (RFC 5545 §3.1) from the file's bytes: unfolded, then each read as UTF-8 on
//! its own, split into a name, parameters and a value.
//!
//! Unfolding is done on bytes, before any text is decoded: the RFC folds at 75 octets and lets a
//! fold fall inside a UTF-8 character (Google does), so a file can be valid only once unfolded.
//! A line that is not UTF-8 even then is refused with its number. A byte order mark is skipped.

use super::super::Error;

/// One content line, unfolded: where it starts, its name (upper case), its parameters (names
/// upper case, values unquoted, several values kept comma-separated), its value as written.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub line: usize,
    pub name: String,
    pub params: Vec<(String, String)>,
    pub value: String,
}

impl Line {
    /// The value of parameter `name` (upper case), if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value as TEXT (§3.3.11): `\,` `\;` `\\` and `\n` read as what they stand for.
    pub fn text(&self) -> String {
        unescape(&self.value)
    }
}

/// The content lines of `bytes`, blank lines left out, or the first that cannot be read.
pub(super) fn content_lines(bytes: &[u8]) -> Result<Vec<Line>, Error> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut logical: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match (raw.split_first(), logical.last_mut()) {
            (Some((&(b' ' | b'\t'), rest)), Some(last)) => last.1.extend_from_slice(rest),
            _ => logical.push((i + 1, raw.to_vec())),
        }
    }
    let mut lines = Vec::with_capacity(logical.len());
    for (line, raw) in logical {
        let text = String::from_utf8(raw).map_err(|_| {
            Error::new(
                line,
                "this line is not UTF-8 text: export or save the calendar as UTF-8",
            )
        })?;
        if !text.trim().is_empty() {
            lines.push(parse(line, &text)?);
        }
    }
    Ok(lines)
}

/// `NAME *(;PARAM=VALUE) :VALUE`, a parameter value quoted or not.
fn parse(line: usize, text: &str) -> Result<Line, Error> {
    let bad = || {
        let shown: String = text.chars().take(60).collect();
        Error::new(line, format!("{shown:?} is not a NAME:VALUE line"))
    };
    let end = text.find([';', ':']).ok_or_else(bad)?;
    let name = &text[..end];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad());
    }
    let mut params = Vec::new();
    let mut rest = &text[end..];
    while let Some(r) = rest.strip_prefix(';') {
        let eq = r.find('=').ok_or_else(bad)?;
        let pname = r[..eq].trim().to_ascii_uppercase();
        let mut r = &r[eq + 1..];
        let mut value = String::new();
        loop {
            if let Some(q) = r.strip_prefix('"') {
                let close = q.find('"').ok_or_else(|| {
                    Error::new(
                        line,
                        format!("parameter {pname} opens a quote it never closes"),
                    )
                })?;
                value.push_str(&q[..close]);
                r = &q[close + 1..];
            } else {
                let stop = r.find([',', ';', ':']).ok_or_else(bad)?;
                value.push_str(&r[..stop]);
                r = &r[stop..];
            }
            match r.strip_prefix(',') {
                Some(more) => {
                    value.push(',');
                    r = more;
                }
                None => break,
            }
        }
        params.push((pname, value));
        rest = r;
    }
    let value = rest.strip_prefix(':').ok_or_else(bad)?;
    Ok(Line {
        line,
        name: name.to_ascii_uppercase(),
        params,
        value: value.to_owned(),
    })
}

/// A list of TEXT values (`CATEGORIES:a,b\\,c`), each unescaped: split at the commas that
/// are not escaped.
pub(super) fn split_text_list(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match (c, escaped) {
            ('\\', false) => escaped = true,
            (',', false) => {
                parts.push(unescape(&value[start..i]));
                start = i + 1;
            }
            _ => escaped = false,
        }
    }
    parts.push(unescape(&value[start..]));
    parts
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(n @ (',' | ';' | '\\'))) => {
                out.push(n);
                chars.next();
            }
            ('\\', Some('n' | 'N')) => {
                out.push('\n');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_list_splits_at_unescaped_commas_only() {
        assert_eq!(
            split_text_list(r"Bureautique,Excel\, Word,a\\"),
            ["Bureautique", "Excel, Word", "a\\"]
        );
    }

    #[test]
    fn a_fold_inside_a_utf8_character_is_unfolded_before_decoding() {
        // "Séance", folded between the two bytes of the é, as Google folds at 75 octets.
        let bytes = b"BEGIN:VEVENT\r\nSUMMARY:S\xc3\r\n \xa9ance\r\nEND:VEVENT\r\n";
        let lines = content_lines(bytes).unwrap();
        assert_eq!(lines[1].value, "Séance");
        assert_eq!((lines[1].line, lines[2].line), (2, 4));
        let e = content_lines(b"BEGIN:VEVENT\r\nSUMMARY:S\xc3\r\nEND:VEVENT\r\n").unwrap_err();
        assert!(e.line == 2 && e.what.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn parameters_may_be_quoted_and_hold_colons() {
        let l = &content_lines(
            b"DTSTART;TZID=\"Romance Standard Time\":20300304T083000\r\n\
              DESCRIPTION;ALTREP=\"cid:part1@example.org\";LANGUAGE=fr:Salle 1\\, b\xc3\xa2timent A\r\n",
        )
        .unwrap();
        assert_eq!(l[0].param("TZID"), Some("Romance Standard Time"));
        assert_eq!(l[0].value, "20300304T083000");
        assert_eq!(l[1].param("ALTREP"), Some("cid:part1@example.org"));
        assert_eq!(l[1].text(), "Salle 1, bâtiment A");
    }

    #[test]
    fn text_values_are_unescaped_once() {
        let l = Line {
            line: 1,
            name: "X".into(),
            params: vec![],
            value: r"a\, b\; c\\n\nd\N".into(),
        };
        assert_eq!(l.text(), "a, b; c\\n\nd\n");
    }

    #[test]
    fn what_is_not_a_content_line_is_refused_with_its_number() {
        for (text, line) in [
            (&b"BEGIN:VCALENDAR\r\nhello\r\n"[..], 2),
            (b"\r\n\r\nDTSTART;TZID=\"Paris:2030\r\n", 3),
            (b" SUMMARY:x\r\n", 1),
            (b"SUM MARY:x\r\n", 1),
        ] {
            let e = content_lines(text).unwrap_err();
            assert_eq!(e.line, line, "{e}");
        }
    }
}
