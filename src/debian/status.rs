//! dpkg's status database (`/var/lib/dpkg/status`): what is installed in an image.

use super::{deb822, packages::split_source, version};
use serde::{Deserialize, Serialize};

/// An installed binary package, as the lock records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
    pub source_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct StatusError {
    pub line: usize,
    pub message: String,
}

/// Installed packages, sorted by name then architecture. A package counts only when the third
/// word of `Status` is `installed` (not `config-files`, `half-installed`, `unpacked`, ...),
/// whatever the selection (`install`, `hold`, `deinstall`): its files are on disk.
pub fn parse(text: &str) -> Result<Vec<InstalledPackage>, StatusError> {
    let paragraphs = deb822::parse(text).map_err(|e| StatusError {
        line: e.line,
        message: e.message,
    })?;
    let mut out = Vec::new();
    for p in paragraphs {
        let err = |line: usize, message: String| StatusError { line, message };
        let need = |field: &str| {
            p.field(field)
                .ok_or_else(|| err(p.line, format!("package entry has no {field} field")))
        };
        let name = need("Package")?;
        let status = need("Status")?;
        let words: Vec<&str> = status.value.split_whitespace().collect();
        if words.len() != 3 {
            return Err(err(
                status.line,
                format!(
                    "Status of {} must have three words (want, flag, status), found {:?}",
                    name.value, status.value
                ),
            ));
        }
        if words[2] != "installed" {
            continue;
        }
        if !version::is_valid_package_name(&name.value) {
            return Err(err(
                name.line,
                format!("{:?} is not a valid package name", name.value),
            ));
        }
        let ver = need("Version")?;
        version::parse(&ver.value).map_err(|e| {
            err(
                ver.line,
                format!("Version {:?} of {}: {e}", ver.value, name.value),
            )
        })?;
        let arch = need("Architecture")?;
        let (source, source_version) = match p.field("Source") {
            Some(s) => split_source(&s.value, &ver.value),
            None => (name.value.as_str(), ver.value.as_str()),
        };
        out.push(InstalledPackage {
            name: name.value.clone(),
            version: ver.value.clone(),
            arch: arch.value.clone(),
            source: source.to_string(),
            source_version: source_version.to_string(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.arch.cmp(&b.arch)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_only_and_source_versions() {
        let text = "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib (1:1.3.dfsg-3)\nVersion: 1:1.3.dfsg-3+b1\n\n\
Package: old\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n\
Package: half\nStatus: install reinstreq half-installed\nArchitecture: amd64\nVersion: 1.0\n\n\
Package: held\nStatus: hold ok installed\nArchitecture: all\nVersion: 2.0\n";
        let p = parse(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "held");
        assert_eq!(p[1].source, "zlib");
        assert_eq!(p[1].source_version, "1:1.3.dfsg-3");
    }

    #[test]
    fn malformed_names_the_line() {
        let e = parse("Package: a\nStatus: install ok\nVersion: 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e =
            parse("Package: ab\nStatus: install ok installed\nVersion: x;y\nArchitecture: all\n")
                .unwrap_err();
        assert_eq!(e.line, 3);
    }
}
