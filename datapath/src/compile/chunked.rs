//! A vector split into shared, copy-on-write chunks: cloning it copies only
//! the chunk pointers, and changing one element copies only its chunk. This
//! is what lets a transaction build the next generation of tables in time
//! proportional to what it changes, while workers read the current one.

use std::sync::Arc;

/// Elements per chunk.
pub const CHUNK: usize = 1024;

/// A copy-on-write chunked vector. Each chunk is a full `[T; CHUNK]`
/// slice (the tail padded with defaults), so an element is one pointer
/// away from the chunk table.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: Vec<Arc<[T]>>,
    len: usize,
}

impl<T> Clone for Chunked<T> {
    fn clone(&self) -> Self {
        Chunked {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone + Default> Chunked<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`.
    ///
    /// # Panics
    /// If `i` is out of bounds.
    #[inline]
    pub fn get(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    /// Element `i`, if in bounds.
    #[inline]
    pub fn try_get(&self, i: usize) -> Option<&T> {
        if i < self.len {
            Some(self.get(i))
        } else {
            None
        }
    }

    /// Replaces element `i`, copying its chunk if it is shared.
    pub fn set(&mut self, i: usize, value: T) {
        Arc::make_mut(&mut self.chunks[i / CHUNK])[i % CHUNK] = value;
    }

    /// Appends, returning the new element's index.
    pub fn push(&mut self, value: T) -> usize {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(vec![T::default(); CHUNK].into());
        }
        let i = self.len;
        self.len += 1;
        self.set(i, value);
        i
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    /// The elements of `self` that differ from `old` (or that `old` lacks),
    /// with their indices. Chunks shared with `old` are skipped unread, so
    /// this costs what changed, not what exists.
    pub fn changed_since<'a>(
        &'a self,
        old: &'a Chunked<T>,
    ) -> impl Iterator<Item = (usize, &'a T)> + 'a
    where
        T: PartialEq,
    {
        self.chunks
            .iter()
            .enumerate()
            .filter(move |(c, chunk)| old.chunks.get(*c).is_none_or(|o| !Arc::ptr_eq(o, chunk)))
            .flat_map(move |(c, chunk)| {
                let base = c * CHUNK;
                chunk
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (base + i, v))
                    .take_while(move |(i, _)| *i < self.len)
                    .filter(move |(i, v)| old.try_get(*i) != Some(*v))
            })
    }

    /// Heap bytes held (counting shared chunks in full).
    pub fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Arc<[T]>>()
            + self.chunks.len() * (CHUNK * size_of::<T>() + 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_copies_only_its_chunk() {
        let mut a = Chunked::default();
        for i in 0..3 * CHUNK {
            a.push(i);
        }
        let mut b = a.clone();
        b.set(CHUNK + 5, 0);
        assert_eq!(*a.get(CHUNK + 5), CHUNK + 5);
        assert_eq!(*b.get(CHUNK + 5), 0);
        assert!(Arc::ptr_eq(&a.chunks[0], &b.chunks[0]));
        assert!(!Arc::ptr_eq(&a.chunks[1], &b.chunks[1]));
        b.push(7);
        let changed: Vec<(usize, usize)> = b.changed_since(&a).map(|(i, v)| (i, *v)).collect();
        assert_eq!(changed, vec![(CHUNK + 5, 0), (3 * CHUNK, 7)]);
    }
}
