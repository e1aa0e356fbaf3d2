//! `jepsen test` flags → [`RunOpts`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{NemesisSpec, RunOpts};
use crate::cluster::Target;
use crate::net::Network;
use crate::workload::{ReadMode, WorkloadKind};

pub const TEST_USAGE: &str = "usage: jepsen test [--target keelson|etcd] \
[--workload register|append|watch|lease|all|A,B] \
[--nemesis none|kill|pause|partition|member|corrupt|all|A,B] [--time-limit SECONDS (60)] \
[--seed N] [--read-mode linearizable|serializable] [--out DIR] [--keelson-bin PATH] \
[--etcd-bin PATH] [--network auto|netns|proxy] [--check-timeout SECONDS (120)] \
[--watch-progress on|off (default: on for keelson, off for etcd 3.4.23)]";

/// Parses the flags after `test`.
pub fn parse_test_args(argv: impl IntoIterator<Item = String>) -> Result<RunOpts, String> {
    let mut opts = RunOpts::new(Target::Keelson, vec![WorkloadKind::Register]);
    let mut seed = None;
    let mut argv = argv.into_iter();
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let secs = || -> Result<Duration, String> {
            let n: f64 = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
            if n.is_finite() && n > 0.0 {
                Ok(Duration::from_secs_f64(n))
            } else {
                Err(format!(
                    "{flag} {value}: must be a positive number of seconds"
                ))
            }
        };
        match flag.as_str() {
            "--target" => opts.target = value.parse()?,
            "--workload" => opts.workloads = WorkloadKind::parse_list(&value)?,
            "--nemesis" => opts.nemesis = NemesisSpec::parse(&value)?,
            "--time-limit" => opts.time_limit = secs()?,
            "--check-timeout" => opts.check_timeout = secs()?,
            "--seed" => seed = Some(value.parse().map_err(|e| format!("--seed {value}: {e}"))?),
            "--read-mode" => opts.read_mode = value.parse::<ReadMode>()?,
            "--out" => opts.out = Some(PathBuf::from(value)),
            "--keelson-bin" => opts.keelson_bin = Some(PathBuf::from(value)),
            "--etcd-bin" => opts.etcd_bin = PathBuf::from(value),
            "--network" => opts.network = value.parse::<Network>()?,
            "--watch-progress" => {
                opts.watch_progress = Some(match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("--watch-progress {value}: on or off")),
                })
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    opts.seed = seed.unwrap_or_else(|| {
        // Unseeded runs differ; the seed is printed and saved, so any run can be repeated.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000)
    });
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<RunOpts, String> {
        parse_test_args(args.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults_and_every_flag() {
        let d = parse("").unwrap();
        assert_eq!(d.target, Target::Keelson);
        assert_eq!(d.workloads, vec![WorkloadKind::Register]);
        assert_eq!(d.nemesis.name(), "none");
        assert_eq!(d.time_limit, Duration::from_secs(60));
        assert_eq!(d.read_mode, ReadMode::Linearizable);

        let o = parse(
            "--target etcd --workload watch,register --nemesis kill,partition --time-limit 30 \
             --seed 7 --read-mode serializable --out /tmp/x --keelson-bin /k --etcd-bin /e \
             --network proxy --check-timeout 5 --watch-progress on",
        )
        .unwrap();
        assert_eq!(o.target, Target::Etcd);
        assert_eq!(
            o.workloads,
            vec![WorkloadKind::Register, WorkloadKind::Watch]
        );
        assert_eq!(o.nemesis.name(), "kill,partition");
        assert_eq!(o.time_limit, Duration::from_secs(30));
        assert_eq!(o.seed, 7);
        assert_eq!(o.read_mode, ReadMode::Serializable);
        assert_eq!(o.out, Some(PathBuf::from("/tmp/x")));
        assert_eq!(o.keelson_bin, Some(PathBuf::from("/k")));
        assert_eq!(o.etcd_bin, PathBuf::from("/e"));
        assert_eq!(o.network, Network::Proxy);
        assert_eq!(o.check_timeout, Duration::from_secs(5));
        assert!(o.watch_progress());
        assert!(d.watch_progress(), "on for keelson by default");
        assert!(
            !parse("--target etcd").unwrap().watch_progress(),
            "off for etcd"
        );
        assert_eq!(o.run_name(), "etcd-register+watch-kill+partition");

        let all = parse("--workload all --nemesis all").unwrap();
        assert_eq!(all.workloads.len(), 4);
        assert_eq!(all.nemesis.name(), "all");
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            "--target zookeeper",
            "--workload bank",
            "--nemesis meteor",
            "--time-limit 0",
            "--time-limit soon",
            "--read-mode sloppy",
            "--seed -1",
            "--bogus 1",
            "--target",
            "--watch-progress maybe",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
