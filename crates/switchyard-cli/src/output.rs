//! How the CLI prints: readable tables on a terminal, JSON for scripts (`--json`).
//!
//! Results go to stdout, everything else (progress, notes, errors) to stderr, so
//! `switchyard dlq list --json | jq` always sees clean JSON.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// Whether stdout is a terminal (tables get borders and fit the width there).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Whether stderr is a terminal (progress bars are drawn only there).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether stdin is a terminal (a question can be asked).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// A table with `header` and `rows`: boxed and fitted to the width on a terminal, plain
/// space-aligned columns otherwise (for `grep`, `awk` and logs).
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    render_table(header, rows, stdout_is_terminal())
}

/// [`table`] with the terminal decision made by the caller (for tests).
pub fn render_table(
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
    terminal: bool,
) -> String {
    let mut t = Table::new();
    if terminal {
        t.load_style(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        t.load_style(presets::NOTHING).force_no_tty();
    }
    t.set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    if terminal {
        t.to_string()
    } else {
        // Without borders, comfy-table pads every line; trailing blanks only get in the way.
        t.lines()
            .map(|l| l.trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Prints one value as a single JSON line (JSON Lines, for streams such as `tail`).
pub fn json_line(value: &impl Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    print_line(&line);
    Ok(())
}

/// Prints one value as indented JSON (a whole answer, such as `dlq list --json`).
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    print_line(&text);
    Ok(())
}

/// Writes a line to stdout, ignoring a closed pipe (`| head`).
pub fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes a note to stderr.
pub fn note(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line.as_ref());
}

/// "1 dead letter", "2 dead letters".
pub fn dead_letters(n: usize) -> String {
    if n == 1 {
        "1 dead letter".to_owned()
    } else {
        format!("{n} dead letters")
    }
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A time as operators read it: `2026-11-25 10:00:00Z`.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// `-` for nothing.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dead_letter_is_singular() {
        assert_eq!(dead_letters(1), "1 dead letter");
        assert_eq!(dead_letters(0), "0 dead letters");
        assert_eq!(dead_letters(3), "3 dead letters");
    }

    #[test]
    fn plain_tables_align_columns_without_borders() {
        let out = render_table(
            &["ID", "CLASS"],
            [
                vec!["a".to_owned(), "permanent".to_owned()],
                vec!["bbbb".to_owned(), "invalid".to_owned()],
            ],
            false,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].contains("ID") && lines[0].contains("CLASS"),
            "{out}"
        );
        let col = lines[0].find("CLASS").unwrap_or_default();
        assert_eq!(lines[1].find("permanent"), Some(col), "{out}");
        assert_eq!(lines[2].find("invalid"), Some(col), "{out}");
        assert!(!out.contains('│') && !out.contains('|'), "{out}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{out}");
    }

    #[test]
    fn terminal_tables_have_borders() {
        let out = render_table(&["ID"], [vec!["x".to_owned()]], true);
        assert!(out.contains('│'), "{out}");
    }

    #[test]
    fn truncation_and_ages() {
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
        let now = Utc::now();
        assert_eq!(age(now, now - chrono::Duration::seconds(5)), "5s");
        assert_eq!(age(now, now - chrono::Duration::minutes(5)), "5m");
        assert_eq!(age(now, now - chrono::Duration::hours(5)), "5h");
        assert_eq!(age(now, now - chrono::Duration::days(5)), "5d");
        assert_eq!(or_dash(None::<u32>), "-");
    }
}
