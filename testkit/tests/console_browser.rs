//! The web console in a real browser: headless Chromium driven through
//! WebDriver (`chromedriver`, Debian's `chromium-driver`, installed by
//! `.ci/run`). Sign in, see the servers up, upload a file with the page and
//! watch it finish, find it with search, download it and compare bytes, and
//! an admin makes a user a viewer whose next upload is refused. Screenshots
//! of each page go to `target/console-screenshots/` for review.
//!
//! Without `chromedriver` on the PATH the test says so and passes: the API
//! itself is covered by `http_api.rs`.

use dupla_testkit::chat::TEST_PASSWORD;
use dupla_testkit::cluster::TEST_USER;
use dupla_testkit::{bounded, test_bytes, TestCluster};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

/// Start chromedriver on a free port and wait for its "started" line.
fn start_driver() -> Option<Driver> {
    let binary = which("chromedriver")?;
    let port = dupla_testkit::procs::free_port();
    let mut child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let mut lines = BufReader::new(stdout).lines();
    let started = lines.any(|l| l.is_ok_and(|l| l.contains("started successfully")));
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    if !started {
        let _ = child.kill();
        return None;
    }
    Some(Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let mut options = json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"]});
    if let Some(chromium) = which("chromium") {
        options["binary"] = json!(chromium);
    }
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a headless Chromium session")
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("write screenshot");
}

async fn sign_in(client: &Client, base: &str, login: &str) {
    // Signed out first, so the sign-out button below means this login.
    client.goto(&format!("{base}/#/signin")).await.unwrap();
    client
        .execute("localStorage.clear()", vec![])
        .await
        .unwrap();
    client.refresh().await.unwrap();
    let form = client.wait().for_element(Locator::Css("#f")).await.unwrap();
    form.find(Locator::Css("input[name=login]"))
        .await
        .unwrap()
        .send_keys(login)
        .await
        .unwrap();
    form.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(TEST_PASSWORD)
        .await
        .unwrap();
    shot(client, "signin").await;
    form.find(Locator::Css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css("#signout"))
        .await
        .unwrap();
}

/// Wait (WebDriver's own wait) until the element `id` (or `main`)
/// contains `text`; its text.
async fn wait_text(client: &Client, id: &str, text: &str) -> String {
    let node = match id {
        "main" => "//main".to_string(),
        id => format!("//*[@id='{}']", id.trim_start_matches('#')),
    };
    let xpath = format!("{node}[contains(., '{text}')]");
    let element = client
        .wait()
        .at_most(std::time::Duration::from_secs(120))
        .for_element(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("{id} never showed {text:?}: {e}"));
    element.text().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_signs_in_uploads_finds_downloads_and_administers() {
    let Some(driver) = start_driver() else {
        eprintln!("chromedriver is not installed (apt-get install chromium chromium-driver): browser test skipped");
        return;
    };
    bounded(async {
        let mut cluster = TestCluster::start(3).await;
        // The servers serve chat once their broker links are up.
        dupla_testkit::social::wait_for_social(&cluster).await;
        let base = cluster.manager_http();
        let client = browser(&driver).await;

        // Sign in; the dashboard shows the three servers up.
        sign_in(&client, &base, TEST_USER).await;
        let servers = wait_text(&client, "#servers", "up").await;
        client.wait().for_element(Locator::Css("#servers tr:nth-child(3) .pill.up")).await.unwrap();
        assert_eq!(servers.matches("up").count(), 3, "{servers}");
        shot(&client, "dashboard").await;

        // Upload a 20 MiB file with the page and watch it finish.
        let data = test_bytes(20 << 20, 5);
        let path = cluster.root().join("console-upload.bin");
        std::fs::write(&path, &data).unwrap();
        client.goto(&format!("{base}/#/upload")).await.unwrap();
        let input = client.wait().for_element(Locator::Css("#file")).await.unwrap();
        input.send_keys(path.to_str().unwrap()).await.unwrap();
        client.find(Locator::Css("#go")).await.unwrap().click().await.unwrap();
        let state = wait_text(&client, "#state", "Backed up").await;
        assert!(state.contains("2 copies"), "{state}");
        shot(&client, "upload").await;

        // An upload cut off (here: its first 5 MiB staged, as a page closed
        // midway leaves it) is offered again after a reload, and finishes
        // from where it stopped once the same file is chosen.
        let cut = test_bytes(12 << 20, 6);
        let cut_path = cluster.root().join("reloaded.bin");
        std::fs::write(&cut_path, &cut).unwrap();
        let modified_ms = std::fs::metadata(&cut_path).unwrap().modified().unwrap()
            .duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let http = reqwest::Client::new();
        let token = cluster.token.clone();
        let target: serde_json::Value = http.post(format!("{base}/api/uploads")).bearer_auth(&token)
            .json(&json!({"name": "reloaded.bin", "size": cut.len()})).send().await.unwrap().json().await.unwrap();
        let url = target["url"].as_str().unwrap().to_string();
        let staged: serde_json::Value = http.post(format!("{url}/api/uploads")).bearer_auth(&token)
            .json(&json!({"name": "reloaded.bin", "size": cut.len()})).send().await.unwrap().json().await.unwrap();
        let id = staged["id"].as_str().unwrap().to_string();
        let first = http.put(format!("{url}/api/uploads/{id}?offset=0")).bearer_auth(&token)
            .body(cut[..5 << 20].to_vec()).send().await.unwrap();
        assert!(first.status().is_success());
        let pending = json!({"id": id, "url": url, "name": "reloaded.bin", "size": cut.len(), "modified": modified_ms});
        client.execute("localStorage.setItem('dupla.upload', arguments[0])", vec![json!(pending.to_string())]).await.unwrap();
        client.goto(&format!("{base}/#/upload")).await.unwrap();
        client.refresh().await.unwrap();
        wait_text(&client, "#resume", "was interrupted").await;
        shot(&client, "upload-resume").await;
        let input = client.wait().for_element(Locator::Css("#file")).await.unwrap();
        input.send_keys(cut_path.to_str().unwrap()).await.unwrap();
        client.find(Locator::Css("#go")).await.unwrap().click().await.unwrap();
        wait_text(&client, "#state", "Backed up reloaded.bin").await;
        let back = http.get(format!("{url}/api/files/content?name=reloaded.bin")).bearer_auth(&token)
            .send().await.unwrap().bytes().await.unwrap();
        assert!(back.as_ref() == cut.as_slice(), "the resumed upload's bytes differ");
        // It was that upload that finished (its staging went with the
        // commit), not a new one from the start.
        let old = http.get(format!("{url}/api/uploads/{id}")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(old.status(), reqwest::StatusCode::NOT_FOUND);

        // Find it with search, and download it through its link.
        client.goto(&format!("{base}/#/files")).await.unwrap();
        let q = client.wait().for_element(Locator::Css("input[name=q]")).await.unwrap();
        q.send_keys("console-up").await.unwrap();
        client.find(Locator::Css("#f button")).await.unwrap().click().await.unwrap();
        wait_text(&client, "#count", "1 file").await;
        let link = client.find(Locator::Css("#rows a[download]")).await.unwrap();
        let href = link.attr("href").await.unwrap().expect("a download link");
        shot(&client, "files").await;
        let got = reqwest::get(&href).await.unwrap().bytes().await.unwrap();
        assert!(got.as_ref() == data.as_slice(), "downloaded bytes differ");

        // An admin makes bob a viewer from the users page; bob's next
        // upload is refused.
        let bob = cluster.new_user("bob").await;
        cluster.grant_admin(TEST_USER).await;
        sign_in(&client, &base, TEST_USER).await;
        client.goto(&format!("{base}/#/users")).await.unwrap();
        let select = client.wait().for_element(Locator::Css("select[data-role=bob]")).await.unwrap();
        select.select_by_value("viewer").await.unwrap();
        wait_text(&client, "#toast", "bob is now viewer").await;
        shot(&client, "users").await;
        let refused = reqwest::Client::new()
            .post(format!("{base}/api/uploads"))
            .bearer_auth(&bob)
            .json(&json!({"name": "after.bin", "size": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

        // Chat between the page and a `dupla chat` client, in one room: the
        // client on bob's storage server, as `dupla chat` opens it.
        let bob_server = dupla_testkit::chat::assigned_server(&cluster.manager_addr(), &bob).await;
        let mut terminal = dupla_testkit::chat::ChatClient::connect(&bob_server, "bob", &bob)
            .await
            .unwrap();
        client.goto(&format!("{base}/#/chat")).await.unwrap();
        let line = client.wait().for_element(Locator::Css("#line")).await.unwrap();
        wait_text(&client, "#log", "lobby").await;
        line.send_keys("#cR console-room\n").await.unwrap();
        wait_text(&client, "#log", "console-room").await;
        terminal.send("#gR console-room").await;
        wait_text(&client, "#log", "bob joined console-room").await;
        let line = client.find(Locator::Css("#line")).await.unwrap();
        line.send_keys("hello from the browser\n").await.unwrap();
        terminal.expect("tester: hello from the browser").await;
        terminal.send("hello from the terminal").await;
        wait_text(&client, "#log", "bob: hello from the terminal").await;
        shot(&client, "chat").await;

        client.goto(&format!("{base}/#/stats")).await.unwrap();
        wait_text(&client, "main", "Stored bytes per user").await;
        // The charts over time: at least the manager's first sample.
        wait_text(&client, "main", "Transfers over time").await;
        let charts = client.find_all(Locator::Css("svg.line")).await.unwrap();
        assert_eq!(charts.len(), 4, "transfers, repairs, under-replicated, stored");
        shot(&client, "stats").await;

        // On a phone: nothing wider than the screen, on every page.
        client.set_window_size(390, 844).await.unwrap();
        for (page, text) in [("dashboard", "Servers"), ("files", "Files"), ("stats", "Stored bytes")] {
            client.goto(&format!("{base}/#/{page}")).await.unwrap();
            wait_text(&client, "main", text).await;
            let overflow = client
                .execute(
                    "return document.documentElement.scrollWidth - window.innerWidth",
                    vec![],
                )
                .await
                .unwrap();
            assert!(
                overflow.as_i64().unwrap_or(1) <= 0,
                "the {page} page is {overflow} px wider than a 390 px phone screen"
            );
            shot(&client, &format!("phone-{page}")).await;
        }
        client.set_window_size(1280, 900).await.unwrap();

        // No uncaught error or unhandled rejection on any page so far.
        let errors = client.execute("return window.duplaErrors", vec![]).await.unwrap();
        assert_eq!(errors, json!([]), "console errors");
        client.goto(&format!("{base}/api/docs")).await.unwrap();
        wait_text(&client, "#doc", "/api/login").await;
        shot(&client, "reference").await;
        client.close().await.unwrap();
    })
    .await;
}
