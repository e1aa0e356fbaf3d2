//! Connections: `--conns` HTTP/2 channels opened round-robin over `--endpoints`.
//!
//! A tonic [`Channel`] is one TCP connection carrying many concurrent gRPC streams, which is
//! also how etcd's Go client uses a connection; the clients of a workload are spread over the
//! channels so that `--conns 1 --clients 100` means 100 streams on one connection, exactly as
//! it does for etcd's own `benchmark` tool. Channels are opened eagerly, so a wrong endpoint
//! fails the run before anything is measured.

use std::time::Duration;

use anyhow::{bail, Context};
use keelson_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::cli::Target;

/// The open connections of one run.
#[derive(Clone)]
pub(crate) struct Conns {
    channels: Vec<Channel>,
}

impl Conns {
    pub(crate) async fn open(target: &Target) -> anyhow::Result<Conns> {
        if target.endpoints.is_empty() {
            bail!("no --endpoints");
        }
        let mut channels = Vec::with_capacity(target.conns.max(1));
        for i in 0..target.conns.max(1) {
            let url = endpoint_url(&target.endpoints[i % target.endpoints.len()]);
            let ch = Endpoint::from_shared(url.clone())
                .with_context(|| format!("endpoint {url}"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                // Large fixed windows, so big responses (prefix ranges, watch catch-up) are not
                // throttled by HTTP/2's 64 KiB default. Not hyper's adaptive window: its BDP
                // pings make etcd 3.4 (grpc-go) close the connection (too many pings) under
                // watch load, which failed every etcd watch run.
                .initial_stream_window_size(2 << 20)
                .initial_connection_window_size(16 << 20)
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?;
            channels.push(ch);
        }
        Ok(Conns { channels })
    }

    /// The channel that client `i` uses.
    pub(crate) fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    pub(crate) fn kv(&self, i: usize) -> KvClient<Channel> {
        // Large prefix ranges exceed tonic's 4 MiB default; etcd's client accepts any size.
        KvClient::new(self.channel(i)).max_decoding_message_size(usize::MAX)
    }

    pub(crate) fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(i)).max_decoding_message_size(usize::MAX)
    }

    pub(crate) fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(i))
    }
}

/// "host:port" or a full URL → a URL tonic accepts.
pub(crate) fn endpoint_url(ep: &str) -> String {
    if ep.contains("://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    }
}

/// Parses "10s", "250ms", "2m", "1.5s" or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn endpoints_become_urls() {
        assert_eq!(endpoint_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url("https://h:1"), "https://h:1");
    }
}
