//! The bad-input corpus (`tests/bad-input/*.yaml`): each hostile or invalid manifest is applied
//! with the real kubectl against the real apiserver, with the operator serving its admission
//! webhook. `stage: admission` cases must be refused (by the schema, CEL or the webhook) with the
//! `expect` text; `stage: operator` cases are admitted and must end `Ready=False` with the
//! `reason`, a message containing `expect`, and a Warning event. The operator must stay up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::stack::Stack;
use support::webhook::Webhook;
use support::{TestNamespace, client, event_reasons, kubectl, wait_for_value};

struct Case {
    file: PathBuf,
    expect: String,
    stage: String,
    reason: Option<String>,
    object: Option<String>,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bad-input");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let header = |key: &str| {
                text.lines()
                    .take_while(|l| l.starts_with('#'))
                    .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_string))
            };
            let expect = header("expect")
                .unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()));
            let stage = header("stage").unwrap_or_else(|| "admission".into());
            Case {
                expect,
                stage,
                reason: header("reason"),
                object: header("object"),
                file,
            }
        })
        .collect()
}

#[test]
fn the_corpus_has_at_least_sixty_cases_each_with_an_expected_text() {
    let cases = corpus();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    assert!(
        cases
            .iter()
            .all(|c| c.stage == "admission" || (c.stage == "operator" && c.reason.is_some()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_manifest_is_refused_with_its_message() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "bad-input").await;
    let mut stack = Stack::start(ns.name()).await;
    let webhook = Webhook::create(ns.name());
    let flags = webhook.flags(webhook.port);
    stack
        .start_operator(&flags.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    webhook.answering().await;
    let mut failures = vec![];
    let cases = corpus();
    let mut admitted = 0;
    for case in &cases {
        let name = case.file.file_name().unwrap().to_string_lossy().to_string();
        let out = kubectl(["apply", "-n", ns.name(), "-f", case.file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        match case.stage.as_str() {
            "admission" => {
                if out.status.success() {
                    failures.push(format!(
                        "{name}: admitted, expected refusal with {:?}",
                        case.expect
                    ));
                } else if !stderr.contains(&case.expect) {
                    failures.push(format!(
                        "{name}: refused, but without {:?}:\n{}",
                        case.expect,
                        truncate(&stderr)
                    ));
                }
                // A file of several objects may have had its first admitted (a task whose
                // reminder was refused): remove it so the next case starts clean.
                kubectl([
                    "delete",
                    "-n",
                    ns.name(),
                    "-f",
                    case.file.to_str().unwrap(),
                    "--ignore-not-found",
                    "--wait=true",
                ]);
            }
            _ => {
                if !out.status.success() {
                    failures.push(format!(
                        "{name}: refused at admission ({}), expected the operator to judge it",
                        truncate(&stderr)
                    ));
                    continue;
                }
                admitted += 1;
                let object = case
                    .object
                    .clone()
                    .unwrap_or_else(|| "RecurringTask/bad".into());
                let (kind, obj_name) = object.split_once('/').unwrap();
                let resource = if kind == "Reminder" {
                    "reminder"
                } else {
                    "recurringtask"
                };
                let reason = case.reason.clone().unwrap();
                let cond = wait_for_value(
                    Duration::from_secs(30),
                    &format!("{name}: Ready=False"),
                    || async {
                        let out =
                            kubectl(["get", resource, obj_name, "-n", ns.name(), "-o", "json"]);
                        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                        let conds = v["status"]["conditions"].as_array()?.clone();
                        conds
                            .into_iter()
                            .find(|c| c["type"] == "Ready" && c["status"] == "False")
                    },
                )
                .await;
                if cond["reason"] != reason.as_str()
                    || !cond["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains(&case.expect)
                {
                    failures.push(format!(
                        "{name}: expected reason {reason} and {:?}, got {cond}",
                        case.expect
                    ));
                }
                if !event_reasons(
                    ns.name(),
                    &format!("regarding.name={obj_name},type=Warning"),
                )
                .contains(&reason)
                {
                    failures.push(format!("{name}: no Warning event with reason {reason}"));
                }
                // Clean up so the next case can reuse the name.
                kubectl([
                    "delete",
                    "-n",
                    ns.name(),
                    "-f",
                    case.file.to_str().unwrap(),
                    "--wait=true",
                ]);
            }
        }
        assert!(
            stack.operator_alive(0),
            "{name}: the operator died:\n{}",
            stack.operator_log(0)
        );
    }
    println!(
        "bad input: {} cases ({} refused at admission, {} judged by the operator), {} failures",
        cases.len(),
        cases.len() - admitted,
        admitted,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(!stack.operator_log(0).contains("panicked"));
    ns.cleanup().await;
}

fn truncate(s: &str) -> String {
    s.chars().take(600).collect()
}
