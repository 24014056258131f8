//! Reading the files a user's repository supplies (rebake.yaml, policies, templates, locks,
//! image context files): only regular files, never through a symbolic link, never outside the
//! repository, and never more than a limit; YAML is refused before parsing when it nests
//! deeper than [`MAX_YAML_DEPTH`] (parsing deep nesting is slow).

use std::io::{self, Read};
use std::path::Path;

/// The largest rebake.yaml, policy, template or lock rebake reads.
pub const MAX_INPUT_BYTES: u64 = 1 << 20;

/// The deepest nesting of YAML rebake parses (block levels, list items and flow brackets).
pub const MAX_YAML_DEPTH: usize = 64;

/// Refuses `path` unless it is a regular file (not a symbolic link, device, pipe or
/// directory), no bigger than `max_bytes`, and — given `repo_dir` — inside the repository once
/// every link in the directories above it is resolved. The error says why; it names no file
/// (the caller's message does).
pub fn check_input_file(repo_dir: Option<&Path>, path: &Path, max_bytes: u64) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(refused(
            "it is a symbolic link; rebake reads only regular files in the repository",
        ));
    }
    if !kind.is_file() {
        return Err(refused(
            "it is not a regular file (a directory, device, pipe or socket); rebake reads only \
             regular files",
        ));
    }
    if meta.len() > max_bytes {
        return Err(refused(&format!(
            "it is {} bytes, more than the limit of {max_bytes} bytes",
            meta.len()
        )));
    }
    if let Some(repo_dir) = repo_dir {
        let (file, repo) = (path.canonicalize()?, repo_dir.canonicalize()?);
        if !file.starts_with(&repo) {
            return Err(refused(&format!(
                "it resolves to {}, outside the repository {}",
                file.display(),
                repo.display()
            )));
        }
    }
    Ok(())
}

/// The text of `path` after [`check_input_file`].
pub fn read_input(repo_dir: Option<&Path>, path: &Path) -> io::Result<String> {
    read_input_bytes(repo_dir, path, MAX_INPUT_BYTES).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })
    })
}

/// The bytes of `path` after [`check_input_file`], at most `max_bytes` even when the file
/// grows in between.
pub fn read_input_bytes(
    repo_dir: Option<&Path>,
    path: &Path,
    max_bytes: u64,
) -> io::Result<Vec<u8>> {
    check_input_file(repo_dir, path, max_bytes)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(refused(&format!(
            "it is more than the limit of {max_bytes} bytes"
        )));
    }
    Ok(bytes)
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_string())
}

/// Why YAML text is refused before parsing: longer than [`MAX_INPUT_BYTES`], or nesting deeper
/// than [`MAX_YAML_DEPTH`] (with the 1-based line where it does). None when it is fine.
pub fn yaml_limits_problem(source: &str) -> Option<(usize, String)> {
    if source.len() as u64 > MAX_INPUT_BYTES {
        return Some((
            0,
            format!(
                "the file is {} bytes, more than the limit of {MAX_INPUT_BYTES} bytes",
                source.len()
            ),
        ));
    }
    let (depth, line) = yaml_depth(source);
    (depth > MAX_YAML_DEPTH).then(|| {
        (
            line,
            format!("the YAML nests {depth} levels deep, more than the limit of {MAX_YAML_DEPTH}"),
        )
    })
}

/// An upper bound of the nesting depth of YAML text, and the first line nesting deeper than
/// [`MAX_YAML_DEPTH`] (else the line of the deepest nesting):
/// open block levels (by indentation) plus list markers on a line plus open flow brackets.
/// Quoted text and comments are skipped.
fn yaml_depth(source: &str) -> (usize, usize) {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let (mut deepest, mut deepest_line, mut over_line) = (0, 0, 0);
    let mut quote: Option<char> = None;
    for (number, raw) in source.lines().enumerate() {
        let mut depth_here = 0;
        if flow == 0 && quote.is_none() {
            let trimmed = raw.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = raw.len() - trimmed.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut rest = trimmed;
            while let Some(after) = rest.strip_prefix('-') {
                if !(after.is_empty() || after.starts_with(' ')) {
                    break;
                }
                depth_here += 1;
                rest = after.trim_start_matches(' ');
            }
        }
        let mut previous = ' ';
        for c in raw.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if previous == ' ' || previous == '\t' => break,
                    '"' | '\'' if matches!(previous, ' ' | '[' | '{' | ',' | ':' | '-') => {
                        quote = Some(c)
                    }
                    '[' | '{' => {
                        flow += 1;
                        let depth = indents.len() + depth_here + flow;
                        if depth > deepest {
                            (deepest, deepest_line) = (depth, number + 1);
                        }
                        if depth > MAX_YAML_DEPTH && over_line == 0 {
                            over_line = number + 1;
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
        let depth = indents.len() + depth_here + flow;
        if depth > deepest {
            (deepest, deepest_line) = (depth, number + 1);
        }
        if depth > MAX_YAML_DEPTH && over_line == 0 {
            over_line = number + 1;
        }
    }
    if over_line > 0 {
        (deepest, over_line)
    } else {
        (deepest, deepest_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_block_list_and_flow_nesting() {
        assert_eq!(yaml_depth("a: 1\nb: 2\n").0, 1);
        assert_eq!(yaml_depth("a:\n  b:\n    c: 1\nd: 2\n").0, 3);
        assert_eq!(yaml_depth("a:\n  - - x\n").0, 4);
        assert_eq!(yaml_depth("a: [[1, {b: 2}]]\n").0, 4);
        assert_eq!(yaml_depth("a: '[[[[' # [[[\n").0, 1);
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(yaml_limits_problem(&deep)
            .unwrap()
            .1
            .contains("limit of 64"));
        let mut block = String::new();
        for i in 0..80 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert_eq!(yaml_limits_problem(&block).unwrap().0, 65);
        assert!(yaml_limits_problem("a: {b: [1, 2]}\n").is_none());
    }
}
