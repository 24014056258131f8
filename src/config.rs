//! The bot's own configuration, `rebake.yaml`, and the diagnostics shared by config and policy
//! validation.
//!
//! Parsing is two steps, as everywhere in rebake: serde reads the YAML into `Raw*` types that
//! mirror the file (unknown fields are rejected), then validation turns them into the public
//! types that later stages use, collecting every problem as a [`Diagnostic`] that points at the
//! file, line and field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------------------

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
fn edit_distance(a: &str, b: &str) -> usize {
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

// ---------------------------------------------------------------------------------------------
// Small validators shared with policies
// ---------------------------------------------------------------------------------------------

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a string looks like a secret rather than the name of a variable holding one, so
/// that errors never echo it.
pub(crate) fn looks_like_secret(value: &str) -> bool {
    const PREFIXES: [&str; 6] = ["ghp_", "gho_", "ghs_", "github_pat_", "glpat-", "sha256="];
    let has = |f: fn(&u8) -> bool| value.as_bytes().iter().any(f);
    PREFIXES.iter().any(|p| value.starts_with(p))
        || (value.len() >= 20 && !is_env_var_name(value))
        || (value.len() >= 30 && has(u8::is_ascii_lowercase) && has(u8::is_ascii_digit))
}

/// A Docker engine address as bollard and the docker CLI accept it.
pub fn is_valid_engine_host(host: &str) -> bool {
    const SCHEMES: [&str; 6] = [
        "unix://", "tcp://", "http://", "https://", "ssh://", "npipe://",
    ];
    SCHEMES
        .iter()
        .any(|s| host.len() > s.len() && host.starts_with(s))
        && !host.chars().any(char::is_whitespace)
}

pub(crate) const ENGINE_HOST_HELP: &str =
    "write the engine address with its scheme, like unix:///var/run/docker.sock or tcp://10.0.0.5:2376";

/// Resolves a path written in a config file: `~/` is the home directory, a relative path is
/// relative to the directory of the file that names it.
pub fn resolve_path(base_dir: &Path, raw: &str) -> PathBuf {
    if let Some(rest) = raw.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = Path::new(raw);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

// ---------------------------------------------------------------------------------------------
// rebake.yaml: raw form
// ---------------------------------------------------------------------------------------------

/// `rebake.yaml` as written. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<String>,
    pub sources: Option<String>,
    pub keyring: Option<String>,
    pub security_tracker: Option<RawSecurityTracker>,
    pub forge: Option<RawForge>,
    pub registry: Option<RawRegistry>,
    pub engine: Option<RawEngine>,
    pub schedule: Option<RawSchedule>,
    pub webhook: Option<RawWebhook>,
    pub git: Option<RawGit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityTracker {
    pub json: Option<String>,
    pub dsa_list: Option<String>,
    pub dla_list: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForge {
    pub kind: Option<ForgeKind>,
    pub url: Option<String>,
    pub repository: Option<String>,
    pub token_env: Option<String>,
    pub default_branch: Option<String>,
    pub app: Option<RawGitHubApp>,
}

/// GitHub App authentication: `forge.app` in rebake.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitHubApp {
    pub id: Option<u64>,
    pub installation_id: Option<u64>,
    /// The App's private key (PEM), a file path (relative to rebake.yaml's folder).
    pub private_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub url: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    pub username: Option<String>,
    pub password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub scan: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub secret_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    /// Private key for ssh remotes, a file path (relative to rebake.yaml's folder).
    pub ssh_key: Option<String>,
    /// Name of the environment variable holding `ssh_key`'s passphrase.
    pub ssh_key_passphrase_env: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// rebake.yaml: validated form
// ---------------------------------------------------------------------------------------------

/// Debian security tracker's JSON export of every CVE and its status per release.
pub const DEFAULT_TRACKER_JSON: &str = "https://security-tracker.debian.org/tracker/data/json";
/// Debian Security Advisories with the packages and versions they fix.
pub const DEBIAN_DSA_LIST: &str =
    "https://salsa.debian.org/security-tracker-team/security-tracker/-/raw/master/data/DSA/list";
/// Debian LTS Advisories.
pub const DEBIAN_DLA_LIST: &str =
    "https://salsa.debian.org/security-tracker-team/security-tracker/-/raw/master/data/DLA/list";
pub const DEFAULT_ENGINE_HOST: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// Hourly, at seven past so that many bots do not hit the mirrors on the hour.
pub const DEFAULT_SCAN_SCHEDULE: &str = "7 * * * *";
pub const DEFAULT_WEBHOOK_SECRET_ENV: &str = "REBAKE_WEBHOOK_SECRET";

/// The validated bot configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file it was read from; None when these are the defaults.
    pub file: Option<PathBuf>,
    /// Where the bot keeps caches and the last-seen archive dates.
    pub state_dir: PathBuf,
    /// A deb822 `.sources` file naming the archives; None = the host's apt configuration.
    pub sources: Option<PathBuf>,
    /// Keyring for sources that name none; None = Debian's archive keyring.
    pub keyring: Option<PathBuf>,
    /// None = no security tracker data (findings still come from the archive).
    pub security_tracker: Option<SecurityTracker>,
    /// Where pull requests go; None = no forge (plan and build only).
    pub forge: Option<ForgeConfig>,
    /// Where images are pushed; None = no registry (images stay in the engine).
    pub registry: Option<RegistryConfig>,
    pub engine: EngineConfig,
    pub schedule: ScheduleConfig,
    pub webhook: WebhookConfig,
    pub git: GitConfig,
}

/// Where Debian's security data comes from. Each is an http(s) URL or an absolute file path
/// (relative paths in the file are resolved against its directory). Nothing is fetched that is
/// not configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityTracker {
    /// The tracker's JSON export (CVE -> package -> fixed version per release); None = not used.
    pub json: Option<String>,
    /// DSA list (advisory -> packages and versions); None = DSA numbers are not looked up.
    pub dsa_list: Option<String>,
    /// DLA list, the same for Debian LTS.
    pub dla_list: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Github,
    Gitea,
    /// A plain git remote: branches are pushed, no pull requests are opened.
    Git,
}

/// `owner/name` of a repository on a forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoSlug {
    pub owner: String,
    pub name: String,
}

impl fmt::Display for RepoSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// GitHub only: authenticate as this GitHub App installation instead of with a token.
    pub github_app: Option<GitHubAppConfig>,
    /// GitHub: the API base (default https://api.github.com); Gitea: the server's base URL;
    /// git: the remote URL.
    pub url: String,
    /// Always set for GitHub and Gitea.
    pub repository: Option<RepoSlug>,
    /// Name of the environment variable that holds the token (never the token).
    pub token_env: Option<String>,
    pub default_branch: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitHubAppConfig {
    pub app_id: u64,
    pub installation_id: u64,
    pub private_key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryConfig {
    /// As written: `host[:port][/namespace]`.
    pub url: String,
    /// `host[:port]`.
    pub host: String,
    pub namespace: Option<String>,
    /// Plain HTTP (a registry on 127.0.0.1 in tests).
    pub insecure: bool,
    /// The registry login, when it needs one; always with `password_env`.
    pub username: Option<String>,
    /// Name of the environment variable holding the password or token (never the secret).
    pub password_env: Option<String>,
}

impl RegistryConfig {
    /// The repository reference of an image in this registry, without tag or digest.
    pub fn repository_for(&self, image: &str) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{}/{}", self.host, namespace, image),
            None => format!("{}/{}", self.host, image),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineConfig {
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleConfig {
    pub scan: CronSchedule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookConfig {
    /// Name of the environment variable holding the HMAC secret.
    pub secret_env: String,
}

/// rebake.yaml `git`: who rebake's commits are by, and how it authenticates to an ssh origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitConfig {
    pub author_name: String,
    pub author_email: String,
    /// Private key for ssh remotes; None = the keys of the running ssh-agent.
    pub ssh_key: Option<PathBuf>,
    /// Name of the environment variable holding `ssh_key`'s passphrase (never the passphrase).
    pub ssh_key_passphrase_env: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            file: None,
            state_dir: default_state_dir(),
            sources: None,
            keyring: None,
            security_tracker: None,
            forge: None,
            registry: None,
            engine: EngineConfig {
                host: DEFAULT_ENGINE_HOST.to_string(),
            },
            schedule: ScheduleConfig {
                scan: CronSchedule::parse(DEFAULT_SCAN_SCHEDULE)
                    .expect("the default schedule is valid"),
            },
            webhook: WebhookConfig {
                secret_env: DEFAULT_WEBHOOK_SECRET_ENV.to_string(),
            },
            git: GitConfig {
                author_name: "rebake".to_string(),
                author_email: "rebake@localhost".to_string(),
                ssh_key: None,
                ssh_key_passphrase_env: None,
            },
        }
    }
}

/// `$XDG_STATE_HOME/rebake`, else `~/.local/state/rebake`, else `/var/lib/rebake`.
pub fn default_state_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        let state = PathBuf::from(state);
        if state.is_absolute() {
            return state.join("rebake");
        }
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state/rebake"),
        _ => PathBuf::from("/var/lib/rebake"),
    }
}

/// Reads and validates a config file. A missing file is an error here; see
/// [`load_or_default`].
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::file_level(
            path,
            format!("cannot read the config file: {e}"),
            "check the path given with --config, or remove the option to use defaults",
        )]
    })?;
    parse(path, &source)
}

/// Like [`load`], but a file that does not exist means all defaults.
pub fn load_or_default(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        _ => load(path),
    }
}

/// Parses and validates config text; `file` names it in diagnostics, and relative paths in it
/// are taken relative to `file`'s directory.
pub fn parse(file: &Path, source: &str) -> Result<Config, Vec<Diagnostic>> {
    parse_with_base_dir(file, source, file.parent().unwrap_or(Path::new(".")))
}

/// Like [`parse`], with relative paths taken relative to `base_dir`.
pub fn parse_with_base_dir(
    file: &Path,
    source: &str,
    base_dir: &Path,
) -> Result<Config, Vec<Diagnostic>> {
    let (raw, problems) = parse_yaml::<RawConfig>(file, source)?;
    merge_problems(problems, validate_config(raw, file, source, base_dir))
}

/// Turns the raw config into a [`Config`], reporting every problem.
pub fn validate_config(
    raw: RawConfig,
    file: &Path,
    source: &str,
    base_dir: &Path,
) -> Result<Config, Vec<Diagnostic>> {
    let mut d = Diagnostics::new(file, source);
    let root = FieldPath::root();
    let mut config = Config {
        file: Some(file.to_path_buf()),
        ..Config::default()
    };

    let path_field = |d: &mut Diagnostics, name: &str, value: Option<String>| {
        let value = value?;
        if value.trim().is_empty() {
            d.error(
                &root.key(name),
                "is empty",
                "give a path, or remove the field to use the default",
            );
            return None;
        }
        Some(resolve_path(base_dir, &value))
    };
    if let Some(state_dir) = path_field(&mut d, "state_dir", raw.state_dir) {
        config.state_dir = state_dir;
    }
    config.sources = path_field(&mut d, "sources", raw.sources);
    config.keyring = path_field(&mut d, "keyring", raw.keyring);

    if let Some(tracker) = raw.security_tracker {
        let field = root.key("security_tracker");
        let mut resource = |name: &str, value: Option<String>| {
            value.and_then(|v| url_or_path(&mut d, &field.key(name), &v, base_dir))
        };
        config.security_tracker = Some(SecurityTracker {
            json: resource("json", tracker.json),
            dsa_list: resource("dsa_list", tracker.dsa_list),
            dla_list: resource("dla_list", tracker.dla_list),
        });
    }

    if let Some(forge) = raw.forge {
        config.forge = validate_forge(&mut d, &root.key("forge"), forge, base_dir);
    }
    if let Some(registry) = raw.registry {
        config.registry = validate_registry(&mut d, &root.key("registry"), registry);
    }
    if let Some(host) = raw.engine.and_then(|e| e.host) {
        if is_valid_engine_host(&host) {
            config.engine.host = host;
        } else {
            d.error(
                &root.key("engine").key("host"),
                format!("'{host}' is not a Docker engine address"),
                ENGINE_HOST_HELP,
            );
        }
    }
    if let Some(scan) = raw.schedule.and_then(|s| s.scan) {
        match CronSchedule::parse(&scan) {
            Ok(schedule) => config.schedule.scan = schedule,
            Err(problem) => d.error(
                &root.key("schedule").key("scan"),
                format!("'{scan}' is not a cron expression: {problem}"),
                "write five fields: minute hour day-of-month month day-of-week, \
                 like \"7 * * * *\" (hourly at :07) or \"30 4 * * 1-5\"",
            ),
        }
    }
    if let Some(secret_env) = raw.webhook.and_then(|w| w.secret_env) {
        if check_env_name(&mut d, &root.key("webhook").key("secret_env"), &secret_env) {
            config.webhook.secret_env = secret_env;
        }
    }
    if let Some(git) = raw.git {
        let field = root.key("git");
        if let Some(name) = git.author_name {
            if name.trim().is_empty() || name.contains(['\n', '<', '>']) {
                d.error(
                    &field.key("author_name"),
                    "is empty or contains a newline, '<' or '>'",
                    "write a name like \"rebake bot\"",
                );
            } else {
                config.git.author_name = name;
            }
        }
        if let Some(email) = git.author_email {
            let valid = email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            }) && !email.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
            if valid {
                config.git.author_email = email;
            } else {
                d.error(
                    &field.key("author_email"),
                    format!("'{email}' is not an email address"),
                    "write an address like rebake@example.org",
                );
            }
        }
        config.git.ssh_key = git
            .ssh_key
            .and_then(|key| validate_ssh_key(&mut d, &field.key("ssh_key"), &key, base_dir));
        if let Some(name) = git.ssh_key_passphrase_env {
            let f = field.key("ssh_key_passphrase_env");
            if check_env_name(&mut d, &f, &name) {
                if config.git.ssh_key.is_none() {
                    d.error(
                        &f,
                        "is only used with git.ssh_key (the ssh-agent holds keys already unlocked)",
                        "add 'ssh_key: <path of the private key>', or remove this field",
                    );
                } else {
                    config.git.ssh_key_passphrase_env = Some(name);
                }
            }
        }
    }
    d.into_result(config)
}

/// `git.ssh_key`: a path to a private key file, not the key itself and not its `.pub` half.
/// Whether the file exists is checked when rebake connects (`rebake check` may run where the key
/// is not installed).
fn validate_ssh_key(
    d: &mut Diagnostics,
    field: &FieldPath,
    value: &str,
    base_dir: &Path,
) -> Option<PathBuf> {
    if value.contains("PRIVATE KEY") || value.contains('\n') {
        d.error(
            field,
            "looks like a key itself, not the path of a key file",
            "put the private key in a file readable only by rebake's user and write its path \
             here; remove the key from this file and replace it, it may have been committed",
        );
    } else if value.trim().is_empty() {
        d.error(
            field,
            "is empty",
            "give the path of a private key file, like ~/.ssh/id_ed25519, or remove the field \
             to use the ssh-agent",
        );
    } else if value.ends_with(".pub") {
        d.error(
            field,
            format!("'{value}' is a public key; rebake needs the private one"),
            format!(
                "write the path without .pub, like {}",
                value.trim_end_matches(".pub")
            ),
        );
    } else {
        return Some(resolve_path(base_dir, value));
    }
    None
}

fn url_or_path(
    d: &mut Diagnostics,
    field: &FieldPath,
    value: &str,
    base_dir: &Path,
) -> Option<String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        match reqwest::Url::parse(value) {
            Ok(url) if url.host_str().is_some() => Some(value.to_string()),
            Ok(_) | Err(_) => {
                d.error(
                    field,
                    format!("'{value}' is not a valid URL"),
                    "write a URL like https://security-tracker.debian.org/tracker/data/json",
                );
                None
            }
        }
    } else if value.contains("://") {
        d.error(
            field,
            format!("'{value}' uses a scheme rebake cannot fetch"),
            "use an http:// or https:// URL, or a file path",
        );
        None
    } else if value.trim().is_empty() {
        d.error(
            field,
            "is empty",
            "give a file path or an https:// URL, or remove the field",
        );
        None
    } else {
        Some(resolve_path(base_dir, value).to_string_lossy().into_owned())
    }
}

/// Checks a field that names an environment variable. Never echoes a value that might be the
/// secret itself.
fn check_env_name(d: &mut Diagnostics, field: &FieldPath, value: &str) -> bool {
    if looks_like_secret(value) {
        d.error(
            field,
            "looks like a secret itself, not the name of an environment variable",
            "put the NAME of the variable here (like GITHUB_TOKEN) and the secret in that \
             variable; remove the secret from this file and revoke it, it may have been committed",
        );
    } else if !is_env_var_name(value) {
        d.error(
            field,
            format!("'{value}' is not an environment variable name"),
            "use letters, digits and '_', not starting with a digit, like GITHUB_TOKEN",
        );
    } else {
        return true;
    }
    false
}

fn validate_forge(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawForge,
    base_dir: &Path,
) -> Option<ForgeConfig> {
    let errors_before = d.list.len();
    let Some(kind) = raw.kind else {
        d.error(
            &field.key("kind"),
            "is missing",
            "add 'kind: github', 'kind: gitea' or 'kind: git'",
        );
        return None;
    };
    let url = match (kind, raw.url) {
        (ForgeKind::Github, None) => Some(DEFAULT_GITHUB_API.to_string()),
        // People paste the web address; the API lives elsewhere.
        (ForgeKind::Github, Some(url)) if url.trim_end_matches('/') == "https://github.com" => {
            Some(DEFAULT_GITHUB_API.to_string())
        }
        (ForgeKind::Github | ForgeKind::Gitea, Some(url)) => {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && reqwest::Url::parse(&url).is_ok_and(|u| u.host_str().is_some());
            if !ok {
                d.error(
                    &field.key("url"),
                    format!("'{url}' is not an http(s) URL"),
                    "write the forge's base URL, like https://gitea.example.org",
                );
            }
            Some(url.trim_end_matches('/').to_string())
        }
        (ForgeKind::Gitea, None) => {
            d.error(
                &field.key("url"),
                "is missing; a Gitea forge has no default address",
                "add 'url: https://gitea.example.org'",
            );
            None
        }
        (ForgeKind::Git, Some(url)) => {
            if url.trim().is_empty() || url.chars().any(char::is_whitespace) {
                d.error(
                    &field.key("url"),
                    "is not a git remote URL",
                    "write a remote like git@example.org:ops/images.git or https://example.org/ops/images.git",
                );
            }
            Some(url)
        }
        (ForgeKind::Git, None) => {
            d.error(
                &field.key("url"),
                "is missing; a plain git forge needs the remote to push to",
                "add 'url: git@example.org:ops/images.git'",
            );
            None
        }
    };
    let repository = match raw.repository {
        Some(slug) => {
            let parts = slug.split_once('/').filter(|(owner, name)| {
                let ok = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                };
                ok(owner) && ok(name)
            });
            match parts {
                Some((owner, name)) => Some(RepoSlug {
                    owner: owner.to_string(),
                    name: name.to_string(),
                }),
                None => {
                    d.error(
                        &field.key("repository"),
                        format!("'{slug}' is not owner/name"),
                        "write the repository as owner/name, like ops/images",
                    );
                    None
                }
            }
        }
        None if kind != ForgeKind::Git => {
            d.error(
                &field.key("repository"),
                "is missing",
                "add 'repository: owner/name', the repository that holds the policies",
            );
            None
        }
        None => None,
    };
    let token_env = match (raw.token_env, kind) {
        (Some(name), _) => check_env_name(d, &field.key("token_env"), &name).then_some(name),
        (None, ForgeKind::Github) => Some("GITHUB_TOKEN".to_string()),
        (None, ForgeKind::Gitea) => Some("GITEA_TOKEN".to_string()),
        (None, ForgeKind::Git) => None,
    };
    let default_branch = raw.default_branch.unwrap_or_else(|| "main".to_string());
    if !is_valid_branch_name(&default_branch) {
        d.error(
            &field.key("default_branch"),
            format!("'{default_branch}' is not a valid branch name"),
            "write a branch name like main or master",
        );
    }
    let github_app = match raw.app {
        None => None,
        Some(_) if kind != ForgeKind::Github => {
            d.error(
                &field.key("app"),
                "is for GitHub only",
                "remove 'app', or set 'kind: github'",
            );
            None
        }
        Some(app) => {
            let f = field.key("app");
            let need = |d: &mut Diagnostics, name: &str, ok: bool, help: &str| {
                if !ok {
                    d.error(&f.key(name), "is missing", help);
                }
            };
            need(
                d,
                "id",
                app.id.is_some(),
                "add the App's numeric id ('id: 12345')",
            );
            need(
                d,
                "installation_id",
                app.installation_id.is_some(),
                "add the installation id of the App on this repository's owner",
            );
            need(
                d,
                "private_key_file",
                app.private_key_file.is_some(),
                "add the path of the App's private key (PEM) file",
            );
            match (app.id, app.installation_id, app.private_key_file) {
                (Some(app_id), Some(installation_id), Some(key)) => Some(GitHubAppConfig {
                    app_id,
                    installation_id,
                    private_key_file: resolve_path(base_dir, &key),
                }),
                _ => None,
            }
        }
    };
    if d.list.len() > errors_before {
        return None;
    }
    Some(ForgeConfig {
        kind,
        github_app,
        url: url?,
        repository,
        token_env,
        default_branch,
    })
}

/// A rough version of git's check-ref-format for a branch name.
fn is_valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

fn validate_registry(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawRegistry,
) -> Option<RegistryConfig> {
    let Some(url) = raw.url else {
        d.error(
            &field.key("url"),
            "is missing",
            "add 'url: registry.example.org:5000' (host, optional port and namespace)",
        );
        return None;
    };
    let root = field.clone();
    let field = field.key("url");
    if url.contains("://") {
        d.error(
            &field,
            format!("'{url}' has a scheme"),
            "write host[:port][/namespace] without http:// or https://; \
             set 'insecure: true' for a plain-HTTP registry",
        );
        return None;
    }
    let (host, namespace) = match url.split_once('/') {
        Some((host, namespace)) => (host, Some(namespace.trim_end_matches('/'))),
        None => (url.as_str(), None),
    };
    let (name, port) = if host.starts_with('[') {
        // An IPv6 address: [::1]:5000
        match host.find(']') {
            Some(end) => match &host[end + 1..] {
                "" => (&host[..=end], None),
                rest => (&host[..=end], Some(rest.strip_prefix(':').unwrap_or(rest))),
            },
            None => ("", None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let name_ok = !name.is_empty()
        && (name.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !name_ok || !port_ok {
        d.error(
            &field,
            format!("'{host}' is not host[:port]"),
            "write the registry as host[:port][/namespace], like 127.0.0.1:5000/rebake",
        );
        return None;
    }
    if let Some(namespace) = namespace {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !namespace.split('/').all(component_ok) {
            d.error(
                &field,
                format!("namespace '{namespace}' is not a valid repository path"),
                "use lower case letters, digits, '.', '_' and '-' in each part of the namespace",
            );
            return None;
        }
    }
    match (&raw.username, &raw.password_env) {
        (Some(_), None) => d.error(
            &root.key("password_env"),
            "is missing",
            "name the environment variable holding the registry password or token, \
             like 'password_env: REBAKE_REGISTRY_PASSWORD'",
        ),
        (None, Some(_)) => d.error(
            &root.key("username"),
            "is missing",
            "add the registry login name that goes with password_env",
        ),
        _ => {}
    }
    Some(RegistryConfig {
        url: url.clone(),
        host: host.to_string(),
        namespace: namespace.map(str::to_string),
        insecure: raw.insecure,
        username: raw.username,
        password_env: raw.password_env,
    })
}

// ---------------------------------------------------------------------------------------------
// Cron schedules
// ---------------------------------------------------------------------------------------------

/// A five-field cron expression (minute hour day-of-month month day-of-week), or one of
/// `@hourly`, `@daily`, `@weekly`, `@monthly`. Times are matched in whatever time zone the
/// caller passes (the server uses UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// cron's rule: when both day fields are restricted, a day matching either one counts.
    day_of_month_any: bool,
    day_of_week_any: bool,
}

impl Serialize for CronSchedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.expression)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl CronSchedule {
    /// Parses an expression; the error says which field is wrong and why.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let expanded = match expression.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("it has {} fields, cron needs 5", fields.len()));
        }
        let minutes = parse_cron_field(fields[0], "minute", 0, 59, &[])?;
        let hours = parse_cron_field(fields[1], "hour", 0, 23, &[])?;
        let days_of_month = parse_cron_field(fields[2], "day of month", 1, 31, &[])?;
        let months = parse_cron_field(fields[3], "month", 1, 12, &MONTH_NAMES)?;
        let mut days_of_week = parse_cron_field(fields[4], "day of week", 0, 7, &DAY_NAMES)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7); // 7 is Sunday too
        }
        Ok(CronSchedule {
            expression: expression.trim().to_string(),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_of_month_any: fields[2].starts_with('*'),
            day_of_week_any: fields[4].starts_with('*'),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expression
    }

    /// Whether the schedule fires in the minute of `time`.
    pub fn matches(&self, time: &NaiveDateTime) -> bool {
        let bit = |set: u64, n: u32| set & (1 << n) != 0;
        bit(self.minutes, time.minute())
            && bit(self.hours, time.hour())
            && bit(self.months, time.month())
            && self.day_matches(time)
    }

    fn day_matches(&self, time: &NaiveDateTime) -> bool {
        let dom = self.days_of_month & (1 << time.day()) != 0;
        let dow = self.days_of_week & (1 << time.weekday().num_days_from_sunday()) != 0;
        match (self.day_of_month_any, self.day_of_week_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first minute strictly after `time` at which the schedule fires; None if there is
    /// none within five years (like "31 of February").
    pub fn next_after(&self, time: &NaiveDateTime) -> Option<NaiveDateTime> {
        let start = time.date().and_hms_opt(time.hour(), time.minute(), 0)? + Duration::minutes(1);
        let limit = start + Duration::days(5 * 366);
        let mut t = start;
        while t < limit {
            if self.months & (1 << t.month()) == 0 || !self.day_matches(&t) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
            } else if self.hours & (1 << t.hour()) == 0 {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
            } else if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
            } else {
                return Some(t);
            }
        }
        None
    }
}

fn parse_cron_field(
    field: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<u64, String> {
    let number = |text: &str| -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        let value = match names.iter().position(|n| *n == lower) {
            Some(i) => i as u32 + min,
            None => text
                .parse::<u32>()
                .map_err(|_| format!("{what} field: '{text}' is not a number"))?,
        };
        if value < min || value > max {
            return Err(format!("{what} field: {value} is out of range {min}-{max}"));
        }
        Ok(value)
    };
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("{what} field: step '{step}' is not a positive number")
                })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let start = number(range)?;
            // "5/15" means from 5 to the end, in steps.
            (start, if part.contains('/') { max } else { start })
        };
        if low > high {
            return Err(format!("{what} field: range {low}-{high} is backwards"));
        }
        for value in (low..=high).step_by(step as usize) {
            set |= 1 << value;
        }
    }
    Ok(set)
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

    #[test]
    fn defaults_when_empty() {
        let config = parse(Path::new("/etc/rebake/rebake.yaml"), "# nothing\n").unwrap();
        assert_eq!(config.engine.host, DEFAULT_ENGINE_HOST);
        assert!(config.forge.is_none());
        assert_eq!(config.schedule.scan.as_str(), DEFAULT_SCAN_SCHEDULE);
    }

    #[test]
    fn full_config() {
        let text = "\
state_dir: state
sources: debian.sources
security_tracker:
  json: https://security-tracker.debian.org/tracker/data/json
  dsa_list: data/DSA/list
forge:
  kind: gitea
  url: https://gitea.example.org/
  repository: ops/images
  token_env: GITEA_TOKEN
registry:
  url: 127.0.0.1:5000/rebake
  insecure: true
schedule:
  scan: \"*/15 * * * mon-fri\"
git:
  author_name: rebake bot
  author_email: bot@example.org
";
        let config = parse(Path::new("/srv/ops/rebake.yaml"), text).unwrap();
        assert_eq!(config.state_dir, Path::new("/srv/ops/state"));
        assert_eq!(
            config.security_tracker.unwrap().dsa_list.as_deref(),
            Some("/srv/ops/data/DSA/list")
        );
        let forge = config.forge.unwrap();
        assert_eq!(forge.url, "https://gitea.example.org");
        assert_eq!(forge.repository.unwrap().to_string(), "ops/images");
        let registry = config.registry.unwrap();
        assert_eq!(
            registry.repository_for("nginx"),
            "127.0.0.1:5000/rebake/nginx"
        );
        assert!(registry.insecure);
    }

    #[test]
    fn registry_login_needs_the_user_and_the_secret_variable() {
        let errors = parse(
            Path::new("rebake.yaml"),
            "registry:\n  url: r.example:5000\n  username: bot\n",
        )
        .unwrap_err();
        assert_eq!(errors[0].field, "registry.password_env");
        let config = parse(
            Path::new("rebake.yaml"),
            "registry:\n  url: r.example:5000\n  username: bot\n  password_env: REG_PW\n",
        )
        .unwrap();
        let registry = config.registry.unwrap();
        assert_eq!(registry.username.as_deref(), Some("bot"));
        assert_eq!(registry.password_env.as_deref(), Some("REG_PW"));
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = "\
forge:
  kind: github
  repository: images
  token_env: ghp_0123456789abcdefghijklmnopqrstuvwxyz
registry:
  url: https://registry.example.org
schedule:
  scan: \"* * *\"
";
        let errors = parse(Path::new("rebake.yaml"), text).unwrap_err();
        let fields: Vec<(&str, usize)> =
            errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(
            fields,
            [
                ("forge.repository", 3),
                ("forge.token_env", 4),
                ("registry.url", 6),
                ("schedule.scan", 8)
            ]
        );
        // The token is never repeated back.
        assert!(errors.iter().all(|e| !e.to_string().contains("ghp_0123")));
    }

    #[test]
    fn git_ssh_settings() {
        let text =
            "git:\n  ssh_key: keys/deploy\n  ssh_key_passphrase_env: REBAKE_SSH_PASSPHRASE\n";
        let config = parse(Path::new("/srv/ops/rebake.yaml"), text).unwrap();
        assert_eq!(
            config.git.ssh_key.as_deref(),
            Some(Path::new("/srv/ops/keys/deploy"))
        );
        assert_eq!(
            config.git.ssh_key_passphrase_env.as_deref(),
            Some("REBAKE_SSH_PASSPHRASE")
        );
        assert_eq!(config.git.author_name, "rebake");
        let absolute = parse(
            Path::new("rebake.yaml"),
            "git:\n  ssh_key: /etc/rebake/id\n",
        )
        .unwrap();
        assert_eq!(
            absolute.git.ssh_key.as_deref(),
            Some(Path::new("/etc/rebake/id"))
        );
        assert_eq!(Config::default().git.ssh_key, None);
    }

    #[test]
    fn git_ssh_mistakes_name_the_field_and_line() {
        let errors = |text: &str| parse(Path::new("rebake.yaml"), text).unwrap_err();
        let public = errors("git:\n  author_name: bot\n  ssh_key: ~/.ssh/id_ed25519.pub\n");
        assert_eq!(
            (public[0].field.as_str(), public[0].line),
            ("git.ssh_key", 3)
        );
        assert!(public[0].message.contains("public key"), "{}", public[0]);
        assert!(
            public[0].help.contains("~/.ssh/id_ed25519"),
            "{}",
            public[0]
        );

        let inline = errors("git:\n  ssh_key: \"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3Blbn\"\n");
        assert_eq!(inline[0].field, "git.ssh_key");
        assert!(inline[0].message.contains("key itself"), "{}", inline[0]);
        assert!(!inline[0].to_string().contains("b3Blbn"), "{}", inline[0]);

        let empty = errors("git:\n  ssh_key: \" \"\n");
        assert!(empty[0].message.contains("empty"), "{}", empty[0]);

        let secret = errors(
            "git:\n  ssh_key: id\n  ssh_key_passphrase_env: correct-horse-battery-staple-42\n",
        );
        assert_eq!(
            (secret[0].field.as_str(), secret[0].line),
            ("git.ssh_key_passphrase_env", 3)
        );
        assert!(!secret[0].to_string().contains("horse"), "{}", secret[0]);

        let without_key = errors("git:\n  ssh_key_passphrase_env: PASS\n");
        assert_eq!(without_key[0].field, "git.ssh_key_passphrase_env");
        assert!(
            without_key[0].help.contains("ssh_key"),
            "{}",
            without_key[0]
        );
    }

    #[test]
    fn unknown_field_names_the_field_and_the_allowed_ones() {
        let text = "forge:\n  kind: github\n  repo: ops/images\n";
        let errors = parse(Path::new("rebake.yaml"), text).unwrap_err();
        let e = &errors[0];
        assert_eq!(e.field, "forge.repo");
        assert_eq!(e.line, 3);
        assert!(e.help.starts_with("did you mean 'repository'?"), "{e}");
        assert_eq!(edit_distance("staus", "status"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn cron_fields() {
        let cron = CronSchedule::parse("30 4 * * 1-5").unwrap();
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        // 2025-06-06 is a Friday.
        assert!(cron.matches(&t("2025-06-06 04:30")));
        assert!(!cron.matches(&t("2025-06-07 04:30")));
        assert_eq!(
            cron.next_after(&t("2025-06-06 04:30")),
            Some(t("2025-06-09 04:30"))
        );
        let every = CronSchedule::parse("*/20 * * * *").unwrap();
        assert_eq!(
            every.next_after(&t("2025-01-01 00:41")),
            Some(t("2025-01-01 01:00"))
        );
        assert_eq!(
            CronSchedule::parse("0 0 1 jan,jul sun")
                .unwrap()
                .next_after(&t("2025-01-01 00:00")),
            Some(t("2025-01-05 00:00"))
        );
        assert!(CronSchedule::parse("60 * * * *")
            .unwrap_err()
            .contains("minute"));
        assert!(CronSchedule::parse("* * * *").is_err());
        assert!(CronSchedule::parse("*/0 * * * *").is_err());
        assert!(CronSchedule::parse("@daily").is_ok());
        assert!(CronSchedule::parse("0 0 31 2 *")
            .unwrap()
            .next_after(&t("2025-01-01 00:00"))
            .is_none());
    }
}
