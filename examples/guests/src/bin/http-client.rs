//! GETs the URL in argv[1] with wasi-http (`wasi:http/outgoing-handler`), prints the status
//! and the body to stdout; exits 0 on a 2xx answer, 1 otherwise. wasm32-wasip2 only (the
//! wasip1 build says so and fails).

#[cfg(target_env = "p2")]
fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: http-client URL");
        std::process::exit(2);
    };
    match get(&url) {
        Ok((status, body)) => {
            println!("status: {status}");
            print!("{body}");
            std::process::exit(if (200..300).contains(&status) { 0 } else { 1 });
        }
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(target_env = "p2")]
fn get(url: &str) -> Result<(u16, String), String> {
    use std::io::Read as _;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};

    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(format!("{url:?}: expected http:// or https://")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad authority {authority:?}"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("bad path {path:?}"))?;
    let body = request.body().map_err(|()| "request body")?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "response body")?;
    let mut stream = incoming.stream().map_err(|()| "body stream")?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, body))
}

#[cfg(not(target_env = "p2"))]
fn main() {
    eprintln!("http-client needs wasi:http: build it for wasm32-wasip2");
    std::process::exit(1);
}
