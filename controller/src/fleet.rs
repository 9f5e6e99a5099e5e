//! The fleet as the DSI reads it: what deserves a look in a node's last report, in words.
//! The rows come from `db::Db::fleet`; the wording lives here, apart from the queries.

use crate::db::FleetRow;

/// What the DSI should look at, from the last report; empty when all is well.
pub fn attention(row: &FleetRow) -> String {
    let f = |k: &str| row.status.get(k).map(String::as_str).unwrap_or("");
    let n = |k: &str| f(k).parse::<u64>().unwrap_or(0);
    let mut out = Vec::new();
    if let Some(why) = &row.waiting {
        out.push(format!("waits for the DSI: {why}"));
    }
    if f("disk_full") == "true" {
        out.push("DISK FULL: fetching stopped".to_owned());
    }
    if n("pinned_over_quota") > 0 {
        out.push(format!(
            "QUOTA TOO SMALL by {} MB for the scheduled masters",
            n("pinned_over_quota").div_ceil(1_000_000)
        ));
    }
    if !f("agents_not_answering").is_empty() {
        out.push(format!(
            "woken, not answering: {}",
            f("agents_not_answering")
        ));
    }
    let missing: Vec<String> = row
        .status
        .iter()
        .filter_map(|(k, v)| {
            let m = k.strip_prefix("missing ")?;
            let bytes = v.parse::<u64>().ok().filter(|&b| b > 0)?;
            Some(format!("{m}: {} MB to fetch", bytes.div_ceil(1_000_000)))
        })
        .collect();
    out.extend(missing);
    if !f("last_error").is_empty() {
        out.push(format!("last error: {}", f("last_error")));
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &[(&str, &str)], waiting: Option<&str>) -> FleetRow {
        FleetRow {
            site: "lyon".into(),
            node: "relay-1".into(),
            role: "relay".into(),
            enrolled_at: 0,
            last_seen: Some(0),
            holding: String::new(),
            status: status
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            seat: None,
            waiting: waiting.map(str::to_owned),
        }
    }

    #[test]
    fn all_well_says_nothing() {
        assert_eq!(
            attention(&row(
                &[("disk_full", "false"), ("missing win10 1", "0")],
                None
            )),
            ""
        );
    }

    #[test]
    fn each_problem_is_said_in_order() {
        let said = attention(&row(
            &[
                ("disk_full", "true"),
                ("pinned_over_quota", "1500001"),
                ("agents_not_answering", "nuc-3"),
                ("missing win10 2", "2000000"),
                ("last_error", "controller unreachable"),
            ],
            Some("2 seats are silent"),
        ));
        assert_eq!(
            said,
            "waits for the DSI: 2 seats are silent; DISK FULL: fetching stopped; \
             QUOTA TOO SMALL by 2 MB for the scheduled masters; woken, not answering: nuc-3; \
             win10 2: 2 MB to fetch; last error: controller unreachable"
        );
    }
}
