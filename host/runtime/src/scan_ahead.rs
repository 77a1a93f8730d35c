//! Directory scans done ahead of the plugin during a capture.
//!
//! A plugin walking a tree calls `host::scan` once per directory, and each scan is a
//! `stat` and an attribute listing per entry: on a tree of small files most of a backup
//! that finds nothing changed. The plugin's walk is depth first in name order, the order
//! scans return entries in, so the walk is predictable: while the plugin works on one
//! directory, a thread of the host scans the directories it will ask for next, in the
//! same order, and keeps the results until they are asked for.
//!
//! The read-ahead runs at most [`MAX_KEPT_DIRS`] directories and [`MAX_KEPT_ENTRIES`]
//! entries ahead. A scan asked for that is not ready is waited for if the thread is on
//! it, and otherwise done on the spot: the walk left the expected path (it skipped an
//! excluded subtree, say), so what was read ahead is dropped and the read-ahead goes on
//! from the new place. Results are only as old as the walk is behind the read-ahead,
//! which a backup of a live tree tolerates anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rustix::fs::FileType;

use crate::grant::{Grant, GrantError, Scanned, Stat, join};

/// Directories scanned ahead and not yet asked for, at most.
const MAX_KEPT_DIRS: usize = 512;
/// Entries in those directories, at most.
const MAX_KEPT_ENTRIES: usize = 32 * 1024;

type ScanResult = Result<Vec<Scanned>, GrantError>;

/// Scans of a grant, with a thread running ahead of the plugin's walk.
pub(crate) struct ScanAhead {
    grant: Arc<Grant>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when work is queued, a result is ready, or the thread must stop.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Directories to scan, in the order the walk will reach them.
    queue: VecDeque<String>,
    /// The directory the thread is scanning.
    running: Option<String>,
    /// Finished scans not yet asked for.
    ready: HashMap<String, ScanResult>,
    /// Keys of `ready`, oldest first.
    ready_order: VecDeque<String>,
    /// Entries held in `ready`.
    ready_entries: usize,
    stop: bool,
}

impl State {
    fn full(&self) -> bool {
        self.ready.len() >= MAX_KEPT_DIRS || self.ready_entries >= MAX_KEPT_ENTRIES
    }

    /// Takes the finished scan of `path`, if there is one.
    fn take(&mut self, path: &str) -> Option<ScanResult> {
        let found = self.ready.remove(path)?;
        self.ready_order.retain(|p| p != path);
        self.ready_entries -= entries(&found);
        Some(found)
    }

    fn keep(&mut self, path: String, result: ScanResult) {
        while self.full() {
            let Some(oldest) = self.ready_order.pop_front() else {
                break;
            };
            if let Some(dropped) = self.ready.remove(&oldest) {
                self.ready_entries -= entries(&dropped);
            }
        }
        self.ready_entries += entries(&result);
        self.ready_order.push_back(path.clone());
        self.ready.insert(path, result);
    }

    /// Queues the subdirectories of `path` found by `result` to be scanned next, in
    /// order, ahead of everything queued before: the depth-first order of the walk.
    fn queue_children(&mut self, path: &str, result: &ScanResult) {
        let Ok(entries) = result else { return };
        let children: Vec<String> = entries
            .iter()
            .filter(|e| e.stat.as_ref().is_ok_and(is_dir))
            .map(|e| join(path, &e.name))
            .collect();
        for child in children.into_iter().rev() {
            self.queue.push_front(child);
        }
    }
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.mode) == FileType::Directory
}

fn entries(result: &ScanResult) -> usize {
    result.as_ref().map_or(1, Vec::len).max(1)
}

impl ScanAhead {
    /// Starts the read-ahead thread over `grant`.
    pub(crate) fn start(grant: Arc<Grant>) -> std::io::Result<ScanAhead> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread = {
            let grant = Arc::clone(&grant);
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tessera-scan".into())
                .spawn(move || read_ahead(&grant, &shared))?
        };
        Ok(ScanAhead {
            grant,
            shared,
            thread: Some(thread),
        })
    }

    /// The scan of `path`: read ahead, waited for, or done now.
    pub(crate) fn scan(&self, path: &str) -> ScanResult {
        let mut state = self.shared.lock();
        loop {
            if let Some(found) = state.take(path) {
                self.shared.changed.notify_all();
                return found;
            }
            if state.running.as_deref() == Some(path) {
                state = self.shared.wait(state);
                continue;
            }
            break;
        }
        // A miss: the walk left the read-ahead's path. What was scanned ahead lies in
        // subtrees the walk skipped, and so does what is queued before `path`.
        if let Some(at) = state.queue.iter().position(|p| p == path) {
            state.queue.drain(..=at);
        }
        state.ready.clear();
        state.ready_order.clear();
        state.ready_entries = 0;
        drop(state);
        let result = self.grant.scan(path);
        let mut state = self.shared.lock();
        // The walk went somewhere the read-ahead did not expect (its first directory, or
        // one the read-ahead dropped): continue from here.
        state.queue_children(path, &result);
        self.shared.changed.notify_all();
        drop(state);
        result
    }
}

impl Drop for ScanAhead {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The read-ahead thread: scans queued directories while there is room for results.
fn read_ahead(grant: &Grant, shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let next = if state.full() {
            None
        } else {
            state.queue.pop_front()
        };
        let Some(path) = next else {
            state = shared.wait(state);
            continue;
        };
        state.running = Some(path.clone());
        drop(state);
        let result = grant.scan(&path);
        state = shared.lock();
        state.running = None;
        state.queue_children(&path, &result);
        state.keep(path, result);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::grant::Access;

    fn names(result: &ScanResult) -> Vec<String> {
        result
            .as_ref()
            .expect("scan")
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    /// Walks the tree depth first as a plugin does, through `scan`.
    fn walk(scans: &dyn Fn(&str) -> ScanResult, path: &str, out: &mut Vec<(String, Vec<String>)>) {
        let result = scans(path);
        out.push((path.to_string(), names(&result)));
        for entry in result.expect("scan") {
            if entry.stat.as_ref().is_ok_and(is_dir) {
                walk(scans, &join(path, &entry.name), out);
            }
        }
    }

    #[test]
    fn a_walk_through_the_read_ahead_sees_what_direct_scans_see() {
        let dir = tempfile::tempdir().unwrap();
        for a in 0..6 {
            for b in 0..5 {
                let sub = dir.path().join(format!("d{a}/e{b}"));
                fs::create_dir_all(&sub).unwrap();
                for f in 0..(a + b) {
                    fs::write(sub.join(format!("f{f}")), b"x").unwrap();
                }
            }
            fs::write(dir.path().join(format!("file{a}")), b"y").unwrap();
        }
        let grant = Arc::new(Grant::open(dir.path(), Access::Read).unwrap());
        let mut direct = Vec::new();
        walk(&|p| grant.scan(p), "", &mut direct);
        let ahead = ScanAhead::start(Arc::clone(&grant)).unwrap();
        let mut through = Vec::new();
        walk(&|p| ahead.scan(p), "", &mut through);
        assert_eq!(through, direct);
        assert_eq!(through.len(), 1 + 6 + 30);
        // A second walk finds nothing kept and scans again.
        let mut again = Vec::new();
        walk(&|p| ahead.scan(p), "", &mut again);
        assert_eq!(again, direct);
    }

    #[test]
    fn skipped_subtrees_do_not_stop_the_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        for a in 0..(MAX_KEPT_DIRS + 20) {
            fs::create_dir_all(dir.path().join(format!("skip/{a:04}"))).unwrap();
        }
        fs::create_dir_all(dir.path().join("take/inner")).unwrap();
        let grant = Arc::new(Grant::open(dir.path(), Access::Read).unwrap());
        let ahead = ScanAhead::start(Arc::clone(&grant)).unwrap();
        assert_eq!(names(&ahead.scan("")), ["skip", "take"]);
        // The plugin excludes `skip` and goes on with `take`.
        assert_eq!(names(&ahead.scan("take")), ["inner"]);
        assert_eq!(names(&ahead.scan("take/inner")), Vec::<String>::new());
        let state = ahead.shared.lock();
        assert!(state.ready.len() <= MAX_KEPT_DIRS);
        assert!(state.queue.iter().all(|p| !p.starts_with("skip")));
    }

    #[test]
    fn errors_are_returned_like_direct_scans() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("plain"), b"z").unwrap();
        let grant = Arc::new(Grant::open(dir.path(), Access::Read).unwrap());
        let ahead = ScanAhead::start(grant).unwrap();
        assert!(ahead.scan("plain").is_err());
        assert!(ahead.scan("missing").is_err());
        assert!(ahead.scan("../outside").is_err());
    }
}
