//! Who watches what in a `watch-idle` run, and the liveness check's expectation and verdict.
//!
//! Everything follows from a watcher's number, so nothing is stored per watcher: watcher i is
//! on stream `i mod streams`, stream s on connection `s mod conns`, connection c on endpoint
//! `c mod endpoints`; it watches key `i mod K`, as a prefix with `--prefix` or, with `--mixed`,
//! when i is odd.

use std::collections::HashMap;

use anyhow::bail;
use keelson_proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest};

use super::IdleArgs;
use crate::keys::{prefix_end, KeySpace};

/// Who watches what: everything a stream needs to build its watchers' requests.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) watchers: usize,
    pub(crate) streams: usize,
    pub(crate) conns: usize,
    pub(crate) endpoints: usize,
    pub(crate) keys: KeySpace,
    prefix: bool,
    mixed: bool,
    pub(crate) window: usize,
}

impl Plan {
    pub(crate) fn new(a: &IdleArgs) -> anyhow::Result<Plan> {
        if a.watchers == 0 {
            bail!("--watchers must be at least 1");
        }
        if !a.server_pids.is_empty() && a.server_pids.len() != a.target.endpoints.len() {
            bail!(
                "{} --server-pid given for {} endpoints: give one per endpoint, in order",
                a.server_pids.len(),
                a.target.endpoints.len()
            );
        }
        let conns = a.target.conns.max(1);
        let k = if a.keys == 0 {
            a.watchers as u64
        } else {
            a.keys
        };
        let width = (k - 1).to_string().len();
        Ok(Plan {
            watchers: a.watchers,
            streams: (conns * a.streams.max(1)).min(a.watchers),
            conns,
            endpoints: a.target.endpoints.len().max(1),
            keys: KeySpace::new("idle/", 5 + width, k)?,
            prefix: a.prefix,
            mixed: a.mixed,
            window: a.window.max(1),
        })
    }

    /// Watchers dealt to stream `s`.
    pub(crate) fn on_stream(&self, s: usize) -> usize {
        self.watchers / self.streams + usize::from(s < self.watchers % self.streams)
    }

    /// The endpoint (index into --endpoints) that stream `s` talks to.
    pub(crate) fn endpoint_of_stream(&self, s: usize) -> usize {
        (s % self.conns) % self.endpoints
    }

    /// Watchers held by each endpoint.
    pub(crate) fn per_endpoint(&self) -> Vec<usize> {
        let mut v = vec![0; self.endpoints];
        for s in 0..self.streams {
            v[self.endpoint_of_stream(s)] += self.on_stream(s);
        }
        v
    }

    /// Watcher number `i`'s create request.
    pub(crate) fn create(&self, i: usize) -> WatchRequest {
        let key = self.keys.key(i as u64);
        let range_end = if self.prefix || (self.mixed && i % 2 == 1) {
            prefix_end(&key)
        } else {
            Default::default()
        };
        WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key,
                range_end,
                ..Default::default()
            })),
        }
    }

    /// The keys the liveness check puts: `n` spread evenly over the key set (all if fewer).
    pub(crate) fn sampled_keys(&self, n: u64) -> Vec<u64> {
        let k = self.keys.len();
        if n >= k {
            return (0..k).collect();
        }
        (0..n).map(|j| j * k / n).collect()
    }

    /// For each sampled key, the streams its watchers are on: (key, stream) → watchers.
    pub(crate) fn expected(&self, sampled: &[u64]) -> HashMap<(u64, usize), u64> {
        let k = self.keys.len();
        let mut m = HashMap::new();
        for &key in sampled {
            let mut i = key;
            while i < self.watchers as u64 {
                *m.entry((key, i as usize % self.streams)).or_default() += 1;
                i += k;
            }
        }
        m
    }
}

/// The liveness check's verdict.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Liveness {
    /// Watchers of the sampled keys.
    pub(crate) watchers: u64,
    /// Of those, how many got no event.
    pub(crate) missing: u64,
    /// Events beyond one per sampled watcher: duplicates, events on the wrong stream, foreign keys.
    pub(crate) unexpected: u64,
}

/// Compares what each stream received (key indexes; `None` for a key not of the key set)
/// with what the sampled watchers should have got.
pub(crate) fn check_liveness(
    expected: &HashMap<(u64, usize), u64>,
    received: &[Vec<Option<u64>>],
) -> Liveness {
    let mut got: HashMap<(u64, usize), u64> = HashMap::new();
    let mut l = Liveness {
        watchers: expected.values().sum(),
        ..Liveness::default()
    };
    for (s, keys) in received.iter().enumerate() {
        for k in keys {
            match k {
                Some(k) => *got.entry((*k, s)).or_default() += 1,
                None => l.unexpected += 1,
            }
        }
    }
    for (at, &want) in expected {
        let have = got.remove(at).unwrap_or(0);
        l.missing += want.saturating_sub(have);
        l.unexpected += have.saturating_sub(want);
    }
    l.unexpected += got.values().sum::<u64>();
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_workload, Workload};

    fn plan(line: &str) -> Plan {
        let Workload::WatchIdle(a) = parse_workload(line).unwrap() else {
            panic!("not watch-idle")
        };
        Plan::new(&a).unwrap()
    }

    #[test]
    fn watchers_are_dealt_over_streams_connections_and_endpoints() {
        // 10 watchers, 2 conns × 2 streams = 4 streams: 3, 3, 2, 2 watchers.
        let p = plan("watch-idle --watchers 10 --conns 2 --streams 2 --endpoints a:1,b:2,c:3");
        assert_eq!(p.streams, 4);
        let dealt: Vec<usize> = (0..4).map(|s| p.on_stream(s)).collect();
        assert_eq!(dealt, [3, 3, 2, 2]);
        // Streams 0 and 2 on connection 0 (endpoint a), 1 and 3 on connection 1 (endpoint b);
        // two connections never reach endpoint c.
        assert_eq!(p.per_endpoint(), [5, 5, 0]);
        let few = plan("watch-idle --watchers 3 --conns 2 --streams 10");
        assert_eq!(few.streams, 3, "no stream without a watcher");
    }

    #[test]
    fn each_watcher_gets_its_key_and_shape() {
        let p = plan("watch-idle --watchers 20 --mixed");
        let req = |i| match p.create(i).request_union {
            Some(RequestUnion::CreateRequest(c)) => c,
            _ => panic!("not a create"),
        };
        assert_eq!(&req(3).key[..], b"idle/03");
        assert_eq!(
            &req(3).range_end[..],
            b"idle/04",
            "odd watchers are prefix watchers"
        );
        assert!(req(4).range_end.is_empty());
        let shared = plan("watch-idle --watchers 20 --keys 3");
        assert_eq!(shared.keys.len(), 3);
        assert_eq!(shared.keys.index_of(&shared.keys.key(7)), Some(1));
    }

    #[test]
    fn the_check_expects_every_watcher_of_a_sampled_key_on_its_stream() {
        // 12 watchers on 4 keys over 5 streams: key k is watched by k, k+4, k+8.
        let p = plan("watch-idle --watchers 12 --keys 4 --streams 5");
        assert_eq!(p.sampled_keys(2), [0, 2]);
        assert_eq!(p.sampled_keys(9), [0, 1, 2, 3], "all keys when fewer");
        let e = p.expected(&[2]);
        // watchers 2, 6, 10 → streams 2, 1, 0
        let want: HashMap<(u64, usize), u64> = [((2, 2), 1), ((2, 1), 1), ((2, 0), 1)].into();
        assert_eq!(e, want);

        let all = vec![vec![Some(2)], vec![Some(2)], vec![Some(2)], vec![], vec![]];
        assert_eq!(
            check_liveness(&e, &all),
            Liveness {
                watchers: 3,
                ..Liveness::default()
            }
        );
        let dropped = vec![vec![Some(2)], vec![], vec![Some(2)], vec![], vec![]];
        assert_eq!(check_liveness(&e, &dropped).missing, 1);
        let wrong = vec![
            vec![Some(2), Some(2)],
            vec![Some(2)],
            vec![Some(2)],
            vec![Some(2)],
            vec![None],
        ];
        let l = check_liveness(&e, &wrong);
        assert_eq!(
            (l.missing, l.unexpected),
            (0, 3),
            "a duplicate, a stray, a foreign key"
        );
    }
}
