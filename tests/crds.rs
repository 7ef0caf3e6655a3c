//! Generated files stay in sync: `crds/*.yaml` and `charts/recur/crds/*.yaml` must be exactly
//! what the Rust types generate (`recur crd --out-dir crds`, or `make crds`).
//! `RECUR_UPDATE_CRDS=1 cargo test --test crds` rewrites them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn check_dir(dir: &str) {
    let files = recur::api::crd_files().unwrap();
    let dir = Path::new(REPO).join(dir);
    if std::env::var("RECUR_UPDATE_CRDS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, yaml) in &files {
            std::fs::write(dir.join(name), yaml).unwrap();
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut generated: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    generated.sort();
    assert_eq!(
        on_disk,
        generated,
        "{}: CRD files differ from the generated set; run `make crds`",
        dir.display()
    );
    for (name, yaml) in files {
        let disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            disk == yaml,
            "{}/{name} differs from what the Rust types generate; run `make crds`",
            dir.display()
        );
    }
}

#[test]
fn crds_dir_matches_the_rust_types() {
    check_dir("crds");
}

#[test]
fn chart_crds_match_the_rust_types() {
    check_dir("charts/recur/crds");
}

#[test]
fn recur_crd_prints_the_same_documents() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        recur::api::crds_yaml().unwrap()
    );
}
