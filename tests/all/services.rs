//! Services end to end with the real kubectl: a Deployment of 3 `http-hello` replicas behind a
//! ClusterIP and a NodePort Service; requests to ClusterIP:port and 127.0.0.1:nodePort reach
//! all 3 pods, a deleted pod leaves the rotation, and an `http-client` pod reaches the Service
//! by name (`http://hello.default.svc/`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use crate::support::{eventually, example_component, Cluster};

fn import(c: &Cluster, file: &str, image: &str) {
    c.import(&example_component(file), image);
}

const APP: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 3
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: hello
        image: wasmkube.local/http-hello:v1
        imagePullPolicy: Never
        ports: [{name: http, containerPort: 8080}]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - {name: READY_FILE, value: /state/unready}
        volumeMounts: [{name: state, mountPath: /state}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
      volumes: [{name: state, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: hello-np}
spec:
  type: NodePort
  selector: {app: hello}
  ports: [{port: 8081, targetPort: 8080}]
";

/// One `GET /` over a fresh connection: the body, or `None` on any failure.
fn get(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.trim().to_string())
}

/// Pod names answering `n` requests to `addr` (`hello from <pod>`; the body may be chunked).
fn answers(addr: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| get(addr))
        .filter_map(|b| {
            b.lines()
                .find_map(|l| l.trim().strip_prefix("hello from ").map(str::to_string))
        })
        .collect()
}

fn hello_pods(c: &Cluster) -> BTreeSet<String> {
    c.ok(&[
        "get",
        "pods",
        "-l",
        "app=hello",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ])
    .lines()
    .map(str::trim)
    // Not being deleted: no timestamp after the name.
    .filter(|l| !l.is_empty() && !l.contains(' '))
    .map(str::to_string)
    .collect()
}

fn ready_endpoints(c: &Cluster, svc: &str) -> usize {
    c.ok(&[
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
        "-o",
        r#"jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}"#,
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count()
}

#[test]
fn services_balance_over_ready_pods_follow_deletions_and_resolve_by_name() {
    let c = Cluster::start();
    import(&c, "http_hello.wasm", "wasmkube.local/http-hello:v1");
    import(&c, "http-client.wasm", "wasmkube.local/http-client:v1");
    c.ok_in(&["apply", "-f", "-"], APP);

    let ip = c.ok(&["get", "svc", "hello", "-o", "jsonpath={.spec.clusterIP}"]);
    let ip = ip.trim();
    assert!(
        ip.starts_with("127."),
        "ClusterIP {ip} from the service CIDR"
    );
    let node_port = c.ok(&[
        "get",
        "svc",
        "hello-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let node_port: u16 = node_port.trim().parse().expect("a node port");
    assert!((30000..=32767).contains(&node_port));
    let err = c.err(&[
        "create",
        "service",
        "clusterip",
        "dup",
        "--tcp=80",
        &format!("--clusterip={ip}"),
    ]);
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let api_ip = c.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(
        api_ip.trim(),
        c.service_range.replace(".0/24", ".1"),
        "the kubernetes Service has the range's first address"
    );

    eventually(120, "3 ready endpoints of hello", || {
        (ready_endpoints(&c, "hello") == 3).then_some(())
    });
    let pods = hello_pods(&c);
    assert_eq!(pods.len(), 3, "{pods:?}");
    let cluster_addr = format!("{ip}:80");
    let node_addr = format!("127.0.0.1:{node_port}");
    for addr in [&cluster_addr, &node_addr] {
        // Every pod answers (round robin over 3: a dozen requests see them all).
        eventually(60, &format!("all 3 pods answering through {addr}"), || {
            (answers(addr, 12) == pods).then_some(())
        });
    }

    // A deleted pod leaves the rotation; its replacement joins it.
    let gone = pods.iter().next().expect("a pod").clone();
    c.ok(&["delete", "pod", &gone, "--wait=false"]);
    eventually(60, &format!("{gone} out of rotation"), || {
        let seen = answers(&cluster_addr, 12);
        (!seen.contains(&gone) && seen.len() == 3).then_some(())
    });

    // A pod whose readiness fails leaves the rotation, and comes back when it passes again.
    let pods = hello_pods(&c);
    let sick = pods.iter().next().expect("a pod").clone();
    let sick_ip = c.ok(&["get", "pod", &sick, "-o", "jsonpath={.status.podIP}"]);
    let sick_addr = format!("{}:8080", sick_ip.trim());
    let flip = |path: &str| {
        let mut s = std::net::TcpStream::connect(&sick_addr).expect("connect to the pod");
        let req = format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).expect("request");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    };
    flip("/unready");
    eventually(60, &format!("{sick} out of rotation while unready"), || {
        let seen = answers(&cluster_addr, 12);
        (ready_endpoints(&c, "hello") == 2 && !seen.contains(&sick) && seen.len() == 2)
            .then_some(())
    });
    flip("/ready");
    eventually(60, &format!("{sick} back in rotation"), || {
        (answers(&cluster_addr, 12) == pods).then_some(())
    });

    // A pod reaches the Service by name through wasi-http.
    c.ok(&[
        "run",
        "client",
        "--image=wasmkube.local/http-client:v1",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "http://hello.default.svc/",
    ]);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/client",
        "--timeout=90s",
    ]);
    let logs = c.ok(&["logs", "client"]);
    assert!(logs.contains("status: 200"), "{logs}");
    assert!(logs.contains("hello from hello-"), "{logs}");
}
