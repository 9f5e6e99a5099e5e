//! A `TZID` as the applications write it, to the IANA zone it means.
//!
//! In order: an IANA name (`Europe/Paris`, Google, Thunderbird); a `VTIMEZONE` of the file whose
//! `X-LIC-LOCATION` names one; a Windows name (`Romance Standard Time`, Outlook) through
//! [`WINDOWS`], from CLDR's `windowsZones.xml` (the zone of territory `001`); an IANA name at the
//! end of a prefixed one (`/mozilla.org/20050126_1/Europe/Paris`, older Thunderbird).
//!
//! A zone known by name takes its transitions from the IANA database, which knows every year's
//! rules where the file's block gives only the current ones. Only a `TZID` none of these know
//! (Outlook's display names, `(UTC+01:00) Brussels, Copenhagen, Madrid, Paris`) is read by its
//! `VTIMEZONE`'s own rules (`super::super::vtimezone`); one without a `VTIMEZONE` is refused.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::vtimezone::{Block, Rules};
use super::super::{Error, Zone};

/// Windows time zone names to IANA zones (CLDR `windowsZones.xml`, territory `001`): Europe,
/// the Mediterranean, and the zones of the Americas, Africa and Asia a French or European
/// organisation meets. Case does not matter.
const WINDOWS: &[(&str, &str)] = &[
    ("Romance Standard Time", "Europe/Paris"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("Kaliningrad Standard Time", "Europe/Kaliningrad"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Belarus Standard Time", "Europe/Minsk"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Azores Standard Time", "Atlantic/Azores"),
    ("Cape Verde Standard Time", "Atlantic/Cape_Verde"),
    ("Morocco Standard Time", "Africa/Casablanca"),
    ("W. Central Africa Standard Time", "Africa/Lagos"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("E. Africa Standard Time", "Africa/Nairobi"),
    ("Egypt Standard Time", "Africa/Cairo"),
    ("Libya Standard Time", "Africa/Tripoli"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("Jordan Standard Time", "Asia/Amman"),
    ("Middle East Standard Time", "Asia/Beirut"),
    ("Arab Standard Time", "Asia/Riyadh"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Mauritius Standard Time", "Indian/Mauritius"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("India Standard Time", "Asia/Calcutta"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time", "America/Denver"),
    ("Central Standard Time", "America/Chicago"),
    ("Central Standard Time (Mexico)", "America/Mexico_City"),
    ("Canada Central Standard Time", "America/Regina"),
    ("Eastern Standard Time", "America/New_York"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("SA Western Standard Time", "America/La_Paz"),
    ("SA Eastern Standard Time", "America/Cayenne"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Buenos_Aires"),
    ("Pacific SA Standard Time", "America/Santiago"),
    ("UTC", "Etc/UTC"),
];

/// The zones a file defines (`VTIMEZONE`), by `TZID`: the IANA name they give, and their rules
/// (or why these cannot be read: said only if a time needs them).
#[derive(Debug, Default)]
pub(super) struct Zones {
    located: HashMap<String, String>,
    rules: HashMap<String, Result<Arc<Rules>, Error>>,
}

impl Zones {
    /// A `VTIMEZONE`: its rules, and the IANA zone its `X-LIC-LOCATION` names, if any.
    pub fn define(&mut self, block: Block, location: Option<String>) {
        let tzid = block.tzid.trim().to_owned();
        if let Some(location) = location {
            self.located
                .insert(tzid.clone(), location.trim().to_owned());
        }
        self.rules.insert(tzid, Rules::read(&block).map(Arc::new));
    }

    /// The zone `tzid` means, for the property `name` at `line`, or why it is refused.
    pub fn zone(&self, name: &str, tzid: &str, line: usize) -> Result<Zone, Error> {
        match self.iana(tzid) {
            Some(iana) => Ok(Zone::Iana(iana)),
            None => match self.rules.get(tzid.trim()) {
                Some(Ok(rules)) => Ok(Zone::Rules(rules.clone())),
                Some(Err(e)) => Err(Error::new(
                    e.line,
                    format!(
                        "the VTIMEZONE of {tzid:?} (used by {name} at line {line}): {}",
                        e.what
                    ),
                )),
                None => Err(Error::new(
                    line,
                    format!(
                        "{name}: unknown time zone {tzid:?}: neither an IANA name (Europe/Paris), \
                         nor a Windows name this controller knows (Romance Standard Time), nor \
                         the TZID of a VTIMEZONE in the file"
                    ),
                )),
            },
        }
    }

    /// The IANA zone `tzid` names, if it names one.
    fn iana(&self, tzid: &str) -> Option<String> {
        let tzid = tzid.trim();
        if known(tzid) {
            return Some(tzid.to_owned());
        }
        if let Some(location) = self.located.get(tzid).filter(|l| known(l)) {
            return Some(location.clone());
        }
        if let Some((_, iana)) = WINDOWS.iter().find(|(w, _)| w.eq_ignore_ascii_case(tzid)) {
            return Some((*iana).to_owned());
        }
        tzid.match_indices('/')
            .map(|(i, _)| &tzid[i + 1..])
            .find(|s| s.contains('/') && known(s))
            .map(str::to_owned)
    }
}

fn known(name: &str) -> bool {
    !name.is_empty() && jiff::tz::TimeZone::get(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_windows_name_maps_to_a_zone_this_machine_knows() {
        for (windows, iana) in WINDOWS {
            assert!(known(iana), "{windows} -> {iana}");
        }
    }

    #[test]
    fn names_as_outlook_thunderbird_and_google_write_them() {
        let mut zones = Zones::default();
        let block = Block {
            line: 3,
            tzid: "Custom Paris".into(),
            observances: vec![],
        };
        zones.define(block, Some("Europe/Paris".into()));
        for (tzid, iana) in [
            ("Europe/Paris", "Europe/Paris"),
            ("Romance Standard Time", "Europe/Paris"),
            ("w. europe standard time", "Europe/Berlin"),
            ("/mozilla.org/20050126_1/Europe/Paris", "Europe/Paris"),
            ("Custom Paris", "Europe/Paris"),
            ("UTC", "UTC"),
        ] {
            assert_eq!(
                zones.zone("DTSTART", tzid, 9),
                Ok(Zone::from(iana)),
                "{tzid}"
            );
        }
        let e = zones.zone("DTSTART", "Europe/Lyon", 9).unwrap_err();
        assert!(
            e.line == 9
                && e.what
                    .contains("DTSTART: unknown time zone \"Europe/Lyon\""),
            "{e}"
        );
    }
}
