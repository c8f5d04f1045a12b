//! A walker over a TOML table that collects every problem with its key path instead of stopping
//! at the first, and reports keys it does not know.

use std::collections::BTreeSet;
use toml::{Table, Value};

/// Collected problems, each `key.path: what is wrong`.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// Records one problem at `path`.
    pub fn add(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }
}

/// One table being read, with the path that leads to it.
pub struct Reader<'a> {
    table: &'a Table,
    path: String,
    seen: BTreeSet<&'static str>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Reader<'a> {
    /// Starts reading `table` found at `path` (`""` for the root).
    pub fn new(table: &'a Table, path: impl Into<String>) -> Self {
        Reader {
            table,
            path: path.into(),
            seen: BTreeSet::new(),
        }
    }

    /// The key's full path.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.table.get(key)
    }

    /// A string, if present.
    pub fn string(&mut self, key: &'static str, p: &mut Problems) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                p.add(
                    &self.path_of(key),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A non-negative integer, if present.
    pub fn uint(&mut self, key: &'static str, p: &mut Problems) -> Option<u64> {
        match self.value(key)? {
            Value::Integer(i) if *i >= 0 => Some(*i as u64),
            Value::Integer(_) => {
                p.add(&self.path_of(key), "must not be negative");
                None
            }
            other => {
                p.add(
                    &self.path_of(key),
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A boolean, if present.
    pub fn boolean(&mut self, key: &'static str, p: &mut Problems) -> Option<bool> {
        match self.value(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                p.add(
                    &self.path_of(key),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An array of strings, if present.
    pub fn strings(&mut self, key: &'static str, p: &mut Problems) -> Option<Vec<String>> {
        let path = self.path_of(key);
        match self.value(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => p.add(
                            &format!("{path}[{i}]"),
                            format!("expected a string, found {}", other.type_str()),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                p.add(
                    &path,
                    format!("expected an array of strings, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A sub-table, if present.
    pub fn table(&mut self, key: &'static str, p: &mut Problems) -> Option<Reader<'a>> {
        let path = self.path_of(key);
        match self.value(key)? {
            Value::Table(t) => Some(Reader::new(t, path)),
            other => {
                p.add(
                    &path,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A table whose keys are names the user chose (`[tenants."t_a"]`): a reader for each
    /// entry's table, with its path.
    pub fn named_tables(
        &mut self,
        key: &'static str,
        p: &mut Problems,
    ) -> Vec<(String, Reader<'a>)> {
        let path = self.path_of(key);
        match self.value(key) {
            None => Vec::new(),
            Some(Value::Table(t)) => t
                .iter()
                .filter_map(|(name, v)| match v {
                    Value::Table(inner) => Some((
                        name.clone(),
                        Reader::new(inner, format!("{path}.\"{name}\"")),
                    )),
                    other => {
                        p.add(
                            &format!("{path}.\"{name}\""),
                            format!("expected a table, found {}", other.type_str()),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                p.add(
                    &path,
                    format!("expected a table, found {}", other.type_str()),
                );
                Vec::new()
            }
        }
    }

    /// An array of tables, if present.
    pub fn tables(&mut self, key: &'static str, p: &mut Problems) -> Option<Vec<Reader<'a>>> {
        let path = self.path_of(key);
        match self.value(key)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Table(t) => out.push(Reader::new(t, format!("{path}[{i}]"))),
                        other => p.add(
                            &format!("{path}[{i}]"),
                            format!("expected a table, found {}", other.type_str()),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                p.add(
                    &path,
                    format!("expected an array of tables, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// Reports every key of the table that was never asked for, with the known key it most
    /// likely meant.
    pub fn finish(self, p: &mut Problems) {
        for key in self.table.keys() {
            if self.seen.contains(key.as_str()) {
                continue;
            }
            match closest(key, &self.seen) {
                Some(k) => p.add(
                    &join(&self.path, key),
                    format!("unknown key (did you mean `{k}`?)"),
                ),
                None => p.add(&join(&self.path, key), "unknown key"),
            }
        }
    }
}

/// The known key closest to `key`, when it is close enough to be a typo of it.
fn closest<'k>(key: &str, known: &BTreeSet<&'k str>) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
