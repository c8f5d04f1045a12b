//! Finds the line of a config file where a key path (`limits.max_header_bytes`,
//! `routes[1].path`) is written, so that a problem can be reported with its line. Follows table
//! headers (`[a.b]`), arrays of tables (`[[routes]]`) and plain `key = value` lines; a path it
//! cannot find (a default, an inline table) has no line.

/// The 1-based line where `path` is written in `text`, if it is.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_owned();
            let i = match counts.iter_mut().find(|(k, _)| *k == name) {
                Some((_, c)) => {
                    *c += 1;
                    *c - 1
                }
                None => {
                    counts.push((name.clone(), 1));
                    0
                }
            };
            table = format!("{name}[{i}]");
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_owned();
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches('"');
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            let full = if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            if full == path {
                return Some(n + 1);
            }
            continue;
        } else {
            continue;
        }
        if table == path {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn keys_tables_and_arrays_of_tables_are_found() {
        let text = "bogus = 1\n# c\n[limits]\nmax_header_bytes = 10\n\n[[routes]]\nname = \"a\"\n\
                    [[routes]]\nname = \"b\"\npath = \"nope\"\n[auth]\n\"leeway_s\" = -1\n";
        assert_eq!(line_of(text, "bogus"), Some(1));
        assert_eq!(line_of(text, "limits.max_header_bytes"), Some(4));
        assert_eq!(line_of(text, "routes[1].path"), Some(10));
        assert_eq!(line_of(text, "routes[1]"), Some(8));
        assert_eq!(line_of(text, "auth.leeway_s"), Some(12));
        assert_eq!(line_of(text, "routes[2].path"), None);
        assert_eq!(line_of(text, "limits.max_body_bytes"), None);
    }
}
