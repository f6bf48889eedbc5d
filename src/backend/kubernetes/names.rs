//! The API server's rules for what the backend writes: object names and label values. Checked
//! before any request, so a name the server would refuse is refused here, naming the value.

use std::collections::BTreeMap;

use super::error::NameError;

/// The longest DNS-1123 label and the longest label value
/// (apimachinery `validation.DNS1123LabelMaxLength`, `LabelValueMaxLength`).
pub const MAX_LABEL: usize = 63;
/// The longest label key prefix, a DNS-1123 subdomain (`DNS1123SubdomainMaxLength`).
const MAX_SUBDOMAIN: usize = 253;

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric. Pod and
/// NetworkPolicy names are held to it (not to the looser subdomain rule) because the pod name
/// is also its hostname and the value of its `stockade.dev/sandbox` label.
pub fn dns_label(what: &'static str, value: &str) -> Result<(), NameError> {
    let why = if value.is_empty() {
        Some("is empty")
    } else if value.len() > MAX_LABEL {
        Some("is longer than 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may hold only lower-case letters, digits and '-'")
    } else if !alnum_ends(value) {
        Some("must start and end with a letter or a digit")
    } else {
        None
    };
    match why {
        Some(why) => Err(NameError::Name {
            what,
            value: value.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn label_value(key: &str, value: &str) -> Result<(), NameError> {
    let why = if value.len() > MAX_LABEL {
        Some("is longer than 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("may hold only letters, digits, '-', '_' and '.'")
    } else if !value.is_empty() && !alnum_ends(value) {
        Some("must start and end with a letter or a digit")
    } else {
        None
    };
    match why {
        Some(why) => Err(NameError::LabelValue {
            key: key.to_string(),
            value: value.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// A label value that must say something: a claim id.
pub fn nonempty_label_value(key: &str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::LabelValue {
            key: key.to_string(),
            value: String::new(),
            why: "is empty",
        });
    }
    label_value(key, value)
}

/// A label key: an optional DNS-1123 subdomain prefix and `/`, then a name of at most 63 of
/// `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn label_key(key: &str) -> Result<(), NameError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let bad = |why| {
        Err(NameError::LabelKey {
            key: key.to_string(),
            why,
        })
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > MAX_SUBDOMAIN {
            return bad("has a prefix that is empty or longer than 253 characters");
        }
        if prefix.split('.').any(|part| dns_label("", part).is_err()) {
            return bad("has a prefix that is not a DNS-1123 subdomain");
        }
    }
    if name.is_empty() || label_value("", name).is_err() {
        return bad("has a name that is empty, too long, or not of [A-Za-z0-9._-]");
    }
    Ok(())
}

/// Every key and value of a label map.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), NameError> {
    for (key, value) in labels {
        label_key(key)?;
        label_value(key, value)?;
    }
    Ok(())
}

fn alnum_ends(value: &str) -> bool {
    let b = value.as_bytes();
    matches!((b.first(), b.last()), (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric())
}
