//! Splitting one line of a CSV file into fields, as spreadsheets write them (RFC 4180 on one
//! line): the separator is a comma or a semicolon, found from the header; a field may be quoted
//! (`"Lyon, bâtiment A"`), a quote inside one doubled (`""`). Whitespace around a field is not
//! part of it. A quoted field cannot span lines: a calendar's fields never need to.

/// The separator the header uses: a semicolon (French Excel) when it has more of them outside
/// quotes than commas, else a comma.
pub fn separator(header: &str) -> char {
    let (mut quoted, mut commas, mut semicolons) = (false, 0, 0);
    for c in header.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => commas += 1,
            ';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas {
        ';'
    } else {
        ','
    }
}

/// Why a line could not be split: the (0-based) field where, and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Bad {
    pub field: usize,
    pub what: &'static str,
}

/// The fields of `line`, trimmed, quotes removed.
pub fn fields(line: &str, sep: char) -> Result<Vec<String>, Bad> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        let field = out.len();
        let start = rest.trim_start();
        if let Some(quoted) = start.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let after = loop {
                match chars.next() {
                    None => {
                        return Err(Bad {
                            field,
                            what: "a quote is opened and never closed",
                        })
                    }
                    Some((i, '"')) if quoted[i + 1..].starts_with('"') => {
                        value.push('"');
                        chars.next();
                    }
                    Some((i, '"')) => break quoted[i + 1..].trim_start(),
                    Some((_, c)) => value.push(c),
                }
            };
            out.push(value.trim().to_owned());
            match after.chars().next() {
                None => return Ok(out),
                Some(c) if c == sep => rest = &after[c.len_utf8()..],
                Some(_) => return Err(Bad {
                    field,
                    what: "text after the closing quote (a quote inside a field is written `\"\"`)",
                }),
            }
        } else {
            match start.split_once(sep) {
                Some((value, tail)) => {
                    out.push(value.trim().to_owned());
                    rest = tail;
                }
                None => {
                    out.push(start.trim().to_owned());
                    return Ok(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_separator_is_the_one_the_header_uses_outside_quotes() {
        assert_eq!(separator("site,room,master"), ',');
        assert_eq!(separator("site;salle;modèle"), ';');
        assert_eq!(separator("\"a;b;c\",d,e"), ',');
        assert_eq!(separator("site"), ',');
    }

    #[test]
    fn quoted_fields_keep_separators_and_doubled_quotes() {
        assert_eq!(
            fields(" a ,\"b, c\" , \"say \"\"hi\"\"\",,\"\"", ',').unwrap(),
            ["a", "b, c", "say \"hi\"", "", ""]
        );
        assert_eq!(fields("a;\"b;c\";d,e", ';').unwrap(), ["a", "b;c", "d,e"]);
        assert_eq!(fields("a\"b,c", ',').unwrap(), ["a\"b", "c"]);
        assert_eq!(fields("", ',').unwrap(), [""]);
    }

    #[test]
    fn a_quote_left_open_or_followed_by_text_names_its_field() {
        assert_eq!(fields("a,\"b,c", ',').unwrap_err().field, 1);
        assert_eq!(fields("a,b,\"c\"\"", ',').unwrap_err().field, 2);
        let e = fields("\"a\"b,c", ',').unwrap_err();
        assert!(e.field == 0 && e.what.contains("after the closing quote"));
    }
}
