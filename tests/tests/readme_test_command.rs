//! The README's test command is the one CI runs: `.ci/run` must run, as a command line of its
//! own, exactly what the README's "The test command" block says, and the testing page shows
//! the same command.

use std::path::Path;

fn repo(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn ci_runs_the_readmes_test_command_word_for_word() {
    let readme = repo("README.md");
    let after = readme
        .split_once("**The test command**")
        .expect("README names its test command")
        .1;
    let block = after
        .split_once("```\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("the test command in a fenced block")
        .0;
    let command = block.trim();
    assert!(!command.is_empty() && !command.contains('\n'), "{block:?}");
    let ci = repo(".ci/run");
    let runs: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("echo"))
        .collect();
    assert!(
        runs.contains(&command),
        ".ci/run does not run the README's test command {command:?} as a line of its own"
    );
    // The README's Commands table and the testing page show it too; all must be this one.
    assert!(
        readme.contains(&format!("| run the tests | `{command}` |")),
        "README's Commands table names another test command"
    );
    let testing = repo("docs/testing.md");
    let testing_block = testing
        .split_once("```\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("docs/testing.md shows the command in a fenced block")
        .0;
    assert_eq!(testing_block.trim(), command, "docs/testing.md");
}
