//! Output helpers: progress indicators only on a terminal, and plain text tables.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress display. On a terminal: spinners with what is happening and for how long. Off a
/// terminal (logs): one line per stage on stderr, with the time since the job started. stdout
/// is never touched, so `--format json` stays clean.
#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
    /// Off a terminal: write stage lines to stderr.
    stage_lines: bool,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            bars: None,
            stage_lines: false,
            started: Instant::now(),
        }
    }
}

impl Progress {
    /// Spinners when stderr is a terminal, stage lines otherwise; nothing when `quiet`.
    pub fn auto(quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            bars: (!quiet && terminal).then(MultiProgress::new),
            stage_lines: !quiet && !terminal,
            started: Instant::now(),
        }
    }

    pub fn disabled() -> Progress {
        Progress::default()
    }

    /// A spinner with a message; cleared when dropped.
    pub fn spinner(&self, msg: &str) -> Spinner {
        let bar = self.bars.as_ref().map(|m| {
            let b = m.add(ProgressBar::new_spinner());
            b.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
            b.set_message(msg.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Spinner(bar)
    }

    /// A stage of the work on one image begins (`nginx`, `build`): a spinner on a terminal,
    /// else one line on stderr. The stage lasts until the returned spinner is dropped.
    pub fn stage(&self, image: &str, stage: &str) -> Spinner {
        let line = stage_line(image, stage, self.started.elapsed());
        if self.stage_lines {
            eprintln!("{line}");
        }
        self.spinner(&format!("{image}: {stage}"))
    }
}

/// `rebake [  12.3s] nginx: test`: what a log shows for a stage.
fn stage_line(image: &str, stage: &str, since_start: Duration) -> String {
    format!(
        "rebake [{:>7.1}s] {image}: {stage}",
        since_start.as_secs_f64()
    )
}

pub struct Spinner(Option<ProgressBar>);

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Renders rows as an aligned text table (first row is the header).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `word` as a POSIX shell reads it back: unchanged when it has no special character, else in
/// single quotes.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How to run this rebake again from a shell, for the commands rebake prints as hints: the name
/// it was started by when that is what `PATH` finds, else the absolute path of this executable
/// (a user who ran `cargo run` has no `rebake` on `PATH`).
pub fn self_command() -> String {
    let exe = std::env::current_exe().ok();
    let argv0 = std::env::args_os().next().map(std::path::PathBuf::from);
    if let (Some(exe), Some(argv0)) = (&exe, &argv0) {
        let on_path = argv0.components().count() == 1
            && std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(argv0))
                    .find(|p| p.is_file())
                    .and_then(|p| p.canonicalize().ok())
                    .is_some_and(|p| exe.canonicalize().is_ok_and(|e| e == p))
            });
        if on_path {
            return shell_quote(&argv0.to_string_lossy());
        }
    }
    // Only the rebake binary names itself; a program using the library (a test) says `rebake`.
    match exe {
        Some(exe) if exe.file_name().is_some_and(|n| n == "rebake") => {
            shell_quote(&exe.to_string_lossy())
        }
        _ => "rebake".to_string(),
    }
}

/// The command that builds `image`, as a hint to paste.
pub fn build_hint(image: &str) -> String {
    format!("{} build {}", self_command(), shell_quote(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_line_names_the_image_the_stage_and_the_time_since_the_start() {
        assert_eq!(
            stage_line("nginx", "test", Duration::from_millis(12_345)),
            "rebake [   12.3s] nginx: test"
        );
    }

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("/root/.local/state/rebake"),
            "/root/.local/state/rebake"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }
}
