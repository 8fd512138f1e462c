//! The names of a tree: (directory, name) → entry, in a few bytes per name.
//!
//! The builder keeps every entry of an image, and a front end that checks a
//! layer keeps what the layer said about each path; a layer can hold
//! hundreds of thousands of entries, so a name is stored once, in one
//! arena, with a 16-byte link and a slot of a hash table (the standard
//! library's randomly keyed hasher: names come from untrusted layers, and
//! must not be able to pile up in one bucket).
//!
//! Entries are numbered by the caller, who keeps what it knows of each in
//! its own vector; [`ROOT`] is the root directory. An entry that replaces
//! another under a new number leaves the old one's descendants unreachable,
//! which is what replacing a directory means: no walk is needed to forget
//! them.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// An entry's number, given by the caller.
pub type Id = u32;

/// The root directory.
pub const ROOT: Id = 0;

/// A name in directory `dir`, naming entry `id` (`GONE` once removed).
#[derive(Clone, Copy)]
struct Link {
    dir: Id,
    id: Id,
    name_at: u32,
    name_len: u32,
}

const GONE: Id = Id::MAX;

/// The tree of names.
pub struct Tree {
    names: Vec<u8>,
    links: Vec<Link>,
    /// Indices into `links`, by the hash of (dir, name).
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::new()
    }
}

/// The children of every directory, by name: see [`Tree::listing`].
pub struct Listing<'t> {
    tree: &'t Tree,
    /// Live links, sorted by (dir, name).
    sorted: Vec<u32>,
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            names: Vec::new(),
            links: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    fn name(&self, l: &Link) -> &[u8] {
        &self.names[l.name_at as usize..(l.name_at + l.name_len) as usize]
    }

    fn hash(hasher: &RandomState, dir: Id, name: &[u8]) -> u64 {
        hasher.hash_one((dir, name))
    }

    fn find(&self, dir: Id, name: &[u8]) -> Option<u32> {
        let h = Self::hash(&self.hasher, dir, name);
        self.index
            .find(h, |&li| {
                let l = &self.links[li as usize];
                l.dir == dir && self.name(l) == name
            })
            .copied()
    }

    /// The entry named `name` in directory `dir`.
    pub fn get(&self, dir: Id, name: &[u8]) -> Option<Id> {
        self.find(dir, name).map(|li| self.links[li as usize].id)
    }

    /// Names entry `id` `name` in directory `dir`; returns the entry the
    /// name named before. Fails past 2^32 names or 4 GiB of them.
    pub fn set(&mut self, dir: Id, name: &[u8], id: Id) -> Result<Option<Id>, TooLarge> {
        if let Some(li) = self.find(dir, name) {
            let old = std::mem::replace(&mut self.links[li as usize].id, id);
            return Ok(Some(old));
        }
        let li = u32::try_from(self.links.len()).map_err(|_| TooLarge)?;
        let name_at = u32::try_from(self.names.len()).map_err(|_| TooLarge)?;
        let name_len = u32::try_from(name.len()).map_err(|_| TooLarge)?;
        name_at.checked_add(name_len).ok_or(TooLarge)?;
        self.names.extend_from_slice(name);
        self.links.push(Link {
            dir,
            id,
            name_at,
            name_len,
        });
        let h = Self::hash(&self.hasher, dir, name);
        let (links, names, hasher) = (&self.links, &self.names, &self.hasher);
        self.index.insert_unique(h, li, |&li| {
            let l = &links[li as usize];
            let name = &names[l.name_at as usize..(l.name_at + l.name_len) as usize];
            Self::hash(hasher, l.dir, name)
        });
        Ok(None)
    }

    /// Removes the name `name` from directory `dir`; returns the entry it
    /// named.
    pub fn remove(&mut self, dir: Id, name: &[u8]) -> Option<Id> {
        let h = Self::hash(&self.hasher, dir, name);
        let (links, names) = (&self.links, &self.names);
        let entry = self
            .index
            .find_entry(h, |&li| {
                let l = &links[li as usize];
                l.dir == dir
                    && &names[l.name_at as usize..(l.name_at + l.name_len) as usize] == name
            })
            .ok()?;
        let (li, _) = entry.remove();
        Some(std::mem::replace(&mut self.links[li as usize].id, GONE))
    }

    /// The entry at `path` (components separated by `/`; empty and `.`
    /// components are skipped, so the empty path is the root), following
    /// names from the root through `dir`, which says whether an entry is a
    /// directory.
    pub fn lookup(&self, path: &[u8], is_dir: impl Fn(Id) -> bool) -> Option<Id> {
        let mut id = ROOT;
        for comp in path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            if !is_dir(id) {
                return None;
            }
            id = self.get(id, comp)?;
        }
        Some(id)
    }

    /// Every live name, sorted by directory and then by name, for writing
    /// directories out. It takes 4 bytes per name.
    pub fn listing(&self) -> Listing<'_> {
        let mut sorted: Vec<u32> = (0..self.links.len() as u32)
            .filter(|&li| self.links[li as usize].id != GONE)
            .collect();
        sorted.sort_unstable_by(|&a, &b| {
            let (la, lb) = (&self.links[a as usize], &self.links[b as usize]);
            la.dir
                .cmp(&lb.dir)
                .then_with(|| self.name(la).cmp(self.name(lb)))
        });
        Listing { tree: self, sorted }
    }
}

impl Listing<'_> {
    /// The children of directory `dir`, by name: (name, entry).
    pub fn children(&self, dir: Id) -> impl Iterator<Item = (&[u8], Id)> + '_ {
        let links = &self.tree.links;
        let start = self
            .sorted
            .partition_point(|&li| links[li as usize].dir < dir);
        self.sorted[start..]
            .iter()
            .map(move |&li| &links[li as usize])
            .take_while(move |l| l.dir == dir)
            .map(move |l| (self.tree.name(l), l.id))
    }
}

/// The tree outgrew 32-bit numbers: past 2^32 names or 4 GiB of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("more names than 2^32, or more than 4 GiB of them")
    }
}

impl std::error::Error for TooLarge {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_replace_remove_and_list_in_order() {
        let mut t = Tree::new();
        assert_eq!(t.set(ROOT, b"b", 1), Ok(None));
        assert_eq!(t.set(ROOT, b"a", 2), Ok(None));
        assert_eq!(t.set(1, b"x", 3), Ok(None));
        assert_eq!(t.get(ROOT, b"b"), Some(1));
        assert_eq!(t.lookup(b"./b//x", |_| true), Some(3));
        assert_eq!(t.lookup(b"b/x", |id| id != 1), None);
        // Replacing b leaves b/x unreachable.
        assert_eq!(t.set(ROOT, b"b", 4), Ok(Some(1)));
        assert_eq!(t.lookup(b"b/x", |_| true), None);
        assert_eq!(t.remove(ROOT, b"a"), Some(2));
        assert_eq!(t.remove(ROOT, b"a"), None);
        assert_eq!(t.get(ROOT, b"a"), None);
        t.set(ROOT, b"-", 5).unwrap();
        t.set(ROOT, b"a", 6).unwrap();
        let l = t.listing();
        let root: Vec<(&[u8], Id)> = l.children(ROOT).collect();
        assert_eq!(root, vec![(&b"-"[..], 5), (&b"a"[..], 6), (&b"b"[..], 4)]);
        assert_eq!(l.children(1).count(), 1);
        assert_eq!(l.children(7).count(), 0);
    }

    #[test]
    fn many_names_in_one_directory() {
        let mut t = Tree::new();
        for i in 0..100_000u32 {
            t.set(ROOT, format!("f{i}").as_bytes(), i + 1).unwrap();
        }
        for i in (0..100_000u32).step_by(7) {
            assert_eq!(t.get(ROOT, format!("f{i}").as_bytes()), Some(i + 1));
        }
        assert_eq!(t.listing().children(ROOT).count(), 100_000);
    }
}
