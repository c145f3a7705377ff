//! The network plugin, pod side: pod addresses from the podCIDR, wasi-http serving on them,
//! outgoing wasi-http, the socket policy, probes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;

use crate::cluster::{container, image, phase, restart_count, Cluster};
use crate::guests::{self, Target};
use crate::kubelet::{node_port, reqwest_get};

/// A podCIDR of its own per test (tests run in parallel, pods bind real loopback addresses).
async fn start(pod_cidr: &str) -> Cluster {
    let cidr = pod_cidr.to_string();
    Cluster::start_with(move |config| {
        config.pod_cidr = Some(cidr);
        for name in ["http_hello", "http-client", "net-probe"] {
            wasmkube_kubelet::import(
                &config.data_dir,
                &guests::path(name, Target::P2),
                &image(name, Target::P2),
            )
            .expect("import");
        }
    })
    .await
}

fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

fn condition(p: &Pod, kind: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

fn running(p: &Pod, name: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// An http-hello pod serving on `port`, with POD_NAME from the downward API.
fn hello_pod(port: u16, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({
        "name": "web",
        "image": image("http_hello", Target::P2),
        "ports": [{"containerPort": port, "name": "http"}],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    json!({"containers": [c]})
}

/// GET `url` (HTTP/1.0): status and body; `None` while nothing listens.
async fn get(url: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// GET `url` once its listener is up (waits up to 30 s for it).
async fn get_when_up(url: &str) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(r) = get(url).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} never answered"))
}

async fn logs(c: &Cluster, pod: &str, container: &str) -> String {
    let port = node_port(c).await;
    reqwest_get(&format!(
        "http://127.0.0.1:{port}/containerLogs/default/{pod}/{container}"
    ))
    .await
}

/// Waits until an event about `pod` has `reason` and a note containing `text`.
async fn wait_event(c: &Cluster, pod: &str, reason: &str, text: &str) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(c.client.clone(), "default");
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let list = events.list(&Default::default()).await.unwrap();
            if let Some(note) = list.items.iter().find_map(|e| {
                let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod);
                let note = e.note.clone().unwrap_or_default();
                (about && e.reason.as_deref() == Some(reason) && note.contains(text))
                    .then_some(note)
            }) {
                return note;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {reason} event about {pod} containing {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pods_get_their_own_addresses_and_answer_there_and_to_other_pods() {
    let c = start("127.201.0.0/24").await;
    for name in ["web-a", "web-b"] {
        c.create_pod(name, hello_pod(8080, json!({}))).await;
    }
    let a = c.wait_pod("web-a", 60, |p| running(p, "web")).await;
    let b = c.wait_pod("web-b", 60, |p| running(p, "web")).await;
    let (ip_a, ip_b) = (pod_ip(&a).unwrap(), pod_ip(&b).unwrap());
    assert_ne!(ip_a, ip_b);
    for (pod, ip) in [(&a, &ip_a), (&b, &ip_b)] {
        assert!(ip.starts_with("127.201.0."), "{ip}");
        assert!(!ip.ends_with(".0") && !ip.ends_with(".1"), "{ip}");
        let ips = pod.status.as_ref().unwrap().pod_ips.clone().unwrap();
        assert_eq!(ips[0].ip, *ip);
        assert!(container(pod, "web").ready, "no readiness probe: ready");
    }
    // Served on podIP:containerPort, one instance per request, each answering with its name.
    for _ in 0..3 {
        let (status, body) = get_when_up(&format!("http://{ip_a}:8080/")).await;
        assert_eq!((status, body.as_str()), (200, "hello from web-a\n"));
    }
    let (_, body) = get_when_up(&format!("http://{ip_b}:8080/x")).await;
    assert_eq!(body, "hello from web-b\n");
    // Guest stdout of each request lands in the container log.
    assert!(logs(&c, "web-a", "web").await.contains("GET /"));

    // A trap is a 500 and a log line; the container keeps serving.
    let (status, _) = get_when_up(&format!("http://{ip_a}:8080/trap")).await;
    assert_eq!(status, 500);
    let (status, _) = get_when_up(&format!("http://{ip_a}:8080/")).await;
    assert_eq!(status, 200);
    assert!(logs(&c, "web-a", "web").await.contains("request failed"));
    let a = c.pods().get("web-a").await.unwrap();
    assert_eq!(restart_count(&a, "web"), 0);

    // Another pod calls web-a with outgoing wasi-http.
    c.create_pod(
        "client",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "get", "image": image("http-client", Target::P2),
            "args": [format!("http://{ip_a}:8080/")],
        }]}),
    )
    .await;
    c.wait_pod("client", 60, |p| phase(p) == "Succeeded").await;
    let out = logs(&c, "client", "get").await;
    assert!(out.contains("status: 200"), "{out}");
    assert!(out.contains("hello from web-a"), "{out}");

    // Deleting the pod closes its listener and frees its address.
    c.delete_pod("web-a", Some(5)).await;
    c.wait_gone("web-a", 60).await;
    assert!(get(&format!("http://{ip_a}:8080/")).await.is_none());
    c.create_pod("web-c", hello_pod(8080, json!({}))).await;
    let web_c = c.wait_pod("web-c", 60, |p| pod_ip(p).is_some()).await;
    assert_ne!(pod_ip(&web_c).unwrap(), ip_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_binds_only_its_own_address_and_connects_only_to_cluster_addresses() {
    let c = start("127.202.0.0/24").await;
    let node_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_addr = node_listener.local_addr().unwrap();
    tokio::spawn(async move { while node_listener.accept().await.is_ok() {} });
    let probe = |args: serde_json::Value| {
        json!({"restartPolicy": "Never", "containers": [{
            "name": "probe", "image": image("net-probe", Target::P2), "args": args,
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        }]})
    };
    let cases = [
        ("bind-own", json!(["bind", "$(POD_IP):9000"]), true),
        ("bind-other", json!(["bind", "127.202.0.200:9000"]), false),
        ("bind-any", json!(["bind", "0.0.0.0:9000"]), true),
        (
            "connect-node",
            json!(["connect", node_addr.to_string()]),
            true,
        ),
        ("connect-outside", json!(["connect", "127.0.0.2:80"]), false),
    ];
    for (name, args, _) in &cases {
        c.create_pod(name, probe(args.clone())).await;
    }
    for (name, _, ok) in &cases {
        let want = if *ok { "Succeeded" } else { "Failed" };
        let pod = c.wait_pod(name, 60, |p| phase(p) == want).await;
        let out = logs(&c, name, "probe").await;
        if *ok {
            assert!(out.starts_with("ok: "), "{name}: {out}");
            if *name == "bind-own" || *name == "bind-any" {
                let ip = pod_ip(&pod).unwrap();
                assert!(out.contains(&format!("listening on {ip}:9000")), "{out}");
            }
        } else {
            // The guest sees access-denied; the kubelet says why (its log and the pod's).
            assert!(out.contains("error: "), "{name}: {out}");
            assert!(out.contains("PermissionDenied"), "{name}: {out}");
            assert!(out.contains("kubelet: socket "), "{name}: {out}");
        }
    }
    let other = logs(&c, "bind-other", "probe").await;
    assert!(
        other.contains("a pod may bind only its own address"),
        "{other}"
    );
    let outside = logs(&c, "connect-outside", "probe").await;
    assert!(outside.contains("not a cluster address"), "{outside}");

    // A hostNetwork pod has the node's address and binds it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut host = probe(json!(["bind", format!("$(POD_IP):{free}")]));
    host["hostNetwork"] = json!(true);
    c.create_pod("host-net", host).await;
    let pod = c
        .wait_pod("host-net", 60, |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(pod_ip(&pod).as_deref(), Some("127.0.0.1"));
    let out = logs(&c, "host-net", "probe").await;
    assert_eq!(out, format!("ok: listening on 127.0.0.1:{free}\n"));

    // Outgoing wasi-http to a non-cluster address: HTTP-request-denied in the guest.
    c.create_pod(
        "http-outside",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "get", "image": image("http-client", Target::P2),
            "args": ["http://127.0.0.2:8080/"],
        }]}),
    )
    .await;
    c.wait_pod("http-outside", 60, |p| phase(p) == "Failed")
        .await;
    let out = logs(&c, "http-outside", "get").await;
    assert!(out.contains("HttpRequestDenied"), "{out}");
    assert!(
        out.contains("kubelet: HTTP request to http://127.0.0.2:8080/ denied"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_liveness_probes_drive_ready_and_restarts() {
    let c = start("127.203.0.0/24").await;
    let fast = |probe: serde_json::Value| {
        let mut p = probe;
        p["periodSeconds"] = json!(1);
        p["failureThreshold"] = json!(1);
        p
    };
    // Passing readiness (httpGet on a named port): Ready.
    c.create_pod(
        "ready",
        hello_pod(8080, json!({"readinessProbe": fast(json!({"httpGet": {"path": "/healthz", "port": "http"}}))})),
    )
    .await;
    let ready = c
        .wait_pod("ready", 60, |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    assert!(container(&ready, "web").ready);
    assert_eq!(
        condition(&ready, "ContainersReady").as_deref(),
        Some("True")
    );

    // Failing readiness (tcpSocket to a closed port): running but not Ready.
    c.create_pod(
        "unready",
        hello_pod(
            8080,
            json!({"readinessProbe": fast(json!({"tcpSocket": {"port": 9999}}))}),
        ),
    )
    .await;
    let note = wait_event(&c, "unready", "Unhealthy", "Readiness probe failed").await;
    assert!(
        note.contains(":9999: connect: connection refused"),
        "{note}"
    );
    let unready = c.wait_pod("unready", 60, |p| running(p, "web")).await;
    assert!(!container(&unready, "web").ready);
    assert_eq!(
        container(&unready, "web").started,
        Some(true),
        "no startup probe"
    );
    assert_eq!(condition(&unready, "Ready").as_deref(), Some("False"));
    assert_eq!(
        condition(&unready, "ContainersReady").as_deref(),
        Some("False")
    );

    // Failing liveness: Unhealthy, Killing, restarted.
    c.create_pod(
        "dying",
        hello_pod(
            8080,
            json!({"livenessProbe": fast(json!({"tcpSocket": {"port": 9999}}))}),
        ),
    )
    .await;
    wait_event(&c, "dying", "Unhealthy", "Liveness probe failed").await;
    wait_event(
        &c,
        "dying",
        "Killing",
        "Container web failed liveness probe, will be restarted",
    )
    .await;
    c.wait_pod("dying", 60, |p| restart_count(p, "web") >= 1)
        .await;

    // A startup probe gates `started` and readiness until it passes.
    c.create_pod(
        "starting",
        hello_pod(
            8080,
            json!({"startupProbe": fast(json!({"tcpSocket": {"port": "http"}}))}),
        ),
    )
    .await;
    let started = c
        .wait_pod("starting", 60, |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    assert_eq!(container(&started, "web").started, Some(true));

    // exec probes cannot run in a wasm sandbox: said so in an event.
    c.create_pod(
        "exec",
        hello_pod(
            8080,
            json!({"livenessProbe": {"exec": {"command": ["true"]}}}),
        ),
    )
    .await;
    wait_event(&c, "exec", "Unhealthy", "exec probes are not supported").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_keeps_its_address_across_a_kubelet_restart() {
    let mut c = start("127.204.0.0/24").await;
    c.create_pod("web", hello_pod(8080, json!({}))).await;
    let before = c.wait_pod("web", 60, |p| running(p, "web")).await;
    let ip = pod_ip(&before).unwrap();
    c.restart_kubelet().await;
    let after = c
        .wait_pod("web", 60, |p| {
            restart_count(p, "web") >= 1 && running(p, "web")
        })
        .await;
    assert_eq!(pod_ip(&after).unwrap(), ip);
    let (status, body) = get_when_up(&format!("http://{ip}:8080/")).await;
    assert_eq!((status, body.as_str()), (200, "hello from web\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_sockets_guests_resolve_service_names_and_nothing_else() {
    let c = start("127.205.0.0/24").await;
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.client.clone(), "default");
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let svc = services.create(&Default::default(), &svc).await.unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.expect("a ClusterIP");
    let resolve = |name: &str| {
        // OnFailure: retried until the kubelet's Service table has caught up.
        json!({"restartPolicy": "OnFailure", "containers": [{
            "name": "probe", "image": image("net-probe", Target::P2),
            "args": ["resolve", name],
        }]})
    };
    c.create_pod("by-name", resolve("web.default.svc.cluster.local"))
        .await;
    c.wait_pod("by-name", 60, |p| phase(p) == "Succeeded").await;
    let out = logs(&c, "by-name", "probe").await;
    assert_eq!(
        out,
        format!("ok: web.default.svc.cluster.local is {cluster_ip}\n")
    );
    c.create_pod(
        "outside",
        json!({"restartPolicy": "Never", "containers": [{
            "name": "probe", "image": image("net-probe", Target::P2),
            "args": ["resolve", "example.com"],
        }]}),
    )
    .await;
    c.wait_pod("outside", 60, |p| phase(p) == "Failed").await;
    let out = logs(&c, "outside", "probe").await;
    assert!(out.starts_with("error: resolve example.com"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_file_answers_through_the_kubelet_request_path() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = wasmkube_kubelet::runtime::Runtime::new(&dir.path().join("compiled")).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let served = wasmkube_kubelet::network::http::serve_file(
        &runtime,
        &guests::path("http_hello", Target::P2),
        "127.0.0.1:0".parse().unwrap(),
        &dir.path().join("serve.log"),
        stop.clone(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let (status, body) = get_when_up(&format!("http://{}/", served.addr)).await;
        assert_eq!((status, body.as_str()), (200, "hello from unknown\n"));
    }
    stop.cancel();
    served.task.await.unwrap();
    // A command component is refused with a clear error.
    let err = wasmkube_kubelet::network::http::serve_file(
        &runtime,
        &guests::path("hello", Target::P2),
        "127.0.0.1:0".parse().unwrap(),
        &dir.path().join("serve.log"),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .err()
    .expect("a command is not served");
    assert!(err
        .to_string()
        .contains("not a wasi:http/incoming-handler component"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_reach_a_service_by_name() {
    let c = start("127.206.0.0/24").await;
    c.create_pod("svc-web", hello_pod(8080, json!({}))).await;
    let pod = c.wait_pod("svc-web", 60, |p| running(p, "web")).await;
    let ip = pod_ip(&pod).unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.client.clone(), "default");
    let svc = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    services.create(&Default::default(), &svc).await.unwrap();
    // No endpoints controller in kubelet tests: the slice it would write.
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(c.client.clone(), "default");
    let slice = serde_json::from_value(json!({
        "metadata": {"name": "hello-1", "labels": {"kubernetes.io/service-name": "hello"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
                       "nodeName": crate::cluster::NODE}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap();
    slices.create(&Default::default(), &slice).await.unwrap();
    c.create_pod(
        "by-service",
        json!({"restartPolicy": "OnFailure", "containers": [{
            "name": "get", "image": image("http-client", Target::P2),
            "args": ["http://hello.default.svc/"],
        }]}),
    )
    .await;
    c.wait_pod("by-service", 60, |p| phase(p) == "Succeeded")
        .await;
    let out = logs(&c, "by-service", "get").await;
    assert_eq!(out, "status: 200\nhello from svc-web\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_http_pod_lets_in_flight_requests_finish() {
    let c = start("127.207.0.0/24").await;
    c.create_pod("draining", hello_pod(8080, json!({}))).await;
    let pod = c.wait_pod("draining", 60, |p| running(p, "web")).await;
    let ip = pod_ip(&pod).unwrap();
    get_when_up(&format!("http://{ip}:8080/healthz")).await;
    let slow = tokio::spawn(async move { get(&format!("http://{ip}:8080/slow")).await });
    tokio::time::timeout(Duration::from_secs(30), async {
        while !logs(&c, "draining", "web")
            .await
            .contains("slow request started")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow request reached the guest");
    c.delete_pod("draining", Some(30)).await;
    assert_eq!(slow.await.unwrap(), Some((200, "slow done\n".to_string())));
    c.wait_gone("draining", 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_http_container_finishes_in_flight_requests_then_completes() {
    use wasmkube_kubelet::runtime::logs::{read_all, LogFile};
    use wasmkube_kubelet::runtime::{ContainerSpec, Runtime};
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(&dir.path().join("compiled")).unwrap();
    let wasm = guests::path("http_hello", Target::P2);
    let program = runtime.load(&guests::digest(&wasm), &wasm).await.unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let spec = ContainerSpec {
        listen: vec![addr],
        ..Default::default()
    };
    let drain = spec.drain.clone();
    let log_path = dir.path().join("web.log");
    let log = LogFile::create(&log_path, u64::MAX).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = {
        let (runtime, stop) = (runtime.clone(), stop.clone());
        tokio::spawn(async move { runtime.run(&program, &spec, &log, &stop).await })
    };
    get_when_up(&format!("http://{addr}/healthz")).await;
    let slow = tokio::spawn(async move { get(&format!("http://{addr}/slow")).await });
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let lines = read_all(&log_path).unwrap_or_default();
            if lines
                .iter()
                .any(|r| r.text.contains("slow request started"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow request reached the guest");
    drain.cancel();
    assert_eq!(slow.await.unwrap(), Some((200, "slow done\n".to_string())));
    let exit = run.await.unwrap();
    assert_eq!((exit.exit_code, exit.reason), (0, "Completed"));
    assert!(
        get(&format!("http://{addr}/")).await.is_none(),
        "listener closed"
    );
}
