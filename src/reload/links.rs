//! The directories that decide what a certificate path opens, hop by hop through its links.
//!
//! A configured path such as certbot's `live/NAME/fullchain.pem` is a link into `archive/NAME/`;
//! a Kubernetes Secret file `tls.crt` is a link through the directory link `..data` into a
//! timestamped directory. A write, rename or re-linking in *any* of those directories changes
//! what the path opens, so the watcher must watch each of them, not just the configured
//! path's parent. [`std::fs::canonicalize`] only gives the end of the chain and loses the
//! directories of the links in between, whose re-pointing is exactly what must be noticed.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Most links followed for one path before giving up, as the kernel does (ELOOP after 40).
pub const MAX_HOPS: usize = 40;

/// What resolving one path found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// Directories to watch, free of links, in the order met: each one holding a link of the
    /// chain, and the one holding the final file. When the chain breaks, the deepest existing
    /// directory reached (where the missing entry would appear) is the last.
    pub dirs: Vec<PathBuf>,
    /// Why the chain does not end at an existing entry, when it does not.
    pub broken: Option<Broken>,
}

/// Why a chain stops before reaching an existing file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// An entry on the way does not exist (a dangling link, or a file not written yet).
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// More than [`MAX_HOPS`] links: most likely a loop.
    #[error("more than {MAX_HOPS} symbolic links on the way (a link loop?)")]
    TooManyLinks,
    /// An entry on the way is a file, yet the path goes on below it.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// An entry could not be examined (permissions, or it changed while being read).
    #[error("{path}: {reason}")]
    Unreadable {
        /// The entry.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// One step left to walk: back to a root, up one level, or down into a name.
enum Step {
    Root(PathBuf),
    Up,
    Name(OsString),
}

/// The steps of `path`, last first, so that `Vec::pop` yields them in order.
fn steps(path: &Path) -> Vec<Step> {
    let mut root = PathBuf::new();
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => root.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => out.push(Step::Up),
            Component::Normal(n) => out.push(Step::Name(n.to_os_string())),
        }
    }
    if !root.as_os_str().is_empty() {
        out.insert(0, Step::Root(root));
    }
    out.reverse();
    out
}

/// Appends `dir` unless already there (a chain often passes one directory twice).
fn add(dirs: &mut Vec<PathBuf>, dir: &Path) {
    if !dirs.iter().any(|d| d == dir) {
        dirs.push(dir.to_path_buf());
    }
}

/// Follows `path` component by component, reading every link met (a file link or a directory
/// link anywhere in the path, relative targets taken from the link's own directory), and
/// returns the directories whose entries decide what `path` opens. Never fails: a loop, a
/// dangling link or an unreadable entry ends the walk with what was found so far, which
/// includes the directory where a fix would land.
pub fn resolve(path: &Path) -> Chain {
    let mut chain = Chain::default();
    let start = match std::path::absolute(path) {
        Ok(p) => p,
        Err(e) => {
            chain.broken = Some(Broken::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
            return chain;
        }
    };
    let mut pending = steps(&start);
    // Invariant: `at` names an existing directory and contains no link, so `..` can be taken
    // lexically (the kernel takes `..` of a link's target physically, and so do we).
    let mut at = PathBuf::new();
    let mut hops = 0usize;
    while let Some(step) = pending.pop() {
        let name = match step {
            Step::Root(r) => {
                at = r;
                continue;
            }
            Step::Up => {
                at.pop();
                continue;
            }
            Step::Name(n) => n,
        };
        let entry = at.join(&name);
        let meta = match std::fs::symlink_metadata(&entry) {
            Ok(m) => m,
            Err(e) => {
                add(&mut chain.dirs, &at);
                chain.broken = Some(if e.kind() == std::io::ErrorKind::NotFound {
                    Broken::Missing(entry)
                } else {
                    Broken::Unreadable {
                        path: entry,
                        reason: e.to_string(),
                    }
                });
                return chain;
            }
        };
        if meta.file_type().is_symlink() {
            // The link's directory decides where it points: re-linking happens there.
            add(&mut chain.dirs, &at);
            hops += 1;
            if hops > MAX_HOPS {
                chain.broken = Some(Broken::TooManyLinks);
                return chain;
            }
            match std::fs::read_link(&entry) {
                // The target's steps come next (on top of the stack), before what followed the link.
                Ok(target) => pending.extend(steps(&target)),
                Err(e) => {
                    chain.broken = Some(Broken::Unreadable {
                        path: entry,
                        reason: e.to_string(),
                    });
                    return chain;
                }
            }
            continue;
        }
        if !pending.is_empty() && !meta.is_dir() {
            add(&mut chain.dirs, &at);
            chain.broken = Some(Broken::NotADirectory(entry));
            return chain;
        }
        if pending.is_empty() {
            // The end of the chain: its directory sees in-place writes and renames.
            add(&mut chain.dirs, &at);
        }
        at = entry;
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A temporary directory, canonical so expectations compare with resolved paths.
    fn base() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = std::fs::canonicalize(t.path()).unwrap();
        (t, p)
    }

    fn mkdir(p: &Path) {
        std::fs::create_dir_all(p).unwrap();
    }

    fn touch(p: &Path) {
        std::fs::write(p, "x").unwrap();
    }

    #[test]
    fn a_plain_file_needs_only_its_directory() {
        let (_t, b) = base();
        touch(&b.join("cert.pem"));
        let c = resolve(&b.join("cert.pem"));
        assert_eq!(c.dirs, vec![b.clone()]);
        assert_eq!(c.broken, None);
        // `.` and `..` in the configured path are walked, not kept.
        mkdir(&b.join("sub"));
        let c = resolve(&b.join("sub/./../cert.pem"));
        assert_eq!(c.dirs, [b]);
        assert_eq!(c.broken, None);
    }

    #[test]
    fn certbot_live_link_into_archive() {
        let (_t, b) = base();
        mkdir(&b.join("archive/x"));
        mkdir(&b.join("live/x"));
        touch(&b.join("archive/x/cert1.pem"));
        symlink("../../archive/x/cert1.pem", b.join("live/x/cert.pem")).unwrap();
        let c = resolve(&b.join("live/x/cert.pem"));
        assert_eq!(c.dirs, [b.join("live/x"), b.join("archive/x")]);
        assert_eq!(c.broken, None);
    }

    #[test]
    fn absolute_targets_and_two_level_chains() {
        let (_t, b) = base();
        for d in ["a", "b", "c"] {
            mkdir(&b.join(d));
        }
        touch(&b.join("c/cert.pem"));
        symlink(b.join("c/cert.pem"), b.join("b/cert.pem")).unwrap();
        symlink("../b/cert.pem", b.join("a/cert.pem")).unwrap();
        let c = resolve(&b.join("a/cert.pem"));
        assert_eq!(c.dirs, [b.join("a"), b.join("b"), b.join("c")]);
        assert_eq!(c.broken, None);
    }

    #[test]
    fn kubernetes_data_directory_link() {
        let (_t, b) = base();
        let m = b.join("mount");
        mkdir(&m.join("..2026_12_01_01"));
        touch(&m.join("..2026_12_01_01/tls.crt"));
        symlink("..2026_12_01_01", m.join("..data")).unwrap();
        symlink("..data/tls.crt", m.join("tls.crt")).unwrap();
        let c = resolve(&m.join("tls.crt"));
        assert_eq!(c.dirs, [m.clone(), m.join("..2026_12_01_01")]);
        assert_eq!(c.broken, None);
    }

    #[test]
    fn directory_links_inside_the_configured_path() {
        let (_t, b) = base();
        mkdir(&b.join("real/certs"));
        touch(&b.join("real/certs/cert.pem"));
        symlink("real", b.join("etc")).unwrap();
        let c = resolve(&b.join("etc/certs/cert.pem"));
        assert_eq!(c.dirs, [b.clone(), b.join("real/certs")]);
        // `..` after a directory link climbs from its target, as the kernel does.
        touch(&b.join("real/top.pem"));
        let c = resolve(&b.join("etc/certs/../top.pem"));
        assert_eq!(c.dirs, [b.clone(), b.join("real")]);
        assert_eq!(c.broken, None);
    }

    #[test]
    fn loops_stop_with_what_was_found() {
        let (_t, b) = base();
        symlink("b.pem", b.join("a.pem")).unwrap();
        symlink("a.pem", b.join("b.pem")).unwrap();
        symlink("self.pem", b.join("self.pem")).unwrap();
        for p in ["a.pem", "self.pem"] {
            let c = resolve(&b.join(p));
            assert_eq!(c.broken, Some(Broken::TooManyLinks), "{p}");
            assert_eq!(c.dirs, vec![b.clone()], "{p}");
        }
    }

    #[test]
    fn forty_links_resolve_forty_one_do_not() {
        let (_t, b) = base();
        touch(&b.join("end.pem"));
        symlink("end.pem", b.join("l0")).unwrap();
        for i in 1..=MAX_HOPS {
            symlink(format!("l{}", i - 1), b.join(format!("l{i}"))).unwrap();
        }
        assert_eq!(resolve(&b.join(format!("l{}", MAX_HOPS - 1))).broken, None);
        assert_eq!(
            resolve(&b.join(format!("l{MAX_HOPS}"))).broken,
            Some(Broken::TooManyLinks)
        );
    }

    #[test]
    fn dangling_links_watch_where_the_target_would_appear() {
        let (_t, b) = base();
        mkdir(&b.join("live"));
        mkdir(&b.join("archive"));
        // Target directory exists, file does not.
        symlink("../archive/cert1.pem", b.join("live/cert.pem")).unwrap();
        let c = resolve(&b.join("live/cert.pem"));
        assert_eq!(c.dirs, [b.join("live"), b.join("archive")]);
        assert_eq!(c.broken, Some(Broken::Missing(b.join("archive/cert1.pem"))));
        // Target directory missing too: watch its deepest existing ancestor.
        symlink("../archive/new/cert.pem", b.join("live/next.pem")).unwrap();
        let c = resolve(&b.join("live/next.pem"));
        assert_eq!(c.dirs, [b.join("live"), b.join("archive")]);
        assert_eq!(c.broken, Some(Broken::Missing(b.join("archive/new"))));
        // A configured path that is not there at all.
        let c = resolve(&b.join("nothing/here.pem"));
        assert_eq!(c.dirs, vec![b.clone()]);
        assert!(matches!(c.broken, Some(Broken::Missing(_))));
    }

    #[test]
    fn a_file_used_as_a_directory_is_reported() {
        let (_t, b) = base();
        touch(&b.join("cert.pem"));
        let c = resolve(&b.join("cert.pem/key.pem"));
        assert_eq!(c.dirs, vec![b.clone()]);
        assert_eq!(c.broken, Some(Broken::NotADirectory(b.join("cert.pem"))));
    }

    #[test]
    fn relative_paths_start_at_the_working_directory() {
        let cwd = std::fs::canonicalize(".").unwrap();
        let c = resolve(Path::new("Cargo.toml"));
        assert_eq!(c.dirs, [cwd]);
        assert_eq!(c.broken, None);
    }
}
