//! `multipart/form-data` bodies (a form with a file: the calendar upload), sans-IO and bounded by
//! the body's size: each part's name, file name and bytes. Nothing but what a browser sends is
//! understood; anything else is `None`.

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    /// Set for a file input (empty when no file was chosen).
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= 70).then_some(v)
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `key="value"` in a `Content-Disposition` header.
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The parts of `body`, sent with `content_type`; `None` if it is not a well-formed multipart
/// body (no boundary, no closing delimiter, a part without a name).
pub fn parts(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let delimiter = format!("--{}", boundary(content_type)?);
    let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
    let next = format!("\r\n{delimiter}");
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, next.as_bytes())?;
        let part = &rest[..end];
        rest = &rest[end + next.len()..];
        let split = find(part, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&part[..split]).ok()?;
        let disposition = headers.split("\r\n").find(|h| {
            h.get(..20)
                .is_some_and(|k| k.eq_ignore_ascii_case("content-disposition:"))
        })?;
        out.push(Part {
            name: param(disposition, "name")?,
            filename: param(disposition, "filename"),
            data: part[split + 4..].to_vec(),
        });
    }
}

/// The text fields of `parts` (not the files), as `http::form` gives them.
pub fn fields(parts: &[Part]) -> Vec<(String, String)> {
    parts
        .iter()
        .filter(|p| p.filename.is_none())
        .map(|p| {
            (
                p.name.clone(),
                String::from_utf8_lossy(&p.data).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Strategy;

    const TYPE: &str = "multipart/form-data; boundary=----WebKitFormBoundaryX1";

    fn body(file: &str) -> Vec<u8> {
        format!(
            "------WebKitFormBoundaryX1\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n\
             ------WebKitFormBoundaryX1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"term.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n{file}\r\n------WebKitFormBoundaryX1--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_browsers_upload_is_read_with_its_file_and_fields() {
        let file = "site,room\r\nlyon,a\r\n--not-the-boundary\r\n";
        let p = parts(TYPE, &body(file)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(fields(&p), vec![("csrf".into(), "abc".into())]);
        assert_eq!(p[1].filename.as_deref(), Some("term.csv"));
        assert_eq!(p[1].data, file.as_bytes());
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(boundary("application/x-www-form-urlencoded"), None);
        assert_eq!(parts("multipart/form-data", &body("x")), None);
        let mut cut = body("x");
        cut.truncate(cut.len() - 30);
        assert_eq!(parts(TYPE, &cut), None);
        assert_eq!(parts(TYPE, b""), None);
    }

    proptest::proptest! {
        /// Any change to a valid body: parts or `None`, never a panic.
        #[test]
        fn mutated_bodies_never_panic(
            edits in proptest::collection::vec(proptest::prelude::any::<(u8, usize, usize)>()
                .prop_map(image_tools::mutation::Edit::from), 1..6),
        ) {
            let _ = parts(TYPE, &image_tools::mutation::mutate(&body("a,b\r\n"), &edits));
        }
    }
}
