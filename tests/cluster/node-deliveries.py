#!/usr/bin/env python3
"""Counts what the apps of node-dapr.sh received: delivered, lost and duplicated occurrences.

stdin, one JSON document per line: the backend's records (GET /_dev/records), the
notification-service's records, the subscriber's events (GET /_dev/events), then
{"every2s": CREATED, "ticks": CREATED, "ticks_skipped": [NOMINAL...], "reminder_key": KEY} (the
creation times of the tasks node-every-2s and ticks-as-events, the occurrences ticks-as-events's
status records as skipped by its catch-up policy, the key in the Reminder's status), then the RecurringTask
node-every-2s as JSON (may span lines).
Arguments: CUT ROLLOUT_START ROLLOUT_END FAILOVER_MS READY.

As in tests/chaos.rs:
- delivered: distinct occurrences (idempotency keys) an app answered 2xx: the backend's calls
  of every task in recur-demo and the reminders' callbacks, the notifications, and the events
  (their id is the key) of ticks-as-events;
- a key arriving again is a repeat (recur sends an occurrence again when it cannot know the
  first call landed, e.g. its leader was killed mid-call; the app drops it by key), reported
  apart; duplicated counts an occurrence that came under two keys;
- lost: times of node-every-2s's schedule (every 2 s) and of ticks-as-events's (every 15 s) from
  the first one after the task was created up to CUT that never arrived 2xx (ticks-as-events has
  the default catch-up policy, Latest: an occurrence its status records as skipped after a
  long outage is not lost); rollout_lost counts those among them scheduled during the rollout
  restart.
The key in the task's status (lastOccurrence) and the reminder's key must have arrived.
Prints the summary line and exits 1 when anything was lost, duplicated or wrong.
"""
import json
import sys
from datetime import datetime, timedelta

TASK_TITLE = "node every 2s"
PUBSUB_SOURCE = "/namespaces/recur-demo/recurringtasks/ticks-as-events"


def at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ok(r):
    return (r.get("status") or 0) // 100 == 2


def main():
    cut, r0, r1 = (at(a) for a in sys.argv[1:4])
    failover_ms, ready = int(sys.argv[4]), sys.argv[5]
    lines = sys.stdin.read().split("\n", 4)
    records, notifications, events, facts = (json.loads(line) for line in lines[:4])
    task = json.loads(lines[4])

    problems = []
    # Calls of the apps: keys answered 2xx, repeats, and the task's keys by scheduled time.
    delivered_keys, repeats = set(), 0
    task_times = {}
    for source in (records, notifications):
        for r in source:
            if not (r.get("path") or "").startswith("/api/"):
                continue  # daprd's own calls to the app (GET /dapr/config at start)
            key = r.get("key")
            if not key:
                problems.append(f"a call without an idempotency key: {r.get('path')}")
                continue
            if r.get("namespace") not in (None, "recur-demo"):
                problems.append(f"a call for namespace {r.get('namespace')!r}")
            if not ok(r):
                continue  # answered with an error: recur retries it under the same key
            if key in delivered_keys:
                repeats += 1
            delivered_keys.add(key)
            if r.get("title") == TASK_TITLE and r.get("scheduled_at"):
                task_times.setdefault(at(r["scheduled_at"]), set()).add(key)
    event_times, event_ids, event_repeats = {}, set(), 0
    for e in events:
        if e.get("source") != PUBSUB_SOURCE or not e.get("id") or not e.get("time"):
            continue
        if e["id"] in event_ids:
            event_repeats += 1
        event_ids.add(e["id"])
        event_times.setdefault(at(e["time"]), set()).add(e["id"])

    delivered = len(delivered_keys) + len(event_ids)
    duplicated = 0
    lost = rollout_lost = 0
    skipped = {at(t) for t in facts.get("ticks_skipped") or []}
    for name, step, created, by_time, excused in (
        (TASK_TITLE, timedelta(seconds=2), at(facts["every2s"]), task_times, set()),
        ("ticks-as-events", timedelta(seconds=15), at(facts["ticks"]), event_times, skipped),
    ):
        duplicated += sum(len(keys) - 1 for keys in by_time.values())
        times = sorted(by_time)
        if not times:
            problems.append(f"no occurrence of {name} arrived")
            continue
        # The grid starts at the first arrival, which must be the task's first occurrence:
        # within one period of its creation (a loss before it would otherwise go unseen).
        if times[0] > created + step + timedelta(seconds=1):
            problems.append(
                f"{name}: the first occurrence that arrived ({times[0].isoformat()}) is not the "
                f"first after its creation ({created.isoformat()})"
            )
        expected, t = [], times[0]
        while t <= cut:
            expected.append(t)
            t += step
        missing = [t for t in expected if t not in by_time and t not in excused]
        lost += len(missing)
        rollout_lost += sum(1 for t in missing if r0 <= t <= r1)
        for t in missing[:10]:
            problems.append(f"lost: {name} at {t.isoformat()}")
        # Every 2 s always falls inside the rollout (about 10 s); every 15 s may not.
        if name == TASK_TITLE and not any(r0 <= t <= r1 for t in times):
            problems.append(f"no occurrence of {name} was scheduled during the rollout restart")

    last_key = ((task.get("status") or {}).get("lastOccurrence") or {}).get("idempotencyKey")
    if not last_key or last_key not in delivered_keys:
        problems.append(f"the key in status ({last_key}) never reached the backend")
    reminder_key = facts.get("reminder_key")
    notified = [r for r in notifications if r.get("key") == reminder_key and ok(r)]
    # The callback carries the reminder's key with "-sent" (src/controller/reminder.rs).
    told = [r for r in records if r.get("key") == f"{reminder_key}-sent" and ok(r)
            and (r.get("path") or "").endswith("/reminder-sent")]
    if not reminder_key or not notified or not told:
        problems.append(
            f"the reminder ({reminder_key}): {len(notified)} notification(s), "
            f"{len(told)} reminder-sent call(s) answered 2xx; want both"
        )

    for p in problems:
        print(f"node-deliveries: {p}", file=sys.stderr)
    print(
        f"node-deliveries: calls {len(delivered_keys)} (repeats {repeats}), "
        f"pub/sub events {len(event_ids)} (redelivered {event_repeats}, skipped by policy "
        f"{len(skipped)})",
        file=sys.stderr,
    )
    print(
        f"node: recur_ready={ready} daprd_injected=yes delivered={delivered} lost={lost} "
        f"duplicated={duplicated} failover_s={failover_ms / 1000:.1f} rollout_lost={rollout_lost}"
    )
    return 1 if problems or lost or duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
