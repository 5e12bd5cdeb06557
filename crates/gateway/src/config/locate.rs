//! Finding the line of a configuration field (`routes[3].service`, `services.users.timeout`)
//! in the file, so a validation error points where to look. Block-style YAML, as configs are
//! written; where a segment cannot be found the nearest enclosing line is given.

/// The 1-based line of `path` in `text`, if its first segment is there at all.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut segments = segments(path).into_iter();
    let first = segments.next()?;
    let Segment::Key(top) = first else {
        return None;
    };
    let mut at = lines
        .iter()
        .position(|line| key_of(line) == Some((0, top)))?;
    for segment in segments {
        let indent = indent_of(lines[at]);
        let found = match segment {
            // A flow mapping on the same line (`users: { upstreams: [...], timeout: 5s }`).
            Segment::Key(key) if has_flow_key(lines[at], key) => Some(at),
            Segment::Key(key) => child_lines(&lines, at, indent)
                .find(|&i| key_of(lines[i]).is_some_and(|(_, k)| k == key)),
            Segment::Index(index) => {
                let items: Vec<usize> = child_lines(&lines, at, indent)
                    .filter(|&i| lines[i].trim_start().starts_with("- ") || lines[i].trim() == "-")
                    .collect();
                let item_indent = items.first().map(|&i| indent_of(lines[i]));
                items
                    .into_iter()
                    .filter(|&i| Some(indent_of(lines[i])) == item_indent)
                    .nth(index)
            }
        };
        match found {
            Some(line) => at = line,
            None => break,
        }
    }
    Some(at + 1)
}

#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for index in rest.split('[') {
            if let Some(Ok(n)) = index.strip_suffix(']').map(str::parse) {
                out.push(Segment::Index(n));
            }
        }
    }
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// `(indent, key)` when the line is `key:` or `- key:` (the key of a sequence item's mapping).
fn key_of(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
    let (key, _) = body.split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && !key.starts_with('#') && !key.contains(' '))
        .then_some((indent_of(line), key))
}

fn has_flow_key(line: &str, key: &str) -> bool {
    let Some(open) = line.find('{') else {
        return false;
    };
    line[open..]
        .split([',', '{'])
        .any(|part| part.trim_start().starts_with(&format!("{key}:")))
}

/// The lines inside the block that starts at `parent` (indented deeper than `indent`).
fn child_lines<'a>(
    lines: &'a [&str],
    parent: usize,
    indent: usize,
) -> impl Iterator<Item = usize> + 'a {
    (parent + 1..lines.len())
        .filter(|&i| !lines[i].trim().is_empty() && !lines[i].trim_start().starts_with('#'))
        .take_while(move |&i| {
            indent_of(lines[i]) > indent || lines[i].trim_start().starts_with("- ") && indent == 0
        })
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const TEXT: &str = "\
listen: 127.0.0.1:8001
services:
  users: { upstreams: [\"http://a\"], timeout: 5s }
  orders:
    upstreams: [\"http://b\"]
    timeout: soon
routes:
  - { path: /a, methods: [GET], service: users, auth: public }
  # a comment
  - path: /b
    methods: [GET]
    service: nobody
tokens:
  access_ttl: 15m
";

    #[test]
    fn fields_are_found_in_block_and_flow_style() {
        assert_eq!(line_of(TEXT, "listen"), Some(1));
        assert_eq!(line_of(TEXT, "services.users.timeout"), Some(3));
        assert_eq!(line_of(TEXT, "services.orders.timeout"), Some(6));
        assert_eq!(line_of(TEXT, "routes[0].service"), Some(8));
        assert_eq!(line_of(TEXT, "routes[1].service"), Some(12));
        assert_eq!(line_of(TEXT, "tokens.access_ttl"), Some(14));
    }

    #[test]
    fn a_missing_segment_points_at_its_parent_and_a_missing_top_key_at_nothing() {
        assert_eq!(line_of(TEXT, "routes[1].auth"), Some(10));
        assert_eq!(line_of(TEXT, "routes[7]"), Some(7));
        assert_eq!(line_of(TEXT, "state"), None);
    }
}
