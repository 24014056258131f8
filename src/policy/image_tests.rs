//! The test grammar of a policy (`tests:`): one check per test — a command, an HTTP request,
//! a file's mode and owner, or the user the image runs as — validated into [`ImageTest`]s.
//! The command and HTTP forms are shared with `deploy:`'s health checks.

use serde::{Deserialize, Serialize};

use super::{is_valid_user_spec, DEFAULT_TEST_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS};
use crate::config::{Diagnostics, FieldPath, ScalarString};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    pub name: Option<String>,
    pub command: Option<Vec<ScalarString>>,
    pub expect_stdout: Option<ScalarString>,
    pub http: Option<RawHttpCheck>,
    pub file: Option<RawFileCheck>,
    pub user: Option<RawUserCheck>,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpCheck {
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: Option<u16>,
    pub contains: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileCheck {
    pub path: Option<String>,
    pub mode: Option<ScalarString>,
    pub owner: Option<ScalarString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserCheck {
    pub allow_root: Option<bool>,
}

/// One test, run in a fresh container from the new image; the image passes when all pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageTest {
    pub name: String,
    pub timeout_seconds: u64,
    pub check: TestCheck,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestCheck {
    /// Runs `argv` as the container's command; passes on exit code 0 and, when given, when
    /// stdout with trailing whitespace trimmed equals `expect_stdout`.
    Command {
        argv: Vec<String>,
        expect_stdout: Option<String>,
    },
    /// Starts the image's own command and polls `http://<container>:<port><path>`.
    Http(HttpCheck),
    /// A file in the image exists, with the given permission bits and owner.
    File(FileCheck),
    /// The user the image runs as; root fails unless allowed.
    User { allow_root: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    /// Port inside the container.
    pub port: u16,
    pub path: String,
    pub status: u16,
    /// Text the response body must contain.
    pub contains: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    pub path: String,
    /// Permission bits, like 0o644.
    pub mode: Option<u32>,
    /// `user` or `user:group`, as names or ids.
    pub owner: Option<String>,
}

pub(super) fn argv(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: Vec<ScalarString>,
    example: &str,
) -> Option<Vec<String>> {
    let argv: Vec<String> = raw.into_iter().map(|s| s.0).collect();
    if argv.is_empty() || argv[0].trim().is_empty() {
        d.error(
            field,
            "is an empty command",
            format!("write the program and its arguments as a list, like {example}"),
        );
        return None;
    }
    if argv.iter().any(|a| a.contains('\0')) {
        d.error(
            field,
            "contains a NUL character",
            "remove it; arguments are passed to execve",
        );
        return None;
    }
    Some(argv)
}

pub(super) fn timeout(
    d: &mut Diagnostics,
    field: &FieldPath,
    value: Option<u64>,
    default: u64,
) -> u64 {
    match value {
        None => default,
        Some(seconds) if (1..=MAX_TIMEOUT_SECONDS).contains(&seconds) => seconds,
        Some(seconds) => {
            d.error(
                field,
                format!("{seconds} is out of range"),
                format!("give a number of seconds from 1 to {MAX_TIMEOUT_SECONDS}"),
            );
            default
        }
    }
}

pub(super) fn validate_http(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawHttpCheck,
) -> Option<HttpCheck> {
    let port = match raw.port {
        Some(0) => {
            d.error(
                &field.key("port"),
                "port 0 is not a port",
                "give the port the service listens on inside the container, like 80",
            );
            None
        }
        Some(port) => Some(port),
        None => {
            d.error(
                &field.key("port"),
                "is missing",
                "add 'port:', the port the service listens on inside the container, like 80",
            );
            None
        }
    };
    let path = raw.path.unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        d.error(
            &field.key("path"),
            format!("'{path}' is not a URL path"),
            "write a path starting with '/', like /healthz (encode spaces as %20)",
        );
    }
    let status = raw.status.unwrap_or(200);
    if !(100..=599).contains(&status) {
        d.error(
            &field.key("status"),
            format!("{status} is not an HTTP status code"),
            "give the expected status, from 100 to 599, like 200",
        );
    }
    Some(HttpCheck {
        port: port?,
        path,
        status,
        contains: raw.contains,
    })
}

pub(super) fn validate_test(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawTest,
) -> Option<ImageTest> {
    let errors_before = d.list.len();
    let name = match raw.name {
        Some(name) if !name.trim().is_empty() && !name.contains(['\n', '\r']) => name,
        Some(_) => {
            d.error(
                &field.key("name"),
                "is empty or has a line break",
                "give the test a short one-line name, like 'serves the index page'",
            );
            String::new()
        }
        None => {
            d.error(
                &field.key("name"),
                "is missing",
                "add 'name:', a short description shown in reports, like 'serves the index page'",
            );
            String::new()
        }
    };
    let kinds: Vec<&str> = [
        ("command", raw.command.is_some()),
        ("http", raw.http.is_some()),
        ("file", raw.file.is_some()),
        ("user", raw.user.is_some()),
    ]
    .iter()
    .filter(|(_, present)| *present)
    .map(|(kind, _)| *kind)
    .collect();
    if kinds.len() != 1 {
        let message = if kinds.is_empty() {
            "says nothing to check".to_string()
        } else {
            format!("has more than one check: {}", kinds.join(", "))
        };
        d.error(
            field,
            message,
            "give each test exactly one of command:, http:, file: or user: (split it into \
             several tests)",
        );
        return None;
    }
    if raw.expect_stdout.is_some() && raw.command.is_none() {
        d.error(
            &field.key("expect_stdout"),
            "only applies to command tests",
            "remove it, or make this a command test",
        );
    }
    let timeout_seconds = timeout(
        d,
        &field.key("timeout_seconds"),
        raw.timeout_seconds,
        DEFAULT_TEST_TIMEOUT_SECONDS,
    );
    let check = if let Some(command) = raw.command {
        TestCheck::Command {
            argv: argv(
                d,
                &field.key("command"),
                command,
                "[cat, /etc/debian_version]",
            )?,
            expect_stdout: raw.expect_stdout.map(|s| s.0),
        }
    } else if let Some(http) = raw.http {
        TestCheck::Http(validate_http(d, &field.key("http"), http)?)
    } else if let Some(file) = raw.file {
        TestCheck::File(validate_file_check(d, &field.key("file"), file)?)
    } else {
        TestCheck::User {
            allow_root: raw.user.and_then(|u| u.allow_root).unwrap_or(false),
        }
    };
    (d.list.len() == errors_before).then_some(ImageTest {
        name,
        timeout_seconds,
        check,
    })
}

fn validate_file_check(
    d: &mut Diagnostics,
    field: &FieldPath,
    raw: RawFileCheck,
) -> Option<FileCheck> {
    let path = match raw.path {
        Some(path) if path.starts_with('/') && !path.contains(['\n', '\0']) => Some(path),
        Some(path) => {
            d.error(
                &field.key("path"),
                format!("'{path}' is not an absolute path"),
                "write the file's absolute path in the image, like /etc/nginx/nginx.conf",
            );
            None
        }
        None => {
            d.error(
                &field.key("path"),
                "is missing",
                "add 'path:', the absolute path of the file in the image",
            );
            None
        }
    };
    let mode = raw.mode.and_then(|mode| {
        let text = mode.0;
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        let valid =
            (3..=5).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if valid && bits <= 0o7777 => Some(bits),
            _ => {
                d.error(
                    &field.key("mode"),
                    format!("'{text}' is not an octal file mode"),
                    "write the permission bits in octal, quoted, like \"0644\" or \"0755\"",
                );
                None
            }
        }
    });
    let owner = raw.owner.map(|o| o.0);
    if let Some(owner) = &owner {
        if !is_valid_user_spec(owner) {
            d.error(
                &field.key("owner"),
                format!("'{owner}' is not a user or user:group"),
                "write the owner like root, root:root or 0:0",
            );
        }
    }
    Some(FileCheck {
        path: path?,
        mode,
        owner,
    })
}
