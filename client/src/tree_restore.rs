//! Writing a restored tree under a target directory: paths, directories,
//! symlinks and metadata, never outside the target.
//!
//! A restored entry's path is relative and clean (no `..`, `.` or empty
//! components, not absolute), and every directory on the way to it must be a
//! real directory: a symlink there, whether the restore itself just made it
//! or it was in the target before, is refused rather than followed. Parents
//! are created one component at a time after that check, never with
//! `create_dir_all` through whatever is there. The last component may be
//! anything: callers replace it (a file is written beside it as
//! `.NAME.dupla-part` and renamed over it, see [`crate::restore`]) and never
//! open it.
//!
//! The checks look at the disk as it is; they do not defend against another
//! process swapping directories for links while the restore runs.
//!
//! A restore makes the directories first ([`make_dir`]), then writes files
//! and links into them, and sets the directories' modes and mtimes last
//! ([`finish_dirs`]), deepest first, so that writing their contents does
//! not change an mtime already set and a read-only directory is still
//! writable while it fills.

use crate::restore::PART_SUFFIX;
use dupla::{Error, Result};
use filetime::FileTime;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The components of a restored entry's `path`, after checking it is
/// relative and clean.
fn components(path: &str) -> Result<Vec<&str>> {
    if path.is_empty() {
        return Err(Error::InvalidInput("a restored path is empty".into()));
    }
    if path.starts_with('/') {
        return Err(Error::InvalidInput(format!(
            "{path:?}: a restored path must be relative to the target"
        )));
    }
    if path.contains('\0') {
        return Err(Error::InvalidInput(format!("{path:?}: a NUL byte")));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(Error::InvalidInput(format!(
            "{path:?}: empty, '.' and '..' components are not allowed in a restored path"
        )));
    }
    Ok(parts)
}

/// What is at `path` without following a link there: Ok(None) if nothing.
fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An error for something other than a real directory at `at`, on the way
/// to `path`.
fn not_a_dir(path: &str, at: &Path, meta: &std::fs::Metadata) -> Error {
    let what = if meta.file_type().is_symlink() {
        "a symlink"
    } else {
        "not a directory"
    };
    Error::InvalidInput(format!(
        "{path}: {} is {what}; the restore does not write through it",
        at.display()
    ))
}

/// Check that each existing directory from `target` down to the parent of
/// the last of `parts` is a real directory (not a link).
fn check_parents(target: &Path, path: &str, parts: &[&str]) -> Result<()> {
    let mut at = target.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        match lstat(&at)? {
            None => return Ok(()),
            Some(meta) if meta.file_type().is_dir() => {}
            Some(meta) => return Err(not_a_dir(path, &at, &meta)),
        }
    }
    Ok(())
}

/// Where the entry `path` goes under `target`, after checking that `path`
/// is relative and clean and that no existing directory on the way is a
/// symlink or a file. The last component itself is not looked at.
pub fn target_path(target: &Path, path: &str) -> Result<PathBuf> {
    let parts = components(path)?;
    check_parents(target, path, &parts)?;
    Ok(target.join(path))
}

/// Create `target` if missing (the user's choice, links allowed), then each
/// of the first `count` components of `parts` under it that is missing,
/// refusing a link or a file on the way. Returns the last directory.
fn ensure_dirs(target: &Path, path: &str, parts: &[&str], count: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(target)?;
    let mut at = target.to_path_buf();
    for part in &parts[..count] {
        at.push(part);
        let meta = match lstat(&at)? {
            Some(meta) => meta,
            None => match std::fs::create_dir(&at) {
                Ok(()) => continue,
                // Made meanwhile: look at what it is.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::symlink_metadata(&at)?
                }
                Err(e) => return Err(e.into()),
            },
        };
        if !meta.file_type().is_dir() {
            return Err(not_a_dir(path, &at, &meta));
        }
    }
    Ok(at)
}

/// Make the directory `path` under `target` and any missing parents
/// (with default modes; [`finish_dirs`] sets the real ones). An existing
/// directory is fine; a link or a file in the way is refused.
pub fn make_dir(target: &Path, path: &str) -> Result<PathBuf> {
    let parts = components(path)?;
    ensure_dirs(target, path, &parts, parts.len())
}

/// Make `path` under `target` a symlink to `link_target` (any text: it is
/// stored, never followed), creating missing parents. An existing link or
/// file there is replaced atomically (the link is made beside it as
/// `.NAME.dupla-part` and renamed over it); a directory is refused.
pub fn make_symlink(target: &Path, path: &str, link_target: &str) -> Result<()> {
    let parts = components(path)?;
    if link_target.is_empty() || link_target.contains('\0') {
        return Err(Error::InvalidInput(format!(
            "{path}: the link target {link_target:?} is empty or holds a NUL byte"
        )));
    }
    let parent = ensure_dirs(target, path, &parts, parts.len() - 1)?;
    let name = parts[parts.len() - 1];
    let dest = parent.join(name);
    if let Some(meta) = lstat(&dest)? {
        if meta.file_type().is_dir() {
            return Err(Error::InvalidInput(format!(
                "{path}: a directory is in the way of the symlink"
            )));
        }
    }
    let part = parent.join(format!(".{name}{PART_SUFFIX}"));
    match std::fs::remove_file(&part) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    std::os::unix::fs::symlink(link_target, &part)?;
    if let Err(e) = std::fs::rename(&part, &dest) {
        let _ = std::fs::remove_file(&part);
        return Err(e.into());
    }
    Ok(())
}

/// The [`FileTime`] of `mtime_ns` nanoseconds since the epoch.
fn file_time(mtime_ns: i64) -> FileTime {
    FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Set the permission bits (`mode & 0o7777`, not for a link: Linux links
/// have none) and the mtime of what is at `path`, which must be a symlink
/// if and only if `is_symlink`: a link is never followed. A link's access
/// time is left as it is; a file's too.
pub fn set_metadata(path: &Path, mode: u32, mtime_ns: i64, is_symlink: bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let mtime = file_time(mtime_ns);
    if meta.file_type().is_symlink() != is_symlink {
        return Err(Error::InvalidInput(format!(
            "{}: expected {}a symlink",
            path.display(),
            if is_symlink { "" } else { "not " }
        )));
    }
    if is_symlink {
        let atime = FileTime::from_last_access_time(&meta);
        filetime::set_symlink_file_times(path, atime, mtime)?;
    } else {
        filetime::set_file_mtime(path, mtime)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}

/// Set the modes and mtimes of restored directories — `(path, mode,
/// mtime_ns)` under `target` — deepest first, once their contents are
/// written. Each must be a real directory (not a link).
pub fn finish_dirs(target: &Path, dirs: &[(String, u32, i64)]) -> Result<()> {
    let mut order: Vec<&(String, u32, i64)> = dirs.iter().collect();
    order.sort_by(|a, b| {
        let depth = |p: &str| p.matches('/').count();
        depth(&b.0).cmp(&depth(&a.0)).then_with(|| a.0.cmp(&b.0))
    });
    for (path, mode, mtime_ns) in order {
        let abs = target_path(target, path)?;
        match lstat(&abs)? {
            Some(meta) if meta.file_type().is_dir() => {}
            Some(meta) => return Err(not_a_dir(path, &abs, &meta)),
            None => return Err(Error::NotFound(format!("{path}: the directory is gone"))),
        }
        set_metadata(&abs, *mode, *mtime_ns, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};
    use tempfile::TempDir;

    fn invalid<T: std::fmt::Debug>(result: Result<T>) -> String {
        match result {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    }

    #[test]
    fn target_path_refuses_unclean_paths() {
        let dir = TempDir::new().unwrap();
        let t = dir.path();
        assert_eq!(target_path(t, "a/b.txt").unwrap(), t.join("a/b.txt"));
        assert_eq!(target_path(t, "..x/y..").unwrap(), t.join("..x/y.."));
        for bad in [
            "",
            "../x",
            "/etc/x",
            "a/../../x",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
        ] {
            invalid(target_path(t, bad));
        }
    }

    #[test]
    fn target_path_refuses_links_and_files_on_the_way() {
        let dir = TempDir::new().unwrap();
        let outside = TempDir::new().unwrap();
        let t = dir.path();
        symlink(outside.path(), t.join("out")).unwrap();
        std::fs::write(t.join("file"), "x").unwrap();
        assert!(invalid(target_path(t, "out/x")).contains("a symlink"));
        assert!(invalid(target_path(t, "file/x")).contains("not a directory"));
        // The last component is not looked at.
        assert_eq!(target_path(t, "out").unwrap(), t.join("out"));
        // Missing directories are fine: make_dir creates them.
        assert_eq!(target_path(t, "new/deep/x").unwrap(), t.join("new/deep/x"));
    }

    #[test]
    fn make_dir_creates_parents_and_never_follows_a_link() {
        let dir = TempDir::new().unwrap();
        let outside = TempDir::new().unwrap();
        let t = dir.path().join("target");
        let made = make_dir(&t, "a/b/c").unwrap();
        assert_eq!(made, t.join("a/b/c"));
        assert!(made.is_dir());
        // Again: fine.
        make_dir(&t, "a/b").unwrap();

        // A link in the target pointing outside is not written through.
        symlink(outside.path(), t.join("a/evil")).unwrap();
        assert!(invalid(make_dir(&t, "a/evil/x")).contains("a symlink"));
        assert!(invalid(make_dir(&t, "a/evil")).contains("a symlink"));
        std::fs::write(t.join("a/f"), "x").unwrap();
        invalid(make_dir(&t, "a/f/x"));
        invalid(make_dir(&t, "../x"));
        invalid(make_dir(&t, "/etc/x"));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn make_symlink_replaces_links_and_files_but_not_directories() {
        let dir = TempDir::new().unwrap();
        let outside = TempDir::new().unwrap();
        let t = dir.path();
        make_symlink(t, "d/link", "../elsewhere").unwrap();
        let read = |p: &str| std::fs::read_link(t.join(p)).unwrap();
        assert_eq!(read("d/link"), Path::new("../elsewhere"));
        // The target text may point anywhere: it is stored, not followed.
        make_symlink(t, "d/link", "/etc/passwd").unwrap();
        assert_eq!(read("d/link"), Path::new("/etc/passwd"));
        std::fs::write(t.join("d/file"), "x").unwrap();
        make_symlink(t, "d/file", "link").unwrap();
        assert_eq!(read("d/file"), Path::new("link"));
        // A link pointing outside is replaced, not written through.
        std::fs::write(outside.path().join("victim"), "keep").unwrap();
        symlink(outside.path().join("victim"), t.join("d/old")).unwrap();
        make_symlink(t, "d/old", "new").unwrap();
        assert_eq!(read("d/old"), Path::new("new"));
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).unwrap(),
            "keep"
        );
        // No leftovers beside.
        let mut names: Vec<_> = std::fs::read_dir(t.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["file", "link", "old"]);

        std::fs::create_dir(t.join("d/dir")).unwrap();
        assert!(invalid(make_symlink(t, "d/dir", "x")).contains("directory"));
        symlink(outside.path(), t.join("out")).unwrap();
        assert!(invalid(make_symlink(t, "out/x", "y")).contains("a symlink"));
        invalid(make_symlink(t, "../x", "y"));
        invalid(make_symlink(t, "/etc/x", "y"));
        invalid(make_symlink(t, "d/e", ""));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn set_metadata_sets_modes_and_mtimes_and_never_follows_a_link() {
        let dir = TempDir::new().unwrap();
        let t = dir.path();
        let file = t.join("f");
        std::fs::write(&file, "x").unwrap();
        let when = 1_600_000_000_123_456_789;
        set_metadata(&file, 0o4640, when, false).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o4640);
        assert_eq!(mtime_ns(&meta), when);
        // Before the epoch too.
        set_metadata(&file, 0o600, -1_500_000_000, false).unwrap();
        assert_eq!(mtime_ns(&std::fs::metadata(&file).unwrap()), -1_500_000_000);

        let before = std::fs::metadata(&file).unwrap();
        symlink("f", t.join("l")).unwrap();
        set_metadata(&t.join("l"), 0o777, when, true).unwrap();
        let link = std::fs::symlink_metadata(t.join("l")).unwrap();
        assert_eq!(mtime_ns(&link), when);
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(mtime_ns(&after), mtime_ns(&before));
        assert_eq!(after.mode(), before.mode());

        // A link where a file is expected is refused, and the other way round.
        invalid(set_metadata(&t.join("l"), 0o777, when, false));
        invalid(set_metadata(&file, 0o777, when, true));
    }

    #[test]
    fn finish_dirs_sets_directories_deepest_first() {
        let dir = TempDir::new().unwrap();
        let t = dir.path();
        make_dir(t, "a/b/c").unwrap();
        std::fs::write(t.join("a/b/c/f"), "x").unwrap();
        let dirs = vec![
            ("a".to_string(), 0o755, 1_000_000_000_000_000_000),
            ("a/b".to_string(), 0o500, 1_100_000_000_000_000_000),
            ("a/b/c".to_string(), 0o700, 1_200_000_000_000_000_000),
        ];
        finish_dirs(t, &dirs).unwrap();
        for (path, mode, mtime) in &dirs {
            let meta = std::fs::symlink_metadata(t.join(path)).unwrap();
            assert_eq!(meta.mode() & 0o7777, *mode, "{path}");
            assert_eq!(mtime_ns(&meta), *mtime, "{path}");
        }
        // Put write permission back so the temporary directory can go.
        std::fs::set_permissions(t.join("a/b"), std::fs::Permissions::from_mode(0o755)).unwrap();

        let outside = TempDir::new().unwrap();
        symlink(outside.path(), t.join("link")).unwrap();
        let before = std::fs::metadata(outside.path()).unwrap();
        invalid(finish_dirs(t, &[("link".to_string(), 0o777, 0)]));
        invalid(finish_dirs(t, &[("link/x".to_string(), 0o777, 0)]));
        invalid(finish_dirs(t, &[("../x".to_string(), 0o777, 0)]));
        let after = std::fs::metadata(outside.path()).unwrap();
        assert_eq!(after.mode(), before.mode());
        assert!(matches!(
            finish_dirs(t, &[("gone".to_string(), 0o777, 0)]),
            Err(Error::NotFound(_))
        ));
    }
}
