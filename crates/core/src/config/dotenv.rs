//! `env_file` parsing. The format is the common dotenv subset: `KEY=VALUE`
//! lines, an optional `export ` prefix, `#` comments, single quotes taken
//! literally, double quotes with `\n`, `\t`, `\"` and `\\` escapes.
//!
//! Written here rather than taken from a crate on purpose: the usual crates
//! expand `${VAR}` from the orchestrator's own environment, which would leak
//! it into services that are meant to start clean.

/// Parses a dotenv text; an error names the 1-based line.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((idx, line)) = lines.next() {
        let lineno = idx + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed
            .strip_prefix("export ")
            .map_or(trimmed, str::trim_start);
        let Some((key, rest)) = trimmed.split_once('=') else {
            return Err((lineno, "expected KEY=VALUE".into()));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err((lineno, format!("invalid variable name `{key}`")));
        }
        let rest = rest.trim_start();
        let value = if let Some(body) = rest.strip_prefix('\'') {
            let mut body = body.to_string();
            // A single-quoted value may span lines until its closing quote.
            loop {
                if let Some(end) = body.find('\'') {
                    body.truncate(end);
                    break body;
                }
                match lines.next() {
                    Some((_, next)) => {
                        body.push('\n');
                        body.push_str(next);
                    }
                    None => return Err((lineno, "unterminated single quote".into())),
                }
            }
        } else if let Some(body) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars: Vec<char> = body.chars().collect();
            let mut i = 0;
            loop {
                if i >= chars.len() {
                    match lines.next() {
                        Some((_, next)) => {
                            value.push('\n');
                            chars = next.chars().collect();
                            i = 0;
                            continue;
                        }
                        None => return Err((lineno, "unterminated double quote".into())),
                    }
                }
                match chars[i] {
                    '"' => break value,
                    '\\' if i + 1 < chars.len() => {
                        i += 1;
                        value.push(match chars[i] {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                    }
                    c => value.push(c),
                }
                i += 1;
            }
        } else {
            let unquoted = match rest.find(" #") {
                Some(i) => &rest[..i],
                None => rest,
            };
            unquoted.trim_end().to_string()
        };
        if value.contains('\0') {
            return Err((lineno, "value contains a NUL character".into()));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_the_common_forms() {
        let text = "# comment\nA=1\nexport B = two words # note\nC='lit $X \\n'\nD=\"a\\nb \\\"q\\\"\"\nE=\nF=\"multi\nline\"\n";
        let got = parse(text).unwrap();
        let expect = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $X \\n"),
            ("D", "a\nb \"q\""),
            ("E", ""),
            ("F", "multi\nline"),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("A=1\nnot a pair\n").unwrap_err().0, 2);
        assert_eq!(parse("A=1\n\nB='open\n").unwrap_err().0, 3);
        assert!(parse("BAD-NAME=1").is_err());
    }
}
