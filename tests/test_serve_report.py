"""The report's "Serving" section appears only when a `bilm loadtest` JSON exists."""
from __future__ import annotations

import json

from pipeline.report import serving_lines


def _row(model, concurrency, throughput):
    return {"model": model, "concurrency": concurrency, "throughput": throughput, "p50_ms": 5.0, "p90_ms": 8.0,
            "p99_ms": 12.0, "errors": 0, "server_cpu_cores": 1.7, "client_cpu_cores": 0.2}


def test_serving_section_from_a_loadtest_json(tmp_path):
    loadtest = tmp_path / "serving" / "loadtest.json"
    loadtest.parent.mkdir()
    loadtest.write_text(json.dumps({"model": "bert", "duration_s": 10.0, "n_texts": 1000, "in_process": {"16": 420.0},
                                    "levels": [{**_row("bert", 16, 300.5), "vs_in_process": 0.7154, "reference_batch": 16},
                                               _row("bert-unbatched", 16, 200.0)]}))
    loadtest.with_suffix(".png").write_bytes(b"\x89PNG")
    out = tmp_path / "report"
    out.mkdir()
    text = serving_lines(loadtest, out)
    assert "## Serving" in text and "| bert | 16 | 300.500 | 0.720 |" in text
    assert "| bert-unbatched | 16 | 200.000 |  |" in text and "x in-process b16 (measured just before)" in text
    assert "| 16 | 420.000 |" in text and "(serving.png)" in text
    assert (out / "serving.png").read_bytes() == b"\x89PNG"


def test_no_serving_section_without_a_loadtest(tmp_path):
    assert serving_lines(tmp_path / "serving" / "loadtest.json", tmp_path) == ""
