use super::check;
use crate::history::{
    EventKind, Func, History, Op, OpType, WatchEvent, WatchRequest, WatchResponse,
};
use crate::result::{CheckResult, Validity};
use crate::testkit::{op, write};

fn put(
    key: &str,
    value: &str,
    revision: i64,
    create_revision: i64,
    prev: Option<&str>,
) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        key: key.into(),
        value: Some(value.into()),
        revision,
        create_revision,
        prev_value: prev.map(Into::into),
    }
}

fn del(key: &str, revision: i64, prev: Option<&str>) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        key: key.into(),
        value: None,
        revision,
        create_revision: 0,
        prev_value: prev.map(Into::into),
    }
}

fn resp(events: Vec<WatchEvent>) -> WatchResponse {
    let revision = events.last().map_or(0, |e| e.revision);
    WatchResponse {
        events,
        revision,
        ..Default::default()
    }
}

fn progress(revision: i64) -> WatchResponse {
    WatchResponse {
        revision,
        progress_notify: true,
        ..Default::default()
    }
}

fn created(revision: i64) -> WatchResponse {
    WatchResponse {
        revision,
        created: true,
        ..Default::default()
    }
}

fn all_keys(start_revision: i64) -> WatchRequest {
    WatchRequest {
        key: "\0".into(),
        range_end: Some("\0".into()),
        start_revision,
        prev_kv: true,
        ..Default::default()
    }
}

fn watch(p: u64, request: WatchRequest, responses: Vec<WatchResponse>) -> Op {
    op(p, OpType::Ok, Func::Watch { request, responses }, 0, 1000)
}

/// The store's writes: a=1 @2, b=1 @3, a=2 @4, delete a @5.
fn writes() -> Vec<Op> {
    vec![
        write(1, "a", "1", 10, 20).with_revision(2),
        write(1, "b", "1", 30, 40).with_revision(3),
        write(1, "a", "2", 50, 60).with_revision(4),
        op(
            1,
            OpType::Ok,
            Func::Delete {
                key: "a".into(),
                deleted: Some(1),
            },
            70,
            80,
        )
        .with_revision(5),
    ]
}

/// What a correct all-keys watcher from revision 2 receives.
fn good_responses() -> Vec<WatchResponse> {
    vec![
        resp(vec![put("a", "1", 2, 2, None)]),
        resp(vec![put("b", "1", 3, 3, None)]),
        resp(vec![put("a", "2", 4, 2, Some("1"))]),
        resp(vec![del("a", 5, Some("2"))]),
        progress(5),
    ]
}

fn run_with(responses: Vec<WatchResponse>) -> CheckResult {
    let mut ops = writes();
    ops.push(watch(9, all_keys(2), responses));
    check(&History::new(ops))
}

fn only(result: &CheckResult, kind: &str) {
    assert_eq!(result.valid, Validity::Invalid, "{kind}: {result:#?}");
    assert_eq!(
        result.counts.keys().collect::<Vec<_>>(),
        vec![kind],
        "{result:#?}"
    );
}

#[test]
fn correct_watchers_are_valid() {
    let mut ops = writes();
    ops.push(watch(9, all_keys(2), good_responses()));
    // A single-key watch from "now": created at revision 3, then a's changes.
    let on_a = WatchRequest {
        key: "a".into(),
        ..Default::default()
    };
    ops.push(watch(
        8,
        on_a,
        vec![
            created(3),
            resp(vec![put("a", "2", 4, 2, None)]),
            resp(vec![del("a", 5, None)]),
        ],
    ));
    // A put-only watch resumed at revision 3.
    let puts = WatchRequest {
        no_delete: true,
        start_revision: 3,
        ..all_keys(0)
    };
    ops.push(watch(
        7,
        puts,
        vec![
            resp(vec![put("b", "1", 3, 3, None)]),
            resp(vec![put("a", "2", 4, 2, None)]),
            progress(5),
        ],
    ));
    let result = check(&History::new(ops));
    assert_eq!(result.valid, Validity::Valid, "{result:#?}");
    assert_eq!(result.stats["watches"], 3);
}

#[test]
fn a_gap_is_unreliable() {
    let mut responses = good_responses();
    responses.remove(1); // b=1 @3 never arrives
    let result = run_with(responses);
    only(&result, "watch-gap");
    assert_eq!(result.anomalies[0].detail["missing"]["revision"], 3);
    // The anomaly names the write that was missed.
    assert!(result.anomalies[0].ops.iter().any(|op| op.index == 1));
}

#[test]
fn a_duplicate_event_is_reported() {
    let mut responses = good_responses();
    responses[2].events.push(put("a", "2", 4, 2, Some("1")));
    only(&run_with(responses), "watch-duplicate");
}

#[test]
fn an_out_of_order_event_is_reported() {
    let mut responses = good_responses();
    responses.swap(1, 2); // @4 before @3
    only(&run_with(responses), "watch-out-of-order");
}

#[test]
fn a_split_revision_is_not_atomic() {
    let mut ops = writes();
    // One txn at revision 6 wrote c and d.
    ops.push(write(1, "c", "1", 90, 99).with_revision(6));
    ops.push(write(1, "d", "1", 90, 99).with_revision(6));
    let mut responses = good_responses();
    responses.pop();
    responses.push(resp(vec![put("c", "1", 6, 6, None)]));
    responses.push(resp(vec![put("d", "1", 6, 6, None)]));
    ops.push(watch(9, all_keys(2), responses.clone()));
    only(&check(&History::new(ops.clone())), "watch-split-revision");
    // The same events in one response are fine.
    let joined = resp(vec![put("c", "1", 6, 6, None), put("d", "1", 6, 6, None)]);
    responses.truncate(responses.len() - 2);
    responses.push(joined);
    *ops.last_mut().unwrap() = watch(9, all_keys(2), responses);
    assert_eq!(check(&History::new(ops)).valid, Validity::Valid);
}

#[test]
fn a_wrong_prev_kv_is_reported() {
    let mut responses = good_responses();
    responses[2].events[0].prev_value = Some("9".into());
    let result = run_with(responses);
    only(&result, "watch-prev-kv");
    // The write whose value prev_kv should have carried is named.
    assert!(result.anomalies[0].ops.iter().any(|op| op.index == 0));
}

#[test]
fn a_wrong_create_revision_is_reported() {
    let mut responses = good_responses();
    responses[2].events[0].create_revision = 4; // claims a=2 created a, which existed
    only(&run_with(responses), "watch-is-create");
}

#[test]
fn a_progress_notify_ahead_of_events_is_not_bookmarkable() {
    let mut responses = good_responses();
    responses.insert(2, progress(4)); // claims everything up to 4 was delivered; @4 comes later
    only(&run_with(responses), "watch-bookmarkable");
    // A progress notification behind a delivered event is wrong too.
    let mut responses = good_responses();
    responses.insert(3, progress(3));
    only(&run_with(responses), "watch-bookmarkable");
}

#[test]
fn events_outside_the_filter_are_reported() {
    let mut ops = writes();
    let no_delete = WatchRequest {
        no_delete: true,
        ..all_keys(2)
    };
    ops.push(watch(9, no_delete, good_responses()));
    let result = check(&History::new(ops));
    only(&result, "watch-filter");
    assert_eq!(result.anomalies[0].detail["event"]["revision"], 5);
}

#[test]
fn a_watch_that_starts_early_is_not_resumable() {
    let mut ops = writes();
    // Asked for revision 4 onwards (a regression like etcd #20221), got revision 3 first.
    let from_4 = WatchRequest {
        start_revision: 4,
        ..all_keys(0)
    };
    ops.push(watch(9, from_4, good_responses()[1..].to_vec()));
    let result = check(&History::new(ops));
    only(&result, "watch-not-resumable");
}

#[test]
fn watchers_that_disagree_with_a_write_are_inconsistent() {
    let mut responses = good_responses();
    responses[2].events[0].value = Some("3".into());
    only(&run_with(responses), "inconsistent-events");
}
