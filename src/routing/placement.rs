//! Placement: the order in which a route's backends are tried for one stream.
//!
//! Weighted placement is rendezvous (highest-random-weight) hashing with weights: each backend
//! scores `-weight / ln(u)` with `u` a uniform hash of (backend, stream) in (0, 1], and the
//! highest score wins. It is a pure function of the stream name and the table, so every
//! replica agrees without talking, WHIP and WHEP of one stream land on the same backend, a
//! backend wins a share of streams proportional to its weight, and adding a backend moves only
//! the streams it now wins.

use super::BackendId;

/// How a route orders its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Primary first, then fallbacks, as listed.
    Ordered(Vec<BackendId>),
    /// Split by weight (a weight of 0 drains a backend: it gets no new streams).
    Weighted(Vec<(BackendId, u32)>),
}

/// Why a backend is where it is in the candidate order.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Ordered { position: usize },
    Weighted { weight: u32, score: f64 },
    Overflow,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Ordered { position: 0 } => f.write_str("primary"),
            Reason::Ordered { position } => write!(f, "fallback #{position}"),
            Reason::Weighted { weight, score } => {
                write!(f, "weight {weight}, rendezvous score {score:.4}")
            }
            Reason::Overflow => f.write_str("overflow"),
        }
    }
}

impl Placement {
    /// Every backend of the placement, in the order they are tried for `stream`.
    pub fn order(&self, stream: &str) -> Vec<(BackendId, Reason)> {
        match self {
            Placement::Ordered(ids) => ids
                .iter()
                .enumerate()
                .map(|(position, id)| (id.clone(), Reason::Ordered { position }))
                .collect(),
            Placement::Weighted(weighted) => {
                let mut scored: Vec<(BackendId, Reason)> = weighted
                    .iter()
                    .filter(|(_, weight)| *weight > 0)
                    .map(|(id, weight)| {
                        let score = rendezvous_score(&id.0, stream, *weight);
                        (
                            id.clone(),
                            Reason::Weighted {
                                weight: *weight,
                                score,
                            },
                        )
                    })
                    .collect();
                scored.sort_by(|(a_id, a), (b_id, b)| {
                    let (Reason::Weighted { score: a, .. }, Reason::Weighted { score: b, .. }) =
                        (a, b)
                    else {
                        return std::cmp::Ordering::Equal;
                    };
                    // Ties (practically impossible) are broken by id so every replica agrees.
                    b.total_cmp(a).then_with(|| a_id.cmp(b_id))
                });
                scored
            }
        }
    }

    pub fn backends(&self) -> Vec<&BackendId> {
        match self {
            Placement::Ordered(ids) => ids.iter().collect(),
            Placement::Weighted(weighted) => weighted.iter().map(|(id, _)| id).collect(),
        }
    }
}

/// `-weight / ln(u)`, `u` in (0, 1] from a stable 64-bit hash of backend and stream.
pub fn rendezvous_score(backend: &str, stream: &str, weight: u32) -> f64 {
    let hash = stable_hash(backend, stream);
    // 53 random bits → (0, 1]; never 0, so ln is finite.
    let unit = ((hash >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let ln = unit.ln();
    if ln == 0.0 {
        return f64::INFINITY;
    }
    -f64::from(weight) / ln
}

/// FNV-1a over `backend ‖ 0xff ‖ stream`, then the SplitMix64 finaliser for avalanche.
/// Stable across processes, versions and machines (unlike std's randomly keyed hasher).
fn stable_hash(backend: &str, stream: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in backend.bytes().chain([0xff]).chain(stream.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> BackendId {
        BackendId(s.to_owned())
    }

    fn winner(placement: &Placement, stream: &str) -> String {
        placement.order(stream)[0].0 .0.clone()
    }

    #[test]
    fn weights_hold_within_two_percent_over_100k_streams() {
        let placement = Placement::Weighted(vec![(id("janus"), 90), (id("cloudflare"), 10)]);
        let mut janus = 0usize;
        for n in 0..100_000 {
            if winner(&placement, &format!("stream-{n}")) == "janus" {
                janus += 1;
            }
        }
        let share = janus as f64 / 100_000.0;
        assert!((share - 0.9).abs() < 0.02, "janus share {share}");

        let three = Placement::Weighted(vec![(id("a"), 50), (id("b"), 30), (id("c"), 20)]);
        let mut counts = std::collections::HashMap::new();
        for n in 0..100_000 {
            *counts
                .entry(winner(&three, &format!("cam/{n}")))
                .or_insert(0usize) += 1;
        }
        for (backend, expected) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
            let share = counts[backend] as f64 / 100_000.0;
            assert!((share - expected).abs() < 0.02, "{backend}: {share}");
        }
    }

    #[test]
    fn adding_a_backend_moves_only_the_streams_it_wins() {
        let before = Placement::Weighted(vec![(id("a"), 1), (id("b"), 1), (id("c"), 1)]);
        let after =
            Placement::Weighted(vec![(id("a"), 1), (id("b"), 1), (id("c"), 1), (id("d"), 1)]);
        let mut moved = 0;
        for n in 0..20_000 {
            let stream = format!("s{n}");
            let (old, new) = (winner(&before, &stream), winner(&after, &stream));
            if old != new {
                assert_eq!(
                    new, "d",
                    "{stream} moved from {old} to {new}, not to the new backend"
                );
                moved += 1;
            }
        }
        let share = moved as f64 / 20_000.0;
        assert!((share - 0.25).abs() < 0.02, "moved {share}");
    }

    #[test]
    fn weight_zero_drains_a_backend() {
        let placement = Placement::Weighted(vec![(id("a"), 1), (id("old"), 0)]);
        for n in 0..1000 {
            let order = placement.order(&format!("s{n}"));
            assert_eq!(order.len(), 1);
            assert_eq!(order[0].0, id("a"));
        }
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned: a change here would move every live stream on upgrade.
        assert_eq!(stable_hash("a", "b"), PINNED_HASH);
        let placement = Placement::Weighted(vec![(id("x"), 1), (id("y"), 1)]);
        let pinned: Vec<String> = (0..8)
            .map(|n| winner(&placement, &format!("p{n}")))
            .collect();
        assert_eq!(pinned, PINNED_WINNERS);
    }

    const PINNED_HASH: u64 = 6_137_638_104_319_202_169;
    const PINNED_WINNERS: [&str; 8] = ["x", "x", "y", "x", "y", "y", "x", "x"];

    proptest! {
        #[test]
        fn two_independently_built_tables_place_alike(
            stream in "\\PC{1,40}",
            weights in proptest::collection::vec(0u32..100, 1..6),
        ) {
            let build = || Placement::Weighted(
                weights.iter().enumerate().map(|(i, w)| (id(&format!("b{i}")), *w)).collect()
            );
            let (one, two) = (build(), build());
            prop_assert_eq!(
                one.order(&stream).into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
                two.order(&stream).into_iter().map(|(id, _)| id).collect::<Vec<_>>()
            );
        }

        #[test]
        fn order_lists_every_weighted_backend_once(
            stream in "\\PC{1,40}",
            weights in proptest::collection::vec(1u32..100, 1..6),
        ) {
            let placement = Placement::Weighted(
                weights.iter().enumerate().map(|(i, w)| (id(&format!("b{i}")), *w)).collect()
            );
            let mut ids: Vec<BackendId> = placement.order(&stream).into_iter().map(|(id, _)| id).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), weights.len());
        }
    }
}
