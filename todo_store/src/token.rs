//! Sync tokens: the opaque position of a reader in a user's change log.
//!
//! A token is base64url (no padding) of a versioned binary record: the version byte, an 8-byte
//! hash of the user id (so another user's handle rejects it), the seq of the log the reader has
//! seen up to, and where inside that position it stands:
//!
//! - *plain*: every change up to `seq` is seen;
//! - *inside a seq*: the changes of `seq` up to `(kind, id)` are seen too (one write can touch
//!   more records than a page holds, and they share its seq);
//! - *snapshot*: a full read of the live data started when the log stood at `seq` and has read
//!   the lists up to an id, or the tasks up to a `(created_at, id)`.
//!
//! Tokens carry no secret: every read is scoped to the handle's user anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::StoreError;
use crate::sync::EntityKind;

const VERSION: u8 = 1;

/// Where a reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pos {
    /// Every change up to the seq.
    Plain,
    /// The seq's changes up to this record too, in `(kind, id)` order.
    Inside(EntityKind, Uuid),
    /// A snapshot: lists after this id still to read, then every task.
    SnapshotLists(Uuid),
    /// A snapshot: tasks after this `(created_at in ms, id)` still to read.
    SnapshotTasks(i64, Uuid),
}

/// A decoded token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub seq: i64,
    pub pos: Pos,
}

/// FNV-1a, 64 bits: stable across builds and processes (unlike std's hasher).
fn user_hash(user_id: &str) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.to_be_bytes()
}

impl Token {
    pub(crate) fn plain(seq: i64) -> Token {
        Token {
            seq,
            pos: Pos::Plain,
        }
    }

    /// The token's text for `user_id`.
    pub(crate) fn encode(&self, user_id: &str) -> String {
        let mut b = Vec::with_capacity(42);
        b.push(VERSION);
        b.extend_from_slice(&user_hash(user_id));
        b.extend_from_slice(&self.seq.to_be_bytes());
        match self.pos {
            Pos::Plain => b.push(0),
            Pos::Inside(kind, id) => {
                b.push(1);
                b.push(kind.code());
                b.extend_from_slice(id.as_bytes());
            }
            Pos::SnapshotLists(id) => {
                b.push(2);
                b.extend_from_slice(id.as_bytes());
            }
            Pos::SnapshotTasks(ms, id) => {
                b.push(3);
                b.extend_from_slice(&ms.to_be_bytes());
                b.extend_from_slice(id.as_bytes());
            }
        }
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes a token made for `user_id`; a malformed token or one made for another user is
    /// a field error on `since`.
    pub(crate) fn decode(raw: &str, user_id: &str) -> Result<Token, StoreError> {
        let malformed = || StoreError::invalid("since", "is not a valid sync token");
        if raw.len() > 128 {
            return Err(malformed());
        }
        let b = URL_SAFE_NO_PAD.decode(raw).map_err(|_| malformed())?;
        if b.len() < 18 || b[0] != VERSION {
            return Err(malformed());
        }
        if b[1..9] != user_hash(user_id) {
            return Err(StoreError::invalid(
                "since",
                "is a sync token of another user",
            ));
        }
        let seq = i64::from_be_bytes(b[9..17].try_into().map_err(|_| malformed())?);
        if seq < 0 {
            return Err(malformed());
        }
        let rest = &b[18..];
        let uuid =
            |s: &[u8]| -> Result<Uuid, StoreError> { Uuid::from_slice(s).map_err(|_| malformed()) };
        let pos = match (b[17], rest.len()) {
            (0, 0) => Pos::Plain,
            (1, 17) => Pos::Inside(
                EntityKind::from_code(rest[0]).ok_or_else(malformed)?,
                uuid(&rest[1..])?,
            ),
            (2, 16) => Pos::SnapshotLists(uuid(rest)?),
            (3, 24) => Pos::SnapshotTasks(
                i64::from_be_bytes(rest[..8].try_into().map_err(|_| malformed())?),
                uuid(&rest[8..])?,
            ),
            _ => return Err(malformed()),
        };
        Ok(Token { seq, pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let id = Uuid::now_v7();
        for pos in [
            Pos::Plain,
            Pos::Inside(EntityKind::Task, id),
            Pos::Inside(EntityKind::List, id),
            Pos::SnapshotLists(Uuid::nil()),
            Pos::SnapshotTasks(-5, id),
        ] {
            let t = Token { seq: 42, pos };
            let s = t.encode("alice");
            assert_eq!(Token::decode(&s, "alice").unwrap(), t);
            let e = Token::decode(&s, "bob").unwrap_err();
            assert_eq!(e.field_errors()[0].field, "since");
        }
        for bad in [
            "",
            "x",
            "!!!!",
            &"A".repeat(200),
            "AQAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(Token::decode(bad, "alice").is_err(), "{bad}");
        }
    }
}
