//! `list` enumerates, `read` reveals (as Vault's policies): `ListSchedules`, `ListChains` and `ListTasks`
//! leave out every item the caller may not `read`, through the whole control plane (`run_with`) against
//! real PostgreSQL. Paging continues after the last item looked at, not the last shown, so a page of
//! hidden items is empty but has a token, and paging neither repeats, skips nor loops. Regression test
//! for an operator's adversarial pass: a key with `list` on `schedules/` and `deny` on
//! `schedules/secretive` got the whole `secretive` schedule, args included, from `ListSchedules`.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::future::Future;

use legion_proto::json_to_value;
use legion_proto::v1;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
use legion_proto::v1::task_service_client::TaskServiceClient;
use serde_json::json;
use support::policies::{limited, rule};
use support::stack::{AuthChannel, Stack, core_manifest};
use tonic::Code;

/// The names the admin creates, in name order; `secretive` is the one hidden from the limited key.
const NAMES: [&str; 4] = ["alpha", "bravo", "secretive", "zulu"];

/// Every item of a list, following `next_page_token` from the first page: the items' keys and how many
/// pages it took. Fails on a token handed out twice, or more pages than `most_pages`.
async fn walk<F, Fut>(most_pages: usize, mut page: F) -> (Vec<String>, usize)
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<String>, String), tonic::Status>>,
{
    let (mut items, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let (keys, next) = page(token.clone()).await.expect("list");
        pages += 1;
        items.extend(keys);
        if next.is_empty() {
            return (items, pages);
        }
        assert_ne!(next, token, "the same page token twice: paging would loop");
        assert!(pages < most_pages, "more than {most_pages} pages");
        token = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_leave_out_what_the_caller_may_not_read() {
    let stack = Stack::start(false, |_| {}).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop", "fail"])).await.expect("register");
    let admin = stack.admin_channel().await;
    let relationship =
        v1::Relationship { trigger: "core.util.echo".into(), action: "core.util.noop".into(), ..Default::default() };
    for name in NAMES {
        let chain = v1::Chain { name: name.into(), relationships: vec![relationship.clone()], ..Default::default() };
        ChainServiceClient::new(admin.clone()).apply_chain(v1::ApplyChainRequest { chain: Some(chain) }).await.unwrap();
        let schedule = v1::Schedule {
            name: name.into(),
            function: "core.util.echo".into(),
            args: Some(json_to_value(&json!({"token": format!("{name}-secret")}))),
            cron: Some("0 3 * * *".into()),
            ..Default::default()
        };
        let request = v1::CreateScheduleRequest { schedule: Some(schedule) };
        ScheduleServiceClient::new(admin.clone()).create_schedule(request).await.unwrap();
    }
    // Tasks, oldest first; the `noop` ones are hidden from the limited key.
    let mut submitted = Vec::new();
    for function in ["core.util.echo", "core.util.noop", "core.util.fail", "core.util.noop", "core.util.echo"] {
        let request = v1::SubmitTaskRequest { function: function.into(), ..Default::default() };
        let task = TaskServiceClient::new(admin.clone()).submit_task(request).await.unwrap().into_inner().task.unwrap();
        submitted.push((task.id, task.function));
    }
    let visible_tasks: Vec<String> =
        submitted.iter().rev().filter(|(_, f)| f != "core.util.noop").map(|(id, _)| id.clone()).collect();
    let all_tasks: Vec<String> = submitted.iter().rev().map(|(id, _)| id.clone()).collect();

    let peeker = limited(
        &stack,
        "peeker",
        vec![
            rule("schedules/", &["list"]),
            rule("schedules/*", &["read"]),
            rule("schedules/secretive", &["deny"]),
            rule("chains/", &["list"]),
            rule("chains/*", &["read"]),
            rule("chains/secretive", &["deny"]),
            rule("tasks/", &["list"]),
            rule("tasks/*", &["read"]),
            rule("tasks/core/util/noop", &["deny"]),
        ],
    )
    .await;
    let visible: Vec<String> = NAMES.iter().filter(|n| **n != "secretive").map(|n| (*n).to_owned()).collect();

    let schedules = |channel: AuthChannel, page_size: u32| {
        move |page_token: String| {
            let mut client = ScheduleServiceClient::new(channel.clone());
            async move {
                let page =
                    client.list_schedules(v1::ListSchedulesRequest { page_size, page_token }).await?.into_inner();
                assert!(page.schedules.len() <= page_size as usize);
                Ok((page.schedules.into_iter().map(|s| s.name).collect(), page.next_page_token))
            }
        }
    };
    let chains = |channel: AuthChannel, page_size: u32| {
        move |page_token: String| {
            let mut client = ChainServiceClient::new(channel.clone());
            async move {
                let page = client.list_chains(v1::ListChainsRequest { page_size, page_token }).await?.into_inner();
                assert!(page.chains.len() <= page_size as usize);
                Ok((page.chains.into_iter().map(|c| c.name).collect(), page.next_page_token))
            }
        }
    };
    let tasks = |channel: AuthChannel, page_size: u32, function: Option<&str>| {
        let function = function.map(str::to_owned);
        move |page_token: String| {
            let mut client = TaskServiceClient::new(channel.clone());
            let request =
                v1::ListTasksRequest { page_size, page_token, function: function.clone(), ..Default::default() };
            async move {
                let page = client.list_tasks(request).await?.into_inner();
                assert!(page.tasks.len() <= page_size as usize);
                Ok((page.tasks.into_iter().map(|t| t.id).collect(), page.next_page_token))
            }
        }
    };

    // Pages of one: the hidden item's page is empty and moves on; every other item comes once, in order.
    assert_eq!(walk(10, schedules(peeker.clone(), 1)).await, (visible.clone(), 4));
    assert_eq!(walk(10, chains(peeker.clone(), 1)).await, (visible.clone(), 4));
    assert_eq!(walk(10, tasks(peeker.clone(), 1, None)).await, (visible_tasks.clone(), 5));
    // Pages of two: the hidden item is skipped inside a page and across a page boundary.
    assert_eq!(walk(10, schedules(peeker.clone(), 2)).await.0, visible);
    assert_eq!(walk(10, chains(peeker.clone(), 2)).await.0, visible);
    assert_eq!(walk(10, tasks(peeker.clone(), 2, None)).await.0, visible_tasks);
    assert_eq!(walk(10, tasks(peeker.clone(), 3, None)).await.0, visible_tasks);
    // One page holding everything.
    assert_eq!(walk(1, schedules(peeker.clone(), 100)).await, (visible.clone(), 1));
    assert_eq!(walk(1, tasks(peeker.clone(), 100, None)).await, (visible_tasks.clone(), 1));
    // The admin sees everything.
    let everything: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(walk(10, schedules(admin.clone(), 1)).await, (everything.clone(), 4));
    assert_eq!(walk(10, chains(admin.clone(), 3)).await.0, everything);
    assert_eq!(walk(10, tasks(admin.clone(), 2, None)).await.0, all_tasks);

    // What the list leaves out, reading refuses too; `deny` covers the list of one function's tasks.
    let mut client = ScheduleServiceClient::new(peeker.clone());
    let refused = client.get_schedule(v1::GetScheduleRequest { name: "secretive".into() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let request = v1::ListTasksRequest { function: Some("core.util.noop".into()), ..Default::default() };
    let refused = TaskServiceClient::new(peeker.clone()).list_tasks(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // `list` without `read` enumerates nothing, and a list of one unreadable function's tasks is one
    // empty page.
    let lister = limited(
        &stack,
        "lister",
        vec![rule("schedules/", &["list"]), rule("chains/", &["list"]), rule("tasks/*", &["list"])],
    )
    .await;
    assert_eq!(walk(10, schedules(lister.clone(), 2)).await, (vec![], 2));
    assert_eq!(walk(10, chains(lister.clone(), 100)).await, (vec![], 1));
    assert_eq!(walk(10, tasks(lister.clone(), 100, None)).await, (vec![], 1));
    assert_eq!(walk(10, tasks(lister.clone(), 1, Some("core.util.echo"))).await, (vec![], 1));
    stack.stop().await.expect("clean stop");
}
