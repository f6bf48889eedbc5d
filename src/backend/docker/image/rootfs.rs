//! Assemble the base image's root filesystem from the host's own files.
//!
//! Pure host read: tools are looked up in fixed system directories, their shared
//! libraries are found with the host's `ldd`, and every symlink met on the way
//! (`/bin -> usr/bin`, `/lib64/ld-linux-x86-64.so.2 -> ...`, alternatives) is
//! recorded as a symlink, so the image has the same layout as the host.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::ImageError;

/// Where tools are looked up, in order. `/usr/local` is left out so that locally
/// installed software cannot change the image.
const TOOL_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// bash and coreutils: without them the image is useless, so their absence is an error.
#[rustfmt::skip]
const REQUIRED_TOOLS: &[&str] = &[
    "bash", "ls", "cat", "cp", "mv", "rm", "mkdir", "rmdir", "ln", "chmod", "chown", "touch",
    "head", "tail", "wc", "sort", "uniq", "cut", "tr", "tee", "env", "id", "whoami", "date",
    "sleep", "true", "false", "echo", "printf", "test", "[", "basename", "dirname", "readlink",
    "realpath", "stat", "du", "df", "seq", "yes", "timeout", "nice", "nohup", "sha256sum", "md5sum",
    "base64", "od", "mktemp", "install", "dd", "chroot", "mknod", "uname", "pwd", "nproc", "tac",
    "paste", "comm", "split", "mkfifo", "truncate", "sync", "sha1sum", "sha512sum",
];

/// Skipped with a note when the host lacks them.
#[rustfmt::skip]
const OPTIONAL_TOOLS: &[&str] = &[
    "kill", "xxd", "grep", "sed", "awk", "find", "xargs", "tar", "gzip", "gunzip", "zcat", "diff",
    "cmp", "which", "ps", "pgrep", "pkill", "hostname", "setsid", "mount", "umount", "unshare",
    "nsenter", "strace",
];

/// Every entry gets this mtime so that the same host yields the same layer digest.
pub(crate) const FIXED_MTIME: u64 = 0;
/// Linux's MAXSYMLINKS.
const MAX_SYMLINK_HOPS: usize = 40;
/// No tool or library comes near this (node, the largest usual one, is ~100 MiB); a bigger
/// file means something odd on the host.
const MAX_FILE_BYTES: u64 = 192 << 20;
/// Cap on the whole layer, held in memory while it is built and imported.
const MAX_TOTAL_BYTES: u64 = 768 << 20;
/// Longest tool name `--include` takes (a file name in a tool directory).
const MAX_TOOL_NAME: usize = 64;
/// At most this many files from one tool's runtime directories (python's stdlib has ~2,000;
/// perl's ~3,000).
const MAX_RUNTIME_FILES: usize = 20_000;
/// Directories of a tool's runtime left out: python's own test suite and GUI demos.
const RUNTIME_SKIP: &[&str] = &["test", "idlelib", "turtledemo", "tkinter"];
/// The unprivileged user the sandbox runs as (the image's `User`).
/// 65532, as distroless's `nonroot`: outside the range of host accounts, so the sandbox user is
/// nobody on the host (a uid shared with a host account could reach the sandbox's files through
/// /proc/<pid>/root and signal its processes).
pub(crate) const SANDBOX_ID: u32 = 65532;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
    sandbox:x:65532:65532:sandbox:/home/sandbox:/bin/bash\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nsandbox:x:65532:\n";
// glibc >= 2.34 has the `files` service built in, so no libnss_*.so is needed.
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// A finished root filesystem: one uncompressed layer tar and its sha256 (the layer's diff id).
#[derive(Debug, Clone)]
pub struct RootfsTar {
    /// The layer, entries sorted, owner 0:0 unless stated, mtime [`FIXED_MTIME`].
    pub tar: Vec<u8>,
    /// `sha256:<hex>` of `tar`.
    pub digest: String,
    /// Number of regular files.
    pub files: usize,
    /// Number of entries (files, directories, symlinks).
    pub entries: usize,
    /// Tools the host lacks, skipped.
    pub skipped: Vec<String>,
    /// Tools added with `--include`, as asked.
    pub included: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32, uid: u32, gid: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: PathBuf },
}

impl Node {
    /// A root-owned directory.
    const fn dir(mode: u32) -> Node {
        Node::Dir {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// The image's tree, keyed by absolute path; `BTreeMap` order puts parents before children.
#[derive(Default)]
struct Tree {
    nodes: BTreeMap<PathBuf, Node>,
    bytes: u64,
}

impl Tree {
    /// Copies `path` from the host, walking it component by component so that each
    /// symlink on the way is recorded too. Returns the resolved path.
    fn add_host_path(&mut self, path: &Path) -> Result<PathBuf, ImageError> {
        self.walk(path, path, 0)
    }

    fn walk(&mut self, path: &Path, original: &Path, hops: usize) -> Result<PathBuf, ImageError> {
        let mut resolved = PathBuf::from("/");
        let mut components = path.components().peekable();
        while let Some(component) = components.next() {
            let name = match component {
                Component::RootDir => {
                    resolved = PathBuf::from("/");
                    continue;
                }
                // `resolved` holds no symlinks, so `..` is plain string surgery.
                Component::ParentDir => {
                    resolved.pop();
                    continue;
                }
                Component::CurDir | Component::Prefix(_) => continue,
                Component::Normal(name) => name,
            };
            let candidate = resolved.join(name);
            let read_err = |source| ImageError::HostRead {
                path: candidate.clone(),
                source,
            };
            let meta = fs::symlink_metadata(&candidate).map_err(read_err)?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                if hops >= MAX_SYMLINK_HOPS {
                    return Err(ImageError::SymlinkLoop {
                        path: original.to_path_buf(),
                    });
                }
                let target = fs::read_link(&candidate).map_err(read_err)?;
                // An absolute target replaces `resolved`, as in the kernel's lookup.
                let mut next = resolved.join(&target);
                next.extend(components);
                self.nodes
                    .entry(candidate)
                    .or_insert(Node::Symlink { target });
                return self.walk(&next, original, hops + 1);
            } else if kind.is_dir() {
                let mode = permission_bits(meta.mode());
                self.nodes
                    .entry(candidate.clone())
                    .or_insert(Node::dir(mode));
            } else if kind.is_file() && components.peek().is_none() {
                self.add_host_file(&candidate, &meta)?;
            } else {
                return Err(ImageError::UnsupportedFileType { path: candidate });
            }
            resolved = candidate;
        }
        Ok(resolved)
    }

    fn add_host_file(&mut self, path: &Path, meta: &fs::Metadata) -> Result<(), ImageError> {
        if self.nodes.contains_key(path) {
            return Ok(());
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(ImageError::FileTooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                limit: MAX_FILE_BYTES,
            });
        }
        let data = fs::read(path).map_err(|source| ImageError::HostRead {
            path: path.to_path_buf(),
            source,
        })?;
        self.bytes += data.len() as u64;
        if self.bytes > MAX_TOTAL_BYTES {
            return Err(ImageError::RootfsTooLarge {
                limit: MAX_TOTAL_BYTES,
            });
        }
        let mode = permission_bits(meta.mode());
        self.nodes
            .insert(path.to_path_buf(), Node::File { mode, data });
        Ok(())
    }

    /// Adds a stockade-defined entry, creating missing parents as root-owned 0755 dirs.
    fn put(&mut self, path: &str, node: Node) {
        let path = PathBuf::from(path);
        for parent in path.ancestors().skip(1) {
            self.nodes
                .entry(parent.to_path_buf())
                .or_insert(Node::dir(0o755));
        }
        self.nodes.insert(path, node);
    }

    fn write_tar(&self) -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, node) in &self.nodes {
            let Ok(rel) = path.strip_prefix("/") else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue; // the root itself is the layer's mount point
            }
            let mut header = tar::Header::new_gnu();
            header.set_mtime(FIXED_MTIME);
            header.set_uid(0);
            header.set_gid(0);
            match node {
                Node::Dir { mode, uid, gid } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_uid(u64::from(*uid));
                    header.set_gid(u64::from(*gid));
                    header.set_size(0);
                    builder.append_data(&mut header, rel, std::io::empty())?;
                }
                Node::File { mode, data } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, rel, data.as_slice())?;
                }
                Node::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, rel, target)?;
                }
            }
        }
        builder.into_inner()
    }
}

/// Drops setuid, setgid and sticky bits: nothing in the image may gain privileges on exec.
fn permission_bits(mode: u32) -> u32 {
    mode & 0o777
}

/// Adds every file under `dir` (recursively, symlinks as symlinks and followed), except the
/// [`RUNTIME_SKIP`] directories right under it. Returns the ELF files added, for `ldd`.
fn add_host_dir(
    tree: &mut Tree,
    dir: &Path,
    budget: &mut usize,
) -> Result<Vec<PathBuf>, ImageError> {
    let mut elves = Vec::new();
    let mut pending = vec![(tree.add_host_path(dir)?, 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        let read_err = |source| ImageError::HostRead {
            path: dir.clone(),
            source,
        };
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(read_err)?
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if depth == 0 && RUNTIME_SKIP.iter().any(|s| entry.file_name() == *s) {
                continue;
            }
            *budget = budget
                .checked_sub(1)
                .ok_or_else(|| ImageError::TooManyFiles {
                    dir: dir.clone(),
                    limit: MAX_RUNTIME_FILES,
                })?;
            let meta = fs::symlink_metadata(&path).map_err(|source| ImageError::HostRead {
                path: path.clone(),
                source,
            })?;
            if meta.file_type().is_symlink() {
                // A dangling link (a Debian alternative not installed) is kept as a link.
                if fs::metadata(&path).is_err() {
                    if let Ok(target) = fs::read_link(&path) {
                        tree.nodes.entry(path).or_insert(Node::Symlink { target });
                    }
                    continue;
                }
                let resolved = tree.add_host_path(&path)?;
                if resolved.is_dir() && !resolved.starts_with(&dir) {
                    // A link out of the tree: its target's contents are not walked.
                    continue;
                }
                if is_elf(&resolved) {
                    elves.push(resolved);
                }
            } else if meta.is_dir() {
                tree.nodes
                    .entry(path.clone())
                    .or_insert(Node::dir(permission_bits(meta.mode())));
                pending.push((path, depth + 1));
            } else if meta.is_file() {
                tree.add_host_file(&path, &meta)?;
                if is_elf(&path) {
                    elves.push(path);
                }
            }
            // Sockets, fifos and devices in a runtime directory are not the tool's files.
        }
    }
    Ok(elves)
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The interpreter a script names on its `#!` line, if it is absolute.
fn shebang(path: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 256];
    let n = std::io::Read::read(&mut fs::File::open(path).ok()?, &mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let interpreter = line.split_whitespace().next()?;
    interpreter
        .starts_with('/')
        .then(|| PathBuf::from(interpreter))
}

/// Asks the host's own `binary` (environment cleared) for one line per path.
fn ask_tool(binary: &Path, args: &[&str]) -> Vec<PathBuf> {
    let Ok(out) = Command::new(binary)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// The directories a tool needs at run time besides its binary and libraries: python's
/// standard library, git's exec path and templates, perl's @INC. Anything under /usr/local
/// is left out, as for the tools themselves.
fn runtime_dirs(name: &str, binary: &Path) -> Vec<PathBuf> {
    let family = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let mut dirs = match family {
        "python" => ask_tool(
            binary,
            &[
                "-I",
                "-c",
                "import sysconfig; print(sysconfig.get_path('stdlib')); print(sysconfig.get_path('platstdlib'))",
            ],
        ),
        "git" => {
            let mut dirs = ask_tool(binary, &["--exec-path"]);
            dirs.push(PathBuf::from("/usr/share/git-core"));
            dirs
        }
        "perl" => ask_tool(binary, &["-e", "print join(qq(\n), @INC)"]),
        _ => Vec::new(),
    };
    dirs.retain(|d| !d.starts_with("/usr/local") && d.is_dir());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Whether `name` can be a tool's file name in a tool directory.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

/// Adds an `--include`d tool: its binary (a script's interpreter too), its runtime
/// directories, and the ELF files among them for `ldd`.
fn include_tool(
    tree: &mut Tree,
    name: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>, ImageError> {
    if !valid_tool_name(name) {
        return Err(ImageError::BadToolName {
            name: name.to_string(),
        });
    }
    let path = find_tool(name).ok_or_else(|| ImageError::NotOnHost {
        name: name.to_string(),
        searched: TOOL_DIRS.join(":"),
    })?;
    let binary = tree.add_host_path(&path)?;
    let mut elves = vec![binary.clone()];
    if let Some(interpreter) = shebang(&binary) {
        elves.push(tree.add_host_path(&interpreter)?);
    }
    let mut budget = MAX_RUNTIME_FILES;
    for dir in runtime_dirs(name, &binary) {
        progress(&format!(
            "including {name}'s runtime files from {}",
            dir.display()
        ));
        elves.extend(add_host_dir(tree, &dir, &mut budget)?);
    }
    Ok(elves)
}

fn find_tool(name: &str) -> Option<PathBuf> {
    TOOL_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
}

/// Shared libraries (and the loader) named in `ldd` output for one or more binaries.
/// Errors with `(binary, library)` for a library the host's loader cannot find.
fn parse_ldd(output: &str, first_binary: &Path) -> Result<Vec<PathBuf>, (PathBuf, String)> {
    let mut current = first_binary.to_path_buf();
    let mut libs = Vec::new();
    for line in output.lines() {
        if !line.starts_with('\t') {
            // With several arguments ldd prints a `path:` header before each block.
            if let Some(header) = line.strip_suffix(':') {
                current = PathBuf::from(header);
            }
            continue;
        }
        let line = line.trim();
        let path = match line.split_once(" => ") {
            Some((name, rest)) if rest.starts_with("not found") => {
                return Err((current, name.to_string()));
            }
            Some((_, rest)) => rest,
            None => line, // the loader line: `/lib64/ld-linux-x86-64.so.2 (0x...)`
        };
        let path = path.split(" (").next().unwrap_or(path);
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn shared_libraries(binaries: &[PathBuf]) -> Result<Vec<PathBuf>, ImageError> {
    let Some(first) = binaries.first() else {
        return Ok(Vec::new());
    };
    let ldd = find_tool("ldd").ok_or_else(|| ImageError::MissingTool {
        name: "ldd".into(),
        searched: TOOL_DIRS.join(":"),
    })?;
    // A clean environment: LD_LIBRARY_PATH or LD_PRELOAD on the host must not leak in.
    // ldd exits non-zero when one argument is a script; its output is still complete.
    let out = Command::new(&ldd)
        .args(binaries)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .map_err(|source| ImageError::Ldd {
            ldd: ldd.clone(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ldd(&text, first)
        .map_err(|(binary, library)| ImageError::MissingLibrary { binary, library })
}

/// Builds the root filesystem layer from the host's files, with the `include`d tools.
pub fn build(include: &[String], progress: &mut dyn FnMut(&str)) -> Result<RootfsTar, ImageError> {
    build_with(include, &[], progress)
}

/// A file of stockade's own put into the image: absolute path, mode, contents.
pub type ExtraFile<'a> = (&'a str, u32, &'a [u8]);

/// [`build`], plus stockade's own `extra` files (root-owned; parents made 0755).
pub fn build_with(
    include: &[String],
    extra: &[ExtraFile<'_>],
    progress: &mut dyn FnMut(&str),
) -> Result<RootfsTar, ImageError> {
    let mut tree = Tree::default();
    // Keep the host's merged-/usr layout: these are symlinks on Debian 12.
    for top in ["/bin", "/sbin", "/lib", "/lib64"] {
        if Path::new(top).exists() {
            tree.add_host_path(Path::new(top))?;
        }
    }

    let mut binaries = Vec::new();
    let mut skipped = Vec::new();
    let tools = REQUIRED_TOOLS.iter().map(|t| (t, true));
    for (name, required) in tools.chain(OPTIONAL_TOOLS.iter().map(|t| (t, false))) {
        match find_tool(name) {
            Some(path) => {
                binaries.push(tree.add_host_path(&path)?);
            }
            None if required => {
                return Err(ImageError::MissingTool {
                    name: (*name).to_string(),
                    searched: TOOL_DIRS.join(":"),
                });
            }
            None => {
                progress(&format!("host has no `{name}`: left out of the image"));
                skipped.push((*name).to_string());
            }
        }
    }
    let mut included = Vec::new();
    for name in include {
        if included.contains(name) {
            continue;
        }
        binaries.extend(include_tool(&mut tree, name, progress)?);
        included.push(name.clone());
    }
    binaries.sort();
    binaries.dedup();
    for lib in shared_libraries(&binaries)? {
        tree.add_host_path(&lib)?;
    }

    // `/bin/bash` is the image's Cmd and the users' shell; `sh` is bash too (no dash).
    let bash = tree.add_host_path(Path::new("/bin/bash"))?;
    if let Some(dir) = bash.parent() {
        let sh = dir.join("sh");
        tree.nodes.insert(
            sh,
            Node::Symlink {
                target: PathBuf::from("bash"),
            },
        );
    }
    tree.add_host_path(Path::new("/etc/os-release"))?;

    let file = |text: &str| Node::File {
        mode: 0o644,
        data: text.as_bytes().to_vec(),
    };
    let sandbox_dir = Node::Dir {
        mode: 0o755,
        uid: SANDBOX_ID,
        gid: SANDBOX_ID,
    };
    tree.put("/etc/passwd", file(PASSWD));
    tree.put("/etc/group", file(GROUP));
    tree.put("/etc/nsswitch.conf", file(NSSWITCH));
    tree.put("/etc/hosts", file(HOSTS));
    for (path, mode) in [("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/root", 0o700)] {
        tree.put(path, Node::dir(mode));
    }
    for path in ["/proc", "/sys", "/dev", "/run"] {
        tree.put(path, Node::dir(0o755));
    }
    tree.put("/workspace", sandbox_dir.clone());
    tree.put("/home/sandbox", sandbox_dir);
    for (path, mode, data) in extra {
        tree.put(
            path,
            Node::File {
                mode: *mode,
                data: data.to_vec(),
            },
        );
    }

    let tar = tree
        .write_tar()
        .map_err(|source| ImageError::Archive { source })?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let files = tree
        .nodes
        .values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count();
    Ok(RootfsTar {
        tar,
        digest,
        files,
        entries: tree.nodes.keys().filter(|p| *p != Path::new("/")).count(),
        skipped,
        included,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;
    use std::sync::OnceLock;

    struct Member {
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        mtime: u64,
        link: Option<PathBuf>,
        data: Vec<u8>,
    }

    fn host_rootfs() -> &'static (RootfsTar, Vec<(String, Member)>) {
        static BUILT: OnceLock<(RootfsTar, Vec<(String, Member)>)> = OnceLock::new();
        BUILT.get_or_init(|| {
            let rootfs = build(&[], &mut |_| {}).expect("host has bash, coreutils and ldd");
            let mut members = Vec::new();
            let mut archive = tar::Archive::new(rootfs.tar.as_slice());
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let name = entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned();
                let header = entry.header();
                let mut member = Member {
                    kind: header.entry_type(),
                    mode: header.mode().unwrap(),
                    uid: header.uid().unwrap(),
                    mtime: header.mtime().unwrap(),
                    link: entry.link_name().unwrap().map(|l| l.into_owned()),
                    data: Vec::new(),
                };
                entry.read_to_end(&mut member.data).unwrap();
                members.push((name, member));
            }
            (rootfs, members)
        })
    }

    fn members() -> HashMap<&'static str, &'static Member> {
        host_rootfs()
            .1
            .iter()
            .map(|(n, m)| (n.as_str(), m))
            .collect()
    }

    /// Follows symlinks inside the image to the member a path finally names.
    fn resolve(members: &HashMap<&str, &'static Member>, path: &str) -> &'static Member {
        let lookup = |p: &Path| {
            let key = p.strip_prefix("/").unwrap().to_str().unwrap().to_owned();
            *members
                .get(key.as_str())
                .unwrap_or_else(|| panic!("{path}: no {key}"))
        };
        let mut path = PathBuf::from(path);
        'hops: for _ in 0..MAX_SYMLINK_HOPS {
            let mut current = PathBuf::from("/");
            let components: Vec<Component<'_>> = path.components().collect();
            for (i, component) in components.iter().enumerate() {
                match component {
                    Component::ParentDir => {
                        current.pop();
                    }
                    Component::Normal(name) => {
                        let candidate = current.join(name);
                        if let Some(target) = &lookup(&candidate).link {
                            let rest: PathBuf = components[i + 1..].iter().collect();
                            path = current.join(target).join(rest);
                            continue 'hops;
                        }
                        current = candidate;
                    }
                    _ => {}
                }
            }
            return lookup(&current);
        }
        panic!("{path:?} does not resolve");
    }

    #[test]
    fn image_has_bash_as_sh_libc_and_loader() {
        let members = members();
        for path in [
            "/bin/bash",
            "/bin/sh",
            "/usr/bin/ls",
            "/usr/bin/env",
            "/usr/bin/[",
        ] {
            let member = resolve(&members, path);
            assert_eq!(member.kind, tar::EntryType::Regular, "{path}");
            assert!(
                member.data.starts_with(b"\x7fELF"),
                "{path} is an ELF binary"
            );
        }
        assert_eq!(
            resolve(&members, "/bin/sh").data,
            resolve(&members, "/bin/bash").data
        );
        assert!(resolve(&members, "/lib/x86_64-linux-gnu/libc.so.6")
            .data
            .starts_with(b"\x7fELF"));
        #[cfg(target_arch = "x86_64")]
        assert!(resolve(&members, "/lib64/ld-linux-x86-64.so.2")
            .data
            .starts_with(b"\x7fELF"));
    }

    #[test]
    fn image_has_sandbox_user_and_writable_dirs() {
        let members = members();
        let passwd = String::from_utf8(members["etc/passwd"].data.clone()).unwrap();
        assert!(passwd.contains("sandbox:x:65532:65532:sandbox:/home/sandbox:/bin/bash\n"));
        assert!(passwd.starts_with("root:x:0:0:"));
        assert!(
            String::from_utf8_lossy(&resolve(&members, "/etc/os-release").data).contains("ID=")
        );
        assert_eq!(members["tmp"].mode, 0o1777);
        assert_eq!(members["workspace"].uid, u64::from(SANDBOX_ID));
        assert_eq!(members["home/sandbox"].uid, u64::from(SANDBOX_ID));
        for dir in ["proc", "sys", "dev", "run", "var/tmp"] {
            assert_eq!(members[dir].kind, tar::EntryType::Directory, "{dir}");
        }
    }

    #[test]
    fn no_setuid_or_setgid_bits_and_fixed_mtimes() {
        for (name, member) in &host_rootfs().1 {
            assert_eq!(member.mode & 0o6000, 0, "{name} keeps a setuid/setgid bit");
            assert_eq!(member.mtime, FIXED_MTIME, "{name}");
            if member.kind != tar::EntryType::Directory
                || !["tmp", "var/tmp"].contains(&name.as_str())
            {
                assert_eq!(member.mode & 0o1000, 0, "{name} is sticky");
            }
        }
    }

    #[test]
    fn entries_are_ordered_parents_first() {
        let names: Vec<&str> = host_rootfs().1.iter().map(|(n, _)| n.as_str()).collect();
        for (i, name) in names.iter().enumerate() {
            if let Some((parent, _)) = name.rsplit_once('/') {
                assert!(names[..i].contains(&parent), "{name} precedes its parent");
            }
        }
        let mut sorted: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
        sorted.sort();
        assert_eq!(sorted, names.iter().map(PathBuf::from).collect::<Vec<_>>());
    }

    #[test]
    fn two_builds_give_the_same_digest() {
        let again = build(&[], &mut |_| {}).unwrap();
        assert_eq!(again.digest, host_rootfs().0.digest);
        assert_eq!(again.tar, host_rootfs().0.tar);
    }

    #[test]
    fn symlink_chains_are_recorded_and_loops_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("real")).unwrap();
        fs::write(root.join("real/file"), b"x").unwrap();
        std::os::unix::fs::symlink("real", root.join("alias")).unwrap();
        std::os::unix::fs::symlink(root.join("alias/file"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();

        let mut tree = Tree::default();
        let resolved = tree.add_host_path(&root.join("abs")).unwrap();
        assert_eq!(resolved, root.join("real/file"));
        assert_eq!(
            tree.nodes[&root.join("alias")],
            Node::Symlink {
                target: "real".into()
            }
        );
        assert!(matches!(
            tree.nodes[&root.join("abs")],
            Node::Symlink { .. }
        ));
        assert!(matches!(
            tree.nodes[&root.join("real/file")],
            Node::File { .. }
        ));
        assert!(matches!(
            tree.add_host_path(&root.join("loop-a")),
            Err(ImageError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn ldd_output_yields_libraries_and_loader() {
        let out = "/usr/bin/a:\n\tlinux-vdso.so.1 (0x00007ff)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                   /usr/bin/script:\n\tnot a dynamic executable\n";
        let libs = parse_ldd(out, Path::new("/usr/bin/a")).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                "/lib64/ld-linux-x86-64.so.2".into()
            ]
        );
    }

    #[test]
    fn ldd_missing_library_names_the_binary() {
        let out = "/usr/bin/a:\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\
                   /usr/bin/b:\n\tlibgone.so.1 => not found\n";
        assert_eq!(
            parse_ldd(out, Path::new("/usr/bin/a")),
            Err((PathBuf::from("/usr/bin/b"), "libgone.so.1".to_string()))
        );
    }
}
