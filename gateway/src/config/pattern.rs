//! Route path patterns: literal segments, `{var}` segments and a trailing `/**`, what a match
//! captures, and templates filled from the captures.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var(String),
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
    tail: bool,
    source: String,
}

/// Variables captured by a match, and the unmatched tail of a `/**` pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    /// `{name}` → value.
    pub vars: Vec<(String, String)>,
    /// What `/**` matched (without its leading `/`).
    pub tail: Option<String>,
}

impl Captures {
    /// A captured variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Pattern {
    /// Compiles `/a/{b}/c/**`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err("must start with /".into());
        };
        let mut segments = Vec::new();
        let mut tail = false;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            if *part == "**" {
                if i + 1 != parts.len() {
                    return Err("** is only allowed as the last segment".into());
                }
                tail = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("bad variable {part:?}"));
                }
                segments.push(Segment::Var(name.to_owned()));
            } else if part.is_empty() || part.contains(['{', '}', '*']) {
                return Err(format!("bad segment {part:?}"));
            } else {
                segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(Pattern {
            segments,
            tail,
            source: text.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Names of the `{vars}`.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Matches a request path. Variables must have the syntax of a context value.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        // Segments of `rest` (none when it is empty), read as the pattern's are matched.
        let mut parts = rest.split('/').filter(|_| !rest.is_empty());
        let mut caps = Captures::default();
        let mut consumed = 0;
        for seg in &self.segments {
            let part = parts.next()?;
            consumed += part.len() + 1;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Var(name) => {
                    if !railgate_policy::field::valid_value(part.as_bytes()) {
                        return None;
                    }
                    caps.vars.push((name.clone(), part.to_owned()));
                }
            }
        }
        if !self.tail {
            return parts.next().is_none().then_some(caps);
        }
        let tail = rest.get(consumed..).unwrap_or_default();
        if tail.split('/').any(|s| s == ".." || s == ".") {
            return None;
        }
        caps.tail = Some(tail.to_owned());
        Some(caps)
    }

    /// Fills a template (`/x/{thread_id}/**`) from captures.
    pub fn render(template: &str, caps: &Captures) -> String {
        let mut out = String::with_capacity(template.len() + 16);
        for part in template.trim_start_matches('/').split('/') {
            if part == "**" {
                if let Some(t) = caps.tail.as_deref().filter(|t| !t.is_empty()) {
                    out.push('/');
                    out.push_str(t);
                } else if out.is_empty() {
                    out.push('/');
                }
                continue;
            }
            out.push('/');
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => out.push_str(caps.get(name).unwrap_or_default()),
                None => out.push_str(part),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}
