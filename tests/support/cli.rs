//! The `mcp-edge` binary run to completion as a CLI test runs it, and the temporary directory of
//! certificates and config files such a test hands it.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

use mcp_edge::demo::pki::DevCa;

/// `EXIT_CONFIG` in src/main.rs.
pub const EXIT_CONFIG: i32 = 64;

/// What one run of the binary produced.
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The binary, with the environment a developer's shell may set (`MCP_EDGE_CONFIG`,
/// `RUST_LOG`) removed so that only the arguments count.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-edge"));
    cmd.env_remove("MCP_EDGE_CONFIG").env_remove("RUST_LOG");
    cmd
}

/// Runs the binary with `args` (see [`command`]) to completion.
pub fn run<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    command().args(args).output().expect("run mcp-edge").into()
}

/// A temporary directory for a CLI test's files, and the CA (`DevCa` or a test's own) that
/// signs its certificates.
pub struct Fixture<C = DevCa> {
    pub dir: tempfile::TempDir,
    pub ca: C,
}

impl<C> Fixture<C> {
    /// An empty directory and `ca`.
    pub fn with_ca(ca: C) -> Fixture<C> {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            ca,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write fixture file");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read fixture file")
    }
}

impl Fixture<DevCa> {
    /// A `DevCa` named `ca_name` and a default `localhost` server certificate
    /// (`server.pem` / `server.key`).
    pub fn with_dev_ca(ca_name: &str) -> Fixture<DevCa> {
        let fx = Fixture::with_ca(DevCa::new(ca_name).expect("CA"));
        fx.issue("server", &["localhost", "127.0.0.1"]);
        fx
    }

    /// Issues a server certificate for `names` into `{stem}.pem` / `{stem}.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let c = self.ca.issue_server(names).expect("issue server cert");
        (
            self.write(&format!("{stem}.pem"), &c.cert_pem),
            self.write(&format!("{stem}.key"), &c.key_pem),
        )
    }

    /// Issues a client certificate into `{stem}.pem` / `{stem}.key`.
    pub fn issue_client(&self, stem: &str) -> (PathBuf, PathBuf) {
        let c = self
            .ca
            .issue_client("mcp-edge", Some("spiffe://example.org/edge"))
            .expect("issue client cert");
        (
            self.write(&format!("{stem}.pem"), &c.cert_pem),
            self.write(&format!("{stem}.key"), &c.key_pem),
        )
    }

    /// Writes the CA certificate to `ca.pem`.
    pub fn write_ca(&self) -> PathBuf {
        self.write("ca.pem", &self.ca.cert_pem)
    }
}
