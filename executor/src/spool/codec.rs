//! The spool's line format: one completion per line, JSON encrypted with AES-256-GCM.
//!
//! A line is `base64(nonce ‖ ciphertext ‖ tag)` (standard alphabet, padded) followed by `\n`: a fresh
//! random 96-bit nonce per line (NIST SP 800-38D, section 8.2.2: random nonces are safe far below
//! 2^32 messages per key), the 128-bit tag of AES-GCM, and as associated data
//! `legion-spool-v1\0<node>`, so that a line moved into the spool of another node, or read by a
//! later format version, does not decrypt. The plaintext is a [`Record`] as JSON.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use legion_proto::v1::{Completion, Failure, completion};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The format version, part of every line's associated data.
pub const FORMAT: &str = "legion-spool-v1";

/// Bytes of an AES-256 key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce (96 bits).
pub const NONCE_BYTES: usize = 12;

/// Why a line could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not base64, or too short to hold a nonce and a tag.
    #[error("line is not base64 of a nonce and a ciphertext")]
    Encoding,
    /// The tag does not match: tampered, torn, another key or another node's spool.
    #[error("line does not decrypt (tampered, torn, or written with another key or by another node)")]
    Decrypt,
    /// Decrypted, but not a record.
    #[error("line is not a spooled completion: {0}")]
    Record(String),
}

/// What a spooled completion says, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The result, JSON text.
    Result(String),
    /// A result that was not UTF-8 (never produced by the pool), standard base64.
    ResultBase64(String),
    /// A failure.
    Failure {
        /// `FailureKind` as its protobuf number.
        kind: i32,
        /// The failure's message.
        message: String,
    },
    /// A completion without an outcome (a protocol error the control plane will name).
    None,
}

/// One spooled completion: the plaintext of a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The task.
    pub task_id: String,
    /// The attempt (fencing token).
    pub attempt: u32,
    /// The outcome.
    pub outcome: Outcome,
    /// Runner wall time, ms.
    pub duration_ms: u64,
    /// When the line was written.
    pub spooled_at: DateTime<Utc>,
}

impl Record {
    /// The record of `completion`, spooled at `spooled_at`.
    pub fn new(completion: &Completion, spooled_at: DateTime<Utc>) -> Self {
        let outcome = match &completion.outcome {
            Some(completion::Outcome::ResultJson(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => Outcome::Result(text.to_owned()),
                Err(_) => Outcome::ResultBase64(STANDARD.encode(bytes)),
            },
            Some(completion::Outcome::Failure(f)) => Outcome::Failure { kind: f.kind, message: f.message.clone() },
            None => Outcome::None,
        };
        Self {
            task_id: completion.task_id.clone(),
            attempt: completion.attempt,
            outcome,
            duration_ms: completion.duration_ms,
            spooled_at,
        }
    }

    /// The completion to send again, and when it was spooled.
    ///
    /// # Errors
    /// [`Error::Record`] when a base64 result does not decode.
    pub fn into_completion(self) -> Result<Spooled, Error> {
        let outcome = match self.outcome {
            Outcome::Result(text) => Some(completion::Outcome::ResultJson(text.into_bytes())),
            Outcome::ResultBase64(b64) => Some(completion::Outcome::ResultJson(
                STANDARD.decode(b64).map_err(|e| Error::Record(format!("outcome.result_base64: {e}")))?,
            )),
            Outcome::Failure { kind, message } => Some(completion::Outcome::Failure(Failure { kind, message })),
            Outcome::None => None,
        };
        let completion =
            Completion { task_id: self.task_id, attempt: self.attempt, outcome, duration_ms: self.duration_ms };
        Ok(Spooled { completion, spooled_at: self.spooled_at })
    }
}

/// A spooled completion read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    /// The completion, as it was given to the spool.
    pub completion: Completion,
    /// When it was spooled.
    pub spooled_at: DateTime<Utc>,
}

/// Encrypts and decrypts lines with one key, for one node.
#[derive(Clone)]
pub struct Codec {
    cipher: Aes256Gcm,
    aad: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("aad", &String::from_utf8_lossy(&self.aad)).finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec with `key` for the spool of node `node`.
    pub fn new(key: &[u8; KEY_BYTES], node: &str) -> Self {
        let mut aad = Vec::with_capacity(FORMAT.len() + 1 + node.len());
        aad.extend_from_slice(FORMAT.as_bytes());
        aad.push(0);
        aad.extend_from_slice(node.as_bytes());
        Self { cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)), aad }
    }

    /// `plaintext` sealed as one line, `\n` included, with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption fails only for plaintexts above 64 GiB, far beyond any completion.
        let ciphertext =
            self.cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &self.aad }).unwrap_or_default();
        let mut raw = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        let mut line = STANDARD.encode(raw).into_bytes();
        line.push(b'\n');
        line
    }

    /// The plaintext of `line` (without its `\n`).
    ///
    /// # Errors
    /// [`Error::Encoding`] or [`Error::Decrypt`].
    pub fn open(&self, line: &[u8]) -> Result<Vec<u8>, Error> {
        let raw = STANDARD.decode(line).map_err(|_| Error::Encoding)?;
        if raw.len() < NONCE_BYTES + 16 {
            return Err(Error::Encoding);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| Error::Encoding)?;
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: &self.aad })
            .map_err(|_| Error::Decrypt)
    }

    /// `record` as one sealed line.
    pub fn seal_record(&self, record: &Record) -> Vec<u8> {
        // A record always serializes: strings, numbers and a timestamp.
        self.seal(&serde_json::to_vec(record).unwrap_or_default())
    }

    /// The record sealed in `line`.
    ///
    /// # Errors
    /// [`Error`].
    pub fn open_record(&self, line: &[u8]) -> Result<Record, Error> {
        let plaintext = self.open(line)?;
        serde_json::from_slice(&plaintext).map_err(|e| Error::Record(e.to_string()))
    }
}

/// A random AES-256 key.
pub fn random_key() -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    key
}

/// Decodes a key given as standard base64 of exactly [`KEY_BYTES`] bytes (surrounding whitespace
/// ignored).
///
/// # Errors
/// The reason, e.g. `must be base64 of exactly 32 bytes, got 16`.
pub fn decode_key(text: &str) -> Result<[u8; KEY_BYTES], String> {
    let bytes = STANDARD.decode(text.trim()).map_err(|e| format!("must be base64 (standard alphabet): {e}"))?;
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice())
        .map_err(|_| format!("must be base64 of exactly {KEY_BYTES} bytes, got {}", bytes.len()))
}

/// `key` as standard base64.
pub fn encode_key(key: &[u8; KEY_BYTES]) -> String {
    STANDARD.encode(key)
}
