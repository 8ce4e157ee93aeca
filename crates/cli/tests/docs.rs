//! Every document the repository cites is in the repository: the specification pages
//! (docs/algorithms.md, docs/datasets.md, docs/benchmarks.md) and their sections, every
//! `docs/…` path named in code or docs, every relative link of a Markdown page.
//! `scripts/fix-spec-citations.sh` rewrites citations of the old out-of-tree names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's text files (source, docs, configs, scripts), relative to the root;
/// build outputs, run outputs, fetched data and hidden directories other than `.ci`
/// are skipped.
fn text_files() -> Vec<PathBuf> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = rel.join(&name);
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                let skip = (name.starts_with('.') && name != ".ci")
                    || (rel.as_os_str().is_empty()
                        && ["target", "runs", "data"].contains(&name.as_str()))
                    || name == "node_modules"
                    || name == "__pycache__";
                if !skip {
                    walk(root, &path, out);
                }
            } else if kind.is_file() {
                let ext = Path::new(&name).extension().and_then(|e| e.to_str());
                let in_ci = rel.starts_with(".ci");
                if in_ci || matches!(ext, Some("rs" | "md" | "toml" | "sh" | "py")) {
                    out.push(path);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), Path::new(""), &mut out);
    out.sort();
    assert!(
        out.iter().any(|p| p.ends_with("README.md")),
        "the repository root was not found from {}",
        root().display()
    );
    out
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_default()
}

/// Files allowed to name the out-of-tree specification files: the script that
/// rewrites them, and this test.
fn names_old_spec_on_purpose(rel: &Path) -> bool {
    rel.ends_with("scripts/fix-spec-citations.sh") || rel.ends_with("crates/cli/tests/docs.rs")
}

#[test]
fn no_file_cites_a_specification_outside_the_repository() {
    let mut bad = Vec::new();
    for rel in text_files() {
        if names_old_spec_on_purpose(&rel) {
            continue;
        }
        for (i, line) in read(&rel).lines().enumerate() {
            for old in ["ALGORITHMS.md", "DATASETS.md", "BENCHMARKS.md"] {
                if line.contains(old) {
                    bad.push(format!("{}:{}: {old}", rel.display(), i + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "citations of files that are not in the repository (run scripts/fix-spec-citations.sh):\n{}",
        bad.join("\n")
    );
}

/// `docs/…` paths as they appear in text: `docs/` then path characters; a trailing
/// `.` or `/` ends a sentence or names a directory. A `docs/` inside another path
/// (`optimization/docs/…`, `mydocs/`) is another repository's or not a path.
fn doc_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        let preceded_ok = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || "_-/.".contains(c)));
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_./-".contains(c)))
            .unwrap_or(tail.len());
        let path = tail[..end].trim_end_matches('.');
        if preceded_ok && path.len() > "docs/".len() {
            out.push(path.to_string());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

/// `docs/arch/0010`: a decision record cited by its number alone, which must exist as
/// `docs/arch/0010-….md`.
fn is_adr_number(p: &str) -> bool {
    let Some(n) = p.strip_prefix("docs/arch/") else {
        return false;
    };
    n.len() == 4
        && n.bytes().all(|b| b.is_ascii_digit())
        && std::fs::read_dir(root().join("docs/arch")).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{n}-"))
            })
        })
}

#[test]
fn every_cited_docs_path_exists() {
    let mut bad = BTreeSet::new();
    for rel in text_files() {
        if rel.ends_with("crates/cli/tests/docs.rs") {
            continue; // its examples
        }
        for path in doc_paths(&read(&rel)) {
            // Paths under a crate's own folder (`crates/x/docs/…`) would start before `docs/`.
            let p = path.trim_end_matches('/');
            if p.contains('*') || p.contains("..") {
                continue;
            }
            if !root().join(p).exists() && !is_adr_number(p) {
                bad.insert(format!("{}: {path}", rel.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "cited documents that do not exist:\n{}",
        bad.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The section ids of a specification page: a heading's first word (`B.2`, `1.4`, `0`),
/// or `Appendix X` / `Part A`.
fn section_ids(page: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for line in page.lines() {
        if !line.starts_with('#') {
            continue;
        }
        let mut words = line.trim_start_matches('#').split_whitespace();
        match words.next() {
            Some(w @ ("Appendix" | "Part")) => {
                if let Some(x) = words.next() {
                    ids.insert(format!("{w} {x}"));
                }
            }
            Some(w) => {
                ids.insert(w.trim_end_matches('.').to_string());
            }
            None => {}
        }
    }
    ids
}

/// Citations `PAGE §ID` and `PAGE Appendix X` in `text` (a range `§5–6` cites its first
/// section).
fn cited_sections(text: &str, page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(page) {
        let after = text[i + page.len()..].trim_start_matches(':');
        if let Some(s) = after.strip_prefix(" §") {
            let id: String = s
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            out.push(id.trim_end_matches('.').to_string());
        } else if let Some(s) = after.strip_prefix(" Appendix ") {
            let x: String = s.chars().take_while(|c| c.is_ascii_uppercase()).collect();
            out.push(format!("Appendix {x}"));
        }
    }
    out
}

#[test]
fn cited_specification_sections_exist() {
    let mut bad = Vec::new();
    for page in ["algorithms.md", "datasets.md", "benchmarks.md"] {
        assert!(is_adr_number("docs/arch/0001") && !is_adr_number("docs/arch/0003"));
        let ids = section_ids(&read(&Path::new("docs").join(page)));
        assert!(!ids.is_empty(), "docs/{page} has no sections");
        for rel in text_files() {
            if names_old_spec_on_purpose(&rel) {
                continue;
            }
            for id in cited_sections(&read(&rel), page) {
                if !ids.contains(&id) {
                    bad.push(format!("{}: {page} §{id}", rel.display()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "cited sections that do not exist:\n{}",
        bad.join("\n")
    );
}

#[test]
fn relative_markdown_links_resolve() {
    let mut bad = Vec::new();
    for rel in text_files() {
        if rel.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let text = read(&rel);
        let dir = rel.parent().unwrap_or(Path::new(""));
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let Some(end) = target.find(')') else {
                continue;
            };
            let target = target[..end].split('#').next().unwrap_or("").trim();
            if target.is_empty()
                || target.contains("://")
                || target.starts_with("mailto:")
                || target.contains(' ')
            {
                continue;
            }
            if !root().join(dir).join(target).exists() {
                bad.push(format!("{}: ]({target})", rel.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "links to files that do not exist:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scanners_find_what_they_should() {
    assert_eq!(
        doc_paths("see docs/algorithms.md §B.2, docs/arch/ and crates/x/mydocs/y.md, a/docs/z.md."),
        ["docs/algorithms.md", "docs/arch/"]
    );
    assert_eq!(
        cited_sections("docs/algorithms.md §B.2; algorithms.md: §C.7 and algorithms.md Appendix Z #4, datasets.md §7(a)", "algorithms.md"),
        ["B.2", "C.7", "Appendix Z"]
    );
    assert!(is_adr_number("docs/arch/0001") && !is_adr_number("docs/arch/0003"));
    let ids = section_ids(
        "# Part A - x\n## A.1 FedAvg\n### 0.1 Tags\n## 0. Conventions\n# Appendix X - data\n",
    );
    for id in ["Part A", "A.1", "0.1", "0", "Appendix X"] {
        assert!(ids.contains(id), "{id} in {ids:?}");
    }
}

/// Decision records: one file per number, and each listed in docs/arch/README.md (two
/// branches that take the same number collide here, not in a reader's head).
#[test]
fn decision_records_have_unique_numbers_and_are_indexed() {
    let index = read(Path::new("docs/arch/README.md"));
    let mut seen = std::collections::BTreeMap::new();
    let mut bad = Vec::new();
    for e in std::fs::read_dir(root().join("docs/arch"))
        .expect("docs/arch")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(num) = name
            .get(..4)
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(other) = seen.insert(num.to_string(), name.clone()) {
            bad.push(format!("{num} is used twice: {other} and {name}"));
        }
        if !index.contains(&format!("]({name})")) {
            bad.push(format!("{name} is not linked from docs/arch/README.md"));
        }
    }
    assert!(!seen.is_empty(), "no decision records found");
    bad.sort();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Cargo.toml declares `MIT OR Apache-2.0`; both licence texts ship with the source.
#[test]
fn the_licences_cargo_toml_declares_are_in_the_repository() {
    let cargo = read(Path::new("Cargo.toml"));
    assert!(
        cargo.contains("license = \"MIT OR Apache-2.0\""),
        "Cargo.toml's licence changed: update this test and the files"
    );
    for (file, must) in [
        ("LICENSE-MIT", "Permission is hereby granted"),
        ("LICENSE-APACHE", "Apache License"),
    ] {
        let text = read(Path::new(file));
        assert!(
            text.contains(must),
            "{file} is missing or is not the licence text"
        );
    }
}
