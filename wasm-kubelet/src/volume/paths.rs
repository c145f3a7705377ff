//! Path safety: relative paths inside a volume never leave its root, neither by `..` nor by a
//! symlink. Every check canonicalizes and compares prefixes; directories are created one
//! component at a time so nothing is ever created through a symlink that points out.

use std::path::{Component, Path, PathBuf};

use super::{io_err, VolumeError};

/// Checks a relative path from the pod spec (`items[].path`, `subPath`): not absolute, no `..`
/// element (upstream's message), not empty.
pub fn check_relative(rel: &str) -> Result<(), VolumeError> {
    if rel.is_empty() {
        return Err(VolumeError::Refused("path must not be empty".into()));
    }
    let path = Path::new(rel);
    if path.is_absolute() {
        return Err(VolumeError::Refused(format!(
            "{rel:?}: must be a relative path"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(VolumeError::Refused(format!(
            "{rel:?}: must not contain '..'"
        )));
    }
    Ok(())
}

/// Whether `path` is `root` or below it (both canonical).
pub fn is_within(root: &Path, path: &Path) -> bool {
    path.starts_with(root)
}

/// Resolves `rel` under `root` following symlinks, and refuses a result outside `root`. With
/// `create`, missing directories are created one by one (each parent checked first). Returns
/// the canonical path.
pub fn resolve_within(root: &Path, rel: &str, create: bool) -> Result<PathBuf, VolumeError> {
    let canon_root = std::fs::canonicalize(root).map_err(io_err(root))?;
    if rel.is_empty() {
        return Ok(canon_root);
    }
    check_relative(rel)?;
    let mut current = canon_root.clone();
    for part in Path::new(rel).components() {
        let Component::Normal(part) = part else {
            continue;
        };
        let next = current.join(part);
        match std::fs::canonicalize(&next) {
            Ok(real) => current = real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                if std::fs::symlink_metadata(&next).is_ok() {
                    // A dangling symlink: creating through it could land anywhere.
                    return Err(escape(rel, &next));
                }
                std::fs::create_dir(&next).map_err(io_err(&next))?;
                current = std::fs::canonicalize(&next).map_err(io_err(&next))?;
            }
            Err(e) => return Err(io_err(&next)(e)),
        }
        if !is_within(&canon_root, &current) {
            return Err(escape(rel, &current));
        }
    }
    Ok(current)
}

fn escape(rel: &str, to: &Path) -> VolumeError {
    VolumeError::Refused(format!(
        "path {rel:?} resolves to {} outside the volume (symlinks must stay inside it)",
        to.display()
    ))
}

/// A volume name as one path component (names are DNS labels after validation; anything else
/// is escaped so it can never name a parent).
pub fn escape_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("_{clean}")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_with_parent_elements_or_absolute_are_refused() {
        assert!(check_relative("a/b.txt").is_ok());
        assert!(
            check_relative("..data").is_ok(),
            "a name starting with .. is no element"
        );
        for bad in ["../etc/passwd", "a/../../x", "..", "/etc/passwd", ""] {
            let e = check_relative(bad).unwrap_err();
            assert!(e.is_refusal(), "{bad}: {e}");
        }
        assert!(check_relative("a/../b")
            .unwrap_err()
            .to_string()
            .contains("must not contain '..'"));
    }

    #[test]
    fn sub_paths_are_created_inside_and_symlinks_out_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let made = resolve_within(&root, "a/b", true).unwrap();
        assert!(made.is_dir());
        assert!(made.starts_with(std::fs::canonicalize(&root).unwrap()));
        assert!(resolve_within(&root, "missing", false).is_err());

        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        let e = resolve_within(&root, "out", false).unwrap_err();
        assert!(
            e.is_refusal() && e.to_string().contains("outside the volume"),
            "{e}"
        );
        let e = resolve_within(&root, "out/new", true).unwrap_err();
        assert!(e.is_refusal(), "{e}");
        assert!(!outside.join("new").exists(), "nothing created outside");

        std::os::unix::fs::symlink("../outside/nothing", root.join("dangling")).unwrap();
        assert!(resolve_within(&root, "dangling", true)
            .unwrap_err()
            .is_refusal());
        assert!(!outside.join("nothing").exists());

        // A relative symlink that stays inside is fine.
        std::os::unix::fs::symlink("a", root.join("alias")).unwrap();
        assert_eq!(resolve_within(&root, "alias/b", false).unwrap(), made);
    }

    #[test]
    fn volume_names_cannot_name_a_parent() {
        assert_eq!(escape_name("cfg"), "cfg");
        assert_eq!(escape_name(".."), "_..");
        assert_eq!(escape_name("a/b"), "a_b");
    }
}
