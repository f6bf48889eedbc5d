//! Builds the in-sandbox agent (`agent/`) as a static binary for the target and embeds it.
//!
//! The agent runs inside sandboxes of any image, so it must not depend on the image's libc: it
//! is linked statically (`+crt-static`), in its own target directory under OUT_DIR, with the
//! workspace's lockfile. The flags of the outer build (sanitizers, clippy's wrapper, an outer
//! `--target`) are not passed on: they describe stockade's build, not the agent's.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env("OUT_DIR"));
    rules_as_json(&manifest_dir, &out_dir);
    let target = env("TARGET");
    for path in [
        "agent/src",
        "agent/proto/src",
        "agent/Cargo.toml",
        "agent/proto/Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(path).display()
        );
    }

    let target_dir = out_dir.join("agent-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest_dir.join("agent/Cargo.toml"))
        .args(["--profile", "agent", "--locked", "--target", &target])
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        build.env_remove(var);
    }
    build.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the agent: {e}"));
    assert!(status.success(), "building the agent (agent/) failed");

    let built = target_dir
        .join(&target)
        .join("agent")
        .join("stockade-agent");
    let bytes = std::fs::read(&built)
        .unwrap_or_else(|e| panic!("the agent build left no {}: {e}", built.display()));
    assert!(
        is_static_elf(&bytes),
        "{} is not a static ELF executable; the agent must not depend on an image's libc \
         (is the static C library, libc.a from libc6-dev or glibc-static, installed?)",
        built.display()
    );
    let embedded = out_dir.join("stockade-agent");
    write_if_changed(&embedded, &bytes);
    println!(
        "cargo:rustc-env=STOCKADE_AGENT_SHA256={}",
        hex(&Sha256::digest(&bytes))
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

fn write_if_changed(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An ELF executable with no program interpreter (PT_INTERP): it needs no dynamic loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false; // not a 64-bit little-endian ELF
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        if at + 4 > bytes.len() {
            return false;
        }
        // A static-pie keeps PT_DYNAMIC for its own relocations, but names no interpreter.
        u32_at(at) != PT_INTERP
    })
}

/// Writes `builtin_rules_json.rs`: a function from each builtin rule file's name to its content
/// as JSON. The rules are still written, reviewed and verified as TOML; the JSON form only
/// spares every start-up the TOML parse. A file that does not parse here is left out, and the
/// TOML text then reports the error at start-up as it always has.
fn rules_as_json(manifest_dir: &Path, out_dir: &Path) {
    let dir = manifest_dir.join("profiles/rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    let mut code = String::from(
        "/// The builtin rule file `name` as JSON, converted from its TOML at build time.\n\
         pub fn builtin_json(name: &str) -> Option<&'static str> {\n    match name {\n",
    );
    for name in names {
        let path = dir.join(&name);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let Ok(value) = text.parse::<toml::Table>() else {
            continue;
        };
        let json = serde_json::to_string(&value).expect("a TOML table is JSON");
        code.push_str(&format!("        {name:?} => Some({json:?}),\n"));
    }
    code.push_str("        _ => None,\n    }\n}\n");
    std::fs::write(out_dir.join("builtin_rules_json.rs"), code)
        .expect("write builtin_rules_json.rs");
}
