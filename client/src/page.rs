//! Serving the web page: the bundle built from `web/` (`web/dist/`,
//! committed, embedded in this binary) and a `config.json` naming the two
//! parties' web listeners. `mpcvit-client web` serves it beside its local
//! parties; `mpcvit-client page` serves it for deployed ones.
//!
//! Every answer carries a Content-Security-Policy that lets the page load
//! only its own files and connect only to its own origin and the two
//! parties, so neither a bug nor an injected script can send the image
//! anywhere else; `Referrer-Policy: no-referrer` and `Cache-Control:
//! no-store` besides. The token travels in the URL's fragment, which
//! browsers never send to a server.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// The page's files: path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../web/dist/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/app.js"),
    ),
    (
        "/worker.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/dist/worker.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/dist/style.css"),
    ),
];

/// The origin (`scheme://host[:port]`) of a URL.
pub fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            format!("{scheme}://{host}")
        }
        None => url.to_string(),
    }
}

/// The page's Content-Security-Policy: its own files, and connections to
/// its origin and the two parties only.
pub fn content_security_policy(parties: &[String; 2]) -> String {
    format!(
        "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
         img-src 'self' blob: data:; connect-src 'self' {} {}; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        origin(&parties[0]),
        origin(&parties[1])
    )
}

/// Serve the page on `listener` until `shutdown`; `parties` are the URLs of
/// party 0's and party 1's web listeners as the browser dials them.
pub async fn serve(
    listener: TcpListener,
    parties: [String; 2],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = serde_json::json!({ "parties": parties }).to_string();
    let mut headers = HeaderMap::new();
    let csp = content_security_policy(&parties);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).map_err(std::io::Error::other)?,
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let app = Router::new().fallback(move |uri: Uri| {
        let (config, headers) = (config.clone(), headers.clone());
        async move { asset(uri.path(), config, headers) }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn asset(path: &str, config: String, headers: HeaderMap) -> Response {
    let path = if path == "/index.html" { "/" } else { path };
    if path == "/config.json" {
        return (
            headers,
            [(header::CONTENT_TYPE, "application/json")],
            config,
        )
            .into_response();
    }
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, kind, body)) => (headers, [(header::CONTENT_TYPE, *kind)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, headers, "not found").into_response(),
    }
}

/// `http://ADDR/` for a bound listener's address.
pub fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_policy_name_the_two_parties_only() {
        assert_eq!(
            origin("https://localhost:15451/x?y#z"),
            "https://localhost:15451"
        );
        assert_eq!(origin("http://127.0.0.1:9"), "http://127.0.0.1:9");
        let csp =
            content_security_policy(&["https://a.example:1".into(), "https://b.example:2/".into()]);
        assert!(csp.contains("connect-src 'self' https://a.example:1 https://b.example:2;"));
        assert!(csp.starts_with("default-src 'none';"));
    }

    #[tokio::test]
    async fn serves_the_bundle_and_its_config_with_the_policy() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let parties = [
            "http://127.0.0.1:1".to_string(),
            "http://127.0.0.1:2".into(),
        ];
        let task = tokio::spawn(serve(l, parties, async {
            let _ = stopped.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let index = get("/").await;
        assert!(index.starts_with("HTTP/1.1 200"), "{index}");
        assert!(index.contains("content-security-policy: default-src 'none'"));
        assert!(index.contains("<script src=\"app.js\""), "{index}");
        let config = get("/config.json").await;
        assert!(config.contains(r#"{"parties":["http://127.0.0.1:1","http://127.0.0.1:2"]}"#));
        assert!(get("/worker.js").await.starts_with("HTTP/1.1 200"));
        assert!(get("/../Cargo.toml").await.starts_with("HTTP/1.1 404"));
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}
