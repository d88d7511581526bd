//! The hash chain of the audit trail, without I/O: a record's content, its hash, and the verifier.
//!
//! `hash = SHA-256(prev_hash || canonical)`, where `canonical` is the JSON array (serde_json) of the
//! record's content: `[id, at, action, principal, resource, capability, decision, request_id, source,
//! detail]`, with `at` in RFC 3339, UTC, microseconds (`2026-01-02T03:04:05.123456Z`; PostgreSQL keeps
//! microseconds, so times are truncated before hashing) and `detail` the JSON text exactly as stored.
//! JSON string escaping makes the encoding unambiguous: no two contents share a canonical text. The
//! first record's `prev_hash` is [`GENESIS`] (32 zero bytes).
//!
//! The verifier walks the records in id order carrying the previous hash, and reports the first
//! record that is out of place (an id gap or a foreign id: a deleted or inserted row), whose
//! `prev_hash` is not the previous record's hash (a deleted, inserted or moved row), or whose hash does
//! not match its content (an altered row). A final check against the head (the last id and hash,
//! updated with every append) catches the deletion of the newest records, which leaves no gap.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first record.
pub const GENESIS: Hash = [0; 32];

/// One record of the chain, as stored in `audit_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the chain: 1, 2, 3, … without gaps.
    pub id: i64,
    /// When the record was appended, with microsecond precision.
    pub at: DateTime<Utc>,
    /// `authorize` for decisions; `policy.put`, `api_key.create`, … for changes.
    pub action: String,
    /// `api-key/<id>`, `jwt/<sub>`, `node/<name>`, `anonymous`.
    pub principal: String,
    /// Resource path, e.g. `tasks/core/util/echo`.
    pub resource: String,
    /// Capability checked; empty for changes.
    pub capability: String,
    /// `allow`, `deny` or `error`.
    pub decision: String,
    /// The request id of the call.
    pub request_id: String,
    /// The caller's address.
    pub source: String,
    /// JSON text, exactly as hashed.
    pub detail: String,
    /// The hash of the previous record ([`GENESIS`] for the first); 32 bytes unless tampered with.
    pub prev_hash: Vec<u8>,
    /// `SHA-256(prev_hash || canonical)`; 32 bytes unless tampered with.
    pub hash: Vec<u8>,
}

impl Record {
    /// The canonical encoding of the content (every field but the two hashes).
    pub fn canonical(&self) -> String {
        let content = (
            self.id,
            format_time(self.at),
            &self.action,
            &self.principal,
            &self.resource,
            &self.capability,
            &self.decision,
            &self.request_id,
            &self.source,
            &self.detail,
        );
        // Serializing integers and strings cannot fail.
        serde_json::to_string(&content).unwrap_or_default()
    }

    /// `SHA-256(self.prev_hash || canonical)`: the hash this record must carry.
    pub fn compute_hash(&self) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(&self.prev_hash);
        hasher.update(self.canonical().as_bytes());
        hasher.finalize().into()
    }

    /// Sets `prev_hash` and `hash`, chaining the record after a record whose hash is `prev`.
    pub fn seal(&mut self, prev: &Hash) -> Hash {
        self.prev_hash = prev.to_vec();
        let hash = self.compute_hash();
        self.hash = hash.to_vec();
        hash
    }
}

/// `at` truncated to microseconds, the precision PostgreSQL stores.
pub fn truncate_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// `at` as hashed: RFC 3339 in UTC with exactly six fractional digits (truncated, not rounded).
pub fn format_time(at: DateTime<Utc>) -> String {
    truncate_time(at).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The last record of the chain as the `audit_head` row names it (`0` and [`GENESIS`] when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Id of the last record.
    pub last_id: i64,
    /// Hash of the last record.
    pub last_hash: Vec<u8>,
}

impl Head {
    /// The head of an empty chain.
    pub fn empty() -> Self {
        Self { last_id: 0, last_hash: GENESIS.to_vec() }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Whether every record and the head verify.
    pub valid: bool,
    /// Records that verified (when not valid: those before the first broken one).
    pub checked: i64,
    /// Id of the first record that does not verify (for missing newest records: the first missing
    /// id); `None` when valid.
    pub first_broken: Option<i64>,
    /// Why it does not verify; empty when valid.
    pub reason: String,
}

/// Walks a chain record by record, in increasing id order. Stops at the first broken record.
#[derive(Debug, Clone)]
pub struct Verifier {
    head: Head,
    prev_id: i64,
    prev_hash: Vec<u8>,
    checked: i64,
    broken: Option<(i64, String)>,
}

impl Verifier {
    /// A verifier of the chain that `head` ends.
    pub fn new(head: Head) -> Self {
        Self { head, prev_id: 0, prev_hash: GENESIS.to_vec(), checked: 0, broken: None }
    }

    /// Checks the next record. Returns `false` once the chain is broken: the rest need not be fed.
    pub fn push(&mut self, record: &Record) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if let Some(reason) = self.check(record) {
            self.broken = Some((record.id, reason));
            return false;
        }
        self.prev_id = record.id;
        self.prev_hash.clone_from(&record.hash);
        self.checked += 1;
        true
    }

    fn check(&self, record: &Record) -> Option<String> {
        let expected = self.prev_id.saturating_add(1);
        if record.id > self.head.last_id {
            return Some(format!(
                "record {} is beyond the head of the chain (record {}): it was inserted",
                record.id, self.head.last_id
            ));
        }
        if record.id != expected {
            return Some(if record.id > expected {
                format!("record {} follows record {}: {}", record.id, self.prev_id, missing(expected, record.id - 1))
            } else {
                format!("record {} is out of order (record {expected} should come next): it was inserted", record.id)
            });
        }
        if record.prev_hash != self.prev_hash {
            return Some(if self.prev_id == 0 {
                format!("record {} does not start the chain (its prev_hash is not the genesis hash)", record.id)
            } else {
                format!("record {}'s prev_hash is not the hash of record {}", record.id, self.prev_id)
            });
        }
        if record.hash.as_slice() != record.compute_hash().as_slice() {
            return Some(format!("record {}'s hash does not match its content: it was altered", record.id));
        }
        None
    }

    /// The outcome, after the last record: a chain that stops before its head lost its newest records;
    /// one whose last hash is not the head's was altered.
    pub fn finish(self) -> Verification {
        let broken = self.broken.or_else(|| {
            if self.prev_id < self.head.last_id {
                let first = self.prev_id + 1;
                Some((
                    first,
                    format!(
                        "the chain ends at record {} but its head names record {}: {}",
                        self.prev_id,
                        self.head.last_id,
                        missing(first, self.head.last_id)
                    ),
                ))
            } else if self.prev_hash != self.head.last_hash {
                Some((self.prev_id, format!("record {}'s hash is not the hash its head names", self.prev_id)))
            } else {
                None
            }
        });
        match broken {
            None => Verification { valid: true, checked: self.checked, first_broken: None, reason: String::new() },
            Some((id, reason)) => Verification { valid: false, checked: self.checked, first_broken: Some(id), reason },
        }
    }
}

/// `record 5 is missing` or `records 5..=9 are missing`.
fn missing(first: i64, last: i64) -> String {
    if first == last { format!("record {first} is missing") } else { format!("records {first}..={last} are missing") }
}

/// Verifies `records` (in the order given, which must be increasing id order) against `head`.
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a Record>, head: Head) -> Verification {
    let mut verifier = Verifier::new(head);
    for record in records {
        if !verifier.push(record) {
            break;
        }
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_767_225_600_000_000 + micros).expect("time")
    }

    fn record(id: i64) -> Record {
        Record {
            id,
            at: at(id * 1000 + 7),
            action: "authorize".into(),
            principal: format!("api-key/{id}"),
            resource: "tasks/core/util/echo".into(),
            capability: "create".into(),
            decision: if id % 2 == 0 { "allow".into() } else { "deny".into() },
            request_id: format!("req-{id}"),
            source: "127.0.0.1:5000".into(),
            detail: format!(r#"{{"n":{id}}}"#),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }

    /// A valid chain of `n` records and its head.
    fn chain(n: i64) -> (Vec<Record>, Head) {
        let mut prev = GENESIS;
        let records: Vec<Record> = (1..=n)
            .map(|id| {
                let mut r = record(id);
                prev = r.seal(&prev);
                r
            })
            .collect();
        (records, Head { last_id: n, last_hash: prev.to_vec() })
    }

    fn broken_at(v: &Verification) -> i64 {
        assert!(!v.valid, "expected a broken chain: {v:?}");
        v.first_broken.expect("first_broken")
    }

    #[test]
    fn the_canonical_text_is_a_json_array_of_the_content() {
        let r = record(3);
        assert_eq!(
            r.canonical(),
            r#"[3,"2026-01-01T00:00:00.003007Z","authorize","api-key/3","tasks/core/util/echo","create","deny","req-3","127.0.0.1:5000","{\"n\":3}"]"#
        );
    }

    #[test]
    fn the_hash_is_sha256_of_prev_hash_then_canonical() {
        let mut r = record(1);
        let hash = r.seal(&GENESIS);
        let mut input = GENESIS.to_vec();
        input.extend_from_slice(r.canonical().as_bytes());
        assert_eq!(hash, <[u8; 32]>::from(Sha256::digest(&input)));
        assert_eq!(r.hash, hash.to_vec());
        assert_eq!(r.prev_hash, GENESIS.to_vec());
    }

    #[test]
    fn times_are_truncated_to_microseconds() {
        let t = DateTime::from_timestamp(1_767_225_600, 123_456_999).expect("time");
        assert_eq!(format_time(t), "2026-01-01T00:00:00.123456Z");
        assert_eq!(truncate_time(t).timestamp_subsec_nanos(), 123_456_000);
        let whole = DateTime::from_timestamp(1_767_225_600, 0).expect("time");
        assert_eq!(format_time(whole), "2026-01-01T00:00:00.000000Z");
        // Nanoseconds below the microsecond do not change the hash.
        let mut a = record(1);
        let mut b = record(1);
        a.at = t;
        b.at = truncate_time(t);
        assert_eq!(a.seal(&GENESIS), b.seal(&GENESIS));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = record(1);
        let mut b = record(1);
        a.action = "a\",\"b".into();
        a.principal = String::new();
        b.action = "a".into();
        b.principal = "b".into();
        assert_ne!(a.canonical(), b.canonical());
        assert_ne!(a.seal(&GENESIS), b.seal(&GENESIS));
    }

    #[test]
    fn an_empty_chain_is_valid() {
        let v = verify_chain(&[], Head::empty());
        assert_eq!(v, Verification { valid: true, checked: 0, first_broken: None, reason: String::new() });
    }

    #[test]
    fn an_intact_chain_is_valid() {
        for n in [1, 2, 10] {
            let (records, head) = chain(n);
            let v = verify_chain(&records, head);
            assert!(v.valid, "{v:?}");
            assert_eq!(v.checked, n);
        }
    }

    #[test]
    fn altering_any_field_names_the_record() {
        type Alteration = (&'static str, fn(&mut Record));
        let alterations: [Alteration; 12] = [
            ("id", |r| r.id += 100),
            ("at", |r| r.at += chrono::Duration::microseconds(1)),
            ("action", |r| r.action.push('x')),
            ("principal", |r| r.principal = "api-key/admin".into()),
            ("resource", |r| r.resource.push('x')),
            ("capability", |r| r.capability = "sudo".into()),
            ("decision", |r| r.decision = "allow".into()),
            ("request_id", |r| r.request_id.push('x')),
            ("source", |r| r.source.push('x')),
            ("detail", |r| r.detail = r#"{"n": 3}"#.into()),
            ("prev_hash", |r| r.prev_hash[0] ^= 1),
            ("hash", |r| r.hash[31] ^= 1),
        ];
        for (field, alter) in alterations {
            for target in [1_usize, 3, 5] {
                let (mut records, head) = chain(5);
                alter(&mut records[target - 1]);
                let v = verify_chain(&records, head);
                let expected = i64::try_from(target).expect("small") + if field == "id" { 100 } else { 0 };
                assert_eq!(broken_at(&v), expected, "{field} of record {target}: {v:?}");
                assert_eq!(v.checked, i64::try_from(target).expect("small") - 1, "{field} of record {target}");
            }
        }
    }

    #[test]
    fn an_altered_field_is_reported_as_altered() {
        let (mut records, head) = chain(5);
        records[2].principal = "api-key/admin".into();
        let v = verify_chain(&records, head);
        assert_eq!(v.first_broken, Some(3));
        assert_eq!(v.checked, 2);
        assert_eq!(v.reason, "record 3's hash does not match its content: it was altered");
    }

    #[test]
    fn an_altered_record_rehashed_breaks_the_next_link() {
        let (mut records, head) = chain(5);
        records[2].principal = "api-key/admin".into();
        let prev: Hash = records[1].hash.clone().try_into().expect("32 bytes");
        records[2].seal(&prev);
        let v = verify_chain(&records, head);
        assert_eq!(v.first_broken, Some(4));
        assert_eq!(v.reason, "record 4's prev_hash is not the hash of record 3");
    }

    #[test]
    fn rehashing_the_last_record_is_caught_by_the_head() {
        let (mut records, head) = chain(5);
        records[4].principal = "api-key/admin".into();
        let prev: Hash = records[3].hash.clone().try_into().expect("32 bytes");
        records[4].seal(&prev);
        let v = verify_chain(&records, head);
        assert_eq!(v.first_broken, Some(5));
        assert_eq!(v.checked, 5);
        assert_eq!(v.reason, "record 5's hash is not the hash its head names");
    }

    #[test]
    fn deleting_the_first_record_names_the_next() {
        let (mut records, head) = chain(5);
        records.remove(0);
        let v = verify_chain(&records, head);
        assert_eq!(broken_at(&v), 2);
        assert_eq!(v.checked, 0);
        assert_eq!(v.reason, "record 2 follows record 0: record 1 is missing");
    }

    #[test]
    fn deleting_a_middle_record_names_the_record_after_the_gap() {
        let (mut records, head) = chain(6);
        records.drain(2..4);
        let v = verify_chain(&records, head);
        assert_eq!(broken_at(&v), 5);
        assert_eq!(v.checked, 2);
        assert_eq!(v.reason, "record 5 follows record 2: records 3..=4 are missing");
    }

    #[test]
    fn deleting_and_renumbering_is_caught_by_the_links() {
        let (mut records, head) = chain(5);
        records.remove(2);
        for r in &mut records[2..] {
            r.id -= 1;
        }
        let v = verify_chain(&records, head);
        // Record 3 (formerly 4) no longer matches its hash (the id is hashed).
        assert_eq!(broken_at(&v), 3);
    }

    #[test]
    fn deleting_the_newest_records_is_caught_by_the_head() {
        let (mut records, head) = chain(5);
        records.pop();
        let v = verify_chain(&records, head.clone());
        assert_eq!(broken_at(&v), 5);
        assert_eq!(v.checked, 4);
        assert_eq!(v.reason, "the chain ends at record 4 but its head names record 5: record 5 is missing");
        records.truncate(2);
        assert_eq!(broken_at(&verify_chain(&records, head.clone())), 3);
        assert_eq!(broken_at(&verify_chain(&[], head)), 1);
    }

    #[test]
    fn inserting_a_record_is_caught() {
        // At the end, well formed (chained to the last record) but unknown to the head.
        let (mut records, head) = chain(3);
        let mut forged = record(4);
        let prev: Hash = records[2].hash.clone().try_into().expect("32 bytes");
        forged.seal(&prev);
        records.push(forged);
        let v = verify_chain(&records, head);
        assert_eq!(broken_at(&v), 4);
        assert_eq!(v.checked, 3);
        assert!(v.reason.contains("beyond the head"), "{}", v.reason);

        // Before the first record, sealed as a genesis record.
        let (mut records, head) = chain(3);
        let mut forged = record(0);
        forged.seal(&GENESIS);
        records.insert(0, forged);
        assert_eq!(broken_at(&verify_chain(&records, head)), 0);

        // In the middle, with the head updated to match: the ids no longer follow.
        let (mut records, mut head) = chain(3);
        let mut forged = record(2);
        forged.seal(&GENESIS);
        records.insert(1, forged);
        head.last_id = 4;
        assert_eq!(broken_at(&verify_chain(&records, head)), 2);
    }

    #[test]
    fn reordering_records_is_caught() {
        let (mut records, head) = chain(5);
        records.swap(1, 2);
        let v = verify_chain(&records, head);
        assert_eq!(broken_at(&v), 3);
        assert!(v.reason.contains("record 2 is missing"), "{}", v.reason);

        // Swapping the contents of two rows while keeping their ids.
        let (mut records, head) = chain(5);
        let (a, b) = (records[1].clone(), records[2].clone());
        records[1] = Record { id: 2, ..b };
        records[2] = Record { id: 3, ..a };
        assert_eq!(broken_at(&verify_chain(&records, head)), 2);
    }

    #[test]
    fn a_chain_not_starting_at_genesis_is_broken() {
        let (mut records, head) = chain(2);
        records[0].prev_hash = vec![1; 32];
        let v = verify_chain(&records, head);
        assert_eq!(broken_at(&v), 1);
        assert!(v.reason.contains("genesis"), "{}", v.reason);
    }

    #[test]
    fn the_verifier_stops_at_the_first_break() {
        let (mut records, head) = chain(5);
        records[1].source.push('x');
        records[3].source.push('x');
        let mut verifier = Verifier::new(head);
        assert!(verifier.push(&records[0]));
        assert!(!verifier.push(&records[1]));
        assert!(!verifier.push(&records[2]));
        let v = verifier.finish();
        assert_eq!((v.first_broken, v.checked), (Some(2), 1));
    }
}
