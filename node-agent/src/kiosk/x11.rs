//! The kiosk's X shell: the agent as the X server's window manager and status page.
//!
//! [`Kiosk::start`] connects to the NUC's X server (a bare `Xorg`, or `Xvfb` in tests), becomes
//! its window manager (it takes the root window's substructure redirect: it fails if another
//! client has it) and creates the status page, a full-screen window of its own. A thread then:
//! - lays every window another client maps (QEMU's SDL window) out over the whole screen, with
//!   no border, and keeps it there: a client's request to move or resize it (QEMU's hotkey that
//!   leaves full screen, a guest changing resolution) is answered with the full screen again, so
//!   nothing the trainee presses shows anything but the guest;
//! - shows what it was last told ([`Kiosk::show`]): the guest (the page unmapped, the keyboard
//!   focus given to QEMU's window) or the status page (raised above everything, drawn from
//!   [`super::layout`] with the 8 x 8 font scaled up; the pointer hidden over it).
//!
//! Nothing here decides what to show: that is [`super::screen`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ChangeWindowAttributesAux, ConfigureNotifyEvent, ConfigureWindowAux, ConnectionExt as _,
    CreateGCAux, CreateWindowAux, EventMask, ImageFormat, InputFocus, Rectangle, StackMode,
    Visualtype, Window, WindowClass, CONFIGURE_NOTIFY_EVENT,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::{COPY_DEPTH_FROM_PARENT, CURRENT_TIME, NONE};

use super::{glyph_rows, layout, Screen, Style};

#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    #[error("cannot open X display {display:?}: {reason}")]
    Connect { display: String, reason: String },
    #[error("X display {display:?} already has a window manager: the kiosk must be its only one")]
    OtherWindowManager { display: String },
    #[error("X display {display:?}: {reason}")]
    X { display: String, reason: String },
}

/// What the X thread reports.
#[derive(Debug, Default)]
struct Shared {
    /// Windows of other clients (QEMU's), mapped and laid out full screen.
    guest_windows: usize,
    /// The thread ended on this error (the X server went away).
    error: Option<String>,
}

/// The NUC's screen, run by a thread of its own; dropping it closes the status page.
#[derive(Debug)]
pub struct Kiosk {
    display: String,
    tx: Option<mpsc::Sender<Screen>>,
    shared: Arc<Mutex<Shared>>,
    shown: Option<Screen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Kiosk {
    /// Takes X display `display` (e.g. `:0`) as its window manager and shows a blank status
    /// page until told otherwise.
    pub fn start(display: &str) -> Result<Kiosk, KioskError> {
        let x = |e: &dyn std::fmt::Display| KioskError::X {
            display: display.to_owned(),
            reason: e.to_string(),
        };
        let (conn, screen_num) =
            x11rb::connect(Some(display)).map_err(|e| KioskError::Connect {
                display: display.to_owned(),
                reason: e.to_string(),
            })?;
        let wm = Wm::new(conn, screen_num, display).map_err(|e| match e {
            WmSetupError::Other => KioskError::OtherWindowManager {
                display: display.to_owned(),
            },
            WmSetupError::X(reason) => x(&reason),
        })?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop, display) = (shared.clone(), stop.clone(), display.to_owned());
            std::thread::Builder::new()
                .name("kiosk".into())
                .spawn(move || wm.run(rx, &shared, &stop, &display))
                .map_err(|e| x(&e))?
        };
        let x_display = display;
        tracing::info!(x_display, "kiosk: the agent manages the screen");
        Ok(Kiosk {
            display: display.to_owned(),
            tx: Some(tx),
            shared,
            shown: None,
            stop,
            thread: Some(thread),
        })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// Shows `screen` from now on (nothing is redrawn if it did not change).
    pub fn show(&mut self, screen: Screen) {
        if self.shown.as_ref() == Some(&screen) {
            return;
        }
        if let Some(tx) = &self.tx {
            if tx.send(screen.clone()).is_ok() {
                self.shown = Some(screen);
            }
        }
    }

    /// How many windows of other clients (QEMU's) are on the screen, laid out full screen.
    pub fn guest_windows(&self) -> usize {
        self.shared.lock().map_or(0, |s| s.guest_windows)
    }

    /// Why the kiosk stopped, if it did (the X server went away): start a new one.
    pub fn failed(&self) -> Option<String> {
        self.shared.lock().ok().and_then(|s| s.error.clone())
    }
}

impl Drop for Kiosk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum WmSetupError {
    /// Another client is the window manager.
    Other,
    X(String),
}

/// Pixel values of the page's colours on this screen.
#[derive(Debug)]
struct Colours {
    background: u32,
    text: u32,
    ready: u32,
    waiting: u32,
}

struct Wm {
    conn: RustConnection,
    root: Window,
    width: u16,
    height: u16,
    page: Window,
    gc: u32,
    colours: Colours,
    /// Other clients' top-level windows that are mapped, the last mapped last.
    clients: Vec<Window>,
    screen: Screen,
}

type XResult<T> = Result<T, String>;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `(r, g, b)` as a pixel of a true-colour `visual`.
fn pixel(visual: &Visualtype, (r, g, b): (u8, u8, u8)) -> u32 {
    let put = |mask: u32, v: u8| {
        if mask == 0 {
            return 0;
        }
        let shift = mask.trailing_zeros();
        let bits = (mask >> shift).count_ones();
        ((u32::from(v) >> (8 - bits.min(8))) << shift) & mask
    };
    put(visual.red_mask, r) | put(visual.green_mask, g) | put(visual.blue_mask, b)
}

fn root_visual(conn: &RustConnection, screen_num: usize) -> Option<Visualtype> {
    let screen = conn.setup().roots.get(screen_num)?;
    screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual)
        .copied()
}

/// The page's background: a dark blue, unlike any console (black) or firmware screen.
pub const BACKGROUND: (u8, u8, u8) = (0x1d, 0x3b, 0x5c);
const TEXT: (u8, u8, u8) = (0xf2, 0xf2, 0xf2);
const READY: (u8, u8, u8) = (0x5c, 0xd6, 0x7a);
const WAITING: (u8, u8, u8) = (0xff, 0xc1, 0x4d);

impl Wm {
    fn new(conn: RustConnection, screen_num: usize, display: &str) -> Result<Wm, WmSetupError> {
        let x = |e: &dyn std::fmt::Display| WmSetupError::X(e.to_string());
        let screen = conn
            .setup()
            .roots
            .get(screen_num)
            .ok_or_else(|| x(&format!("no screen {screen_num}")))?
            .clone();
        let visual = root_visual(&conn, screen_num)
            .ok_or_else(|| x(&"the root window's visual is not listed"))?;
        let colours = Colours {
            background: pixel(&visual, BACKGROUND),
            text: pixel(&visual, TEXT),
            ready: pixel(&visual, READY),
            waiting: pixel(&visual, WAITING),
        };
        let redirect = conn
            .change_window_attributes(
                screen.root,
                &ChangeWindowAttributesAux::new()
                    .event_mask(EventMask::SUBSTRUCTURE_REDIRECT | EventMask::SUBSTRUCTURE_NOTIFY),
            )
            .map_err(|e| x(&e))?;
        if redirect.check().is_err() {
            return Err(WmSetupError::Other);
        }
        // A cursor that shows nothing: over the page and the bare root window.
        let blank = conn.generate_id().map_err(|e| x(&e))?;
        let cursor = conn.generate_id().map_err(|e| x(&e))?;
        conn.create_pixmap(1, blank, screen.root, 1, 1)
            .map_err(|e| x(&e))?;
        conn.create_cursor(cursor, blank, blank, 0, 0, 0, 0, 0, 0, 0, 0)
            .map_err(|e| x(&e))?;
        conn.change_window_attributes(
            screen.root,
            &ChangeWindowAttributesAux::new().cursor(cursor),
        )
        .map_err(|e| x(&e))?;
        let page = conn.generate_id().map_err(|e| x(&e))?;
        conn.create_window(
            COPY_DEPTH_FROM_PARENT,
            page,
            screen.root,
            0,
            0,
            screen.width_in_pixels,
            screen.height_in_pixels,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new()
                .background_pixel(colours.background)
                .override_redirect(1)
                .cursor(cursor)
                .event_mask(EventMask::EXPOSURE),
        )
        .map_err(|e| x(&e))?;
        let gc = conn.generate_id().map_err(|e| x(&e))?;
        conn.create_gc(gc, page, &CreateGCAux::new().foreground(colours.text))
            .map_err(|e| x(&e))?;
        conn.flush().map_err(|e| x(&e))?;
        let x_display = display;
        tracing::debug!(
            x_display,
            width = screen.width_in_pixels,
            height = screen.height_in_pixels,
            "kiosk screen"
        );
        let mut wm = Wm {
            conn,
            root: screen.root,
            width: screen.width_in_pixels,
            height: screen.height_in_pixels,
            page,
            gc,
            colours,
            clients: Vec::new(),
            screen: Screen::Page(super::Page { lines: Vec::new() }),
        };
        wm.restack().map_err(|e| x(&e))?;
        Ok(wm)
    }

    fn run(
        mut self,
        rx: mpsc::Receiver<Screen>,
        shared: &Mutex<Shared>,
        stop: &AtomicBool,
        display: &str,
    ) {
        let result = (|| -> XResult<()> {
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(screen) => {
                        if screen != self.screen {
                            self.screen = screen;
                            self.restack()?;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
                }
                while let Some(event) = self.conn.poll_for_event().map_err(s)? {
                    self.handle(event)?;
                }
                self.conn.flush().map_err(s)?;
                if let Ok(mut sh) = shared.lock() {
                    sh.guest_windows = self.clients.len();
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let x_display = display;
            tracing::error!(x_display, error = %e, "kiosk: lost the X display");
            if let Ok(mut sh) = shared.lock() {
                sh.error = Some(e);
                sh.guest_windows = 0;
            }
        }
    }

    /// Lays `w` out over the whole screen, no border.
    fn fit(&self, w: Window) -> XResult<()> {
        self.conn
            .configure_window(
                w,
                &ConfigureWindowAux::new()
                    .x(0)
                    .y(0)
                    .width(u32::from(self.width))
                    .height(u32::from(self.height))
                    .border_width(0),
            )
            .map_err(s)?;
        Ok(())
    }

    fn handle(&mut self, event: Event) -> XResult<()> {
        match event {
            Event::MapRequest(e) => {
                self.fit(e.window)?;
                self.conn.map_window(e.window).map_err(s)?;
                self.clients.retain(|&w| w != e.window);
                self.clients.push(e.window);
                self.restack()?;
            }
            Event::MapNotify(e) if e.window != self.page && !self.clients.contains(&e.window) => {
                // Mapped without asking (override-redirect): laid out all the same.
                self.fit(e.window)?;
                self.clients.push(e.window);
                self.restack()?;
            }
            Event::ConfigureRequest(e) => {
                // Whatever was asked, the window stays full screen; the client is told so.
                self.fit(e.window)?;
                let notify = ConfigureNotifyEvent {
                    response_type: CONFIGURE_NOTIFY_EVENT,
                    sequence: 0,
                    event: e.window,
                    window: e.window,
                    above_sibling: NONE,
                    x: 0,
                    y: 0,
                    width: self.width,
                    height: self.height,
                    border_width: 0,
                    override_redirect: false,
                };
                self.conn
                    .send_event(false, e.window, EventMask::STRUCTURE_NOTIFY, notify)
                    .map_err(s)?;
            }
            Event::ConfigureNotify(e)
                if self.clients.contains(&e.window)
                    && (e.x != 0
                        || e.y != 0
                        || e.width != self.width
                        || e.height != self.height) =>
            {
                self.fit(e.window)?;
            }
            Event::UnmapNotify(e) => {
                self.clients.retain(|&w| w != e.window);
            }
            Event::DestroyNotify(e) => {
                self.clients.retain(|&w| w != e.window);
            }
            Event::Expose(e) if e.window == self.page && e.count == 0 => self.draw()?,
            // Errors of requests on windows that went away meanwhile (a focus given to a window
            // QEMU just destroyed): nothing to do.
            _ => {}
        }
        Ok(())
    }

    /// Puts what is to be shown on top, with the keyboard focus.
    fn restack(&mut self) -> XResult<()> {
        match &self.screen {
            Screen::Guest => {
                self.conn.unmap_window(self.page).map_err(s)?;
                match self.clients.last() {
                    Some(&w) => {
                        self.conn
                            .configure_window(
                                w,
                                &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE),
                            )
                            .map_err(s)?;
                        self.conn
                            .set_input_focus(InputFocus::POINTER_ROOT, w, CURRENT_TIME)
                            .map_err(s)?;
                    }
                    None => {
                        self.conn
                            .set_input_focus(InputFocus::POINTER_ROOT, self.root, CURRENT_TIME)
                            .map_err(s)?;
                    }
                }
            }
            Screen::Page(_) => {
                self.conn.map_window(self.page).map_err(s)?;
                self.conn
                    .configure_window(
                        self.page,
                        &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE),
                    )
                    .map_err(s)?;
                // The keyboard goes nowhere while the page shows (a VM booted to check a new
                // master gets no keys).
                self.conn
                    .set_input_focus(InputFocus::POINTER_ROOT, self.page, CURRENT_TIME)
                    .map_err(s)?;
                self.draw()?;
            }
        }
        self.conn.flush().map_err(s)
    }

    fn draw(&self) -> XResult<()> {
        let Screen::Page(page) = &self.screen else {
            return Ok(());
        };
        self.conn
            .clear_area(false, self.page, 0, 0, self.width, self.height)
            .map_err(s)?;
        for line in layout(page, i32::from(self.width), i32::from(self.height)) {
            let colour = match line.style {
                Style::Title | Style::Text => self.colours.text,
                Style::Ready => self.colours.ready,
                Style::Waiting => self.colours.waiting,
            };
            self.conn
                .change_gc(
                    self.gc,
                    &x11rb::protocol::xproto::ChangeGCAux::new().foreground(colour),
                )
                .map_err(s)?;
            let mut rects = Vec::new();
            for (i, c) in line.text.chars().enumerate() {
                let left = line.x + i as i32 * super::CELL * line.scale;
                for (row, col, len) in glyph_rows(c) {
                    rects.push(Rectangle {
                        x: clamp16(left + col * line.scale),
                        y: clamp16(line.y + row * line.scale),
                        width: clamp16(len * line.scale) as u16,
                        height: clamp16(line.scale) as u16,
                    });
                }
            }
            for chunk in rects.chunks(4096) {
                self.conn
                    .poly_fill_rectangle(self.page, self.gc, chunk)
                    .map_err(s)?;
            }
        }
        self.conn.flush().map_err(s)
    }
}

fn clamp16(v: i32) -> i16 {
    v.clamp(0, i32::from(i16::MAX)) as i16
}

/// An RGB picture of the screen (3 bytes a pixel, rows top to bottom).
#[derive(Clone, Debug)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// The size in pixels of X display `display`'s screen: what a guest shown on it should take as
/// its own screen's size.
pub fn screen_size(display: &str) -> Result<(u32, u32), KioskError> {
    let (conn, screen_num) = x11rb::connect(Some(display)).map_err(|e| KioskError::Connect {
        display: display.to_owned(),
        reason: e.to_string(),
    })?;
    let screen = conn
        .setup()
        .roots
        .get(screen_num)
        .ok_or_else(|| KioskError::X {
            display: display.to_owned(),
            reason: "no screen".into(),
        })?;
    Ok((
        u32::from(screen.width_in_pixels),
        u32::from(screen.height_in_pixels),
    ))
}

/// A screenshot of X display `display`'s root window, for tests and for support: what the
/// trainee sees.
pub fn screenshot(display: &str) -> Result<Rgb, KioskError> {
    let x = |e: &dyn std::fmt::Display| KioskError::X {
        display: display.to_owned(),
        reason: e.to_string(),
    };
    let (conn, screen_num) = x11rb::connect(Some(display)).map_err(|e| KioskError::Connect {
        display: display.to_owned(),
        reason: e.to_string(),
    })?;
    let screen = conn
        .setup()
        .roots
        .get(screen_num)
        .ok_or_else(|| x(&"no screen"))?
        .clone();
    let visual = root_visual(&conn, screen_num).ok_or_else(|| x(&"no root visual"))?;
    let (w, h) = (screen.width_in_pixels, screen.height_in_pixels);
    let image = conn
        .get_image(ImageFormat::Z_PIXMAP, screen.root, 0, 0, w, h, !0)
        .map_err(|e| x(&e))?
        .reply()
        .map_err(|e| x(&e))?;
    let n = usize::from(w) * usize::from(h);
    if image.data.len() < n * 4 {
        return Err(x(&format!(
            "{} bytes for {w}x{h}: only 32 bits a pixel is read",
            image.data.len()
        )));
    }
    let get = |p: u32, mask: u32| {
        if mask == 0 {
            return 0;
        }
        let shift = mask.trailing_zeros();
        let bits = (mask >> shift).count_ones().min(8);
        (((p & mask) >> shift) << (8 - bits)) as u8
    };
    let mut data = Vec::with_capacity(n * 3);
    for px in image.data.chunks_exact(4).take(n) {
        let p = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
        data.extend([
            get(p, visual.red_mask),
            get(p, visual.green_mask),
            get(p, visual.blue_mask),
        ]);
    }
    Ok(Rgb {
        width: u32::from(w),
        height: u32::from(h),
        data,
    })
}
