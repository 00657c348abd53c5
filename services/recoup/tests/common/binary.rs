//! `recoup up` as a process of the real binary, on free loopback ports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

/// A running `recoup up`, stopped with SIGTERM ([`Up::stop`]) or SIGKILL ([`Up::kill`]; also
/// when dropped, e.g. by a failing test).
pub struct Up {
    child: Child,
    /// Its `--data-dir`.
    pub data: PathBuf,
    /// Its gRPC address, `127.0.0.1:PORT`, from the ready line.
    pub grpc: String,
    /// Its HTTP address, from the ready line.
    pub http: String,
    /// Kept open: the server's stdout must not become a broken pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Up {
    /// Starts `recoup up --data-dir data` with `extra` arguments and waits for its ready line.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_recoup"))
            .args(["up", "--data-dir"])
            .arg(data)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // recoup ready grpc=127.0.0.1:PORT http=... kafka=...
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix(name))
                .unwrap_or_else(|| panic!("ready line: {line:?}"))
                .to_owned()
        };
        let (grpc, http) = (field("grpc="), field("http="));
        Self {
            child,
            data: data.to_owned(),
            grpc,
            http,
            _stdout: stdout,
        }
    }

    /// The first admin key the start wrote.
    pub fn key(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The most memory the process has held so far (VmHWM, peak resident set), in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status("VmHWM:")
    }

    /// The memory the process holds now (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        self.status("VmRSS:")
    }

    /// A size line of `/proc/PID/status`, in bytes.
    fn status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        kib * 1024
    }

    /// Sends SIGTERM and returns at once; [`Up::wait`] collects the exit.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit.
    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// SIGTERM, then the exit status of the clean shutdown.
    pub fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    /// SIGKILL: the process ends at once, mid-work.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
