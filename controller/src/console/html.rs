//! HTML, written by hand: `esc` for every string that did not come from this file, the page's
//! frame, and the one style sheet (`CSS`, served as `/console.css`). No script anywhere.

use std::fmt::Write;

/// `text` made safe as HTML text or a quoted attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one URL path segment (ids are already safe; this is for anything else).
pub fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A whole page: `title` (text), the user bar (`who`: name and role, with the logout form and
/// its CSRF token) and `body` (HTML, already escaped).
/// `html` (a `page`) reloading itself every `secs` seconds.
pub fn refreshing(html: &str, secs: u32) -> String {
    html.replacen(
        "<meta charset=\"utf-8\">",
        &format!("<meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{secs}\">"),
        1,
    )
}

pub fn page(title: &str, who: Option<(&str, &str, &str)>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · nightcast</title><link rel=\"stylesheet\" href=\"/console.css\"></head><body>\
         <header><a class=\"brand\" href=\"/\">nightcast</a>",
        esc(title)
    );
    if let Some((name, role, csrf)) = who {
        out.push_str(
            "<nav><a href=\"/\">Board</a><a href=\"/fleet\">Fleet</a>\
             <a href=\"/calendar\">Calendar</a><a href=\"/masters\">Masters</a></nav>",
        );
        let _ = write!(
            out,
            "<form class=\"who\" method=\"post\" action=\"/logout\">{} <span class=\"role\">{}</span>\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form>",
            esc(name),
            esc(role),
            esc(csrf)
        );
    }
    let _ = writeln!(out, "</header><main>{body}</main></body></html>");
    out
}

/// The style sheet: small, no web font, no image.
pub const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:15px/1.4 system-ui,sans-serif;color:#1d2430;background:#f4f5f7}\
header{display:flex;justify-content:space-between;align-items:center;min-height:3.2em;padding:.4em 1.2em;background:#1d2430;color:#fff}\
header a.brand{color:#fff;font-weight:700;text-decoration:none;letter-spacing:.05em}\
.who{margin:0}.who .role{opacity:.7;margin-right:.8em}\
main{max-width:72em;margin:1.2em auto;padding:0 1em}\
h1{font-size:1.4em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
section.room{background:#fff;border-radius:6px;margin:0 0 1em;padding:.6em 1em;border-left:6px solid #9aa3af}\
section.late{border-left-color:#c62828}section.at_risk{border-left-color:#ef8f00}\
section.on_time{border-left-color:#2e7d32}section.ready{border-left-color:#2e7d32}\
section.room h2{margin:.2em 0 .4em}section.room h2 a{color:inherit}\
table{border-collapse:collapse;width:100%;table-layout:fixed}table.sessions th:nth-child(1){width:22%}table.sessions th:nth-child(2){width:14%}table.sessions th:nth-child(3){width:10em}\
th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid #e3e6ea;vertical-align:top}\
th{font-weight:600;color:#5b6573;font-size:.9em}\
.v{display:inline-block;padding:.05em .5em;border-radius:3px;font-weight:600;font-size:.9em;white-space:nowrap}\
.v.late{background:#fde0e0;color:#8e1b1b}.v.at_risk{background:#ffefd2;color:#7a4600}\
.v.on_time{background:#e0f2e3;color:#1e5b22}.v.ready{background:#e0f2e3;color:#1e5b22}\
.v.unknown{background:#eceff3;color:#394150}\
form.inline{display:inline}#sessions th:last-child{width:33em}#sessions td{overflow-wrap:break-word}#sessions input{font:inherit;width:10.5em}\
.today{font-weight:600}.muted{color:#6b7480}.err{color:#8e1b1b}\
form.login{background:#fff;max-width:22em;margin:3em auto;padding:1.4em;border-radius:6px}\
form.login label{display:block;margin:.6em 0 .2em}form.login input{width:100%;padding:.4em;font:inherit}\
form.login button{margin-top:1em;width:100%}\
button{font:inherit;padding:.3em .9em;border:1px solid #1d2430;border-radius:4px;background:#fff;cursor:pointer}\
header button{background:transparent;color:#fff;border-color:#fff}\
ul.folded{background:#fff;border-radius:6px;padding:.6em 1em .6em 2em;border-left:6px solid #2e7d32}ul.folded a{margin-left:.3em}\
.note{background:#fff4d6;padding:.6em 1em;border-radius:6px}.flash{background:#e0f2e3;padding:.6em 1em;border-radius:6px}\
.problem{background:#fde0e0;color:#8e1b1b;padding:.6em 1em;border-radius:6px;white-space:pre-wrap}\
header nav{flex:1;margin-left:2em}header nav a{color:#cfd5de;text-decoration:none;margin-right:1.4em}header nav a:hover{color:#fff}\
table.fleet,table#masters,table#overrides,table#imports{background:#fff;border-radius:6px}\
tr.site th{background:#eceff3;color:#1d2430;font-size:1em;padding-top:.5em}\
td.actions form{display:inline}td.actions button,a.button{margin:0 .3em .3em 0;font-size:.85em;padding:.15em .6em}\
a.button{display:inline-block;border:1px solid #8e1b1b;border-radius:4px;color:#8e1b1b;text-decoration:none;background:#fff}\
button.danger{border-color:#8e1b1b;color:#8e1b1b}.order{font-size:.85em}\
table.fleet th:nth-child(1){width:13%}table.fleet th:nth-child(2){width:9%}table.fleet th:nth-child(8){width:19em}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{flex:1 1 24em;background:#fff;border-radius:6px;padding:.4em 1.2em 1em}\
form.grid{display:grid;grid-template-columns:6em 1fr;gap:.5em;align-items:center}form.grid.wide{grid-template-columns:16em 1fr}form.grid input,form.grid select{font:inherit;padding:.3em}\
code{background:#eceff3;padding:0 .25em;border-radius:3px}progress{vertical-align:middle}\
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("salle-1 été"), "salle-1 été");
    }

    #[test]
    fn a_path_segment_keeps_only_unreserved_bytes() {
        assert_eq!(seg("salle-1"), "salle-1");
        assert_eq!(seg("a/b?c é"), "a%2Fb%3Fc%20%C3%A9");
    }

    #[test]
    fn the_title_and_user_are_escaped_in_the_frame() {
        let p = page("<b>", Some(("<i>", "admin", "\"x")), "");
        assert!(!p.contains("<b>") && !p.contains("<i>") && !p.contains("\"x\""));
        assert!(p.contains("&lt;b&gt;") && p.contains("&lt;i&gt;"));
    }
}
