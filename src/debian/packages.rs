//! Fast parser for `Packages` indices: only the fields a scan needs, straight from the bytes.
//! A trixie main Packages file is ~57 MB of text, so this avoids the general deb822 parser
//! (no per-field allocation, one `memchr` per line).

use memchr::memchr;

/// One binary package version as an index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
    pub source_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PackagesError {
    pub line: usize,
    pub message: String,
}

/// Splits a `Source:` value (`name` or `name (version)`) into name and version, defaulting to
/// the binary's own version as dpkg does.
pub fn split_source<'a>(source: &'a str, binary_version: &'a str) -> (&'a str, &'a str) {
    match source.split_once('(') {
        Some((name, rest)) => (name.trim(), rest.trim_end().trim_end_matches(')').trim()),
        None => (source.trim(), binary_version),
    }
}

#[derive(Default)]
struct Stanza<'a> {
    start: usize,
    name: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
    source: Option<&'a [u8]>,
}

fn line_of(data: &[u8], offset: usize) -> usize {
    1 + memchr::memchr_iter(b'\n', &data[..offset.min(data.len())]).count()
}

fn text<'a>(data: &[u8], at: usize, v: &'a [u8]) -> Result<&'a str, PackagesError> {
    std::str::from_utf8(v).map_err(|_| PackagesError {
        line: line_of(data, at),
        message: "field value is not UTF-8".into(),
    })
}

impl<'a> Stanza<'a> {
    fn finish(&mut self, data: &[u8], out: &mut Vec<BinaryPackage>) -> Result<(), PackagesError> {
        let st = std::mem::take(self);
        let missing = |field: &str| PackagesError {
            line: line_of(data, st.start),
            message: format!("paragraph has no {field} field"),
        };
        // An empty value is as bad as a missing field.
        let field = |v: Option<&'a [u8]>, name: &str| match v {
            Some(v) if !v.is_empty() => text(data, st.start, v),
            _ => Err(missing(name)),
        };
        let name = field(st.name, "Package")?;
        let version = field(st.version, "Version")?;
        let arch = field(st.arch, "Architecture")?;
        let (source, source_version) = match st.source {
            Some(s) => split_source(text(data, st.start, s)?, version),
            None => (name, version),
        };
        out.push(BinaryPackage {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.to_string(),
            source: source.to_string(),
            source_version: source_version.to_string(),
        });
        Ok(())
    }
}

fn value(line: &[u8], prefix_len: usize) -> &[u8] {
    line[prefix_len..].trim_ascii()
}

/// Parses a whole uncompressed Packages file.
pub fn parse(data: &[u8]) -> Result<Vec<BinaryPackage>, PackagesError> {
    let mut out = Vec::with_capacity(data.len() / 900);
    let mut st = Stanza::default();
    let mut in_stanza = false;
    let mut pos = 0;
    while pos < data.len() {
        let end = memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i);
        let mut line = &data[pos..end];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.is_empty() {
            if in_stanza {
                st.finish(data, &mut out)?;
                in_stanza = false;
            }
        } else {
            if !in_stanza {
                if line[0] == b' ' || line[0] == b'\t' {
                    return Err(PackagesError {
                        line: line_of(data, pos),
                        message: "continuation line outside a paragraph".into(),
                    });
                }
                in_stanza = true;
                st.start = pos;
            }
            match line[0] {
                b'P' if line.starts_with(b"Package:") => st.name = Some(value(line, 8)),
                b'V' if line.starts_with(b"Version:") => st.version = Some(value(line, 8)),
                b'A' if line.starts_with(b"Architecture:") => st.arch = Some(value(line, 13)),
                b'S' if line.starts_with(b"Source:") => st.source = Some(value(line, 7)),
                b' ' | b'\t' | b'#' => {}
                _ => {
                    if memchr(b':', line).is_none() {
                        return Err(PackagesError {
                            line: line_of(data, pos),
                            message: format!(
                                "expected 'Field: value', found {:?}",
                                String::from_utf8_lossy(&line[..line.len().min(60)])
                            ),
                        });
                    }
                }
            }
        }
        pos = end + 1;
    }
    if in_stanza {
        st.finish(data, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_source_versions() {
        let data = b"Package: libssl3t64\nSource: openssl (3.5.1-1)\nVersion: 3.5.1-1+b1\nArchitecture: amd64\nDescription: x\n more\n\nPackage: base-files\nVersion: 13.8\nArchitecture: amd64\n";
        let p = parse(data).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].source, "openssl");
        assert_eq!(p[0].source_version, "3.5.1-1");
        assert_eq!(p[0].version, "3.5.1-1+b1");
        assert_eq!(p[1].source, "base-files");
        assert_eq!(p[1].source_version, "13.8");
    }

    #[test]
    fn malformed_is_an_error_with_a_line() {
        let e =
            parse(b"Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\nArchitecture: all\n")
                .unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.message.contains("Version"));
        let e = parse(b"Package: a\ngarbage line\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
