//! The documentation holds together: the README stays short, every page is in the book's
//! table of contents, every relative link reaches a file and every `#anchor` a heading of
//! it, and the module map on the architecture page names every Rust file of the four
//! library crates and nothing that does not exist. (The flags and metrics references are checked
//! where they are defined: `controller/src/cli` and `controller/src/runtime/metrics.rs`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of `markdown` outside fenced code blocks.
fn prose(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// A heading's anchor as mdBook and GitHub make it: lower case, punctuation dropped, spaces
/// as dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    prose(markdown)
        .into_iter()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| l.starts_with('#'))
        })
        .map(anchor)
        .collect()
}

/// Every `[text](target)` of the prose, with inline code spans removed first.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(markdown) {
        let line: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md"), repo().join("examples/README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

#[test]
fn the_readme_is_read_in_five_minutes() {
    let lines = read(&repo().join("README.md")).lines().count();
    assert!(
        lines <= 150,
        "README.md has {lines} lines: move detail into docs/"
    );
}

#[test]
fn every_page_is_in_the_books_table_of_contents() {
    let summary = read(&repo().join("docs/SUMMARY.md"));
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for page in markdown_files() {
        if page.parent().unwrap().ends_with("docs") {
            let name = page.file_name().unwrap().to_str().unwrap().to_string();
            if name != "SUMMARY.md" {
                assert!(
                    listed.contains(&name),
                    "docs/SUMMARY.md does not list {name}"
                );
            }
        }
    }
    for name in &listed {
        assert!(
            repo().join("docs").join(name).is_file(),
            "SUMMARY.md lists {name}"
        );
    }
}

#[test]
fn every_relative_link_reaches_a_file_and_every_anchor_a_heading() {
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match link.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            assert!(
                target.exists(),
                "{}: link {link:?} reaches nothing",
                file.display()
            );
            if let Some(fragment) = fragment {
                assert!(
                    anchors(&read(&target)).contains(fragment),
                    "{}: link {link:?}: {} has no heading #{fragment}",
                    file.display(),
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 40,
        "only {checked} links found: is the link reader broken?"
    );
}

/// The module map's entries as paths: two spaces of indent per folder level.
fn module_map() -> BTreeSet<String> {
    let page = read(&repo().join("docs/architecture.md"));
    let block = page
        .split_once("## Module map")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("docs/architecture.md has a module map in a fenced block")
        .0;
    let mut stack: Vec<String> = Vec::new();
    let mut paths = BTreeSet::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let depth = (line.len() - line.trim_start().len()) / 2;
        let name = line.split_whitespace().next().unwrap();
        stack.truncate(depth);
        let path = format!("{}{name}", stack.concat());
        if name.ends_with('/') {
            stack.push(name.to_string());
        }
        paths.insert(path);
    }
    paths
}

fn rust_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if path.is_dir() {
            rust_files(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") && !name.ends_with("_tests.rs") && name != "tests.rs" {
            // A folder's mod.rs is the folder's entry; a module's tests (`<module>_tests.rs`,
            // `tests.rs`) go with it.
            out.insert(if name == "mod.rs" {
                prefix.to_string()
            } else {
                format!("{prefix}{name}")
            });
        }
    }
}

#[test]
fn the_module_map_names_every_rust_file_and_nothing_else() {
    let map = module_map();
    let mut tree = BTreeSet::new();
    for src in [
        "signer-core/src",
        "spiffe-tls/src",
        "controller/src",
        "tests/src",
    ] {
        tree.insert(format!("{src}/"));
        rust_files(&repo().join(src), &format!("{src}/"), &mut tree);
    }
    let missing: Vec<_> = tree.difference(&map).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md's module map lacks {missing:?}"
    );
    for path in &map {
        assert!(
            repo().join(path).exists(),
            "docs/architecture.md's module map names {path}, which does not exist"
        );
    }
}

#[test]
fn every_repository_path_the_docs_name_exists() {
    let roots = [
        "controller/",
        "signer-core/",
        "tests/",
        "fuzz/",
        "examples/",
        "scripts/",
        "manifests/",
        "charts/",
        "monitoring/",
        "docs/",
    ];
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        // Inline code spans: the odd pieces between backticks, line by line, outside fences.
        let spans: Vec<&str> = prose(&text)
            .into_iter()
            .flat_map(|l| l.split('`').skip(1).step_by(2))
            .collect();
        for span in spans {
            let is_path = roots.iter().any(|r| span.starts_with(r))
                && span
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
            if is_path {
                assert!(
                    repo().join(span).exists(),
                    "{}: names `{span}`, which does not exist",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} paths found: is the reader broken?"
    );
}
