//! CPU profiles of kube-apiserver itself: `GET /debug/pprof/profile?seconds=S` with the
//! kubeconfig's admin credentials (through `kubectl get --raw`, which writes the body as is),
//! summarised with `go tool pprof -top` (the profile carries its symbols: no binary needed).
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::error::{Res, msg};
use crate::say;

/// A profile being recorded.
pub struct Profile {
    child: Child,
    path: PathBuf,
}

impl Profile {
    /// Starts a `seconds`-long CPU profile of the kubeconfig's apiserver, written to `path`.
    pub fn start(kubectl: &Path, kubeconfig: &Path, seconds: u64, path: &Path) -> Res<Self> {
        let out = std::fs::File::create(path)
            .map_err(|e| msg(format!("creating {}: {e}", path.display())))?;
        let child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--request-timeout")
            .arg(format!("{}s", seconds + 60))
            .args(["get", "--raw"])
            .arg(format!("/debug/pprof/profile?seconds={seconds}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| msg(format!("running {}: {e}", kubectl.display())))?;
        Ok(Profile {
            child,
            path: path.to_owned(),
        })
    }

    /// Waits for the profile and writes `<path>.top.txt` (flat) and `<path>.cum.txt`
    /// (cumulative) next to it; returns the flat summary's first `lines` entries.
    pub async fn finish(self, lines: usize) -> Res<String> {
        let out = self
            .child
            .wait_with_output()
            .await
            .map_err(|e| msg(format!("waiting for the profile: {e}")))?;
        if !out.status.success() {
            return Err(msg(format!(
                "the profile {} failed: {}",
                self.path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut flat = String::new();
        for (suffix, extra) in [("top", None), ("cum", Some("-cum"))] {
            let mut cmd = Command::new("go");
            cmd.args(["tool", "pprof", "-top", "-nodecount=40"]);
            if let Some(x) = extra {
                cmd.arg(x);
            }
            let text = match cmd.arg(&self.path).output().await {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
                Ok(o) => format!(
                    "go tool pprof failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => format!("go tool pprof is not available ({e})"),
            };
            let txt = self.path.with_extension(format!("{suffix}.txt"));
            std::fs::write(&txt, &text)
                .map_err(|e| msg(format!("writing {}: {e}", txt.display())))?;
            if suffix == "top" {
                flat = text;
            }
        }
        say(format!("profile {}", self.path.display()));
        Ok(top_entries(&flat, lines))
    }
}

/// The first `lines` entries of `go tool pprof -top` (after its header), with the header's
/// sample line.
pub fn top_entries(text: &str, lines: usize) -> String {
    let mut out: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Duration:") || l.starts_with("Showing nodes"))
        .collect();
    let mut rows = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .take(lines + 1);
    out.extend(rows.by_ref());
    out.join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::top_entries;

    #[test]
    fn keeps_the_header_and_the_first_entries() {
        let text = "File: kube-apiserver\nDuration: 10s, Total samples = 5s (50%)\nShowing nodes accounting for 4s, 80% of 5s total\n      flat  flat%   sum%        cum   cum%\n     1s 20% 20% 1s 20%  runtime.mallocgc\n     0.5s 10% 30% 1s 20%  encoding/json.Unmarshal\n     0.1s 2% 32% 0.1s 2%  x\n";
        let top = top_entries(text, 2);
        assert!(top.starts_with("Duration: 10s"), "{top}");
        assert!(top.contains("runtime.mallocgc"));
        assert!(top.contains("encoding/json.Unmarshal"));
        assert!(!top.contains("  x"));
    }
}
