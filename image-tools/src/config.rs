//! The daemons' configuration files, read one way: TOML into the daemon's `Config` type
//! (`deny_unknown_fields` and documented defaults are the type's business), then the checks that
//! need several keys at once ([`Checked::validate`]). An error names the key, or the line where
//! the TOML broke, and [`load`] puts the file's path in front.
//!
//! The property test every config file gets (random text and mutations of its example file:
//! parsed, or refused naming a key or a line) is `crate::config_property_tests!`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration that checks itself once parsed.
pub trait Checked: DeserializeOwned {
    /// Checks that need more than one key, or more than the type says.
    fn validate(&self) -> anyhow::Result<()>;
}

/// Parses and checks `text`.
pub fn parse<C: Checked>(text: &str) -> anyhow::Result<C> {
    let config: C = toml::from_str(text)?;
    config.validate()?;
    Ok(config)
}

/// Reads, parses and checks the file at `path`; errors start with the path.
pub fn load<C: Checked>(path: &Path) -> anyhow::Result<C> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Where a daemon reads its configuration and keeps its data (`run --config FILE --data DIR`;
/// the flags override the file).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Files {
    /// The configuration file. Every key is explained in the example file that comes with the
    /// program (relay.example.toml, agent.example.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data directory (overrides the config file's).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(default)]
        poll_secs: u64,
    }

    impl Checked for Example {
        fn validate(&self) -> anyhow::Result<()> {
            if self.poll_secs > 60 {
                anyhow::bail!("poll_secs is over a minute");
            }
            Ok(())
        }
    }

    #[test]
    fn a_file_is_parsed_then_checked_and_errors_say_where() {
        assert_eq!(
            parse::<Example>("poll_secs = 5").unwrap(),
            Example { poll_secs: 5 }
        );
        let e = parse::<Example>("poll_secs = 61").unwrap_err().to_string();
        assert!(e.contains("poll_secs is over a minute"), "{e}");
        let e = parse::<Example>("pol_secs = 1").unwrap_err().to_string();
        assert!(e.contains("pol_secs") && e.contains("line 1"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        let e = load::<Example>(&path).unwrap_err().to_string();
        assert!(e.starts_with("cannot read ") && e.contains("x.toml"), "{e}");
        std::fs::write(&path, "poll_secs = \"5\"").unwrap();
        let e = load::<Example>(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
    }

    crate::config_property_tests!(
        |t: &str| parse::<Example>(t),
        "poll_secs = 5\n",
        &["poll_secs"]
    );
}
