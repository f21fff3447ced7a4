"""docs/matrix.md is generated from the rule table and must stay current."""

from pathlib import Path

from cli.main import main
from streams.core.matrix_doc import matrix_markdown
from streams.core.rules import load_rules

DOC = Path(__file__).resolve().parents[1] / "docs" / "matrix.md"


def test_matrix_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == matrix_markdown(load_rules()), (
        "docs/matrix.md is stale: run `lienthong matrix --markdown > docs/matrix.md`"
    )


def test_matrix_doc_lists_every_rule_with_both_labels(capsys):
    assert main(["matrix", "--markdown"]) == 0
    text = capsys.readouterr().out
    for rule in load_rules().rules:
        row = next(line for line in text.splitlines() if line.startswith(f"| {rule.id} |"))
        assert rule.label_vi.split(":")[0].replace("|", "\\|") in row
        assert rule.label_en.split(":")[0].replace("|", "\\|") in row
