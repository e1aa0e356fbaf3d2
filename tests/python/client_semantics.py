#!/usr/bin/env python3
"""The Python `kubernetes` client (PyPI) against a Keelson apiserver.

Checks what issue 6 asks of it: create, list with limit and continue, watch from a
resourceVersion with bookmarks, and a 409 Conflict on a stale update, each against what
kube-apiserver answers.

Usage: client_semantics.py KUBECONFIG
Exit status 0 when every check holds; otherwise a FAIL line on stderr and status 1.
Run by tests/apiserver_python.rs.
"""

import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "python"
LABELS = "suite=python"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def rv(obj):
    return int(obj.metadata.resource_version)


def status_of(e):
    """The Kubernetes Status inside an ApiException."""
    try:
        return json.loads(e.body)
    except (TypeError, ValueError):
        fail(f"the error body is not a Status: {e.status} {e.body!r}")


def wait_ready(v1):
    deadline = time.time() + 60
    while True:
        try:
            v1.read_namespace("default")
            return
        except Exception as e:  # the apiserver or its store may still be starting
            if time.time() > deadline:
                fail(f"the apiserver did not become ready: {e}")
            time.sleep(0.2)


def configmap(i):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"suite": "python"}),
        data={"i": str(i)},
    )


def create(v1):
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    created = []
    for i in range(5):
        out = v1.create_namespaced_config_map(NS, configmap(i))
        check(out.metadata.name == f"cm-{i}", f"created name {out.metadata.name}")
        check(out.metadata.namespace == NS, f"created namespace {out.metadata.namespace}")
        check(bool(out.metadata.uid), "a created object has no uid")
        check(out.metadata.creation_timestamp is not None, "no creationTimestamp")
        check(out.data == {"i": str(i)}, f"created data {out.data}")
        created.append(out)
    rvs = [rv(o) for o in created]
    check(rvs == sorted(set(rvs)), f"resourceVersions of successive creates: {rvs}")
    try:
        v1.create_namespaced_config_map(NS, configmap(0))
        fail("creating cm-0 twice succeeded")
    except ApiException as e:
        s = status_of(e)
        check(e.status == 409 and s["reason"] == "AlreadyExists", f"duplicate create: {s}")
        check(s["message"] == 'configmaps "cm-0" already exists', f"message {s['message']!r}")


def list_in_pages(v1):
    """Pages of 2 are one snapshot: an object created between pages is not in them. Returns
    the list's resourceVersion (before that object was created)."""
    # As upstream, a filtered list does not count what remains.
    filtered = v1.list_namespaced_config_map(NS, limit=2, label_selector=LABELS)
    check(len(filtered.items) == 2, f"a filtered page has {len(filtered.items)} items")
    check(
        filtered.metadata.remaining_item_count is None,
        f"a filtered list counted {filtered.metadata.remaining_item_count} remaining",
    )
    first = v1.list_namespaced_config_map(NS, limit=2)
    list_rv = first.metadata.resource_version
    check(len(first.items) == 2, f"first page has {len(first.items)} items")
    check(bool(first.metadata._continue), "first page has no continue token")
    check(
        first.metadata.remaining_item_count == 3,
        f"remainingItemCount {first.metadata.remaining_item_count}",
    )
    # Written after the snapshot: the next pages must not show it.
    v1.create_namespaced_config_map(NS, configmap(5))
    names = [o.metadata.name for o in first.items]
    token, pages = first.metadata._continue, 1
    while token:
        page = v1.list_namespaced_config_map(NS, limit=2, _continue=token)
        pages += 1
        check(
            page.metadata.resource_version == list_rv,
            f"page {pages} at resourceVersion {page.metadata.resource_version}, "
            f"the first at {list_rv}",
        )
        names += [o.metadata.name for o in page.items]
        token = page.metadata._continue
        check(pages <= 3, "more than 3 pages of 2 for 5 objects")
    check(names == [f"cm-{i}" for i in range(5)], f"paged list gave {names}")
    check(pages == 3, f"{pages} pages")
    everything = v1.list_namespaced_config_map(NS, label_selector=LABELS)
    check(len(everything.items) == 6, f"unpaged list after the create: {len(everything.items)}")
    return list_rv


def watch_from(v1, list_rv):
    """Changes after `list_rv` in order, then bookmarks before the watch's deadline."""
    current = v1.read_namespaced_config_map("cm-0", NS)
    current.data = {"i": "modified"}
    v1.replace_namespaced_config_map("cm-0", NS, current)
    v1.delete_namespaced_config_map("cm-1", NS)
    w = watch.Watch()
    events = []
    started = time.time()
    for ev in w.stream(
        v1.list_namespaced_config_map,
        NS,
        label_selector=LABELS,
        resource_version=list_rv,
        allow_watch_bookmarks=True,
        timeout_seconds=6,
    ):
        events.append((ev["type"], ev["raw_object"]))
        if time.time() - started > 30:
            fail("the watch outlived its timeoutSeconds")
    changes = [(t, o["metadata"]["name"]) for t, o in events if t != "BOOKMARK"]
    check(
        changes == [("ADDED", "cm-5"), ("MODIFIED", "cm-0"), ("DELETED", "cm-1")],
        f"events after resourceVersion {list_rv}: {changes}",
    )
    seen = int(list_rv)
    bookmarks = 0
    for t, o in events:
        at = int(o["metadata"]["resourceVersion"])
        if t == "BOOKMARK":
            bookmarks += 1
            check(o["kind"] == "ConfigMap", f"a bookmark's object is a {o.get('kind')}")
            check(at >= seen, f"a bookmark at {at} after an event at {seen}")
        else:
            check(at > seen, f"{t} {o['metadata']['name']} at {at}, not after {seen}")
        seen = max(seen, at)
    check(bookmarks >= 1, f"no BOOKMARK before the watch ended: {[t for t, _ in events]}")


def stale_update(v1):
    before = v1.read_namespaced_config_map("cm-2", NS)
    fresh = v1.read_namespaced_config_map("cm-2", NS)
    fresh.data = {"i": "fresh"}
    after = v1.replace_namespaced_config_map("cm-2", NS, fresh)
    check(rv(after) > rv(before), f"an update left resourceVersion at {rv(after)}")
    before.data = {"i": "stale"}
    try:
        v1.replace_namespaced_config_map("cm-2", NS, before)
        fail("an update with a stale resourceVersion succeeded")
    except ApiException as e:
        s = status_of(e)
        check(e.status == 409, f"stale update answered {e.status}")
        check(s["reason"] == "Conflict", f"stale update reason {s['reason']}")
        want = (
            'Operation cannot be fulfilled on configmaps "cm-2": the object has been '
            "modified; please apply your changes to the latest version and try again"
        )
        check(s["message"] == want, f"stale update message {s['message']!r}")
        check(s["details"] == {"name": "cm-2", "kind": "configmaps"}, f"details {s['details']}")
    kept = v1.read_namespaced_config_map("cm-2", NS)
    check(kept.data == {"i": "fresh"}, f"after the refused update: {kept.data}")


def main():
    if len(sys.argv) != 2:
        fail("usage: client_semantics.py KUBECONFIG")
    v1 = client.CoreV1Api(config.new_client_from_config(config_file=sys.argv[1]))
    wait_ready(v1)
    create(v1)
    list_rv = list_in_pages(v1)
    watch_from(v1, list_rv)
    stale_update(v1)
    print("ok: create, paged list, watch with bookmarks, stale update")


if __name__ == "__main__":
    main()
