//! Calendars as spreadsheets export them (the files under `tests/fixtures/`) parse to exactly the
//! sessions they hold (`excel-fr.csv` is imported end to end too: tests/e2e/admin_api.rs).

#![allow(clippy::unwrap_used)]

use nightcast_controller::calendar::{csv, Row, When};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn row(line: usize, f: [&str; 4], start: &str, end: &str) -> Row {
    Row {
        line,
        site: f[0].into(),
        room: f[1].into(),
        master: f[2].into(),
        version: f[3].into(),
        start: When::Local(start.parse().unwrap()),
        end: When::Local(end.parse().unwrap()),
    }
}

#[test]
fn excel_csv_utf8_with_its_bom_commas_quotes_and_crlf() {
    let text = fixture("excel-utf8.csv");
    assert!(
        text.starts_with('\u{feff}') && text.contains("\r\n"),
        "the fixture lost its BOM or CRLF"
    );
    assert_eq!(
        csv::parse(&text).unwrap(),
        [
            row(
                2,
                ["lyon", "Lyon, bâtiment A", "win10", "1"],
                "2030-01-07T08:30",
                "2030-01-07T17:00"
            ),
            row(
                3,
                ["lyon", "salle-1", "win \"pro\"", "2"],
                "2030-01-08T09:00",
                "2030-01-08T12:30"
            ),
        ]
    );
}

#[test]
fn french_excel_with_semicolons_french_headers_and_dates() {
    let text = fixture("excel-fr.csv");
    assert!(text.contains("\r\n"), "the fixture lost its CRLF");
    assert_eq!(
        csv::parse(&text).unwrap(),
        [
            row(
                2,
                ["lyon", "salle-1", "win10", "1"],
                "2030-02-04T08:30",
                "2030-02-04T17:00"
            ),
            row(
                3,
                ["lyon", "salle-2", "win10", "1"],
                "2030-02-05T09:15",
                "2030-02-05T12:00"
            ),
        ]
    );
}
