//! The HTTP API (docs/web.md) against the in-process cluster, with a plain
//! HTTP client: accounts, token/role/ownership checks on every route,
//! uploads through HTTP restored over gRPC, Range downloads, a resumed
//! upload after a dropped connection, bad input answered with 4xx JSON,
//! `/metrics`, `/healthz` and the OpenAPI document.

use dupla_testkit::chat::TEST_PASSWORD;
use dupla_testkit::raw::{self, Target};
use dupla_testkit::{bounded, test_bytes, TestCluster};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

/// The body of an error answer, checked for the JSON shape.
async fn error_code(response: Response, status: StatusCode, what: &str) -> String {
    assert_eq!(response.status(), status, "{what}");
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what}: JSON error body: {e}"));
    assert!(body["message"].is_string(), "{what}: {body}");
    body["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {body}"))
        .to_string()
}

async fn ok_json(response: Response, what: &str) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{what}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
}

/// Register (over HTTP) and log in `login`; their token.
async fn http_user(http: &Client, base: &str, login: &str) -> String {
    let registered = http
        .post(format!("{base}/api/register"))
        .json(
            &json!({"login": login, "password": TEST_PASSWORD, "first_names": "Web",
            "last_names": "User", "age": 30, "gender": "n/a"}),
        )
        .send()
        .await
        .unwrap();
    ok_json(registered, "register").await;
    let session = http
        .post(format!("{base}/api/login"))
        .json(&json!({"login": login, "password": TEST_PASSWORD}))
        .send()
        .await
        .unwrap();
    ok_json(session, "login").await["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Upload `data` as `name` the way the console does: ask the manager
/// where, stage it at that server in `parts` requests. The final answer.
async fn http_upload(
    http: &Client,
    base: &str,
    token: &str,
    name: &str,
    data: &[u8],
    parts: usize,
) -> Value {
    let target = http
        .post(format!("{base}/api/uploads"))
        .bearer_auth(token)
        .json(&json!({"name": name, "size": data.len()}))
        .send()
        .await
        .unwrap();
    let url = ok_json(target, "placement").await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let staged = http
        .post(format!("{url}/api/uploads"))
        .bearer_auth(token)
        .json(&json!({"name": name, "size": data.len()}))
        .send()
        .await
        .unwrap();
    let id = ok_json(staged, "stage").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let step = data.len().div_ceil(parts.max(1)).max(1);
    let mut offset = 0;
    let last = loop {
        let end = (offset + step).min(data.len());
        let put = http
            .put(format!("{url}/api/uploads/{id}?offset={offset}"))
            .bearer_auth(token)
            .body(data[offset..end].to_vec())
            .send()
            .await
            .unwrap();
        let answer = ok_json(put, "put range").await;
        offset = end;
        if offset >= data.len() {
            break answer;
        }
    };
    assert_eq!(last["done"], true, "{last}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_whoami_logout() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let base = cluster.manager_http();
        let http = Client::new();
        let token = http_user(&http, &base, "webby").await;
        let me = ok_json(http.get(format!("{base}/api/whoami")).bearer_auth(&token).send().await.unwrap(), "whoami").await;
        assert_eq!(me["user"]["login"], "webby");
        assert_eq!(me["user"]["role"], "user");
        let status = ok_json(http.get(format!("{base}/api/me")).bearer_auth(&token).send().await.unwrap(), "me").await;
        assert_eq!(status["state"], "online", "{status}");
        let wrong = http.post(format!("{base}/api/login")).json(&json!({"login": "webby", "password": "not it at all"})).send().await.unwrap();
        assert_eq!(error_code(wrong, StatusCode::UNAUTHORIZED, "wrong password").await, "unauthenticated");
        let out = http.post(format!("{base}/api/logout")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        let after = http.get(format!("{base}/api/whoami")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(error_code(after, StatusCode::UNAUTHORIZED, "revoked token").await, "unauthenticated");
        // The same token also stops working over gRPC: one set of tokens.
        let taken = http.post(format!("{base}/api/register"))
            .json(&json!({"login": "webby", "password": TEST_PASSWORD, "first_names": "A", "last_names": "B", "age": 3, "gender": "x"}))
            .send().await.unwrap();
        assert_eq!(error_code(taken, StatusCode::CONFLICT, "login taken").await, "already_exists");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_through_http_restore_over_grpc_and_download_with_range() {
    bounded(async {
        let cluster = TestCluster::start(3).await;
        let base = cluster.manager_http();
        let http = Client::new();
        let token = cluster.token.clone();
        let data = test_bytes(3 << 20, 7);
        let done = http_upload(&http, &base, &token, "web/big.bin", &data, 3).await;
        assert_eq!(done["file"]["copies"], 2, "{done}");
        assert_eq!(
            done["file"]["blake3"],
            blake3::hash(&data).to_hex().as_str()
        );
        // The gRPC client restores the same bytes, from any server.
        for i in 0..3 {
            raw::assert_restores(
                &Target::new(cluster.server_addr(i), &token),
                "web/big.bin",
                &data,
            )
            .await;
        }
        // Listed and searchable over HTTP.
        let page = ok_json(
            http.get(format!("{base}/api/files?q=big&min_size=1000"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
            "files",
        )
        .await;
        assert_eq!(page["total"], 1, "{page}");
        assert_eq!(page["files"][0]["name"], "web/big.bin");
        let none = ok_json(
            http.get(format!("{base}/api/files?q=big&max_size=10"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
            "files",
        )
        .await;
        assert_eq!(none["total"], 0, "{none}");
        let details = ok_json(
            http.get(format!("{base}/api/file?name=web/big.bin"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
            "details",
        )
        .await;
        assert_eq!(details["size"], data.len());

        // Downloads from a server's HTTP API: whole, a range, a suffix.
        let server = cluster.server_http(1);
        let url = format!("{server}/api/files/content?name=web/big.bin");
        let whole = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.bytes().await.unwrap().as_ref(), &data[..]);
        let (a, b) = (1_000_123usize, 2_500_000usize);
        let part = http
            .get(&url)
            .bearer_auth(&token)
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes {a}-{b}/{}", data.len()).as_str()
        );
        assert_eq!(part.bytes().await.unwrap().as_ref(), &data[a..=b]);
        let tail = http
            .get(&url)
            .bearer_auth(&token)
            .header("range", "bytes=-10")
            .send()
            .await
            .unwrap();
        assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            tail.bytes().await.unwrap().as_ref(),
            &data[data.len() - 10..]
        );
        let past = http
            .get(&url)
            .bearer_auth(&token)
            .header("range", format!("bytes={}-", data.len() + 5))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(past, StatusCode::RANGE_NOT_SATISFIABLE, "past the end").await,
            "range_not_satisfiable"
        );
        // A link may carry the token in the query.
        let linked = http
            .get(format!("{url}&token={token}"))
            .header("range", "bytes=0-9")
            .send()
            .await
            .unwrap();
        assert_eq!(linked.bytes().await.unwrap().as_ref(), &data[..10]);
        // Deleting goes through the catalog as over gRPC.
        let removed = http
            .delete(format!("{base}/api/file?name=web/big.bin"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        ok_json(removed, "remove").await;
        let gone = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(
            error_code(gone, StatusCode::NOT_FOUND, "removed file").await,
            "not_found"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_resumes_after_a_dropped_connection() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let http = Client::new();
        let token = cluster.token.clone();
        let data = test_bytes(2 << 20, 9);
        let server = cluster.server_http(0);
        let staged = http
            .post(format!("{server}/api/uploads"))
            .bearer_auth(&token)
            .json(&json!({"name": "resumed.bin", "size": data.len(),
                "blake3": blake3::hash(&data).to_hex().as_str()}))
            .send()
            .await
            .unwrap();
        let id = ok_json(staged, "stage").await["id"]
            .as_str()
            .unwrap()
            .to_string();
        // The body stops with an error after 1 MiB: the connection drops.
        let first: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(data[..512 << 10].to_vec()),
            Ok(data[512 << 10..1 << 20].to_vec()),
            Err(std::io::Error::other("the page was closed")),
        ];
        let cut = http
            .put(format!("{server}/api/uploads/{id}?offset=0"))
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(first)))
            .send()
            .await;
        assert!(
            cut.is_err() || !cut.unwrap().status().is_success(),
            "a cut-off body is not a success"
        );
        // Where to go on from: at most what was sent, and the staged
        // bytes are the file's.
        let state = ok_json(
            http.get(format!("{server}/api/uploads/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
            "status",
        )
        .await;
        let offset = state["offset"].as_u64().unwrap() as usize;
        assert!(offset <= 1 << 20, "{state}");
        // A wrong offset (past the end: never the staged length) is
        // refused with the right one.
        let wrong = http
            .put(format!(
                "{server}/api/uploads/{id}?offset={}",
                data.len() + 1
            ))
            .bearer_auth(&token)
            .body(vec![0u8; 10])
            .send()
            .await
            .unwrap();
        // Refused before its body was read: the server closes the
        // connection and must say so, or the next request here could be
        // sent into that closing connection.
        assert_eq!(wrong.headers()["connection"], "close");
        assert_eq!(
            error_code(wrong, StatusCode::CONFLICT, "wrong offset").await,
            "stale"
        );
        // The cut-off request may still be writing what reached the
        // server: a client asks where to go on from, sends the rest, and
        // asks again if the answer was stale (as the console does).
        let mut offset = offset;
        let done = loop {
            let rest = http
                .put(format!("{server}/api/uploads/{id}?offset={offset}"))
                .bearer_auth(&token)
                .body(data[offset..].to_vec())
                .send()
                .await
                .unwrap();
            if rest.status() != StatusCode::CONFLICT {
                break ok_json(rest, "resume").await;
            }
            let state = ok_json(
                http.get(format!("{server}/api/uploads/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap(),
                "status",
            )
            .await;
            let next = state["offset"].as_u64().unwrap() as usize;
            assert!(
                next > offset,
                "a stale answer means more was staged: {state}"
            );
            offset = next;
        };
        assert_eq!(done["done"], true, "{done}");
        raw::assert_restores(
            &Target::new(cluster.server_addr(1), &token),
            "resumed.bin",
            &data,
        )
        .await;
        // The staging is gone with the commit.
        let after = http
            .get(format!("{server}/api/uploads/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(after, StatusCode::NOT_FOUND, "finished upload").await,
            "not_found"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_checks_tokens_ownership_and_roles() {
    bounded(async {
        let mut cluster = TestCluster::start(2).await;
        let base = cluster.manager_http();
        let server = cluster.server_http(0);
        let http = Client::new();
        let alice = cluster.token.clone();
        raw::upload(
            &Target::new(cluster.server_addr(0), &alice),
            "diary.txt",
            b"secret",
        )
        .await
        .unwrap();

        // No token: 401 JSON on every route that acts for a user.
        let routes = [
            (Method::GET, format!("{base}/api/whoami")),
            (Method::POST, format!("{base}/api/logout")),
            (Method::GET, format!("{base}/api/me")),
            (Method::GET, format!("{base}/api/files")),
            (Method::GET, format!("{base}/api/file?name=diary.txt")),
            (Method::DELETE, format!("{base}/api/file?name=diary.txt")),
            (Method::GET, format!("{base}/api/snapshots")),
            (
                Method::GET,
                format!("{base}/api/snapshots/00000000/entries"),
            ),
            (Method::GET, format!("{base}/api/stats")),
            (Method::GET, format!("{base}/api/stats/usage.csv")),
            (Method::POST, format!("{base}/api/chat")),
            (Method::GET, format!("{base}/api/chat/00ff/events")),
            (Method::DELETE, format!("{base}/api/chat/00ff")),
            (
                Method::GET,
                format!("{server}/api/snapshots/00000000/archive"),
            ),
            (Method::GET, format!("{base}/api/users")),
            (Method::GET, format!("{base}/api/users/tester")),
            (Method::DELETE, format!("{base}/api/users/tester")),
            (
                Method::GET,
                format!("{server}/api/files/content?name=diary.txt"),
            ),
            (
                Method::GET,
                format!("{server}/api/uploads/0123456789abcdef0123456789abcdef"),
            ),
            (
                Method::DELETE,
                format!("{server}/api/uploads/0123456789abcdef0123456789abcdef"),
            ),
        ];
        for (method, url) in &routes {
            let response = http.request(method.clone(), url).send().await.unwrap();
            assert_eq!(
                error_code(response, StatusCode::UNAUTHORIZED, url).await,
                "unauthenticated",
                "{method} {url}"
            );
            let bogus = http
                .request(method.clone(), url)
                .bearer_auth("00ff")
                .send()
                .await
                .unwrap();
            assert_eq!(
                error_code(bogus, StatusCode::UNAUTHORIZED, url).await,
                "unauthenticated",
                "{method} {url}"
            );
        }
        for (path, body) in [
            ("/api/uploads", json!({"name": "x", "size": 1})),
            ("/api/users/tester/role", json!({"role": "viewer"})),
            ("/api/users/tester/quota", json!({"bytes": 1})),
        ] {
            let method = if path.ends_with("uploads") {
                Method::POST
            } else {
                Method::PUT
            };
            let response = http
                .request(method, format!("{base}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                error_code(response, StatusCode::UNAUTHORIZED, path).await,
                "unauthenticated"
            );
        }
        let staged = http
            .post(format!("{server}/api/uploads"))
            .json(&json!({"name": "x", "size": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(staged, StatusCode::UNAUTHORIZED, "stage").await,
            "unauthenticated"
        );

        // Another user sees none of alice's: her file is 404, not 403.
        let bob = http_user(&http, &base, "bobby").await;
        for url in [
            format!("{base}/api/file?name=diary.txt"),
            format!("{server}/api/files/content?name=diary.txt"),
        ] {
            let response = http.get(&url).bearer_auth(&bob).send().await.unwrap();
            assert_eq!(
                error_code(response, StatusCode::NOT_FOUND, &url).await,
                "not_found"
            );
        }
        let bobs = ok_json(
            http.get(format!("{base}/api/files"))
                .bearer_auth(&bob)
                .send()
                .await
                .unwrap(),
            "bob's files",
        )
        .await;
        assert_eq!(bobs["total"], 0);
        let staged = ok_json(
            http.post(format!("{server}/api/uploads"))
                .bearer_auth(&alice)
                .json(&json!({"name": "half.bin", "size": 10}))
                .send()
                .await
                .unwrap(),
            "alice stages",
        )
        .await;
        let id = staged["id"].as_str().unwrap();
        for method in [Method::GET, Method::DELETE] {
            let response = http
                .request(method, format!("{server}/api/uploads/{id}"))
                .bearer_auth(&bob)
                .send()
                .await
                .unwrap();
            assert_eq!(
                error_code(response, StatusCode::NOT_FOUND, "bob and alice's upload").await,
                "not_found"
            );
        }
        let put = http
            .put(format!("{server}/api/uploads/{id}?offset=0"))
            .bearer_auth(&bob)
            .body(vec![1u8; 10])
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(put, StatusCode::NOT_FOUND, "bob writes alice's upload").await,
            "not_found"
        );

        // Administration needs the admin role.
        for (method, url) in [
            (Method::GET, format!("{base}/api/users")),
            (Method::DELETE, format!("{base}/api/users/tester")),
        ] {
            let response = http
                .request(method, &url)
                .bearer_auth(&bob)
                .send()
                .await
                .unwrap();
            assert_eq!(
                error_code(response, StatusCode::FORBIDDEN, &url).await,
                "permission_denied"
            );
        }
        let role = http
            .put(format!("{base}/api/users/bobby/role"))
            .bearer_auth(&bob)
            .json(&json!({"role": "admin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(role, StatusCode::FORBIDDEN, "self-promotion").await,
            "permission_denied"
        );

        // An admin makes bob a viewer: he may list and download, not upload or delete.
        cluster.grant_admin(dupla_testkit::cluster::TEST_USER).await;
        let users = ok_json(
            http.get(format!("{base}/api/users"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap(),
            "users",
        )
        .await;
        assert_eq!(users.as_array().unwrap().len(), 2, "{users}");
        let bad_role = http
            .put(format!("{base}/api/users/bobby/role"))
            .bearer_auth(&alice)
            .json(&json!({"role": "king"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(bad_role, StatusCode::BAD_REQUEST, "unknown role").await,
            "invalid_input"
        );
        let viewer = ok_json(
            http.put(format!("{base}/api/users/bobby/role"))
                .bearer_auth(&alice)
                .json(&json!({"role": "viewer"}))
                .send()
                .await
                .unwrap(),
            "set role",
        )
        .await;
        assert_eq!(viewer["role"], "viewer");
        raw::upload(
            &Target::new(cluster.server_addr(1), &bob),
            "before.txt",
            b"x",
        )
        .await
        .expect_err("viewers cannot back up over gRPC");
        let place = http
            .post(format!("{base}/api/uploads"))
            .bearer_auth(&bob)
            .json(&json!({"name": "v.txt", "size": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(place, StatusCode::FORBIDDEN, "viewer placement").await,
            "permission_denied"
        );
        let stage = http
            .post(format!("{server}/api/uploads"))
            .bearer_auth(&bob)
            .json(&json!({"name": "v.txt", "size": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(stage, StatusCode::FORBIDDEN, "viewer staging").await,
            "permission_denied"
        );
        let listed = http
            .get(format!("{base}/api/files"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        ok_json(listed, "viewers list").await;
        let quota = ok_json(
            http.put(format!("{base}/api/users/bobby/quota"))
                .bearer_auth(&alice)
                .json(&json!({"bytes": 1000, "files": 3}))
                .send()
                .await
                .unwrap(),
            "quota",
        )
        .await;
        assert_eq!(quota["quota_bytes"], 1000);
        let csv = http
            .get(format!("{base}/api/stats/usage.csv"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(csv.lines().any(|l| l.starts_with("bobby,viewer,")), "{csv}");
        // The history behind the console's charts: sampled from the start.
        let stats = ok_json(
            http.get(format!("{base}/api/stats"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap(),
            "stats",
        )
        .await;
        let history = stats["history"].as_array().expect("a history");
        assert!(!history.is_empty(), "{stats}");
        for key in [
            "unix_ms",
            "transfers",
            "repaired_bytes",
            "under_replicated",
            "bytes",
        ] {
            assert!(history[0][key].is_number(), "{key} in {}", history[0]);
        }
        // A storage server's staging counts against the quota too, staged
        // bytes included (it used to take anything up to its capacity).
        ok_json(
            http.put(format!("{base}/api/users/tester/quota"))
                .bearer_auth(&alice)
                .json(&json!({"bytes": 1000, "files": 100}))
                .send()
                .await
                .unwrap(),
            "own quota",
        )
        .await;
        let stage = |size: u64| {
            http.post(format!("{server}/api/uploads"))
                .bearer_auth(&alice)
                .json(&json!({"name": "q.bin", "size": size}))
                .send()
        };
        let over = stage(2000).await.unwrap();
        assert_eq!(
            error_code(over, StatusCode::TOO_MANY_REQUESTS, "over quota").await,
            "exhausted"
        );
        ok_json(stage(600).await.unwrap(), "within quota").await;
        let second = stage(600).await.unwrap();
        assert_eq!(
            error_code(second, StatusCode::TOO_MANY_REQUESTS, "staged counted").await,
            "exhausted"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_json_4xx_never_a_500() {
    bounded(async {
        let cluster = TestCluster::start(1).await;
        let base = cluster.manager_http();
        let server = cluster.server_http(0);
        // No pooled connections: the server closes one whose oversized body
        // it refused unread, and a reused one would fail the next case.
        let http = Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let token = cluster.token.clone();
        let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
            (http.post(format!("{base}/api/login")).header("content-type", "application/json").body("{not json"), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.post(format!("{base}/api/login")).body("login=a"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (http.post(format!("{base}/api/login")).json(&json!({"login": 5})), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.post(format!("{base}/api/login")).header("content-type", "application/json").body(vec![b' '; 200 << 10]), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            (http.post(format!("{base}/api/register")).json(&json!({"login": "x", "password": "p", "first_names": "", "last_names": "", "age": 0, "gender": ""})), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.get(format!("{base}/api/files?min_size=lots")).bearer_auth(&token), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.get(format!("{base}/api/file")).bearer_auth(&token), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.get(format!("{base}/api/file?name=../etc/passwd")).bearer_auth(&token), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.get(format!("{base}/api/nothing-here")), StatusCode::NOT_FOUND, "not_found"),
            (http.post(format!("{base}/api/uploads")).bearer_auth(&token).json(&json!({"name": "/abs", "size": 1})), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.post(format!("{server}/api/uploads")).bearer_auth(&token).json(&json!({"name": "a", "size": 1, "blake3": "zz"})), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.put(format!("{server}/api/uploads/nothex?offset=0")).bearer_auth(&token).body("x"), StatusCode::NOT_FOUND, "not_found"),
            (http.put(format!("{server}/api/uploads/0123456789abcdef0123456789abcdef")).bearer_auth(&token).body("x"), StatusCode::BAD_REQUEST, "invalid_input"),
            (http.get(format!("{server}/api/files/content?name=a")).bearer_auth(&token).header("range", "bytes=9-1"), StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
        ];
        for (i, (request, status, code)) in cases.into_iter().enumerate() {
            let response = request.send().await.unwrap();
            assert_eq!(error_code(response, status, &format!("case {i}")).await, code, "case {i}");
        }
        // More bytes than the declared size: refused, nothing staged.
        let staged = ok_json(http.post(format!("{server}/api/uploads")).bearer_auth(&token)
            .json(&json!({"name": "small.bin", "size": 4})).send().await.unwrap(), "stage").await;
        let id = staged["id"].as_str().unwrap();
        let over = http.put(format!("{server}/api/uploads/{id}?offset=0")).bearer_auth(&token).body(vec![0u8; 100]).send().await.unwrap();
        assert_eq!(error_code(over, StatusCode::PAYLOAD_TOO_LARGE, "oversized part").await, "too_large");
        let state = ok_json(http.get(format!("{server}/api/uploads/{id}")).bearer_auth(&token).send().await.unwrap(), "status").await;
        assert_eq!(state["offset"], 0);
    })
    .await;
}

/// Found by `scripts/api-fuzz.sh` (schemathesis, status_code_conformance):
/// routes answered 400, 401, 413 and 415 from their extractors and token
/// checks without their OpenAPI document listing them. Each answer here
/// must be one the route's document lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_answer_is_in_the_openapi_document() {
    bounded(async {
        let cluster = TestCluster::start(1).await;
        let (base, server) = (cluster.manager_http(), cluster.server_http(0));
        // No pooled connections: a refused oversized body closes its connection.
        let http = Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let token = cluster.token.clone();
        let session = "0123456789abcdef0123456789abcdef";
        let cases: Vec<(&str, &str, reqwest::RequestBuilder)> = vec![
            (
                &base,
                "/api/files",
                http.get(format!("{base}/api/files?limit=many"))
                    .bearer_auth(&token),
            ),
            (
                &base,
                "/api/file",
                http.delete(format!("{base}/api/file")).bearer_auth(&token),
            ),
            (&base, "/api/users", http.get(format!("{base}/api/users"))),
            (
                &base,
                "/api/chat/{id}/events",
                http.get(format!("{base}/api/chat/{session}/events")),
            ),
            (
                &base,
                "/api/chat/{id}/lines",
                http.post(format!("{base}/api/chat/{session}/lines"))
                    .bearer_auth(&token)
                    .body("hi"),
            ),
            (
                &base,
                "/api/login",
                http.post(format!("{base}/api/login")).body("login=a"),
            ),
            (
                &base,
                "/api/register",
                http.post(format!("{base}/api/register"))
                    .header("content-type", "application/json")
                    .body(vec![b' '; 200 << 10]),
            ),
            (
                &base,
                "/api/users/{login}/quota",
                http.put(format!("{base}/api/users/x/quota"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body("\0"),
            ),
            (
                &server,
                "/api/uploads",
                http.post(format!("{server}/api/uploads"))
                    .bearer_auth(&token)
                    .body("x"),
            ),
            (
                &server,
                "/api/uploads/{id}",
                http.put(format!("{server}/api/uploads/{session}"))
                    .bearer_auth(&token)
                    .body("x"),
            ),
            (
                &server,
                "/api/files/content",
                http.get(format!("{server}/api/files/content"))
                    .bearer_auth(&token),
            ),
        ];
        for (node, path, request) in cases {
            let request = request.build().unwrap();
            let method = request.method().as_str().to_lowercase();
            let status = http.execute(request).await.unwrap().status();
            assert!(status.is_client_error(), "{method} {path}: {status}");
            let doc = ok_json(
                http.get(format!("{node}/api/openapi.json"))
                    .send()
                    .await
                    .unwrap(),
                "openapi",
            )
            .await;
            let responses = &doc["paths"][path][&method]["responses"];
            assert!(
                responses.get(status.as_str()).is_some(),
                "{method} {path} answered {status}, which its document does not list: {responses}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_healthz_and_the_openapi_document() {
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let base = cluster.manager_http();
        let http = Client::new();
        let token = cluster.token.clone();
        http_upload(&http, &base, &token, "m.bin", &test_bytes(100_000, 3), 1).await;
        // A gRPC call on each server (an HTTP upload's write path runs in
        // the entry's own process, so it records no Storage RPC there).
        for i in 0..2 {
            raw::download(&Target::new(cluster.server_addr(i), &token), "m.bin")
                .await
                .unwrap();
        }
        let manager = metrics(&http, &base).await;
        for series in [
            "dupla_rpc_duration_seconds_bucket",
            "dupla_rpc_requests_total",
            "dupla_servers{",
            "dupla_catalog_files",
            "dupla_under_replicated_files",
            "dupla_sessions",
            "dupla_repaired_files_total",
            "dupla_chat_deliveries_total",
            "dupla_uploads_open",
            "dupla_http_request_duration_seconds_bucket",
        ] {
            assert!(
                manager.contains(series),
                "manager /metrics lacks {series}:\n{manager}"
            );
        }
        let mut moved = (0.0, 0.0);
        for i in 0..2 {
            let server = http
                .get(format!("{}/metrics", cluster.server_http(i)))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for series in [
                "dupla_chunk_store_bytes",
                "dupla_bytes_in_total",
                "dupla_bytes_out_total",
                "dupla_active_transfers",
                "dupla_scrub_bytes_total",
                "dupla_rpc_duration_seconds_bucket{",
                "service=\"dupla.v1.Storage\"",
            ] {
                assert!(
                    server.contains(series),
                    "server /metrics lacks {series}:\n{server}"
                );
            }
            let value = |name: &str| {
                server
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            moved.0 += value("dupla_bytes_in_total");
            moved.1 += value("dupla_bytes_out_total");
        }
        assert!(moved.0 >= 100_000.0 && moved.1 >= 100_000.0, "{moved:?}");
        for url in [
            format!("{base}/healthz"),
            format!("{}/healthz", cluster.server_http(0)),
        ] {
            assert_eq!(
                http.get(&url).send().await.unwrap().status(),
                StatusCode::OK,
                "{url}"
            );
        }
        let doc: Value = ok_json(
            http.get(format!("{base}/api/openapi.json"))
                .send()
                .await
                .unwrap(),
            "openapi",
        )
        .await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/api/register",
            "/api/login",
            "/api/logout",
            "/api/whoami",
            "/api/me",
            "/api/files",
            "/api/file",
            "/api/snapshots",
            "/api/snapshots/{id}/entries",
            "/api/uploads",
            "/api/cluster",
            "/api/stats",
            "/api/stats/usage.csv",
            "/api/chat",
            "/api/chat/{id}",
            "/api/chat/{id}/lines",
            "/api/chat/{id}/events",
            "/api/users",
            "/api/users/{login}",
            "/api/users/{login}/role",
            "/api/users/{login}/quota",
        ] {
            assert!(paths.contains_key(path), "openapi.json lacks {path}");
        }
        let doc: Value = ok_json(
            http.get(format!("{}/api/openapi.json", cluster.server_http(0)))
                .send()
                .await
                .unwrap(),
            "server openapi",
        )
        .await;
        for path in [
            "/api/files/content",
            "/api/uploads",
            "/api/uploads/{id}",
            "/api/snapshots/{id}/archive",
        ] {
            assert!(
                doc["paths"].as_object().unwrap().contains_key(path),
                "server openapi.json lacks {path}"
            );
        }
        for page in ["/", "/api/docs"] {
            let response = http.get(format!("{base}{page}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert!(response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
        }
        let status = ok_json(
            http.get(format!("{base}/api/cluster"))
                .send()
                .await
                .unwrap(),
            "cluster",
        )
        .await;
        let servers = status["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 2);
        assert!(
            servers
                .iter()
                .all(|s| s["state"] == "up" && s["http"].as_str().unwrap().starts_with("http://")),
            "{status}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_uploads_take_the_tls_write_path_too() {
    bounded(async {
        // The staged file goes through the write path, whose hops between
        // servers (to the replica, or to a primary elsewhere) use the
        // cluster's TLS.
        let cluster = TestCluster::start_tls(2).await;
        let base = cluster.manager_http();
        let http = Client::new();
        let token = cluster.token.clone();
        let data = test_bytes(1 << 20, 11);
        let done = http_upload(&http, &base, &token, "tls.bin", &data, 2).await;
        assert_eq!(done["file"]["copies"], 2, "{done}");
        let url = format!("{}/api/files/content?name=tls.bin", cluster.server_http(1));
        let back = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(back.bytes().await.unwrap().as_ref(), &data[..]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_downloads_as_a_tar_archive() {
    use dupla_client::snapshot_backup::{self, RunOptions};
    bounded(async {
        let cluster = TestCluster::start(2).await;
        let client = dupla_client::Client::new(cluster.manager_addr(), None)
            .with_token(cluster.token.clone());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let long = format!("tree/{}/deep.txt", "a-rather-long-directory-name".repeat(5));
        let files: Vec<(String, Vec<u8>)> = vec![
            ("tree/hello.txt".into(), b"hello".to_vec()),
            ("tree/empty.txt".into(), Vec::new()),
            ("tree/sub/big.bin".into(), test_bytes((3 << 20) + 17, 4)),
            (long, b"a long path".to_vec()),
        ];
        for (path, data) in &files {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), data).unwrap();
        }
        let options = RunOptions {
            paths: vec!["tree".into()],
            ..Default::default()
        };
        let run = snapshot_backup::run(
            &client,
            root,
            &options,
            dupla_client::output::Output { json: true },
        )
        .await
        .expect("backup run");
        let http = Client::new();
        let url = format!(
            "{}/api/snapshots/{}/archive",
            cluster.server_http(1),
            run.snapshot
        );
        let response = http
            .get(&url)
            .bearer_auth(&cluster.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.bytes().await.unwrap();
        let mut archive = tar::Archive::new(bytes.as_ref());
        let mut got = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type().is_file() {
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                got.insert(path, data);
            }
        }
        let want: std::collections::BTreeMap<String, Vec<u8>> = files.into_iter().collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        assert!(got == want, "archived bytes differ");
        // Another user's snapshot is not found; no token is refused.
        let bob = http_user(&http, &cluster.manager_http(), "bobby").await;
        let other = http.get(&url).bearer_auth(&bob).send().await.unwrap();
        assert_eq!(
            error_code(other, StatusCode::NOT_FOUND, "bob's view of the snapshot").await,
            "not_found"
        );
        let anonymous = http.get(&url).send().await.unwrap();
        assert_eq!(
            error_code(anonymous, StatusCode::UNAUTHORIZED, "no token").await,
            "unauthenticated"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_browser_chat_shares_the_rooms_of_dupla_chat() {
    use dupla_testkit::chat::ChatClient;
    bounded(async {
        let mut cluster = TestCluster::start(1).await;
        // The server serves chat once its broker link is up.
        dupla_testkit::social::wait_for_social(&cluster).await;
        let base = cluster.manager_http();
        let http = Client::new();
        let web = http_user(&http, &base, "webchat").await;
        let opened = ok_json(
            http.post(format!("{base}/api/chat"))
                .bearer_auth(&web)
                .send()
                .await
                .unwrap(),
            "open chat",
        )
        .await;
        let id = opened["id"].as_str().unwrap().to_string();
        // Everything the page has seen so far, up to `wanted`.
        let mut after = 0;
        let mut seen: Vec<String> = Vec::new();
        let mut wait_for = async |wanted: &str| {
            while !seen.iter().any(|l| l.contains(wanted)) {
                let page = ok_json(
                    http.get(format!("{base}/api/chat/{id}/events?after={after}"))
                        .bearer_auth(&web)
                        .send()
                        .await
                        .unwrap(),
                    "events",
                )
                .await;
                after = page["last"].as_u64().unwrap();
                for e in page["events"].as_array().unwrap() {
                    seen.push(format!(
                        "{}|{}|{}",
                        e["kind"].as_str().unwrap(),
                        e["from"].as_str().unwrap(),
                        e["text"].as_str().unwrap()
                    ));
                }
                assert!(page["closed"].is_null(), "{page}");
            }
        };
        let say = |line: &str| {
            http.post(format!("{base}/api/chat/{id}/lines"))
                .bearer_auth(&web)
                .json(&json!({"line": line}))
                .send()
        };

        // A `dupla chat` client (gRPC, on the user's storage server, as
        // `dupla chat` opens it) and the page meet in a room.
        let mut terminal = ChatClient::connect(
            &dupla_testkit::chat::assigned_server(&cluster.manager_addr(), &cluster.token).await,
            dupla_testkit::cluster::TEST_USER,
            &cluster.token,
        )
        .await
        .unwrap();
        assert_eq!(
            say("#cR webroom").await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
        wait_for("webroom").await;
        terminal.send("#gR webroom").await;
        terminal.expect_prefix("* you are now in webroom").await;
        assert_eq!(
            say("hello from the page").await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
        terminal.expect("webchat: hello from the page").await;
        terminal.send("hello from the terminal").await;
        wait_for("message|tester|hello from the terminal").await;
        // Both ways went through the storage server and the broker: the
        // manager's own rooms carried nothing.
        let metrics = metrics(&http, &base).await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("dupla_chat_lines_relayed_total") && l.ends_with(" 0")),
            "{metrics}"
        );
        // Another user cannot read or write this session.
        let other = cluster.token.clone();
        let peek = http
            .get(format!("{base}/api/chat/{id}/events"))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(peek, StatusCode::NOT_FOUND, "someone else's chat").await,
            "not_found"
        );
        let left = http
            .delete(format!("{base}/api/chat/{id}"))
            .bearer_auth(&web)
            .send()
            .await
            .unwrap();
        assert_eq!(left.status(), StatusCode::NO_CONTENT);
        // A session left open and a poll in flight do not hold the manager
        // up when it stops.
        let open = ok_json(
            http.post(format!("{base}/api/chat"))
                .bearer_auth(&web)
                .send()
                .await
                .unwrap(),
            "open chat",
        )
        .await;
        let poll = http
            .get(format!(
                "{base}/api/chat/{}/events?after=1000",
                open["id"].as_str().unwrap()
            ))
            .bearer_auth(&web)
            .send();
        // stop_manager fails the test if the manager takes over 10 s.
        let (answer, ()) = tokio::join!(poll, cluster.stop_manager());
        drop(answer);
    })
    .await;
}

/// The text of `GET {base}/metrics`.
async fn metrics(http: &Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
