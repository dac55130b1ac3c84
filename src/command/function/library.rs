//! The node's function libraries as data: what a library is once loaded (its code and the
//! functions it registered), the set of them, the changes FUNCTION LOAD / DELETE / FLUSH /
//! RESTORE make to the set, and the node-wide registry every core reads.
//!
//! A change is applied to a set deterministically and without Lua (the library was loaded and
//! checked where the command arrived), so a cluster can replicate changes through its meta
//! group and every node ends with the same set.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// The only engine: FUNCTION LIST and STATS name it so.
pub const ENGINE: &str = "LUA";

/// A function as FUNCTION LIST shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    pub description: Option<Vec<u8>>,
    /// `crate::script::ScriptFlags` bits.
    pub flags: u8,
}

/// A loaded library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Library {
    pub name: String,
    /// The code as loaded, `#!` line included (FUNCTION LIST WITHCODE and DUMP give it back).
    pub code: Vec<u8>,
    /// In registration order.
    pub functions: Vec<FunctionInfo>,
}

impl Library {
    /// What the engine runs: the code from the newline ending the `#!` line, so line numbers
    /// in errors count that line (Valkey's `functionExtractLibMetaData`).
    pub fn body(&self) -> &[u8] {
        let start = self
            .code
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.code.len());
        &self.code[start..]
    }
}

/// How FUNCTION RESTORE treats the libraries already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestorePolicy {
    /// Replace them all.
    Flush,
    /// Add to them; a library of the same name fails the restore.
    Append,
    /// Add to them; a library of the same name is replaced.
    Replace,
}

/// A change to the library set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LibraryChange {
    Load {
        library: Library,
        replace: bool,
    },
    Delete {
        name: Vec<u8>,
    },
    Flush,
    Restore {
        libraries: Vec<Library>,
        policy: RestorePolicy,
    },
}

/// A set of libraries, with the index FCALL looks functions up in. Function names are
/// unique across the set regardless of case (Valkey's function dict is case-insensitive), so
/// `FCALL TEST` calls `test`.
#[derive(Debug, Clone, Default)]
pub struct LibrarySet {
    libraries: BTreeMap<String, Arc<Library>>,
    /// Lowercased function name → its library and its index there.
    functions: HashMap<String, (Arc<Library>, usize)>,
}

impl PartialEq for LibrarySet {
    fn eq(&self, other: &Self) -> bool {
        self.libraries == other.libraries
    }
}

impl LibrarySet {
    /// A set of `libraries`, refusing the duplicates a well-formed set cannot hold.
    pub fn from_libraries(libraries: Vec<Library>) -> Result<LibrarySet, String> {
        let mut set = LibrarySet::default();
        for lib in libraries {
            set = set.apply(&LibraryChange::Load {
                library: lib,
                replace: false,
            })?;
        }
        Ok(set)
    }

    /// The libraries, by name.
    pub fn libraries(&self) -> impl Iterator<Item = &Library> {
        self.libraries.values().map(|l| &**l)
    }

    pub fn library(&self, name: &str) -> Option<&Library> {
        self.libraries.get(name).map(|l| &**l)
    }

    pub fn len(&self) -> usize {
        self.libraries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.libraries.is_empty()
    }

    pub fn function_count(&self) -> usize {
        self.functions.len()
    }

    /// The function FCALL names (any case): its library and its entry there.
    pub fn function(&self, name: &[u8]) -> Option<(&Arc<Library>, &FunctionInfo)> {
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        let (lib, i) = self.functions.get(&name)?;
        Some((lib, &lib.functions[*i]))
    }

    fn insert(&mut self, lib: Library) {
        let lib = Arc::new(lib);
        for (i, f) in lib.functions.iter().enumerate() {
            self.functions
                .entry(f.name.to_ascii_lowercase())
                .or_insert_with(|| (lib.clone(), i));
        }
        self.libraries.insert(lib.name.clone(), lib);
    }

    fn remove(&mut self, name: &str) {
        if let Some(lib) = self.libraries.remove(name) {
            self.functions
                .retain(|_, (owner, _)| !Arc::ptr_eq(owner, &lib));
        }
    }

    /// The first function of `libs` whose name another library of `self` has.
    fn collision<'a>(&self, libs: impl IntoIterator<Item = &'a Library>) -> Result<(), String> {
        for lib in libs {
            for f in &lib.functions {
                if self.functions.contains_key(&f.name.to_ascii_lowercase()) {
                    return Err(format!("ERR Function {} already exists", f.name));
                }
            }
        }
        Ok(())
    }

    /// The set after `change`, or the error reply that refuses it (the set is unchanged).
    pub fn apply(&self, change: &LibraryChange) -> Result<LibrarySet, String> {
        let mut next = self.clone();
        match change {
            LibraryChange::Load { library, replace } => {
                if self.libraries.contains_key(&library.name) && !replace {
                    return Err(format!("ERR Library '{}' already exists", library.name));
                }
                next.remove(&library.name);
                next.collision([library])?;
                next.insert(library.clone());
            }
            LibraryChange::Delete { name } => {
                let found = std::str::from_utf8(name)
                    .ok()
                    .filter(|n| self.libraries.contains_key(*n));
                let Some(name) = found else {
                    return Err("ERR Library not found".to_string());
                };
                next.remove(name);
            }
            LibraryChange::Flush => next = LibrarySet::default(),
            LibraryChange::Restore { libraries, policy } => match policy {
                RestorePolicy::Flush => next = LibrarySet::from_libraries(libraries.clone())?,
                RestorePolicy::Append | RestorePolicy::Replace => {
                    // Valkey's libraryJoin: library names first, then function names.
                    for lib in libraries {
                        if self.libraries.contains_key(&lib.name) {
                            if *policy == RestorePolicy::Append {
                                return Err(format!("ERR Library {} already exists", lib.name));
                            }
                            next.remove(&lib.name);
                        }
                    }
                    next.collision(libraries)?;
                    for lib in libraries {
                        next.insert(lib.clone());
                    }
                }
            },
        }
        Ok(next)
    }
}

/// Valkey's `functionsVerifyName`: letters, digits and `_`, at least one.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A library's `#!<engine> name=<name>` line, read.
#[derive(Debug, PartialEq, Eq)]
pub struct Metadata {
    pub engine: Vec<u8>,
    pub name: Vec<u8>,
}

/// Valkey's `functionExtractLibMetaData`; the error is the reply text without `ERR `.
pub fn parse_metadata(code: &[u8]) -> Result<Metadata, String> {
    if !code.starts_with(b"#!") {
        return Err("Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err("Invalid library metadata".into());
    };
    let parts = match crate::config::parse::split_args(&code[..end]) {
        Some(p) if !p.is_empty() => p,
        _ => return Err("Invalid library metadata".into()),
    };
    let engine = parts[0].get(2..).unwrap_or_default().to_vec();
    let mut name = None;
    for part in &parts[1..] {
        if part.len() >= 5 && part[..5].eq_ignore_ascii_case(b"name=") {
            if name.is_some() {
                return Err(
                    "Invalid metadata value, name argument was given multiple times".into(),
                );
            }
            name = Some(part[5..].to_vec());
            continue;
        }
        return Err(format!(
            "Invalid metadata value given: {}",
            String::from_utf8_lossy(part)
        ));
    }
    let name = name.ok_or("Library name was not given")?;
    Ok(Metadata { engine, name })
}

/// How many outcomes of replicated changes a node remembers (see [`Libraries::applied`]).
const OUTCOMES_KEPT: usize = 256;

/// The node's libraries, read by every core. A change replaces the whole set under the lock
/// and bumps the version; a core compares versions (one atomic load) before it takes the lock
/// to refresh its copy, so FCALL does not lock on the way.
#[derive(Default)]
pub struct Libraries {
    set: Mutex<Current>,
    version: AtomicU64,
    /// The outcome of recent replicated changes by their nonce: a cluster node that proposed
    /// a change learns here, once the change applied, whether it was accepted.
    outcomes: Mutex<VecDeque<(u64, Result<(), String>)>>,
}

/// The set, and (in a cluster) the meta log index of the last change applied to it.
#[derive(Default)]
struct Current {
    set: Arc<LibrarySet>,
    applied: u64,
}

impl Libraries {
    fn lock(&self) -> MutexGuard<'_, Current> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current set.
    pub fn snapshot(&self) -> Arc<LibrarySet> {
        self.lock().set.clone()
    }

    /// The current set and the meta log index of the last replicated change it holds.
    pub fn snapshot_applied(&self) -> (Arc<LibrarySet>, u64) {
        let current = self.lock();
        (current.set.clone(), current.applied)
    }

    /// Bumped by every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Applies `change` (standalone); `persist` gets the new set while the lock is held, so
    /// concurrent changes reach storage in the order they were made.
    pub fn change(
        &self,
        change: &LibraryChange,
        persist: impl FnOnce(&LibrarySet),
    ) -> Result<(), String> {
        let mut current = self.lock();
        let next = current.set.apply(change)?;
        persist(&next);
        current.set = Arc::new(next);
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Replaces the set (loaded from storage, or from a cluster snapshot) and the index of
    /// the last replicated change it holds.
    pub fn replace(&self, next: LibrarySet, applied: u64) {
        *self.lock() = Current {
            set: Arc::new(next),
            applied,
        };
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Applies the replicated change at meta log index `at` (every node, in log order) and
    /// remembers its outcome under `nonce`; the new set when it changed. A change the set
    /// holds already (`at` not past the last one applied: replayed after a restart whose
    /// stored set was written after that change) is skipped, so each applies exactly once.
    pub fn apply_replicated(
        &self,
        nonce: u64,
        at: u64,
        change: &LibraryChange,
    ) -> Option<Arc<LibrarySet>> {
        let mut current = self.lock();
        if at <= current.applied {
            return None;
        }
        current.applied = at;
        let outcome = current.set.apply(change);
        let changed = outcome.as_ref().ok().map(|next| Arc::new(next.clone()));
        if let Some(next) = &changed {
            current.set = next.clone();
            self.version.fetch_add(1, Ordering::Release);
        }
        drop(current);
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        if outcomes.len() == OUTCOMES_KEPT {
            outcomes.pop_front();
        }
        outcomes.push_back((nonce, outcome.map(drop)));
        changed
    }

    /// The outcome of the replicated change `nonce`, once this node applied it.
    pub fn applied(&self, nonce: u64) -> Option<Result<(), String>> {
        let outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        outcomes
            .iter()
            .rev()
            .find(|(n, _)| *n == nonce)
            .map(|(_, r)| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(name: &str, functions: &[&str]) -> Library {
        Library {
            name: name.into(),
            code: format!("#!lua name={name}\n-- code").into_bytes(),
            functions: functions
                .iter()
                .map(|f| FunctionInfo {
                    name: f.to_string(),
                    description: None,
                    flags: 0,
                })
                .collect(),
        }
    }

    fn load(set: &LibrarySet, l: Library, replace: bool) -> Result<LibrarySet, String> {
        set.apply(&LibraryChange::Load {
            library: l,
            replace,
        })
    }

    #[test]
    fn metadata_as_valkey_reads_it() {
        let md = |c: &str| parse_metadata(c.as_bytes());
        assert_eq!(
            md("#!lua name=mylib\nreturn").unwrap(),
            Metadata {
                engine: b"lua".to_vec(),
                name: b"mylib".to_vec()
            }
        );
        assert_eq!(md("#!LUA NAME=\"foo\"\n").unwrap().name, b"foo");
        assert_eq!(md("#! name=test\n").unwrap().engine, b"");
        assert_eq!(md("return 1").unwrap_err(), "Missing library metadata");
        assert_eq!(md("#!lua name=x").unwrap_err(), "Invalid library metadata");
        assert_eq!(
            md("#!lua name='x\n").unwrap_err(),
            "Invalid library metadata"
        );
        assert_eq!(
            md("#!lua name=test foo=bar\n").unwrap_err(),
            "Invalid metadata value given: foo=bar"
        );
        assert_eq!(md("#!lua\n").unwrap_err(), "Library name was not given");
        assert_eq!(
            md("#!lua name=foo name=bar\n").unwrap_err(),
            "Invalid metadata value, name argument was given multiple times"
        );
        assert!(valid_name(b"a_B9"));
        assert!(!valid_name(b""));
        assert!(!valid_name(b"bad\0format"));
        assert!(!valid_name(b"a-b"));
        assert_eq!(lib("x", &[]).body(), b"\n-- code");
    }

    #[test]
    fn loads_replace_and_collide_as_valkey() {
        let set = LibrarySet::default();
        let set = load(&set, lib("lib1", &["f1", "f2"]), false).unwrap();
        assert_eq!(
            load(&set, lib("lib1", &["f9"]), false).unwrap_err(),
            "ERR Library 'lib1' already exists"
        );
        assert_eq!(
            load(&set, lib("lib2", &["F1"]), false).unwrap_err(),
            "ERR Function F1 already exists"
        );
        // Replacing a library frees its own function names.
        let set = load(&set, lib("lib1", &["f1", "f3"]), true).unwrap();
        assert!(set.function(b"F3").is_some());
        assert!(set.function(b"f2").is_none());
        assert_eq!(set.function_count(), 2);
        assert_eq!(
            set.apply(&LibraryChange::Delete {
                name: b"nope".to_vec()
            })
            .unwrap_err(),
            "ERR Library not found"
        );
        let set = set
            .apply(&LibraryChange::Delete {
                name: b"lib1".to_vec(),
            })
            .unwrap();
        assert!(set.is_empty());
        assert_eq!(set.function_count(), 0);
    }

    #[test]
    fn restore_policies() {
        let set =
            LibrarySet::from_libraries(vec![lib("lib1", &["f6"]), lib("lib2", &["f3"])]).unwrap();
        let dumped = vec![lib("lib1", &["f1", "f2", "f3"])];
        let restore = |policy| LibraryChange::Restore {
            libraries: dumped.clone(),
            policy,
        };
        assert_eq!(
            set.apply(&restore(RestorePolicy::Append)).unwrap_err(),
            "ERR Library lib1 already exists"
        );
        assert_eq!(
            set.apply(&restore(RestorePolicy::Replace)).unwrap_err(),
            "ERR Function f3 already exists"
        );
        let flushed = set.apply(&restore(RestorePolicy::Flush)).unwrap();
        assert_eq!(flushed.len(), 1);
        let other = LibrarySet::from_libraries(vec![lib("other", &["g"])]).unwrap();
        let joined = other.apply(&restore(RestorePolicy::Append)).unwrap();
        assert_eq!(joined.len(), 2);
        assert!(joined.function(b"f2").is_some() && joined.function(b"g").is_some());
        assert_eq!(
            LibrarySet::from_libraries(vec![lib("a", &["f"]), lib("b", &["F"])]).unwrap_err(),
            "ERR Function F already exists"
        );
    }

    #[test]
    fn the_registry_remembers_replicated_outcomes() {
        let r = Libraries::default();
        let v0 = r.version();
        let change = LibraryChange::Load {
            library: lib("a", &["f"]),
            replace: false,
        };
        assert!(r.apply_replicated(7, 10, &change).is_some());
        assert!(r.apply_replicated(8, 11, &change).is_none());
        // Replayed: skipped, and no outcome recorded.
        assert!(r.apply_replicated(9, 10, &LibraryChange::Flush).is_none());
        assert_eq!(r.snapshot_applied().1, 11);
        assert_eq!(r.applied(7), Some(Ok(())));
        assert_eq!(
            r.applied(8),
            Some(Err("ERR Library 'a' already exists".into()))
        );
        assert_eq!(r.applied(9), None);
        assert_eq!(r.version(), v0 + 1);
        let mut persisted = None;
        r.change(&LibraryChange::Flush, |s| persisted = Some(s.len()))
            .unwrap();
        assert_eq!(persisted, Some(0));
        assert!(r.snapshot().is_empty());
    }
}
