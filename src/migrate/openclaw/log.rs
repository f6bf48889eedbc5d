//! Where a key is (its path as written and, for a legacy key, the key that replaced it) and the
//! entries a block's keys produce.

use crate::migrate::json5::Value;
use crate::migrate::{Entry, Status};

/// Values shown in the report are cut to this many characters.
const MAX_SHOWN: usize = 120;

/// A key's path in the input and, for a legacy key, in today's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub path: String,
    pub current: Option<String>,
}

fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", serde_json::Value::String(key.to_string())),
    }
}

impl Loc {
    pub fn new(path: impl Into<String>) -> Loc {
        Loc {
            path: path.into(),
            current: None,
        }
    }

    /// A legacy key at `path`, called `current` today.
    pub fn legacy(path: impl Into<String>, current: impl Into<String>) -> Loc {
        Loc {
            path: path.into(),
            current: Some(current.into()),
        }
    }

    pub fn key(&self, key: &str) -> Loc {
        Loc {
            path: join(&self.path, key),
            current: self.current.as_ref().map(|c| join(c, key)),
        }
    }

    /// A key renamed in place: `key` as written, `now` in today's schema.
    pub fn renamed(&self, key: &str, now: &str) -> Loc {
        Loc {
            path: join(&self.path, key),
            current: Some(join(self.current.as_deref().unwrap_or(&self.path), now)),
        }
    }

    pub fn index(&self, i: usize) -> Loc {
        Loc {
            path: format!("{}[{i}]", self.path),
            current: self.current.as_ref().map(|c| format!("{c}[{i}]")),
        }
    }

    /// Whether this key lies in the block at `block`.
    pub fn is_under(&self, block: &Loc) -> bool {
        self.path == block.path
            || self.path.starts_with(&format!("{}.", block.path))
            || self.path.starts_with(&format!("{}[", block.path))
    }
}

/// A value as the report shows it: compact JSON, cut when long.
pub fn show(value: &Value) -> String {
    let mut text = String::new();
    write_value(&mut text, value);
    if text.chars().count() > MAX_SHOWN {
        let cut: String = text.chars().take(MAX_SHOWN).collect();
        return format!("{cut}...");
    }
    text
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&serde_json::Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
                if out.len() > MAX_SHOWN * 4 {
                    break;
                }
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push_str(": ");
                write_value(out, v);
                if out.len() > MAX_SHOWN * 4 {
                    break;
                }
            }
            out.push('}');
        }
    }
}

/// The entries of one section, in the order the keys were read.
#[derive(Debug, Default)]
pub struct Log {
    pub entries: Vec<Entry>,
}

impl Log {
    pub fn push(
        &mut self,
        loc: &Loc,
        status: Status,
        value: Option<String>,
        reason: impl Into<String>,
    ) {
        self.entries.push(Entry {
            key: loc.path.clone(),
            value,
            status,
            reason: reason.into(),
            legacy_of: loc.current.clone(),
        });
    }

    /// An entry that shows `value`.
    pub fn with(&mut self, loc: &Loc, status: Status, value: &Value, reason: impl Into<String>) {
        self.push(loc, status, Some(show(value)), reason);
    }

    /// An entry that does not show the value (secrets, subtrees taken whole).
    pub fn hidden(&mut self, loc: &Loc, status: Status, reason: impl Into<String>) {
        self.push(loc, status, None, reason);
    }

    /// A value OpenClaw's own schema rejects: the file never ran like this.
    pub fn invalid(&mut self, loc: &Loc, value: &Value, expected: &str, instead: &str) {
        self.with(
            loc,
            Status::Refused,
            value,
            format!(
                "not a valid value: expected {expected}, found {} (OpenClaw rejects the file at load); --allow-unsafe writes {instead}",
                value.kind()
            ),
        );
    }

    /// A key this migration does not know, in a block whose keys decide the sandbox.
    pub fn unknown(&mut self, loc: &Loc, block: &str) {
        self.hidden(
            loc,
            Status::Unknown,
            format!(
                "not a key of OpenClaw's {block} schema that this migration knows; OpenClaw's schema is strict, so it is a typo or a newer key, and it could be a restriction: refused so nothing is dropped unseen (--allow-unsafe drops it)"
            ),
        );
    }

    /// A whole subtree that is not sandbox configuration.
    pub fn not_sandbox(&mut self, loc: &Loc, what: &str) {
        self.hidden(
            loc,
            Status::Ignored,
            format!("{what}: not sandbox configuration; stockade has no counterpart"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_the_input() {
        let root = Loc::new("agents");
        assert_eq!(
            root.key("defaults").key("sandbox").path,
            "agents.defaults.sandbox"
        );
        assert_eq!(root.key("list").index(2).path, "agents.list[2]");
        assert_eq!(root.key("a.b").path, "agents[\"a.b\"]");
        let legacy = Loc::legacy("agent.sandbox", "agents.defaults.sandbox").key("docker");
        assert_eq!(legacy.path, "agent.sandbox.docker");
        assert_eq!(
            legacy.current.as_deref(),
            Some("agents.defaults.sandbox.docker")
        );
        let renamed = Loc::new("tools.exec").renamed("timeoutSec", "timeoutSeconds");
        assert_eq!(
            renamed.current.as_deref(),
            Some("tools.exec.timeoutSeconds")
        );
        assert!(legacy.is_under(&Loc::new("agent.sandbox")));
        assert!(!Loc::new("agent.sandboxes").is_under(&Loc::new("agent.sandbox")));
    }

    #[test]
    fn long_values_are_cut() {
        let v = Value::String("x".repeat(500));
        let shown = show(&v);
        assert!(shown.ends_with("...") && shown.chars().count() == MAX_SHOWN + 3);
    }
}
