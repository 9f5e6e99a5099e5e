//! The dates and times of a CSV calendar: ISO (`2026-12-01 08:30`, `2026-12-01T08:30:00`,
//! whatever `jiff` reads as a civil date and time) or French (`01/12/2026 8:30`), with a space or
//! a `T` between date and time and the hour on one or two digits (`8:30`, `08:30`, seconds
//! optional). No zone: the time is on the site's wall clock ([`When::Local`]), as it always was.

use crate::calendar::When;

/// What a date and time must look like, for error messages.
pub const FORMS: &str = "YYYY-MM-DD HH:MM or DD/MM/YYYY H:MM";

/// `text` as a floating time on the site's wall clock, or `None`.
pub fn local(text: &str) -> Option<When> {
    let text = text.trim();
    if let Ok(dt) = text.replace(' ', "T").parse::<jiff::civil::DateTime>() {
        return Some(When::Local(dt));
    }
    let (date, time) = text.split_once([' ', 'T'])?;
    let date = french_date(date).or_else(|| date.parse::<jiff::civil::Date>().ok())?;
    Some(When::Local(date.to_datetime(short_time(time.trim())?)))
}

/// `dd/mm/yyyy` (day and month on one or two digits, the year on four).
fn french_date(text: &str) -> Option<jiff::civil::Date> {
    let mut parts = text.split('/');
    let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || d.len() > 2 || m.len() > 2 {
        return None;
    }
    jiff::civil::Date::new(number(y)?, number(m)?, number(d)?).ok()
}

/// `H:MM`, `HH:MM`, or either with `:SS`.
fn short_time(text: &str) -> Option<jiff::civil::Time> {
    let mut parts = text.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next().unwrap_or("00"));
    if parts.next().is_some() || h.len() > 2 || m.len() != 2 || s.len() != 2 {
        return None;
    }
    jiff::civil::Time::new(number(h)?, number(m)?, number(s)?, 0).ok()
}

fn number<T: std::str::FromStr>(digits: &str) -> Option<T> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<When> {
        Some(When::Local(s.parse().unwrap()))
    }

    #[test]
    fn iso_and_french_forms_with_short_hours() {
        assert_eq!(local("2026-12-01 08:30"), at("2026-12-01T08:30"));
        assert_eq!(local("2026-12-01T08:30:15"), at("2026-12-01T08:30:15"));
        assert_eq!(local("2026-12-01 8:30"), at("2026-12-01T08:30"));
        assert_eq!(local("1/2/2026 8:30"), at("2026-02-01T08:30"));
        assert_eq!(local("01/02/2026T18:05:09"), at("2026-02-01T18:05:09"));
    }

    #[test]
    fn what_is_not_a_date_and_time_is_none() {
        for bad in [
            "",
            "01/02/2026",
            "31/02/2026 8:30",
            "01/02/26 8:30",
            "01/02/2026 8h30",
            "01/02/2026 8:3",
            "01/02/2026 +8:30",
            "01/02/2026 25:00",
            "2026-12-01 8:30pm",
            "01-02-2026 08:30",
        ] {
            assert_eq!(local(bad), None, "{bad}");
        }
    }
}
