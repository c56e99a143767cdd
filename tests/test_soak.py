"""The soak benchmark end to end, for 30 seconds on the tiny model: every well-formed request
succeeds (chunks valid under the OpenAI SDK's types), every malformed one gets a 4xx, and the
report adds up with the server's own request counts."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.soak import MIX, main


def test_a_short_soak_fails_no_request_and_reports_what_it_measured(tiny_model: Path, tmp_path: Path) -> None:
    output = tmp_path / "soak.json"
    code = main(["--model", str(tiny_model), "--duration-s", "30", "--clients", "4", "--output", str(output)])
    result = json.loads(output.read_text())
    goals = result["goals"]
    assert goals["no_failed_well_formed_requests"], result["failures"]
    assert goals["every_malformed_request_4xx"], result["failures"]
    # Every scenario ran, and the outcomes are the expected kinds.
    assert set(result["by_scenario"]) == set(MIX)
    assert set(result["by_scenario"]["malformed"]) == {"malformed_4xx"}
    assert set(result["by_scenario"]["disconnect"]) <= {"disconnected", "ok"}
    # What the clients saw answered is what the server counted (3 requests per multi-turn).
    by_scenario = result["by_scenario"]
    answered = sum(n for name, counts in by_scenario.items() if name not in ("malformed", "disconnect", "multi_turn")
                   for n in counts.values())
    answered += 3 * by_scenario["multi_turn"].get("ok", 0) + by_scenario["disconnect"].get("ok", 0)
    server = result["server_requests_by_status"]
    assert server.get("200", 0) == answered + by_scenario["disconnect"].get("disconnected", 0)
    assert sum(v for k, v in server.items() if k.startswith("4")) == by_scenario["malformed"]["malformed_4xx"]
    assert result["ttft_ms"]["p50"] > 0 and result["tokens_per_s"]["overall"] > 0
    rss = result["rss"]
    assert 0 < rss["start_mib"] <= rss["peak_mib"] and rss["end_mib"] <= rss["peak_mib"]
    # Thirty seconds are mostly warm-up, so the RSS goal is the full run's, not this one's.
    assert code == (0 if all(goals.values()) else 1)
