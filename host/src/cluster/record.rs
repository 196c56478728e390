//! What one state key holds, whole, as a transaction reads and writes it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A key's value, of one of the kinds Redis has.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    List(VecDeque<String>),
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
    /// Member to score; ordered by score, then member, when ranged.
    Sorted(BTreeMap<String, f64>),
}

impl Value {
    /// Items a collection holds (fields, members, elements); a string is one.
    pub fn items(&self) -> usize {
        match self {
            Self::Text(_) => 1,
            Self::List(list) => list.len(),
            Self::Hash(hash) => hash.len(),
            Self::Set(set) => set.len(),
            Self::Sorted(sorted) => sorted.len(),
        }
    }

    /// The memory it holds in a transaction: its strings' bytes, and each
    /// item's own record (a `String`, and a sorted set's score besides).
    pub fn bytes(&self) -> usize {
        const ITEM: usize = size_of::<String>();
        let strings = |items: &mut dyn Iterator<Item = &String>| {
            items.map(|item| ITEM + item.len()).sum::<usize>()
        };
        match self {
            Self::Text(text) => text.len(),
            Self::List(list) => strings(&mut list.iter()),
            Self::Hash(hash) => strings(&mut hash.iter().flat_map(|(field, value)| [field, value])),
            Self::Set(set) => strings(&mut set.iter()),
            Self::Sorted(sorted) => strings(&mut sorted.keys()) + sorted.len() * size_of::<f64>(),
        }
    }

    /// Redis deletes a collection that becomes empty; so do both backends.
    pub fn is_empty_collection(&self) -> bool {
        !matches!(self, Self::Text(_)) && self.items() == 0
    }

    /// The name Redis's `TYPE` gives it, which the backends store it as.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "string",
            Self::List(_) => "list",
            Self::Hash(_) => "hash",
            Self::Set(_) => "set",
            Self::Sorted(_) => "zset",
        }
    }
}

/// When a key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// Milliseconds since the Unix epoch, by the backend's clock: a value
    /// read keeps the deadline it had.
    At(u64),
    /// Milliseconds after the write commits: a TTL the call gave.
    After(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub value: Value,
    pub expiry: Expiry,
}

/// Identifies one committed write of a key: equal versions mean an unchanged
/// value. `ABSENT` for a key that does not exist (or has expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version(pub i64);

impl Version {
    pub const ABSENT: Self = Self(0);
}

/// A key as read: its record, if it exists, and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub record: Option<Record>,
    pub version: Version,
}

/// What a call's transaction asks a backend to apply, all or nothing.
#[derive(Debug, Default)]
pub struct Commit {
    /// Every key the call read and the version it saw: any changed since
    /// fails the commit with a conflict.
    pub reads: Vec<(String, Version)>,
    /// The new record of each key written; `None` deletes it.
    pub writes: Vec<(String, Option<Record>)>,
    /// The scope's lease the call runs under, if it took it.
    pub lease: Option<String>,
    /// A token that holds the keys written, so that no call reads them
    /// until [`StateStore::release_holds`] (or [`HOLD_TTL`]): the call's
    /// emits go out before any call that depends on its writes runs on.
    ///
    /// [`StateStore::release_holds`]: super::StateStore::release_holds
    pub hold: Option<String>,
}

/// How long written keys stay held should the node sending their call's
/// emits die before releasing them.
pub const HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// How a commit ended when the backend could be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    Applied,
    /// A key read had changed: nothing was written.
    Conflict,
}
