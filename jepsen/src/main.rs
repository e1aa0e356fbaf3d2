//! `jepsen test [...]`: runs a test against a fresh cluster (see [`jepsen::run`]); exit status
//! 0 no anomaly, 1 anomalies found, 2 the run could not be judged (a harness failure, or a
//! checker that could not decide: `unknown` is never a pass), 64 usage error.
//!
//! `jepsen check --history FILE --checker NAME [--timeout SECS] [--lease-slack MS] [--out FILE]`
//!
//! Runs one checker over a recorded history (JSON lines) and prints its result as JSON on
//! stdout (or into `--out`). Exit status: 0 valid, 1 invalid, 2 unknown, 64 usage error,
//! 66 unreadable history.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jepsen::{append, lease, linearizable, run, watch, CheckResult, History, Validity};

const USAGE: &str = "usage: jepsen check --history FILE --checker linearizable|append|watch|lease \
                     [--timeout SECS (linearizable, default 60)] [--lease-slack MS (default 0)] [--out FILE]";

struct Args {
    history: PathBuf,
    checker: String,
    timeout: Duration,
    lease_slack: Duration,
    out: Option<PathBuf>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut history, mut checker, mut out) = (None, None, None);
    let (mut timeout, mut lease_slack) = (Duration::from_secs(60), Duration::ZERO);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--history" => history = Some(PathBuf::from(&value)),
            "--checker" => checker = Some(value.clone()),
            "--timeout" => timeout = Duration::from_secs(number()?),
            "--lease-slack" => lease_slack = Duration::from_millis(number()?),
            "--out" => out = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        history: history.ok_or("--history is required")?,
        checker: checker.ok_or("--checker is required")?,
        timeout,
        lease_slack,
        out,
    })
}

fn run(args: &Args, history: &History) -> Result<CheckResult, String> {
    Ok(match args.checker.as_str() {
        "linearizable" => linearizable::check(history, args.timeout),
        "append" => append::check(history),
        "watch" => watch::check(history),
        "lease" => lease::check(history, args.lease_slack),
        other => return Err(format!("unknown checker {other:?}")),
    })
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    match argv.next().as_deref() {
        Some("check") => check_main(argv),
        Some("test") => test_main(argv),
        _ => {
            eprintln!(
                "jepsen: the commands are `test` and `check`\n{}\n{USAGE}",
                run::TEST_USAGE
            );
            ExitCode::from(64)
        }
    }
}

fn test_main(argv: impl Iterator<Item = String>) -> ExitCode {
    let opts = match run::parse_test_args(argv) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("jepsen: {e}\n{}", run::TEST_USAGE);
            return ExitCode::from(64);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run::run_test(opts)) {
        Ok(outcome) => ExitCode::from(run::report(&outcome)),
        Err(e) => {
            eprintln!("jepsen: harness failure: {e}");
            ExitCode::from(2)
        }
    }
}

fn check_main(argv: impl Iterator<Item = String>) -> ExitCode {
    let args = match parse(argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("jepsen: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let history = match History::load(&args.history) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("jepsen: {e}");
            return ExitCode::from(66);
        }
    };
    let result = match run(&args, &history) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jepsen: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let json = serde_json::to_string_pretty(&result).expect("results serialize");
    match &args.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, json + "\n") {
                eprintln!("jepsen: {}: {e}", path.display());
                return ExitCode::from(74);
            }
            eprintln!(
                "jepsen: {} {:?} ({} anomalies)",
                result.checker,
                result.valid,
                result.counts.values().sum::<usize>()
            );
        }
        None => println!("{json}"),
    }
    ExitCode::from(match result.valid {
        Validity::Valid => 0,
        Validity::Invalid => 1,
        Validity::Unknown => 2,
    })
}
