//! The Prometheus text exposition format (version 0.0.4), written by hand: what the controller's
//! and the relay's `/metrics` answer. Pure: the daemons gather their own counters and gauges and
//! hand them here; this module only writes them.
//!
//! Guarantees: each family is written once, as its `# HELP` and `# TYPE` lines followed by all its
//! samples (a family with no sample is still described); label values are escaped (`\`, `"` and
//! line feeds), so a site or node name can never break a line or forge a label; help texts are
//! escaped the same way (`\` and line feeds). Metric and label names come from our code, never
//! from input: a name that is not a valid Prometheus name is a bug, caught by a debug assertion and
//! the tests. Not supported, deliberately: histograms, summaries, timestamps on samples, and the
//! OpenMetrics format.

use std::collections::BTreeSet;
use std::fmt::Write;

/// What Prometheus expects as the answer's `Content-Type`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (until the program restarts); its name ends in `_total`.
    Counter,
    /// A value of the moment.
    Gauge,
}

/// A sample's value. Counts are written as integers, exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Uint(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Uint(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Uint(u64::from(v))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Uint(v as u64)
    }
}

/// One sample: its labels (name, value) and its value.
pub type Sample<'a> = (Vec<(&'static str, &'a str)>, Value);

/// A text exposition being written, family after family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    names: BTreeSet<&'static str>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, name: &'static str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help, vec![(Vec::new(), value.into())]);
    }

    /// A family: its `HELP` and `TYPE` lines and its samples. Writing a family's name twice is a
    /// bug in the caller (a debug assertion; in release builds the second one is skipped).
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str, samples: Vec<Sample>) {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name:?} does not end in _total"
        );
        if !self.names.insert(name) {
            debug_assert!(false, "metric family {name:?} written twice");
            return;
        }
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (label, v)) in labels.iter().enumerate() {
                    debug_assert!(
                        valid_name(label) && !label.starts_with("__"),
                        "bad label {label:?}"
                    );
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{label}=\"{}\"", escape_label(v));
                }
                self.out.push('}');
            }
            self.out.push(' ');
            write_value(&mut self.out, value);
            self.out.push('\n');
        }
    }

    /// The text, ready to send.
    pub fn finish(self) -> String {
        self.out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (label names may not hold `:`, and ours never do).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn write_value(out: &mut String, v: Value) {
    let _ = match v {
        Value::Int(i) => write!(out, "{i}"),
        Value::Uint(u) => write!(out, "{u}"),
        Value::Float(f) if f.is_nan() => write!(out, "NaN"),
        Value::Float(f) if f.is_infinite() => {
            write!(out, "{}", if f > 0.0 { "+Inf" } else { "-Inf" })
        }
        Value::Float(f) => write!(out, "{f}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        let mut m = Exposition::new();
        m.single(
            "nightcast_test_up",
            Kind::Gauge,
            "Whether it runs.\nSecond line with a \\ backslash.",
            true,
        );
        m.family(
            "nightcast_test_bytes_total",
            Kind::Counter,
            "Bytes sent, by site.",
            vec![
                (vec![("site", "lyon")], 12_345_678_901_234u64.into()),
                (
                    vec![
                        ("site", "a \"quoted\", odd\nname \\ here"),
                        ("role", "relay"),
                    ],
                    7u64.into(),
                ),
            ],
        );
        m.family(
            "nightcast_test_rate",
            Kind::Gauge,
            "A rate.",
            vec![
                (vec![], 0.25f64.into()),
                (vec![("x", "nan")], f64::NAN.into()),
            ],
        );
        m.family("nightcast_test_empty", Kind::Gauge, "Nothing yet.", vec![]);
        m.finish()
    }

    #[test]
    fn families_are_described_once_and_values_written_exactly() {
        let text = example();
        assert_eq!(
            text.matches("# TYPE nightcast_test_bytes_total counter\n")
                .count(),
            1
        );
        assert!(text.contains(
            "# HELP nightcast_test_up Whether it runs.\\nSecond line with a \\\\ backslash.\n"
        ));
        assert!(text.contains("nightcast_test_bytes_total{site=\"lyon\"} 12345678901234\n"));
        assert!(text.contains(
            "nightcast_test_bytes_total{site=\"a \\\"quoted\\\", odd\\nname \\\\ here\",role=\"relay\"} 7\n"
        ));
        assert!(text.contains("nightcast_test_up 1\n"));
        assert!(text.contains("nightcast_test_rate 0.25\n"));
        assert!(text.contains("nightcast_test_rate{x=\"nan\"} NaN\n"));
        assert!(text.contains("# TYPE nightcast_test_empty gauge\n"));
        assert!(text.ends_with('\n'));
        // Every line is a comment or a sample: no raw line feed got through.
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("nightcast_test_"),
                "{line:?}"
            );
        }
    }

    /// The reference parser (the Prometheus project's Python client, Debian's
    /// `python3-prometheus-client`) reads back every sample and every escaped label as written.
    #[test]
    fn the_reference_parser_reads_it_back() {
        let samples = parse_with_prometheus_client(&example());
        let find = |name: &str, label: (&str, &str)| {
            samples
                .iter()
                .find(|s| s.0 == name && s.1.get(label.0).map(String::as_str) == Some(label.1))
                .unwrap_or_else(|| panic!("no {name} {label:?} in {samples:?}"))
                .2
        };
        assert_eq!(
            find("nightcast_test_bytes_total", ("site", "lyon")),
            12_345_678_901_234.0
        );
        assert_eq!(
            find(
                "nightcast_test_bytes_total",
                ("site", "a \"quoted\", odd\nname \\ here")
            ),
            7.0
        );
        assert_eq!(samples.len(), 5, "{samples:?}");
    }

    /// (sample name, labels, value) of each sample, as `prometheus_client.parser` reads `text`.
    pub(crate) fn parse_with_prometheus_client(
        text: &str,
    ) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
        use std::io::Write as _;
        let script = "import sys, json\n\
            from prometheus_client.parser import text_string_to_metric_families\n\
            out = []\n\
            for f in text_string_to_metric_families(sys.stdin.read()):\n\
            \x20   for s in f.samples:\n\
            \x20       out.append([f.type, s.name, s.labels, s.value if s.value == s.value else None])\n\
            print(json.dumps(out))\n";
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 is needed (apt-get install python3-prometheus-client)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the reference parser refused the text (or is missing: apt-get install \
             python3-prometheus-client): {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        type Row = (
            String,
            String,
            std::collections::BTreeMap<String, String>,
            Option<f64>,
        );
        let rows: Vec<Row> = serde_json::from_slice(&out.stdout).unwrap();
        rows.into_iter()
            .map(|(kind, n, l, v)| {
                // A sample outside its family's lines would be read as a family of its own, untyped.
                assert!(
                    kind == "counter" || kind == "gauge",
                    "{n} is {kind}:\n{text}"
                );
                (n, l, v.unwrap_or(f64::NAN))
            })
            .collect()
    }
}
