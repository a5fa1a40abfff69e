//! The live dashboard `apiary run` serves at `/`: one page, one script, one stylesheet,
//! all embedded in the binary (nothing is fetched from anywhere else at run time).
//!
//! The page reads `GET /v1/node`, `GET /v1/rounds` and the server-sent events of
//! `GET /v1/events`, and draws the node, its peers, plugins, rounds, reputation and
//! resource use with hand-written SVG. Its Content-Security-Policy allows only this
//! node's own scripts, styles and connections; every string from plugins and peers is
//! put on the page as text, never as markup.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The page's Content-Security-Policy: no inline scripts or styles, no other origin.
pub const CSP: &str = "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:";

/// `GET /`, `/assets/app.js` and `/assets/style.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page() }))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX,
    )
        .into_response()
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn fetch(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let app: Router = routes();
        let resp = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type() {
        for (path, kind, body) in [
            ("/", "text/html; charset=utf-8", INDEX),
            ("/assets/app.js", "text/javascript; charset=utf-8", APP_JS),
            ("/assets/style.css", "text/css; charset=utf-8", STYLE_CSS),
        ] {
            let (status, headers, text) = fetch(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], kind, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(text, body, "{path}");
        }
        let (_, headers, _) = fetch("/").await;
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
    }

    #[test]
    fn the_page_references_only_its_own_assets() {
        let refs: Vec<&str> = INDEX
            .split(['"', '\''])
            .filter(|s| s.starts_with('/'))
            .collect();
        assert!(refs.contains(&"/assets/app.js"), "{refs:?}");
        assert!(refs.contains(&"/assets/style.css"), "{refs:?}");
        for r in &refs {
            assert!(
                *r == "/" || r.starts_with("/assets/"),
                "index.html refers to {r}"
            );
        }
        for attr in ["src=", "href="] {
            for (at, _) in INDEX.match_indices(attr) {
                let value = INDEX[at + attr.len()..].trim_start_matches(['"', '\'']);
                assert!(
                    value.starts_with("/assets/") || value.starts_with("data:,"),
                    "index.html: {attr}{}",
                    &value[..value.len().min(40)]
                );
            }
        }
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "{name} contains {scheme}");
            }
        }
        // No inline script or style: the CSP would refuse them.
        assert!(!INDEX.contains("<style"), "inline <style> in index.html");
        assert!(
            !INDEX.contains(" style="),
            "inline style attribute in index.html"
        );
        for (at, _) in INDEX.match_indices(" on") {
            let name: String = INDEX[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                !INDEX[at + 3 + name.len()..].starts_with('='),
                "inline event handler on{name} in index.html"
            );
        }
        assert_eq!(
            INDEX.matches("<script").count(),
            INDEX.matches("<script src=\"/assets/app.js\"").count()
        );
    }
}
