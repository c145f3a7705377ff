//! A `wasi:http/incoming-handler` component: `GET /healthz` → 200 `ok`, `/slow` → `slow done`
//! after a second, `/trap` traps, anything else → 200 `hello from <POD_NAME>` (POD_NAME from
//! the pod's env, e.g. the downward API). The kubelet serves it on podIP:containerPort with one
//! instance per request.
//!
//! Readiness that outlives a request (instances do not): with env `READY_FILE` naming a file in
//! a writable volume, `/unready` creates it, `/ready` removes it, and `/healthz` answers 503
//! while it exists.
#![cfg(target_env = "p2")]

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let ready_file = std::env::var("READY_FILE").ok();
        let mut status = 200;
        let body_text = match path.split('?').next().unwrap_or("") {
            "/healthz" if ready_file.as_ref().is_some_and(|f| std::fs::metadata(f).is_ok()) => {
                status = 503;
                "not ready\n".to_string()
            }
            "/healthz" => "ok\n".to_string(),
            "/unready" | "/ready" if ready_file.is_none() => {
                status = 400;
                "set READY_FILE to a file in a writable volume\n".to_string()
            }
            "/unready" => match std::fs::write(ready_file.as_deref().unwrap_or_default(), b"") {
                Ok(()) => "unready\n".to_string(),
                Err(e) => {
                    status = 500;
                    format!("cannot write READY_FILE: {e}\n")
                }
            },
            "/ready" => {
                let _ = std::fs::remove_file(ready_file.as_deref().unwrap_or_default());
                "ready\n".to_string()
            }
            "/trap" => panic!("asked to trap on /trap"),
            "/slow" => {
                // An in-flight request for drain tests: logged, then answered a second later.
                println!("slow request started");
                std::thread::sleep(std::time::Duration::from_secs(1));
                "slow done\n".to_string()
            }
            _ => {
                let name = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
                // Per-request output goes to the container log.
                println!("{} {}", request.method_string(), path);
                format!("hello from {name}\n")
            }
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let resp = OutgoingResponse::new(headers);
        let _ = resp.set_status_code(status);
        let body = resp.body().expect("response body");
        ResponseOutparam::set(response_out, Ok(resp));
        let mut out = body.write().expect("body stream");
        out.write_all(body_text.as_bytes()).expect("write body");
        out.flush().expect("flush body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

trait MethodString {
    fn method_string(&self) -> String;
}

impl MethodString for IncomingRequest {
    fn method_string(&self) -> String {
        use wasip2::http::types::Method;
        match self.method() {
            Method::Get => "GET".into(),
            Method::Post => "POST".into(),
            Method::Put => "PUT".into(),
            Method::Delete => "DELETE".into(),
            Method::Head => "HEAD".into(),
            Method::Other(m) => m,
            other => format!("{other:?}"),
        }
    }
}
