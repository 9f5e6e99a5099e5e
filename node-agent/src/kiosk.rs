//! The NUC's screen as a kiosk: during a session the seat's VM fills it (QEMU's SDL window, laid
//! out full screen by [`x11`], the agent being the X server's only window manager); between
//! sessions, and while a master is being swapped in or checked, a plain status page (room, seat,
//! next session, "Ready" or what the NUC waits for), never a console.
//!
//! Pure here: what the screen shows given what the station knows ([`screen`]), and where each
//! letter of the status page goes ([`layout`], [`glyph_rows`]). The X drawing is [`x11`], a thin
//! shell over these.

use jiff::civil::{Date, DateTime};

pub mod x11;

/// What the station knows, for the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// This NUC's seat (room, seat); `None` for a spare.
    pub seat: Option<(String, String)>,
    /// This NUC's id (shown on a spare).
    pub node: String,
    /// The site's local time now.
    pub now: DateTime,
    /// A session runs on this seat and its VM is running.
    pub guest_running: bool,
    /// The next session not yet started: its local start and its master ("name version").
    pub next: Option<(DateTime, String)>,
    /// What the NUC waits for before the next session can start, in words; `None`: ready.
    pub waiting_for: Option<String>,
}

/// What the screen shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screen {
    /// The seat's VM, full screen.
    Guest,
    /// The status page.
    Page(Page),
}

/// The status page: a few lines, the last one saying whether the seat is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub lines: Vec<Line>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Where the page is (room and seat): large.
    Title,
    Text,
    /// "Ready": large, green.
    Ready,
    /// What the NUC waits for: large, amber.
    Waiting,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub style: Style,
}

impl Line {
    fn new(text: impl Into<String>, style: Style) -> Line {
        Line {
            text: text.into(),
            style,
        }
    }
}

/// What the NUC waits for before the next session, from what the daemon knows: the station
/// being busy with the VM (`busy`: a reset, a trial boot), a session whose VM is not running
/// (yet), or, when the next session's master is not `ready` here, the agent's state (the master
/// being fetched or assembled). `None`: ready.
pub fn waiting_for(
    in_session: bool,
    busy: Option<&str>,
    ready: bool,
    state: &str,
) -> Option<String> {
    match busy {
        Some(busy) => Some(busy.to_owned()),
        None if in_session => Some("starting the workstation".to_owned()),
        None if ready => None,
        None => Some(state.to_owned()),
    }
}

/// The guest while its session runs, else the status page.
pub fn screen(f: &Facts) -> Screen {
    if f.guest_running {
        return Screen::Guest;
    }
    let mut lines = Vec::new();
    match &f.seat {
        Some((room, seat)) => {
            lines.push(Line::new(format!("Room {room}"), Style::Title));
            lines.push(Line::new(format!("Seat {seat}"), Style::Title));
        }
        None => {
            lines.push(Line::new("Spare workstation", Style::Title));
            lines.push(Line::new(f.node.clone(), Style::Text));
        }
    }
    lines.push(Line::new("", Style::Text));
    match &f.next {
        Some((start, master)) => lines.push(Line::new(
            format!("Next session: {} ({master})", when(start, f.now.date())),
            Style::Text,
        )),
        None if f.seat.is_some() => lines.push(Line::new("No session planned", Style::Text)),
        None => {}
    }
    lines.push(Line::new("", Style::Text));
    match &f.waiting_for {
        None => lines.push(Line::new("Ready", Style::Ready)),
        Some(what) => lines.push(Line::new(format!("Please wait: {what}"), Style::Waiting)),
    }
    Screen::Page(Page { lines })
}

/// `today 14:00`, `tomorrow 08:30`, or `Tue 2026-12-08 08:30`.
fn when(start: &DateTime, today: Date) -> String {
    let hm = format!("{:02}:{:02}", start.hour(), start.minute());
    let day = start.date();
    if day == today {
        format!("today {hm}")
    } else if today.tomorrow().ok() == Some(day) {
        format!("tomorrow {hm}")
    } else {
        format!("{} {day} {hm}", &format!("{:?}", day.weekday())[..3])
    }
}

/// One line of the page placed on the screen: its top-left corner and the size of a font pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub x: i32,
    pub y: i32,
    /// Screen pixels per font pixel (the font is 8 x 8).
    pub scale: i32,
    pub text: String,
    pub style: Style,
}

/// Font pixels per letter, each way.
pub const CELL: i32 = 8;

/// Where each line of `page` goes on a `width` x `height` screen: centred, large lines twice
/// the size of the others, every line made to fit the width, the block centred vertically.
pub fn layout(page: &Page, width: i32, height: i32) -> Vec<Placed> {
    let base = (height / (CELL * 24)).max(1);
    let sized: Vec<(i32, &Line)> = page
        .lines
        .iter()
        .map(|l| {
            let want = match l.style {
                Style::Text => base,
                Style::Title | Style::Ready | Style::Waiting => base * 2,
            };
            let chars = l.text.chars().count().max(1) as i32;
            let fits = (width * 9 / 10) / (chars * CELL);
            (want.min(fits).max(1), l)
        })
        .collect();
    let gap = |scale: i32| scale * CELL / 2;
    let total: i32 = sized.iter().map(|(s, _)| s * CELL + gap(*s)).sum();
    let mut y = ((height - total) / 2).max(0);
    let mut out = Vec::new();
    for (scale, line) in sized {
        let w = line.text.chars().count() as i32 * CELL * scale;
        out.push(Placed {
            x: ((width - w) / 2).max(0),
            y,
            scale,
            text: line.text.clone(),
            style: line.style,
        });
        y += scale * CELL + gap(scale);
    }
    out
}

/// The lit pixels of `c` in the 8 x 8 font, as runs on each row: (row, first column, length).
/// Characters the font lacks (outside ASCII and Latin-1) are drawn as `?`.
pub fn glyph_rows(c: char) -> Vec<(i32, i32, i32)> {
    let code = c as u32;
    let bitmap = if code < 128 {
        font8x8::legacy::BASIC_LEGACY[code as usize]
    } else if (0xa0..0x100).contains(&code) {
        font8x8::legacy::LATIN_LEGACY[(code - 0xa0) as usize]
    } else {
        font8x8::legacy::BASIC_LEGACY[b'?' as usize]
    };
    let mut runs = Vec::new();
    for (row, bits) in bitmap.iter().enumerate() {
        let mut col = 0;
        while col < 8 {
            if bits & (1 << col) == 0 {
                col += 1;
                continue;
            }
            let start = col;
            while col < 8 && bits & (1 << col) != 0 {
                col += 1;
            }
            runs.push((row as i32, start, col - start));
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn facts() -> Facts {
        Facts {
            seat: Some(("salle-1".into(), "poste-03".into())),
            node: "nuc-7".into(),
            now: date(2026, 12, 2).at(12, 40, 0, 0),
            guest_running: false,
            next: Some((date(2026, 12, 2).at(14, 0, 0, 0), "debian 2".into())),
            waiting_for: None,
        }
    }

    fn texts(s: &Screen) -> Vec<(String, Style)> {
        match s {
            Screen::Page(p) => p
                .lines
                .iter()
                .filter(|l| !l.text.is_empty())
                .map(|l| (l.text.clone(), l.style))
                .collect(),
            Screen::Guest => panic!("the guest, not the page"),
        }
    }

    #[test]
    fn the_guest_fills_the_screen_only_while_its_session_runs() {
        let f = Facts {
            guest_running: true,
            waiting_for: Some("anything".into()),
            ..facts()
        };
        assert_eq!(screen(&f), Screen::Guest);
        assert!(matches!(screen(&facts()), Screen::Page(_)));
    }

    #[test]
    fn between_sessions_the_page_names_the_seat_the_next_session_and_ready() {
        assert_eq!(
            texts(&screen(&facts())),
            [
                ("Room salle-1".into(), Style::Title),
                ("Seat poste-03".into(), Style::Title),
                ("Next session: today 14:00 (debian 2)".into(), Style::Text),
                ("Ready".into(), Style::Ready),
            ]
        );
    }

    #[test]
    fn the_page_says_what_the_nuc_waits_for() {
        let f = Facts {
            waiting_for: Some("checking the new master debian 2".into()),
            next: Some((date(2026, 12, 3).at(8, 30, 0, 0), "debian 2".into())),
            ..facts()
        };
        assert_eq!(
            texts(&screen(&f))[2..],
            [
                (
                    "Next session: tomorrow 08:30 (debian 2)".into(),
                    Style::Text
                ),
                (
                    "Please wait: checking the new master debian 2".into(),
                    Style::Waiting
                ),
            ]
        );
        let f = Facts {
            next: Some((date(2026, 12, 8).at(9, 5, 0, 0), "win7 3".into())),
            ..facts()
        };
        assert_eq!(
            texts(&screen(&f))[2].0,
            "Next session: Tue 2026-12-08 09:05 (win7 3)"
        );
        let f = Facts {
            next: None,
            ..facts()
        };
        assert_eq!(texts(&screen(&f))[2].0, "No session planned");
    }

    #[test]
    fn what_the_nuc_waits_for() {
        let ready = "ready for the next session (debian 1)";
        assert_eq!(waiting_for(false, None, true, ready), None);
        // Busy with the VM between sessions: said, even with the master ready.
        assert_eq!(
            waiting_for(
                false,
                Some("booting the new master once to check it"),
                true,
                ready
            ),
            Some("booting the new master once to check it".into())
        );
        // The next session's master is not here yet: what the preparation says.
        assert_eq!(
            waiting_for(false, None, false, "fetching debian 2"),
            Some("fetching debian 2".into())
        );
        // A session whose VM does not run (yet): never "Ready".
        assert_eq!(
            waiting_for(true, None, true, "in session (debian 1)"),
            Some("starting the workstation".into())
        );
    }

    #[test]
    fn a_spare_says_so_and_names_itself() {
        let f = Facts {
            seat: None,
            next: None,
            ..facts()
        };
        assert_eq!(
            texts(&screen(&f)),
            [
                ("Spare workstation".into(), Style::Title),
                ("nuc-7".into(), Style::Text),
                ("Ready".into(), Style::Ready),
            ]
        );
    }

    #[test]
    fn the_layout_is_centred_fits_the_width_and_does_not_overlap() {
        let Screen::Page(page) = screen(&facts()) else {
            panic!("page")
        };
        for (w, h) in [(1024, 768), (1920, 1080), (640, 480), (320, 200)] {
            let placed = layout(&page, w, h);
            assert_eq!(placed.len(), page.lines.len());
            let mut bottom = 0;
            for p in &placed {
                let pw = p.text.chars().count() as i32 * CELL * p.scale;
                assert!(p.x >= 0 && p.x + pw <= w, "{w}x{h}: {p:?} too wide");
                assert!(
                    (p.x + pw / 2 - w / 2).abs() <= p.scale,
                    "not centred: {p:?}"
                );
                assert!(p.y >= bottom, "{w}x{h}: {p:?} overlaps the line above");
                bottom = p.y + p.scale * CELL;
                assert!(bottom <= h, "{w}x{h}: {p:?} below the screen");
            }
            // Room and seat are larger than the next session's line.
            assert!(placed[0].scale > placed[3].scale, "{w}x{h}: {placed:?}");
        }
        // A long line is made smaller to fit, not cut.
        let long = Page {
            lines: vec![Line::new("x".repeat(300), Style::Waiting)],
        };
        let p = &layout(&long, 1024, 768)[0];
        assert_eq!(p.scale, 1);
        assert_eq!(p.text.len(), 300);
    }

    #[test]
    fn glyphs_are_the_font_bitmaps_as_runs() {
        assert!(glyph_rows(' ').is_empty());
        // 'I' in font8x8: rows of a centred vertical bar with serifs.
        let i = glyph_rows('I');
        assert!(!i.is_empty());
        assert!(i
            .iter()
            .all(|&(r, c, n)| (0..8).contains(&r) && c + n <= 8 && n > 0));
        // Runs are maximal: none touches the next on the same row.
        let all: Vec<_> = ('!'..='~').flat_map(glyph_rows).collect();
        assert!(all.iter().all(|&(_, c, n)| c >= 0 && c + n <= 8));
        assert!(!glyph_rows('é').is_empty());
        assert_eq!(glyph_rows('\u{4e2d}'), glyph_rows('?'));
    }
}
