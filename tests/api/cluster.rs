//! Throwaway PostgreSQL clusters for the tests that need more than the shared server: a TLS-only
//! server with a generated certificate, a server to stop and restart. Each is a real `postgres`
//! from the installed binaries (`initdb`, `pg_ctl`), in a temporary directory, on a free port,
//! stopped and removed when dropped. Started as the `postgres` user when the tests run as root
//! (PostgreSQL refuses to run as root).

#![allow(dead_code)] // not every test uses every part

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The newest installed PostgreSQL's binaries, if any.
pub fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port()
}

impl PgCluster {
    /// initdb with trust authentication; `conf` is appended to postgresql.conf and `hba` replaces
    /// pg_hba.conf when given. `prepare` runs on the data directory before the server starts (to
    /// put certificates there).
    pub fn start(conf: &str, hba: Option<&str>, prepare: impl FnOnce(&Path)) -> Self {
        let bin = pg_bin().expect("PostgreSQL binaries are installed");
        let dir = std::env::temp_dir().join(format!("panels-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let data = dir.join("data");
        if is_root() {
            chown_postgres(&dir);
        }
        let status = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-N"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let mut settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 50\n{conf}\n",
            dir.display()
        );
        settings.push('\n');
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).expect("conf");
        existing.push_str(&settings);
        std::fs::write(&conf_path, existing).expect("write conf");
        if let Some(hba) = hba {
            std::fs::write(data.join("pg_hba.conf"), hba).expect("write hba");
        }
        prepare(&data);
        if is_root() {
            chown_postgres(&dir);
        }
        let cluster = Self { dir, port, bin };
        cluster.pg_ctl(&["start", "-w", "-t", "30"]);
        cluster
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn pg_ctl(&self, args: &[&str]) {
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("pg_ctl");
        assert!(
            status.success(),
            "pg_ctl {args:?} failed: {}",
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// A URL of this cluster (trust authentication as `postgres`).
    pub fn url(&self, host: &str, database: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://postgres@{host}:{}/{database}{q}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["stop", "-m", "immediate", "-w"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chown_postgres(dir: &Path) {
    let _ = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(dir)
        .status();
}

/// A certificate authority and a server certificate it signed for `localhost` and 127.0.0.1,
/// made with the `openssl` command. Answers (CA certificate path, server cert path, key path).
pub fn make_certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join(format!("{name}-ca.key"));
    let ca = dir.join(format!("{name}-ca.pem"));
    let key = dir.join(format!("{name}-server.key"));
    let csr = dir.join(format!("{name}-server.csr"));
    let cert = dir.join(format!("{name}-server.pem"));
    let ext = dir.join(format!("{name}-ext.cnf"));
    std::fs::write(
        &ext,
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .expect("ext");
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let p = |p: &Path| p.to_string_lossy().into_owned();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    (ca, cert, key)
}
