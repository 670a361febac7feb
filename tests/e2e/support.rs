//! Test harness: a real `redis-server` per test on a free port, real `cannon-host`
//! processes, compose files in a temp dir, and helpers to talk to the streams directly.

#![allow(dead_code, reason = "each test module uses a different part of the harness")]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::Value;

/// The repository root (this file is `tests/e2e/support.rs`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `guests/build.sh` puts components.
pub fn app_dir() -> PathBuf {
    repo().join("app")
}

/// Path of a built component, failing with a clear hint when guests were not built.
pub fn component(name: &str) -> PathBuf {
    let path = app_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run guests/build.sh (scripts/test does) before the tests", path.display());
    path
}

/// The compiled-component cache shared by every test's host processes.
pub fn cache_dir() -> PathBuf {
    repo().join("target").join("cannon-test-cache")
}

/// A free loopback TCP port (bound and released; take it quickly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

/// A `redis-server` of this test's own, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    /// `--requirepass`, when started by [`RedisServer::start_secure`].
    pub password: Option<String>,
    /// The TLS port, when started by [`RedisServer::start_secure`].
    pub tls_port: Option<u16>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts redis-server with extra arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let child = spawn_redis(port, dir.path(), extra);
            let mut server = RedisServer { port, child, dir, password: None, tls_port: None };
            if server.wait_ready() {
                return server;
            }
            // Most likely the port was taken in between; `Drop` kills this one.
        }
        panic!("redis-server did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut con) = self.client().get_connection()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Plain-text URL of the server, with the password when it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A server that also listens with TLS (certificate from `ca`, clients not asked for
    /// one) and requires `password` on both ports.
    pub fn start_secure(ca: &TestCa, password: &str) -> Self {
        let (cert, key) = ca.issue("redis");
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (port, tls_port) = (free_port(), free_port());
            let (tls, cert, key, ca_file) =
                (tls_port.to_string(), cert.display().to_string(), key.display().to_string(), ca.cert_text());
            let extra = [
                "--tls-port",
                tls.as_str(),
                "--tls-cert-file",
                cert.as_str(),
                "--tls-key-file",
                key.as_str(),
                "--tls-ca-cert-file",
                ca_file.as_str(),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                password,
            ];
            let child = spawn_redis(port, dir.path(), &extra);
            let mut server =
                RedisServer { port, child, dir, password: Some(password.to_owned()), tls_port: Some(tls_port) };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("redis-server with TLS did not start (is it built with TLS support?)");
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }

    pub fn con(&self) -> redis::Connection {
        self.client().get_connection().expect("connect to test redis")
    }

    /// Stops the server (SIGTERM, so an AOF is flushed) and waits for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.child = spawn_redis(self.port, self.dir.path(), extra);
        assert!(self.wait_ready(), "redis-server did not come back");
    }
}

fn spawn_redis(port: u16, dir: &Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is not installed")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local Redis Cluster of its own: 3 masters and 3 replicas (`redis-cli --cluster
/// create`), on loopback ports, node timeout 1 s (a killed master's replica takes over
/// within a few seconds); every node killed on drop.
pub struct RedisCluster {
    /// Client port of each node.
    pub ports: Vec<u16>,
    /// Cluster bus port of each node.
    buses: Vec<u16>,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cluster = RedisCluster { ports: Vec::new(), buses: Vec::new(), children: Vec::new(), dir };
            for _ in 0..6 {
                let (port, bus) = (free_port(), free_port());
                cluster.children.push(cluster.spawn_node(port, bus));
                cluster.ports.push(port);
                cluster.buses.push(bus);
            }
            if cluster.ports.iter().all(|p| node_ready(*p)) && cluster.create() {
                return cluster;
            }
            // A port was taken in between, most likely; `Drop` kills these.
        }
        panic!("the local Redis Cluster did not start");
    }

    fn spawn_node(&self, port: u16, bus: u16) -> Child {
        let node_dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("node dir");
        let (bus, conf) = (bus.to_string(), format!("nodes-{port}.conf"));
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            bus.as_str(),
            "--cluster-config-file",
            conf.as_str(),
            "--cluster-node-timeout",
            "1000",
            "--cluster-replica-validity-factor",
            "0",
        ];
        spawn_redis(port, &node_dir, &extra)
    }

    /// Starts a killed node again (same port and directory): it rejoins the cluster, as a
    /// replica when its slots were taken over meanwhile.
    pub fn restart(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        self.children[i] = self.spawn_node(port, self.buses[i]);
        assert!(node_ready(port), "node :{port} did not come back");
    }

    fn create(&self) -> bool {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is not installed");
        if !out.status.success() {
            eprintln!("redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
            return false;
        }
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Waits until every live node reports `cluster_state:ok` and every master has a replica
    /// in sync.
    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let live: Vec<u16> = self.ports.iter().copied().filter(|p| node_answers(*p)).collect();
            let ok = live.iter().all(|p| node_info(*p, "CLUSTER", Some("INFO")).contains("cluster_state:ok"));
            let masters = self.masters();
            let synced = masters.len() == 3
                && masters.iter().all(|(port, _)| {
                    let info = node_info(*port, "INFO", Some("replication"));
                    info.contains("connected_slaves:1") && info.contains("state=online")
                });
            if ok && synced {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// `(port, slot ranges)` of each master, from `CLUSTER NODES` of a live node.
    pub fn masters(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let Some(live) = self.ports.iter().copied().find(|p| node_answers(*p)) else { return Vec::new() };
        let nodes = node_info(live, "CLUSTER", Some("NODES"));
        let mut out = Vec::new();
        for line in nodes.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() < 8 || !parts[2].contains("master") || parts[2].contains("fail") {
                continue;
            }
            let Some(port) = parts[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()) else { continue };
            let ranges = parts[8..]
                .iter()
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|n| (n, n)),
                })
                .collect::<Vec<_>>();
            if !ranges.is_empty() {
                out.push((port, ranges));
            }
        }
        out
    }

    /// Port of the master owning `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key).expect("a master owns every slot")
    }

    /// Port of the master owning `key`'s slot, if a live one does (not during a failover).
    pub fn try_master_of(&self, key: &str) -> Option<u16> {
        let live = self.ports.iter().copied().find(|p| node_answers(*p)).expect("a live node");
        let mut con =
            redis::Client::open(format!("redis://127.0.0.1:{live}")).expect("url").get_connection().expect("connect");
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut con).expect("CLUSTER KEYSLOT");
        self.masters()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(port, _)| port)
    }

    /// Port of a replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        let live = self.ports.iter().copied().find(|p| node_answers(*p))?;
        let nodes = node_info(live, "CLUSTER", Some("NODES"));
        let port_of = |address: &str| address.split(['@', ':']).nth(1).and_then(|p| p.parse::<u16>().ok());
        let lines: Vec<Vec<&str>> =
            nodes.lines().map(|l| l.split(' ').collect()).filter(|p: &Vec<&str>| p.len() > 3).collect();
        let id = lines.iter().find(|p| port_of(p[1]) == Some(master))?[0];
        lines.iter().find(|p| p[2].contains("slave") && p[3] == id).and_then(|p| port_of(p[1]))
    }

    /// Sends `signal` (`STOP`, `CONT`) to the node on `port`.
    pub fn signal(&self, port: u16, signal: &str) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.children[i].id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} of node :{port}");
    }

    /// Closes the replication links of the master on `port` (`CLIENT KILL TYPE replica`).
    pub fn cut_replication(&self, port: u16) {
        let mut con =
            redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url").get_connection().expect("connect");
        let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica").query(&mut con).expect("CLIENT KILL");
    }

    /// kill -9 of the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// `redis+cluster://` URL naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// A client of the cluster for the test's own commands.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
        redis::cluster::ClusterClient::new(nodes).expect("cluster client")
    }

    pub fn con(&self) -> redis::cluster::ClusterConnection {
        self.client().get_connection().expect("connect to the test cluster")
    }
}

/// Whether the node on `port` answers PING within 10 s (a node just started).
fn node_ready(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if node_answers(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether the node on `port` answers PING now.
fn node_answers(port: u16) -> bool {
    node_info(port, "PING", None) == "PONG"
}

/// The text reply of `CMD [SUB]` on one node (empty when it does not answer).
fn node_info(port: u16, cmd: &str, sub: Option<&str>) -> String {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else { return String::new() };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) else { return String::new() };
    let mut command = redis::cmd(cmd);
    if let Some(sub) = sub {
        command.arg(sub);
    }
    command.query::<String>(&mut con).unwrap_or_default()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `cannon-host -f COMPOSE --broker URL`, for a broker other than a [`RedisServer`] (a
/// cluster's `redis+cluster://` URL).
pub fn host_at(project: &Project, url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
    cmd.arg("-f")
        .arg(&project.compose)
        .arg("--broker")
        .arg(url)
        .env("CANNON_CACHE_DIR", cache_dir())
        .env_remove("CANNON_BROKER")
        .env("CANNON_LOG", "info,cannon_host=debug")
        .current_dir(project.dir.path());
    cmd
}

/// A temp dir holding a compose file.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub compose: PathBuf,
}

impl Project {
    /// Writes `body` (services and the rest) after a header setting `app_dir` to the built
    /// guests. Use `{app}` in `body` for that directory.
    pub fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let compose = dir.path().join("cannon-compose.yml");
        let app = app_dir();
        let text = format!("app_dir: {}\n{}", app.display(), body.replace("{app}", &app.display().to_string()));
        std::fs::write(&compose, text).expect("write compose");
        Project { dir, compose }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The `cannon-host` binary with the test's compose file, broker and component cache.
pub fn host(project: &Project, redis: &RedisServer) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cannon-host"));
    cmd.arg("-f")
        .arg(&project.compose)
        .arg("--broker")
        .arg(redis.url())
        .env("CANNON_CACHE_DIR", cache_dir())
        .env_remove("CANNON_BROKER")
        .env("CANNON_LOG", "info,cannon_host=debug")
        .current_dir(project.dir.path());
    cmd
}

/// A running `cannon-host run ...`, interrupted on drop. Its stderr goes to a log file.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn start(project: &Project, redis: &RedisServer, args: &[&str]) -> Self {
        Self::start_cmd(host(project, redis), project, args)
    }

    pub fn start_cmd(mut cmd: Command, project: &Project, args: &[&str]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = project.path(&format!("host-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn cannon-host");
        Running { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, failing with the log after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cannon-host exited with {status} before logging {needle:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cannon-host did not log {needle:?} within {timeout:?}:\n{}", self.log_text());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "cannon-host did not stop after SIGTERM:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `cannon-host ARGS...` to completion with optional stdin.
pub fn run_host(project: &Project, redis: &RedisServer, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = host(project, redis);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cannon-host");
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait cannon-host")
}

/// Stream key of a service (under its hash tag `{cannon:SERVICE}`).
pub fn key(service: &str, stream: &str) -> String {
    format!("{{cannon:{service}}}:{stream}")
}

/// Adds messages straight to a service's data stream; returns their ids (pipelined, or one
/// by one on a connection without pipelines: a cluster's).
pub fn add_messages(
    con: &mut impl redis::ConnectionLike,
    service: &str,
    messages: &[Vec<(&str, String)>],
) -> Vec<String> {
    let xadd = |fields: &Vec<(&str, String)>| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key(service, "data")).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(v);
        }
        cmd
    };
    if !con.supports_pipelining() {
        return messages.iter().map(|fields| xadd(fields).query(con).expect("XADD")).collect();
    }
    let mut pipe = redis::pipe();
    for fields in messages {
        pipe.add_command(xadd(fields));
    }
    pipe.query(con).expect("XADD")
}

/// Every entry of a stream, as (id, fields).
pub fn entries(con: &mut impl redis::ConnectionLike, key: &str) -> Vec<(String, Vec<(String, String)>)> {
    let value: Value = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(con).expect("XRANGE");
    let Value::Array(items) = value else { panic!("XRANGE reply {value:?}") };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(parts) = item else { panic!("entry {item:?}") };
            let id: String = redis::from_redis_value(parts[0].clone()).expect("id");
            let flat: Vec<String> = redis::from_redis_value(parts[1].clone()).expect("fields");
            let fields = flat.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
            (id, fields)
        })
        .collect()
}

pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub fn xlen(con: &mut impl redis::ConnectionLike, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(con).expect("XLEN")
}

/// Waits until `key` holds at least `n` entries.
pub fn wait_len(con: &mut impl redis::ConnectionLike, key: &str, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let len = xlen(con, key);
        if len >= n || Instant::now() >= deadline {
            return len;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Messages pending in the workers' group (delivered, not acknowledged).
pub fn pending(con: &mut impl redis::ConnectionLike, service: &str) -> usize {
    let value: Value = redis::cmd("XPENDING").arg(key(service, "data")).arg("cannon").query(con).expect("XPENDING");
    match value {
        Value::Array(parts) => redis::from_redis_value(parts[0].clone()).unwrap_or(0),
        other => panic!("XPENDING reply {other:?}"),
    }
}

/// A certificate authority made with `openssl` at test time, issuing certificates for
/// 127.0.0.1 and localhost.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    serial: AtomicUsize,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa { dir, serial: AtomicUsize::new(1) };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cannon test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl is not installed (Debian package `openssl`)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The CA certificate (PEM file).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert_text(&self) -> String {
        self.cert().display().to_string()
    }

    /// A new leaf certificate and key `NAME-N.pem`, `NAME-N.key` (a new serial each time).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let (cert, key, csr, ext) = (
            format!("{name}-{n}.pem"),
            format!("{name}-{n}.key"),
            format!("{name}-{n}.csr"),
            format!("{name}-{n}.ext"),
        );
        std::fs::write(
            self.dir.path().join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name} {n}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &(1000 + n).to_string(),
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        (self.dir.path().join(cert), self.dir.path().join(key))
    }
}

/// `text` without the version tags a dead letter gives each step (`spin@0123456789ab:` ->
/// `spin:`), for tests about other parts of the error.
pub fn unversioned(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let tag = rest.as_bytes().get(at + 1..at + 13);
        let is_version = tag.is_some_and(|t| t.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
            && !rest.as_bytes().get(at + 13).is_some_and(u8::is_ascii_hexdigit);
        out.push_str(&rest[..at]);
        if is_version {
            rest = &rest[at + 13..];
        } else {
            out.push('@');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}
