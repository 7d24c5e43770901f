//! README.md is what users copy: every routes.toml block in it must load as it stands, and
//! every key routes.toml takes must be documented there (and, since the blocks load, no
//! documented key can be one that does not exist).

use std::collections::BTreeSet;
use std::path::Path;

use whipgate::config::{keys, Config, SecretMode, SystemSecrets};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// Each ```toml block with the line it starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some((index + 1, String::new())),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_routes_toml_block_in_the_readme_loads() {
    let blocks = toml_blocks(&readme());
    assert!(blocks.len() >= 7, "only {} toml blocks found", blocks.len());
    for (line, block) in blocks {
        if let Err(error) = Config::from_toml(
            &block,
            &format!("README.md, the block at line {line}"),
            Path::new("."),
            SecretMode::Skip,
            &SystemSecrets,
        ) {
            panic!("{error}");
        }
    }
}

#[test]
fn every_key_routes_toml_takes_is_documented() {
    let text = readme();
    // A key is documented where it stands as a key (`key =`, in a block or in a block's
    // comment), as the alternative in a comment (`# or key_file`), or as `key` in the text:
    // a word merely somewhere in a block does not count.
    let mut documented = BTreeSet::new();
    for (_, block) in toml_blocks(&text) {
        let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut start = None;
        for (at, c) in block
            .char_indices()
            .chain(std::iter::once((block.len(), ' ')))
        {
            match (start, is_word(c)) {
                (None, true) => start = Some(at),
                (Some(from), false) => {
                    let before = block[..from].trim_end();
                    let after = block[at..].trim_start();
                    if after.starts_with('=') || before.ends_with(" or") || before.ends_with('#') {
                        documented.insert(block[from..at].to_owned());
                    }
                    start = None;
                }
                _ => {}
            }
        }
    }
    for quoted in text.split('`').skip(1).step_by(2) {
        documented.insert(
            quoted
                .split([' ', '=', '.'])
                .next()
                .unwrap_or("")
                .to_owned(),
        );
    }
    let mut missing = Vec::new();
    for (table, table_keys) in keys() {
        assert!(
            !table_keys.is_empty() || table.contains("builtin"),
            "no keys found for {table}"
        );
        for key in table_keys {
            if !documented.contains(key) {
                missing.push(format!("{table} {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys routes.toml takes that README.md does not mention: {missing:?}"
    );
}
