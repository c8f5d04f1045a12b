//! Route path patterns: literal segments, `{var}` segments and a trailing `/**`, what a match
//! captures, and templates filled from the captures.

use smallvec::SmallVec;
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// Its name, shared with every match's captures.
    Var(Arc<str>),
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
    tail: bool,
    source: String,
}

/// Variables captured by a match, and the unmatched tail of a `/**` pattern: the matched path
/// copied once, and where each capture is in it (a match allocates once, whatever it captures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    /// The matched path without its leading `/`.
    path: String,
    /// `{name}` → where its value is in `path`.
    vars: SmallVec<[(Arc<str>, Range<usize>); 2]>,
    /// Where what `/**` matched starts in `path` (past its end when it matched nothing).
    tail: Option<usize>,
}

impl Captures {
    /// A captured variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, at)| &self.path[at.clone()])
    }

    /// Every `{name}` and its value, in the pattern's order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .map(|(n, at)| (&**n, &self.path[at.clone()]))
    }

    /// What `/**` matched (without its leading `/`); `None` for a pattern without `/**`.
    pub fn tail(&self) -> Option<&str> {
        self.tail.map(|at| self.path.get(at..).unwrap_or_default())
    }
}

/// The `/`-separated segments of a path without its leading `/` (none for `""`), found with
/// `memchr` (as `split('/')` would give them, at a fraction of its cost for short segments).
struct Segments<'a> {
    rest: Option<&'a str>,
}

impl<'a> Segments<'a> {
    fn new(path: &'a str) -> Self {
        Segments {
            rest: Some(path).filter(|p| !p.is_empty()),
        }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match memchr::memchr(b'/', rest.as_bytes()) {
            Some(at) => {
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => self.rest.take(),
        }
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
                segments.push(Segment::Var(name.into()));
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
            Segment::Var(n) => Some(&**n),
            Segment::Literal(_) => None,
        })
    }

    /// Matches a request path. Variables must have the syntax of a context value.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        // Segments of `rest` (none when it is empty), read as the pattern's are matched.
        let mut parts = Segments::new(rest);
        let mut vars = SmallVec::new();
        let mut consumed = 0;
        for seg in &self.segments {
            let part = parts.next()?;
            let at = consumed..consumed + part.len();
            consumed += part.len() + 1;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Var(name) => {
                    if !railgate_policy::field::valid_value(part.as_bytes()) {
                        return None;
                    }
                    vars.push((name.clone(), at));
                }
            }
        }
        let tail = match self.tail {
            false if parts.next().is_some() => return None,
            false => None,
            true => {
                if Segments::new(rest.get(consumed..).unwrap_or_default())
                    .any(|s| s == ".." || s == ".")
                {
                    return None;
                }
                Some(consumed)
            }
        };
        Some(Captures {
            path: rest.to_owned(),
            vars,
            tail,
        })
    }

    /// Fills a template (`/x/{thread_id}/**`) from captures.
    pub fn render(template: &str, caps: &Captures) -> String {
        let mut out = String::with_capacity(template.len() + 16);
        for part in template.trim_start_matches('/').split('/') {
            if part == "**" {
                if let Some(t) = caps.tail().filter(|t| !t.is_empty()) {
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
