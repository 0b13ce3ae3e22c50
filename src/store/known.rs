//! Everything popsync knows about one account's messages, held compactly for planning.
//!
//! A session compares the server's listing with this set, so it is in memory whole, once per
//! session. With 100,000 messages a `HashMap<Vec<u8>, Known>` takes about 100 bytes a message
//! (a table slot of 64 bytes at most 7/8 full, and a heap block for each unique-id); here the
//! unique-ids share one buffer and each message is a 32-byte record found through a table of
//! 4-byte indexes: about 55 bytes a message, and no allocation per message.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::messages::{Known, MessageState};

/// The known messages of one account, by unique-id (exact bytes).
#[derive(Debug, Default)]
pub struct KnownMessages {
    /// Every unique-id, one after another.
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// Indexes into `records`, hashed by unique-id.
    index: HashTable<u32>,
    hasher: RandomState,
}

/// One message: where its unique-id is in `bytes`, and what is known of it. The two times
/// use `i64::MIN` for "none" (no unix time is that far back).
#[derive(Debug, Clone, Copy)]
struct Record {
    start: u32,
    len: u32,
    delivered_at: i64,
    unlisted_since: i64,
    state: MessageState,
}

const NONE: i64 = i64::MIN;

/// More unique-id bytes, or more messages, than one account's set can hold (4 GiB of ids,
/// or 4 billion messages; a listing is refused long before, at a million lines).
#[derive(Debug)]
pub struct TooMany;

impl KnownMessages {
    /// An empty set with room for `n` messages whose unique-ids take `bytes` bytes in all.
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            records: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            hasher: RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn uid_of<'b>(bytes: &'b [u8], r: &Record) -> &'b [u8] {
        &bytes[r.start as usize..(r.start + r.len) as usize]
    }

    fn find(&self, uid: &[u8]) -> Option<&Record> {
        let hash = self.hasher.hash_one(uid);
        let (bytes, records) = (&self.bytes, &self.records);
        self.index
            .find(hash, |&i| Self::uid_of(bytes, &records[i as usize]) == uid)
            .map(|&i| &records[i as usize])
    }

    /// What is known of the message with this unique-id.
    pub fn get(&self, uid: &[u8]) -> Option<Known> {
        self.find(uid).map(known)
    }

    pub fn contains(&self, uid: &[u8]) -> bool {
        self.find(uid).is_some()
    }

    /// Adds a message, or replaces what is known of it.
    pub fn insert(&mut self, uid: &[u8], k: Known) -> Result<(), TooMany> {
        let hash = self.hasher.hash_one(uid);
        let record = |start, len| Record {
            start,
            len,
            delivered_at: k.delivered_at.unwrap_or(NONE),
            unlisted_since: k.unlisted_since.unwrap_or(NONE),
            state: k.state,
        };
        let (bytes, records, hasher) = (&self.bytes, &mut self.records, &self.hasher);
        if let Some(&i) = self
            .index
            .find(hash, |&i| Self::uid_of(bytes, &records[i as usize]) == uid)
        {
            let old = records[i as usize];
            records[i as usize] = record(old.start, old.len);
            return Ok(());
        }
        let start = u32::try_from(self.bytes.len()).map_err(|_| TooMany)?;
        let len = u32::try_from(uid.len()).map_err(|_| TooMany)?;
        start.checked_add(len).ok_or(TooMany)?;
        let i = u32::try_from(self.records.len()).map_err(|_| TooMany)?;
        self.bytes.extend_from_slice(uid);
        self.records.push(record(start, len));
        let (bytes, records) = (&self.bytes, &self.records);
        self.index.insert_unique(hash, i, |&j| {
            hasher.hash_one(Self::uid_of(bytes, &records[j as usize]))
        });
        Ok(())
    }

    /// Every known message, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Known)> {
        self.records
            .iter()
            .map(|r| (Self::uid_of(&self.bytes, r), known(r)))
    }
}

fn known(r: &Record) -> Known {
    let time = |t| (t != NONE).then_some(t);
    Known {
        state: r.state,
        delivered_at: time(r.delivered_at),
        unlisted_since: time(r.unlisted_since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(state: MessageState, delivered_at: Option<i64>, unlisted_since: Option<i64>) -> Known {
        Known {
            state,
            delivered_at,
            unlisted_since,
        }
    }

    #[test]
    fn finds_each_message_by_its_exact_bytes() {
        let mut set = KnownMessages::default();
        let ids: Vec<Vec<u8>> = (0..5000u32)
            .map(|i| format!("uid-{i}").into_bytes())
            .chain([
                b"".to_vec(),
                b"\xff\x00x".to_vec(),
                b"A".to_vec(),
                b"a".to_vec(),
            ])
            .collect();
        for (n, id) in ids.iter().enumerate() {
            let n = n as i64;
            set.insert(
                id,
                k(MessageState::Delivered, Some(n), (n % 2 == 0).then_some(-n)),
            )
            .unwrap();
        }
        assert_eq!(set.len(), ids.len());
        for (n, id) in ids.iter().enumerate() {
            let n = n as i64;
            assert_eq!(
                set.get(id),
                Some(k(
                    MessageState::Delivered,
                    Some(n),
                    (n % 2 == 0).then_some(-n)
                ))
            );
        }
        assert_eq!(set.get(b"uid-5000"), None);
        assert_eq!(set.get(b"uid-1\0"), None);
        assert!(!set.contains(b"B"));
        let listed: Vec<&[u8]> = set.iter().map(|(u, _)| u).collect();
        let want: Vec<&[u8]> = ids.iter().map(|u| u.as_slice()).collect();
        assert_eq!(listed, want);
    }

    #[test]
    fn inserting_a_known_id_again_replaces_what_is_known() {
        let mut set = KnownMessages::with_capacity(1, 1);
        set.insert(b"u", k(MessageState::Pending, None, None))
            .unwrap();
        set.insert(b"u", k(MessageState::Seen, None, Some(7)))
            .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.get(b"u"), Some(k(MessageState::Seen, None, Some(7))));
    }

    #[test]
    fn times_are_kept_whole_including_zero_and_negative() {
        let mut set = KnownMessages::default();
        for (i, t) in [0, -1, i64::MAX, i64::MIN + 1].into_iter().enumerate() {
            set.insert(&[i as u8], k(MessageState::Oversize, Some(t), Some(t)))
                .unwrap();
            assert_eq!(
                set.get(&[i as u8]),
                Some(k(MessageState::Oversize, Some(t), Some(t)))
            );
        }
    }
}
