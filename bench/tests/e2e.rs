//! End-to-end runs: the put, watch and watch-idle workloads, through the command-line parser,
//! against a real Keelson store served in-process on 127.0.0.1:0 (in memory), with tiny sizes.

use clap::Parser;
use keelson_bench::{Cli, Command, Report};
use keelson_store::{Store, StoreConfig};

async fn run(line: &str, endpoint: &str) -> Report {
    let args = format!("keelson-bench {line} --endpoints {endpoint}");
    let Command::Workload(w) = Cli::parse_from(args.split_whitespace()).command else {
        panic!("{line} is not a workload");
    };
    w.run().await.expect(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_watch_against_a_keelson_store() {
    let store = Store::open(StoreConfig {
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        data_dir: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let endpoint = store.client_addrs()[0].to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(store.serve(async {
        let _ = stopped.await;
    }));

    let put = run(
        "put --clients 4 --conns 2 --total 200 --key-space 50",
        &endpoint,
    )
    .await;
    assert!(put.ok, "{}", put.table());
    let op = &put.ops[0];
    assert_eq!((op.name.as_str(), op.count, op.errors), ("put", 200, 0));
    assert!(op.per_sec > 0.0 && op.latency.p50_ms > 0.0 && op.latency.p50_ms <= op.latency.max_ms);

    // 20 watchers over 3 keys and 4 streams; every watcher must see every put to its key.
    let watch = run(
        "watch --watchers 20 --keys 3 --conns 2 --streams 2 --puts 60 --clients 3",
        &endpoint,
    )
    .await;
    assert!(watch.ok, "{}", watch.table());
    let expected = watch.figures["events_expected"];
    // 60 puts round-robin over 3 keys: 20 per key, and each watcher watches one key.
    assert_eq!(expected, 20.0 * 20.0);
    assert_eq!(watch.figures["events_delivered"], expected);
    let event = watch
        .ops
        .iter()
        .find(|o| o.name == "event")
        .expect("event latencies");
    assert_eq!(event.count, 400);

    let prefix = run(
        "watch --watchers 5 --keys 4 --watch-prefix --puts 40 --json",
        &endpoint,
    )
    .await;
    assert!(prefix.ok, "{}", prefix.table());
    assert_eq!(prefix.figures["events_delivered"], 5.0 * 40.0);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_are_counted_measured_and_checked_live() {
    let store = Store::open(StoreConfig {
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        data_dir: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let endpoint = store.client_addrs()[0].to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(store.serve(async {
        let _ = stopped.await;
    }));

    // The server runs in this process, so its pid is ours: the memory figures are only
    // checked for being there, not for their size.
    let line = format!(
        "watch-idle --watchers 300 --keys 100 --mixed --conns 2 --streams 3 --window 4 \
         --verify 40 --samples 2 --sample-interval 10ms --server-pid {}",
        std::process::id()
    );
    let idle = run(&line, &endpoint).await;
    assert!(idle.ok, "{}", idle.table());
    assert_eq!(idle.figures["watchers"], 300.0);
    // 40 of the 100 keys are put, each watched by 3 watchers.
    assert_eq!(idle.figures["verified_watchers"], 120.0);
    assert!(idle.figures["accept_watchers_per_s"] > 0.0);
    assert!(idle.figures.contains_key("rss_per_watcher_b"));
    let create = idle.ops.iter().find(|o| o.name == "create").unwrap();
    assert_eq!(create.count, 300);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
