//! Writing a planned migration: directories 0700, files 0600, nothing replaced unless asked,
//! and every file loaded back through stockade's own loaders before the write counts as done.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::profile::{self, ProfileDirs};

use super::{FileKind, MigrateError, Migration};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Writes `migration` under `out` and loads every profile and the config back. Existing files
/// are an error (nothing is written) unless `force`, which replaces them. Returns the paths
/// written.
pub fn write(
    migration: &Migration,
    out: &Path,
    force: bool,
    engine_sockets: &[PathBuf],
) -> Result<Vec<PathBuf>, MigrateError> {
    if migration.report.blocked {
        return Err(MigrateError::Blocked {
            reasons: migration.report.blocking().count(),
        });
    }
    let mut files: Vec<_> = migration.files.iter().collect();
    files.sort_by_key(|f| f.kind);
    let targets: Vec<PathBuf> = files.iter().map(|f| out.join(&f.path)).collect();
    if !force {
        let existing: Vec<PathBuf> = targets
            .iter()
            .filter(|t| t.symlink_metadata().is_ok())
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Err(MigrateError::Exists { paths: existing });
        }
    }
    make_private_dir(out, Follow::Yes)?;
    for file in &files {
        if let Some(parent) = file.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut dir = out.to_path_buf();
            for part in parent.components() {
                dir.push(part);
                make_private_dir(&dir, Follow::No)?;
            }
        }
    }
    for (file, target) in files.iter().zip(&targets) {
        write_file(target, file.contents.as_bytes(), force)?;
    }
    let dirs = ProfileDirs {
        dirs: Vec::new(),
        engine_sockets: engine_sockets.to_vec(),
    };
    for (file, target) in files.iter().zip(&targets) {
        match file.kind {
            FileKind::Profile => {
                profile::load(&target.display().to_string(), &dirs).map_err(|source| {
                    MigrateError::LoadBack {
                        path: target.clone(),
                        source,
                    }
                })?;
            }
            FileKind::Config => {
                Config::load(target, true).map_err(|e| MigrateError::ConfigLoadBack {
                    path: target.clone(),
                    message: e.to_string(),
                })?;
            }
            // Checked by the profiles that name them.
            FileKind::Seccomp => {}
        }
    }
    Ok(targets)
}

/// Whether an existing directory may be reached through a symlink: `--out` itself, named by the
/// user, may; a directory inside it (`profiles/`) may not, or a link planted there would send
/// the profiles anywhere the link points.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    Yes,
    No,
}

/// Creates `dir` 0700 if missing; an existing one must be a directory of this user that no one
/// else may write (else another user could swap the profiles under stockade).
fn make_private_dir(dir: &Path, follow: Follow) -> Result<(), MigrateError> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {
            // The umask may have narrowed the mode, never widened it; set it exactly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(
                |source| MigrateError::Write {
                    path: dir.to_path_buf(),
                    source,
                },
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = match follow {
                Follow::Yes => std::fs::metadata(dir),
                Follow::No => std::fs::symlink_metadata(dir),
            }
            .map_err(|source| MigrateError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
            if meta.file_type().is_symlink() {
                return Err(MigrateError::OutDir {
                    path: dir.to_path_buf(),
                    problem: "is a symbolic link: stockade writes profiles only into real directories under --out; remove the link".to_string(),
                });
            }
            if !meta.is_dir() {
                return Err(MigrateError::OutDir {
                    path: dir.to_path_buf(),
                    problem: "exists and is not a directory".to_string(),
                });
            }
            if meta.mode() & 0o022 != 0 {
                return Err(MigrateError::OutDir {
                    path: dir.to_path_buf(),
                    problem: format!(
                        "is writable by others (mode {:o}): another user could replace the profiles; use a private directory",
                        meta.mode() & 0o777
                    ),
                });
            }
            if follow == Follow::No && meta.uid() != nix::unistd::geteuid().as_raw() {
                return Err(MigrateError::OutDir {
                    path: dir.to_path_buf(),
                    problem: format!(
                        "belongs to uid {}, not to this user: its owner could replace the profiles; remove it or use another --out",
                        meta.uid()
                    ),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A missing parent: create the chain, each level private.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                make_private_dir(parent, follow)?;
                return make_private_dir(dir, follow);
            }
            Err(MigrateError::Write {
                path: dir.to_path_buf(),
                source: e,
            })
        }
        Err(source) => Err(MigrateError::Write {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Writes one file 0600. Without `force` the file must not exist (`O_EXCL`, which also refuses
/// a symlink planted in its place); with it, a temporary file is renamed over the old one.
fn write_file(target: &Path, contents: &[u8], force: bool) -> Result<(), MigrateError> {
    let err = |source| MigrateError::Write {
        path: target.to_path_buf(),
        source,
    };
    let path = if force {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        target.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
    } else {
        target.to_path_buf()
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    if force {
        std::fs::rename(&path, target).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::openclaw;
    use crate::migrate::{Host, Options};

    fn minimal() -> Migration {
        openclaw::plan(
            "t.json5",
            "{ agents: { defaults: { sandbox: { mode: 'all' } } } }",
            Options::default(),
            &Host::default(),
        )
        .unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn files_are_private_and_never_replaced_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a/out");
        let m = minimal();
        let written = write(&m, &out, false, &[]).unwrap();
        assert_eq!(
            written,
            vec![
                out.join("profiles/openclaw-default.toml"),
                out.join("config.toml")
            ]
        );
        for p in &written {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        for d in [tmp.path().join("a"), out.clone(), out.join("profiles")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        let before = std::fs::read_to_string(&written[1]).unwrap();
        std::fs::write(&written[1], "# edited\n").unwrap();
        match write(&m, &out, false, &[]) {
            Err(MigrateError::Exists { paths }) => assert_eq!(paths, written),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&written[1]).unwrap(), "# edited\n");
        write(&m, &out, true, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&written[1]).unwrap(), before);
        assert_eq!(mode(&written[1]), 0o600);
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir_all(out.join("profiles")).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, out.join("config.toml")).unwrap();
        assert!(matches!(
            write(&minimal(), &out, false, &[]),
            Err(MigrateError::Exists { .. })
        ));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn a_symlinked_profiles_directory_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&out).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("profiles")).unwrap();
        let err = write(&minimal(), &out, false, &[]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Nor with --force.
        let err = write(&minimal(), &out, true, &[]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("shared");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = write(&minimal(), &out, false, &[]).unwrap_err();
        assert!(err.to_string().contains("writable by others"), "{err}");
        assert!(std::fs::read_dir(&out).unwrap().next().is_none());
    }

    #[test]
    fn a_blocked_migration_writes_nothing() {
        let m = openclaw::plan(
            "t.json5",
            "{ agents: { defaults: { sandbox: { docker: { network: 'host' } } } } }",
            Options::default(),
            &Host::default(),
        )
        .unwrap();
        assert!(m.report.blocked);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        assert!(matches!(
            write(&m, &out, false, &[]),
            Err(MigrateError::Blocked { reasons: 1 })
        ));
        assert!(!out.exists());
    }
}
