//! A slab with generational keys: a key names one occupant only, so an
//! event or a late answer for something already closed (whose slot was
//! reused) is recognised as stale and ignored.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub index: u32,
    pub gen: u32,
}

impl Key {
    /// Packs the key and a 2-bit tag into an epoll token.
    pub fn token(self, tag: u64) -> u64 {
        (u64::from(self.gen) << 34) | (u64::from(self.index) << 2) | tag
    }

    /// The key and tag of a token.
    pub fn from_token(token: u64) -> (Key, u64) {
        (
            Key {
                index: ((token >> 2) & 0xffff_ffff) as u32,
                gen: (token >> 34) as u32,
            },
            token & 3,
        )
    }
}

pub struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> Key {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            // 30 bits of generation fit the token.
            slot.0 = (slot.0 + 1) & 0x3fff_ffff;
            slot.1 = Some(value);
            return Key { index, gen: slot.0 };
        }
        self.slots.push((0, Some(value)));
        Key {
            index: (self.slots.len() - 1) as u32,
            gen: 0,
        }
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        match self.slots.get(key.index as usize) {
            Some((gen, Some(value))) if *gen == key.gen => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index as usize) {
            Some((gen, Some(value))) if *gen == key.gen => Some(value),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: Key) -> Option<T> {
        match self.slots.get_mut(key.index as usize) {
            Some((gen, slot @ Some(_))) if *gen == key.gen => {
                self.free.push(key.index);
                slot.take()
            }
            _ => None,
        }
    }

    pub fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(i, (gen, _))| Key {
                index: i as u32,
                gen: *gen,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_key() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b");
        assert_eq!(a.index, b.index);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        let (key, tag) = Key::from_token(b.token(2));
        assert_eq!((key, tag), (b, 2));
    }
}
