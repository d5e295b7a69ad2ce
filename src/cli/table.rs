//! A tiny column aligner and the small text helpers the tables share: colour, ages,
//! truncation. No table crate: the tables are plain left-aligned columns.

use std::io::{self, Write};

use chrono::{DateTime, Utc};

use crate::state::{Authorization, MessageState};

/// ANSI colours used for state names (only when stdout is a terminal).
pub const GREEN: &str = "\x1b[32m";
pub const YELLOW: &str = "\x1b[33m";
pub const RED: &str = "\x1b[31m";
pub const CYAN: &str = "\x1b[36m";
pub const MAGENTA: &str = "\x1b[35m";
pub const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// One cell: its text, and a colour used only when colour is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: String,
    pub color: Option<&'static str>,
}

impl Cell {
    pub fn colored(text: impl Into<String>, color: Option<&'static str>) -> Self {
        Cell {
            text: text.into(),
            color,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Self {
        Cell {
            text: text.into(),
            color: None,
        }
    }
}

/// Rows under a header, every column as wide as its widest cell; free lines (indented
/// details under a row) may sit between rows and do not widen the columns.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Row>,
}

#[derive(Debug, Clone)]
enum Row {
    Cells(Vec<Cell>),
    Line(String),
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(Row::Cells(row));
    }

    /// A line of its own (written as is, cut to the width) after the last row.
    pub fn push_line(&mut self, line: String) {
        self.rows.push(Row::Line(line));
    }

    /// Writes the table; colour codes are added around cells after padding is
    /// computed, so they never shift the columns.
    pub fn write(&self, out: &mut dyn Write, color: bool) -> io::Result<()> {
        self.write_within(out, color, usize::MAX)
    }

    /// [`Table::write`], no line longer than `width` characters: a cell that would
    /// cross it is cut with `…`, and the cells after it are left out.
    pub fn write_within(&self, out: &mut dyn Write, color: bool, width: usize) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            let Row::Cells(row) = row else { continue };
            for (i, cell) in row.iter().enumerate() {
                let width = cell.text.chars().count();
                match widths.get_mut(i) {
                    Some(w) => *w = (*w).max(width),
                    None => widths.push(width),
                }
            }
        }
        let header = Row::Cells(self.header.iter().map(|h| Cell::from(*h)).collect());
        for row in std::iter::once(&header).chain(&self.rows) {
            let row = match row {
                Row::Line(text) => {
                    writeln!(out, "{}", truncate(text, width).trim_end())?;
                    continue;
                }
                Row::Cells(row) => row,
            };
            let mut line = String::new();
            // Characters on screen so far (colour codes take none).
            let mut shown = 0;
            for (i, cell) in row.iter().enumerate() {
                let gap = if i > 0 { 2 } else { 0 };
                if shown + gap >= width {
                    break;
                }
                line.push_str(&" ".repeat(gap));
                shown += gap;
                let text = truncate(&cell.text, width - shown);
                let len = text.chars().count();
                match cell.color.filter(|_| color) {
                    Some(code) => line.push_str(&format!("{code}{text}{RESET}")),
                    None => line.push_str(&text),
                }
                shown += len;
                if i + 1 < row.len() {
                    let pad = widths[i].saturating_sub(len).min(width - shown);
                    line.push_str(&" ".repeat(pad));
                    shown += pad;
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The colour of a message state's name.
pub fn state_color(state: MessageState) -> Option<&'static str> {
    Some(match state {
        MessageState::Sent => GREEN,
        MessageState::Queued => YELLOW,
        MessageState::Sending => CYAN,
        MessageState::Failed => RED,
        MessageState::Expired => MAGENTA,
        MessageState::Cancelled => DIM,
    })
}

/// The colour of an authorization: green only for `authorized`, red for the states
/// that need the account owner (blocked, yellow card), yellow for the rest.
pub fn authorization_color(state: &Authorization) -> Option<&'static str> {
    Some(match state {
        Authorization::Authorized => GREEN,
        Authorization::Blocked | Authorization::YellowCard => RED,
        _ => YELLOW,
    })
}

/// `state` wrapped in its colour, for key: value output.
pub fn paint(text: &str, code: Option<&'static str>, color: bool) -> String {
    match code.filter(|_| color) {
        Some(code) => format!("{code}{text}{RESET}"),
        None => text.to_string(),
    }
}

/// How many columns the output may use: the terminal's width when stdout is one (read
/// again on every call, so `status --watch` follows a resize), else 80.
pub fn output_width(terminal: bool) -> usize {
    const DEFAULT: usize = 80;
    if !terminal {
        return DEFAULT;
    }
    // SAFETY: TIOCGWINSZ only writes the winsize struct we pass; fd 1 may be anything,
    // and a failure is reported by the return value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col >= 20 {
        usize::from(size.ws_col)
    } else {
        DEFAULT
    }
}

/// 42 → `42s`, 125 → `2m05s`, 3725 → `1h02m`, 200000 → `2d07h`.
pub fn humanize_secs(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Parses an API timestamp (RFC 3339).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `5m02s ago`; the raw text if it is not a timestamp.
pub fn ago(text: &str, now: DateTime<Utc>) -> String {
    match parse_time(text) {
        Some(t) => format!(
            "{} ago",
            humanize_secs((now - t).num_milliseconds() as f64 / 1000.0)
        ),
        None => text.to_string(),
    }
}

/// `in 3s`, or `now` once the moment has come; the raw text if it is not a timestamp.
pub fn until(text: &str, now: DateTime<Utc>) -> String {
    match parse_time(text) {
        Some(t) if t > now => {
            format!(
                "in {}",
                humanize_secs((t - now).num_milliseconds() as f64 / 1000.0)
            )
        }
        Some(_) => "now".to_string(),
        None => text.to_string(),
    }
}

/// At most `max` characters on one line, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_colour_does_not_shift_them() {
        let mut table = Table::new(vec!["ID", "STATE", "X"]);
        table.push(vec![
            "a".into(),
            Cell::colored("sent", state_color(MessageState::Sent)),
            "1".into(),
        ]);
        table.push(vec![
            "long-id".into(),
            Cell::colored("queued", state_color(MessageState::Queued)),
            "22".into(),
        ]);
        let mut plain = Vec::new();
        table.write(&mut plain, false).unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert_eq!(
            plain,
            "ID       STATE   X\na        sent    1\nlong-id  queued  22\n"
        );
        let mut colored = Vec::new();
        table.write(&mut colored, true).unwrap();
        let colored = String::from_utf8(colored).unwrap();
        assert!(colored.contains("\x1b[32msent\x1b[0m    1"), "{colored:?}");
    }

    #[test]
    fn ages_are_short_and_human() {
        assert_eq!(humanize_secs(12.5), "13s");
        assert_eq!(humanize_secs(125.0), "2m05s");
        assert_eq!(humanize_secs(3725.0), "1h02m");
        assert_eq!(humanize_secs(200_000.0), "2d07h");
        let now = parse_time("2026-11-24T10:00:10Z").unwrap();
        assert_eq!(ago("2026-11-24T10:00:00.000Z", now), "10s ago");
        assert_eq!(until("2026-11-24T10:00:13Z", now), "in 3s");
        assert_eq!(until("2026-11-24T09:00:00Z", now), "now");
    }

    #[test]
    fn long_text_is_cut_on_one_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a\nb", 10), "a b");
        assert_eq!(truncate("abcdefghijkl", 5), "abcd…");
    }
}
