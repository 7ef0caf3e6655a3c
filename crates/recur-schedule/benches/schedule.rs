//! Next-occurrence computations per second, per schedule kind, in a DST zone (Europe/Berlin).
//! `next_after` runs on every reconcile, so this is the number that matters.
// A benchmark with fixed, valid inputs.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::hint::black_box;

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use recur_schedule::{CompileContext, Frequency, PatternSpec, Schedule, ScheduleSpec};

fn specs() -> Vec<(&'static str, ScheduleSpec)> {
    let zone = Some("Europe/Berlin".to_string());
    let start = Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
    let base = ScheduleSpec {
        time_zone: zone,
        start_at: start,
        jitter: Some("2m".into()),
        ..Default::default()
    };
    vec![
        (
            "cron",
            ScheduleSpec {
                cron: Some("*/15 9-17 * * MON-FRI".into()),
                ..base.clone()
            },
        ),
        (
            "pattern",
            ScheduleSpec {
                pattern: Some(Box::new(PatternSpec {
                    frequency: Frequency::Weekly,
                    by_day: vec!["MO".into(), "WE".into()],
                    at_times: vec!["02:30".into(), "17:30".into()],
                    ..Default::default()
                })),
                ..base.clone()
            },
        ),
        (
            "rrule",
            ScheduleSpec {
                rrule: Some(
                    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=16;BYMINUTE=0;BYSECOND=0"
                        .into(),
                ),
                ..base.clone()
            },
        ),
        (
            "every",
            ScheduleSpec {
                every: Some("90m".into()),
                ..base
            },
        ),
    ]
}

/// Query instants spread over 2026 (every 8h 47m, so all times of day and both transitions).
fn instants() -> Vec<DateTime<Utc>> {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    (0..1000).map(|i| t0 + Duration::minutes(527 * i)).collect()
}

/// Query instants in the 30 hours after Berlin's 2026 transitions: the replay path.
fn near_transitions() -> Vec<DateTime<Utc>> {
    let spring = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
    let autumn = Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap();
    (0..100)
        .flat_map(|i| {
            [
                spring + Duration::minutes(17 * i),
                autumn + Duration::minutes(17 * i),
            ]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ctx = CompileContext {
        anchor: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
        seed: "bench-uid".into(),
    };
    let schedules: Vec<(&str, Schedule)> = specs()
        .into_iter()
        .map(|(name, spec)| (name, Schedule::compile(&spec, &ctx).unwrap()))
        .collect();

    let mut group = c.benchmark_group("next_after");
    group.throughput(Throughput::Elements(1));
    for (label, ts) in [("", instants()), ("_near_dst", near_transitions())] {
        for (name, schedule) in &schedules {
            group.bench_function(format!("{name}{label}"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % ts.len();
                    black_box(schedule.next_after(black_box(ts[i])))
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("compile");
    group.throughput(Throughput::Elements(1));
    for (name, spec) in specs() {
        group.bench_function(name, |b| {
            b.iter(|| black_box(Schedule::compile(black_box(&spec), &ctx).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
