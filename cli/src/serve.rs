//! `wasmkube up` and `wasmkube apiserver`: run until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::tls::Pki;
use wasmkube_apiserver::{auth, open_store, serve, serve_tls, ApiServer};

use crate::{kubeconfig, security, ServerArgs};

/// What runs beside the apiserver.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `wasmkube apiserver`: the apiserver alone.
    Apiserver,
    /// `wasmkube up`: the whole control plane and `nodes` kubelets in this process.
    Cluster { nodes: u32 },
}

/// The names of the kubelets `up --nodes N` runs: the host's name, then `<host>-2` ...
pub fn node_names(nodes: u32) -> Vec<String> {
    let host = crate::kubelet::default_node_name();
    (1..=nodes.max(1))
        .map(|i| {
            if i == 1 {
                host.clone()
            } else {
                format!("{host}-{i}")
            }
        })
        .collect()
}

pub async fn run(args: ServerArgs, role: Role) -> anyhow::Result<()> {
    let what = match role {
        Role::Apiserver => "wasmkube apiserver",
        Role::Cluster { .. } => "wasmkube up",
    };
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => kubeconfig::default_data_dir()?,
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    let store = open_store(&args.store, &dir).await?;
    let shutdown = CancellationToken::new();
    // The apiserver stops after the components it serves: their last requests (pod statuses,
    // Lease releases) still get answers, and nobody logs a refused connection on Ctrl-C.
    let api_shutdown = CancellationToken::new();
    // The nodes `up` runs, each with its own credential (created before the token file is
    // read).
    let nodes = match role {
        Role::Cluster { nodes } => node_names(nodes),
        Role::Apiserver => Vec::new(),
    };
    if matches!(role, Role::Cluster { .. }) {
        use wasmkube_controllers::nodeipam::{Cidr, RangeAllocator, DEFAULT_NODE_CIDR_MASK};
        let cluster: Cidr = args
            .cluster_cidr
            .parse()
            .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
        RangeAllocator::new(cluster, DEFAULT_NODE_CIDR_MASK)
            .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    }
    // The nodes' dirs exist before the apiserver answers, so an `image import` right after
    // start lands in them (not in the cluster's own dir).
    for n in &nodes {
        let node_dir = dir.join("nodes").join(n);
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))?;
    }
    let mut node_tokens = Vec::new();
    for n in &nodes {
        node_tokens.push(match args.insecure {
            false => Some(security::node_token(&dir.join("pki"), n)?),
            true => None,
        });
    }
    let authenticator: Box<dyn auth::Authenticator> = if args.insecure {
        Box::new(auth::InsecureAdmin)
    } else {
        Box::new(security::token_authenticator(&dir.join("pki"))?)
    };
    let services = wasmkube_apiserver::allocator::ServiceAllocator {
        service_cidr: wasmkube_apiserver::allocator::service_cidr(&args.service_cluster_ip_range)
            .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?,
    };
    let server = ApiServer::start_with(store, authenticator, api_shutdown.clone(), services)
        .await
        .context("preparing the store")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Clients on this machine reach a wildcard listener through loopback.
    let host = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let client_addr = std::net::SocketAddr::new(host, addr.port());
    // The `kubernetes` Service: pods reach the apiserver at its ClusterIP, port 443.
    server
        .services
        .ensure_kubernetes_service(server.store.as_ref(), client_addr)
        .await
        .map_err(|e| anyhow::anyhow!("creating the kubernetes Service: {}", e.message))?;
    let mut ca_pem = None;
    let (server_task, url, kubeconfig) = if args.insecure {
        let url = format!("http://{client_addr}");
        let kubeconfig = kubeconfig::write(
            &dir,
            &kubeconfig::Access {
                server: &url,
                ca_pem: None,
                token: None,
            },
        )?;
        (
            tokio::spawn(serve(listener, Arc::clone(&server))),
            url,
            kubeconfig,
        )
    } else {
        let pki = Pki::load_or_create(&dir.join("pki"), &serving_names(&args, host))
            .context("preparing the cluster's certificates")?;
        let url = format!("https://{client_addr}");
        let token = security::admin_token(&dir.join("pki"))?;
        let kubeconfig = kubeconfig::write(
            &dir,
            &kubeconfig::Access {
                server: &url,
                ca_pem: Some(&pki.ca_cert_pem),
                token: Some(&token),
            },
        )?;
        let tls = pki.server_config()?;
        // Kubelets let the apiserver in by its client certificate (kubeadm's
        // apiserver-kubelet-client), whose group grants nothing at the apiserver.
        let to_kubelets = pki.kubelet_client_config(
            security::KUBELET_CLIENT_USER,
            wasmkube_kubelet::authn::KUBELET_API,
        )?;
        let _ = server.kubelet_tls.set(to_kubelets);
        ca_pem = Some(pki.ca_cert_pem.clone());
        (
            tokio::spawn(serve_tls(listener, Arc::clone(&server), tls)),
            url,
            kubeconfig,
        )
    };
    println!("{what}: apiserver listening on {url}");
    println!("data dir: {}", dir.display());
    println!("kubeconfig: {}", kubeconfig.display());
    println!("  export KUBECONFIG={}", kubeconfig.display());
    if let Some(ca) = &ca_pem {
        // Joining nodes read the server's CA here before they trust it (kubeadm's discovery).
        let client = kubeconfig::client(&kubeconfig).await?;
        crate::join::publish_cluster_info(client, &url, ca).await?;
    }
    let mut components = Vec::new();
    if matches!(role, Role::Cluster { .. }) {
        // The control plane talks to the apiserver like any client: through the kubeconfig.
        let client = kubeconfig::client(&kubeconfig).await?;
        let stop = shutdown.clone();
        components.push(tokio::spawn(async move {
            if let Err(e) =
                wasmkube_scheduler::run(client, wasmkube_scheduler::Config::default(), stop).await
            {
                tracing::error!(error = %e, "scheduler stopped");
            }
        }));
        let client = kubeconfig::client(&kubeconfig).await?;
        let stop = shutdown.clone();
        let cluster_cidr = args.cluster_cidr.clone();
        let node_monitor_grace_period = args.node_monitor_grace_period;
        components.push(tokio::spawn(async move {
            let config = wasmkube_controllers::ControllerConfig {
                cluster_cidr: cluster_cidr.clone(),
                node_monitor_grace_period,
                ..Default::default()
            };
            if let Err(e) = wasmkube_controllers::run(client, config, stop).await {
                tracing::error!(error = %e, "controller-manager stopped");
            }
        }));
        // The kubelets, each as its node's own user (NodeRestriction applies to them).
        for (node, node_token) in nodes.iter().zip(&node_tokens) {
            let node_dir = dir.join("nodes").join(node);
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("creating {}", node_dir.display()))?;
            let node_kubeconfig = kubeconfig::write(
                &node_dir,
                &kubeconfig::Access {
                    server: &url,
                    ca_pem: ca_pem.as_deref(),
                    token: node_token.as_deref(),
                },
            )?;
            let (client, ca) = kubeconfig::client_and_ca(&node_kubeconfig).await?;
            let mut config = wasmkube_kubelet::KubeletConfig::new(node, node_dir);
            config.client_ca = ca;
            config.host_path_prefixes = args.host_path_prefixes.clone();
            config.cluster_cidr = args.cluster_cidr.clone();
            config.service_cidr = args.service_cluster_ip_range.clone();
            // One host, one set of ClusterIP/NodePort listeners: the first kubelet owns them.
            config.proxy = node == &nodes[0];
            // Secure clusters' kubelets review callers' tokens; `--insecure` ones answer anyone.
            config.anonymous_auth = args.insecure;
            let stop = shutdown.clone();
            components.push(tokio::spawn(async move {
                if let Err(e) = wasmkube_kubelet::run(client, config, stop).await {
                    tracing::error!(error = %e, "kubelet stopped");
                }
            }));
        }
    }
    crate::wait_for_signal().await?;
    tracing::info!("stopping");
    shutdown.cancel();
    for c in components {
        let _ = c.await;
    }
    api_shutdown.cancel();
    server_task
        .await
        .context("server task")?
        .context("serving")?;
    Ok(())
}

/// Names the serving certificate covers: loopback, this host's name, the listen address and
/// any `--tls-san`.
fn serving_names(args: &ServerArgs, host: std::net::IpAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    names.push(host.to_string());
    // The `kubernetes` Service, as pods address the apiserver.
    for n in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        names.push(n.to_string());
    }
    if let Ok(cidr) = wasmkube_apiserver::allocator::service_cidr(&args.service_cluster_ip_range) {
        names.push(cidr.nth(1).to_string());
    }
    names.extend(args.tls_san.iter().cloned());
    names.sort();
    names.dedup();
    names
}
