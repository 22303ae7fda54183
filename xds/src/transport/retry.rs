//! The NACK-retry bookkeeping the SotW and delta server streams share: how responses are
//! numbered (the nonce), when a NACK owes a resend at once, and the order of a new view's
//! responses (refused types after the changes they may depend on).

/// Numbers a stream's responses (the number is the nonce) and remembers the last one that
/// carried a change of the view or of a subscription; a resend of what a NACK refused is not
/// one, so resends never owe each other.
#[derive(Debug, Default)]
pub(crate) struct Responses {
    sent: u64,
    last_change: u64,
}

impl Responses {
    /// Numbers the next response (from 1); `change` says it answers a change (of the view or
    /// of a subscription), not only a refusal.
    pub(crate) fn next(&mut self, change: bool) -> u64 {
        self.sent += 1;
        if change {
            self.last_change = self.sent;
        }
        self.sent
    }

    /// True when a response that carried a change followed response `seq`: a NACK of `seq`
    /// refused before the client saw that change, so the retry is owed at once.
    pub(crate) fn changed_since(&self, seq: u64) -> bool {
        self.last_change > seq
    }
}

/// The response a nonce names: only the decimal form [`Responses::next`]'s numbers are sent in
/// (no sign, no leading zero), so a nonce the stream never sent names none.
pub(crate) fn seq_of(nonce: &str) -> Option<u64> {
    if !nonce.starts_with(|c: char| c.is_ascii_digit() && c != '0') {
        return None;
    }
    nonce.parse().ok()
}

/// The responses a new view owes, in order, from each type's `(type, changed, refused)`: none
/// when no type changed (a refused version is not sent again as it is); otherwise the changed
/// types, then the refused ones, changed before unchanged (a refusal may have depended on what
/// is applied before it). Returns `(type, changed)`; a stable sort keeps the given order
/// otherwise.
pub(crate) fn push_order<T>(types: impl IntoIterator<Item = (T, bool, bool)>) -> Vec<(T, bool)> {
    let mut owed: Vec<(T, bool, bool)> = types
        .into_iter()
        .filter(|(_, changed, refused)| *changed || *refused)
        .collect();
    if !owed.iter().any(|(_, changed, _)| *changed) {
        return Vec::new();
    }
    owed.sort_by_key(|(_, changed, refused)| (*refused, !*changed));
    owed.into_iter()
        .map(|(t, changed, _)| (t, changed))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nonces_a_stream_sends_name_a_response() {
        assert_eq!(seq_of("1"), Some(1));
        assert_eq!(seq_of("42"), Some(42));
        for foreign in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            "1a",
            " 1",
            "99999999999999999999",
        ] {
            assert_eq!(seq_of(foreign), None, "{foreign:?}");
        }
        let mut r = Responses::default();
        let n = r.next(true);
        assert_eq!(seq_of(&n.to_string()), Some(n));
    }

    #[test]
    fn a_resend_is_not_a_change() {
        let mut r = Responses::default();
        let refused = r.next(true);
        assert!(!r.changed_since(refused));
        r.next(false);
        assert!(!r.changed_since(refused), "a resend owes nothing");
        r.next(true);
        assert!(r.changed_since(refused));
    }

    #[test]
    fn refused_types_go_after_the_changes_and_only_with_one() {
        assert!(push_order([("a", false, true), ("b", false, false)]).is_empty());
        let order = push_order([
            ("refused", false, true),
            ("refused-changed", true, true),
            ("quiet", false, false),
            ("changed", true, false),
        ]);
        assert_eq!(
            order,
            [
                ("changed", true),
                ("refused-changed", true),
                ("refused", false)
            ]
        );
    }
}
