//! The failed-authentication limiter: [`MAX_FAILURES`] failed authentications within
//! [`WINDOW`] lock a client out until the oldest of them leaves the window. While locked out,
//! every request of that client is refused with 429 and `Retry-After`, a valid token included;
//! a successful authentication (outside a lockout) clears its count.
//!
//! A client is an IP address (TCP) or a peer uid (the Unix socket). The table holds at most
//! [`MAX_CLIENTS`] clients: when it is full, the client whose last failure is the oldest is
//! forgotten first, so an attacker cycling addresses cannot grow it, and a client locked out
//! now is forgotten only after every client with an older failure. Time is passed in, so tests
//! drive it with their own clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
pub const MAX_CLIENTS: usize = 10_000;

/// Who is asking, as the limiter counts them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Client {
    Ip(std::net::IpAddr),
    Uid(u32),
    /// The peer's identity could not be read (counted together).
    Unknown,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Ip(ip) => write!(f, "ip:{ip}"),
            Client::Uid(uid) => write!(f, "uid:{uid}"),
            Client::Unknown => f.write_str("unknown"),
        }
    }
}

/// What the limiter says about a request before its token is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Locked out; retry after this long.
    Locked(Duration),
}

#[derive(Debug, Default)]
struct Failures {
    times: VecDeque<Instant>,
}

#[derive(Debug)]
pub struct Limiter {
    clients: HashMap<Client, Failures>,
    max_clients: usize,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::with_capacity(MAX_CLIENTS)
    }
}

impl Limiter {
    pub fn with_capacity(max_clients: usize) -> Limiter {
        Limiter {
            clients: HashMap::new(),
            max_clients: max_clients.max(1),
        }
    }

    fn forget_old(failures: &mut Failures, now: Instant) {
        while failures
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            failures.times.pop_front();
        }
    }

    /// Whether `client` may try to authenticate now.
    pub fn gate(&mut self, client: &Client, now: Instant) -> Gate {
        let Some(failures) = self.clients.get_mut(client) else {
            return Gate::Open;
        };
        Self::forget_old(failures, now);
        if failures.times.len() >= MAX_FAILURES {
            let oldest = failures.times[failures.times.len() - MAX_FAILURES];
            let left = WINDOW.saturating_sub(now.saturating_duration_since(oldest));
            return Gate::Locked(left.max(Duration::from_secs(1)));
        }
        if failures.times.is_empty() {
            self.clients.remove(client);
        }
        Gate::Open
    }

    /// Counts a failed authentication; returns the gate it leaves (locked once it is the
    /// [`MAX_FAILURES`]th in the window).
    pub fn failed(&mut self, client: &Client, now: Instant) -> Gate {
        if !self.clients.contains_key(client) && self.clients.len() >= self.max_clients {
            self.evict(now);
        }
        let failures = self.clients.entry(client.clone()).or_default();
        Self::forget_old(failures, now);
        failures.times.push_back(now);
        while failures.times.len() > MAX_FAILURES {
            failures.times.pop_front();
        }
        self.gate(client, now)
    }

    /// A successful authentication: the client's count starts again.
    pub fn succeeded(&mut self, client: &Client) {
        self.clients.remove(client);
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Makes room: first every client with nothing in the window, then the one whose last
    /// failure is the oldest.
    fn evict(&mut self, now: Instant) {
        self.clients.retain(|_, f| {
            Self::forget_old(f, now);
            !f.times.is_empty()
        });
        if self.clients.len() < self.max_clients {
            return;
        }
        if let Some(oldest) = self
            .clients
            .iter()
            .min_by_key(|(_, f)| f.times.back().copied())
            .map(|(c, _)| c.clone())
        {
            self.clients.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Client {
        Client::Ip(std::net::IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn the_fifth_failure_locks_out_until_the_window_passes() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let c = ip(1);
        for i in 0..4 {
            assert_eq!(l.failed(&c, t0 + Duration::from_secs(i)), Gate::Open);
        }
        // Locked until the oldest of the five leaves the window.
        assert_eq!(
            l.failed(&c, t0 + Duration::from_secs(4)),
            Gate::Locked(WINDOW - Duration::from_secs(4))
        );
        // The sixth attempt, with any token, is refused; Retry-After counts down.
        assert_eq!(
            l.gate(&c, t0 + Duration::from_secs(64)),
            Gate::Locked(WINDOW - Duration::from_secs(64))
        );
        // Another client is not affected.
        assert_eq!(l.gate(&ip(2), t0), Gate::Open);
        // Once the oldest failure leaves the window, one more try is allowed.
        assert_eq!(l.gate(&c, t0 + WINDOW), Gate::Open);
        let later = t0 + WINDOW + Duration::from_secs(1);
        // The failures at 0 s and 1 s have left the window: four remain with this one.
        assert_eq!(l.failed(&c, later), Gate::Open);
        assert_eq!(l.failed(&c, later), Gate::Locked(Duration::from_secs(1)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let c = Client::Uid(1000);
        for _ in 0..4 {
            l.failed(&c, t0);
        }
        l.succeeded(&c);
        for _ in 0..4 {
            assert_eq!(l.failed(&c, t0), Gate::Open);
        }
        assert_eq!(l.failed(&c, t0), Gate::Locked(WINDOW));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_stalest_first() {
        let mut l = Limiter::with_capacity(3);
        let t0 = Instant::now();
        let locked = ip(1);
        for _ in 0..5 {
            l.failed(&locked, t0 + Duration::from_secs(10));
        }
        for n in 2..200u8 {
            l.failed(&ip(n), t0 + Duration::from_secs(u64::from(n)));
            assert!(l.len() <= 3);
        }
        // Cycling addresses evicted the locked-out client only after older ones: with 197
        // newer failures it is gone now, and the table never grew.
        assert_eq!(l.len(), 3);
        let mut l = Limiter::with_capacity(3);
        for _ in 0..5 {
            l.failed(&locked, t0 + Duration::from_secs(100));
        }
        l.failed(&ip(2), t0 + Duration::from_secs(1));
        l.failed(&ip(3), t0 + Duration::from_secs(2));
        l.failed(&ip(4), t0 + Duration::from_secs(3));
        assert!(matches!(
            l.gate(&locked, t0 + Duration::from_secs(101)),
            Gate::Locked(_)
        ));
    }
}
