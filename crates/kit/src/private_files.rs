//! SQLite files kept to their owner. The databases hold secrets (the gateway's private signing
//! keys and client secret hashes, users' password hashes), so on Unix every database file and
//! its `-wal`/`-shm` companions are 0600 and a folder created for them 0700, whatever the
//! process's umask, and a database or folder that other local users can open is refused at
//! start rather than used (as ssh refuses a private key others can read).
//!
//! The modes are set explicitly on each file rather than by changing the process's umask: a
//! umask is process-wide state (it would change the modes of every file any library or test in
//! the process creates) and needs `unsafe` or a new dependency to set. sqlx creates the main
//! file with the umask's mode, so the file is created here first, 0600, and sqlx opens it;
//! SQLite then gives `-wal` and `-shm` the main file's mode, which is checked again after open.

use std::path::{Path, PathBuf};

/// What SQLite may keep beside a database file, named by the suffix added to its path.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Before a SQLite database at `path` is opened: its folder exists (created 0700 when missing)
/// and is the owner's alone; the file exists (created 0600 when missing, if `create`) and it
/// and its companions are the owner's alone. A file or folder open to others is an error that
/// names it and the command that fixes it.
pub fn prepare(path: &Path, create: bool) -> anyhow::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if folder.exists() {
        refuse_if_shared(folder, Kind::Folder)?;
    } else {
        platform::create_private_folder(folder)?;
    }
    if !path.exists() && create {
        platform::create_private_file(path)?;
    }
    for file in std::iter::once(path.to_path_buf()).chain(companions(path)) {
        if file.exists() {
            refuse_if_shared(&file, Kind::File)?;
        }
    }
    Ok(())
}

/// A data folder that holds several databases (`gatehouse up`'s), checked whole before any is
/// opened: every database file and companion in it that others can open, and the folder itself,
/// are named in one error with one command that fixes them all, rather than one per start (a
/// folder made by an older version has them all at 0644). A missing folder is fine: it is
/// created private when the first database is opened.
pub fn check_data_folder(folder: &Path) -> anyhow::Result<()> {
    if !folder.exists() {
        return Ok(());
    }
    let mut shared = Vec::new();
    if let Some(mode) = platform::shared_mode(folder)? {
        shared.push((folder.to_path_buf(), Kind::Folder, mode));
    }
    let entries = std::fs::read_dir(folder)
        .map_err(|error| anyhow::anyhow!("reading the folder {}: {error}", folder.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let database = name.ends_with(".db")
            || COMPANIONS
                .iter()
                .any(|suffix| name.ends_with(&format!(".db{suffix}")));
        if database && path.is_file() {
            if let Some(mode) = platform::shared_mode(&path)? {
                shared.push((path, Kind::File, mode));
            }
        }
    }
    if shared.is_empty() {
        return Ok(());
    }
    // The folder itself: unless others may write to it (see `refuse_if_shared`).
    if shared
        .iter()
        .any(|(_, kind, mode)| matches!(kind, Kind::Folder) && mode & 0o1002 != 0)
    {
        return refuse_if_shared(folder, Kind::Folder);
    }
    let listed: Vec<String> = shared
        .iter()
        .map(|(path, _, mode)| format!("{} (mode {mode:04o})", path.display()))
        .collect();
    let commands: Vec<String> = [Kind::Folder, Kind::File]
        .into_iter()
        .filter_map(|kind| {
            let paths: Vec<String> = shared
                .iter()
                .filter(|(_, k, _)| k.private_mode() == kind.private_mode())
                .map(|(path, _, _)| path.display().to_string())
                .collect();
            (!paths.is_empty())
                .then(|| format!("chmod {:o} {}", kind.private_mode(), paths.join(" ")))
        })
        .collect();
    anyhow::bail!(
        "these hold secrets and are open to other local users: {}; refusing to use them. Fix: {}",
        listed.join(", "),
        commands.join(" && ")
    )
}

/// After a SQLite database at `path` is opened: its companions, which SQLite creates as it
/// needs them, are 0600 too.
pub fn restrict_companions(path: &Path) -> anyhow::Result<()> {
    for file in companions(path) {
        if file.exists() {
            platform::make_private(&file, Kind::File)?;
        }
    }
    Ok(())
}

fn companions(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    COMPANIONS.iter().map(move |suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Folder,
}

impl Kind {
    fn private_mode(self) -> u32 {
        match self {
            Kind::File => 0o600,
            Kind::Folder => 0o700,
        }
    }
}

fn refuse_if_shared(path: &Path, kind: Kind) -> anyhow::Result<()> {
    let Some(mode) = platform::shared_mode(path)? else {
        return Ok(());
    };
    let what = match kind {
        Kind::File => "the database file",
        Kind::Folder => "the folder of the database",
    };
    // A folder others may write to (/tmp, a shared upload folder) is not ours to lock down:
    // `chmod 700 /tmp` would break the machine. The database belongs in a folder of its own.
    let fix = if matches!(kind, Kind::Folder) && mode & 0o1002 != 0 {
        format!(
            "keep the database in a folder of its own, e.g. `mkdir -m 700 {}/gatehouse` and point the URL there",
            path.display()
        )
    } else {
        format!("chmod {:o} {}", kind.private_mode(), path.display())
    };
    anyhow::bail!(
        "{what} {} is open to other local users (mode {mode:04o}) and holds secrets; \
         refusing to use it. Fix: {fix}",
        path.display(),
    )
}

#[cfg(unix)]
mod platform {
    use std::fs::{DirBuilder, OpenOptions, Permissions};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    use anyhow::Context;

    use super::Kind;

    /// Permission bits that let anyone but the owner read, write or enter.
    const OTHERS: u32 = 0o077;

    /// The mode of `path` when group or others have any access to it.
    pub(super) fn shared_mode(path: &Path) -> anyhow::Result<Option<u32>> {
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading the mode of {}", path.display()))?
            .permissions()
            .mode()
            & 0o7777;
        Ok((mode & OTHERS != 0).then_some(mode))
    }

    pub(super) fn create_private_folder(folder: &Path) -> anyhow::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .with_context(|| format!("creating the folder {}", folder.display()))?;
        // The mode given to mkdir is masked by the umask; set it as meant.
        make_private(folder, Kind::Folder)
    }

    pub(super) fn create_private_file(path: &Path) -> anyhow::Result<()> {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => make_private(path, Kind::File),
            // Created meanwhile by another process: its mode is checked like any other's.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(anyhow::Error::new(error)
                .context(format!("creating the database file {}", path.display()))),
        }
    }

    pub(super) fn make_private(path: &Path, kind: Kind) -> anyhow::Result<()> {
        std::fs::set_permissions(path, Permissions::from_mode(kind.private_mode()))
            .with_context(|| format!("making {} private", path.display()))
    }
}

/// Elsewhere files have no Unix modes: folders and files are created as the platform does.
#[cfg(not(unix))]
mod platform {
    use std::path::Path;

    use anyhow::Context;

    use super::Kind;

    pub(super) fn shared_mode(_path: &Path) -> anyhow::Result<Option<u32>> {
        Ok(None)
    }

    pub(super) fn create_private_folder(folder: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating the folder {}", folder.display()))
    }

    pub(super) fn create_private_file(_path: &Path) -> anyhow::Result<()> {
        // sqlx creates it on open (`mode=rwc`).
        Ok(())
    }

    pub(super) fn make_private(_path: &Path, _kind: Kind) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_database_and_its_folders_are_the_owners_alone() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("data/nested/gateway.db");

        prepare(&path, true).unwrap();

        assert_eq!(mode(&root.path().join("data/nested")), 0o700);
        assert_eq!(mode(&root.path().join("data")), 0o700);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_database_file_or_folder_others_can_open_is_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("data");
        let path = folder.join("gateway.db");
        prepare(&path, true).unwrap();

        for (shared, fix, loose) in [
            (path.clone(), "chmod 600", 0o640),
            (folder.clone(), "chmod 700", 0o755),
        ] {
            let before = Permissions::from_mode(mode(&shared));
            std::fs::set_permissions(&shared, Permissions::from_mode(loose)).unwrap();
            let error = prepare(&path, true).unwrap_err().to_string();
            std::fs::set_permissions(&shared, before).unwrap();
            assert!(
                error.contains(&format!("{fix} {}", shared.display())),
                "{error}"
            );
            assert!(error.contains(&format!("{loose:04o}")), "{error}");
        }
        prepare(&path, true).unwrap();
    }

    #[test]
    fn a_database_in_a_folder_everyone_may_write_to_is_refused_without_advising_chmod_on_it() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("tmp");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o1777)).unwrap();

        let error = prepare(&shared.join("gateway.db"), true)
            .unwrap_err()
            .to_string();

        assert!(!error.contains("chmod"), "never `chmod 700 /tmp`: {error}");
        assert!(error.contains("folder of its own"), "{error}");
        assert!(!shared.join("gateway.db").exists(), "nothing created there");
    }

    #[test]
    fn a_data_folder_from_an_older_version_is_named_whole_with_one_command() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        for name in ["gateway.db", "users.db", "users.db-wal", "notes.txt"] {
            std::fs::write(data.join(name), b"").unwrap();
            std::fs::set_permissions(data.join(name), Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();

        let error = check_data_folder(&data).unwrap_err().to_string();

        assert!(
            error.contains(&format!("chmod 700 {}", data.display())),
            "{error}"
        );
        for name in ["gateway.db", "users.db", "users.db-wal"] {
            assert!(
                error.contains(&data.join(name).display().to_string()),
                "{name}: {error}"
            );
        }
        assert!(!error.contains("notes.txt"), "only databases: {error}");
        assert!(error.contains(" && chmod 600 "), "{error}");

        std::fs::set_permissions(&data, Permissions::from_mode(0o700)).unwrap();
        for name in ["gateway.db", "users.db", "users.db-wal"] {
            std::fs::set_permissions(data.join(name), Permissions::from_mode(0o600)).unwrap();
        }
        check_data_folder(&data).unwrap();
        check_data_folder(&root.path().join("missing")).unwrap();
    }

    #[test]
    fn a_companion_others_can_open_is_refused_too() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("data/users.db");
        prepare(&path, true).unwrap();
        let wal = root.path().join("data/users.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();

        let error = prepare(&path, true).unwrap_err().to_string();

        assert!(
            error.contains(&format!("chmod 600 {}", wal.display())),
            "{error}"
        );
    }
}
