//! Diagnostics shared by config and policy validation: a [`Diagnostic`] names the file, line,
//! column and field of a problem and says how to fix it. [`locate`] finds a field's line in
//! block-style YAML, [`parse_yaml`] reads a file into `Raw*` types collecting every unknown
//! field, and [`Diagnostics`] collects the problems validation finds.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One problem in a file the user wrote, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is about the whole file (missing, unreadable).
    pub line: usize,
    /// 1-based, when known.
    pub column: Option<usize>,
    /// Path of the field, like `tests[1].http.port`; empty when not about one field.
    pub field: String,
    pub message: String,
    pub help: String,
}

impl Diagnostic {
    /// A problem with the file as a whole.
    pub fn file_level(file: &Path, message: impl Into<String>, help: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: None,
            field: String::new(),
            message: message.into(),
            help: help.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "field '{}': ", self.field)?;
        }
        f.write_str(&self.message)?;
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// One step of a path into a YAML document: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Path of a field in a YAML document, like `tests[2].http.port`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        FieldPath(segments)
    }

    /// This path extended by a list index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        FieldPath(segments)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A line of block-style YAML split at list markers: `  - name: x` becomes a dash at column 2
/// and the content `name: x` at column 4, so a list item's mapping lines up with its next lines.
struct VirtualLine<'a> {
    line: usize,
    column: usize,
    text: &'a str,
    is_dash: bool,
}

fn virtual_lines(source: &str) -> Vec<VirtualLine<'_>> {
    let mut lines = Vec::new();
    for (number, raw) in source.lines().enumerate() {
        let trimmed = raw.trim_start_matches(' ');
        let mut column = raw.len() - trimmed.len();
        let mut rest = trimmed.trim_end();
        if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") || rest == "..." {
            continue;
        }
        loop {
            if rest == "-" || rest.starts_with("- ") {
                lines.push(VirtualLine {
                    line: number + 1,
                    column,
                    text: "-",
                    is_dash: true,
                });
                let after = &rest[1..];
                let content = after.trim_start_matches(' ');
                column += 1 + (after.len() - content.len());
                rest = content;
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
            } else {
                lines.push(VirtualLine {
                    line: number + 1,
                    column,
                    text: rest,
                    is_dash: false,
                });
                break;
            }
        }
    }
    lines
}

/// The key of a `key: value` line, unquoted; None for other lines.
fn mapping_key(text: &str) -> Option<&str> {
    for quote in ['"', '\''] {
        if let Some(rest) = text.strip_prefix(quote) {
            let end = rest.find(quote)?;
            return rest[end + 1..]
                .trim_start()
                .starts_with(':')
                .then(|| &rest[..end]);
        }
    }
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        if c == '#' && previous == ' ' {
            return None;
        }
        if c == ':' {
            let after = &text[i + 1..];
            if after.is_empty() || after.starts_with(' ') {
                return Some(text[..i].trim_end());
            }
        }
        previous = c;
    }
    None
}

/// Finds the line and column (1-based) of the field at `path` in block-style YAML `source`.
///
/// Walks the text by indentation and list markers rather than parsing it, so that it also
/// works on documents that failed to deserialize. When the full path is not there (a missing
/// field), it returns the place of the deepest part that is, which is where the field belongs.
/// None when not even the first segment is found.
pub fn locate(source: &str, path: &FieldPath) -> Option<(usize, usize)> {
    let lines = virtual_lines(source);
    let (mut start, mut end) = (0, lines.len());
    let mut found = None;
    for segment in path.segments() {
        if start >= end {
            break; // an inline or empty value: nothing deeper to walk into
        }
        let column = lines[start].column;
        let hit = match segment {
            Segment::Key(key) => (start..end).find(|&i| {
                let line = &lines[i];
                line.column == column && !line.is_dash && mapping_key(line.text) == Some(key)
            }),
            Segment::Index(index) => (start..end)
                .filter(|&i| lines[i].column == column && lines[i].is_dash)
                .nth(*index),
        };
        let Some(hit) = hit else { break };
        // A list item is shown at its content when that is on the dash's line.
        let shown = match lines.get(hit + 1) {
            Some(next) if lines[hit].is_dash && next.line == lines[hit].line => next,
            _ => &lines[hit],
        };
        found = Some((shown.line, shown.column + 1));
        // The value of a key may be a list at the key's own indentation; a list item ends at the
        // next line indented no deeper than its dash.
        let is_key = matches!(segment, Segment::Key(_));
        start = hit + 1;
        end = (start..end)
            .find(|&i| {
                let line = &lines[i];
                line.column < column || (line.column == column && !(is_key && line.is_dash))
            })
            .unwrap_or(end);
    }
    found
}

/// Collects diagnostics for one YAML file, locating each field in its text.
pub(crate) struct Diagnostics<'a> {
    file: &'a Path,
    source: &'a str,
    pub(crate) list: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(file: &'a Path, source: &'a str) -> Self {
        Diagnostics {
            file,
            source,
            list: Vec::new(),
        }
    }

    pub(crate) fn error(
        &mut self,
        field: &FieldPath,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let (line, column) = match locate(self.source, field) {
            Some((line, column)) => (line, Some(column)),
            None => (1, None),
        };
        self.list.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
            help: help.into(),
        });
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, Vec<Diagnostic>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }
}

/// Turns a serde_yaml_ng error into a diagnostic: its location, the field it names, and help
/// that fits the kind of mistake.
pub(crate) fn yaml_error_diagnostic(
    file: &Path,
    source: &str,
    error: &serde_yaml_ng::Error,
) -> Diagnostic {
    let mut message = error.to_string();
    // The location is reported in the diagnostic's own fields.
    if let Some(at) = message.rfind(" at line ") {
        let tail = &message[at + " at line ".len()..];
        if tail
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            message.truncate(at);
        }
    }
    let mut field = String::new();
    if let Some((prefix, rest)) = message.split_once(": ") {
        let looks_like_path = !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.[]?-".contains(&b));
        if looks_like_path {
            field = prefix.to_string();
            message = rest.to_string();
        }
    }
    let help;
    if let Some(name) = between(&message, "unknown field `", "`") {
        field = join_field(&field, name);
        let allowed = backticked_list(&message);
        let closest = allowed
            .iter()
            .map(|a| {
                // An abbreviation ("repo" for "repository") counts as close.
                let abbreviates = name.len() >= 3 && a.starts_with(name);
                (
                    if abbreviates {
                        1
                    } else {
                        edit_distance(name, a)
                    },
                    a,
                )
            })
            .filter(|(distance, a)| *distance <= 2.max(a.len() / 3))
            .min();
        help = match (closest, allowed.is_empty()) {
            (_, true) => format!("remove '{name}'; this place takes no fields"),
            (Some((_, suggestion)), false) => format!(
                "did you mean '{suggestion}'? allowed here: {}",
                allowed.join(", ")
            ),
            (None, false) => format!(
                "remove '{name}' or correct its spelling; allowed here: {}",
                allowed.join(", ")
            ),
        };
    } else if let Some(name) = between(&message, "missing field `", "`") {
        field = join_field(&field, name);
        help = format!("add '{name}:' with a value");
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| plain_expectation(e))
            .unwrap_or("another kind of value");
        help = format!(
            "write {expected} here (quote text that YAML would read as a number or boolean)"
        );
    } else if message.starts_with("unknown variant") {
        help = format!("use one of: {}", backticked_list(&message).join(", "));
    } else if message.contains("duplicate entry") {
        help = "each key may appear only once in a mapping; remove or merge the repeated one"
            .to_string();
    } else {
        help = "fix the YAML syntax here: indent with spaces, write `key: value` and list items \
                as `- value`, and quote values containing ': ' or '#'"
            .to_string();
    }
    let (line, column) = match error.location() {
        Some(location) => (location.line(), Some(location.column())),
        None => (1, None),
    };
    // serde reports some errors at the enclosing mapping; prefer the field's own line.
    let (line, column) = match parse_field_path(&field).and_then(|p| locate(source, &p)) {
        Some((l, c)) if error.location().is_none() || message.starts_with("unknown field") => {
            (l, Some(c))
        }
        _ => (line, column),
    };
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        field,
        message,
        help,
    }
}

/// serde's name for what it expected, in the words of a YAML file.
fn plain_expectation(expected: &str) -> &str {
    match expected {
        "u8" | "u16" => "a whole number (for a port: 1 to 65535)",
        "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number",
        "a boolean" => "true or false",
        "a sequence" => "a list ('- item' lines, or [a, b])",
        "a map" => "a mapping ('key: value' lines)",
        e if e.starts_with("struct ") => "a mapping ('key: value' lines)",
        e => e,
    }
}

/// Levenshtein distance, for suggesting the field someone meant.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn between<'s>(text: &'s str, start: &str, end: &str) -> Option<&'s str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The names listed after "expected" in a serde message: "expected one of `a`, `b`".
fn backticked_list(message: &str) -> Vec<String> {
    let Some((_, expected)) = message.split_once("expected") else {
        return Vec::new();
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn join_field(parent: &str, name: &str) -> String {
    if parent.is_empty() || parent == "." {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// Parses `tests[2].http.port` back into a path.
fn parse_field_path(text: &str) -> Option<FieldPath> {
    if text.is_empty() {
        return None;
    }
    let mut path = FieldPath::root();
    for part in text.split('.') {
        let (key, mut indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            path = path.key(key);
        }
        while let Some(rest) = indices.strip_prefix('[') {
            let close = rest.find(']')?;
            path = path.index(rest[..close].parse().ok()?);
            indices = &rest[close + 1..];
        }
    }
    Some(path)
}

/// Deserializes YAML text into `T`, treating an empty document as an empty mapping.
///
/// serde stops at the first error. So that one misspelt field does not hide the rest, an
/// unknown block-style field is blanked out and parsing retried: the result is the value read
/// without those fields, and a diagnostic for each. Any other error ends parsing.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    source: &str,
) -> Result<(T, Vec<Diagnostic>), Vec<Diagnostic>> {
    if let Some((line, message)) = super::input::yaml_limits_problem(source) {
        return Err(vec![Diagnostic {
            file: file.to_path_buf(),
            line,
            column: None,
            field: String::new(),
            message,
            help: "rebake reads YAML files up to 1 MiB that nest at most 64 levels deep; \
                   split or flatten the file"
                .to_string(),
        }]);
    }
    let is_empty = source
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---");
    let mut text = if is_empty {
        "{}".to_string()
    } else {
        source.to_string()
    };
    let mut problems = Vec::new();
    loop {
        let error = match serde_yaml_ng::from_str(&text) {
            Ok(value) => return Ok((value, problems)),
            Err(error) => error,
        };
        let problem = yaml_error_diagnostic(file, source, &error);
        let retry = match (problem.message.starts_with("unknown field"), problem.column) {
            (true, Some(column)) if problems.len() < 100 => {
                without_block(&text, problem.line, column)
            }
            _ => None,
        };
        problems.push(problem);
        match retry {
            Some(shorter) => text = shorter,
            None => return Err(problems),
        }
    }
}

/// `text` with the block-style key at `line`:`column` and its value replaced by blank lines
/// (so line numbers stay); None when the key does not start its line.
fn without_block(text: &str, line: usize, column: usize) -> Option<String> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    let indent_of = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let first = line.checked_sub(1)?;
    let key_line = lines.get(first)?;
    let indent = indent_of(key_line);
    if column != indent + 1 || key_line[indent..].starts_with('-') {
        return None;
    }
    let mut end = first + 1;
    while let Some(l) = lines.get(end) {
        let content = l.trim_start_matches(' ');
        let deeper = indent_of(l) > indent;
        let same_level_item =
            indent_of(l) == indent && (content == "-" || content.starts_with("- "));
        if content.is_empty() || content.starts_with('#') || deeper || same_level_item {
            end += 1;
        } else {
            break;
        }
    }
    for l in &mut lines[first..end] {
        *l = "";
    }
    Some(lines.join("\n"))
}

/// Problems found while parsing and those found while validating, as one result. Validation
/// problems that only follow from an ignored unknown field (its test "says nothing to check",
/// the field it misspells "is missing") are left out: the unknown field's own diagnostic says
/// what to fix.
pub(crate) fn merge_problems<T>(
    mut parse_problems: Vec<Diagnostic>,
    validated: Result<T, Vec<Diagnostic>>,
) -> Result<T, Vec<Diagnostic>> {
    let unknown: Vec<FieldPath> = parse_problems
        .iter()
        .filter(|d| d.message.starts_with("unknown field"))
        .filter_map(|d| parse_field_path(&d.field))
        .collect();
    let follows_from_unknown = |d: &Diagnostic| {
        let Some(field) = parse_field_path(&d.field) else {
            return false;
        };
        let field = field.segments();
        unknown.iter().any(|u| {
            let u = u.segments();
            let is_ancestor = field.len() < u.len() && u.starts_with(field);
            let is_missing_sibling = d.message.starts_with("is missing")
                && field.len() == u.len()
                && field[..field.len() - 1] == u[..u.len() - 1];
            is_ancestor || is_missing_sibling
        })
    };
    match validated {
        Ok(value) if parse_problems.is_empty() => Ok(value),
        Ok(_) => Err(parse_problems),
        Err(errors) => {
            parse_problems.extend(errors.into_iter().filter(|d| !follows_from_unknown(d)));
            Err(parse_problems)
        }
    }
}

/// A YAML scalar (string, number or boolean) taken as text, so that `port: 8080`,
/// `workers: 4` and `command: [sleep, 1]` need no quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarString(pub String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<ScalarString, E> {
                Ok(ScalarString(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Sorted `key: value` map whose values may be written as any scalar.
pub(crate) fn scalar_map(map: BTreeMap<String, ScalarString>) -> BTreeMap<String, String> {
    map.into_iter().map(|(k, v)| (k, v.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
template: nginx.Dockerfile.hbs
suite: trixie
packages:
  - nginx
  - Nginx   # wrong
tests:
  - name: serves
    http:
      port: 80
      path: /
  - name: runs
    command: [nginx, -v]
deploy:
- docker:
    name: web
    ports:
    - \"8080:80\"
- swarm: {service: web}
";

    fn at(path: FieldPath) -> Option<usize> {
        locate(SAMPLE, &path).map(|(line, _)| line)
    }

    #[test]
    fn locates_fields_in_block_yaml() {
        let root = FieldPath::root();
        assert_eq!(at(root.key("suite")), Some(2));
        assert_eq!(at(root.key("packages").index(1)), Some(5));
        assert_eq!(
            at(root.key("tests").index(0).key("http").key("port")),
            Some(9)
        );
        assert_eq!(at(root.key("tests").index(1).key("command")), Some(12));
        assert_eq!(at(root.key("tests").index(1)), Some(11));
        assert_eq!(
            at(root
                .key("deploy")
                .index(0)
                .key("docker")
                .key("ports")
                .index(0)),
            Some(17)
        );
        assert_eq!(at(root.key("deploy").index(1).key("swarm")), Some(18));
        // Missing: the deepest existing parent.
        assert_eq!(
            at(root.key("tests").index(0).key("http").key("status")),
            Some(8)
        );
        assert_eq!(at(root.key("review")), None);
        assert_eq!(
            locate(SAMPLE, &root.key("tests").index(0).key("name")),
            Some((7, 5))
        );
    }

    #[test]
    fn field_paths_print_and_parse() {
        let path = FieldPath::root()
            .key("tests")
            .index(2)
            .key("http")
            .key("port");
        assert_eq!(path.to_string(), "tests[2].http.port");
        assert_eq!(parse_field_path("tests[2].http.port"), Some(path));
    }
}
