#!/usr/bin/env python3
"""Counts what the backend of node-dapr.sh received: delivered, lost and duplicated occurrences.

stdin: the backend's records (GET /_dev/records, one JSON array on the first line), the
subscriber's events (GET /_dev/events, one JSON array on the second line), then the
RecurringTask node-every-2s as JSON. Arguments: CUT ROLLOUT_START ROLLOUT_END FAILOVER_MS READY.

- delivered: distinct occurrences (idempotency keys) the backend accepted, of every task and
  reminder in recur-demo, plus distinct events (their id is the key) of ticks-as-events;
- duplicated: arrivals of a key already received at the backend, plus scheduled times of one
  task that came with more than one key (either would be a second effect without the backend's
  own check). Pub/sub is at least once: an event id arriving again is a redelivery the consumer
  drops by id, reported apart; a second id for one scheduled time is a duplicate;
- lost: times of node-every-2s's schedule (every 2 s from its first occurrence) and of
  ticks-as-events's (every 15 s) up to CUT that never arrived; rollout_lost counts those among
  them scheduled during the rollout restart.
The key in the task's status (lastOccurrence) must be one the backend received.
Prints the summary line and exits 1 when anything was lost or duplicated.
"""
import json
import sys
from datetime import datetime, timedelta

TASK_TITLE = "node every 2s"
STEP = timedelta(seconds=2)
PUBSUB_SOURCE = "/namespaces/recur-demo/recurringtasks/ticks-as-events"
PUBSUB_STEP = timedelta(seconds=15)


def at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def events_by_time(events):
    """The ids of ticks-as-events's events by their scheduled time (CloudEvent `time`)."""
    by_time = {}
    for e in events:
        if e.get("source") == PUBSUB_SOURCE and e.get("time") and e.get("id"):
            by_time.setdefault(at(e["time"]), set()).add(e["id"])
    return by_time


def main():
    cut, r0, r1 = (at(a) for a in sys.argv[1:4])
    failover_ms, ready = int(sys.argv[4]), sys.argv[5]
    records_line, events_line, status_text = sys.stdin.read().split("\n", 2)
    records = json.loads(records_line)
    events = json.loads(events_line)
    task = json.loads(status_text)

    problems = []
    seen, keys_by_time = {}, {}
    duplicated = 0
    for r in records:
        if not (r.get("path") or "").startswith("/api/"):
            continue  # daprd's own calls to the app (GET /dapr/config at start)
        key = r.get("key")
        if r.get("namespace") not in (None, "recur-demo"):
            problems.append(f"a call for namespace {r.get('namespace')!r}")
        if not key:
            problems.append(f"a call without an idempotency key: {r.get('path')}")
            continue
        if key in seen:
            duplicated += 1
        seen[key] = r
        if r.get("title") == TASK_TITLE and r.get("scheduled_at"):
            keys_by_time.setdefault(at(r["scheduled_at"]), set()).add(key)
    duplicated += sum(len(k) - 1 for k in keys_by_time.values())
    delivered = sum(1 for r in seen.values() if (r.get("status") or 0) // 100 == 2)

    lost = rollout_lost = 0
    for name, step, by_time in (
        (TASK_TITLE, STEP, keys_by_time),
        ("ticks-as-events", PUBSUB_STEP, events_by_time(events)),
    ):
        times = sorted(by_time)
        if not times:
            problems.append(f"no occurrence of {name} arrived")
            continue
        expected, t = [], times[0]
        while t <= cut:
            expected.append(t)
            t += step
        missing = [t for t in expected if t not in by_time]
        lost += len(missing)
        rollout_lost += sum(1 for t in missing if r0 <= t <= r1)
        for t in missing[:10]:
            problems.append(f"lost: {name} at {t.isoformat()}")
        # Every 2 s always falls inside the rollout (about 10 s); every 15 s may not.
        if step == STEP and not any(r0 <= t <= r1 for t in times):
            problems.append(f"no occurrence of {name} was scheduled during the rollout restart")
    ids = [e.get("id") for e in events if e.get("source") == PUBSUB_SOURCE]
    pubsub_ids = set(ids)
    delivered += len(pubsub_ids)
    duplicated += sum(len(k) - 1 for k in events_by_time(events).values())
    print(
        f"node-deliveries: pub/sub events={len(pubsub_ids)} redelivered={len(ids) - len(pubsub_ids)}",
        file=sys.stderr,
    )

    last_key = ((task.get("status") or {}).get("lastOccurrence") or {}).get("idempotencyKey")
    if not last_key or last_key not in seen:
        problems.append(f"the key in status ({last_key}) never reached the backend")
    if not any("/reminder-sent" in (r.get("path") or "") for r in seen.values()):
        problems.append("the reminder never reached the backend")

    for p in problems:
        print(f"node-deliveries: {p}", file=sys.stderr)
    print(
        f"node: recur_ready={ready} daprd_injected=yes delivered={delivered} lost={lost} "
        f"duplicated={duplicated} failover_s={failover_ms / 1000:.1f} rollout_lost={rollout_lost}"
    )
    return 1 if problems or lost or duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
