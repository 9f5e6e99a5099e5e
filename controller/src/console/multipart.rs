//! `multipart/form-data` bodies (a form with a file), sans-IO: `parts` reads a whole body bounded
//! by its size (the calendar upload), `Stream` reads one as it arrives, its file part passed on
//! piece by piece and never held whole (a master image, tens of GB). Each part's name, file name
//! and bytes. Nothing but what a browser sends is understood; anything else is refused.

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

/// Headers and text fields of a streamed body, in all: a form's worth.
pub const MAX_TEXT: usize = 16 << 10;

/// What a streamed body gives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A text field, whole.
    Field { name: String, value: String },
    /// A file part begins (its file name empty when no file was chosen); `Data` follows.
    File { name: String, filename: String },
    /// The next bytes of the file part.
    Data(Vec<u8>),
    /// The closing delimiter: the body is complete.
    End,
}

/// Why a streamed body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the form is not a well-formed multipart body")]
    Malformed,
    #[error("the form's text fields are larger than {MAX_TEXT} bytes")]
    TooLarge,
}

#[derive(Debug)]
enum State {
    /// At a delimiter (`\r\n--boundary`), then `\r\n` or the closing `--`.
    Delimiter,
    Headers,
    Field(String),
    File,
    Done,
}

/// A multipart body read as it arrives: `feed` it the bytes, take the events.
#[derive(Debug)]
pub struct Stream {
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    state: State,
    text: usize,
}

impl Stream {
    /// A reader of a body sent with `content_type`; `None` if it is not multipart.
    pub fn new(content_type: &str) -> Option<Stream> {
        Some(Stream {
            delimiter: format!("\r\n--{}", boundary(content_type)?).into_bytes(),
            // The first delimiter has no line break before it.
            buf: b"\r\n".to_vec(),
            state: State::Delimiter,
            text: 0,
        })
    }

    /// Whether the closing delimiter was read.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The events `input` completes (bytes that might begin a delimiter are kept for the next).
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<Event>, StreamError> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::new();
        let dl = self.delimiter.len();
        loop {
            match &self.state {
                State::Delimiter => {
                    let n = self.buf.len().min(dl);
                    if self.buf[..n] != self.delimiter[..n] {
                        return Err(StreamError::Malformed);
                    }
                    if self.buf.len() < dl + 2 {
                        break;
                    }
                    match &self.buf[dl..dl + 2] {
                        b"--" => {
                            self.state = State::Done;
                            out.push(Event::End);
                        }
                        b"\r\n" => {
                            self.buf.drain(..dl + 2);
                            self.state = State::Headers;
                        }
                        _ => return Err(StreamError::Malformed),
                    }
                }
                State::Headers => {
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        if self.text + self.buf.len() > MAX_TEXT {
                            return Err(StreamError::TooLarge);
                        }
                        break;
                    };
                    self.text += end;
                    let headers = std::str::from_utf8(&self.buf[..end])
                        .map_err(|_| StreamError::Malformed)?;
                    let disposition = headers
                        .split("\r\n")
                        .find(|h| {
                            h.get(..20)
                                .is_some_and(|k| k.eq_ignore_ascii_case("content-disposition:"))
                        })
                        .ok_or(StreamError::Malformed)?;
                    let name = param(disposition, "name").ok_or(StreamError::Malformed)?;
                    self.state = match param(disposition, "filename") {
                        Some(filename) => {
                            out.push(Event::File { name, filename });
                            State::File
                        }
                        None => State::Field(name),
                    };
                    self.buf.drain(..end + 4);
                }
                State::Field(name) => {
                    let Some(end) = find(&self.buf, &self.delimiter) else {
                        if self.text + self.buf.len() > MAX_TEXT {
                            return Err(StreamError::TooLarge);
                        }
                        break;
                    };
                    self.text += end;
                    if self.text > MAX_TEXT {
                        return Err(StreamError::TooLarge);
                    }
                    out.push(Event::Field {
                        name: name.clone(),
                        value: String::from_utf8_lossy(&self.buf[..end]).into_owned(),
                    });
                    self.buf.drain(..end);
                    self.state = State::Delimiter;
                }
                State::File => {
                    if let Some(end) = find(&self.buf, &self.delimiter) {
                        if end > 0 {
                            out.push(Event::Data(self.buf.drain(..end).collect()));
                        }
                        self.state = State::Delimiter;
                        continue;
                    }
                    // All but what could be the start of a delimiter.
                    let safe = self.buf.len().saturating_sub(dl - 1);
                    if safe > 0 {
                        out.push(Event::Data(self.buf.drain(..safe).collect()));
                    }
                    break;
                }
                State::Done => {
                    // The epilogue, if any, is ignored.
                    self.buf.clear();
                    break;
                }
            }
        }
        Ok(out)
    }
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

    /// What `Stream` gives for `body` fed in pieces of `sizes` (cycled), as `parts` would.
    fn streamed(body: &[u8], sizes: &[usize]) -> Result<Option<Vec<Part>>, StreamError> {
        let mut s = Stream::new(TYPE).unwrap();
        let mut out: Vec<Part> = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            i += 1;
            for e in s.feed(&rest[..n])? {
                match e {
                    Event::Field { name, value } => out.push(Part {
                        name,
                        filename: None,
                        data: value.into_bytes(),
                    }),
                    Event::File { name, filename } => out.push(Part {
                        name,
                        filename: Some(filename),
                        data: Vec::new(),
                    }),
                    Event::Data(d) => out.last_mut().unwrap().data.extend(d),
                    Event::End => {}
                }
            }
            rest = &rest[n..];
        }
        Ok(s.done().then_some(out))
    }

    #[test]
    fn a_streamed_body_gives_what_the_whole_one_does_however_it_is_cut() {
        let file = "site,room\r\nlyon,a\r\n--not-the-boundary\r\n------WebKitFormBoundaryX";
        let whole = parts(TYPE, &body(file)).unwrap();
        for size in [1, 2, 3, 7, 40, 41, 64, 1000] {
            assert_eq!(
                streamed(&body(file), &[size]).unwrap().as_ref(),
                Some(&whole),
                "pieces of {size}"
            );
        }
        // A cut body never ends.
        let mut cut = body(file);
        cut.truncate(cut.len() - 30);
        assert_eq!(streamed(&cut, &[5]), Ok(None));
    }

    #[test]
    fn a_streamed_body_is_refused_when_not_multipart_or_its_fields_too_large() {
        assert!(Stream::new("application/x-www-form-urlencoded").is_none());
        assert_eq!(streamed(b"garbage", &[3]), Err(StreamError::Malformed));
        let big = format!(
            "------WebKitFormBoundaryX1\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n{}",
            "x".repeat(MAX_TEXT + 1)
        );
        assert_eq!(
            streamed(big.as_bytes(), &[4096]),
            Err(StreamError::TooLarge)
        );
    }

    proptest::proptest! {
        /// Any valid body cut anywhere: the same parts as read whole.
        #[test]
        fn streamed_bodies_match_whole_ones(
            file in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            sizes in proptest::collection::vec(1usize..80, 1..5),
        ) {
            let file = String::from_utf8_lossy(&file).into_owned();
            let whole = parts(TYPE, &body(&file));
            proptest::prop_assert_eq!(streamed(&body(&file), &sizes).unwrap(), whole);
        }

        /// Any change to a valid body: events or an error, never a panic.
        #[test]
        fn mutated_streams_never_panic(
            edits in proptest::collection::vec(proptest::prelude::any::<(u8, usize, usize)>()
                .prop_map(image_tools::mutation::Edit::from), 1..6),
            size in 1usize..50,
        ) {
            let _ = streamed(&image_tools::mutation::mutate(&body("a,b\r\n"), &edits), &[size]);
        }
    }
}
