//! Human output: durations, colours, tables.

use std::io::IsTerminal;

use blackhole_api::State;

pub fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// `3d4h`, `2h13m`, `5m07s`, `42s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `512B`, `12.3K`, `45.6M`, `1.2G` (powers of 1024).
pub fn bytes(n: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

pub fn state(s: State, colour: bool) -> String {
    if !colour {
        return s.to_string();
    }
    let code = match s {
        State::Running => "32",
        State::Exited => "36",
        State::Failed => "1;31",
        State::Restarting | State::Blocked => "33",
        State::Starting | State::Stopping => "34",
        State::Stopped => "2",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

/// A stable colour per service name for log prefixes.
pub fn name_colour(name: &str) -> &'static str {
    const COLOURS: [&str; 6] = ["36", "32", "33", "35", "34", "31"];
    let h = name
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    COLOURS[h as usize % COLOURS.len()]
}

/// Left-aligned columns; `widths` are computed from the content. Colour
/// escapes are not counted as width.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let visible = |s: &str| {
        let mut n = 0;
        let mut esc = false;
        for c in s.chars() {
            match (esc, c) {
                (false, '\x1b') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, _) => n += 1,
            }
        }
        n
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(visible(cell));
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - visible(cell) + 3));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(307), "5m07s");
        assert_eq!(duration(7980), "2h13m");
        assert_eq!(duration(273600), "3d4h");
    }

    #[test]
    fn tables_align_ignoring_colour() {
        let t = table(
            &["A", "B"],
            &[
                vec!["\x1b[32mxx\x1b[0m".into(), "1".into()],
                vec!["yyyy".into(), "2".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A      B");
        assert_eq!(lines[2], "yyyy   2");
    }
}
