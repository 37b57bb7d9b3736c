//! The quickstart of docs/quickstart.md, as a new user follows it, against `docker-compose up`
//! on this machine: the unchanged docker-compose.yml, with its image variables pointed at images
//! built here (no registry can be reached): the gateway from the binaries of this build, etcd and
//! Redis from Debian's packages, and the OTLP receiver standing in for Jaeger. Each image is the
//! binaries and the shared libraries they load, on an empty base.
//!
//! Runs wherever a Docker engine answers; elsewhere it says so and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tests::http::HttpClient;
use tests::{eventually, gateway_binary, TempDir};

const WAIT: Duration = Duration::from_secs(90);

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn docker_answers() -> bool {
    let engine = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    let compose = Command::new("docker-compose").arg("version").output();
    matches!((engine, compose), (Ok(e), Ok(c)) if e.status.success() && c.status.success())
}

/// Copies `file` into `root` at the same path, with every shared library it loads.
fn install(root: &Path, file: &Path, at: &str) {
    let target = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(file, &target).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    // Debug binaries are large; the symbols are not needed to run.
    let _ = Command::new("strip").arg("--strip-debug").arg(&target).output();
    let ldd = run(Command::new("ldd").arg(file));
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next().unwrap_or("");
        if lib.starts_with('/') {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
        }
    }
}

/// Builds image `tag` from `files` (source, path in the image), running `cmd`.
fn image(dir: &Path, tag: &str, files: &[(PathBuf, &str)], cmd: &[&str]) {
    let context = dir.join(tag.replace([':', '/'], "-"));
    let root = context.join("root");
    for (file, at) in files {
        install(&root, file, at);
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let dest = root.join("examples");
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
    let cmd = serde_json::to_string(cmd).unwrap();
    std::fs::write(context.join("Dockerfile"), format!("FROM scratch\nCOPY root/ /\nCMD {cmd}\n")).unwrap();
    run(Command::new("docker").args(["build", "-q", "-t", tag]).arg(&context));
}

/// The compose project; taken down (with its volumes) when dropped.
struct Compose {
    project: String,
    env: Vec<(String, String)>,
}

impl Compose {
    fn command(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")).args(["-p", &self.project]);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = self.command().args(["down", "-v", "--remove-orphans", "-t", "2"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_on_docker_compose() {
    if !docker_answers() {
        eprintln!("no Docker engine or docker-compose answers here: the compose quickstart is not run");
        return;
    }
    let dir = TempDir::new();
    let bins = gateway_binary().parent().unwrap().to_path_buf();
    let tag = std::process::id();
    let (gateway, etcd, redis, jaeger) = (
        format!("gwtest/gateway:{tag}"),
        format!("gwtest/etcd:{tag}"),
        format!("gwtest/redis:{tag}"),
        format!("gwtest/jaeger:{tag}"),
    );
    image(
        dir.path(),
        &gateway,
        &[(bins.join("gateway"), "/usr/bin/gateway"), (bins.join("echo-upstream"), "/usr/bin/echo-upstream")],
        &["gateway", "run"],
    );
    image(
        dir.path(),
        &etcd,
        &[(PathBuf::from("/usr/bin/etcd"), "/usr/bin/etcd"), (PathBuf::from("/usr/bin/etcdctl"), "/usr/bin/etcdctl")],
        &["etcd"],
    );
    image(dir.path(), &redis, &[(PathBuf::from("/usr/bin/redis-server"), "/usr/bin/redis-server")], &["redis-server"]);
    image(
        dir.path(),
        &jaeger,
        &[(bins.join("otlp-sink"), "/usr/bin/otlp-sink")],
        &["otlp-sink", "--listen", "0.0.0.0:4317"],
    );
    let compose = Compose {
        project: format!("gwtest{tag}"),
        env: vec![
            ("GATEWAY_IMAGE".into(), gateway.clone()),
            ("ETCD_IMAGE".into(), etcd.clone()),
            ("REDIS_IMAGE".into(), redis.clone()),
            ("JAEGER_IMAGE".into(), jaeger.clone()),
        ],
    };

    // Step 1 of the quickstart: docker compose up.
    run(compose.command().args(["up", "-d", "--no-build"]));
    let c = HttpClient::new();
    let get = |url: String| {
        let c = c.clone();
        // Until a node listens, Docker's port forwarder takes connections and closes them.
        async move { tokio::time::timeout(Duration::from_secs(3), c.try_get(&url)).await.ok()?.ok() }
    };
    // The loader applied examples/cluster.yaml: the demo answers at once, on every node.
    for port in [8000, 8010, 8020] {
        eventually(WAIT, "the demo route to answer", || async {
            get(format!("http://127.0.0.1:{port}/demo")).await.filter(|r| r.status == 200).map(|_| ())
        })
        .await;
    }
    for admin in [8001, 8011, 8021] {
        eventually(WAIT, "three members, etcd and Redis connected", || async {
            let status = get(format!("http://127.0.0.1:{admin}/status")).await?.json();
            let ready =
                status["cluster"]["members"] == 3 && status["etcd"] == "connected" && status["redis"] == "connected";
            ready.then_some(())
        })
        .await;
    }

    // Step 2: write a service, an upstream, its targets and a route with etcdctl.
    for (key, value) in [
        ("/gateway/upstreams/orders-up", "{}"),
        ("/gateway/upstreams/orders-up/targets/echo-1:8080", "{}"),
        ("/gateway/upstreams/orders-up/targets/echo-2:8080", "{}"),
        ("/gateway/services/orders", r#"{"url": "http://orders-up"}"#),
        ("/gateway/routes/orders", r#"{"service": "orders", "paths": ["/orders"]}"#),
    ] {
        run(compose.command().args(["exec", "-T", "etcd", "etcdctl", "put", key, value]));
    }

    // Step 3: curl through each node.
    for port in [8000, 8010, 8020] {
        let reply = eventually(WAIT, "the new route on every node", || async {
            get(format!("http://127.0.0.1:{port}/orders")).await.filter(|r| r.status == 200)
        })
        .await;
        let instance = reply.instance();
        assert!(instance == "echo-1" || instance == "echo-2", "{instance}");
    }

    // Step 4: the trace, with the node that served it.
    get("http://127.0.0.1:8010/orders".into()).await.expect("a reply");
    eventually(WAIT, "gateway-2's spans at the collector", || async {
        let logs = compose.command().args(["logs", "--no-color", "jaeger"]).output().ok()?;
        String::from_utf8_lossy(&logs.stdout).contains("gateway-2 trace=").then_some(())
    })
    .await;

    // Step 5: a health reset on one node, seen on another.
    let reset =
        c.call(http::Method::PUT, "http://127.0.0.1:8001/upstreams/orders-up/targets/echo-2:8080/unhealthy", "").await;
    assert_eq!(reset.status, 204);
    eventually(WAIT, "the reset on gateway-3", || async {
        let health = get("http://127.0.0.1:8021/upstreams/orders-up/health".into()).await?.json();
        let echo2 = health["data"].as_array()?.iter().find(|t| t["target"] == "echo-2:8080")?.clone();
        (echo2["health"] == "UNHEALTHY").then_some(())
    })
    .await;

    // Step 6: the rate-limit headers of the demo route.
    let demo = get("http://127.0.0.1:8000/demo".into()).await.expect("a reply");
    assert_eq!(demo.header("x-ratelimit-limit-minute"), "600");
    assert!(!demo.header("ratelimit-remaining").is_empty());

    // Step 7: HTTPS on 8443, with the certificate gateway-1 made for localhost at start.
    let https = run(Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("https://localhost:8443/demo"));
    assert_eq!(String::from_utf8_lossy(&https.stdout), "200");

    drop(compose);
    for tag in [gateway, etcd, redis, jaeger] {
        let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    }
}
