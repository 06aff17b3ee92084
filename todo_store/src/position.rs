//! Ordering keys for manual order (fractional indexing).
//!
//! A key is an ASCII string that sorts byte-wise: a variable-length integer part (a head
//! character giving its length, then base-62 digits) and an optional fractional part (base-62
//! digits, never ending in `0`). Appending or prepending steps the integer, so a list built by
//! appending keeps keys of a few bytes (`a0`, `a1`, … `az`, `b00`, …); inserting between two
//! keys takes their midpoint, which grows by about one byte per six inserts at the same spot.
//! Digits are `0-9A-Za-z`, whose ASCII order is their value order, so byte-wise comparison
//! (`COLLATE "C"` on PostgreSQL, `BINARY` on SQLite) is key order.
//!
//! Written here rather than taken from the `fractional_index` crate: that crate's keys are
//! bytes (hex-encoded for a text column, doubling their length), and its appends grow the key
//! linearly, where the integer part here grows logarithmically. This is the scheme of David
//! Greenspan's "Implementing Fractional Indexing" (as in rocicorp's `fractional-indexing`).
//!
//! Keys are capped below [`KEY_MAX`] bytes: [`between`] returns `None` when the key would reach
//! it (or when its bounds are not strictly ordered keys), and the caller re-spaces the sibling
//! group with [`spaced`].

/// Every key is shorter than this many bytes.
pub const KEY_MAX: usize = 64;

const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn digit(b: u8) -> Option<usize> {
    match b {
        b'0'..=b'9' => Some(usize::from(b - b'0')),
        b'A'..=b'Z' => Some(usize::from(b - b'A') + 10),
        b'a'..=b'z' => Some(usize::from(b - b'a') + 36),
        _ => None,
    }
}

/// Length of the integer part (head included) announced by its head character.
fn integer_len(head: u8) -> Option<usize> {
    match head {
        b'a'..=b'z' => Some(usize::from(head - b'a') + 2),
        b'A'..=b'Z' => Some(usize::from(b'Z' - head) + 2),
        _ => None,
    }
}

/// Splits a valid key into its integer and fractional parts.
fn split(key: &str) -> Option<(&str, &str)> {
    let b = key.as_bytes();
    let n = integer_len(*b.first()?)?;
    if b.len() < n || !b.iter().skip(1).all(|&c| digit(c).is_some()) {
        return None;
    }
    let (i, f) = key.split_at(n);
    // The smallest integer has no key below it; a fraction never ends in 0.
    if i.as_bytes() == smallest_integer().as_slice() || f.ends_with('0') {
        return None;
    }
    Some((i, f))
}

fn smallest_integer() -> Vec<u8> {
    let mut v = vec![b'A'];
    v.extend(std::iter::repeat_n(b'0', 26));
    v
}

/// Whether `key` is a well-formed key.
pub fn is_valid(key: &str) -> bool {
    key.len() < KEY_MAX && split(key).is_some()
}

/// A key between fractions `a` and `b` (`b` `None`: no upper bound); `a < b`.
fn midpoint(a: &[u8], b: Option<&[u8]>) -> Option<Vec<u8>> {
    if let Some(b) = b {
        let mut n = 0;
        while n < b.len() && a.get(n).copied().unwrap_or(b'0') == b[n] {
            n += 1;
        }
        if n > 0 {
            let mut out = b[..n].to_vec();
            out.extend(midpoint(a.get(n..).unwrap_or(&[]), Some(&b[n..]))?);
            return Some(out);
        }
    }
    let da = match a.first() {
        Some(&c) => digit(c)?,
        None => 0,
    };
    let db = match b {
        Some(b) => digit(*b.first()?)?,
        None => DIGITS.len(),
    };
    if db <= da {
        return None;
    }
    if db - da > 1 {
        return Some(vec![DIGITS[(da + db).div_ceil(2)]]);
    }
    match b {
        Some(b) if b.len() > 1 => Some(vec![b[0]]),
        _ => {
            let mut out = vec![DIGITS[da]];
            out.extend(midpoint(a.get(1..).unwrap_or(&[]), None)?);
            Some(out)
        }
    }
}

fn increment(i: &str) -> Option<Vec<u8>> {
    let b = i.as_bytes();
    let head = b[0];
    let mut digs = b[1..].to_vec();
    let mut carry = true;
    for d in digs.iter_mut().rev() {
        let v = digit(*d)? + 1;
        if v == DIGITS.len() {
            *d = b'0';
        } else {
            *d = DIGITS[v];
            carry = false;
            break;
        }
    }
    if !carry {
        let mut out = vec![head];
        out.extend(digs);
        return Some(out);
    }
    match head {
        b'Z' => Some(b"a0".to_vec()),
        b'z' => None,
        _ => {
            let h = head + 1;
            if h > b'a' {
                digs.push(b'0');
            } else {
                digs.pop();
            }
            let mut out = vec![h];
            out.extend(digs);
            Some(out)
        }
    }
}

fn decrement(i: &str) -> Option<Vec<u8>> {
    let b = i.as_bytes();
    let head = b[0];
    let mut digs = b[1..].to_vec();
    let mut borrow = true;
    for d in digs.iter_mut().rev() {
        let v = digit(*d)?;
        if v == 0 {
            *d = b'z';
        } else {
            *d = DIGITS[v - 1];
            borrow = false;
            break;
        }
    }
    if !borrow {
        let mut out = vec![head];
        out.extend(digs);
        return Some(out);
    }
    match head {
        b'a' => Some(b"Zz".to_vec()),
        b'A' => None,
        _ => {
            let h = head - 1;
            if h < b'Z' {
                digs.push(b'z');
            } else {
                digs.pop();
            }
            let mut out = vec![h];
            out.extend(digs);
            Some(out)
        }
    }
}

fn text(v: Vec<u8>) -> Option<String> {
    String::from_utf8(v).ok()
}

fn between_unbounded(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (None, None) => Some("a0".to_owned()),
        (None, Some(b)) => {
            let (ib, fb) = split(b)?;
            if ib.as_bytes() == smallest_integer().as_slice() {
                let mut out = ib.as_bytes().to_vec();
                out.extend(midpoint(b"", Some(fb.as_bytes()))?);
                return text(out);
            }
            if ib.len() < b.len() {
                return Some(ib.to_owned());
            }
            text(decrement(ib)?)
        }
        (Some(a), None) => {
            let (ia, fa) = split(a)?;
            match increment(ia) {
                Some(i) => text(i),
                None => {
                    let mut out = ia.as_bytes().to_vec();
                    out.extend(midpoint(fa.as_bytes(), None)?);
                    text(out)
                }
            }
        }
        (Some(a), Some(b)) => {
            if a >= b {
                return None;
            }
            let (ia, fa) = split(a)?;
            let (ib, fb) = split(b)?;
            if ia == ib {
                let mut out = ia.as_bytes().to_vec();
                out.extend(midpoint(fa.as_bytes(), Some(fb.as_bytes()))?);
                return text(out);
            }
            let i = text(increment(ia)?)?;
            if i.as_str() < b {
                return Some(i);
            }
            let mut out = ia.as_bytes().to_vec();
            out.extend(midpoint(fa.as_bytes(), None)?);
            text(out)
        }
    }
}

/// A key strictly between `a` and `b` (`None`: no bound on that side), shorter than
/// [`KEY_MAX`]. `None` when there is no such key: the bounds are not valid, strictly ordered
/// keys, or the key would be too long; the caller then re-spaces the siblings.
pub fn between(a: Option<&str>, b: Option<&str>) -> Option<String> {
    if a.is_some_and(|a| !is_valid(a)) || b.is_some_and(|b| !is_valid(b)) {
        return None;
    }
    between_unbounded(a, b).filter(|k| k.len() < KEY_MAX)
}

/// `n` short, evenly spaced keys in increasing order: `a0`, `a1`, … (what a sibling group is
/// re-spaced to).
pub fn spaced(n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    for _ in 0..n {
        let next = between_unbounded(out.last().map(String::as_str), None);
        // Increments stay short for any realistic count (62^25 keys before 'z' runs out).
        out.push(next.unwrap_or_else(|| "a0".to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn appends_and_prepends_stay_short() {
        let mut last = between(None, None).unwrap();
        assert_eq!(last, "a0");
        for _ in 0..100_000 {
            let next = between(Some(&last), None).unwrap();
            assert!(next > last);
            last = next;
        }
        assert!(last.len() <= 4, "{last}");
        let mut first = "a0".to_owned();
        for _ in 0..100_000 {
            let next = between(None, Some(&first)).unwrap();
            assert!(next < first, "{next} {first}");
            first = next;
        }
        assert!(first.len() <= 4, "{first}");
        assert_eq!(spaced(3), ["a0", "a1", "a2"]);
        assert_eq!(spaced(64)[62], "b00");
    }

    #[test]
    fn repeated_inserts_at_one_spot_hit_the_cap() {
        let (a, mut b) = ("a0".to_owned(), "a1".to_owned());
        let mut n = 0;
        while let Some(k) = between(Some(&a), Some(&b)) {
            assert!(a < k && k < b);
            b = k;
            n += 1;
        }
        assert!(n > 100, "{n} inserts before the cap");
        assert!(b.len() < KEY_MAX);
        assert_eq!(between(Some("a1"), Some("a1")), None);
        assert_eq!(between(Some("a2"), Some("a1")), None);
        assert_eq!(between(Some("bad key"), None), None);
        assert_eq!(between(Some("a10"), None), None, "trailing zero");
    }

    proptest! {
        #[test]
        fn between_is_between(ops in prop::collection::vec((any::<u16>(), any::<bool>()), 1..300)) {
            let mut keys: Vec<String> = vec![];
            for (at, _) in ops {
                let i = if keys.is_empty() { 0 } else { usize::from(at) % (keys.len() + 1) };
                let a = if i == 0 { None } else { Some(keys[i - 1].as_str()) };
                let b = keys.get(i).map(String::as_str);
                match between(a, b) {
                    Some(k) => {
                        prop_assert!(is_valid(&k));
                        prop_assert!(a.is_none_or(|a| a < k.as_str()));
                        prop_assert!(b.is_none_or(|b| k.as_str() < b));
                        keys.insert(i, k);
                    }
                    None => keys = spaced(keys.len()),
                }
            }
        }
    }
}
