"""The dashboard in a real browser: Debian's headless Chromium (/usr/bin/chromium, `make browser`)
driven by Playwright, against the local stack's HTTP server: one stack and one browser for the
module. Each page a person opens — a workflow, a version's graph, a live run on its graph, a failed
run, a batch with failed items, the start form with its estimate — is asserted as it shows, and
saved as a screenshot under .artifacts/screenshots/ (gitignored) to be looked at."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, expect, sync_playwright

from relayflow.client import Client
from relayflow.local.stack import LocalStack
from relayflow_runtime.services import authoring

# One stack for the module: each test makes workflows and datasets of its own.
pytestmark = pytest.mark.shared_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".artifacts" / "screenshots"
#: A time as every page shows one: date, time and zone (the browser's, set to Paris here).
SHOWN_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (CET|CEST|GMT\+1|GMT\+2)")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make browser` (apt-get install chromium)"
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class Console:
    """The page's console errors (a CSP violation or a script error shows up here)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris")
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of cancel, re-run, retry
    console = Console()
    page.on("console", console)
    yield page, console
    context.close()


@pytest.fixture
def client(local_stack: LocalStack, served: str) -> Iterator[Client]:
    with Client(base_url=served, api_key=local_stack.api_key) as client:
        yield client


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_page(page: Page, served: str, stack: LocalStack, route: str) -> None:
    """Open a page of the dashboard with the key in the URL fragment, as `relayflow serve` does."""
    page.goto(f"{served}/dashboard#key={stack.api_key}&{route}")


def chain(
    client: Client, name: str, nodes: list[tuple[str, dict[str, Any], dict[str, Any]]], **config: Any
) -> tuple[str, str, dict[str, str]]:
    """A workflow whose first version is builtin model nodes (node name, model config, node
    config) and no edges, so a chain in creation order; (workflow id, version id, node ids)."""
    workflow = client.create_workflow(name=name)
    version = client.create_workflow_version(
        workflow_id=workflow.id, config={"retry_delay_seconds": 1, **config}
    )
    ids: dict[str, str] = {}
    for node_name, model_config, node_config in nodes:
        model = client.create_model(name=node_name, provider="builtin", config=model_config)
        node = client.create_workflow_node(
            version_id=version.id, name=node_name, entity_id=model.id, config=node_config
        )
        ids[node_name] = node.id
    return workflow.id, version.id, ids


def graph_node(page: Page, node_id: str) -> Any:
    return page.locator(f'[data-testid="graph-node"][data-node="{node_id}"]')


def test_the_workflow_page_lists_versions_with_the_active_one_and_a_version_shows_its_graph(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, console = page
    # Given a workflow whose first (active) version is a chain, and a second version, a diamond
    workflow_id, _, _ = chain(
        client,
        "Docs pipeline",
        [
            ("Extract", {"model": "echo"}, {}),
            ("Summarize", {"model": "uppercase"}, {"input_template": "Summarize: {{input}}"}),
        ],
    )
    second = client.create_workflow_version(workflow_id=workflow_id, config={"max_retries": 4})
    model = client.create_model(name="Echo", provider="builtin", config={"model": "echo"})
    made = {
        name: client.create_workflow_node(
            version_id=second.id,
            name=name,
            entity_id=model.id,
            config={"input_template": f"{name}: {{{{input}}}}", "on_failure": "continue"}
            if name == "Sentiment"
            else {},
        ).id
        for name in ("Extract", "Summarize", "Sentiment", "Report")
    }
    diamond = [("Extract", "Summarize"), ("Extract", "Sentiment"), ("Summarize", "Report")]
    diamond.append(("Sentiment", "Report"))
    for begin, end in diamond:
        client.create_workflow_edge(version_id=second.id, begin_node_id=made[begin], end_node_id=made[end])
    run = client.execute_workflow(workflow_id=workflow_id, single_input="hello")
    client.wait_for_execution(workflow_id, run.id, poll_interval=0.1, timeout=30)

    # When the workflow's page is opened
    open_page(browser_page, served, local_stack, f"/workflows/{workflow_id}")

    # Then both versions are listed, newest first, the first one marked active
    rows = browser_page.get_by_test_id("version-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("v2")
    expect(rows.nth(0)).to_contain_text("4 retries")
    expect(rows.nth(1)).to_contain_text("v1")
    expect(rows.nth(1).get_by_test_id("active-version")).to_have_text("active")
    expect(rows.nth(0).get_by_test_id("active-version")).to_have_count(0)
    # And the run is listed with the version it ran, completed, its time with a date and a zone
    row = browser_page.locator(f'[data-execution="{run.id}"]')
    expect(row).to_contain_text("v1")
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("2 / 2 nodes")
    assert SHOWN_TIME.search(row.inner_text()), row.inner_text()
    shot(browser_page, "workflow")

    # When the second version is opened
    rows.nth(0).get_by_role("link", name="v2").click()

    # Then its graph shows the four nodes in ranks, the two branches side by side, every edge drawn
    nodes = browser_page.get_by_test_id("graph-node")
    expect(nodes).to_have_count(4)
    expect(browser_page.locator("path.edge")).to_have_count(4)
    boxes = {name: graph_node(browser_page, made[name]).bounding_box() for name in made}
    assert all(boxes.values()), boxes
    assert boxes["Extract"]["y"] < boxes["Summarize"]["y"] == boxes["Sentiment"]["y"] < boxes["Report"]["y"]
    assert boxes["Summarize"]["x"] != boxes["Sentiment"]["x"]
    expect(graph_node(browser_page, made["Sentiment"])).to_contain_text("Echo · builtin/echo")
    expect(browser_page.get_by_test_id("version-config")).to_contain_text("4 per node")
    expect(browser_page.get_by_test_id("version-config")).to_contain_text("4 nodes · 4 edges")
    # And its runs: none (the run above used version 1)
    expect(browser_page.get_by_test_id("executions")).to_contain_text("No executions.")

    # When a node is clicked, its model, template and failure policy show
    graph_node(browser_page, made["Sentiment"]).click()
    expect(browser_page.get_by_test_id("node-template")).to_have_text("Sentiment: {{input}}")
    expect(browser_page.get_by_test_id("node-config")).to_contain_text("continue")
    expect(browser_page.get_by_test_id("node-config")).to_contain_text("Extract")
    shot(browser_page, "version-graph")
    assert console.errors == []


def test_a_fifty_node_version_lays_out_legibly(
    local_stack: LocalStack,
    served: str,
    api: Any,
    page: tuple[Page, Console],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    browser_page, console = page
    # Given a version of 50 nodes: one fans out to six branches of eight, joined by a last one (a
    # version made before the cap was lowered to 40 has that many; the page shows what is stored).
    # Made through the API in-process (no HTTP round trip: 104 requests)
    monkeypatch.setattr(authoring, "MAX_NODES_PER_VERSION", 50)
    workflow = api("POST", "/workflows", {"name": "Fifty nodes"})[1]
    version = api("POST", f"/workflows/{workflow['id']}/versions", {})[1]
    echo = {"name": "Echo", "provider": "builtin", "config": {"model": "echo"}}
    model = api("POST", "/models", echo)[1]

    def node(name: str) -> str:
        body = {"name": name, "entity_id": model["id"]}
        status, made = api("POST", f"/versions/{version['id']}/nodes", body)
        assert status == 201, made
        return str(made["id"])

    def edge(begin: str, end: str) -> None:
        body = {"begin_node_id": begin, "end_node_id": end}
        status, made = api("POST", f"/versions/{version['id']}/edges", body)
        assert status == 201, made

    start = node("Split document")
    last = []
    for branch in range(6):
        previous = start
        for step in range(8):
            current = node(f"Branch {branch + 1} step {step + 1}")
            edge(previous, current)
            previous = current
        last.append(previous)
    join = node("Merge all")
    for end in last:
        edge(end, join)

    # When its page is opened
    open_page(browser_page, served, local_stack, f"/workflows/{workflow['id']}/versions/{version['id']}")

    # Then all 50 nodes and 54 edges are drawn, no two nodes overlap, and the labels are full size
    nodes = browser_page.get_by_test_id("graph-node")
    expect(nodes).to_have_count(50)
    expect(browser_page.locator("path.edge")).to_have_count(54)
    boxes = nodes.evaluate_all(
        "els => els.map(e => { const r = e.querySelector('rect.box').getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom]; })"
    )
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    sizes = browser_page.locator(".gname").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().height)"
    )
    assert min(sizes) >= 12, min(sizes)  # drawn at its size, never shrunk to fit
    # And the six branches sit side by side within the page's width (1280 px)
    width = browser_page.get_by_test_id("graph").evaluate("e => e.getBoundingClientRect().width")
    assert width <= 1240, width
    expect(graph_node(browser_page, join)).to_contain_text("Merge all")
    shot(browser_page, "version-graph-50")
    assert console.errors == []


def test_a_live_run_shows_each_node_state_on_its_graph_and_a_node_its_attempts(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, console = page
    # Given a run of a chain whose second node fails once (retried) and whose third takes 3 s
    workflow_id, version_id, ids = chain(
        client,
        "Live run",
        [
            ("Echo", {"model": "echo"}, {"input_template": "Say: {{input}}"}),
            ("Flaky", {"model": "flaky", "failures": 1}, {}),
            ("Think", {"model": "sleep", "seconds": 3}, {}),
            ("Shout", {"model": "uppercase"}, {}),
        ],
        max_retries=2,
    )
    execution = client.execute_workflow(workflow_id=workflow_id, single_input="hello browser")

    # When its page is opened while it runs
    open_page(browser_page, served, local_stack, f"/workflows/{workflow_id}/executions/{execution.id}")

    # Then the graph (a chain: the version has no edges) shows the nodes done, the one running and
    # the one still to come
    expect(browser_page.locator("path.edge")).to_have_count(3)
    expect(graph_node(browser_page, ids["Think"])).to_have_attribute("data-state", "running", timeout=20_000)
    expect(graph_node(browser_page, ids["Echo"])).to_have_attribute("data-state", "completed")
    expect(graph_node(browser_page, ids["Flaky"])).to_have_attribute("data-state", "completed")
    expect(graph_node(browser_page, ids["Flaky"]).locator(".gmeta")).to_contain_text("completed · ↻2 · ")
    expect(graph_node(browser_page, ids["Shout"])).to_have_attribute("data-state", "pending")
    expect(browser_page.get_by_test_id("progress")).to_contain_text("2 / 4 nodes completed")
    # And the page names the version it runs, a link to it
    expect(browser_page.get_by_test_id("execution-version")).to_have_text("version 1")
    shot(browser_page, "run-live")

    # When the retried node is clicked
    graph_node(browser_page, ids["Flaky"]).click()

    # Then its prompt, output and each attempt with its error show
    expect(browser_page.get_by_test_id("node-prompt")).to_have_text("Say: hello browser")
    expect(browser_page.get_by_test_id("node-output")).to_have_text("Say: hello browser")
    attempts = browser_page.get_by_test_id("attempt")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("failed")
    expect(attempts.nth(0)).to_contain_text("builtin flaky model")
    expect(attempts.nth(1)).to_contain_text("completed")
    for index in range(2):  # each attempt's start (date, time, zone) and end
        assert SHOWN_TIME.search(attempts.nth(index).get_by_test_id("attempt-time").inner_text())
    assert SHOWN_TIME.search(browser_page.get_by_test_id("node-times").inner_text())

    # And once the run ends every node is completed, the bar full, the result shown
    expect(browser_page.locator(".xheader .badge")).to_have_text("completed", timeout=20_000)
    for node_id in ids.values():
        expect(graph_node(browser_page, node_id)).to_have_attribute("data-state", "completed")
    expect(browser_page.get_by_test_id("progress")).to_contain_text("4 / 4 nodes completed")
    expect(browser_page.get_by_test_id("result")).to_have_text("SAY: HELLO BROWSER")
    rows = browser_page.get_by_test_id("node-row")  # the timeline below the graph
    lefts = [rows.nth(i).locator(".span").evaluate("e => e.getBoundingClientRect().left") for i in range(4)]
    assert lefts == sorted(lefts), lefts
    shot(browser_page, "run-completed")

    # When the version link is followed, the version's page lists this run
    browser_page.get_by_test_id("execution-version").click()
    expect(browser_page).to_have_url(re.compile(rf"#/workflows/{workflow_id}/versions/{version_id}$"))
    expect(browser_page.locator(f'[data-execution="{execution.id}"]')).to_contain_text("completed")
    assert console.errors == []


def test_a_failed_run_shows_how_far_it_got_and_a_completed_run_its_failed_continue_node(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, console = page
    # Given a run stopped by its second node (both its attempts failed), and a run whose `continue`
    # node failed
    workflow_id, _, ids = chain(
        client,
        "Breaks midway",
        [
            ("Extract", {"model": "echo"}, {}),
            ("Broken", {"model": "flaky", "failures": 5}, {}),
            ("Report", {"model": "echo"}, {}),
        ],
        max_retries=1,
    )
    failed = client.execute_workflow(workflow_id=workflow_id, single_input="x")
    soft_id, _, soft_ids = chain(
        client,
        "Soft failure",
        [
            ("Extract", {"model": "echo"}, {}),
            ("Optional", {"model": "fail"}, {"on_failure": "continue"}),
            ("Report", {"model": "echo"}, {}),
        ],
        max_retries=0,
    )
    soft = client.execute_workflow(workflow_id=soft_id, single_input="y")
    assert client.wait_for_execution(workflow_id, failed.id, poll_interval=0.1, timeout=30).status == "failed"
    assert client.wait_for_execution(soft_id, soft.id, poll_interval=0.1, timeout=30).status == "completed"

    # When the failed run's page is opened
    open_page(browser_page, served, local_stack, f"/workflows/{workflow_id}/executions/{failed.id}")

    # Then it shows how far it got: one node of three completed, one failed, one skipped — not a full bar
    progress = browser_page.get_by_test_id("progress")
    expect(progress).to_contain_text("1 / 3 nodes completed · 1 failed · 1 skipped")
    green = browser_page.get_by_test_id("progress-ok").evaluate("e => e.getBoundingClientRect().width")
    red = browser_page.get_by_test_id("progress-bad").evaluate("e => e.getBoundingClientRect().width")
    full = progress.evaluate("e => e.getBoundingClientRect().width")
    assert abs(green - full / 3) < 3 and abs(red - full / 3) < 3, (green, red, full)
    expect(graph_node(browser_page, ids["Extract"])).to_have_attribute("data-state", "completed")
    expect(graph_node(browser_page, ids["Broken"])).to_have_attribute("data-state", "failed")
    expect(graph_node(browser_page, ids["Report"])).to_have_attribute("data-state", "skipped")
    expect(browser_page.get_by_test_id("execution-error")).to_contain_text("builtin flaky model")
    graph_node(browser_page, ids["Broken"]).click()
    expect(browser_page.get_by_test_id("attempt")).to_have_count(2)
    expect(browser_page.get_by_test_id("attempts")).not_to_contain_text("completed")
    shot(browser_page, "run-failed")

    # And the workflow's list does not draw it full either: the run's own node counts where the
    # API keeps them on list pages, else the node it stopped at
    browser_page.get_by_role("link", name="Breaks midway").click()
    row = browser_page.locator(f'[data-execution="{failed.id}"]')
    how_far = re.compile(r"failed at node 2 of 3|1 / 3 nodes completed · 1 failed · 1 skipped")
    expect(row).to_contain_text(how_far)
    assert "3 / 3" not in row.inner_text()

    # When the run that completed with a failed `continue` node is opened, it says so
    open_page(browser_page, served, local_stack, f"/workflows/{soft_id}/executions/{soft.id}")
    expect(browser_page.get_by_test_id("notice")).to_have_text(
        "Completed with 1 failed node (on_failure: continue): Optional."
    )
    expect(browser_page.get_by_test_id("progress")).to_contain_text("2 / 3 nodes completed · 1 failed")
    expect(graph_node(browser_page, soft_ids["Optional"])).to_have_attribute("data-state", "failed")
    shot(browser_page, "run-completed-with-failed-node")

    # When the API answers a node running again after a failed attempt (a moment of a live run,
    # stood in for by rewriting the failed run's answer as it was then), the graph shows it retrying
    def as_while_retrying(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        body.update(status="running", completed_at=None, error=None)
        broken = body["node_executions"][ids["Broken"]]
        broken.update(status="running", completed_at=None, error=None)
        broken["attempt_errors"] = broken["attempt_errors"][:1]
        body["node_executions"][ids["Report"]]["status"] = "pending"
        route.fulfill(response=response, json=body)

    browser_page.route(re.compile(rf".*/executions/{failed.id}$"), as_while_retrying)
    open_page(browser_page, served, local_stack, f"/workflows/{workflow_id}/executions/{failed.id}")
    expect(graph_node(browser_page, ids["Broken"])).to_have_attribute("data-state", "retrying")
    expect(graph_node(browser_page, ids["Broken"]).locator(".gmeta")).to_contain_text("retrying · ↻2")
    expect(graph_node(browser_page, ids["Report"])).to_have_attribute("data-state", "pending")
    assert console.errors == []


def test_a_batch_counts_processed_as_completed_plus_failed_filters_its_failures_and_retries_them(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, console = page
    # Given a batch of 40 items, every fifth of which is not JSON and fails its second node
    dataset = client.create_dataset(name="mixed")
    version = client.create_dataset_version(dataset_id=dataset.id)
    items = [
        {"id": f"item-{i:03d}", "text": "not json" if i % 5 == 3 else f'{{"n": {i}}}'} for i in range(40)
    ]
    client.upload_dataset_items(dataset_id=dataset.id, version_id=version.id, items=items)
    workflow_id, _, batch_ids = chain(
        client,
        "Parse reviews",
        [
            ("Think", {"model": "sleep", "seconds": 0.2}, {}),
            ("Parse JSON", {"model": "echo"}, {"output_format": "json"}),
        ],
        max_retries=0,
    )
    (SCREENSHOTS / "batch-running.png").unlink(missing_ok=True)
    execution = client.execute_workflow(
        workflow_id=workflow_id,
        input_mode="batch",
        batch_config={
            "dataset_id": dataset.id,
            "dataset_version_id": version.id,
            "input_field": "text",
            "parallelism": 4,
        },
    )

    # When its page is opened while it runs
    open_page(browser_page, served, local_stack, f"/workflows/{workflow_id}/executions/{execution.id}")
    expect(browser_page.get_by_test_id("total-items")).to_have_text("40")
    # And its version's graph: the two nodes, one edge, each model named (no per-node state: the
    # API counts a batch per item)
    expect(browser_page.get_by_test_id("graph-node")).to_have_count(2)
    expect(browser_page.locator("path.edge")).to_have_count(1)
    expect(graph_node(browser_page, batch_ids["Parse JSON"])).to_contain_text("Parse JSON · builtin/echo")

    # Then the processed count climbs on its own, never backwards
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(set(seen)) < 3 or seen[-1] < 40):
        processed = int(browser_page.get_by_test_id("processed-items").inner_text().replace(",", ""))
        if not seen or processed != seen[-1]:
            seen.append(processed)
            if 0 < processed < 40 and not (SCREENSHOTS / "batch-running.png").exists():
                shot(browser_page, "batch-running")
        time.sleep(0.1)
    assert len(set(seen)) >= 3 and seen == sorted(seen) and 0 < seen[1] < 40, seen

    # And it ends with processed = completed + failed, each in its colour on the bar
    expect(browser_page.locator(".xheader .badge")).to_have_text("completed", timeout=60_000)
    expect(browser_page.get_by_test_id("processed-items")).to_have_text("40")
    expect(browser_page.get_by_test_id("completed-items")).to_have_text("32")
    expect(browser_page.get_by_test_id("failed-items")).to_have_text("8")
    expect(browser_page.get_by_test_id("progress")).to_contain_text(
        "40 / 40 items processed · 32 completed · 8 failed"
    )
    green = browser_page.get_by_test_id("progress-ok").evaluate("e => e.getBoundingClientRect().width")
    red = browser_page.get_by_test_id("progress-bad").evaluate("e => e.getBoundingClientRect().width")
    assert abs(green / (green + red) - 0.8) < 0.02, (green, red)
    expect(browser_page.get_by_test_id("notice")).to_contain_text("Completed with 8 failed items")

    # And the items are paged, 25 a page
    rows = browser_page.get_by_test_id("item-row")
    expect(rows).to_have_count(25)

    # When the list is narrowed to failed items
    browser_page.get_by_test_id("failed-only").check()

    # Then only the eight failed ones are listed, and one shows why, node by node
    expect(rows).to_have_count(8)
    expect(rows.first).to_have_attribute("data-item", "item-003")
    rows.first.click()
    expect(browser_page.get_by_test_id("item-error")).to_contain_text("declared JSON output")
    nodes = browser_page.get_by_test_id("item-node")
    expect(nodes).to_have_count(2)
    nodes.nth(1).locator("summary").click()
    expect(nodes.nth(1)).to_contain_text("failed")
    expect(nodes.nth(1).locator("pre.error")).to_contain_text("declared JSON output")
    shot(browser_page, "batch-failed-items")

    # When its failed items are retried from the page
    browser_page.get_by_test_id("retry-failed").click()

    # Then a new run of the eight starts, and says which run it retries
    expect(browser_page.get_by_test_id("total-items")).to_have_text("8")
    expect(browser_page.locator(".summary")).to_contain_text(f"Retry of{execution.id}")
    expect(browser_page.locator(".xheader .badge")).to_have_text("completed", timeout=30_000)
    expect(browser_page.get_by_test_id("failed-items")).to_have_text("8")  # still not JSON
    assert console.errors == []


def shown_money(dollars: float | None) -> str:
    """A cost as the page shows one (app.js fmtMoney)."""
    if dollars is None:
        return "unknown"
    return f"${dollars:.4f}" if dollars < 1 else f"${dollars:.2f}"


def shown_seconds(seconds: float) -> str:
    """A duration under a minute as the page shows one (app.js fmtDuration)."""
    assert 1 <= seconds < 60, seconds
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def test_the_start_form_estimates_a_batch_then_starts_cancels_and_reruns_runs_from_the_page(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, console = page
    # Given a workflow (a 4 s node, long enough for a cancel from the page to land on a loaded
    # machine, then one that shouts, priced per token) and a dataset of 20 items, 12 French
    price = {"input_per_1k": 0.5, "output_per_1k": 1.5}
    workflow_id, _, ids = chain(
        client,
        "Translate",
        [
            ("Think", {"model": "sleep", "seconds": 4}, {}),
            ("Shout", {"model": "uppercase", "price": price}, {"input_template": "Shout: {{input}}"}),
        ],
    )
    dataset = client.create_dataset(name="reviews for the form")
    version = client.create_dataset_version(dataset_id=dataset.id)
    items = [{"id": f"r{i}", "body": f"review {i}", "lang": "fr" if i < 12 else "en"} for i in range(20)]
    client.upload_dataset_items(dataset_id=dataset.id, version_id=version.id, items=items)
    # The bodies the form sends the stack's estimate endpoint (POST /workflows/{id}/estimate)
    sent: list[dict[str, Any]] = []
    browser_page.on(
        "request",
        lambda request: (
            sent.append(json.loads(request.post_data or "{}"))
            if request.method == "POST" and request.url.endswith("/estimate")
            else None
        ),
    )

    # When the start form is opened from the workflow's page and a dataset with a filter is chosen
    open_page(browser_page, served, local_stack, f"/workflows/{workflow_id}")
    browser_page.get_by_test_id("start-run").click()
    browser_page.get_by_test_id("mode-dataset").check()
    browser_page.get_by_test_id("start-dataset").select_option(label="reviews for the form")
    expect(browser_page.get_by_test_id("start-dataset-version")).to_contain_text("v1 · 20 items")
    browser_page.get_by_test_id("start-input-field").fill("body")
    browser_page.get_by_test_id("start-filter").fill("lang == 'fr'")
    browser_page.get_by_test_id("start-parallelism").fill("3")

    # Then the estimate shows before anything starts: the 12 items the filter keeps, exactly
    expect(browser_page.get_by_test_id("estimate-items")).to_have_text("12")
    expect(browser_page.get_by_test_id("estimate")).to_contain_text("time at parallelism 3")
    # for the body a batch start would send
    assert sent[-1]["input_mode"] == "batch"
    assert sent[-1]["batch_config"] == {
        "dataset_id": dataset.id,
        "dataset_version_id": version.id,
        "input_field": "body",
        "filter_query": "lang == 'fr'",
        "parallelism": 3,
    }
    # And every figure a person reads is the API's answer to that body
    answer = client.estimate_workflow_execution(workflow_id, batch_config=sent[-1]["batch_config"])
    assert (answer.items, answer.items_exact, answer.sample_failures) == (12, True, 0)
    assert answer.model_calls == 24 and answer.input_tokens > 0 and answer.output_tokens > 0
    assert answer.model_cost is not None and answer.model_cost > 0 and answer.aws_cost > 0
    expect(browser_page.get_by_test_id("estimate-calls")).to_have_text(f"{answer.model_calls:,}")
    expect(browser_page.get_by_test_id("estimate-tokens")).to_have_text(
        f"{answer.input_tokens:,} / {answer.output_tokens:,}"
    )
    expect(browser_page.get_by_test_id("estimate-model-cost")).to_have_text(shown_money(answer.model_cost))
    expect(browser_page.get_by_test_id("estimate-aws-cost")).to_have_text(shown_money(answer.aws_cost))
    expect(browser_page.get_by_test_id("estimate-duration")).to_have_text(
        shown_seconds(answer.duration_seconds)
    )
    expect(browser_page.get_by_test_id("estimate-caveats")).to_have_count(0)  # exact, none would fail
    assert list(client.get_workflow_executions(workflow_id)) == []  # nothing started yet
    shot(browser_page, "start-estimate")

    # When a text run is started from the same form
    browser_page.get_by_test_id("mode-text").check()
    expect(browser_page.get_by_test_id("estimate")).to_be_hidden()
    browser_page.get_by_test_id("start-text").fill("bonjour")
    browser_page.get_by_test_id("start-submit").click()

    # Then its page opens, running; and when it is cancelled there, it ends cancelled, and says where
    expect(graph_node(browser_page, ids["Think"])).to_have_attribute("data-state", "running")
    browser_page.get_by_test_id("cancel").click()
    expect(browser_page.locator(".xheader .badge")).to_have_text("cancelled")
    expect(graph_node(browser_page, ids["Think"])).to_have_attribute("data-state", "cancelled")
    expect(browser_page.get_by_test_id("progress")).to_contain_text("0 / 2 nodes completed")
    expect(browser_page.get_by_test_id("progress")).to_contain_text("cancelled")
    first_run = browser_page.url.rsplit("/", 1)[-1]

    # When it is re-run from its page, a new run of the same input completes
    browser_page.get_by_test_id("rerun").click()
    expect(browser_page.locator(".xheader h1")).to_contain_text("Execution #2")
    expect(browser_page.locator(".summary")).to_contain_text(f"Re-run of{first_run}")
    expect(browser_page.locator(".xheader .badge")).to_have_text("completed", timeout=30_000)
    expect(browser_page.get_by_test_id("result")).to_have_text("SHOUT: BONJOUR")

    # When a file is started from the form, its text is the run's input
    browser_page.goto(f"{served}/dashboard#/workflows/{workflow_id}/start")
    browser_page.get_by_test_id("mode-file").check()
    browser_page.get_by_test_id("start-file").set_input_files(
        files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"from a file"}]
    )
    browser_page.get_by_test_id("start-submit").click()
    expect(browser_page.locator(".xheader h1")).to_contain_text("Execution #3")
    expect(browser_page.locator(".summary")).to_contain_text("note.txt")
    expect(browser_page.get_by_test_id("result")).to_have_text("SHOUT: FROM A FILE", timeout=30_000)
    assert console.errors == []


def test_without_a_key_the_page_asks_for_one_then_lists_workflows_and_their_executions(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, _ = page
    assert local_stack.api_key
    # Given a workflow with one failed run
    workflow_id, _, _ = chain(client, "Always fails", [("Broken", {"model": "fail"}, {})], max_retries=0)
    execution = client.execute_workflow(workflow_id=workflow_id, single_input="x")
    client.wait_for_execution(workflow_id, execution.id, poll_interval=0.1, timeout=30)

    # When the dashboard is opened with no key
    browser_page.goto(f"{served}/dashboard")

    # Then it says the API refused and asks for a key
    expect(browser_page.locator("#banner")).to_contain_text("enter a valid API key")
    expect(browser_page.locator("#key-form")).to_be_visible()

    # When the key is typed in
    browser_page.locator("#key-input").fill(local_stack.api_key)
    browser_page.locator("#key-form button[type=submit]").click()

    # Then the workflows are listed, and a click shows the workflow's executions with their status
    expect(browser_page.locator("#key-form")).to_be_hidden()
    browser_page.get_by_role("link", name="Always fails").click()
    row = browser_page.locator(f'[data-execution="{execution.id}"]')
    expect(row).to_contain_text("failed")
    expect(row).to_contain_text("#1")

    # And the status filter narrows the list
    browser_page.get_by_test_id("status-filter").select_option("completed")
    expect(browser_page.get_by_test_id("executions")).to_contain_text("No executions.")
    browser_page.get_by_test_id("status-filter").select_option("failed")
    expect(row).to_be_visible()

    # And the execution's page shows why it failed
    row.click()
    expect(browser_page.get_by_test_id("execution-error")).to_contain_text("builtin fail model always fails")
    expect(browser_page).to_have_url(re.compile(rf"#/workflows/{workflow_id}/executions/{execution.id}$"))
    # The key stays in this browser only, never in the address bar
    assert local_stack.api_key not in browser_page.url
