//! The opaque keyset cursor: the last row's sort key and id, bound to a sort and order.
//!
//! Encoded as base64url (no padding) of a small JSON object. It is not a secret: every query
//! that uses it is scoped to the caller's user, so a forged cursor can only move within the
//! caller's own rows.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::query::{Order, SortKey};

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in milliseconds.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

/// Longest cursor accepted, in bytes (a title key is at most 200 code points of 4 bytes).
const MAX_LEN: usize = 2048;

/// The sort-key value of the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum KeyValue {
    /// A timestamp in milliseconds, or a priority rank; `None` for a task without due date.
    Int(Option<i64>),
    /// A lower-cased title.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    #[serde(rename = "s")]
    pub sort: SortKey,
    #[serde(rename = "o")]
    pub order: Order,
    #[serde(rename = "k")]
    pub key: KeyValue,
    #[serde(rename = "i")]
    pub id: Uuid,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        // Serialising plain data to JSON cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a cursor and checks it was made for this sort and order.
    pub(crate) fn decode(raw: &str, sort: SortKey, order: Order) -> Result<Self, StoreError> {
        let bad = |m: &str| StoreError::invalid("cursor", m);
        if raw.len() > MAX_LEN {
            return Err(bad("is not a cursor returned by this API"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.as_bytes())
            .map_err(|_| bad("is not a cursor returned by this API"))?;
        let c: Cursor = serde_json::from_slice(&bytes)
            .map_err(|_| bad("is not a cursor returned by this API"))?;
        if c.sort != sort || c.order != order {
            return Err(bad(&format!(
                "was made for sort={} order={}, not sort={} order={}",
                c.sort.as_str(),
                c.order.as_str(),
                sort.as_str(),
                order.as_str()
            )));
        }
        let shape_ok = match (&c.key, sort) {
            (KeyValue::Text(t), SortKey::Title) => !t.contains('\0'),
            (KeyValue::Text(t), SortKey::Position) => crate::position::is_valid(t),
            (KeyValue::Int(Some(r)), SortKey::Priority) => (0..=2).contains(r),
            (KeyValue::Int(None), SortKey::DueAt) => true,
            (KeyValue::Int(Some(ms)), SortKey::DueAt | SortKey::CreatedAt | SortKey::UpdatedAt) => {
                // Every stored time lies in years 0000-9999; a key outside would be a forged
                // cursor that PostgreSQL cannot even compare against (timestamp out of range).
                (MIN_MS..=MAX_MS).contains(ms)
            }
            _ => false,
        };
        if !shape_ok {
            return Err(bad("is not a cursor returned by this API"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        Cursor {
            sort: SortKey::Title,
            order: Order::Asc,
            key: KeyValue::Text("buy milk".into()),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(
            Cursor::decode(&c.encode(), SortKey::Title, Order::Asc).ok(),
            Some(c)
        );
        let due = Cursor {
            sort: SortKey::DueAt,
            order: Order::Desc,
            key: KeyValue::Int(None),
            id: Uuid::nil(),
        };
        assert_eq!(
            Cursor::decode(&due.encode(), SortKey::DueAt, Order::Desc).ok(),
            Some(due)
        );
    }

    #[test]
    fn rejects_other_sort_order_and_garbage() {
        let enc = sample().encode();
        assert!(Cursor::decode(&enc, SortKey::Title, Order::Desc).is_err());
        assert!(Cursor::decode(&enc, SortKey::CreatedAt, Order::Asc).is_err());
        for bad in ["", "!!!", "eyJ9", &"A".repeat(5000), "bnVsbA"] {
            let e = Cursor::decode(bad, SortKey::Title, Order::Asc).unwrap_err();
            assert_eq!(e.field_errors()[0].field, "cursor");
        }
        // Right envelope, wrong key type for the sort.
        let wrong = Cursor {
            key: KeyValue::Int(Some(5)),
            ..sample()
        };
        assert!(Cursor::decode(&wrong.encode(), SortKey::Title, Order::Asc).is_err());
        let prio = Cursor {
            sort: SortKey::Priority,
            key: KeyValue::Int(Some(7)),
            ..sample()
        };
        assert!(Cursor::decode(&prio.encode(), SortKey::Priority, Order::Asc).is_err());
        // Times outside what the store ever writes (PostgreSQL rejects them outright).
        for (ms, ok) in [
            (MIN_MS, true),
            (MAX_MS, true),
            (MIN_MS - 1, false),
            (MAX_MS + 1, false),
            (-210_866_803_200_001, false),
        ] {
            for sort in [SortKey::CreatedAt, SortKey::UpdatedAt, SortKey::DueAt] {
                let c = Cursor {
                    sort,
                    order: Order::Desc,
                    key: KeyValue::Int(Some(ms)),
                    id: Uuid::nil(),
                };
                assert_eq!(
                    Cursor::decode(&c.encode(), sort, Order::Desc).is_ok(),
                    ok,
                    "{sort:?} {ms}"
                );
            }
        }
    }
}
