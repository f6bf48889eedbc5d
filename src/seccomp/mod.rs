//! Seccomp profiles in the Docker/OCI JSON format: import, resolve, compile, lint, diff, record.

/// Checks that `json` is a usable Docker/OCI seccomp profile (placeholder until the full loader).
pub fn validate_json(json: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
    match value.get("defaultAction").and_then(|v| v.as_str()) {
        Some(_) => Ok(()),
        None => Err("no `defaultAction`: not a Docker/OCI seccomp profile".to_string()),
    }
}
