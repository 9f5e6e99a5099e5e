//! Every subcommand, argument and flag of every nightcast program says what it is for in
//! `--help` (a DSI reads the help, not the source).

use std::process::Command;

/// `PROGRAM ARGS -h`, as text: the short help, one line per entry (`--help` of a command with a
/// long description puts each entry's description on lines of its own).
fn help(program: &str, args: &[String]) -> String {
    let out = Command::new(crate::util::workspace_bin(program))
        .args(args)
        .arg("-h")
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?} -h failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Walks every subcommand's help of `program`: how many pages, and the entries without a
/// description.
fn undescribed(program: &str) -> (usize, Vec<String>) {
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    let mut missing = Vec::new();
    while let Some(path) = todo.pop() {
        let text = help(program, &path);
        seen += 1;
        for section in ["Commands:", "Arguments:", "Options:"] {
            for (name, about) in entries(&text, section) {
                if about.is_empty() {
                    missing.push(format!("{program} {} {name}", path.join(" ")));
                }
                if section == "Commands:" && name != "help" {
                    let mut sub = path.clone();
                    sub.push(name.to_owned());
                    todo.push(sub);
                }
            }
        }
    }
    (seen, missing)
}

/// The entries of a help section (`Commands:`, `Arguments:`, `Options:`), as
/// (name, description) with the description empty when there is none.
fn entries<'a>(text: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    text.lines()
        .skip_while(|l| l.trim_end() != section)
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let l = l.trim();
            match l.split_once("  ") {
                Some((name, about)) => (name, about.trim()),
                None => (l, ""),
            }
        })
        .collect()
}

#[test]
fn every_subcommand_argument_and_flag_has_a_description() {
    // The top level, demo, 11 command groups and enroll, and their subcommands.
    let (seen, mut missing) = undescribed("nightcast");
    assert!(seen > 30, "walked only {seen} help pages of nightcast");
    for program in [
        "nightcast-image",
        "nightcast-controller",
        "nightcast-relay",
        "nightcast-agent",
    ] {
        let (seen, more) = undescribed(program);
        assert!(seen > 3, "walked only {seen} help pages of {program}");
        missing.extend(more);
    }
    assert!(
        missing.is_empty(),
        "no description in --help for:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_walk_notices_an_entry_without_a_description() {
    let text = "Usage: x\n\nArguments:\n  <SITE>  \n  <ROOM>  The room\n\nOptions:\n  -h, --help  Print help\n";
    assert_eq!(
        entries(text, "Arguments:"),
        [("<SITE>", ""), ("<ROOM>", "The room")]
    );
    assert_eq!(entries(text, "Options:"), [("-h, --help", "Print help")]);
}

/// What `nightcast-controller init` suggests next exists: the README's `serve --data DIR` and the
/// admin token it wrote, not a manifests directory and a by-hand build.
#[test]
fn controller_init_suggests_what_the_readme_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ctl");
    let out = Command::new(crate::util::workspace_bin("nightcast-controller"))
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let data = data.display();
    assert!(
        text.contains(&format!("nightcast-controller serve --data {data}`")),
        "{text}"
    );
    assert!(
        text.contains(&format!("NIGHTCAST_TOKEN_FILE={data}/admin.token")),
        "{text}"
    );
    assert!(dir.path().join("ctl/admin.token").is_file());
    assert!(!text.contains("manifests"), "{text}");
    assert!(text.contains("nightcast master import"), "{text}");
}

/// The relay's enrolment points to where the README gets the token: `nightcast enroll`.
#[test]
fn relay_enroll_help_names_the_dsis_command() {
    let out = Command::new(crate::util::workspace_bin("nightcast-relay"))
        .args(["enroll", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("nightcast enroll --site SITE"), "{text}");
    assert!(!text.contains("nightcast-controller token"), "{text}");
}
