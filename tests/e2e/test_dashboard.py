"""The dashboard in a real browser: Debian's headless Chromium (/usr/bin/chromium, `make browser`)
driven by Playwright, against the local stack's HTTP server. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from relayflow.client import Client
from relayflow.local.stack import LocalStack

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
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


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
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # its own localStorage
    page = context.new_page()
    page.set_default_timeout(15_000)
    console = Console()
    page.on("console", console)
    yield page, console
    context.close()


@pytest.fixture
def client(local_stack: LocalStack, served: str) -> Iterator[Client]:
    with Client(base_url=served, api_key=local_stack.api_key) as client:
        yield client


def chain(
    client: Client, name: str, nodes: list[tuple[str, dict[str, Any], dict[str, Any]]], **config: Any
) -> str:
    """A workflow of builtin model nodes in a chain: (node name, model config, node config)."""
    workflow = client.create_workflow(name=name)
    version = client.create_workflow_version(
        workflow_id=workflow.id, config={"retry_delay_seconds": 1, **config}
    )
    for node_name, model_config, node_config in nodes:
        model = client.create_model(name=node_name, provider="builtin", config=model_config)
        client.create_workflow_node(
            version_id=version.id, name=node_name, entity_id=model.id, config=node_config
        )
    return workflow.id


def count(page: Page, testid: str) -> int:
    return int(page.get_by_test_id(testid).inner_text().replace(",", ""))


def test_a_running_batch_shows_its_counts_moving_and_each_items_node_details(
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
    workflow_id = chain(
        client,
        "Parse reviews",
        [
            ("Think", {"model": "sleep", "seconds": 0.1}, {}),
            ("Parse JSON", {"model": "echo"}, {"output_format": "json"}),
        ],
        max_retries=0,
    )
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

    # When its page is opened while it runs (the key arrives in the URL fragment, as `serve` prints it)
    browser_page.goto(
        f"{served}/dashboard#key={local_stack.api_key}&/workflows/{workflow_id}/executions/{execution.id}"
    )
    expect(browser_page.get_by_test_id("total-items")).to_have_text("40")

    # Then the processed count climbs on its own, page after page of polling, never backwards
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(set(seen)) < 3 or seen[-1] < 40):
        processed = count(browser_page, "processed-items")
        if not seen or processed != seen[-1]:
            seen.append(processed)
            if len(seen) == 3:
                ARTIFACTS.mkdir(exist_ok=True)
                browser_page.screenshot(path=str(ARTIFACTS / "dashboard-batch-running.png"), full_page=True)
        time.sleep(0.1)
    assert len(set(seen)) >= 3, seen
    assert seen == sorted(seen), seen
    assert 0 < seen[1] < 40, seen

    # And it ends completed with the exact counts, the failures shown in red
    expect(browser_page.locator(".xheader .badge")).to_have_text("completed", timeout=60_000)
    expect(browser_page.get_by_test_id("processed-items")).to_have_text("40")
    expect(browser_page.get_by_test_id("failed-items")).to_have_text("8")
    expect(browser_page.get_by_test_id("remaining-items")).to_have_text("0")

    # And the items are paged (25 a page), never all loaded at once
    rows = browser_page.get_by_test_id("item-row")
    expect(rows).to_have_count(25)
    browser_page.get_by_test_id("page-next").click()
    expect(rows).to_have_count(15)
    expect(rows.first).to_have_attribute("data-item", "item-025")
    browser_page.get_by_test_id("page-prev").click()
    expect(rows.first).to_have_attribute("data-item", "item-000")

    # When a failed item is opened, and its nodes' details unfolded
    browser_page.locator('[data-item="item-003"]').click()
    expect(browser_page.get_by_test_id("item-error")).to_contain_text("declared JSON output")
    nodes = browser_page.get_by_test_id("item-node")
    expect(nodes).to_have_count(2)
    for index in range(2):
        nodes.nth(index).locator("summary").click()

    # Then each node shows its status, prompt and output or error
    expect(nodes.nth(0)).to_contain_text("Think")
    expect(nodes.nth(0)).to_contain_text("completed")
    expect(nodes.nth(0).locator("pre").first).to_have_text("not json")
    expect(nodes.nth(1)).to_contain_text("Parse JSON")
    expect(nodes.nth(1)).to_contain_text("failed")
    expect(nodes.nth(1).locator("pre.error")).to_contain_text("declared JSON output")
    browser_page.screenshot(path=str(ARTIFACTS / "dashboard-batch.png"), full_page=True)
    assert console.errors == []


def test_a_single_run_shows_its_node_timeline_retries_prompts_and_outputs(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, console = page
    # Given a finished run whose middle node failed once and was retried
    workflow_id = chain(
        client,
        "Retry me",
        [
            ("Echo", {"model": "echo"}, {"input_template": "Say: {{input}}"}),
            ("Flaky", {"model": "flaky", "failures": 1}, {}),
            ("Shout", {"model": "uppercase"}, {}),
        ],
        max_retries=2,
    )
    execution = client.execute_workflow(workflow_id=workflow_id, single_input="hello browser")
    done = client.wait_for_execution(workflow_id, execution.id, poll_interval=0.1, timeout=30)
    assert done.status == "completed"

    # When its page is opened
    browser_page.goto(
        f"{served}/dashboard#key={local_stack.api_key}&/workflows/{workflow_id}/executions/{done.id}"
    )

    # Then each node has a row of the timeline, the retry visible, and the result shown
    rows = browser_page.get_by_test_id("node-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Echo")
    expect(rows.nth(1)).to_contain_text("↻ 2 attempts")
    expect(rows.nth(2)).to_contain_text("completed")
    expect(browser_page.get_by_test_id("result")).to_have_text("SAY: HELLO BROWSER")
    expect(browser_page.get_by_test_id("progress")).to_contain_text("3 / 3 nodes")
    # each bar sits inside its track, later nodes further right
    lefts = [rows.nth(i).locator(".span").evaluate("e => e.getBoundingClientRect().left") for i in range(3)]
    assert lefts == sorted(lefts), lefts

    # When the retried node is opened
    rows.nth(1).click()

    # Then its prompt, output and the error of its failed attempt are shown
    expect(browser_page.get_by_test_id("node-prompt")).to_have_text("Say: hello browser")
    expect(browser_page.get_by_test_id("node-output")).to_have_text("Say: hello browser")
    expect(browser_page.get_by_test_id("detail")).to_contain_text("attempt 1: builtin flaky model")
    ARTIFACTS.mkdir(exist_ok=True)
    browser_page.screenshot(path=str(ARTIFACTS / "dashboard-single.png"), full_page=True)
    assert console.errors == []


def test_without_a_key_the_page_asks_for_one_then_lists_workflows_and_their_executions(
    local_stack: LocalStack, served: str, client: Client, page: tuple[Page, Console]
) -> None:
    browser_page, _ = page
    assert local_stack.api_key
    # Given a workflow with one failed run
    workflow_id = chain(client, "Always fails", [("Broken", {"model": "fail"}, {})], max_retries=0)
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
