//! Real certificates for TLS tests, made with `openssl` (the test script installs it): a CA
//! of the test's own, and certificates it signs for `127.0.0.1` and `localhost`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority in a scratch directory.
pub struct TestCa {
    dir: PathBuf,
    /// The CA's certificate (PEM): what peers trust.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A certificate and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA whose files live in `dir` (created).
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("a scratch directory");
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        openssl(
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=switchboard test CA"],
            &[("-keyout", &key), ("-out", &cert)],
        );
        TestCa { dir: dir.to_owned(), cert, key }
    }

    /// A certificate named `name` for `127.0.0.1` and `localhost`, signed by this CA.
    pub fn issue(&self, name: &str) -> Issued {
        self.issue_for(name, "IP:127.0.0.1,DNS:localhost")
    }

    /// A certificate named `name` for the subject alternative names `names` (openssl's syntax:
    /// `DNS:a,IP:1.2.3.4`), signed by this CA.
    pub fn issue_for(&self, name: &str, names: &str) -> Issued {
        let file = |suffix: &str| self.dir.join(format!("{name}.{suffix}"));
        let (key, csr, cert, ext) = (file("key"), file("csr"), file("crt"), file("ext"));
        std::fs::write(&ext, format!("subjectAltName={names}\n")).expect("writable");
        openssl(
            &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={name}")],
            &[("-keyout", &key), ("-out", &csr)],
        );
        openssl(
            &["x509", "-req", "-days", "2", "-CAcreateserial"],
            &[("-in", &csr), ("-CA", &self.cert), ("-CAkey", &self.key), ("-out", &cert), ("-extfile", &ext)],
        );
        Issued { cert, key }
    }
}

fn openssl(args: &[&str], files: &[(&str, &Path)]) {
    let mut command = Command::new("openssl");
    command.args(args);
    for (flag, path) in files {
        command.arg(flag).arg(path);
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run openssl ({e}): the test script installs it"));
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}
