//! Byte-level mutations of valid inputs, for the property tests of every parser of outside input
//! across the workspace (manifests, frames, tokens, calendars, configs, admin requests): a valid
//! input with a few bytes flipped, inserted, removed, copied or cut reaches deeper into a parser than
//! random bytes do. Pure and deterministic: the test framework draws the edits.
//!
//! An [`Edit`] is made from any `(u8, usize, usize)` (`Edit::from`), so a strategy is one line in
//! any crate, and positions are taken modulo the input's length, so every edit applies to every
//! input. The fuzz targets (`fuzz/`) need none of this: libFuzzer mutates by itself.

/// The property test of a configuration file's parser: `$parse` (text -> a `Result` whose error
/// is `Display`) accepts random text and mutations of `$example`, or refuses them with an error
/// naming one of `$keys` (`&[&str]`) or a line. Expands to a module `outside_input` holding two
/// proptests of 256 cases; the calling crate needs `proptest` (as a dev-dependency).
#[macro_export]
macro_rules! config_property_tests {
    ($parse:expr, $example:expr, $keys:expr $(,)?) => {
        mod outside_input {
            #[allow(unused_imports)]
            use super::*;
            use proptest::prelude::*;
            use $crate::mutation::{mutate_text, Edit};

            fn check(text: &str) -> Result<(), TestCaseError> {
                let keys: &[&str] = $keys;
                if let Err(e) = ($parse)(text) {
                    let e = format!("{e:#}");
                    prop_assert!(
                        e.contains("line ") || keys.iter().any(|k| e.contains(k)),
                        "{text:?}: {e}"
                    );
                }
                Ok(())
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(256))]

                #[test]
                fn random_text_parses_or_names_a_key_or_line(text in "\\PC{0,300}") {
                    check(&text)?;
                }

                #[test]
                fn mutated_examples_parse_or_name_a_key_or_line(
                    edits in proptest::collection::vec(
                        any::<(u8, usize, usize)>().prop_map(Edit::from),
                        1..6,
                    ),
                ) {
                    check(&mutate_text($example, &edits))?;
                }
            }
        }
    };
}

/// One change to a byte string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// XOR the byte at `at` with `mask` (never 0).
    Flip { at: usize, mask: u8 },
    /// Insert `byte` before `at`.
    Insert { at: usize, byte: u8 },
    /// Remove up to `len` bytes from `at`.
    Remove { at: usize, len: usize },
    /// Keep only the first `at` bytes.
    Truncate { at: usize },
    /// Copy up to `len` bytes from `from` and insert them before `to` (a line or field repeated).
    Copy { from: usize, len: usize, to: usize },
}

impl From<(u8, usize, usize)> for Edit {
    fn from((kind, a, b): (u8, usize, usize)) -> Edit {
        match kind % 5 {
            0 => Edit::Flip {
                at: a,
                mask: (b % 255) as u8 + 1,
            },
            1 => Edit::Insert {
                at: a,
                byte: b as u8,
            },
            2 => Edit::Remove {
                at: a,
                len: b % 16 + 1,
            },
            3 => Edit::Truncate { at: a },
            _ => Edit::Copy {
                from: a,
                len: b % 64 + 1,
                to: b / 64,
            },
        }
    }
}

impl Edit {
    /// Applies the edit to `bytes`; positions wrap around its length.
    pub fn apply(self, bytes: &mut Vec<u8>) {
        let n = bytes.len();
        let wrap = |i: usize| if n == 0 { 0 } else { i % n };
        match self {
            Edit::Flip { at, mask } if n > 0 => bytes[wrap(at)] ^= mask,
            Edit::Flip { .. } => {}
            Edit::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
            Edit::Remove { at, len } => {
                let at = wrap(at);
                bytes.drain(at..(at + len).min(n));
            }
            Edit::Truncate { at } => bytes.truncate(at % (n + 1)),
            Edit::Copy { from, len, to } => {
                let from = wrap(from);
                let piece = bytes[from..(from + len).min(n)].to_vec();
                let to = to % (n + 1);
                bytes.splice(to..to, piece);
            }
        }
    }
}

/// `bytes` with every edit applied in order.
pub fn mutate(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for e in edits {
        e.apply(&mut out);
    }
    out
}

/// `text` with every edit applied to its bytes, read back as UTF-8 (broken sequences replaced), for
/// parsers that take a `&str`.
pub fn mutate_text(text: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&mutate(text.as_bytes(), edits)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_applies_to_any_input_and_changes_what_it_says() {
        let base = b"site,room\nlyon,salle-1\n".to_vec();
        let flip = mutate(&base, &[Edit::Flip { at: 0, mask: 0x20 }]);
        assert_eq!(&flip[..4], b"Site");
        assert_eq!(mutate(&base, &[Edit::Truncate { at: 4 }]), b"site");
        assert_eq!(
            mutate(&base, &[Edit::Remove { at: 4, len: 5 }]),
            b"site\nlyon,salle-1\n"
        );
        assert_eq!(mutate(b"ab", &[Edit::Insert { at: 1, byte: b'-' }]), b"a-b");
        assert_eq!(
            mutate(
                b"ab\n",
                &[Edit::Copy {
                    from: 0,
                    len: 3,
                    to: 3
                }]
            ),
            b"ab\nab\n"
        );
        for kind in 0..5u8 {
            for input in [&b""[..], b"x", &base] {
                let mut bytes = input.to_vec();
                Edit::from((kind, usize::MAX, usize::MAX)).apply(&mut bytes);
                assert!(bytes.len() <= 2 * input.len() + 1);
            }
        }
        assert_eq!(mutate_text("é", &[Edit::Truncate { at: 1 }]), "\u{fffd}");
    }
}
