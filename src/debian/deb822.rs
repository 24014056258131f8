//! The deb822 control format (RFC 822-like paragraphs) used by Release, `.sources` and dpkg
//! status files. Keeps line numbers so errors can point at the place in the file.
//! (Packages files, which are large, have their own fast path in `packages`.)

/// One `Field: value` of a paragraph. Continuation lines are joined with '\n'; a lone `.`
/// continuation line means an empty line, as in Debian policy.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Paragraph {
    pub fields: Vec<Field>,
    /// 1-based line of the paragraph's first field.
    pub line: usize,
}

impl Paragraph {
    /// Field names are case-insensitive in deb822.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.field(name).map(|f| f.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct Deb822Error {
    pub line: usize,
    pub message: String,
}

/// Parses every paragraph. Lines starting with '#' are comments (allowed in `.sources`).
pub fn parse(text: &str) -> Result<Vec<Paragraph>, Deb822Error> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some(last) = cur.fields.last_mut() else {
                return Err(Deb822Error {
                    line: line_no,
                    message: "continuation line without a field before it".into(),
                });
            };
            let cont = line.trim();
            last.value.push('\n');
            if cont != "." {
                last.value.push_str(cont);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Deb822Error {
                line: line_no,
                message: format!("expected 'Field: value', found {:?}", truncate(line, 60)),
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Deb822Error {
                line: line_no,
                message: format!("invalid field name {:?}", truncate(name, 60)),
            });
        }
        if cur.fields.is_empty() {
            cur.line = line_no;
        }
        cur.fields.push(Field {
            name: name.to_string(),
            value: value.trim().to_string(),
            line: line_no,
        });
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_continuations() {
        let p = parse("A: 1\nB: x\n y\n .\n z\n\n# c\nC: 3\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("b"), Some("x\ny\n\nz"));
        assert_eq!(p[1].get("C"), Some("3"));
        assert_eq!(p[1].line, 8);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("A: 1\nnonsense\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse(" cont\n").is_err());
    }
}
