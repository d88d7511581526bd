//! Legion's policy evaluation, asked through its own API (`AuthService.Capabilities` with named
//! policies), against a live OpenBao dev server asked the same question (`sys/capabilities` for a token
//! holding exactly those policies), for every case of `tests/fixtures/policy-cases.json`. The recorded
//! answers in that file are checked too, so the fast unit test that reads them stays true.

mod support;

use legion_proto::v1;
use legion_proto::v1::auth_service_client::AuthServiceClient;
use legion_proto::v1::policy_service_client::PolicyServiceClient;
use support::openbao::OpenBao;
use support::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legion_answers_capabilities_as_openbao_does() {
    let bao = OpenBao::start().await;
    let stack = Stack::start(true, |_| {}).await;
    let mut policies = PolicyServiceClient::new(stack.admin_channel().await);
    let mut auth = AuthServiceClient::new(stack.admin_channel().await);
    let cases: serde_json::Value = serde_json::from_str(include_str!("fixtures/policy-cases.json")).expect("fixture");
    let cases = cases.as_array().expect("cases");
    assert!(cases.len() >= 30, "at least 30 cases");
    let mut disagreements = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let mut names = Vec::new();
        for (i, rules) in case["policies"].as_array().expect("policies").iter().enumerate() {
            let name = format!("c{n}p{i}");
            bao.put_policy(&name, rules).await;
            let rules = rules
                .as_array()
                .expect("rules")
                .iter()
                .map(|r| v1::PolicyRule {
                    path: r["path"].as_str().expect("path").to_owned(),
                    capabilities: r["capabilities"]
                        .as_array()
                        .expect("caps")
                        .iter()
                        .map(|c| c.as_str().expect("cap").to_owned())
                        .collect(),
                })
                .collect();
            policies.put_policy(v1::PutPolicyRequest { name: name.clone(), rules }).await.expect("legion put policy");
            names.push(name);
        }
        let path = case["path"].as_str().expect("path");
        let token = bao.token(&names).await;
        let reference = bao.capabilities(&token, path).await;
        let answer = auth
            .capabilities(v1::CapabilitiesRequest { paths: vec![path.to_owned()], policies: names.clone() })
            .await
            .expect("legion capabilities")
            .into_inner();
        let mut legion = answer.capabilities.get(path).expect("path answered").capabilities.clone();
        legion.sort();
        let mut recorded: Vec<String> =
            case["want"].as_array().expect("want").iter().map(|c| c.as_str().expect("cap").to_owned()).collect();
        recorded.sort();
        if legion != reference || recorded != reference {
            disagreements
                .push(format!("case {n} {path}: openbao {reference:?}, legion {legion:?}, recorded {recorded:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    stack.stop().await.expect("stop");
}
