//! The hub's watchers, stored densely: a vector of slots addressed by a watcher uid that names
//! the slot and the slot's generation.
//!
//! A million idle watchers is a normal load for a control-plane store, so what each costs at
//! rest matters more than anything else here. A hash map from uid to watcher costs two to four
//! times the record (buckets at a load factor under 7/8, doubled on growth, plus the key); a
//! slab costs the record and a generation, and freed slots are reused.
//!
//! Invariant: a uid is `generation << 32 | slot`. Removing a watcher bumps its slot's
//! generation, so a uid held across a lock release (a catch-up plan) can never reach the
//! watcher that later reuses the slot: every lookup compares the whole uid.

/// A slot: its current generation and, when occupied, the value.
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Indices of vacant slots, reused last-freed first.
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

fn split(uid: u64) -> (usize, u32) {
    ((uid & 0xffff_ffff) as usize, (uid >> 32) as u32)
}

impl<T> Slab<T> {
    /// Stores `value` and returns its uid, never 0 (generations start at 1).
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        self.len += 1;
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot {
                    generation: 1,
                    value: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        debug_assert!(slot.value.is_none());
        slot.value = Some(value);
        (u64::from(slot.generation) << 32) | index as u64
    }

    pub(crate) fn get(&self, uid: u64) -> Option<&T> {
        let (i, g) = split(uid);
        self.slots
            .get(i)
            .filter(|s| s.generation == g)
            .and_then(|s| s.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, uid: u64) -> Option<&mut T> {
        let (i, g) = split(uid);
        self.slots
            .get_mut(i)
            .filter(|s| s.generation == g)
            .and_then(|s| s.value.as_mut())
    }

    pub(crate) fn remove(&mut self, uid: u64) -> Option<T> {
        let (i, g) = split(uid);
        let slot = self.slots.get_mut(i).filter(|s| s.generation == g)?;
        let value = slot.value.take()?;
        // Generation 0 is never handed out, so a wrapped generation skips it.
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.free.push(i as u32);
        self.len -= 1;
        Some(value)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every stored value with its uid.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let uid = (u64::from(s.generation) << 32) | i as u64;
            s.value.as_mut().map(|v| (uid, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_uid() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_ne!(a, 0);
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None, "removed twice");
        let c = s.insert("c");
        assert_eq!(c & 0xffff_ffff, a & 0xffff_ffff, "the freed slot is reused");
        assert_ne!(c, a);
        assert_eq!(s.get(a), None, "the old uid must not reach the new watcher");
        assert_eq!(s.get_mut(a), None);
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 2);
        let mut all: Vec<_> = s.iter_mut().map(|(u, v)| (u, *v)).collect();
        all.sort();
        let mut want = vec![(b, "b"), (c, "c")];
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn unknown_uids_are_absent() {
        let mut s: Slab<u8> = Slab::default();
        assert_eq!(s.get(0), None);
        assert_eq!(s.get(1 << 32 | 7), None);
        assert_eq!(s.remove(1 << 32), None);
    }
}
