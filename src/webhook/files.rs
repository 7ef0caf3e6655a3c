//! Certificate from files: `tls.crt` and `tls.key` in a directory (a cert-manager or Helm Secret
//! mounted there). The kubelet updates a mounted Secret by swapping a symlink, so a changed
//! modification time of either file (symlinks followed) means new contents.
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::tls::{Certificates, TlsError};

/// Errors of reading the certificate files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}/tls.crt and tls.key: {source}")]
    Invalid { dir: PathBuf, source: TlsError },
}

/// The certificate files of a directory, and what was loaded from them last.
pub(crate) struct CertDir {
    dir: PathBuf,
    loaded: Option<(SystemTime, SystemTime)>,
}

impl CertDir {
    pub(crate) fn new(dir: &Path) -> CertDir {
        CertDir {
            dir: dir.to_path_buf(),
            loaded: None,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn modified(&self, file: &str) -> Result<SystemTime, FilesError> {
        let path = self.path(file);
        std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|source| FilesError::Read { path, source })
    }

    /// Loads the files into `certs` when they changed since the last load; `Ok(true)` when it
    /// loaded them. A failed load keeps serving what was loaded before.
    pub(crate) fn reload(&mut self, certs: &Certificates) -> Result<bool, FilesError> {
        let stamp = (self.modified("tls.crt")?, self.modified("tls.key")?);
        if self.loaded == Some(stamp) {
            return Ok(false);
        }
        let read = |file: &str| {
            let path = self.path(file);
            std::fs::read(&path).map_err(|source| FilesError::Read { path, source })
        };
        let (cert, key) = (read("tls.crt")?, read("tls.key")?);
        certs
            .set(&cert, &key)
            .map_err(|source| FilesError::Invalid {
                dir: self.dir.clone(),
                source,
            })?;
        self.loaded = Some(stamp);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::webhook::certs;

    #[test]
    fn loads_once_and_again_when_the_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let certs_store = Certificates::default();
        let mut files = CertDir::new(dir.path());
        let err = files.reload(&certs_store).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
        let now = chrono::Utc::now();
        let ca = certs::new_ca(now).unwrap();
        let a = certs::new_serving(&ca.key_pem, &["a.svc".into()], now).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &a.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &a.key_pem).unwrap();
        assert!(files.reload(&certs_store).unwrap());
        assert!(certs_store.is_loaded());
        assert!(
            !files.reload(&certs_store).unwrap(),
            "unchanged files are not read again"
        );
        // A new pair, with a later modification time.
        let b = certs::new_serving(&ca.key_pem, &["b.svc".into()], now).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        for (name, text) in [("tls.crt", &b.cert_pem), ("tls.key", &b.key_pem)] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(files.reload(&certs_store).unwrap());
        // A key that does not fit is refused, and named without its contents.
        std::fs::write(dir.path().join("tls.key"), &a.key_pem).unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("tls.key"))
            .unwrap()
            .set_modified(later + std::time::Duration::from_secs(5))
            .unwrap();
        let err = files.reload(&certs_store).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert!(!err.to_string().contains("PRIVATE"), "{err}");
    }
}
