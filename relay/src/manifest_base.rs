//! Which manifest the relay holds a new version's manifest is asked against (`GetManifestAgainst`):
//! the newest other version of the same master it keeps, newest by version, numbers compared as
//! numbers (`9` before `10`, `2.9` before `2.10`). Pure.

use std::cmp::Ordering;

use image_tools::wire::MasterRef;

/// The base for `want` among `kept`, if any version of its master is there.
pub fn choose<'a>(kept: &[&'a MasterRef], want: &MasterRef) -> Option<&'a MasterRef> {
    kept.iter()
        .copied()
        .filter(|m| m.name == want.name && m.version != want.version)
        .max_by(|a, b| by_version(a.version.as_str(), b.version.as_str()))
}

/// Versions in natural order: runs of digits compare as numbers, the rest byte by byte.
fn by_version(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let (na, nb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let o = na.len().cmp(&nb.len()).then(na.cmp(nb));
                if o != Ordering::Equal {
                    return o;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&str, &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    (std::str::from_utf8(&s[..n]).unwrap_or(""), &s[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, version: &str) -> MasterRef {
        MasterRef::new(name, version).unwrap()
    }

    #[test]
    fn the_newest_other_version_of_the_same_master_is_the_base() {
        let kept = [
            m("win10", "9"),
            m("win10", "10"),
            m("win11", "12"),
            m("win10", "11"),
        ];
        let kept: Vec<&MasterRef> = kept.iter().collect();
        assert_eq!(choose(&kept, &m("win10", "11")), Some(&m("win10", "10")));
        assert_eq!(choose(&kept, &m("win10", "12")), Some(&m("win10", "11")));
        assert_eq!(choose(&kept, &m("ubuntu", "1")), None);
        assert_eq!(choose(&kept[..1], &m("win10", "9")), None);
    }

    #[test]
    fn versions_compare_numbers_as_numbers() {
        let mut v = [
            "2.10",
            "2.9",
            "10",
            "9",
            "2024-12-01",
            "2024-11-30",
            "b",
            "a",
            "09",
        ];
        v.sort_by(|a, b| by_version(a, b));
        assert_eq!(
            v,
            [
                "2.9",
                "2.10",
                "9",
                "09",
                "10",
                "2024-11-30",
                "2024-12-01",
                "a",
                "b"
            ]
        );
    }
}
