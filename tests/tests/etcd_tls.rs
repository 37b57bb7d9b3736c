//! etcd over TLS with a client certificate and a user, end to end: a real etcd started with
//! `--cert-file`, `--trusted-ca-file` and `--client-cert-auth`, auth enabled with a root user;
//! a node watching it and writing through its admin API, `gateway apply` and `gateway dump`
//! reaching it; a wrong password, a missing client certificate, an unknown CA and a file that
//! does not exist each refused with an error that says so; the password in no log line.

use serde_json::json;
use std::time::Duration;
use tests::http::HttpClient;
use tests::tls::Ca;
use tests::{eventually, run_gateway, Etcd, Gateway, SecureFiles, TempDir, Upstream};

const WAIT: Duration = Duration::from_secs(20);

/// The flags that reach a secured etcd with `files`.
fn flags(files: &SecureFiles) -> Vec<&str> {
    vec![
        "--etcd-ca-file",
        files.ca.to_str().unwrap(),
        "--etcd-cert-file",
        files.cert.to_str().unwrap(),
        "--etcd-key-file",
        files.key.to_str().unwrap(),
        "--etcd-username",
        files.user,
        "--etcd-password",
        files.password,
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_apply_and_dump_reach_etcd_over_tls_as_a_user() {
    let ca = Ca::new("etcd CA");
    let etcd = Etcd::start_secure(&ca).await;
    let files = etcd.secure_files().expect("a secured etcd").clone();
    let url = etcd.url();
    assert!(url.starts_with("https://"));
    let echo = Upstream::start("a").await;
    let access = flags(&files);

    // A node: watches, and writes through its admin API.
    let mut run = vec!["--config-source", "etcd", "--etcd-endpoints", &url];
    run.extend(&access);
    let gw = Gateway::start_node("n1", "", &run, &[]).await;
    let service = json!({ "url": format!("http://{}", echo.addr) });
    assert_eq!(gw.admin_put("/services/s", &service).await.status, 200);
    let reply = gw.admin_put("/routes/r", &json!({ "service": "s", "paths": ["/"] })).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(HttpClient::new().get(&gw.url("/")).await.status, 200);
    assert_eq!(gw.status().await["etcd"], "connected");

    // apply and dump, with the same settings as flags.
    let dir = TempDir::new();
    let file = dir.path().join("gateway.yaml");
    let yaml = format!(
        "services: [{{ name: s, url: \"http://{}\", routes: [{{ name: r, paths: [/] }}, {{ name: more, paths: [/more] }}] }}]",
        echo.addr
    );
    std::fs::write(&file, yaml).unwrap();
    let mut apply = vec!["apply", file.to_str().unwrap(), "--etcd", &url];
    apply.extend(&access);
    let out = run_gateway(&apply);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("create /gateway/routes/more"), "{}", text(&out.stdout));
    eventually(WAIT, "the applied route served", || async {
        (HttpClient::new().get(&gw.url("/more")).await.status == 200).then_some(())
    })
    .await;
    let mut dump = vec!["dump", "--etcd", &url];
    dump.extend(&access);
    let out = run_gateway(&dump);
    assert!(out.status.success(), "dump: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("name: more"), "{}", text(&out.stdout));

    // Each way of getting it wrong says what is wrong, and writes nothing.
    let wrong_password: Vec<&str> =
        dump.iter().map(|a| if *a == files.password { "not-the-password" } else { *a }).collect();
    let out = run_gateway(&wrong_password);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("authentication failed"), "{}", text(&out.stderr));

    let mut no_client_cert = vec!["dump", "--etcd", &url, "--etcd-ca-file", files.ca.to_str().unwrap()];
    no_client_cert.extend(["--etcd-username", files.user, "--etcd-password", files.password]);
    let out = run_gateway(&no_client_cert);
    assert!(!out.status.success(), "dump without a client certificate: {}", text(&out.stdout));

    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new("another CA").pem).unwrap();
    let unknown_ca: Vec<&str> =
        dump.iter().map(|a| if *a == files.ca.to_str().unwrap() { other_ca.to_str().unwrap() } else { *a }).collect();
    let out = run_gateway(&unknown_ca);
    assert!(!out.status.success(), "dump trusting another CA: {}", text(&out.stdout));

    let missing: Vec<&str> =
        dump.iter().map(|a| if *a == files.key.to_str().unwrap() { "/nonexistent/key.pem" } else { *a }).collect();
    let out = run_gateway(&missing);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("etcd_key_file: cannot read /nonexistent/key.pem"), "{}", text(&out.stderr));
    let ca_file = files.ca.to_str().unwrap();
    let out = run_gateway(&["dump", "--etcd", "http://127.0.0.1:2379", "--etcd-ca-file", ca_file]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not https://"), "{}", text(&out.stderr));
    let out = run_gateway(&["dump", "--etcd", &url, "--etcd-username", "root"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("etcd_username and etcd_password go together"), "{}", text(&out.stderr));

    assert!(!gw.logs().iter().any(|l| l.contains(files.password)), "the etcd password was logged");
}
