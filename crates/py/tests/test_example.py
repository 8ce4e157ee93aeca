"""The notebook-style example (examples/python/rate_policy.py) runs as a script."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "python" / "rate_policy.py"


def test_the_rate_policy_example_runs(capsys) -> None:  # type: ignore[no-untyped-def]
    ns = runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    run = ns["run"]
    assert run.summary["rounds_completed"] == 30 and run.summary["policy"] == "python"
    # The server's 600 test samples: three separable-ish blobs, learned.
    assert run.summary["global"]["evaluated_on"] == "held-out test set"
    assert run.summary["global"]["accuracy"] > 0.8
    rows = run.client_rounds if isinstance(run.client_rounds, list) else run.client_rounds.to_dict("records")
    assert len({r["lr"] for r in rows}) > 1  # the policy did personalise the rates
    assert "TensorBoard events in" in out
    tb = Path(out.rsplit("TensorBoard events in", 1)[1].strip())
    assert any(tb.iterdir())
