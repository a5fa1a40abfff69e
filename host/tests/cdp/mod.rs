//! A small Chrome DevTools Protocol client: a headless Chromium driven over its WebSocket,
//! collecting every problem the page reports (exceptions, console and log errors, failed
//! requests, HTTP errors). Every wait is bounded; the browser is killed on drop.
#![allow(dead_code)]

use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The longest any single wait may take.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Chromium: `$APIARY_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("APIARY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Request id → URL, to name failed requests.
    urls: HashMap<String, String>,
    /// Everything that went wrong on the page, in order.
    pub problems: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium's own processes are in its process group: end them all.
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this harness created for Chromium.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Start headless Chromium and open one blank page, with the Runtime, Log, Network
    /// and Page domains enabled.
    pub fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));

        // Chromium prints its DevTools address on stderr; keep draining it afterwards.
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                } else if std::env::var_os("APIARY_CHROMIUM_LOG").is_some() {
                    eprintln!("chromium: {line}");
                }
            }
        });
        let url = match rx.recv_timeout(MAX_WAIT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("{} did not report a DevTools address", chromium.display());
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str()).expect("DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(250)))
                .unwrap();
        }
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            urls: HashMap::new(),
            problems: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Runtime", "Log", "Network", "Page"] {
            b.call(&format!("{domain}.enable"), json!({}));
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Send a command (to the page once attached) and wait for its answer; events read
    /// meanwhile are collected.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "{method}: no answer in {MAX_WAIT:?}"
            );
            let Some(v) = self.read() else { continue };
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    /// One message, or `None` after a quiet read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => serde_json::from_str(t.as_str()).ok(),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection: {e}"),
        }
    }

    /// Read whatever events arrived, without waiting long.
    pub fn pump(&mut self) {
        while let Some(v) = self.read() {
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str().unwrap_or("") {
            "Network.requestWillBeSent" => {
                if let (Some(id), Some(url)) =
                    (p["requestId"].as_str(), p["request"]["url"].as_str())
                {
                    self.urls.insert(id.to_string(), url.to_string());
                }
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let what = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("?");
                self.problems.push(format!("exception: {what}"));
            }
            "Runtime.consoleAPICalled" if p["type"] == "error" => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| a["description"].as_str().map(str::to_string))
                            .unwrap_or_else(|| a["value"].to_string())
                    })
                    .collect();
                self.problems
                    .push(format!("console.error: {}", args.join(" ")));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                self.problems.push(format!(
                    "log error: {} {}",
                    e["text"].as_str().unwrap_or(""),
                    e["url"].as_str().unwrap_or("")
                ));
            }
            "Network.loadingFailed" => {
                let url = p["requestId"]
                    .as_str()
                    .and_then(|id| self.urls.get(id))
                    .cloned()
                    .unwrap_or_default();
                // The event stream is cancelled when the page goes away.
                let teardown = p["canceled"] == true && url.ends_with("/v1/events");
                if !teardown {
                    self.problems.push(format!(
                        "request failed: {url} {}",
                        p["errorText"].as_str().unwrap_or("")
                    ));
                }
            }
            "Network.responseReceived" => {
                let r = &p["response"];
                if r["status"].as_u64().unwrap_or(0) >= 400 {
                    self.problems.push(format!(
                        "HTTP {}: {}",
                        r["status"],
                        r["url"].as_str().unwrap_or("")
                    ));
                }
            }
            _ => {}
        }
    }

    /// Evaluate JavaScript in the page and return its value (JSON).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Wait (at most `timeout`, capped at [`MAX_WAIT`]) until `expression` is truthy;
    /// return its value. Panics with `what` and the problems seen on timeout.
    pub fn wait_for(&mut self, what: &str, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        loop {
            let v = self.eval(expression);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({expression}); problems: {:?}",
                self.problems
            );
            self.pump();
        }
    }

    /// Open `url` and wait until its document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = r["errorText"].as_str() {
            panic!("navigating to {url}: {e}");
        }
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            MAX_WAIT,
        );
    }

    /// A PNG of the whole page, saved at `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .as_f64()
            .unwrap_or(1000.0)
            .clamp(200.0, 6000.0);
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1},
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}
