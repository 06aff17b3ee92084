//! Search signatures: a 128-bit summary of the three-byte sequences (trigrams) in a task's
//! lower-cased title and description, stored beside the text (`search_bits_lo`,
//! `search_bits_hi`) and in the covering list index.
//!
//! A search for `q` is a substring test (`LIKE '%q%'`). Every trigram of a substring is a
//! trigram of the text, so a task can only match when its signature has every bit of the
//! needle's signature set. Listings test that first, with two integer operations on the index
//! entry, and run `LIKE` only on the tasks that pass: on a user with 10,000 tasks that skips
//! most of the pattern matching a search costs. The test never rejects a real match; it lets
//! through some tasks that do not match (more the longer their text), which `LIKE` then rejects.
//!
//! Needles shorter than three bytes have no trigram and are not pre-tested. `-1` in both
//! columns (every bit set) is the column default and matches everything: rows written before the
//! columns existed, or by tools that do not compute signatures, stay correct until
//! [`crate::Store::migrate`] fills them in.

/// Bits of the trigrams of `texts`, as the two signed 64-bit column values `[lo, hi]`.
fn bits<'a>(texts: impl IntoIterator<Item = &'a str>) -> [i64; 2] {
    let mut sig: u128 = 0;
    for text in texts {
        for w in text.as_bytes().windows(3) {
            let key = u64::from(w[0]) | u64::from(w[1]) << 8 | u64::from(w[2]) << 16;
            // Fibonacci hashing: the top 7 bits of the product pick one of 128 bits.
            let bit = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57;
            sig |= 1u128 << bit;
        }
    }
    // Two's-complement reinterpretation of each half: the columns are signed BIGINTs.
    [sig as u64 as i64, (sig >> 64) as u64 as i64]
}

/// The signature of a task, `[search_bits_lo, search_bits_hi]`, from its lower-cased title and
/// description (the `title_lc` and `description_lc` columns, `str::to_lowercase` of the text).
///
/// The store computes it on every write; this is for tools that write task rows directly (bulk
/// loaders, the benchmark's seeder). A row may also carry `[-1, -1]`, which matches every search.
pub fn search_signature(title_lc: &str, description_lc: Option<&str>) -> [i64; 2] {
    bits(std::iter::once(title_lc).chain(description_lc))
}

/// The bits a task's signature must have to possibly contain `needle_lc` (lower-cased); `None`
/// when the needle is shorter than three bytes and so says nothing.
pub(crate) fn needle_signature(needle_lc: &str) -> Option<[i64; 2]> {
    (needle_lc.len() >= 3).then(|| bits([needle_lc]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn covers(sig: [i64; 2], mask: [i64; 2]) -> bool {
        sig[0] & mask[0] == mask[0] && sig[1] & mask[1] == mask[1]
    }

    #[test]
    fn short_needles_have_no_signature() {
        assert_eq!(needle_signature(""), None);
        assert_eq!(needle_signature("ab"), None);
        assert!(needle_signature("abc").is_some());
        // Two bytes of UTF-8 are one character but still too short.
        assert_eq!(needle_signature("é"), None);
    }

    #[test]
    fn different_words_mostly_have_different_signatures() {
        let words = [
            "report", "call", "invoice", "review", "book", "notes", "bill", "team",
        ];
        let sigs: Vec<_> = words.iter().map(|w| bits([*w])).collect();
        for (i, a) in sigs.iter().enumerate() {
            assert_ne!(*a, [0, 0], "{}", words[i]);
            for b in &sigs[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // A text without the word's trigrams is rejected by the pre-test.
        let task = search_signature("water the plants", Some("before friday"));
        assert!(!covers(task, needle_signature("invoice").unwrap()));
        assert!(covers(task, needle_signature("plant").unwrap()));
        assert!(covers(task, needle_signature("e fri").unwrap()));
    }

    proptest! {
        /// Whatever the text, every substring of its title or description passes the pre-test.
        #[test]
        fn every_substring_passes(
            title in "\\PC{0,40}",
            description in proptest::option::of("\\PC{0,80}"),
            from in 0usize..120,
            len in 0usize..30,
            in_title in any::<bool>(),
        ) {
            let title = title.to_lowercase();
            let description = description.map(|d| d.to_lowercase());
            let sig = search_signature(&title, description.as_deref());
            let text = if in_title { title.as_str() } else { description.as_deref().unwrap_or("") };
            let chars: Vec<char> = text.chars().collect();
            let from = from.min(chars.len());
            let to = (from + len).min(chars.len());
            let needle: String = chars[from..to].iter().collect();
            if let Some(mask) = needle_signature(&needle) {
                prop_assert!(covers(sig, mask), "{needle:?} in {text:?}");
            }
        }
    }
}
