//! `tessera-bench compare`: tessera and restic side by side on one directory tree.
//!
//! Each tool gets a fresh repository in a throwaway directory and runs, as its own
//! process: an initial backup of the tree, a second backup with nothing changed, and a
//! restore of the newest point. Each of the three is timed on the wall clock and its peak
//! resident memory read from the kernel ([`crate::measure`]). Then the repository's size
//! is summed and the restored tree compared, entry by entry and byte by byte, with the
//! original.
//!
//! Before any clock starts the tree is read once in full, to take its manifest; that also
//! puts it in the page cache, so neither tool pays for reading it from disk while the
//! other does not. Untimed as well: creating the repositories, and `tessera plugin inspect
//! file-share`, which compiles tessera's file-share plugin into its on-disk cache as the
//! first use after an install does. restic's cache goes to the throwaway directory, so it
//! starts empty as for any new repository, and is not counted in the repository's size.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::measure::{self, Run};
use crate::tree::{self, Differences, Manifest, TreeSize};
use crate::{Context, Failure, Result, progress};

/// The password both tools encrypt their throwaway repositories with.
const PASSWORD: &str = "bench";

/// The tree backed up when `--tree` is not given: on any Linux system, tens of thousands
/// of files of every size, mostly text.
pub const DEFAULT_TREE: &str = "/usr/share";

/// Options of `tessera-bench compare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareArgs {
    /// The directory tree to back up.
    pub tree: PathBuf,
    /// Where to create the throwaway repositories and restores.
    pub dir: Option<PathBuf>,
    /// Where to restore instead, when given: another file system.
    pub restore_dir: Option<PathBuf>,
    /// The `tessera` executable; next to this one when not given.
    pub tessera: Option<PathBuf>,
    /// The `restic` executable; found on `PATH` when not given.
    pub restic: Option<PathBuf>,
    /// Print JSON instead of the table.
    pub json: bool,
    /// Pause before each restore (see [`SETTLE`]).
    pub settle: std::time::Duration,
}

impl Default for CompareArgs {
    fn default() -> Self {
        CompareArgs {
            tree: PathBuf::from(DEFAULT_TREE),
            dir: None,
            restore_dir: None,
            tessera: None,
            restic: None,
            json: false,
            settle: SETTLE,
        }
    }
}

/// A backup program under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// tessera's command line, backing up with its file-share plugin.
    Tessera,
    /// restic.
    Restic,
}

impl Tool {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Tessera => "tessera",
            Tool::Restic => "restic",
        }
    }

    /// The environment variable the program reads its password from.
    fn password_env(self) -> &'static str {
        match self {
            Tool::Tessera => "TESSERA_PASSWORD",
            Tool::Restic => "RESTIC_PASSWORD",
        }
    }

    /// Environment variables that would override the flags given here, removed from the
    /// program's environment.
    fn ignored_env(self) -> &'static [&'static str] {
        match self {
            Tool::Tessera => &["TESSERA_VAULT"],
            Tool::Restic => &[
                "RESTIC_REPOSITORY",
                "RESTIC_REPOSITORY_FILE",
                "RESTIC_PASSWORD_FILE",
                "RESTIC_PASSWORD_COMMAND",
                "RESTIC_CACHE_DIR",
                "RESTIC_COMPRESSION",
                "RESTIC_PACK_SIZE",
            ],
        }
    }

    /// The arguments that print the program's version.
    fn version_args(self) -> &'static [&'static str] {
        match self {
            Tool::Tessera => &["--version"],
            Tool::Restic => &["version"],
        }
    }

    /// Where the restore of `tree` into `target` puts the tree's content: tessera
    /// restores the protected item's content at the target, restic the snapshot's
    /// absolute paths below it.
    pub fn restored_root(self, tree: &Path, target: &Path) -> PathBuf {
        match self {
            Tool::Tessera => target.to_path_buf(),
            Tool::Restic => target.join(tree.strip_prefix("/").unwrap_or(tree)),
        }
    }
}

/// One tool set up on one repository.
struct Session<'a> {
    tool: Tool,
    program: &'a Path,
    repository: PathBuf,
    /// restic's cache directory.
    cache: PathBuf,
}

impl Session<'_> {
    /// The arguments of a verb: the flags naming the repository, then `verb`.
    fn args(&self, verb: &[&OsString]) -> Vec<OsString> {
        let mut args = match self.tool {
            Tool::Tessera => vec!["--vault".into(), self.repository.clone().into()],
            Tool::Restic => vec![
                "--repo".into(),
                self.repository.clone().into(),
                "--cache-dir".into(),
                self.cache.clone().into(),
            ],
        };
        args.extend(verb.iter().map(|&a| a.clone()));
        args
    }

    /// The program set up to run a verb, its environment holding the password and none
    /// of the variables that would override the flags.
    fn command(&self, verb: &[&OsString]) -> Command {
        let mut command = Command::new(self.program);
        command.args(self.args(verb));
        for key in self.tool.ignored_env() {
            command.env_remove(key);
        }
        command.env(self.tool.password_env(), PASSWORD);
        command
    }

    /// Runs a verb untimed.
    fn run(&self, verb: &[&OsString], what: &str) -> Result<()> {
        measure::run(self.command(verb), &format!("{} {what}", self.tool.name())).map(drop)
    }

    /// Runs a verb and measures it.
    fn measured(&self, verb: &[&OsString], what: &str) -> Result<Run> {
        measure::measured(&self.command(verb), &format!("{} {what}", self.tool.name()))
    }
}

/// What one tool measured.
#[derive(Debug, Clone)]
pub struct ToolFigures {
    /// Which tool.
    pub tool: Tool,
    /// The executable run.
    pub program: PathBuf,
    /// The first line the program prints about its version.
    pub version: String,
    /// Backup of the tree into the empty repository.
    pub initial: Run,
    /// Backup of the unchanged tree again.
    pub rebackup: Run,
    /// Restore of the newest point.
    pub restore: Run,
    /// Apparent size of the repository's files after both backups.
    pub repository_bytes: u64,
    /// How the restored tree differs from the original.
    pub differences: Differences,
}

impl ToolFigures {
    /// The largest peak resident set size of the three measured runs.
    pub fn peak_rss(&self) -> u64 {
        [self.initial, self.rebackup, self.restore]
            .iter()
            .map(|run| run.peak_rss)
            .max()
            .unwrap_or(0)
    }
}

/// Everything one run of `tessera-bench compare` measured.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The tree backed up, as an absolute path.
    pub tree: PathBuf,
    /// What the tree holds.
    pub tree_size: TreeSize,
    /// The directory the throwaway repositories were created in.
    pub dir: PathBuf,
    /// CPUs available.
    pub cpus: usize,
    /// tessera's figures.
    pub tessera: ToolFigures,
    /// restic's figures.
    pub restic: ToolFigures,
}

/// `tessera` in the directory of this executable: where `cargo build` puts both.
pub fn default_tessera() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| Failure::new(format!("{} has no directory", exe.display())))?;
    Ok(dir.join("tessera"))
}

/// The first executable file called `name` in the directories of `path` (a `PATH` value).
pub fn find_on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks that `program` exists, with `advice` on how to get it when it does not.
pub fn require(program: PathBuf, advice: &str) -> Result<PathBuf> {
    if program.is_file() {
        Ok(program)
    } else {
        Err(Failure::new(format!(
            "no executable at {}: {advice}",
            program.display()
        )))
    }
}

/// The first line a program prints about its version.
pub fn version(tool: Tool, program: &Path) -> Result<String> {
    let mut command = Command::new(program);
    command.args(tool.version_args());
    let output = measure::run(command, &format!("{} version", tool.name()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// Default pause before each restore, after a `sync`: longer than the minute in which ext4
/// without a journal treats a freed inode as recently deleted once its inode table block is
/// written (five minutes more while the block is dirty, hence the `sync`).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(65);

/// Runs every step for one tool in `workdir`, deleting the repository once it has been
/// measured. The restored tree stays until both tools have restored: deleting 43,000
/// files just before the other tool creates as many would slow that tool down on some
/// file systems (see [`SETTLE`]).
fn run_tool(
    tool: Tool,
    program: &Path,
    tree: &Path,
    original: &Manifest,
    workdir: &Path,
    restore_dir: &Path,
    settle: std::time::Duration,
) -> Result<ToolFigures> {
    let name = tool.name();
    let session = Session {
        tool,
        program,
        repository: workdir.join(format!("repository-{name}")),
        cache: workdir.join(format!("cache-{name}")),
    };
    let version = version(tool, program)?;
    let tree_arg = OsString::from(tree);
    let target = restore_dir.join(format!("restore-{name}"));
    let target_arg = OsString::from(&target);

    progress(&format!("{name}: creating a repository"));
    match tool {
        Tool::Tessera => {
            session.run(&[&"vault".into(), &"init".into()], "vault init")?;
            // Compiles the plugin into tessera's cache, as its first use would.
            session.run(
                &[&"plugin".into(), &"inspect".into(), &"file-share".into()],
                "plugin inspect file-share",
            )?;
        }
        Tool::Restic => session.run(&[&"init".into()], "init")?,
    }
    let backup = [&"backup".into(), &tree_arg];
    progress(&format!("{name}: backing up {}", tree.display()));
    let initial = session.measured(&backup, "backup")?;
    progress(&format!("{name}: backing up {} again", tree.display()));
    let rebackup = session.measured(&backup, "backup (no change)")?;
    // ext4 without a journal skips inodes freed in the last minute when it allocates one
    // (its `recently_deleted` check, which reads each one's inode table block), and an
    // earlier run may just have deleted restored trees: each restore starts on a settled
    // file system so no tool pays for them.
    progress(&format!(
        "{name}: letting the file system settle for {} s",
        settle.as_secs()
    ));
    nix::unistd::sync();
    std::thread::sleep(settle);
    progress(&format!("{name}: restoring"));
    let restore = match tool {
        Tool::Tessera => session.measured(
            &[
                &"restore".into(),
                &"latest".into(),
                &"--item".into(),
                &tree_arg,
                &"--target".into(),
                &target_arg,
            ],
            "restore",
        )?,
        Tool::Restic => session.measured(
            &[
                &"restore".into(),
                &"latest".into(),
                &"--target".into(),
                &target_arg,
            ],
            "restore",
        )?,
    };
    let repository_bytes = tree::apparent_size(&session.repository)?;

    progress(&format!(
        "{name}: comparing the restored tree with the original"
    ));
    let restored = tool.restored_root(tree, &target);
    let differences = match Manifest::build(&restored) {
        Ok(copy) => original.compare(&copy),
        Err(e) => Differences {
            missing: original.size().files,
            examples: vec![e.to_string()],
            ..Differences::default()
        },
    };
    if !differences.is_empty() {
        eprintln!(
            "tessera-bench: warning: {name}'s restore differs from {}: {}",
            tree.display(),
            differences.summary()
        );
    }
    for dir in [&session.repository, &session.cache] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).context(format!("cannot remove {}", dir.display()))?;
        }
    }
    Ok(ToolFigures {
        tool,
        program: program.to_path_buf(),
        version,
        initial,
        rebackup,
        restore,
        repository_bytes,
        differences,
    })
}

/// Runs every measurement of `tessera-bench compare`.
pub fn run_compare(args: &CompareArgs) -> Result<Comparison> {
    let tessera = require(
        match &args.tessera {
            Some(path) => path.clone(),
            None => default_tessera()?,
        },
        "build it with `cargo build --release -p tessera-cli`, or give --tessera PATH",
    )?;
    let restic = match &args.restic {
        Some(path) => require(path.clone(), "give --restic PATH")?,
        None => find_on_path("restic", std::env::var_os("PATH").as_deref()).ok_or_else(|| {
            Failure::new(
                "no restic on PATH: install it (Debian: `apt-get install restic`), \
                 or give --restic PATH",
            )
        })?,
    };
    let tree = args
        .tree
        .canonicalize()
        .context(format!("cannot find {}", args.tree.display()))?;
    if !tree.is_dir() {
        return Err(Failure::new(format!(
            "{} is not a directory",
            tree.display()
        )));
    }
    let base = args.dir.clone().unwrap_or_else(crate::default_dir);
    // A fresh directory inside the chosen one: whatever else lives there is never
    // touched, and dropping it removes the repositories even when a step fails.
    let workdir = tempfile::Builder::new()
        .prefix("tessera-compare-")
        .tempdir_in(&base)
        .context(format!(
            "cannot create a work directory in {}",
            base.display()
        ))?;
    let workdir_path = workdir
        .path()
        .canonicalize()
        .context("cannot resolve the work directory")?;
    if workdir_path.starts_with(&tree) {
        return Err(Failure::new(format!(
            "the work directory {} is inside the tree {}: choose another --dir",
            workdir_path.display(),
            tree.display()
        )));
    }
    let restore_dir = match &args.restore_dir {
        Some(dir) => dir.canonicalize().context(format!(
            "cannot find the restore directory {}",
            dir.display()
        ))?,
        None => workdir_path.clone(),
    };
    if restore_dir.starts_with(&tree) {
        return Err(Failure::new(format!(
            "the restore directory {} is inside the tree {}: choose another --restore-dir",
            restore_dir.display(),
            tree.display()
        )));
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    progress(&format!("reading {} in full", tree.display()));
    let original = Manifest::build(&tree)?;
    let tessera = run_tool(
        Tool::Tessera,
        &tessera,
        &tree,
        &original,
        &workdir_path,
        &restore_dir,
        args.settle,
    )?;
    let restic = run_tool(
        Tool::Restic,
        &restic,
        &tree,
        &original,
        &workdir_path,
        &restore_dir,
        args.settle,
    );
    // Removed whether or not restic's run went through.
    for tool in [Tool::Tessera, Tool::Restic] {
        let target = restore_dir.join(format!("restore-{}", tool.name()));
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .context(format!("cannot remove {}", target.display()))?;
        }
    }
    workdir
        .close()
        .context("cannot remove the work directory")?;
    let restic = restic?;
    Ok(Comparison {
        tree,
        tree_size: original.size(),
        dir: base,
        cpus,
        tessera,
        restic,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn restores_land_where_each_tool_puts_them() {
        let tree = Path::new("/usr/share");
        let target = Path::new("/w/restore");
        assert_eq!(Tool::Tessera.restored_root(tree, target), target);
        assert_eq!(
            Tool::Restic.restored_root(tree, target),
            Path::new("/w/restore/usr/share")
        );
    }

    #[test]
    fn programs_are_found_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        fs::create_dir(&first).unwrap();
        fs::create_dir(&second).unwrap();
        // Not executable in the first directory, executable in the second.
        fs::write(first.join("tool"), b"").unwrap();
        fs::write(second.join("tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(second.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&first, &second]).unwrap();
        assert_eq!(find_on_path("tool", Some(&path)), Some(second.join("tool")));
        assert_eq!(find_on_path("other", Some(&path)), None);
        assert_eq!(find_on_path("tool", None), None);
    }

    #[test]
    fn session_arguments_name_the_repository_first() {
        let session = Session {
            tool: Tool::Restic,
            program: Path::new("restic"),
            repository: PathBuf::from("/w/repo"),
            cache: PathBuf::from("/w/cache"),
        };
        assert_eq!(
            session.args(&[&"init".into()]),
            ["--repo", "/w/repo", "--cache-dir", "/w/cache", "init"].map(OsString::from)
        );
        let session = Session {
            tool: Tool::Tessera,
            ..session
        };
        assert_eq!(
            session.args(&[&"backup".into(), &"/t".into()]),
            ["--vault", "/w/repo", "backup", "/t"].map(OsString::from)
        );
    }
}
