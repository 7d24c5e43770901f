//! Per-client request rate limits for the state-changing methods (POST, PATCH, DELETE), so
//! one client cannot make the gateway open sessions on the backends as fast as it can send.
//!
//! A GCRA token bucket per client key (governor): `burst` requests at once, then one every
//! `1 / per_second` seconds. IPv6 clients are keyed by their /64, as one host is usually
//! given a whole /64 and could otherwise rotate addresses to escape the limit. The clock is
//! a type parameter so that tests drive time by hand.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Token buckets keyed by client address.
pub struct RateLimits<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
}

impl RateLimits {
    /// `per_second` requests per second per client on average (fractions allowed, e.g. 0.5
    /// for one every two seconds), up to `burst` at once.
    pub fn new(per_second: f64, burst: NonZeroU32) -> Result<Self, String> {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock> RateLimits<C> {
    /// The same with a clock of the caller's choosing.
    pub fn with_clock(per_second: f64, burst: NonZeroU32, clock: C) -> Result<Self, String> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return Err(format!(
                "rate limit must be a positive number per second, not {per_second}"
            ));
        }
        let quota = Duration::try_from_secs_f64(1.0 / per_second)
            .ok()
            .and_then(Quota::with_period)
            .ok_or_else(|| format!("rate limit {per_second} per second is out of range"))?
            .allow_burst(burst);
        Ok(Self {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
        })
    }

    /// Takes one request from `ip`'s bucket; `Err` holds how long until the next one would
    /// be allowed (round it up for `Retry-After`).
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets clients whose bucket has refilled completely: they are indistinguishable
    /// from new ones. Call every few seconds so that memory follows the active clients.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients currently remembered.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// The key a client's requests count against: the IPv4 address (IPv4-mapped IPv6 included),
/// or the /64 network of an IPv6 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use proptest::prelude::*;

    fn limits(per_second: f64, burst: u32) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let burst = NonZeroU32::new(burst).expect("non-zero");
        let limits = RateLimits::with_clock(per_second, burst, clock.clone()).expect("limits");
        (limits, clock)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn burst_then_refusal_with_retry_after_then_refill() {
        let (limits, clock) = limits(2.0, 3);
        let client = ip("192.0.2.1");
        for n in 0..3 {
            assert_eq!(limits.check(client), Ok(()), "request {n} of the burst");
        }
        assert_eq!(limits.check(client), Err(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(200));
        assert_eq!(limits.check(client), Err(Duration::from_millis(300)));
        clock.advance(Duration::from_millis(300));
        assert_eq!(limits.check(client), Ok(()));
        assert!(limits.check(client).is_err());
        clock.advance(Duration::from_secs(10));
        for _ in 0..3 {
            assert_eq!(limits.check(client), Ok(()), "bucket full again");
        }
        assert!(limits.check(client).is_err());
    }

    #[test]
    fn fractional_rates() {
        let (limits, clock) = limits(0.5, 1);
        let client = ip("192.0.2.1");
        assert_eq!(limits.check(client), Ok(()));
        assert_eq!(limits.check(client), Err(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(2));
        assert_eq!(limits.check(client), Ok(()));
    }

    #[test]
    fn clients_are_independent() {
        let (limits, _clock) = limits(1.0, 1);
        assert_eq!(limits.check(ip("192.0.2.1")), Ok(()));
        assert!(limits.check(ip("192.0.2.1")).is_err());
        assert_eq!(limits.check(ip("192.0.2.2")), Ok(()));
        assert_eq!(limits.check(ip("2001:db8:0:1::1")), Ok(()));
        assert_eq!(limits.check(ip("2001:db8:0:2::1")), Ok(()));
    }

    #[test]
    fn ipv6_hosts_share_their_64() {
        let (limits, _clock) = limits(1.0, 2);
        assert_eq!(limits.check(ip("2001:db8:1:2::1")), Ok(()));
        assert_eq!(limits.check(ip("2001:db8:1:2:ffff:1:2:3")), Ok(()));
        assert!(limits.check(ip("2001:db8:1:2::9")).is_err());
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn sweep_forgets_idle_clients() {
        let (limits, clock) = limits(10.0, 5);
        for last in 0..100u8 {
            limits
                .check(IpAddr::from([198, 51, 100, last]))
                .expect("first request");
        }
        assert_eq!(limits.len(), 100);
        limits.sweep();
        assert_eq!(limits.len(), 100, "buckets still refilling are kept");
        clock.advance(Duration::from_secs(1));
        limits.check(ip("203.0.113.1")).expect("first request");
        limits.sweep();
        assert_eq!(limits.len(), 1, "only the recent client is left");
        clock.advance(Duration::from_secs(1));
        limits.sweep();
        assert!(limits.is_empty());
    }

    #[test]
    fn nonsense_rates_are_refused() {
        let burst = NonZeroU32::new(1).expect("non-zero");
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e30] {
            assert!(
                RateLimits::with_clock(rate, burst, FakeRelativeClock::default()).is_err(),
                "{rate}"
            );
        }
        assert!(RateLimits::new(5.0, burst).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(300)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    proptest! {
        #[test]
        fn exactly_the_burst_passes_at_once(burst in 1u32..50, rate in 0.1f64..100.0) {
            let (limits, _clock) = limits(rate, burst);
            let client = ip("192.0.2.1");
            for _ in 0..burst {
                prop_assert!(limits.check(client).is_ok());
            }
            let wait = limits.check(client).expect_err("over the burst");
            prop_assert!(wait > Duration::ZERO);
            prop_assert!(wait <= Duration::from_secs_f64(1.0 / rate) + Duration::from_micros(1));
        }

        #[test]
        fn one_64_is_one_client(prefix in 1u64.., a in any::<u64>(), b in any::<u64>()) {
            let addr = |low: u64| IpAddr::V6(Ipv6Addr::from((u128::from(prefix) << 64) | u128::from(low)));
            prop_assert_eq!(client_key(addr(a)), client_key(addr(b)));
        }
    }
}
