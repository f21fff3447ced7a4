"""A saved ``lienthong whatif --json`` report on the operator's page (``lienthong dashboard --whatif FILE``):
listed on the page, shown at ``/whatif/1`` as an administrator reads it, no script; a file that is not a
report refused in one line.

The saved report (``whatif-cty-a.json``) is the scripted day of tests/agents/test_whatif.py previewed with
PRD-1 off and CRM's custom_field12 mapped to the accounting customer's address, its history cut by
retention. No broker is needed: the page answers while its collector fails to connect.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cli.main import main
from common.settings import KafkaSettings
from ops.dashboard.web import create_dashboard
from ops.dashboard.whatif_page import ReportError, load_report

SAVED = Path(__file__).with_name("whatif-cty-a.json")
NOWHERE = KafkaSettings(bootstrap_servers="127.0.0.1:9")


@pytest.fixture
async def page() -> AsyncIterator[TestClient]:
    app = create_dashboard(NOWHERE, [], interval=60, whatif_reports=[load_report(SAVED)])
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


def text_of(fragment: str) -> str:
    """What a reader sees of an HTML fragment: its text, words apart where cells and items are, spaces collapsed."""
    inline = re.sub(r"</?(b|code|a|span)\b[^>]*>", "", fragment)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", inline))).strip()


def rows(body: str, testid: str) -> list[str]:
    return [text_of(row) for row in re.findall(rf'<tr data-testid="{testid}".*?</tr>', body, re.S)]


async def test_the_page_lists_the_saved_report_and_links_it(page: TestClient) -> None:
    body = await (await page.get("/?refresh=0")).text()
    links = re.findall(r'<li data-testid="whatif-link"><a href="([^"]+)">(.*?)</a>', body)
    assert [(href, text_of(label)) for href, label in links] == [
        ("/whatif/1", "cty-a: settings revision 0 against the proposed 1")
    ]


async def test_a_saved_report_reads_as_the_administrator_needs(page: TestClient) -> None:
    answer = await page.get("/whatif/1")
    assert answer.status == 200
    body = await answer.text()
    assert "<script" not in body and "script-src" not in answer.headers["Content-Security-Policy"]
    header = text_of(re.search(r'<p data-testid="whatif-header">.*?</p>', body, re.S).group(0))
    assert header == (
        "tenant cty-a: 6 change event(s) and 2 result(s) replayed, settings revision 0 (in force) against the "
        "proposed 1."
    )
    whole = text_of(re.search(r'<p[^>]*data-testid="whatif-whole">.*?</p>', body, re.S).group(0))
    assert whole.startswith("History before 2025-11-27 00:00:00 UTC is no longer retained")
    settings = [text_of(s) for s in re.findall(r'<li data-testid="whatif-setting">(.*?)</li>', body)]
    assert settings == ["rules off: PRD-1", "crm customer's custom_field12 written to address (text)"]
    assert rows(body, "whatif-rule") == ["CUS-3 1 0 1", "CUS-10 0 0 1", "PRD-1 0 2 0"]
    examples = rows(body, "whatif-example")
    assert examples[2] == (
        "CUS-10 changed upsert acct customer KH1 address: — → a.vn "
        "crm sale_order DH1 (Đơn trà) create, 2025-11-27 00:00:02 UTC (e2)"
    )
    assert examples[3] == (
        "PRD-1 removed upsert acct product SP1 code: SP1 → — name: Trà xanh → — unit_price: 100000 → — "
        "crm product SP1 (Trà xanh) create, 2025-11-27 00:00:00 UTC (e0)"
    )
    assert len(examples) == 5


async def test_a_report_the_page_was_not_given_is_not_found(page: TestClient) -> None:
    for path in ("/whatif/2", "/whatif/0", "/whatif/x"):
        answer = await page.get(path)
        assert answer.status == 404
        assert "this page has 1 (lienthong dashboard --whatif FILE)" in await answer.text()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("{not json", "is not JSON; save the report with `lienthong whatif … --json`"),
        ('{"tenant": "cty-a"}', "is not a whatif report (it needs tenant, settings, history, rules, examples)"),
        (None, "cannot be read"),
    ],
)
def test_a_file_that_is_not_a_report_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, said: str
) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError, match=re.escape(said)):
        load_report(path)
    assert main(["dashboard", "--port", "0", "--whatif", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lienthong dashboard: --whatif {path}: ") and said in err and err.count("\n") == 1
