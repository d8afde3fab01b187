//! The directory walk of a snapshot backup: which files, directories and
//! symlinks under the client root a backup of some paths takes, with their
//! metadata, and what it had to leave out.
//!
//! Every given path (relative to the root, as [`crate::backup::resolve`]
//! reads it, or absolute) must lie inside the canonical root once the
//! symlinks in its *parent* are resolved; a given path that is itself a
//! symlink is taken as the link. All given paths are checked before
//! anything is walked: one outside the root, missing, or not valid UTF-8 is
//! an [`Error::InvalidInput`] naming it.
//!
//! The walk uses the `ignore` crate from the root down, without its
//! standard filters (no .gitignore or hidden-file rules) and without
//! following symlinks. A `.duplaignore` file in any walked directory
//! (the root and the directories between it and a given path included)
//! works like a .gitignore for that directory. The `--exclude` patterns and
//! the lines of the `--exclude-file`s are gitignore patterns relative to the
//! root: `*.tmp` excludes at any depth, `build/` only directories, `/x`
//! only the root's `x`, `!keep.tmp` takes one back. The client's own state
//! directory `ROOT/.dupla` and restore leftovers `.*.dupla-part` are always
//! left out.
//!
//! The result lists directories (each given directory, and every directory
//! between the root and a given path, so a restore can recreate them),
//! regular files, and symlinks with their target text (never followed; a
//! link pointing outside the root is stored as a link all the same).
//! Sockets, FIFOs, devices, and what cannot be read go to
//! [`Walk::skipped`] with a reason, and the walk goes on. So does a given
//! path that an exclude pattern or a `.duplaignore` leaves out.

use crate::restore::PART_SUFFIX;
use crate::session_store::STATE_DIR;
use dupla::{Error, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::WalkBuilder;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The per-directory ignore file, gitignore syntax.
pub const IGNORE_FILE: &str = ".duplaignore";

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, stored as a link.
    Symlink {
        /// The link's target, as written in the link.
        target: String,
    },
}

/// One thing the backup takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkEntry {
    /// Relative to the root, '/'-separated, no leading "./" (never empty:
    /// the root itself is not an entry).
    pub path: String,
    /// Where it is on this machine (under the canonical root).
    pub abs: PathBuf,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Bytes of a regular file; 0 for directories and symlinks.
    pub size: u64,
    /// Permission bits, setuid, setgid and sticky included (`st_mode & 0o7777`).
    pub mode: u32,
    /// Last modification, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Device number of the file system holding it.
    pub dev: u64,
}

/// Something the walk met but does not back up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Relative to the root, '/'-separated (lossy if not valid UTF-8).
    pub path: String,
    /// Why, for the user: "a FIFO", "permission denied"...
    pub reason: String,
}

/// What a backup leaves out besides `.duplaignore` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkOptions {
    /// Gitignore-style patterns from `--exclude`, relative to the root.
    pub excludes: Vec<String>,
    /// Files of patterns from `--exclude-file`: one a line, blank lines and
    /// `#` comments ignored.
    pub exclude_files: Vec<PathBuf>,
}

/// The result of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Sorted by path component by component (a directory's whole subtree
    /// follows it at once, so parents come before their children); no
    /// duplicates.
    pub entries: Vec<WalkEntry>,
    /// What was left out and why, sorted by path.
    pub skipped: Vec<Skipped>,
}

/// Walk `paths` (relative to `root` or absolute) under `root`: see the
/// module documentation for the rules.
pub fn walk(root: &Path, paths: &[PathBuf], options: &WalkOptions) -> Result<Walk> {
    let root_canon = std::fs::canonicalize(root).map_err(|e| {
        Error::InvalidInput(format!(
            "the client root {} is unusable: {e}",
            root.display()
        ))
    })?;
    let excludes = excludes(&root_canon, options)?;
    let mut targets = paths
        .iter()
        .map(|path| locate(root, &root_canon, path))
        .collect::<Result<Vec<_>>>()?;
    targets.sort();
    targets.dedup();

    let skipped = Arc::new(Mutex::new(Vec::new()));
    let mut builder = WalkBuilder::new(&root_canon);
    builder
        .standard_filters(false)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE);
    {
        let root_canon = root_canon.clone();
        let targets = targets.clone();
        let skipped = Arc::clone(&skipped);
        builder.filter_entry(move |dent| {
            let Ok(relative) = dent.path().strip_prefix(&root_canon) else {
                return false;
            };
            let Some(rel) = crate::backup::catalog_name(relative) else {
                skipped.lock().unwrap().push(Skipped {
                    path: relative.to_string_lossy().into_owned(),
                    reason: "the name is not valid UTF-8".into(),
                });
                return false;
            };
            let is_dir = dent.file_type().is_some_and(|t| t.is_dir());
            wanted(&targets, &rel) && !excluded(&excludes, &rel, is_dir)
        });
    }

    let mut entries = Vec::new();
    let mut unreadable_dirs = Vec::new();
    let mut found = Vec::new();
    for result in builder.build() {
        let dent = match result {
            Ok(dent) => dent,
            Err(err) => {
                let path = error_path(&err)
                    .and_then(|p| p.strip_prefix(&root_canon).ok())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                unreadable_dirs.push(path.clone());
                skipped.lock().unwrap().push(Skipped {
                    path,
                    reason: reason_of(&err),
                });
                continue;
            }
        };
        if let Some(err) = dent.error() {
            // An ignore file there could not be read or parsed.
            let unreadable = err.io_error().is_some();
            let path = error_path(err).unwrap_or(dent.path());
            let rel = path
                .strip_prefix(&root_canon)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let reason = if unreadable {
                format!("could not read it, so its rules were not applied: {err}")
            } else {
                format!("some of its rules were not applied: {err}")
            };
            skipped.lock().unwrap().push(Skipped { path: rel, reason });
        }
        if dent.depth() == 0 {
            continue;
        }
        // The filter let only valid UTF-8 names under the root through.
        let Some(rel) = dent
            .path()
            .strip_prefix(&root_canon)
            .ok()
            .and_then(crate::backup::catalog_name)
        else {
            continue;
        };
        found.push(rel.clone());
        match entry(dent.path(), rel.clone()) {
            Ok(entry) => entries.push(entry),
            Err(reason) => skipped.lock().unwrap().push(Skipped { path: rel, reason }),
        }
    }

    let mut skipped = std::mem::take(&mut *skipped.lock().unwrap());
    // A directory that could not be listed is not taken (empty) either.
    entries.retain(|e| !unreadable_dirs.contains(&e.path));
    for target in targets.iter().filter(|t| !t.is_empty()) {
        let met = found.contains(target)
            || skipped
                .iter()
                .any(|s| s.path == *target || is_ancestor(&s.path, target));
        if !met {
            skipped.push(Skipped {
                path: target.clone(),
                reason: "excluded by a pattern or a .duplaignore".into(),
            });
        }
    }
    entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    entries.dedup_by(|a, b| a.path == b.path);
    skipped.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.reason.cmp(&b.reason)));
    skipped.dedup();
    Ok(Walk { entries, skipped })
}

/// The root-relative name of a given `path` ("" for the root itself),
/// after checking it exists and lies inside the root.
fn locate(root: &Path, root_canon: &Path, path: &Path) -> Result<String> {
    let shown = path.display();
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let not_found = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::InvalidInput(format!("{shown}: no such file or directory"))
        }
        _ => Error::InvalidInput(format!("{shown}: {e}")),
    };
    // Resolve the parent's symlinks, not the path's own: a given symlink
    // is backed up as a link.
    // The root itself ("." or the root as given) is resolved whole, so a
    // root that is a symlink is still the root.
    let is_root = path.components().all(|c| c == Component::CurDir) || joined == root;
    let resolved = match (joined.parent(), joined.file_name()) {
        (Some(parent), Some(name)) if !is_root && !ends_in_dots(&joined) => {
            std::fs::canonicalize(parent).map_err(not_found)?.join(name)
        }
        _ => std::fs::canonicalize(&joined).map_err(not_found)?,
    };
    let relative = resolved.strip_prefix(root_canon).map_err(|_| {
        Error::InvalidInput(format!(
            "{shown} is outside the client root {}",
            root_canon.display()
        ))
    })?;
    std::fs::symlink_metadata(&resolved).map_err(not_found)?;
    crate::backup::catalog_name(relative)
        .ok_or_else(|| Error::InvalidInput(format!("{shown}: the name is not valid UTF-8")))
}

/// Whether the last component of `path` is `..` (or `.`), which
/// `file_name` would not name.
fn ends_in_dots(path: &Path) -> bool {
    matches!(
        path.components().next_back(),
        Some(Component::ParentDir | Component::CurDir)
    )
}

/// Whether `ancestor` is a strict ancestor of `path` ("" is everyone's).
fn is_ancestor(ancestor: &str, path: &str) -> bool {
    ancestor.is_empty() && !path.is_empty()
        || path.len() > ancestor.len()
            && path.starts_with(ancestor)
            && path.as_bytes()[ancestor.len()] == b'/'
}

/// Whether the walk goes to `rel`: it is a given path, inside one, or on
/// the way to one.
fn wanted(targets: &[String], rel: &str) -> bool {
    targets
        .iter()
        .any(|t| t == rel || is_ancestor(t, rel) || is_ancestor(rel, t))
}

/// Whether `rel` is always left out or matches an exclude pattern.
fn excluded(excludes: &Gitignore, rel: &str, is_dir: bool) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel == STATE_DIR
        || is_ancestor(STATE_DIR, rel)
        || (name.starts_with('.') && name.ends_with(PART_SUFFIX) && name.len() > PART_SUFFIX.len())
        || excludes.matched(rel, is_dir).is_ignore()
}

/// The `--exclude` patterns and exclude-file lines, as one gitignore
/// rooted at the root.
fn excludes(root_canon: &Path, options: &WalkOptions) -> Result<Gitignore> {
    let mut builder = GitignoreBuilder::new(root_canon);
    for pattern in &options.excludes {
        builder
            .add_line(None, pattern)
            .map_err(|e| Error::InvalidInput(format!("--exclude {pattern:?}: {e}")))?;
    }
    for file in &options.exclude_files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::InvalidInput(format!("exclude file {}: {e}", file.display())))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            builder.add_line(Some(file.clone()), line).map_err(|e| {
                Error::InvalidInput(format!(
                    "exclude file {} line {}: {e}",
                    file.display(),
                    n + 1
                ))
            })?;
        }
    }
    builder
        .build()
        .map_err(|e| Error::InvalidInput(format!("exclude patterns: {e}")))
}

/// The entry for `abs`, or why it is skipped.
fn entry(abs: &Path, path: String) -> std::result::Result<WalkEntry, String> {
    let meta = std::fs::symlink_metadata(abs).map_err(|e| io_reason(&e))?;
    let file_type = meta.file_type();
    let kind = if file_type.is_dir() {
        // Listing it is what the walk does: a failure shows up there.
        EntryKind::Dir
    } else if file_type.is_file() {
        // The walk does not open files: check now that the backup can.
        std::fs::File::open(abs).map_err(|e| io_reason(&e))?;
        EntryKind::File
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(abs).map_err(|e| io_reason(&e))?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| "the link's target is not valid UTF-8".to_string())?;
        EntryKind::Symlink { target }
    } else {
        return Err(special_kind(&meta).into());
    };
    let size = if kind == EntryKind::File {
        meta.len()
    } else {
        0
    };
    Ok(WalkEntry {
        path,
        abs: abs.to_path_buf(),
        kind,
        size,
        mode: meta.mode() & 0o7777,
        mtime_ns: mtime_ns(&meta),
        inode: meta.ino(),
        dev: meta.dev(),
    })
}

/// Last modification in nanoseconds since the epoch (saturating).
fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// What a file that is neither regular, a directory nor a link is.
fn special_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file, directory or symlink"
    }
}

/// An I/O error as a skip reason.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::NotFound => "vanished during the walk".into(),
        _ => e.to_string(),
    }
}

/// The reason for a walk error.
fn reason_of(err: &ignore::Error) -> String {
    match err.io_error() {
        Some(e) => io_reason(e),
        None => err.to_string(),
    }
}

/// The path a walk error is about, if it says.
fn error_path(err: &ignore::Error) -> Option<&Path> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Partial(errs) => errs.iter().find_map(error_path),
        ignore::Error::Loop { child, .. } => Some(child),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use tempfile::TempDir;

    fn write(root: &Path, path: &str, text: &str) {
        let abs = root.join(path);
        std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
        std::fs::write(abs, text).unwrap();
    }

    fn paths(walk: &Walk) -> Vec<&str> {
        walk.entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn skipped(walk: &Walk) -> Vec<(&str, &str)> {
        walk.skipped
            .iter()
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect()
    }

    fn get<'a>(walk: &'a Walk, path: &str) -> &'a WalkEntry {
        walk.entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} not in {:?}", paths(walk)))
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A root with a state directory and a restore leftover.
    fn root() -> TempDir {
        let dir = TempDir::new().unwrap();
        write(dir.path(), ".dupla/session.json", "{}");
        write(dir.path(), ".dupla/unfinished/x", "");
        dir
    }

    #[test]
    fn walks_nested_directories_with_metadata() {
        let dir = root();
        let root = dir.path();
        write(root, "docs/a.txt", "hello");
        write(root, "docs/sub/deep/b.txt", "world!");
        write(root, "docs/empty", "");
        write(root, "docs/.hidden", "h");
        write(root, "docs/.a.txt.dupla-part", "part");
        write(root, "docs-other/c", "c");
        std::fs::create_dir(root.join("docs/emptydir")).unwrap();
        std::fs::set_permissions(root.join("docs/a.txt"), PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(root.join("docs/empty"), PermissionsExt::from_mode(0o4755))
            .unwrap();

        let walk = walk(root, &[".".into()], &WalkOptions::default()).unwrap();
        assert_eq!(
            paths(&walk),
            [
                "docs",
                "docs/.hidden",
                "docs/a.txt",
                "docs/empty",
                "docs/emptydir",
                "docs/sub",
                "docs/sub/deep",
                "docs/sub/deep/b.txt",
                "docs-other",
                "docs-other/c",
            ]
        );
        assert!(walk.skipped.is_empty(), "{:?}", walk.skipped);

        let a = get(&walk, "docs/a.txt");
        assert_eq!(a.kind, EntryKind::File);
        assert_eq!((a.size, a.mode), (5, 0o600));
        let meta = std::fs::metadata(root.join("docs/a.txt")).unwrap();
        assert_eq!(a.inode, meta.ino());
        assert_eq!(a.dev, meta.dev());
        assert_eq!(a.mtime_ns, meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
        assert_eq!(a.abs, root.canonicalize().unwrap().join("docs/a.txt"));
        let empty = get(&walk, "docs/empty");
        assert_eq!((empty.size, empty.mode), (0, 0o4755));
        let d = get(&walk, "docs/sub");
        assert_eq!((&d.kind, d.size), (&EntryKind::Dir, 0));
    }

    #[test]
    fn a_given_path_brings_its_parents_and_nothing_beside() {
        let dir = root();
        let root = dir.path();
        write(root, "a/b/c/file", "x");
        write(root, "a/b/c/other", "x");
        write(root, "a/b/beside", "x");
        write(root, "a/top", "x");
        write(root, "z", "x");
        let abs = root.join("a/b/c/file");
        let walk = walk(
            root,
            &["a/b/c/file".into(), abs, "a/top".into()],
            &WalkOptions::default(),
        )
        .unwrap();
        assert_eq!(paths(&walk), ["a", "a/b", "a/b/c", "a/b/c/file", "a/top"]);

        let walk = super::walk(root, &["a/b/".into()], &WalkOptions::default()).unwrap();
        assert_eq!(
            paths(&walk),
            [
                "a",
                "a/b",
                "a/b/beside",
                "a/b/c",
                "a/b/c/file",
                "a/b/c/other"
            ]
        );
    }

    #[test]
    fn symlinks_are_stored_as_links_never_followed() {
        let dir = root();
        let outside = TempDir::new().unwrap();
        write(outside.path(), "secret", "s");
        let root = dir.path();
        write(root, "data/real/f", "f");
        symlink("real/f", root.join("data/inside")).unwrap();
        symlink(outside.path(), root.join("data/out")).unwrap();
        symlink("real", root.join("data/dirlink")).unwrap();
        symlink("nowhere", root.join("data/dangling")).unwrap();

        let walk = walk(root, &["data".into()], &WalkOptions::default()).unwrap();
        assert_eq!(
            paths(&walk),
            [
                "data",
                "data/dangling",
                "data/dirlink",
                "data/inside",
                "data/out",
                "data/real",
                "data/real/f"
            ]
        );
        let link = |path, target: &str| {
            assert_eq!(
                get(&walk, path).kind,
                EntryKind::Symlink {
                    target: target.into()
                }
            );
        };
        link("data/inside", "real/f");
        link("data/dirlink", "real");
        link("data/dangling", "nowhere");
        link("data/out", outside.path().to_str().unwrap());

        // A given symlink is the link, even one pointing outside the root.
        let walk = super::walk(root, &["data/out".into()], &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walk), ["data", "data/out"]);
        // A path through a link to a directory inside the root is named by
        // the real directory.
        let walk = super::walk(root, &["data/dirlink/f".into()], &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walk), ["data", "data/real", "data/real/f"]);
    }

    #[test]
    fn paths_outside_the_root_are_refused_before_anything() {
        let dir = root();
        let outside = TempDir::new().unwrap();
        let root = dir.path();
        write(root, "in", "x");
        write(outside.path(), "f", "x");
        symlink(outside.path(), root.join("out")).unwrap();

        for bad in [
            outside.path().join("f"),
            PathBuf::from("../"),
            PathBuf::from(".."),
            PathBuf::from("out/f"),
            PathBuf::from("/etc"),
        ] {
            let err = walk(root, &["in".into(), bad.clone()], &WalkOptions::default()).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput(m) if m.contains("outside the client root")
                    && m.contains(&bad.display().to_string())),
                "{bad:?}: {err}"
            );
        }
        let err = walk(root, &["missing".into()], &WalkOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("missing")),
            "{err}"
        );
    }

    #[test]
    fn excludes_exclude_files_and_duplaignore() {
        let dir = root();
        let root = dir.path();
        write(root, "keep.txt", "x");
        write(root, "x.tmp", "x");
        write(root, "deep/er/y.tmp", "x");
        write(root, "deep/er/keep.tmp", "x");
        write(root, "build/out", "x");
        write(root, "src/build", "a file named build");
        write(root, "src/cache/blob", "x");
        write(root, "src/x", "x");
        write(root, "x", "x");
        write(root, "notes/draft.md", "x");
        write(root, "notes/final.md", "x");
        write(root, "notes/sub/draft.md", "x");
        write(root, "notes/.duplaignore", "# drafts stay home\ndraft.md\n");
        write(root, "other/draft.md", "x");
        let list = TempDir::new().unwrap();
        let list_file = list.path().join("excludes");
        std::fs::write(&list_file, "# caches\n\ncache/\r\n/x\n").unwrap();

        let options = WalkOptions {
            excludes: vec!["*.tmp".into(), "!keep.tmp".into(), "build/".into()],
            exclude_files: vec![list_file],
        };
        let walk = walk(root, &[".".into()], &options).unwrap();
        assert_eq!(
            paths(&walk),
            [
                "deep",
                "deep/er",
                "deep/er/keep.tmp",
                "keep.txt",
                "notes",
                "notes/.duplaignore",
                "notes/final.md",
                "notes/sub",
                "other",
                "other/draft.md",
                "src",
                "src/build",
                "src/x",
            ]
        );
        assert!(walk.skipped.is_empty(), "{:?}", walk.skipped);

        // A given path that is excluded is reported, not walked.
        let walk = super::walk(root, &["x.tmp".into(), "keep.txt".into()], &options).unwrap();
        assert_eq!(paths(&walk), ["keep.txt"]);
        assert_eq!(
            skipped(&walk),
            [("x.tmp", "excluded by a pattern or a .duplaignore")]
        );

        // A missing exclude file or a bad pattern is an error.
        let bad = WalkOptions {
            exclude_files: vec![root.join("no-such-list")],
            ..WalkOptions::default()
        };
        assert!(matches!(
            super::walk(root, &[".".into()], &bad),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn a_root_given_through_a_symlink_is_walked_whole() {
        let dir = root();
        write(dir.path(), "f", "x");
        let holder = TempDir::new().unwrap();
        let link = holder.path().join("root-link");
        symlink(dir.path(), &link).unwrap();
        for given in [".", "", "./"] {
            let walk = walk(&link, &[given.into()], &WalkOptions::default()).unwrap();
            assert_eq!(paths(&walk), ["f"], "{given:?}");
        }
        let walk = walk(&link, std::slice::from_ref(&link), &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walk), ["f"]);
        let walk = super::walk(&link, &[link.join("f")], &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walk), ["f"]);
    }

    #[test]
    fn a_duplaignore_in_the_root_applies_to_a_given_subdirectory() {
        let dir = root();
        let root = dir.path();
        write(root, ".duplaignore", "*.log\n");
        write(root, "app/run.log", "x");
        write(root, "app/main.rs", "x");
        let walk = walk(root, &["app".into()], &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walk), ["app", "app/main.rs"]);
    }

    #[test]
    fn the_state_directory_and_part_files_are_never_listed() {
        let dir = root();
        let root = dir.path();
        write(root, "a/.f.dupla-part", "x");
        write(root, "a/f", "x");
        write(root, "a/.dupla/kept", "only the root's .dupla is the state");
        let negate = WalkOptions {
            excludes: vec!["!.dupla".into(), "!.dupla/**".into()],
            ..WalkOptions::default()
        };
        let walk = walk(root, &[".".into()], &negate).unwrap();
        assert_eq!(paths(&walk), ["a", "a/.dupla", "a/.dupla/kept", "a/f"]);

        let walk = super::walk(root, &[".dupla/session.json".into()], &negate).unwrap();
        assert!(walk.entries.is_empty());
        assert_eq!(skipped(&walk).len(), 1);
    }

    #[test]
    fn fifos_and_unreadable_files_are_skipped_and_the_walk_goes_on() {
        let dir = root();
        let root = dir.path();
        write(root, "d/a", "x");
        write(root, "d/secret", "x");
        write(root, "d/z", "x");
        write(root, "locked/inner", "x");
        let status = std::process::Command::new("mkfifo")
            .arg(root.join("d/pipe"))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::set_permissions(root.join("d/secret"), PermissionsExt::from_mode(0o000)).unwrap();
        std::fs::set_permissions(root.join("locked"), PermissionsExt::from_mode(0o000)).unwrap();

        let walk = walk(root, &[".".into()], &WalkOptions::default()).unwrap();
        // Put the permissions back so the temporary directory can go.
        std::fs::set_permissions(root.join("locked"), PermissionsExt::from_mode(0o755)).unwrap();

        assert!(skipped(&walk).contains(&("d/pipe", "a FIFO (named pipe)")));
        if is_root() {
            // Permission checks do not fail for root: both are readable.
            assert_eq!(
                paths(&walk),
                ["d", "d/a", "d/secret", "d/z", "locked", "locked/inner"]
            );
            assert_eq!(get(&walk, "d/secret").mode, 0);
            assert_eq!(skipped(&walk), [("d/pipe", "a FIFO (named pipe)")]);
        } else {
            assert_eq!(paths(&walk), ["d", "d/a", "d/z"]);
            let got = skipped(&walk);
            assert!(got.contains(&("d/secret", "permission denied")), "{got:?}");
            assert!(got.contains(&("locked", "permission denied")), "{got:?}");
        }
    }
}
