//! What one peer may cost this node: message budgets and the member-round table.
//!
//! Peers are bounded like plugins. A peer can sign as many well-formed messages as it
//! likes, so the gate's checks alone do not bound the work it causes: each round
//! announcement makes every node assess the question with its plugins, each request is a
//! signature check and a task. So, before the gate parses or verifies anything
//! ([`Gate::admit`](super::wire::Gate::admit)), every peer spends from token buckets
//! ([`PeerBudgets`]): gossip per author and per connection, requests per connection.
//! Time is an argument (unix milliseconds), so all of this is tested without sleeping.
//!
//! Every structure here is bounded whatever peers send: a budget table forgets full
//! buckets first (a full bucket is what a new peer gets anyway) and then the longest idle;
//! the [`RoundTable`] of rounds this node takes part in as a member holds at most
//! [`RoundTable::capacity`] rounds, at most [`RoundTable::per_entry`] of one entry node,
//! each until its deadline.

use std::collections::HashMap;
use std::hash::Hash;

/// A sustained rate with a burst: `burst` messages at once, then one per `1 / per_s`
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_s: f64,
}

impl Rate {
    pub const fn per_minute(n: u32, burst: u32) -> Rate {
        Rate {
            burst,
            per_s: n as f64 / 60.0,
        }
    }

    pub const fn per_second(n: u32, burst: u32) -> Rate {
        Rate {
            burst,
            per_s: n as f64,
        }
    }

    /// Most messages this rate lets through in `ms` milliseconds from a full bucket.
    pub fn most_in(&self, ms: u64) -> u64 {
        u64::from(self.burst) + (self.per_s * ms as f64 / 1000.0).ceil() as u64
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.per_s >= 1.0 {
            write!(f, "{} a second", self.per_s)?;
        } else {
            write!(f, "{} a minute", self.per_s * 60.0)?;
        }
        write!(f, ", bursts of {}", self.burst)
    }
}

/// A token bucket. The rate lives with whoever owns the bucket (one per table), so a
/// bucket is two numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    /// When `tokens` was last brought up to date (unix ms).
    at: u64,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: u64) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: u64) {
        // A clock that steps back refills nothing (and never un-spends).
        if now > self.at {
            let gained = (now - self.at) as f64 / 1000.0 * rate.per_s;
            self.tokens = (self.tokens + gained).min(f64::from(rate.burst));
            self.at = now;
        }
    }

    /// Spend one token if there is one.
    pub fn take(&mut self, rate: Rate, now: u64) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Spend one token, going into debt if there is none, and say how long to wait (ms)
    /// before the spending is within the rate. For this node's own announcements: it
    /// paces itself rather than be refused by its peers.
    pub fn reserve(&mut self, rate: Rate, now: u64) -> u64 {
        self.refill(rate, now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || rate.per_s <= 0.0 {
            0
        } else {
            (-self.tokens / rate.per_s * 1000.0).ceil() as u64
        }
    }

    /// Full at `now`: indistinguishable from a bucket made now.
    pub fn is_full(&self, rate: Rate, now: u64) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= f64::from(rate.burst)
    }

    pub fn last_used(&self) -> u64 {
        self.at
    }
}

/// One bucket per peer, for at most `max_peers` peers.
#[derive(Debug)]
pub struct PeerLimiter<K> {
    rate: Rate,
    buckets: HashMap<K, TokenBucket>,
    max_peers: usize,
}

impl<K: Hash + Eq + Clone> PeerLimiter<K> {
    pub fn new(rate: Rate, max_peers: usize) -> Self {
        PeerLimiter {
            rate,
            buckets: HashMap::new(),
            max_peers: max_peers.max(1),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Spend one of `peer`'s tokens; false when it has none left.
    pub fn allow(&mut self, peer: &K, now: u64) -> bool {
        if let Some(b) = self.buckets.get_mut(peer) {
            return b.take(self.rate, now);
        }
        if self.buckets.len() >= self.max_peers {
            self.make_room(now);
        }
        let mut b = TokenBucket::full(self.rate, now);
        let ok = b.take(self.rate, now);
        self.buckets.insert(peer.clone(), b);
        ok
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forget every full bucket (nothing changes: a forgotten peer comes back to a full
    /// one); if the table is still more than half full, forget the idlest half as well
    /// (those peers get a fresh burst: the price of a bound, paid only when more than
    /// `max_peers` peers are active within one refill). Amortised O(1) per new peer.
    fn make_room(&mut self, now: u64) {
        let rate = self.rate;
        self.buckets.retain(|_, b| !b.is_full(rate, now));
        if self.buckets.len() > self.max_peers / 2 {
            let mut used: Vec<u64> = self.buckets.values().map(|b| b.last_used()).collect();
            let keep = self.max_peers / 2;
            let cut = used.len() - keep;
            let (_, &mut nth, _) = used.select_nth_unstable(cut.saturating_sub(1));
            // Strictly older than the cut-th oldest, then ties until enough are gone.
            let mut excess = self.buckets.len() - keep;
            self.buckets.retain(|_, b| {
                if excess > 0 && b.last_used() <= nth {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

/// The budgets a node grants each peer. The defaults are far above what an honest node
/// sends (see SECURITY.md, "The network boundary"); simulations that run rounds back to
/// back use [`Limits::simulation`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Gossip (round announcements) per author: an honest entry node paces its own
    /// announcements to this, so it is never refused.
    pub gossip: Rate,
    /// Gossip per connection, whoever the author: a backstop against one peer
    /// publishing under many throwaway author keys. Relays forward only what they
    /// accepted, and each delivers first only a share of the topic, so honest ones stay
    /// far below it.
    pub relay: Rate,
    /// Requests per peer (joins, selects, judge tasks). An honest entry node sends a
    /// member two per round, a member sends an entry one.
    pub requests: Rate,
    /// Most peers whose budgets are tracked at once, per kind.
    pub peers: usize,
    /// Most nonces the replay cache remembers, in all and per signer (a signer's
    /// oldest are forgotten first; only that signer could replay them, and its replays
    /// would be spending the same budgets as new messages).
    pub nonces: usize,
    pub nonces_per_signer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            gossip: Rate::per_minute(30, 10),
            relay: Rate::per_minute(300, 100),
            requests: Rate::per_second(10, 40),
            peers: 10_000,
            nonces: 100_000,
            nonces_per_signer: 4_096,
        }
    }
}

impl Limits {
    /// For `apiary sim` and benchmarks: instant experts run rounds back to back, far
    /// faster than real plugins could, and must not be paced. Still bounded.
    pub fn simulation() -> Limits {
        Limits {
            gossip: Rate::per_second(1_000, 1_000),
            relay: Rate::per_second(10_000, 10_000),
            requests: Rate::per_second(10_000, 10_000),
            ..Limits::default()
        }
    }
}

/// Which budget a message spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Gossip, by its author and by the connection it came over.
    Gossip,
    /// A request (responses answer this node's own requests and are not budgeted).
    Request,
}

/// The per-peer budgets of one node.
#[derive(Debug)]
pub struct PeerBudgets<K> {
    gossip: PeerLimiter<K>,
    relay: PeerLimiter<K>,
    requests: PeerLimiter<K>,
}

impl<K: Hash + Eq + Clone> PeerBudgets<K> {
    pub fn new(l: &Limits) -> Self {
        PeerBudgets {
            gossip: PeerLimiter::new(l.gossip, l.peers),
            relay: PeerLimiter::new(l.relay, l.peers),
            requests: PeerLimiter::new(l.requests, l.peers),
        }
    }

    /// Spend from the budgets a message from `author` over `connection` needs; on
    /// refusal, which budget ran out and its rate.
    pub fn admit(
        &mut self,
        channel: Channel,
        author: &K,
        connection: &K,
        now: u64,
    ) -> Result<(), (&'static str, Rate)> {
        match channel {
            Channel::Gossip => {
                if !self.gossip.allow(author, now) {
                    return Err(("round announcements from one node", self.gossip.rate()));
                }
                if !self.relay.allow(connection, now) {
                    return Err(("gossip over one connection", self.relay.rate()));
                }
                Ok(())
            }
            Channel::Request => {
                if self.requests.allow(connection, now) {
                    Ok(())
                } else {
                    Err(("requests from one peer", self.requests.rate()))
                }
            }
        }
    }

    /// Peers tracked, all budgets together.
    pub fn tracked(&self) -> usize {
        self.gossip.len() + self.relay.len() + self.requests.len()
    }
}

/// Why a round cannot be taken on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    /// This node takes part in as many rounds as it will at once.
    Node(usize),
    /// This entry node already has as many of this node's slots as one entry may hold.
    Entry(usize),
    /// This node already has the round.
    Duplicate,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Node(n) => write!(f, "busy: already in {n} rounds"),
            Full::Entry(n) => write!(f, "busy: already in {n} rounds of this entry node"),
            Full::Duplicate => write!(f, "already joined"),
        }
    }
}

/// Sizes of a [`RoundTable`], now and at most so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    pub open: usize,
    pub peak_open: usize,
    /// Most rounds of one entry node held at once.
    pub peak_per_entry: usize,
    /// Rounds taken on.
    pub started: u64,
    /// Rounds declined because the table was full.
    pub declined: u64,
}

/// Rounds this node is a member of, keyed by (entry node, round id): another node
/// announcing the same round id cannot take a round over. Bounded in all and per entry
/// node; an entry past its deadline is gone even if nobody removed it.
#[derive(Debug)]
pub struct RoundTable<V> {
    rounds: HashMap<(String, String), (u64, V)>,
    capacity: usize,
    per_entry: usize,
    stats: TableStats,
}

impl<V: Clone> RoundTable<V> {
    pub fn new(capacity: usize, per_entry: usize) -> Self {
        RoundTable {
            rounds: HashMap::new(),
            capacity: capacity.max(1),
            per_entry: per_entry.clamp(1, capacity.max(1)),
            stats: TableStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn per_entry(&self) -> usize {
        self.per_entry
    }

    /// Drop the rounds past their deadline.
    pub fn expire(&mut self, now: u64) {
        self.rounds.retain(|_, (until, _)| *until > now);
    }

    /// Take on `round` of `entry` until `until` (unix ms), if there is room.
    pub fn insert(
        &mut self,
        entry: &str,
        round: &str,
        until: u64,
        value: V,
        now: u64,
    ) -> Result<(), Full> {
        self.expire(now);
        let key = (entry.to_string(), round.to_string());
        if self.rounds.contains_key(&key) {
            return Err(Full::Duplicate);
        }
        let of_entry = self.rounds.keys().filter(|(e, _)| e == entry).count();
        let full = if self.rounds.len() >= self.capacity {
            Some(Full::Node(self.rounds.len()))
        } else if of_entry >= self.per_entry {
            Some(Full::Entry(of_entry))
        } else {
            None
        };
        if let Some(full) = full {
            self.stats.declined += 1;
            return Err(full);
        }
        self.rounds.insert(key, (until, value));
        self.stats.started += 1;
        self.stats.peak_open = self.stats.peak_open.max(self.rounds.len());
        self.stats.peak_per_entry = self.stats.peak_per_entry.max(of_entry + 1);
        Ok(())
    }

    pub fn get(&self, entry: &str, round: &str, now: u64) -> Option<V> {
        self.rounds
            .get(&(entry.to_string(), round.to_string()))
            .filter(|(until, _)| *until > now)
            .map(|(_, v)| v.clone())
    }

    /// Rounds of `round` id held for any entry node (to tell "not yours" from "unknown").
    pub fn has_round(&self, round: &str, now: u64) -> bool {
        self.rounds
            .iter()
            .any(|((_, r), (until, _))| r == round && *until > now)
    }

    /// Remove the round if `keep` says so of its value (so a timer armed for one
    /// instance of a key never removes a later one).
    /// Remove the round if `which` says so; whether it was removed.
    pub fn remove_if(&mut self, entry: &str, round: &str, which: impl Fn(&V) -> bool) -> bool {
        let key = (entry.to_string(), round.to_string());
        let hit = self.rounds.get(&key).is_some_and(|(_, v)| which(v));
        if hit {
            self.rounds.remove(&key);
        }
        hit
    }

    /// Drop every round of `entry` for which `keep` is false; how many were dropped.
    pub fn release(&mut self, entry: &str, keep: impl Fn(&str) -> bool) -> usize {
        let before = self.rounds.len();
        self.rounds
            .retain(|(e, round), _| e != entry || keep(round));
        before - self.rounds.len()
    }

    /// Keep the round until `until` at least (its entry node asked something of it).
    pub fn extend(&mut self, entry: &str, round: &str, until: u64) {
        if let Some((u, _)) = self.rounds.get_mut(&(entry.to_string(), round.to_string())) {
            *u = (*u).max(until);
        }
    }

    /// Rounds of `entry` held now.
    pub fn of_entry(&self, entry: &str, now: u64) -> usize {
        self.rounds
            .iter()
            .filter(|((e, _), (until, _))| e == entry && *until > now)
            .count()
    }

    pub fn stats(&self, now: u64) -> TableStats {
        TableStats {
            open: self.rounds.values().filter(|(u, _)| *u > now).count(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_with_injected_time() {
        let rate = Rate::per_minute(30, 10);
        let t0 = 1_000_000;
        let mut b = TokenBucket::full(rate, t0);
        for i in 0..10 {
            assert!(b.take(rate, t0), "token {i} of the burst");
        }
        assert!(!b.take(rate, t0), "the burst is spent");
        // 30 a minute: one token every 2 s.
        assert!(!b.take(rate, t0 + 1_999));
        assert!(b.take(rate, t0 + 2_000));
        assert!(!b.take(rate, t0 + 2_000));
        // A minute of silence refills 30 tokens, capped at the burst.
        let t1 = t0 + 62_000;
        assert!(b.is_full(rate, t1));
        let took = (0..100).filter(|_| b.take(rate, t1)).count();
        assert_eq!(took, 10);
        // A clock stepping back refills nothing.
        assert!(!b.take(rate, t0));
        // Sustained: over 10 minutes of asking every 100 ms, about burst + rate × time.
        let mut b = TokenBucket::full(rate, t0);
        let took = (0..6_000).filter(|i| b.take(rate, t0 + i * 100)).count() as u64;
        assert!(took <= rate.most_in(600_000), "{took}");
        assert!(took >= rate.most_in(600_000) - 1, "{took}");
    }

    #[test]
    fn reserving_paces_instead_of_refusing() {
        let rate = Rate::per_minute(30, 2);
        let mut b = TokenBucket::full(rate, 0);
        assert_eq!(b.reserve(rate, 0), 0);
        assert_eq!(b.reserve(rate, 0), 0);
        assert_eq!(b.reserve(rate, 0), 2_000);
        assert_eq!(b.reserve(rate, 0), 4_000);
        // Time passing pays the debt.
        assert_eq!(b.reserve(rate, 10_000), 0);
    }

    #[test]
    fn budgets_are_per_peer_and_the_table_of_peers_stays_bounded() {
        let rate = Rate::per_second(10, 5);
        let mut l: PeerLimiter<u64> = PeerLimiter::new(rate, 1_000);
        let took = (0..100).filter(|_| l.allow(&1, 0)).count();
        assert_eq!(took, 5);
        assert!(l.allow(&2, 0), "another peer has its own budget");
        // A million peers, each sending once a millisecond apart: never more than the cap.
        let mut peak = 0;
        for p in 0..1_000_000u64 {
            assert!(l.allow(&(p + 10), p / 100));
            peak = peak.max(l.len());
        }
        assert!(peak <= 1_000, "{peak}");
        // Peer 1 was idle long enough to be full again: forgetting it changed nothing.
        assert!(l.allow(&1, 10_000_000));
        // A peer that keeps spending is remembered while the table churns (it is never
        // among the idlest), so churn does not refill its budget.
        let mut l: PeerLimiter<u64> = PeerLimiter::new(rate, 100);
        let t = 5_000;
        let mut granted = 0;
        for i in 0..1_000u64 {
            l.allow(&(1_000 + i), t + i);
            granted += usize::from(l.allow(&7, t + i));
        }
        assert!(l.len() <= 100);
        // Its burst, then 10 a second for one second.
        assert!(granted <= 5 + 10, "{granted}");
    }

    #[test]
    fn gossip_spends_author_and_connection_budgets() {
        let l = Limits {
            gossip: Rate::per_minute(30, 2),
            relay: Rate::per_minute(60, 3),
            ..Limits::default()
        };
        let mut b: PeerBudgets<u32> = PeerBudgets::new(&l);
        assert!(b.admit(Channel::Gossip, &1, &1, 0).is_ok());
        assert!(b.admit(Channel::Gossip, &1, &1, 0).is_ok());
        assert_eq!(
            b.admit(Channel::Gossip, &1, &1, 0).unwrap_err().0,
            "round announcements from one node"
        );
        // Throwaway authors over one connection: the connection's budget runs out.
        assert!(b.admit(Channel::Gossip, &2, &9, 0).is_ok());
        assert!(b.admit(Channel::Gossip, &3, &9, 0).is_ok());
        assert!(b.admit(Channel::Gossip, &4, &9, 0).is_ok());
        assert_eq!(
            b.admit(Channel::Gossip, &5, &9, 0).unwrap_err().0,
            "gossip over one connection"
        );
        assert!(b.admit(Channel::Request, &5, &9, 0).is_ok());
    }

    #[test]
    fn only_a_rounds_entry_node_can_release_it() {
        let mut t: RoundTable<u32> = RoundTable::new(8, 3);
        for r in ["r1", "r2", "r3"] {
            t.insert("entry", r, 10_000, 1, 0).unwrap();
        }
        t.insert("other", "r1", 10_000, 1, 0).unwrap();
        assert_eq!(t.insert("entry", "r4", 10_000, 0, 0), Err(Full::Entry(3)));
        // The entry's next announcement says r2 is still open: r1 and r3 are let go,
        // and another entry's r1 (same id) is untouched.
        assert_eq!(t.release("entry", |r| r == "r2"), 2);
        assert_eq!(t.of_entry("entry", 0), 1);
        assert_eq!(t.of_entry("other", 0), 1);
        t.insert("entry", "r4", 10_000, 0, 0).unwrap();
    }

    #[test]
    fn the_round_table_is_capped_in_all_and_per_entry_and_expires() {
        let mut t: RoundTable<u32> = RoundTable::new(8, 3);
        let now = 1_000;
        for i in 0..3 {
            t.insert("flooder", &format!("f{i}"), now + 10_000, i, now)
                .unwrap();
        }
        // A flood of rounds from one entry: three at most.
        for i in 3..1_000 {
            assert_eq!(
                t.insert("flooder", &format!("f{i}"), now + 10_000, i, now),
                Err(Full::Entry(3))
            );
        }
        assert_eq!(t.of_entry("flooder", now), 3);
        // Others still get in, up to the node's cap.
        for e in 0..5 {
            t.insert(&format!("honest{e}"), "r", now + 10_000, 0, now)
                .unwrap();
        }
        assert_eq!(
            t.insert("honest9", "r", now + 10_000, 0, now),
            Err(Full::Node(8))
        );
        // The same round id from another entry is another round, not a takeover.
        assert_eq!(t.get("honest0", "r", now), Some(0));
        assert_eq!(t.get("flooder", "r", now), None);
        assert!(t.has_round("r", now));
        assert_eq!(
            t.insert("honest0", "r", now + 10_000, 5, now),
            Err(Full::Duplicate)
        );
        let s = t.stats(now);
        assert_eq!((s.open, s.peak_open, s.peak_per_entry), (8, 8, 3));
        assert_eq!(s.started, 8);
        assert_eq!(s.declined, 998);
        // Nobody ever removes them (an entry that never selects nor judges): past their
        // deadline they are gone, and room is made.
        let later = now + 10_000;
        assert_eq!(t.get("flooder", "f0", later), None);
        assert_eq!(t.stats(later).open, 0);
        t.insert("flooder", "g", later + 1_000, 1, later).unwrap();
        assert_eq!(
            t.rounds.len(),
            1,
            "expired rounds are dropped, not just hidden"
        );
        // A round its entry asked something of is kept to a later deadline.
        t.extend("flooder", "g", later + 5_000);
        assert_eq!(t.get("flooder", "g", later + 4_000), Some(1));
        t.extend("flooder", "g", later + 10);
        assert_eq!(
            t.get("flooder", "g", later + 4_000),
            Some(1),
            "never shortened"
        );
        // remove_if only removes the instance it was armed for.
        t.remove_if("flooder", "g", |v| *v == 2);
        assert_eq!(t.get("flooder", "g", later), Some(1));
        t.remove_if("flooder", "g", |v| *v == 1);
        assert_eq!(t.get("flooder", "g", later), None);
    }
}
