//! Upstream's AtomicWriter: a projected volume's files are written into a fresh timestamped
//! directory `..<time>`, a `..data` symlink is swapped to it with one rename, and the
//! user-visible names are relative symlinks through `..data`. A reader sees the old set or the
//! new set, never a mix. All symlinks are relative, so they resolve inside a WASI preopen.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use super::{io_err, paths, VolumeError};

/// The symlink naming the current content directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One projected file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's content.
    pub data: Vec<u8>,
    /// Permission bits (`defaultMode` / `mode`).
    pub mode: u32,
}

/// A volume's files by relative path.
pub type Payload = BTreeMap<String, FileProjection>;

/// The default file mode of projected volumes (upstream: 0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// Checks a payload path: relative, no `..` element, not starting with `..` (reserved for the
/// writer's own entries).
pub fn check_path(path: &str) -> Result<(), VolumeError> {
    paths::check_relative(path)?;
    if path.starts_with("..") {
        return Err(VolumeError::Refused(format!(
            "{path:?}: must not start with '..'"
        )));
    }
    Ok(())
}

/// Projects `payload` into the volume's dir and mounts it read-only, as upstream mounts every
/// projected kind (configMap, secret, downwardAPI, projected).
pub fn mount(ctx: &super::Context<'_>, payload: &Payload) -> Result<super::Mounted, VolumeError> {
    write(ctx.dir, payload)?;
    Ok(super::Mounted {
        host: ctx.dir.to_path_buf(),
        read_only: true,
    })
}

/// Writes `payload` into `dir` atomically; returns whether anything changed.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, VolumeError> {
    for path in payload.keys() {
        check_path(path)?;
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let data_link = dir.join(DATA_DIR);
    let old = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old {
        if current_matches(&dir.join(old), payload) {
            return Ok(false);
        }
    }

    // 1. The new content, complete, in its own directory.
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let mut name = stamp.clone();
    let mut n = 0;
    while dir.join(&name).exists() {
        n += 1;
        name = format!("{stamp}{n}");
    }
    let ts_dir = dir.join(&name);
    std::fs::create_dir(&ts_dir).map_err(io_err(&ts_dir))?;
    for (path, file) in payload {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut f = std::fs::File::create(&target).map_err(io_err(&target))?;
        f.write_all(&file.data).map_err(io_err(&target))?;
        f.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o777))
            .map_err(io_err(&target))?;
    }

    // 2. The swap: `..data_tmp` → new dir, renamed over `..data` (atomic).
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &data_link).map_err(io_err(&data_link))?;

    // 3. User-visible names: a symlink per top-level entry, through `..data`.
    let visible: std::collections::BTreeSet<String> =
        payload.keys().filter_map(|p| top_level(p)).collect();
    for top in &visible {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(top), &link)
                .map_err(io_err(&link))?;
        }
    }
    // 4. Old names and the old content go.
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with("..") || visible.contains(&file_name) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        let old_dir = dir.join(&old);
        if old.components().count() == 1 && old_dir != ts_dir {
            let _ = std::fs::remove_dir_all(old_dir);
        }
    }
    Ok(true)
}

fn top_level(path: &str) -> Option<String> {
    Path::new(path).components().find_map(|c| match c {
        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
        _ => None,
    })
}

/// Whether `dir` holds exactly `payload` (content and mode).
fn current_matches(dir: &Path, payload: &Payload) -> bool {
    let mut found = 0usize;
    if !count_files(dir, &mut found) || found != payload.len() {
        return false;
    }
    payload.iter().all(|(path, file)| {
        let p = dir.join(path);
        let mode_ok = std::fs::symlink_metadata(&p)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o777 == file.mode & 0o777);
        mode_ok && std::fs::read(&p).is_ok_and(|d| d == file.data)
    })
}

fn count_files(dir: &Path, n: &mut usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                if !count_files(&e.path(), n) {
                    return false;
                }
            }
            Ok(_) => *n += 1,
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn files_are_visible_through_data_symlinks_and_swapped_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("cfg");
        let first = payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)]);
        assert!(write(&vol, &first).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(vol.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(vol.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let mode = std::fs::metadata(vol.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let old = std::fs::read_link(vol.join(DATA_DIR)).unwrap();
        assert!(old.to_string_lossy().starts_with(".."));

        assert!(!write(&vol, &first).unwrap(), "same content: no swap");
        assert_eq!(std::fs::read_link(vol.join(DATA_DIR)).unwrap(), old);

        let second = payload(&[("a", "changed", 0o644), ("c", "3", 0o644)]);
        assert!(write(&vol, &second).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "changed");
        assert_eq!(std::fs::read_to_string(vol.join("c")).unwrap(), "3");
        assert!(
            std::fs::symlink_metadata(vol.join("sub")).is_err(),
            "stale name removed"
        );
        assert!(!vol.join(&old).exists(), "old content removed");
        let entries: Vec<String> = std::fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            entries.len(),
            4,
            "a, c, ..data and one content dir: {entries:?}"
        );
    }

    #[test]
    fn a_changed_mode_alone_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(dir.path(), &payload(&[("a", "1", 0o644)])).unwrap());
        assert!(write(dir.path(), &payload(&[("a", "1", 0o600)])).unwrap());
        let mode = std::fs::metadata(dir.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn traversal_in_payload_paths_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        for bad in ["../../etc/passwd", "/etc/passwd", "..data", "a/../../x"] {
            let e = write(&vol, &payload(&[("ok", "1", 0o644), (bad, "x", 0o644)])).unwrap_err();
            assert!(e.is_refusal(), "{bad}: {e}");
        }
        assert!(!vol.exists(), "nothing written");
        assert!(!dir.path().join("etc").exists());
    }
}
